"""`uft-train RECIPE.yaml [key.path=value ...]`: train the recipe's one stage.

`--dry-run` loads and validates the recipe and prints it resolved, without importing torch or
downloading anything; `--check-data` validates the recipe's mixture. `uft-train` never builds a
mixture: when the recipe's data is missing, it names the missing `manifest.json` and the command
that builds it. User errors: one line per problem on stderr, exit 2, no traceback.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from uft_train.config import Recipe, RecipeError, data_path, load_recipe, recipe_help, recipe_to_dict, recipe_to_yaml
from uftdata import __version__
from uftdata.errors import UftDataError
from uftdata.failures import console_failures
from uftdata.manifest import MANIFEST, read_manifest
from uftdata.mixspec import parse_take

USAGE = ("uft-train RECIPE.yaml [KEY.PATH=VALUE ...] [--dry-run [--allow-missing-data] | --check-data]\n"
         "       uft-train export RUN_DIR -o OUT [--overwrite]\n"
         "       uft-train report RUN_DIR [-o DIR]\n"
         "       uft-train eval RUN_OR_MODEL [--suite leaderboard-v2|leaderboard-v1|local|TASK,...] [-o OUT]\n"
         "       uft-train eval-table --suite SUITE RUN_OR_EVAL [RUN_OR_EVAL ...] [-o TABLE.md]")


def mix_command(recipe_path: Path, overrides: Sequence[str], *, rebuild: bool = False) -> str:
    """The command that builds the recipe's mixture, passing on the `mixture.*` overrides (the only
    ones `uftdata mix` reads); `rebuild`: it exists, so `mix` needs --overwrite."""
    mixture = [o for o in overrides if o.partition("=")[0].strip().split(".")[0] == "mixture"]
    return f"uftdata mix {shlex.join([str(recipe_path), *mixture])}{' --overwrite' if rebuild else ''}"


def not_built(manifest: Path, recipe_path: Path, overrides: Sequence[str]) -> UftDataError:
    return UftDataError(str(manifest), "not found: the mixture is not built",
                        fix=f"Build it with: {mix_command(recipe_path, overrides)}")


def missing_inputs(recipe: Recipe, recipe_path: Path, overrides: Sequence[str] = ()) -> list[UftDataError]:
    """What the run reads and is not there: the built mixture (or the plain Parquet file data.path
    names), and a stage-1 adapter if one is named."""
    missing = []
    manifest = data_path(recipe) / MANIFEST
    if not data_path(recipe).is_file() and not manifest.is_file():
        missing.append(not_built(manifest, recipe_path, overrides))
    adapter = recipe.model.init_adapter
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        missing.append(UftDataError(f"model.init_adapter: {adapter}", "has no adapter_config.json",
                                    fix="Train the first stage first (its output.dir/adapter)."))
    return missing


def stale_mixture(recipe: Recipe, recipe_path: Path, overrides: Sequence[str] = ()) -> UftDataError | None:
    """The built mixture.out was made from another `mixture:` section (edited since, or overridden),
    or its manifest cannot be read.

    Compared: seed, on_short, total and each source's take and test split. Not the paths: the
    manifest keeps input file names and hashes (a test file by its name). With data.path set, the
    mixture section is not read.
    """
    path = data_path(recipe) / MANIFEST
    if recipe.data.path is not None or recipe.mixture is None or not path.is_file():
        return None
    try:
        built = read_manifest(path)
    except UftDataError as error:
        return error
    wanted = recipe_to_dict(Recipe(mixture=recipe.mixture))["mixture"]
    differ = [f"{key}: built {getattr(built, key)!r}, recipe {wanted.get(key)!r}" for key in ("seed", "on_short", "total")
              if getattr(built, key) != wanted.get(key)]
    if len(built.sources) != len(wanted["sources"]):
        differ.append(f"sources: {len(built.sources)} built, {len(wanted['sources'])} in the recipe")
    for i, (old, new) in enumerate(zip(built.sources, wanted["sources"])):
        if _take(old.take) != _take(new["take"]):
            differ.append(f"sources[{i}].take: built {old.take!r}, recipe {new['take']!r}")
        test = old.test.to_dict() if old.test else None
        if _held_out(test) != _held_out(new.get("test")):
            differ.append(f"sources[{i}].test: built {test!r}, recipe {new.get('test')!r}")
    if not differ:
        return None
    return UftDataError(str(path), f"was built from another mixture section ({'; '.join(differ)})",
                        fix=f"Rebuild it with: {mix_command(recipe_path, overrides, rebuild=True)} (or point data.path at the mixture you mean).")


def _held_out(test: dict | None) -> tuple[str, object] | None:
    """A test split as the manifest can compare it: a local file by its name (format 2 stores no
    directories; format 1 stored the path as typed), a fraction or a Hub URL as is."""
    if not test:
        return None
    if test.get("file") is not None:
        file = str(test["file"])
        return "file", file if file.startswith("hf://") else Path(file).name
    return "fraction", test.get("fraction")


def _take(text: object) -> tuple[int | None, float | None] | None:
    try:
        take = parse_take(text, "take")
    except UftDataError:
        return None
    return take.count, take.fraction


def check_data(recipe_path: Path, overrides: Sequence[str] = ()) -> int:
    from uftdata.inspect import inspect_path, render  # polars-heavy; only this path needs it

    recipe = load_recipe(recipe_path, overrides)
    folder = data_path(recipe)
    if not folder.is_file() and not (folder / MANIFEST).is_file():
        raise not_built(folder / MANIFEST, recipe_path, overrides)
    report = inspect_path(folder)  # every row; of a mixture, every shard and manifest claim too (uftdata.verify)
    print(render(report))
    return 1 if report["problems"] else 0


def dry_run(recipe_path: Path, overrides: Sequence[str], *, allow_missing_data: bool) -> int:
    """Print the resolved recipe (valid YAML; notes as comments); exit 2 on missing inputs unless allowed."""
    recipe = load_recipe(recipe_path, overrides)
    print(recipe_to_yaml(recipe), end="")
    print(f"# data: {data_path(recipe)}")
    missing = missing_inputs(recipe, recipe_path, overrides)
    for error in missing:
        print(f"uft-train: {'warning' if allow_missing_data else 'error'}: {error.line()}", file=sys.stderr)
    stale = stale_mixture(recipe, recipe_path, overrides)
    if stale is not None:
        raise stale
    return 2 if missing and not allow_missing_data else 0


def run_training(recipe_path: Path, overrides: Sequence[str]) -> int:
    recipe = load_recipe(recipe_path, overrides)
    problems = [*missing_inputs(recipe, recipe_path, overrides), stale_mixture(recipe, recipe_path, overrides)]
    if any(problems):
        raise RecipeError([p.line() for p in problems if p is not None])
    from uft_train.report import run_report
    from uft_train.train import train

    run_dir = train(recipe, recipe_path)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one report
        print(run_report(run_dir))
        # Not drawn here: a plotting problem must not fail a finished run, and matplotlib can be missing
        # where runs go (GPU hosts without a package index: `pip install --no-deps`).
        print(f"  figures: uft-train report {run_dir}")
    return 0


def export(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="uft-train export",
                                description="Merge a finished run's adapter into its base model and save it "
                                            "(safetensors + tokenizer) for evaluation harnesses and servers.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it is an earlier uft-train export (never another folder)")
    args = p.parse_args(argv)
    from uft_train.export import export_run

    print(f"uft-train: exported {export_run(args.run_dir, args.out, overwrite=args.overwrite)}")
    return 0


def report(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="uft-train report",
                                description="Print a run's report and draw its figures: curves.png (loss, implicit "
                                            "reward by kind, pairwise reward accuracy against the step) and "
                                            "calibration.png (sigmoid(reward) against the target score on the test "
                                            "split, from eval_predictions.parquet). Works on a running run too.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("-o", "--out", type=Path, default=None, help="folder for the PNGs (default RUN_DIR/plots)")
    args = p.parse_args(argv)
    from uft_train.report import draw_plots, run_report

    print(run_report(args.run_dir))
    print("\n".join(draw_plots(args.run_dir, args.out or args.run_dir / "plots")))
    return 0


def evaluate(argv: Sequence[str]) -> int:
    from uft_train.evalcli import eval_command

    return eval_command(argv)


def eval_table(argv: Sequence[str]) -> int:
    from uft_train.evalcli import table_command

    return table_command(argv)


SUBCOMMANDS = {"export": export, "report": report, "eval": evaluate, "eval-table": eval_table}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uft-train", usage=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one stage of a recipe (docs/design.md): the base model + a LoRA adapter, one loss, on the\n"
                    "mixture that `uftdata mix RECIPE.yaml` builds. KEY.PATH=VALUE overrides any recipe key below\n"
                    "(VALUE is YAML: loss.beta=0.1, lora.targets=[q_proj,v_proj], mixture.sources.0.take=16k).",
        epilog="recipe keys (KEY: TYPE = DEFAULT):\n" + recipe_help(),
    )
    # Optional only for argparse: with intermixed parsing, a missing required positional is
    # reported as if the overrides were required too.
    p.add_argument("recipe", type=Path, nargs="?", metavar="RECIPE.yaml", help="the recipe (see recipes/)")
    p.add_argument("overrides", nargs="*", metavar="KEY.PATH=VALUE", help="recipe values to replace")
    p.add_argument("--dry-run", action="store_true",
                   help="validate, print the resolved recipe and the data path, check the inputs exist; no torch")
    p.add_argument("--allow-missing-data", action="store_true",
                   help="with --dry-run: a mixture or stage-1 adapter not built yet is a warning, not an error")
    p.add_argument("--check-data", action="store_true", help="validate the recipe's built mixture (uftdata inspect)")
    p.add_argument("--version", action="version", version=f"uft-train {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: a `UftError` (data, recipe or trainer; a RecipeError one line per
    problem) and I/O failures are printed on stderr with exit status 2; Ctrl-C is one line and exit
    status 130 (uftdata.failures)."""
    with console_failures("uft-train"):
        _main(argv)


def _main(argv: Sequence[str] | None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in SUBCOMMANDS:
        sys.exit(SUBCOMMANDS[argv[0]](argv[1:]))
    p = parser()
    args = p.parse_intermixed_args(argv)  # overrides may come after --dry-run
    if args.recipe is None:
        p.error("the recipe is required (see recipes/)")
    if args.allow_missing_data and not args.dry_run:
        p.error("--allow-missing-data only applies with --dry-run")
    if args.dry_run and args.check_data:
        p.error("--dry-run and --check-data do not go together")
    if args.check_data:
        code = check_data(args.recipe, args.overrides)
    elif args.dry_run:
        code = dry_run(args.recipe, args.overrides, allow_missing_data=args.allow_missing_data)
    else:
        code = run_training(args.recipe, args.overrides)
    sys.exit(code)


if __name__ == "__main__":
    main()
