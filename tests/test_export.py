"""`uftdata export`: each target written, then read back by the tool it is for.

Exact rows come from a hand-made mixture of 7 rows: an sft row (with a system message), a score row
(0.25), a binary row (label true, score 1) and two pairs, ("2+2?": "4" 0.75 chosen, "5" 0.25) and
("Best fruit?": "Mango." 1.0 chosen, "Rock." 0.5). With the KTO threshold 0.5 (score >= T) the labels
are Paris. T, Nine. F, Hi! T, 4 T, 5 F, Mango. T, Rock. T: 5 true, 2 false, and one feedback label
changed by the threshold (Rock. was the rejected answer). TRL targets are loaded with
`datasets.load_dataset(OUT)`, checked with TRL's data utilities and handed to TRL's trainers, whose
own dataset preparation must keep every example. LLaMA-Factory files are loaded as it loads them
(`load_dataset("json", data_files=...)`) and checked against its sharegpt converter's rules.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import datasets
import polars as pl
import pytest
from test_cli_errors import run_main

from uftdata.errors import UftDataError
from uftdata.export import EXPORT_FILE, LF_TAGS, TARGETS, export_mixture, stage_examples
from uftdata.inspect import inspect_path
from uftdata.mixout import MANIFEST, build_mixtures, content_hash, sha256_file, split_counts
from uftdata.mixspec import MixtureSpec, SourceSpec, parse_take
from uftdata.rejects import Rejects
from uftdata.rows import build_rows
from uftdata.verify import check_mixture, mixture_problems
from uftdata.writer import RowWriter, open_rows

SYSTEM = {"role": "system", "content": "Be brief."}
SHARD = "data/train-00000-of-00001.parquet"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def row(prompt: list[dict], answer: str, score: float, kind: str, label: bool | None = None,
        pair: int | None = None) -> dict:
    return {"prompt": prompt, "completion": assistant(answer), "score": score, "kind": kind, "label": label,
            "pair": pair, "source_id": f"hand:{answer}", "attributes": None}


HAND = [
    row([SYSTEM, user("Capital of France?")], "Paris.", 1.0, "sft"),
    row([user("Name a prime.")], "Nine.", 0.25, "score"),
    row([user("Say hi.")], "Hi!", 1.0, "binary", True),
    row([user("2+2?")], "4", 0.75, "pairwise", True, 0),
    row([user("2+2?")], "5", 0.25, "pairwise", False, 0),
    row([user("Best fruit?")], "Mango.", 1.0, "pairwise", True, 1),
    row([user("Best fruit?")], "Rock.", 0.5, "pairwise", False, 1),
]
KTO_LABELS = {"Paris.": True, "Nine.": False, "Hi!": True, "4": True, "5": False, "Mango.": True, "Rock.": True}


@pytest.fixture()
def hand(tmp_path: Path) -> Path:
    """The 7-row mixture folder `hand` (train split only)."""
    with open_rows(tmp_path / "rows.parquet") as writer:
        writer.write(build_rows(HAND, source="hand"))
    spec = MixtureSpec((SourceSpec(str(tmp_path / "rows.parquet"), parse_take("all", "take"), None),))
    build_mixtures(spec, tmp_path / "hand", Rejects.raising())
    return tmp_path / "hand"


@pytest.fixture(scope="module")
def demo(mixture: Path) -> Path:
    """The demo mixture of data/ (conftest.py): every kind, and a test split."""
    return mixture


def answers(mixture: Path) -> list[str]:
    """The mixture's completions in rank order: the order every export keeps."""
    return [c[0]["content"] for c in pl.read_parquet(mixture / SHARD)["completion"].to_list()]


def read_rows(path: Path) -> list[dict]:
    return pl.read_parquet(path).to_dicts()


def export(mixture: Path, to: str, out: Path, **options: object) -> dict:
    summary = export_mixture(mixture, to, out, **options)  # type: ignore[arg-type]
    assert json.loads((out / EXPORT_FILE).read_text()) == summary
    return summary


# --- exact rows of the hand-made mixture ------------------------------------------------------------

