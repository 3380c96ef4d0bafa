"""`uftdata publish MIXTURE_DIR --repo ORG/NAME`: a mixture to a Hugging Face Hub dataset repository.

Uploaded: the shards, `manifest.json`, and a card generated from the manifest (README.md, with the
repository id) plus its score histogram (score_histogram.png). The mixture is verified first: every
shard's sha256 and the content hash recomputed from the rows must match the manifest. The upload is
planned against what the repository already holds: unchanged files are not sent, shards of an
earlier mixture under `data/` are deleted (the card's `data/{split}-*` patterns would load them),
and when nothing differs no commit is made. New repositories are private unless `public`.
The token is huggingface_hub's (HF_TOKEN or the login cache); it is never printed or written.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from uftdata.card import HISTOGRAM, render_card
from uftdata.errors import UftDataError
from uftdata.mixout import MANIFEST, content_hash
from uftdata.verify import check_mixture

REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
READ_COLUMNS = ["id", "kind", "score", "label", "pair_id", "source"]  # content hash + histogram


@dataclass(frozen=True)
class Upload:
    path_in_repo: str
    local: Path
    size: int
    sha256: str
    git_sha1: str  # the Hub's oid of a regular (non-LFS) file

    @staticmethod
    def of(path_in_repo: str, local: Path) -> Upload:
        data = local.read_bytes()
        return Upload(path_in_repo, local, len(data), hashlib.sha256(data).hexdigest(),
                      hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())


@dataclass(frozen=True)
class Plan:
    repo_id: str
    private: bool
    uploads: list[Upload]
    unchanged: list[str]
    deletes: list[str]

    @property
    def changes(self) -> bool:
        return bool(self.uploads or self.deletes)


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID.fullmatch(repo_id):
        raise UftDataError("--repo", "is not a dataset repository id", got=repo_id, expected="ORG/NAME")
    return repo_id


def verify_mixture(folder: Path) -> tuple[dict, dict[str, pl.DataFrame]]:
    """The manifest and each split's small columns (the card's histogram reads them too), after
    checking the shards' bytes and the content hash of their rows."""
    manifest = check_mixture(folder)
    parts: dict[str, list[pl.DataFrame]] = {}
    for entry in manifest["files"]:
        split = Path(entry["path"]).name.split("-")[0]
        parts.setdefault(split, []).append(pl.read_parquet(folder / entry["path"], columns=READ_COLUMNS))
    splits = {split: pl.concat(frames) for split, frames in parts.items()}
    found = content_hash(splits)
    if found != manifest["content_hash"]:
        raise UftDataError(str(folder / MANIFEST), "content_hash does not match the rows of the shards",
                           got=found, expected=manifest["content_hash"],
                           fix="Rebuild the mixture with `uftdata mix`; a hand-edited manifest cannot be published.")
    return manifest, splits


def stage_card(manifest: dict, splits: dict[str, pl.DataFrame], repo_id: str | None, staging: Path,
               license: str | None) -> list[Path]:
    """README.md and the score histogram, as they would be uploaded, written into `staging`."""
    from uftdata.plots import plot_scores

    stats = pl.concat([rows.select("source", "kind", "score", split=pl.lit(split)) for split, rows in splits.items()])
    plot_scores(stats, staging / HISTOGRAM)
    card = render_card(manifest, repo_id=repo_id, histogram=True, license=license)
    (staging / "README.md").write_text(card, encoding="utf-8")
    return [staging / "README.md", staging / HISTOGRAM]


def local_files(folder: Path, manifest: dict, staging: Path) -> list[Upload]:
    files = [Upload.of(e["path"], folder / e["path"]) for e in manifest["files"]]
    files.append(Upload.of(MANIFEST, folder / MANIFEST))
    files += [Upload.of(p.name, p) for p in (staging / "README.md", staging / HISTOGRAM)]
    return files


def plan_against(remote: dict[str, set[str]], files: list[Upload], repo_id: str, private: bool) -> Plan:
    """`remote`: path -> the oids the Hub reports for it (git sha1; sha256 for LFS files)."""
    uploads = [f for f in files if not {f.sha256, f.git_sha1} & remote.get(f.path_in_repo, set())]
    unchanged = [f.path_in_repo for f in files if f not in uploads]
    ours = {f.path_in_repo for f in files}
    deletes = sorted(p for p in remote if p.startswith("data/") and p not in ours)
    return Plan(repo_id, private, uploads, unchanged, deletes)


def remote_files(api: Any, repo_id: str) -> tuple[dict[str, set[str]], bool]:
    info = api.dataset_info(repo_id, files_metadata=True)
    remote = {}
    for s in info.siblings or []:
        oids = {s.blob_id} if s.blob_id else set()
        if s.lfs is not None:
            oids.add(s.lfs.sha256)
        remote[s.rfilename] = oids
    return remote, bool(info.private)


def publish(folder: Path, repo_id: str, *, public: bool = False, dry_run: bool = False,
            license: str | None = None, preview: Path | None = None) -> tuple[Plan, str | None]:
    """(plan, commit URL or None). Dry run: the plan of a first upload, without contacting the Hub."""
    check_repo_id(repo_id)
    manifest, splits = verify_mixture(folder)
    with tempfile.TemporaryDirectory(prefix=".uft-publish-") as tmp:
        staging = Path(tmp)
        staged = stage_card(manifest, splits, repo_id, staging, license)
        if preview is not None:
            preview.mkdir(parents=True, exist_ok=True)
            for path in staged:
                (preview / path.name).write_bytes(path.read_bytes())
        files = local_files(folder, manifest, staging)
        if dry_run:
            return Plan(repo_id, not public, files, [], []), None
        return upload(repo_id, files, manifest, public)


def upload(repo_id: str, files: list[Upload], manifest: dict, public: bool) -> tuple[Plan, str | None]:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    if get_token() is None:
        raise UftDataError("publish", "no Hugging Face token found",
                           fix="Set HF_TOKEN (a token with write access) or run `hf auth login`; or use --dry-run.")
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=not public, exist_ok=True)
        remote, private = remote_files(api, repo_id)
        plan = plan_against(remote, files, repo_id, private)
        if not plan.changes:
            return plan, None
        operations = [CommitOperationAdd(f.path_in_repo, str(f.local)) for f in plan.uploads]
        operations += [CommitOperationDelete(p) for p in plan.deletes]
        commit = api.create_commit(
            repo_id, operations, repo_type="dataset",
            commit_message=f"uftdata publish {manifest['name']} ({manifest['content_hash'][:12]})",
            commit_description=f"Built with uft {manifest['versions']['uft']}; content hash {manifest['content_hash']}.",
        )
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise UftDataError(f"hf://datasets/{repo_id}", f"the Hub refused the upload (HTTP {status}: "
                           f"{str(e).splitlines()[0]})", fix="Check that the token can write to this organization.") from None
    except OSError as e:
        raise UftDataError(f"hf://datasets/{repo_id}", f"cannot reach the Hub ({type(e).__name__}: {e})") from None
    return plan, commit.commit_url
