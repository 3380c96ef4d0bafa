"""The size budget of the packages (../shared/STYLE.md, "Size"): no module over 400 lines and no
function over 60, so that every file and function can be read whole. The test lists every breach at
once, so one run shows all that is left to split."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("uftdata", "uft_train", "uft_miniature")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def long_functions(path: Path) -> list[str]:
    """`file:line name (N lines)` for every def and async def (methods and nested ones too) over budget."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno is not None  # set by ast.parse since Python 3.8
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_the_packages_are_found() -> None:
    assert len(modules()) > 30  # a moved package would otherwise pass the budget by holding nothing


def test_no_module_over_the_line_budget() -> None:
    too_long = [f"{p.relative_to(ROOT)} ({n} lines)" for p in modules()
                if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES]
    assert not too_long, f"modules over {MAX_FILE_LINES} lines; split them by job:\n" + "\n".join(too_long)


def test_no_function_over_the_line_budget() -> None:
    too_long = [entry for p in modules() for entry in long_functions(p)]
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines; split them:\n" + "\n".join(too_long)