def test_trl_sft_keeps_sft_rows_and_counts_the_rest(hand: Path, tmp_path: Path) -> None:
    summary = export(hand, "trl-sft", tmp_path / "sft")
    assert read_rows(tmp_path / "sft" / SHARD) == [
        {"prompt": [SYSTEM, user("Capital of France?")], "completion": [assistant("Paris.")]}]
    (output,) = summary["outputs"]
    assert output == {"stage": "sft", "split": "train", "path": SHARD, "examples": 1, "rows_in": 7,
                      "dropped": {"not_sft_kind:binary": 1, "not_sft_kind:pairwise": 4, "not_sft_kind:score": 1},
                      "sha256": sha256_file(tmp_path / "sft" / SHARD)}
    manifest = json.loads((hand / MANIFEST).read_text())
    assert summary["source"] == {"name": "hand", "content_hash": manifest["content_hash"]}
    assert summary["kto_threshold"] is None and summary["target"] == "trl-sft"


def test_trl_dpo_rejoins_pairs_in_rank_order(hand: Path, tmp_path: Path) -> None:
    summary = export(hand, "trl-dpo", tmp_path / "dpo")
    pairs = [
        {"prompt": [user("2+2?")], "chosen": [assistant("4")], "rejected": [assistant("5")],
         "score_chosen": 0.75, "score_rejected": 0.25},
        {"prompt": [user("Best fruit?")], "chosen": [assistant("Mango.")], "rejected": [assistant("Rock.")],
         "score_chosen": 1.0, "score_rejected": 0.5},
    ]
    order = answers(hand)
    pairs.sort(key=lambda p: min(order.index(p["chosen"][0]["content"]), order.index(p["rejected"][0]["content"])))
    assert read_rows(tmp_path / "dpo" / SHARD) == pairs
    assert summary["outputs"][0]["examples"] == 2
    assert summary["outputs"][0]["dropped"] == {"not_pairwise_kind:binary": 1, "not_pairwise_kind:score": 1,
                                                "not_pairwise_kind:sft": 1}


def test_trl_kto_labels_every_row_by_threshold(hand: Path, tmp_path: Path) -> None:
    summary = export(hand, "trl-kto", tmp_path / "kto")
    rows = read_rows(tmp_path / "kto" / SHARD)
    assert [r["completion"][0]["content"] for r in rows] == answers(hand)
    assert {r["completion"][0]["content"]: r["label"] for r in rows} == KTO_LABELS
    assert rows[answers(hand).index("Paris.")]["prompt"] == [SYSTEM, user("Capital of France?")]
    assert summary["kto_threshold"] == 0.5
    assert summary["outputs"][0]["labels"] == {"true": 5, "false": 2, "label_changed_by_threshold": 1}
    assert summary["outputs"][0]["dropped"] == {}


@pytest.mark.parametrize(("threshold", "true", "changed"), [
    (0.25, 7, 2),         # Nine. 0.25 and 5 0.25 are >= 0.25: "5" was rejected, so changed (Rock. too)
    (0.5, 5, 1),          # Rock. is exactly 0.5: >= keeps it desirable
    (0.5000001, 4, 0),    # just above (float32 0.50000012): Rock. becomes undesirable, as labelled
    (1.0, 3, 1),          # only the 1.0 scores: "4" (0.75, chosen) becomes undesirable
])
def test_kto_threshold_edges(hand: Path, tmp_path: Path, threshold: float, true: int, changed: int) -> None:
    summary = export(hand, "trl-kto", tmp_path / "kto", kto_threshold=threshold)
    assert summary["outputs"][0]["labels"] == {"true": true, "false": 7 - true, "label_changed_by_threshold": changed}


