"""Hugging Face Hub sources: `hf://datasets/ORG/NAME[@REVISION][/PATH]` as command inputs.

A URL is resolved once, at a fixed commit (a branch could move while a command reads), into the
files of one config and split, chosen the way `datasets` chooses them: the card's YAML `configs`
when it has them, else split names in the file paths (`train-00000-of-00002.parquet`,
`data/test.jsonl.gz`, `harmless-base/train.jsonl.gz`). Files are read in place: JSONL as one
streamed download, Parquet by byte ranges; nothing is downloaded whole or cached on disk.
The token comes from `HF_TOKEN` or the login cache (huggingface_hub's own lookup) and is never
printed; the endpoint from `HF_ENDPOINT`. A Hub that cannot be reached (no network, a refused
connection, a timeout, `HF_HUB_OFFLINE=1`) is one line saying how to work offline instead.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Protocol

import yaml

from uftdata.errors import UftDataError

if TYPE_CHECKING:  # huggingface_hub is imported on first use: most commands never reach the Hub
    from huggingface_hub import DatasetInfo, HfApi, HfFileSystem

PREFIX = "hf://datasets/"
# datasets' split keywords (datasets/data_files.py); a path names a split with a keyword delimited
# by one of these characters.
SPLIT_KEYWORDS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing", "eval", "evaluation"),
}
_DELIMITER = r"[-._ /0-9]"


@dataclass(frozen=True)
class HubOptions:
    """Which part of a Hub dataset to read: `--hf-split`, `--hf-config`, `--hf-revision`."""

    split: str | None = None
    config: str | None = None
    revision: str | None = None


@dataclass(frozen=True)
class HubURL:
    repo_id: str
    revision: str | None
    path: str  # inside the repository; "" for its root

    @property
    def text(self) -> str:
        return f"{PREFIX}{self.repo_id}{'@' + self.revision if self.revision else ''}{'/' + self.path if self.path else ''}"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Hub dataset at a fixed commit."""

    repo_id: str
    path: str
    commit: str
    size: int
    license: str | None

    @property
    def url(self) -> str:
        return f"{PREFIX}{self.repo_id}/{self.path}"

    def open(self, *, seekable: bool) -> HubStream:
        fs = hub_filesystem()
        where = f"datasets/{self.repo_id}@{self.commit}/{self.path}"
        # block_size=0: one streamed GET for sequential reads; Parquet needs seeks (byte ranges).
        with reaching(self.url, self.repo_id):
            stream = fs.open(where, "rb", block_size=8 << 20 if seekable else 0)
        return HubStream(self.url, self.repo_id, stream)

    def provenance(self) -> dict:
        return {"url": self.url, "revision": self.commit, "license": self.license}


class _RawStream(Protocol):
    """What `HubStream` calls of the file object HfFileSystem opens (an fsspec file, untyped)."""

    closed: bool

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int: ...

    def tell(self) -> int: ...

    def seekable(self) -> bool: ...

    def close(self) -> None: ...


class HubStream:
    """A Hub file being read: a connection lost mid-read is one line naming the file (`reaching`).
    Only what gzip, pyarrow and the readers call is offered, so none of them bypasses the check."""

    def __init__(self, url: str, repo_id: str, raw: _RawStream) -> None:
        self.url, self.repo_id, self._raw = url, repo_id, raw

    def read(self, size: int = -1) -> bytes:
        with reaching(self.url, self.repo_id):
            return self._raw.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with reaching(self.url, self.repo_id):
            return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(self._raw.seekable())

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> HubStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_network_error(error: BaseException) -> bool:
    """Whether `error` means the Hub could not be reached (refused, DNS, timeout, offline mode),
    whichever HTTP client this huggingface_hub uses: requests before 1.0, httpx or httpx2 since.
    Only a client already imported can have raised, so none is imported here."""
    if isinstance(error, (ConnectionError, TimeoutError)):  # OfflineModeIsEnabled is a ConnectionError
        return True
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
        client = sys.modules.get(module)
        if client is not None and isinstance(error, tuple(getattr(client, name) for name in names)):
            return True
    return False


