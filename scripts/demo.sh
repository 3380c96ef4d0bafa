#!/usr/bin/env bash
# The whole path on the bundled data/: unfold, score, feedback, mix, inspect (with figures), a
# publish dry run (card preview), exports for TRL and LLaMA-Factory, then a short UFT training run
# of a tiny model built from config (recipes/tiny.yaml), its report with figures, and its evaluation
# by lm-evaluation-harness on the repository's two local tasks (uft-train eval --suite local).
# Outputs go to out/demo/ (ignored by git); run from the repository root. Nothing is downloaded.
set -euo pipefail
out=out/demo
mkdir -p "$out"
uftdata unfold data/ultrachat.jsonl -o "$out/ultrachat.parquet" --source ultrachat
uftdata score data/helpsteer2.jsonl -o "$out/helpsteer2.parquet" --source helpsteer2
uftdata score data/helpsteer2_validation.jsonl -o "$out/helpsteer2_validation.parquet" --source helpsteer2
uftdata feedback data/hh_rlhf.jsonl -o "$out/hh_rlhf.parquet" --source hh_rlhf
uftdata feedback data/kto.jsonl -o "$out/kto.parquet" --source kto
uftdata feedback --pairs-from-scores "$out/helpsteer2.parquet" -o "$out/helpsteer2_pairs.parquet" --source helpsteer2
uftdata mix recipes/demo.yaml --overwrite
uftdata inspect "$out/mix_demo" --plot "$out/plots"
uftdata publish "$out/mix_demo" --repo your-name/mix_demo --dry-run --preview "$out/card"
uftdata export "$out/mix_demo" --to trl-dpo -o "$out/export_trl_dpo" --overwrite
uftdata export "$out/mix_demo" --to llamafactory -o "$out/export_llamafactory" --overwrite
python -c "import datasets; print(datasets.load_dataset('$out/mix_demo'))"
uft-train recipes/tiny.yaml output.overwrite=true
uft-train report "$out/run"
uft-train eval "$out/run" --suite local --overwrite
