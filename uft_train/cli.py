"""`uft-train`: for now, checks that a recipe's training data is built and valid.

The trainer itself (losses, loop, LoRA) is issue 3. `uft-train` never builds a mixture: when the
recipe's data is missing, it names the missing `manifest.json` and the command that builds it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from uftdata.errors import UftDataError
from uftdata.inspect import inspect_path, render
from uftdata.mixspec import load_recipe_mixture


def data_path(recipe: Path) -> Path:
    """`data.path`, defaulting to `mixture.out` (DESIGN.md, "Recipes")."""
    raw = yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}
    path = (raw.get("data") or {}).get("path")
    if path is None:
        path = load_recipe_mixture(recipe).out
    if path is None:
        raise UftDataError(str(recipe), "has neither data.path nor mixture.out")
    return Path(path)


def check_data(recipe: Path) -> int:
    folder = data_path(recipe)
    if not (folder / "manifest.json").is_file():
        raise UftDataError(str(folder / "manifest.json"), "not found: the mixture is not built",
                           fix=f"Build it with: uftdata mix {recipe}")
    report = inspect_path(folder)
    print(render(report))
    return 1 if report["problems"] else 0


def main() -> None:
    args = sys.argv[1:]
    if len(args) != 2 or args[0] != "--check-data" or args[1].startswith("-"):
        print("usage: uft-train --check-data RECIPE.yaml\n\n"
              "Checks that the recipe's mixture (data.path, default mixture.out) is built and valid.\n"
              "Training itself is not implemented in this version (see the issue tracker).", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(check_data(Path(args[1])))
    except UftDataError as error:
        print(f"uft-train: error: {error.line()}", file=sys.stderr)
        sys.exit(2)
