"""The repository's own lm-eval tasks: a 12-question multiple-choice task and an 8-question generation
task whose data ship in uft_train/evaltasks/ (our own questions), so `uft-train eval --suite local`
and the tests run lm-eval end to end with no download. They check the pipeline (loading, the chat
template, scoring, the table), not a model.

lm-eval reads them as inline task configs (dicts): a YAML file could not name its data files
relative to itself.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "evaltasks"


def _task(name: str, **config: object) -> dict[str, object]:
    return {"task": name, "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(DATA / f"{name}.jsonl")}},
            "test_split": "test", "metadata": {"version": 1.0}, **config}


def local_tasks() -> dict[str, dict[str, object]]:
    """Task name -> lm-eval task config."""
    return {
        "uft_local_mc": _task(
            "uft_local_mc", output_type="multiple_choice", doc_to_text="Question: {{question}}\nAnswer:",
            doc_to_choice="{{choices}}", doc_to_target="answer",
            metric_list=[{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")]),
        "uft_local_gen": _task(
            "uft_local_gen", output_type="generate_until", doc_to_text="{{question}}", doc_to_target="answer",
            generation_kwargs={"until": ["\n"], "max_gen_toks": 16, "do_sample": False},
            # lm-eval's own filters: leading whitespace off, the first response kept (filter name "none",
            # so the metric's key is exact_match,none as for any unfiltered task).
            filter_list=[{"name": "none", "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}]}],
            metric_list=[{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                          "ignore_case": True, "ignore_punctuation": True}]),
    }
