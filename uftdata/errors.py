"""User-facing errors: one line, `<where>: <what> (got <value>); expected <allowed>. <fix>`."""

from __future__ import annotations


class UftDataError(Exception):
    """A problem with the user's input or options; the CLI prints it on one line and exits 2."""

    def __init__(self, where: str, what: str, *, got: object = None, expected: str = "", fix: str = "") -> None:
        self.where, self.what, self.got, self.expected, self.fix = where, what, got, expected, fix
        super().__init__(self.line())

    def line(self) -> str:
        text = f"{self.where}: {self.what}"
        if self.got is not None:
            got = repr(self.got)
            text += f" (got {got[:80] + '...' if len(got) > 80 else got})"
        if self.expected:
            text += f"; expected {self.expected}"
        text += "."
        if self.fix:
            text += f" {self.fix}"
        return " ".join(text.split("\n"))


class RecordError(UftDataError):
    """A problem with one record; `--on-error skip` sends it to the rejects file instead."""

    def __init__(self, where: str, field: str, what: str, *, got: object = None, expected: str = "", fix: str = "") -> None:
        self.field = field
        super().__init__(f"{where}: field {field!r}" if field else where, what, got=got, expected=expected, fix=fix)
        self.record_where = where