def test_llamafactory_files_and_dataset_info(hand: Path, tmp_path: Path) -> None:
    out = tmp_path / "lf"
    summary = export(hand, "llamafactory", out)
    assert sorted(os.listdir(out)) == ["dataset_info.json", "export.json", "hand_dpo.jsonl", "hand_kto.jsonl",
                                       "hand_sft.jsonl"]
    assert (out / "hand_sft.jsonl").read_text() == (
        '{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Capital of France?"},'
        '{"role":"assistant","content":"Paris."}]}\n')
    dpo = [json.loads(line) for line in (out / "hand_dpo.jsonl").read_text().splitlines()]
    assert sorted(dpo, key=lambda d: d["chosen"]["content"]) == [
        {"messages": [user("2+2?")], "chosen": assistant("4"), "rejected": assistant("5")},
        {"messages": [user("Best fruit?")], "chosen": assistant("Mango."), "rejected": assistant("Rock.")}]
    kto = [json.loads(line) for line in (out / "hand_kto.jsonl").read_text().splitlines()]
    assert [k["messages"][-1]["content"] for k in kto] == answers(hand)
    assert {k["messages"][-1]["content"]: k["label"] for k in kto} == KTO_LABELS
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["hand_dpo"] == {"file_name": "hand_dpo.jsonl", "formatting": "sharegpt", "ranking": True,
                                "columns": {"messages": "messages", "chosen": "chosen", "rejected": "rejected"},
                                "tags": LF_TAGS}
    assert info["hand_kto"]["columns"] == {"messages": "messages", "kto_tag": "label"}
    assert "ranking" not in info["hand_sft"] and "ranking" not in info["hand_kto"]
    assert [(o["stage"], o["examples"]) for o in summary["outputs"]] == [("sft", 1), ("dpo", 2), ("kto", 7)]
    check_llamafactory(out, tmp_path / "hf")


def test_llamafactory_drops_prompts_that_do_not_alternate() -> None:
    prompts = [[user("a")], [SYSTEM, user("a")], [user("a"), assistant("b"), user("c")],
               [user("a"), user("b")], [user("a"), SYSTEM, user("b")], [assistant("a"), user("b")]]
    rows = pl.DataFrame({"prompt": prompts, "completion": [[assistant("x")]] * 6, "score": [1.0] * 6,
                         "kind": ["sft"] * 6, "label": [None] * 6, "pair_id": [None] * 6},
                        schema_overrides={"label": pl.Boolean, "pair_id": pl.String}).with_row_index("rank")
    kept = stage_examples("sft", rows, threshold=0.5, where="t", lf=True)
    assert kept.frame["rank"].to_list() == [0, 1, 2]
    assert kept.dropped == {"roles_not_alternating": 3}
    assert stage_examples("sft", rows, threshold=0.5, where="t").frame.height == 6  # TRL takes them all


# --- the demo mixture, read back by TRL and checked against LLaMA-Factory's rules --------------------

def check_llamafactory(out: Path, cache: Path) -> None:
    """Every dataset_info.json entry as LLaMA-Factory reads it: `load_dataset("json", data_files=[file],
    split="train")`, then its sharegpt converter's rules (data/README.md, "OpenAI Format"; converter.py):
    an optional leading system message, then user/assistant alternating from user; a ranking entry's
    messages end with the user (odd count) and chosen/rejected are single assistant messages; other
    entries end with the assistant (even count); kto_tag is a bool."""
    info = json.loads((out / "dataset_info.json").read_text())
    written = {o["path"]: o["examples"] for o in json.loads((out / EXPORT_FILE).read_text())["outputs"] if o["path"]}
    assert sorted(e["file_name"] for e in info.values()) == sorted(written)
    for name, entry in info.items():
        assert entry["formatting"] == "sharegpt" and entry["tags"] == LF_TAGS
        rows = datasets.load_dataset("json", data_files=[str(out / entry["file_name"])], split="train",
                                     cache_dir=str(cache))
        columns = entry["columns"]
        assert set(columns.values()) == set(rows.column_names), name
        assert rows.num_rows == written[entry["file_name"]]
        for example in rows:
            messages = example[columns["messages"]]
            roles = [m["role"] for m in messages[1 if messages[0]["role"] == "system" else 0:]]
            assert roles == [("user", "assistant")[i % 2] for i in range(len(roles))], (name, roles)
            assert len(roles) % 2 == (1 if entry.get("ranking") else 0), (name, roles)
            if entry.get("ranking"):
                assert example["chosen"]["role"] == example["rejected"]["role"] == "assistant"
            if "kto_tag" in columns:
                assert isinstance(example[columns["kto_tag"]], bool)


