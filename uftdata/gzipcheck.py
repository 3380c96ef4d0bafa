"""Gzipped inputs that fail as one line: a damaged, truncated or non-gzip `.gz` is a `DamagedGzip`
naming the file, never a zlib traceback (or click's bare "Aborted!" for an EOFError)."""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Protocol, TypeVar

from uftdata.errors import UftDataError

_Stream = TypeVar("_Stream", bound="ByteStream")


class ByteStream(Protocol):
    """What the readers use of an open input: a local file, a Hub stream (`uftdata.hub`) or a
    `CheckedGzipFile` over either. gzip seeks, and so does pyarrow in a Parquet stream."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int: ...

    def tell(self) -> int: ...

    def close(self) -> None: ...

    def __enter__(self: _Stream) -> _Stream: ...

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None, /) -> None: ...


class DamagedGzip(UftDataError):
    """A `.gz` input that is not gzip, is truncated, or fails its checksum."""

    def __init__(self, name: str, what: str, fix: str = "") -> None:
        self.name = name
        super().__init__(name, what, fix=fix)

    def after_line(self, line: int) -> DamagedGzip:
        """The same error, saying how far the lines were read intact (when any were)."""
        if line < 1:
            return self
        return DamagedGzip(self.name, f"{self.what} (the damage is after line {line})", self.fix)


class CheckedGzipFile(gzip.GzipFile):
    """A GzipFile that owns the stream it was given and turns zlib's and gzip's exceptions into
    `DamagedGzip`. Every decompressing entry point is covered: pyarrow seeks and reads a gzipped
    Parquet file."""

    def __init__(self, name: str, raw: ByteStream) -> None:
        self._name = name
        self.compressed = raw  # read position = compressed bytes consumed, for progress
        super().__init__(fileobj=raw, mode="rb")

    def read(self, size: int | None = -1) -> bytes:
        with self._checked():
            return super().read(size)

    def read1(self, size: int = -1) -> bytes:
        with self._checked():
            return super().read1(size)

    def peek(self, n: int) -> bytes:
        with self._checked():
            return super().peek(n)

    def readline(self, size: int | None = -1) -> bytes:
        with self._checked():
            return super().readline(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with self._checked():
            return super().seek(offset, whence)

    @contextmanager
    def _checked(self) -> Iterator[None]:
        try:
            yield
        except EOFError:
            raise DamagedGzip(self._name, "is truncated: its gzip stream ends before the end marker",
                              fix="Download or copy the file again.") from None
        except gzip.BadGzipFile as e:
            if str(e).startswith("Not a gzipped file"):
                raise DamagedGzip(self._name, "is not gzip (it does not start with the gzip magic bytes)",
                                  fix="If it is plain text or Parquet, rename it without `.gz`.") from None
            raise DamagedGzip(self._name, f"is damaged: its gzip data fails the check ({e})",
                              fix="Download or copy the file again.") from None
        except zlib.error as e:
            raise DamagedGzip(self._name, f"is damaged: its gzip data cannot be decompressed ({e})",
                              fix="Download or copy the file again.") from None

    def close(self) -> None:
        first = self.fileobj is not None  # GzipFile.close drops it: close the stream once
        super().close()
        if first:
            self.compressed.close()