def offline_fix(repo_id: str, revision: str | None = None) -> str:
    """How to read a Hub dataset without network: download it where there is one, pass the folder."""
    pinned = f" --revision {revision}" if revision else ""
    return (f"To work offline, download it on a connected machine with `hf download {repo_id} --repo-type dataset"
            f"{pinned} --local-dir DIR`, then pass DIR (or its files) instead of the hf:// URL.")


@contextmanager
def reaching(url: str, repo_id: str, revision: str | None = None) -> Iterator[None]:
    """Network failures inside as one `UftDataError` naming `url` and the endpoint, with the offline fix."""
    try:
        yield
    except Exception as e:
        if not is_network_error(e):
            raise
        from huggingface_hub import constants

        reason = " ".join(str(e).split()) or "no answer"
        if len(reason) > 160:
            reason = reason[:160].rsplit(" ", 1)[0] + " ..."
        raise UftDataError(url, f"the Hub could not be reached at {constants.ENDPOINT} ({type(e).__name__}: {reason})",
                           fix=offline_fix(repo_id, revision)) from None


def is_hub_url(text: str) -> bool:
    return str(text).startswith("hf://")


def parse_url(text: str) -> HubURL:
    if not text.startswith(PREFIX):
        raise UftDataError(text, "is not a Hub dataset URL", expected="hf://datasets/ORG/NAME[@REVISION][/PATH]")
    rest = text[len(PREFIX):].strip("/")
    parts = rest.split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise UftDataError(text, "names no dataset", expected="hf://datasets/ORG/NAME[@REVISION][/PATH]")
    name, _, revision = parts[1].partition("@")
    return HubURL(f"{parts[0]}/{name}", revision or None, "/".join(parts[2:]))


def hub_api() -> HfApi:
    from huggingface_hub import HfApi

    return HfApi()  # endpoint and token from the environment / login cache


def hub_filesystem() -> HfFileSystem:
    from huggingface_hub import HfFileSystem

    return HfFileSystem()


def resolve(text: str, options: HubOptions, supported: tuple[str, ...]) -> list[RemoteFile]:
    """The files `text` stands for under `options`, at one commit. `supported`: file suffixes read."""
    url = parse_url(text)
    if url.revision and options.revision and url.revision != options.revision:
        raise UftDataError(text, "names a revision that differs from --hf-revision", got=options.revision)
    revision = url.revision or options.revision
    info = _dataset_info(url, revision)
    if info.sha is None:  # the Hub always sends it; without it the files could change while read
        raise UftDataError(url.text, "cannot read from the Hub (it named no commit for this revision)")
    files = {s.rfilename: s.size or 0 for s in info.siblings or []}
    with reaching(url.text, url.repo_id, revision):
        card = _card(url.repo_id, info.sha, files)
    if url.path in files:  # one file named directly
        chosen = [url.path]
    else:
        chosen = _select(url, files, card, options, supported)
    license_ = card.get("license")
    license_text = ", ".join(license_) if isinstance(license_, list) else license_
    return [RemoteFile(url.repo_id, p, info.sha, files[p], license_text) for p in chosen]


