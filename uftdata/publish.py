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

import difflib
import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from uftdata.card import HISTOGRAM, render_card
from uftdata.errors import UftDataError
from uftdata.hub import is_hub_url, is_network_error
from uftdata.manifest import MANIFEST, Manifest
from uftdata.verify import verify_mixture as verified_mixture

if TYPE_CHECKING:
    from huggingface_hub import HfApi

REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
# The license ids the Hub accepts in a card's `license:` field, in the order of its table: "Licenses",
# https://huggingface.co/docs/hub/repositories-licenses (source: huggingface/hub-docs,
# docs/hub/repositories-licenses.md, the "region licenses" table as of commit fd6cf1f, 2026-06-06).
# `other` (with the license named in the card) covers any license not listed.
HUB_LICENSES = (
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0",
    "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cdla-sharing-1.0",
    "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1",
    "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc", "h-research",
    "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl", "apple-amlr", "mpl-2.0", "odc-by", "odbl", "openmdw-1.0",
    "openmdw-1.1", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr",
    "deepfloyd-if-license", "fair-noncommercial-research-license", "llama2", "llama3", "llama3.1", "llama3.2",
    "llama3.3", "llama4", "grok2-community", "gemma", "unknown", "other",
)


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


def check_license(license: str | None) -> str | None:
    """`--license` must be one of the Hub's ids: the Hub would otherwise show the card without a license
    (or refuse it), after the shards were uploaded. Checked before anything is read or contacted."""
    if license is None or license in HUB_LICENSES:
        return license
    close = difflib.get_close_matches(license.lower(), HUB_LICENSES, n=3, cutoff=0.5)
    raise UftDataError("--license", "is not a license id the Hub knows", got=license,
                       expected="an id of https://huggingface.co/docs/hub/repositories-licenses"
                       + (f"; the closest: {', '.join(close)}" if close else ""),
                       fix="For a license the Hub does not list, pass --license other.")


def verify_mixture(folder: Path) -> tuple[Manifest, dict[str, pl.DataFrame]]:
    """The manifest and each split's small columns (the card's histogram reads them too), after
    checking the folder against its manifest (uftdata.verify: shards, counts, seed, content hash)."""
    verified = verified_mixture(folder)
    check_no_local_paths(verified.manifest, Path(folder) / MANIFEST)
    return verified.manifest, verified.splits


def check_no_local_paths(manifest: Manifest, where: Path) -> None:
    """A format-1 manifest kept a test file's path as typed: uploading it would publish the user's
    directories. (Format 2 keeps the file's name.)"""
    for i, source in enumerate(manifest.sources):
        test = source.test.file if source.test else None
        if test is not None and not is_hub_url(test) and Path(test).name != test:
            raise UftDataError(str(where), f"field 'sources[{i}].test.file' holds a local path", got=test,
                               fix="Rebuild the mixture with this `uftdata mix` (format 2 keeps file names only).")


def stage_card(manifest: Manifest, splits: dict[str, pl.DataFrame], repo_id: str | None, staging: Path,
               license: str | None) -> list[Path]:
    """README.md and the score histogram, as they would be uploaded, written into `staging`."""
    from uftdata.plots import plot_scores

    stats = pl.concat([rows.select("source", "kind", "score", split=pl.lit(split)) for split, rows in splits.items()])
    plot_scores(stats, staging / HISTOGRAM)
    card = render_card(manifest, repo_id=repo_id, histogram=True, license=license)
    (staging / "README.md").write_text(card, encoding="utf-8")
    return [staging / "README.md", staging / HISTOGRAM]


def local_files(folder: Path, manifest: Manifest, staging: Path) -> list[Upload]:
    files = [Upload.of(e.path, folder / e.path) for e in manifest.files]
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


def remote_files(api: HfApi, repo_id: str) -> tuple[dict[str, set[str]], bool]:
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
    check_license(license)
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


def format_publish(folder: Path, plan: Plan, commit_url: str | None, *, public: bool, dry_run: bool,
                   preview: Path | None) -> str:
    """What `uftdata publish` prints: where to, each file sent, kept or deleted, and what happened
    (a dry run, nothing to commit, or the commit); a note when an existing repository kept a visibility
    other than the one asked for."""
    from huggingface_hub import constants

    visibility = "private" if plan.private else "public"
    lines = [f"publish: {folder} -> {constants.ENDPOINT}/datasets/{plan.repo_id} ({visibility})"]
    lines += [f"  upload     {f.path_in_repo:<40} {f.size:>12,} bytes  sha256 {f.sha256[:12]}  from {f.local.name}"
              for f in plan.uploads]
    lines += [f"  unchanged  {path}" for path in plan.unchanged]
    lines += [f"  delete     {path}  (not part of this mixture)" for path in plan.deletes]
    if preview is not None:
        lines.append(f"  card preview: {preview / 'README.md'}")
    if dry_run:
        lines.append("dry run: nothing was sent; the Hub was not contacted.")
    elif commit_url is None:
        lines.append("up to date: the repository already holds these files; no commit made.")
    else:
        lines.append(f"committed: {commit_url}")
    if not dry_run and public != (not plan.private):
        lines.append(f"  note: the repository already existed and stays {visibility}; change it on the Hub if needed.")
    return "\n".join(lines)


def upload(repo_id: str, files: list[Upload], manifest: Manifest, public: bool) -> tuple[Plan, str | None]:
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
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(f.path_in_repo, str(f.local)) for f in plan.uploads]
        operations += [CommitOperationDelete(p) for p in plan.deletes]
        commit = api.create_commit(
            repo_id, operations, repo_type="dataset",
            commit_message=f"uftdata publish {manifest.name} ({manifest.content_hash[:12]})",
            commit_description=f"Built with uft {manifest.versions.get('uft')}; content hash {manifest.content_hash}.",
        )
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise UftDataError(f"hf://datasets/{repo_id}", f"the Hub refused the upload (HTTP {status}: "
                           f"{str(e).splitlines()[0]})", fix="Check that the token can write to this organization.") from None
    except Exception as e:  # httpx's network errors are no OSError (requests' were)
        if not (isinstance(e, OSError) or is_network_error(e)):
            raise
        raise UftDataError(f"hf://datasets/{repo_id}", f"cannot reach the Hub ({type(e).__name__}: {e})",
                           fix="Check the network and HF_ENDPOINT, then publish again.") from None
    return plan, commit.commit_url