def test_demo_llamafactory_follows_its_conventions(demo: Path, tmp_path: Path) -> None:
    summary = export(demo, "llamafactory", tmp_path / "lf")
    paths = {o["path"] for o in summary["outputs"]}
    assert paths == {"mix_sft.jsonl", "mix_sft_test.jsonl", "mix_dpo.jsonl", None, "mix_kto.jsonl", "mix_kto_test.jsonl"}
    check_llamafactory(tmp_path / "lf", tmp_path / "hf")


def trl_config(config_cls: type, out: Path) -> object:
    names = {f.name for f in dataclasses.fields(config_cls)}
    # transformers 5 renamed gradient_checkpointing (see bench/bench_train.py); both off, as TRL's bf16 default.
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return config_cls(output_dir=str(out), report_to="none", use_cpu=True, bf16=False, fp16=False,
                      per_device_train_batch_size=2, max_length=1024, save_strategy="no", logging_strategy="no",
                      disable_tqdm=True, **{checkpointing: False})


@pytest.mark.parametrize("target", ["trl-sft", "trl-dpo", "trl-kto"])
def test_demo_trl_loads_and_trl_prepares_every_example(demo: Path, tmp_path: Path, target: str) -> None:
    trl = pytest.importorskip("trl")
    from trl.data_utils import apply_chat_template, is_conversational

    from uft_train.tiny import build_tiny_model
    from uft_train.tokenizer import build_tokenizer

    summary = export(demo, target, tmp_path / "out")
    loaded = datasets.load_dataset(str(tmp_path / "out"), cache_dir=str(tmp_path / "hf"))
    examples = {o["split"]: o["examples"] for o in summary["outputs"] if o["path"]}
    assert {split: ds.num_rows for split, ds in loaded.items()} == examples
    tokenizer = build_tokenizer()
    for example in loaded["train"]:
        assert is_conversational(example)
        rendered = apply_chat_template(example, tokenizer)
        assert rendered["prompt"].endswith("<|assistant|>")
        assert all(rendered[key].endswith("<|end|>") for key in ("completion", "chosen", "rejected") if key in rendered)
    trainer_cls, config_cls = {"trl-sft": (trl.SFTTrainer, trl.SFTConfig), "trl-dpo": (trl.DPOTrainer, trl.DPOConfig),
                               "trl-kto": (trl.KTOTrainer, trl.KTOConfig)}[target]
    tiny = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}
    reference = {} if target == "trl-sft" else {"ref_model": build_tiny_model(tokenizer, **tiny)}
    trainer = trainer_cls(model=build_tiny_model(tokenizer, **tiny), args=trl_config(config_cls, tmp_path / "run"),
                          train_dataset=loaded["train"], eval_dataset=loaded.get("test"), processing_class=tokenizer,
                          **reference)
    assert len(trainer.train_dataset) == examples["train"]
    assert (len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0) == examples.get("test", 0)


