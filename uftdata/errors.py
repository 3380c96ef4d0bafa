"""Errors users see, and their one formatter: `<where>: <what> (got <value>); expected <allowed>. <fix>`.

`UftError` is the base both console entry points catch (`uftdata.failures.console_failures`): its
`line()` is printed after `PROG: error: ` and the command exits 2, with no traceback. Anything else
is a bug and keeps its traceback. This module imports nothing heavy, so that `uft_train` (and its
torch-free `--dry-run`) can share it; `uftdata` never imports `uft_train`.
"""

from __future__ import annotations

_GOT_CHARS = 80


def error_line(where: str, what: str, *, got: object = ..., expected: str = "", fix: str = "") -> str:
    """The one line of every user-facing error. Without `got` (Ellipsis, because null is a value:
    a recipe key set to `null` shows `(got null)`) there is no `(got ...)`. The sentence ends with a
    period unless it already ends with one or with a question; newlines become spaces."""
    text = f"{where}: {what}"
    if got is not ...:
        shown = "null" if got is None else repr(got)
        text += f" (got {shown[:_GOT_CHARS] + '...' if len(shown) > _GOT_CHARS else shown})"
    if expected:
        text += f"; expected {expected}"
    if not text.endswith((".", "?")):
        text += "."
    if fix:
        text += f" {fix}"
    return " ".join(text.split("\n"))


class UftError(Exception):
    """A failure the user can act on: a console entry point prints `line()` and exits 2.

    `got=None` means "no value to show". A subclass may make `line()` several lines (one per
    problem); the console prefixes each."""

    def __init__(self, where: str, what: str, *, got: object = None, expected: str = "", fix: str = "") -> None:
        self.where, self.what, self.got, self.expected, self.fix = where, what, got, expected, fix
        super().__init__(self.line())

    def line(self) -> str:
        return error_line(self.where, self.what, got=... if self.got is None else self.got,
                          expected=self.expected, fix=self.fix)


class UftDataError(UftError):
    """A problem with the user's data, options or recipe (as opposed to the run's environment)."""


class RecordError(UftDataError):
    """A problem with one record; `--on-error skip` sends it to the rejects file instead."""

    def __init__(self, where: str, field: str, what: str, *, got: object = None, expected: str = "", fix: str = "") -> None:
        self.field = field
        super().__init__(f"{where}: field {field!r}" if field else where, what, got=got, expected=expected, fix=fix)
        self.record_where = where
