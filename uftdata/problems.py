"""A problem of a recipe at a dotted key, and the error that lists them all (docs/design.md, "Recipes").

Every part of the recipe loader (the strict loader of `uftdata.strict`, the `mixture:` section of
`uftdata.mixspec`, the trainer's range and combination checks) collects `Problem`s into one list;
the command raises them once, as a `RecipeError` printed one line per problem, each line rendered by
the project's one formatter `uftdata.errors.error_line`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from uftdata.errors import UftDataError, error_line


@dataclass(frozen=True)
class Problem:
    """One problem at a dotted key; `got` is Ellipsis when there is no value to show (null is a value)."""

    key: str
    what: str
    got: object = ...
    expected: str = ""
    fix: str = ""

    def line(self, where: str) -> str:
        """The user's line: `<where>: <key>: <what> ...` (without `where`, the key starts it)."""
        at = f"{where}: {self.key}" if where and self.key else where or self.key
        return error_line(at, self.what, got=self.got, expected=self.expected, fix=self.fix)

    def error(self) -> UftDataError:
        """This problem alone as an exception (command-line options stop at their first problem)."""
        return UftDataError(self.key, self.what, got=None if self.got is ... else self.got,
                            expected=self.expected, fix=self.fix)


class RecipeError(UftDataError):
    """Every problem of a recipe, one per line; the CLI prints each line and exits 2."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("recipe", "\n".join(self.problems))

    def line(self) -> str:
        return "\n".join(self.problems)
