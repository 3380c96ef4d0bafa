"""An in-process stand-in for the parts of the Hugging Face Hub's HTTP API that uftdata uses.

`huggingface_hub` talks to it for real (point `HF_ENDPOINT`, or an `endpoint=` argument, at
`StubHub.url`): repository info with file listings, repo creation, preupload, ndjson commits
(regular uploads only: the stub never asks for LFS), paths-info, tree listings and file downloads
with byte ranges. Repositories live in memory as commits of {path: bytes}; every request is logged
with its headers and body so tests can check what was sent (visibility, tokens).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import yaml


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    visibility: str
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)
    refs: dict[str, str] = field(default_factory=dict)

    def files(self, revision: str) -> dict[str, bytes] | None:
        sha = self.refs.get(revision, revision)
        return next((files for s, files in self.commits if s == sha), None)

    def commit(self, files: dict[str, bytes], branch: str = "main") -> str:
        listing = json.dumps({p: git_blob_sha1(c) for p, c in sorted(files.items())}).encode()
        parent = self.refs.get(branch, "")
        sha = hashlib.sha1(parent.encode() + listing).hexdigest()
        self.commits.append((sha, dict(files)))
        self.refs[branch] = sha
        return sha


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class StubHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        hub = self

        class Handler(_Handler):
            stub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> StubHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_dataset(self, repo_id: str, folder: Path, *, visibility: str = "public") -> str:
        """A dataset repository holding `folder`'s files, as one commit on `main`; returns its sha."""
        repo = self.repos.setdefault(repo_id, Repo(visibility))
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        return repo.commit(files)

    def commits(self, repo_id: str) -> int:
        return len(self.repos[repo_id].commits)


