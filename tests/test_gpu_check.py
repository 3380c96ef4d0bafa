"""bench/gpu_check.py: its FLOP arithmetic by hand, the tiny model's key-value heads and off-CPU
build, and the whole check in --tiny mode on CPU."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from uft_train.errors import TrainError
from uft_train.tiny import build_tiny_model
from uft_train.tokenizer import build_tokenizer

BENCH = Path(__file__).resolve().parents[1] / "bench"


def gpu_check():  # noqa: ANN201 - the module
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_non_embedding_parameters_of_mistral_7b() -> None:
    """Mistral-7B-v0.1: d 4096, 32 layers, 32 heads (head_dim 128), 8 kv heads, MLP 14336, vocab 32000.
    Per layer: q, o 2 x 4096^2 = 33,554,432; k, v 2 x 4096 x 1024 = 8,388,608; MLP 3 x 4096 x 14336 =
    176,160,768; norms 8,192; sum 218,112,000, x 32 = 6,979,584,000. Final norm 4,096, LM head
    32000 x 4096 = 131,072,000: N = 7,110,660,096 (the 7.24B of the model card less its embedding)."""
    n = gpu_check().non_embedding_parameters(vocab=32000, hidden=4096, layers=32, heads=32, kv_heads=8,
                                             intermediate=14336)
    assert n == 7_110_660_096


def test_flops_and_mfu_by_hand() -> None:
    """N 1000, L 2, d 8, T 16: L*T*d = 256. Trained token 4*1000 + 12*256 = 7072; reference token
    2*1000 + 4*256 = 3024; KL token 4*1000 + 8*256 = 6048. sft 7072, dpo 7072 + 3024 = 10096, kto
    10096 + 6048 = 16144. MFU of 100 tokens/s at 10096 FLOPs each on a 2e6 FLOP/s peak: 0.5048."""
    g = gpu_check()
    per_token = {name: g.flops_per_trained_token(1000, layers=2, hidden=8, seq_len=16, reference=r, kl=k)
                 for name, r, k in [("sft", 0, 0), ("dpo", 1, 0), ("kto", 1, 1)]}
    assert per_token == {"sft": 7072, "dpo": 10096, "kto": 16144}
    assert g.mfu(100, per_token["dpo"], 2e6) == pytest.approx(0.5048)
    assert {m.reference for m in g.METHODS.values() if m.loss and m.loss.get("reference") == "precompute"} == {0}


def test_formula_counts_the_built_model() -> None:
    """The tiny Mistral with 2 key-value heads of 4 has k/v projections of 2 x 16 = 32 outputs, and
    `non_embedding_parameters` counts its parameters less the embedding exactly."""
    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, architecture="mistral", num_kv_heads=2)
    assert model.model.layers[0].self_attn.k_proj.out_features == 32
    counted = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    assert counted == gpu_check().non_embedding_parameters(vocab=len(tokenizer), hidden=64, layers=2, heads=4,
                                                           kv_heads=2, intermediate=128)


def test_cpu_build_is_the_float32_build_cast_and_other_devices_build_in_dtype() -> None:
    tokenizer = build_tokenizer()
    cast = build_tiny_model(tokenizer).to(torch.bfloat16)
    direct = build_tiny_model(tokenizer, dtype=torch.bfloat16)
    assert all(torch.equal(a, b) for a, b in zip(cast.state_dict().values(), direct.state_dict().values()))
    meta = build_tiny_model(tokenizer, device="meta", dtype=torch.bfloat16, num_kv_heads=1)
    assert {(p.device.type, p.dtype) for p in meta.parameters()} == {("meta", torch.bfloat16)}


def test_key_value_heads_must_divide_heads() -> None:
    with pytest.raises(TrainError, match="model.tiny.num_kv_heads"):
        build_tiny_model(build_tokenizer(), num_kv_heads=3)


def test_tiny_check_runs_every_method(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    pytest.importorskip("mistral_common")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--tiny", "--out", str(tmp_path)],
                   check=True, capture_output=True, text=True, env=env)
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    table = (tmp_path / "results.md").read_text()
    g = gpu_check()
    assert sorted(results) == sorted(g.METHODS)  # results.json's keys are sorted
    for method, r in results.items():
        assert r["status"] == "ok", (method, r["status"])
        assert all(math.isfinite(r[key]) and r[key] > 0 for key in ("tokens_per_s", "mfu")), method
        assert r["peak_rss_mib"] is None and r["peak_gpu_gib"] is None  # one CPU process: no method's own peak
        assert f"| {g.METHODS[method].label} |" in table
