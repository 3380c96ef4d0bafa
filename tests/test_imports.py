"""The import graph of the packages (docs/design.md, "The one allowed interface between uftdata and
uft_train"): no circle among modules, `uftdata` imports neither `uft_train` nor `uft_miniature`, and
the design's import table names exactly the `uftdata` modules that `uft_train` and `uft_miniature` use."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("uftdata", "uft_train", "uft_miniature")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The package modules `path` imports, at any depth (a function's import counts too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            # `from uftdata import schema` imports the module schema; `from uftdata import __version__`, the package
            found |= submodules or {node.module}
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One path per circle found by depth-first search (a back edge closes it)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []
    found = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_circles_are_found() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert circles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_the_packages_import_no_circle() -> None:
    edges = graph()
    assert len(edges) > 30
    found = circles(edges)
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_uftdata_imports_neither_trainer_nor_miniature() -> None:
    wrong = [f"{name} -> {target}" for name, targets in graph().items() if name.startswith("uftdata")
             for target in targets if not target.startswith("uftdata")]
    assert not wrong


def test_the_design_import_table_is_the_code() -> None:
    """Each row of the table: a `uftdata` module and the trainer/miniature files importing it."""
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    section = design.split("## The one allowed interface between uftdata and uft_train", 1)[1].split("\n## ", 1)[0]
    table: set[tuple[str, str]] = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| `") else []
        if len(cells) != 2 or ".py`" not in cells[1]:
            continue  # not a row, or the header
        targets = [f"uftdata.{m}" if m != "uftdata" else m for m in re.findall(r"`(\w+)`", cells[0].split("(")[0])]
        package = None
        for entry in re.split(r"[,;] ", cells[1]):
            named = re.match(r"`(?:(uft_train|uft_miniature)/)?(\w+)\.py`", entry.strip())
            assert named, f"cannot read {entry!r} in the design's import table"
            package = named.group(1) or package
            table |= {(f"{package}.{named.group(2)}", t) for t in targets}
    code = {(name, target) for name, targets in graph().items() if not name.startswith("uftdata")
            for target in targets if target.split(".")[0] == "uftdata"}
    assert sorted(code - table) == [], "imports the design's table does not name"
    assert sorted(table - code) == [], "rows of the design's table that no import matches"
