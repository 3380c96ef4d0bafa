"""The share of real rows each paper recipe's lengths drop, with Mistral-7B-v0.1's real tokenizer.

    python bench/drop_shares.py [--samples ../shared/samples]

Every real sample file (../shared/samples/SOURCES.md) is prepared as the README's workflow does
(`uftdata unfold` / `score` / `feedback`, run in-process), rendered with recipes/mix_20k_20k.yaml's
`model.template`, tokenized with `uft_train.shipped.shipped_tokenizer("mistral")` by
`uft_train.data.tokenize_split`, and counted per distinct (`max_length`, `max_prompt_length`,
`truncation`) of the recipes/*.yaml that train a real model (the tiny recipes are left out). It
also prints, per file, the rows the rule before issue 12 (the whole tokenized at once; the prompt's
tokens must be its prefix) would have dropped as `template_prefix_mismatch`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from collections import Counter
from pathlib import Path

import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "samples"
# file -> the README workflow's command (step 1, 2 or 3) and --source
COMMANDS = {
    "ultrachat_200k_train_sft.json": ("unfold", "ultrachat"),
    "helpsteer2_sample10.jsonl": ("score", "helpsteer2"),
    "helpsteer_v1_train.jsonl": ("score", "helpsteer"),
    "ultrafeedback_binarized_train_prefs.jsonl": ("feedback", "ultrafeedback"),
    "hh-rlhf_harmless-base_test.jsonl": ("feedback", "hh_rlhf"),
    "hh-rlhf_helpful-base_train.jsonl": ("feedback", "hh_rlhf"),
    "kto_mix_llamafactory_kto_en_demo.json": ("feedback", "kto_mix"),
}


def prepare(samples: Path, out: Path) -> dict[str, Path]:
    """Each sample file in the row schema, written by the uftdata command the README uses for it."""
    from uftdata import cli

    prepared = {}
    for name, (command, source) in COMMANDS.items():
        target = out / (name.split(".")[0] + ".parquet")
        argv = ["uftdata", command, str(samples / name), "-o", str(target), "--source", source]
        old, sys.argv = sys.argv, argv
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
                cli.main()
        except SystemExit as exit_:
            if exit_.code:
                raise RuntimeError(f"{' '.join(argv)} failed: {err.getvalue()}") from None
        finally:
            sys.argv = old
        prepared[name] = target
    return prepared


def recipe_template(recipe: Path = ROOT / "recipes" / "mix_20k_20k.yaml") -> str:
    return str(yaml.safe_load(recipe.read_text())["model"]["template"])


def length_settings(folder: Path = ROOT / "recipes") -> dict[tuple[int, int, str], list[str]]:
    """(max_length, max_prompt_length, truncation) -> the recipes (real models only) that set it."""
    from uft_train.config import DataConfig

    default = DataConfig()
    groups: dict[tuple[int, int, str], list[str]] = {}
    for path in sorted(folder.glob("*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        if (recipe.get("model") or {}).get("name", "tiny") == "tiny":
            continue
        data = recipe.get("data") or {}
        key = (int(data.get("max_length", default.max_length)),
               int(data.get("max_prompt_length", default.max_prompt_length)),
               str(data.get("truncation", default.truncation)))
        groups.setdefault(key, []).append(path.stem)
    return groups


def old_rule_mismatches(rows: pl.DataFrame, tokenizer: object, template: str) -> int:
    """Rows whose rendered prompt's tokens are not a prefix of the whole's (the rule before issue 12)."""
    from uft_train.data import render

    prompts, wholes = zip(*(render(tokenizer, p, c, template)  # type: ignore[arg-type]
                            for p, c in rows.select("prompt", "completion").iter_rows()))
    encoded = tokenizer(list(prompts) + list(wholes), add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    half = len(prompts)
    return sum(whole[:len(p)] != p for p, whole in zip(encoded[:half], encoded[half:]))


def drop_counts(rows: pl.DataFrame, tokenizer: object, template: str, setting: tuple[int, int, str]) -> Counter[str]:
    from uft_train.data import PROMPT_TRUNCATED, tokenize_split

    max_length, max_prompt_length, truncation = setting
    _, counts = tokenize_split(rows, tokenizer, template=template, max_length=max_length,  # type: ignore[arg-type]
                               max_prompt_length=max_prompt_length, truncation=truncation)  # type: ignore[arg-type]
    counts.pop(PROMPT_TRUNCATED, None)
    return counts


def read_rows(path: Path) -> pl.DataFrame:
    from uft_train.data import COLUMNS

    return pl.read_parquet(path, columns=list(COLUMNS))


def table(samples: Path) -> str:
    """The Markdown table: per file, its rows and each setting's dropped share (and reasons)."""
    from uft_train.shipped import shipped_tokenizer

    tokenizer, template, groups = shipped_tokenizer("mistral"), recipe_template(), length_settings()
    settings = sorted(groups)
    head = " | ".join(f"{m}/{p}/{t}" for m, p, t in settings)
    lines = [f"| file | rows | dropped at {head} (max_length/max_prompt_length/truncation) | old-rule mismatches |",
             "|---|---|" + "---|" * len(settings) + "---|"]
    totals: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as work:
        for name, path in prepare(samples, Path(work)).items():
            rows = read_rows(path)
            cells = []
            for setting in settings:
                counts = drop_counts(rows, tokenizer, template, setting)
                dropped = sum(counts.values())
                totals[f"{setting}"] += dropped
                reasons = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                cells.append(f"{dropped / rows.height:.1%} ({dropped}{': ' + reasons if reasons else ''})")
            totals["rows"] += rows.height
            lines.append(f"| {name} | {rows.height} | {' | '.join(cells)} | "
                         f"{old_rule_mismatches(rows, tokenizer, template)} |")
    all_cells = " | ".join(f"{totals[str(s)] / totals['rows']:.1%} ({totals[str(s)]})" for s in settings)
    lines.append(f"| all | {totals['rows']} | {all_cells} | |")
    lines.append("")
    lines += [f"{m}/{p}/{t}: {', '.join(groups[(m, p, t)])}" for m, p, t in settings]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=Path, default=SAMPLES)
    print(table(parser.parse_args().samples))


if __name__ == "__main__":
    main()