class _Handler(BaseHTTPRequestHandler):
    stub: StubHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    # -- plumbing

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str, message: str) -> None:
        self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def _log(self, body: bytes) -> None:
        self.stub.requests.append(Request(self.command, self.path, dict(self.headers.items()), body))

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.stub.repos.get(repo_id)
        authorized = self.headers.get("Authorization", "").startswith("Bearer ")
        if repo is None or (repo.visibility == "private" and not authorized):
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        return repo

    def _files(self, repo_id: str, revision: str) -> tuple[Repo, str, dict[str, bytes]] | None:
        repo = self._repo(repo_id)
        if repo is None:
            return None
        files = repo.files(revision)
        if files is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo, repo.refs.get(revision, revision), files

    # -- routes

    def do_GET(self) -> None:
        self._log(b"")
        self._route()

    do_HEAD = do_GET  # _send leaves the body out

    def _route(self) -> None:
        url = urlparse(self.path)
        path = unquote(url.path)
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)(?:/revision/(.+))?", path):
            return self._info(m[1], m[2] or "main")
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/tree/([^/]+)/?(.*)", path):
            return self._tree(m[1], m[2], m[3], recursive=parse_qs(url.query).get("recursive") == ["true"])
        if m := re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._download(m[1], m[2], m[3])
        self._error(404, "NotFound", f"no route for {path}")

    def do_POST(self) -> None:
        body = self._body()
        self._log(body)
        path = unquote(urlparse(self.path).path)
        if path == "/api/repos/create":
            return self._create(json.loads(body))
        if path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body)["content"])
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/preupload/(.+)", path):
            return self._preupload(m[1], m[2], json.loads(body))
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/commit/(.+)", path):
            return self._commit(m[1], m[2], body)
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/paths-info/(.+)", path):
            return self._paths_info(m[1], m[2], parse_qs(body.decode()).get("paths", []))
        self._error(404, "NotFound", f"no route for {path}")

    def _info(self, repo_id: str, revision: str) -> None:
        found = self._files(repo_id, revision)
        if found is None:
            return
        repo, sha, files = found
        siblings = [{"rfilename": p, "size": len(c), "blobId": git_blob_sha1(c)} for p, c in sorted(files.items())]
        self._json(200, {"id": repo_id, "_id": repo_id, "sha": sha, "private": repo.visibility == "private",
                         "siblings": siblings, "tags": [], "downloads": 0, "likes": 0})

    def _entry(self, path: str, content: bytes) -> dict:
        return {"type": "file", "path": path, "size": len(content), "oid": git_blob_sha1(content)}

    def _tree(self, repo_id: str, revision: str, prefix: str, recursive: bool) -> None:
        found = self._files(repo_id, revision)
        if found is None:
            return
        _, _, files = found
        prefix = prefix.strip("/")
        entries, folders = [], set()
        for p, c in sorted(files.items()):
            rest = p[len(prefix) + 1:] if prefix else p
            if prefix and not p.startswith(prefix + "/"):
                continue
            if "/" in rest and not recursive:
                folders.add((f"{prefix}/" if prefix else "") + rest.split("/")[0])
                continue
            entries.append(self._entry(p, c))
        entries += [{"type": "directory", "path": f, "oid": "0" * 40} for f in sorted(folders)]
        self._json(200, entries)

    def _paths_info(self, repo_id: str, revision: str, paths: list[str]) -> None:
        found = self._files(repo_id, revision)
        if found is None:
            return
        _, _, files = found
        info = [self._entry(p, files[p]) for p in paths if p in files]
        info += [{"type": "directory", "path": p, "oid": "0" * 40} for p in paths
                 if p not in files and any(f.startswith(p.rstrip("/") + "/") for f in files)]
        self._json(200, info)

    def _download(self, repo_id: str, revision: str, path: str) -> None:
        found = self._files(repo_id, revision)
        if found is None:
            return
        _, sha, files = found
        if path not in files:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {revision}")
        content = files[path]
        headers = {"ETag": f'"{git_blob_sha1(content)}"', "X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if m := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")):
            start, end = int(m[1]), int(m[2]) if m[2] else len(content) - 1
            part = content[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{start + len(part) - 1}/{len(content)}"
            return self._send(206, part, headers)
        self._send(200, content, headers)

    def _create(self, payload: dict) -> None:
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if payload.get("type") != "dataset":
            return self._error(400, "BadRequest", "the stub only hosts datasets")
        if repo_id in self.stub.repos:
            return self._json(409, {"error": "You already created this dataset repo", "url": f"{self.stub.url}/datasets/{repo_id}"})
        repo = Repo(payload.get("visibility") or "public")
        repo.commit({".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"})
        self.stub.repos[repo_id] = repo
        self._json(200, {"url": f"{self.stub.url}/datasets/{repo_id}", "name": repo_id})

    def _validate_yaml(self, content: str) -> None:
        """The card's YAML header must parse to a mapping, as the Hub requires."""
        m = re.match(r"---\n(.*?)\n---\n", content, re.S)
        try:
            header = yaml.safe_load(m[1]) if m else {}
        except yaml.YAMLError as e:
            return self._json(400, {"errors": [{"message": f"invalid YAML: {e}"}]})
        if not isinstance(header, dict):
            return self._json(400, {"errors": [{"message": "the YAML header is not a mapping"}]})
        self._json(200, {"errors": [], "warnings": []})

    def _preupload(self, repo_id: str, revision: str, payload: dict) -> None:
        found = self._files(repo_id, revision)
        if found is None:
            return
        _, _, files = found
        self._json(200, {"files": [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_blob_sha1(files[f["path"]]) if f["path"] in files else None}
            for f in payload["files"]]})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        found = self._files(repo_id, revision)
        if found is None:
            return
        repo, _, files = found
        files = dict(files)
        for line in body.decode().splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
            elif item["key"] == "deletedFolder":
                files = {p: c for p, c in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            elif item["key"] != "header":
                return self._error(400, "BadRequest", f"the stub does not support {item['key']}")
        sha = repo.commit(files, branch=revision)
        self._json(200, {"success": True, "commitOid": sha,
                         "commitUrl": f"{self.stub.url}/datasets/{repo_id}/commit/{sha}"})