def _dataset_info(url: HubURL, revision: str | None) -> DatasetInfo:
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        with reaching(url.text, url.repo_id, revision):
            # huggingface_hub's API calls wait forever by default; a Hub behind a silent firewall
            # should fail like a refused connection, after the metadata timeout (HF_HUB_ETAG_TIMEOUT).
            return hub_api().dataset_info(url.repo_id, revision=revision, files_metadata=True,
                                          timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except RevisionNotFoundError:
        raise UftDataError(url.text, "revision not found", got=revision, expected="a branch, tag or commit") from None
    except RepositoryNotFoundError:
        raise UftDataError(url.text, "dataset not found, or private and no token has access",
                           fix="Check the name; for a private dataset set HF_TOKEN or run `hf auth login`.") from None
    except (HfHubHTTPError, OSError) as e:
        raise UftDataError(url.text, f"cannot read from the Hub ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def _card(repo_id: str, commit: str, files: dict[str, int]) -> dict:
    """The YAML header of the dataset's README.md, or {}."""
    if "README.md" not in files:
        return {}
    with RemoteFile(repo_id, "README.md", commit, files["README.md"], None).open(seekable=False) as stream:
        text = stream.read().decode("utf-8", "replace")
    m = re.match(r"---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    try:
        header = yaml.safe_load(m[1]) if m else {}
    except yaml.YAMLError:
        return {}  # a broken card should not stop reading the data; the file selection falls back
    return header if isinstance(header, dict) else {}


def _select(url: HubURL, files: dict[str, int], card: dict, options: HubOptions,
            supported: tuple[str, ...]) -> list[str]:
    readable = sorted(p for p in files if p.lower().endswith(supported) and _under(p, url.path))
    configs = card.get("configs") or []
    if configs:
        patterns = _config_patterns(url, configs, options)
        chosen = [p for p in readable if any(_glob(pattern).fullmatch(p) for pattern in patterns)]
    else:
        if options.config is not None:
            raise UftDataError(url.text, "has no configs in its card", got=options.config,
                               fix="Drop --hf-config, or name a folder in the URL: hf://datasets/ORG/NAME/FOLDER.")
        chosen = _by_split_name(url, readable, options.split)
    if not chosen:
        raise UftDataError(url.text, f"holds no {', '.join(supported)} files for split {options.split or 'train'!r}",
                           got=sorted(files)[:20], fix="Name a file or folder in the URL, or pick --hf-split.")
    return chosen


def _under(path: str, folder: str) -> bool:
    return not folder or path.startswith(folder.rstrip("/") + "/")


def _config_patterns(url: HubURL, configs: list, options: HubOptions) -> list[str]:
    names = [c.get("config_name", "default") for c in configs if isinstance(c, dict)]
    if options.config is not None:
        config = next((c for c in configs if c.get("config_name", "default") == options.config), None)
        if config is None:
            raise UftDataError(url.text, "has no such config", got=options.config, expected=", ".join(names))
    else:
        config = next((c for c in configs if c.get("default")), None) or next(
            (c for c in configs if c.get("config_name") == "default"), None) or configs[0]
    data_files = config.get("data_files", [])
    prefix = config.get("data_dir", "").strip("/")
    if isinstance(data_files, (str, list)) and not (isinstance(data_files, list) and data_files
                                                     and isinstance(data_files[0], dict)):
        by_split = {"train": [data_files] if isinstance(data_files, str) else list(data_files)}
    else:
        by_split = {d["split"]: [d["path"]] if isinstance(d["path"], str) else list(d["path"]) for d in data_files}
    split = options.split or ("train" if "train" in by_split or len(by_split) != 1 else next(iter(by_split)))
    if split not in by_split:
        raise UftDataError(url.text, f"config {config.get('config_name', 'default')!r} has no such split", got=split,
                           expected=", ".join(by_split))
    return [f"{prefix}/{p}" if prefix else p for p in by_split[split]]


def _by_split_name(url: HubURL, readable: list[str], split: str | None) -> list[str]:
    """Files whose path (below the URL's folder) names `split`; with no split named anywhere, all."""
    def names(path: str, keyword: str) -> bool:
        rest = path[len(url.path):] if url.path else path
        return re.search(rf"(^|{_DELIMITER}){re.escape(keyword)}({_DELIMITER}|$)", rest.lower()) is not None

    keywords = dict(SPLIT_KEYWORDS)
    wanted = split or "train"
    keywords.setdefault(wanted, (wanted,))
    named_any = [p for p in readable if any(names(p, k) for ks in keywords.values() for k in ks)]
    if not named_any and split is None:
        return readable
    return [p for p in readable if any(names(p, k) for k in keywords[wanted])]


def _glob(pattern: str) -> re.Pattern[str]:
    """fsspec-style glob (as `datasets` data_files use) to a regex: `**` crosses folders, `*` does not."""
    out, i = [], 0
    pattern = str(PurePosixPath(pattern)) if pattern else pattern
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))