def test_hand_rows_render_with_the_chat_template(hand: Path, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from trl.data_utils import apply_chat_template

    from uft_train.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    export(hand, "trl-sft", tmp_path / "sft")
    (example,) = datasets.load_dataset(str(tmp_path / "sft"), split="train", cache_dir=str(tmp_path / "hf"))
    assert apply_chat_template(example, tokenizer) == {
        "prompt": "<|system|>Be brief.<|end|><|user|>Capital of France?<|end|><|assistant|>",
        "completion": "Paris.<|end|>"}
    export(hand, "trl-dpo", tmp_path / "dpo")
    pairs = datasets.load_dataset(str(tmp_path / "dpo"), split="train", cache_dir=str(tmp_path / "hf"))
    rendered = {apply_chat_template(p, tokenizer)["prompt"]: apply_chat_template(p, tokenizer) for p in pairs}
    assert rendered["<|user|>2+2?<|end|><|assistant|>"] == {
        "prompt": "<|user|>2+2?<|end|><|assistant|>", "chosen": "4<|end|>", "rejected": "5<|end|>"}


# --- refusals, atomicity, determinism, the command line ----------------------------------------------

def rewrite_shard(mixture: Path, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    """Rewrite the train shard and its manifest entry to match: a mixture whose checks pass but whose
    rows break a rule (what a buggy writer could leave)."""
    rows = change(pl.read_parquet(mixture / SHARD))
    writer = RowWriter(mixture / SHARD)
    writer.write(rows)
    writer.close()
    manifest = json.loads((mixture / MANIFEST).read_text())
    manifest["files"][0].update(sha256=sha256_file(mixture / SHARD), rows=rows.height,
                                bytes=(mixture / SHARD).stat().st_size)
    manifest["counts"]["train"] = dataclasses.asdict(split_counts(rows))  # what uftdata.verify checks
    manifest["sources"][0]["rows_train"] = rows.height
    manifest["content_hash"] = content_hash({"train": rows})
    (mixture / MANIFEST).write_text(json.dumps(manifest))


def pair_id_of(mixture: Path, answer: str) -> str:
    rows = pl.read_parquet(mixture / SHARD)
    return rows.filter(pl.col("completion").list.first().struct.field("content") == answer)["pair_id"].item()


def test_missing_partner_is_an_error_naming_the_pair(hand: Path, tmp_path: Path) -> None:
    pair_id = pair_id_of(hand, "Rock.")
    rewrite_shard(hand, lambda rows: rows.filter(rows["completion"].list.first().struct.field("content") != "Rock."))
    with pytest.raises(UftDataError, match=f"pair_id {pair_id}: is not a whole pair: has 1 rows with 1 chosen"):
        export_mixture(hand, "trl-dpo", tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["hand", "rows.parquet"]  # no output, no partial folder


def test_pair_with_two_prompts_is_an_error_naming_the_pair(hand: Path, tmp_path: Path) -> None:
    pair_id = pair_id_of(hand, "Rock.")
    rejected = pl.col("completion").list.first().struct.field("content") == "Rock."
    other = pl.lit([user("Worst fruit?")], dtype=pl.List(pl.Struct({"role": pl.String, "content": pl.String})))
    rewrite_shard(hand, lambda rows: rows.with_columns(prompt=pl.when(rejected).then(other).otherwise("prompt")))
    with pytest.raises(UftDataError, match=f"pair_id {pair_id}: chosen and rejected rows have different prompts"):
        export_mixture(hand, "trl-dpo", tmp_path / "out")


def test_tampered_shard_exits_2_naming_the_file(hand: Path, tmp_path: Path) -> None:
    shard = hand / SHARD
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    code, out, err = run_main(["export", str(hand), "--to", "trl-sft", "-o", str(tmp_path / "out")], tmp_path)
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"uftdata: error: {shard}: sha256 differs from manifest.json (modified after "
                                "mixing). Rebuild the mixture with `uftdata mix`, or restore the file."]
    assert not (tmp_path / "out").exists()
    assert mixture_problems(hand) == [f"{SHARD}: sha256 differs from manifest.json (modified after mixing)"]
    problems = inspect_path(hand)["problems"]  # a damaged shard is a listed problem, not a traceback
    assert problems[-1] == f"{SHARD}: sha256 differs from manifest.json (modified after mixing)"
    assert all(p.startswith(("train-00000-of-00001.parquet", SHARD)) for p in problems)


def test_inspect_reports_a_shard_rewritten_after_mixing(hand: Path) -> None:
    rows = pl.read_parquet(hand / SHARD).with_columns(source=pl.lit("edited"))
    writer = RowWriter(hand / SHARD)
    writer.write(rows)
    writer.close()
    assert inspect_path(hand)["problems"] == [f"{SHARD}: sha256 differs from manifest.json (modified after mixing)"]


def test_verify_names_missing_and_unlisted_shards(hand: Path) -> None:
    assert mixture_problems(hand) == [] and check_mixture(hand).name == "hand"
    (hand / SHARD).rename(hand / "data/train-00001-of-00001.parquet")
    assert mixture_problems(hand) == [f"{SHARD}: listed in manifest.json but missing",
                                      "data/train-00001-of-00001.parquet: not listed in manifest.json (added after mixing)"]
    with pytest.raises(UftDataError, match=r"listed in manifest.json but missing \(1 more problem"):
        check_mixture(hand)
    (hand / MANIFEST).unlink()
    with pytest.raises(UftDataError, match="manifest.json: not found: not a finished mixture folder"):
        check_mixture(hand)


@pytest.mark.parametrize("target", TARGETS)
def test_same_mixture_same_bytes(demo: Path, tmp_path: Path, target: str) -> None:
    export(demo, target, tmp_path / "one")
    export(demo, target, tmp_path / "two")
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    export(demo, target, tmp_path / "one", overwrite=True)
    assert all((tmp_path / "one" / n).read_bytes() == (tmp_path / "two" / n).read_bytes() for n in files)


def test_existing_output_needs_overwrite_and_must_be_an_export(hand: Path, tmp_path: Path) -> None:
    export(hand, "trl-sft", tmp_path / "out")
    with pytest.raises(UftDataError, match="already exists. Pass --overwrite"):
        export_mixture(hand, "trl-kto", tmp_path / "out")
    assert export_mixture(hand, "trl-kto", tmp_path / "out", overwrite=True)["target"] == "trl-kto"
    with pytest.raises(UftDataError, match="is not an export folder; refusing to replace it"):
        export_mixture(hand, "trl-kto", hand, overwrite=True)
    assert (hand / MANIFEST).is_file()


def test_no_rows_for_the_target_is_an_error(tmp_path: Path) -> None:
    with open_rows(tmp_path / "rows.parquet") as writer:
        writer.write(build_rows(HAND[:3], source="hand"))
    build_mixtures(MixtureSpec((SourceSpec(str(tmp_path / "rows.parquet"), parse_take("all", "take"), None),)),
                   tmp_path / "nopairs", Rejects.raising())
    with pytest.raises(UftDataError, match="has no training rows for trl-dpo.*expected pairwise rows"):
        export_mixture(tmp_path / "nopairs", "trl-dpo", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_help_and_summary(hand: Path, tmp_path: Path) -> None:
    code, out, _ = run_main(["export", "--help"], tmp_path)
    assert code == 0
    assert all(word in out for word in (*TARGETS, "--kto-threshold", "--overwrite", "dataset_info.json"))
    code, out, err = run_main(["export", str(hand), "--to", "trl-kto", "-o", "kto"], tmp_path)
    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == [
        "  kto_threshold: 0.5 (label = score >= threshold)",
        f"  kto train: 7 examples from 7 rows -> {SHARD}; label true 5, false 2, label_changed_by_threshold 1"]
    code, out, err = run_main(["export", str(hand), "--to", "trl-sft", "-o", "sft"], tmp_path)
    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == [f"  sft train: 1 examples from 7 rows -> {SHARD}", "    dropped.not_sft_kind:binary: 1",
                                    "    dropped.not_sft_kind:pairwise: 4", "    dropped.not_sft_kind:score: 1"]


@pytest.mark.parametrize(("args", "line"), [
    (["--to", "axolotl"], "--to: unknown target (got 'axolotl'); expected trl-sft, trl-dpo, trl-kto, llamafactory."),
    (["--to", "trl-kto", "--kto-threshold", "1.5"], "--kto-threshold: is outside the score range (got 1.5); expected 0 <= T <= 1."),
])
def test_cli_user_errors_are_one_line_exit_2(hand: Path, tmp_path: Path, args: list[str], line: str) -> None:
    code, out, err = run_main(["export", str(hand), "-o", "out", *args], tmp_path)
    assert (code, out, err.splitlines()) == (2, "", [f"uftdata: error: {line}"])
    assert not (tmp_path / "out").exists()
