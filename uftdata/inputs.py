"""Which files a command reads, and their bytes: local paths, folders of them, and Hub URLs, each
JSONL, a JSON array or Parquet, optionally gzipped. A file that cannot be opened as what its name
says (a damaged `.gz`, a damaged or empty Parquet file) is one `UftDataError` naming the file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from uftdata.errors import UftDataError
from uftdata.gzipcheck import ByteStream, CheckedGzipFile
from uftdata.hub import HubOptions, RemoteFile, is_hub_url, resolve

Container = Literal["jsonl", "json", "parquet"]
SUFFIXES: dict[str, Container] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}

Progress = Callable[[int], None]


@dataclass(frozen=True)
class InputFile:
    path: Path  # for a Hub file, its path inside the repository
    container: Container
    gzipped: bool
    remote: RemoteFile | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def display(self) -> str:
        """The file as the user named it: a local path or its hf:// URL."""
        return self.remote.url if self.remote else str(self.path)

    def provenance(self) -> dict:
        """Where the rows came from, for summaries and manifests: a Hub file's URL, commit and license."""
        return self.remote.provenance() if self.remote else {}

    def open(self) -> ByteStream:
        """The file's bytes as stored (still gzipped); seekable for Parquet (Hub: byte ranges)."""
        if self.remote:
            return self.remote.open(seekable=self.container == "parquet")
        return open(self.path, "rb")

    def parquet(self) -> pq.ParquetFile:
        """The Parquet file's reader (its footer read); a file that is not Parquet is one error line."""
        try:
            return pq.ParquetFile(open_bytes(self) if self.gzipped else self.open() if self.remote else self.path)
        except (pa.ArrowInvalid, OSError) as e:
            if not self.remote and self.size() == 0:
                raise UftDataError(self.display, "is empty (0 bytes), not a Parquet file",
                                   fix="Check that the right file was passed, or write it again.") from None
            raise UftDataError(self.display, f"is not a Parquet file, or is damaged ({first_line(e)})") from None

    @property
    def unit(self) -> str:
        return {"jsonl": "line", "json": "record", "parquet": "row"}[self.container]

    def where(self, position: int) -> str:
        return f"{self.name}: {self.unit} {position}"

    def size(self) -> int:
        return self.remote.size if self.remote else self.path.stat().st_size


def open_bytes(f: InputFile) -> ByteStream:
    """Decompressed bytes of a file; a damaged `.gz` raises `DamagedGzip` naming the file."""
    return CheckedGzipFile(f.display, f.open()) if f.gzipped else f.open()


def expand_inputs(paths: Sequence[str | Path], hub: HubOptions | None = None) -> list[InputFile]:
    """Files named directly, plus the supported files inside named folders (sorted, recursive), plus
    the files of a Hub dataset (`hf://datasets/ORG/NAME...`, one config and split, see uftdata.hub)."""
    if not paths:
        raise UftDataError("inputs", "no input files given", fix="Pass one or more files or folders.")
    files: list[InputFile] = []
    for raw in paths:
        if is_hub_url(str(raw)):
            files.extend(_hub_files(str(raw), hub or HubOptions()))
            continue
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _container(p) is not None)
            if not found:
                raise UftDataError(str(path), "folder holds no .jsonl, .json or .parquet files (optionally .gz)")
            files.extend(_input_file(p) for p in found)
        elif path.is_file():
            files.append(_input_file(path))
        else:
            raise UftDataError(str(path), "no such file or folder")
    return files


def _hub_files(url: str, options: HubOptions) -> list[InputFile]:
    suffixes = tuple(s + gz for s in SUFFIXES for gz in ("", ".gz"))
    files = []
    for r in resolve(url, options, suffixes):
        container = _container(Path(r.path))
        assert container is not None  # resolve() keeps supported suffixes only
        file = InputFile(Path(r.path), container, r.path.lower().endswith(".gz"), r)
        files.append(_json_lines_or_array(file))
    return files


def _container(path: Path) -> Container | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return SUFFIXES.get(suffixes[-1]) if suffixes else None


def _input_file(path: Path) -> InputFile:
    container = _container(path)
    if container is None:
        raise UftDataError(
            str(path), "unsupported file type", got=path.suffix, expected=", ".join(SUFFIXES) + " (or .gz of those)"
        )
    return _json_lines_or_array(InputFile(path, container, path.suffix.lower() == ".gz"))


def _json_lines_or_array(f: InputFile) -> InputFile:
    """A `.json` file holding one object per line is JSONL: its first non-blank byte is `{`."""
    if f.container != "json":
        return f
    with open_bytes(f) as stream:
        while chunk := stream.read(4096):
            if stripped := chunk.lstrip():
                return InputFile(f.path, "jsonl", f.gzipped, f.remote) if stripped[:1] == b"{" else f
    return f


def first_line(error: BaseException) -> str:
    """An Arrow or OS error message on one line, for an error that quotes it."""
    return " ".join(str(error).split()) or type(error).__name__
