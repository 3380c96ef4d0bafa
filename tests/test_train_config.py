"""The recipe loader (`uft_train.config`) and `uft-train --dry-run` / `--check-data`.

No torch here: the loader, and the loss table it reads, must stay importable and fast where only
recipes are checked. Error lines are compared by
their stable parts: `<file>: <dotted key>: <what> (got <value>); expected <allowed>. <fix>`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import corpus
import jinja2
import pytest
import yaml

from uft_train import cli
from uft_train.config import (
    SCHEMA,
    LossName,
    Recipe,
    RecipeError,
    data_path,
    load_recipe,
    recipe_from_mapping,
    recipe_help,
    recipe_to_dict,
    recipe_to_yaml,
    resolved,
    with_overrides,
)
from uft_train.loss_table import LOSSES
from uftdata.errors import UftDataError
from uftdata.mixspec import load_recipe_mixture
from uftdata.strict import field_docs, to_mapping

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
MIXTURE = {"out": "mixes/m", "sources": [{"path": "a.parquet", "take": "20k", "test": {"fraction": 0.01}}]}


def problems_of(data: dict, overrides: tuple[str, ...] = (), tmp_path: Path | None = None) -> list[str]:
    """The problem lines of a recipe mapping (written to a file, so overrides go through load_recipe)."""
    path = (tmp_path or Path("/nonexistent")) / "r.yaml"
    if tmp_path is None:
        with pytest.raises(RecipeError) as info:
            recipe_from_mapping(data, "r.yaml")
        return list(info.value.problems)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return list(info.value.problems)


def with_mixture(**sections: object) -> dict:
    return {"mixture": MIXTURE, **sections}


# --- the shipped recipes -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_and_round_trips(path: Path) -> None:
    recipe = load_recipe(path)
    assert load_recipe_mixture(path) == recipe.mixture  # `uftdata mix RECIPE` reads the same section
    assert data_path(recipe) == Path(recipe.mixture.out)
    assert recipe_from_mapping(recipe_to_dict(recipe), "again") == resolved(recipe) == resolved(resolved(recipe))
    assert recipe_from_mapping(yaml.safe_load(recipe_to_yaml(recipe)), "again") == resolved(recipe)
    assert recipe_from_mapping(to_mapping(SCHEMA, recipe), "again") == recipe  # as written: nulls stay null


def test_recipes_hold_the_paper_defaults() -> None:
    """docs/design.md, "Defaults from the papers and the authors' code"."""
    main = load_recipe(ROOT / "recipes/mix_20k_20k.yaml")
    assert (main.model.name, main.model.dtype) == ("mistralai/Mistral-7B-v0.1", "bfloat16")
    assert (main.lora.r, main.lora.alpha, main.lora.targets) == (
        16, 16, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    assert (main.loss.name, main.loss.beta, main.optim.lr) == ("una_mse", 0.01, 3e-5)
    assert (main.train.batch_size, main.train.epochs, main.optim.schedule, main.optim.warmup_ratio) == (8, 2, "cosine", 0.1)
    assert (main.optim.betas, main.optim.weight_decay, main.optim.max_grad_norm) == ((0.9, 0.999), 0.0, 1.0)
    assert (main.data.max_length, main.data.max_prompt_length) == (2048, 1024)
    assert [s.take.count for s in main.mixture.sources] == [20_000, None]
    assert main.output.dir == "runs/mix_20k_20k"
    stages = {name: load_recipe(ROOT / f"recipes/{name}.yaml") for name in ("sft", "sft_then_dpo", "sft_then_kto", "sft_then_una")}
    assert (stages["sft"].loss.name, stages["sft"].optim.lr) == ("sft", 1e-4)
    expected = {"sft_then_dpo": ("dpo", 0.03, 5e-6), "sft_then_kto": ("kto", 0.03, 5e-6), "sft_then_una": ("una_mse", 0.03, 3e-5)}
    for name, (loss, beta, lr) in expected.items():
        recipe = stages[name]
        assert (recipe.loss.name, recipe.loss.beta, recipe.optim.lr) == (loss, beta, lr), name
        assert recipe.model.init_adapter == "runs/sft/adapter" == stages["sft"].output.dir + "/adapter"
    assert (stages["sft_then_kto"].loss.desirable_weight, stages["sft_then_kto"].loss.undesirable_weight) == (1.0, 1.0)


@pytest.mark.parametrize("take", ["16k", "32k", "65k", "130k", "260k"])
def test_grid_recipes_differ_from_the_main_run_only_in_take_and_folders(take: str) -> None:
    main = recipe_to_dict(load_recipe(ROOT / "recipes/mix_20k_20k.yaml"))
    point = recipe_to_dict(load_recipe(ROOT / f"recipes/mix_{take}_20k.yaml"))
    assert point["mixture"]["sources"][0]["take"] == take
    assert (point["mixture"]["out"], point["output"]["dir"]) == (f"mixes/mix_{take}_20k", f"runs/mix_{take}_20k")
    for d in (main, point):
        d["mixture"]["sources"][0]["take"] = d["mixture"]["out"] = d["output"]["dir"] = None
    assert point == main


def test_tiny_recipe_is_the_demo_mixture() -> None:
    tiny, demo = load_recipe(ROOT / "recipes/tiny.yaml"), load_recipe(ROOT / "recipes/demo.yaml")
    assert tiny.mixture == demo.mixture and tiny.mixture.out == "out/demo/mix_demo"
    assert (tiny.model.name, tiny.lora.r, tiny.lora.alpha, tiny.lora.targets) == ("tiny", 8, 16, ("q_proj", "v_proj"))
    assert (tiny.train.batch_size, tiny.train.micro_batch_size, tiny.train.max_steps, tiny.train.epochs) == (8, 4, 12, 1)
    assert (tiny.data.max_length, tiny.data.max_prompt_length, tiny.loss.beta, tiny.optim.lr) == (512, 384, 0.1, 1e-3)


def test_mistral_template_renders_inst_format_with_the_prompt_as_a_prefix() -> None:
    template = load_recipe(ROOT / "recipes/mix_20k_20k.yaml").model.template
    env = jinja2.Environment()
    render = env.from_string(template).render
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Bye!"}]
    full = render(messages=chat, bos_token="<s>", eos_token="</s>")
    assert full == "<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Bye [/INST]Bye!</s>"
    prompt = render(messages=chat[:4], bos_token="<s>", eos_token="</s>", add_generation_prompt=True)
    assert full.startswith(prompt) and prompt.endswith(" [/INST]")


# --- errors --------------------------------------------------------------------------------------------

def test_unknown_keys_get_a_suggestion() -> None:
    problems = problems_of(with_mixture(loss={"bta": 0.1}, lossx={}, beta=0.1, train={"zzz": 1}))
    assert "r.yaml: loss.bta: unknown key; did you mean loss.beta?" in problems
    assert "r.yaml: lossx: unknown key; did you mean loss?" in problems
    assert "r.yaml: beta: unknown key here; did you mean loss.beta?" in problems
    assert any(p.startswith("r.yaml: train.zzz: unknown key; expected one of train.seed, train.epochs") for p in problems)


@pytest.mark.parametrize(("section", "value", "line"), [
    ({"lora": {"r": "16"}}, None, "r.yaml: lora.r: must be an integer (got '16'); expected a whole number."),
    ({"lora": {"r": 16.0}}, None, "r.yaml: lora.r: must be an integer (got 16.0)"),
    ({"output": {"overwrite": "yes please"}}, None, "r.yaml: output.overwrite: must be true or false (got 'yes please')"),
    ({"output": {"overwrite": 1}}, None, "r.yaml: output.overwrite: must be true or false (got 1)"),
    ({"loss": {"beta": "big"}}, None, "r.yaml: loss.beta: must be a number (got 'big')"),
    ({"loss": {"beta": float("nan")}}, None, "r.yaml: loss.beta: must be finite (got nan)"),
    ({"model": {"name": 7}}, None, "r.yaml: model.name: must be a string (got 7); expected text. Quote it in the YAML."),
    ({"lora": {"targets": "q_proj"}}, None, "r.yaml: lora.targets: must be a list (got 'q_proj'); expected a list of str."),
    ({"optim": {"betas": [0.9]}}, None, "r.yaml: optim.betas: must have 2 items (got [0.9])"),
    ({"train": {"max_steps": "ten"}}, None, "r.yaml: train.max_steps: must be an integer (got 'ten'); expected a whole number or null."),
    ({"loss": 3}, None, "r.yaml: loss: must be a mapping (got 3)"),
])
def test_bad_types(section: dict, value: object, line: str) -> None:
    problems = problems_of(with_mixture(**section))
    assert len(problems) == 1 and problems[0].startswith(line), problems


def test_numbers_are_read_as_numbers() -> None:
    """Ints are floats where a float is expected; `3e-5` (a string to PyYAML 1.1) is a number."""
    recipe = recipe_from_mapping(with_mixture(loss={"beta": 1}, optim=yaml.safe_load("lr: 3e-5")), "r.yaml")
    assert recipe.loss.beta == 1.0 and isinstance(recipe.loss.beta, float) and recipe.optim.lr == 3e-5


def test_bad_literal_lists_the_allowed_values() -> None:
    (line,) = problems_of(with_mixture(loss={"name": "dpoo"}))
    assert line == ("r.yaml: loss.name: is not allowed (got 'dpoo'); expected one of una_mse, una_bce, dpo, kto, sft, orpo, dpo_nll. "
                    "Did you mean dpo?")


@pytest.mark.parametrize(("section", "line"), [
    ({"lora": {"r": 0}}, "r.yaml: lora.r: must be > 0 (got 0)."),
    ({"loss": {"beta": -1}}, "r.yaml: loss.beta: must be > 0 (got -1.0)."),
    ({"optim": {"lr": 0}}, "r.yaml: optim.lr: must be > 0 (got 0.0)."),
    ({"optim": {"warmup_ratio": 1.0}}, "r.yaml: optim.warmup_ratio: must be in [0, 1) (got 1.0)."),
    ({"loss": {"name": "sft"}, "lora": {"dropout": 1.0}}, "r.yaml: lora.dropout: must be in [0, 1) (got 1.0)."),
    ({"train": {"epochs": 0}}, "r.yaml: train.epochs: must be > 0 (got 0)."),
    ({"train": {"max_steps": -3}}, "r.yaml: train.max_steps: must be > 0 (got -3)."),
    ({"data": {"max_drop_share": 1.5}}, "r.yaml: data.max_drop_share: must be in [0, 1] (got 1.5)."),
    ({"data": {"max_prompt_length": 2048}},
     "r.yaml: data.max_prompt_length: must be less than data.max_length (got 2048); expected < 2048."),
    ({"train": {"batch_size": 8, "micro_batch_size": 3}},
     "r.yaml: train.batch_size: must be a multiple of train.micro_batch_size (got 8); expected a multiple of 3. "
     "Checked for one process; under torchrun"),
    ({"loss": {"name": "kto"}, "train": {"batch_size": 1, "micro_batch_size": 1}},
     "r.yaml: train.batch_size: kto needs a global batch of at least 2"),
    ({"lora": {"dropout": 0.1}}, "r.yaml: lora.dropout: must be 0 for una_mse"),
    ({"loss": {"name": "sft", "reference": "precompute"}}, "r.yaml: loss.reference: sft has no reference model"),
    ({"loss": {"name": "kto", "pairwise": "dpo"}}, "r.yaml: loss.pairwise: applies to una_mse and una_bce only, not kto"),
    ({"loss": {"name": "dpo", "pairwise": "rows"}},
     "r.yaml: loss.pairwise: applies to una_mse and una_bce only, not dpo (got 'rows'); expected null. Remove loss.pairwise"),
    ({"loss": {"name": "orpo", "orpo_lambda": 0}}, "r.yaml: loss.orpo_lambda: must be > 0 (got 0.0)."),
    ({"loss": {"name": "dpo"}, "data": {"kinds": ["pairwise", "sft"]}},
     "r.yaml: data.kinds: sft rows are not trained by dpo (got ['pairwise', 'sft']); expected kinds among pairwise."),
    ({"data": {"kinds": ["chat"]}}, "r.yaml: data.kinds: has an unknown kind 'chat'"),
    ({"model": {"tiny": {"hidden_size": 65}}}, "r.yaml: model.tiny.hidden_size: must be a multiple of model.tiny.num_heads"),
    ({"model": {"tiny": {"num_kv_heads": 3}}},
     "r.yaml: model.tiny.num_kv_heads: must be > 0 and divide model.tiny.num_heads 4 (got 3)"),
    ({"train": {"device": "gpu"}}, "r.yaml: train.device: is not a device (got 'gpu')"),
    ({"model": {"template": "{% if %}"}}, "r.yaml: model.template: is not a valid Jinja template"),
])
def test_range_and_combination_errors(section: dict, line: str) -> None:
    problems = problems_of(with_mixture(**section))
    assert len(problems) == 1 and problems[0].startswith(line), problems


def test_sft_may_use_dropout_and_a_data_path_replaces_the_mixture() -> None:
    recipe = recipe_from_mapping({"loss": {"name": "sft"}, "lora": {"dropout": 0.1}, "data": {"path": "mixes/x"}}, "r")
    assert recipe.mixture is None and data_path(recipe) == Path("mixes/x")


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of({
        "mixture": {"out": "m", "sources": [{"path": "a.parquet", "take": "2x"}]},  # 1
        "loss": {"name": "dpoo", "bta": 1},  # 2
        "lora": {"r": "sixteen", "alpha": -1},  # 2
        "optim": {"lr": -1, "warmup_ratio": 2},  # 2
        "output": {"overwrite": "no"},  # 1
    })
    assert len(problems) == 8, problems
    assert all(p.startswith("r.yaml: ") for p in problems)
    assert any(p.startswith("r.yaml: mixture.sources[0].take: is not a count") for p in problems)


def test_combination_checks_wait_for_the_types() -> None:
    """A field with a type error is left at its default: no second line about a value nobody wrote."""
    problems = problems_of(with_mixture(data={"max_length": "long", "max_prompt_length": 4096}))
    assert problems == ["r.yaml: data.max_length: must be an integer (got 'long'); expected a whole number."]


def test_no_data_path_and_no_mixture() -> None:
    (line,) = problems_of({"loss": {"name": "sft"}})
    assert line.startswith("r.yaml: data.path: is not set and the recipe has no mixture.out (got null)")
    with pytest.raises(RecipeError, match="data.path"):
        data_path(Recipe())


def test_recipe_error_is_a_uftdata_error_with_one_line_per_problem() -> None:
    error = RecipeError(["a: x: bad.", "a: y: worse."])
    assert isinstance(error, UftDataError) and error.line() == str(error) == "a: x: bad.\na: y: worse."


def test_unreadable_recipes(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("loss: [\n", encoding="utf-8")
    (tmp_path / "list.yaml").write_text("- 1\n", encoding="utf-8")
    for name, what in [("bad.yaml", "cannot read the recipe"), ("list.yaml", "is not a mapping of sections"),
                       ("missing.yaml", "cannot read the recipe")]:
        with pytest.raises(RecipeError, match=what):
            load_recipe(tmp_path / name)


# --- overrides --------------------------------------------------------------------------------------

def test_overrides_nested_lists_and_list_items(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(with_mixture(loss={"beta": 0.5})), encoding="utf-8")
    recipe = load_recipe(path, ["loss.beta=0.1", "lora.targets=[q_proj, v_proj]", "model.tiny.num_layers=3",
                                "optim.lr=3e-5", "train.max_steps=null", "mixture.sources.0.take=16k",
                                "output.dir=runs/x=y"])
    assert (recipe.loss.beta, recipe.lora.targets, recipe.model.tiny.num_layers) == (0.1, ("q_proj", "v_proj"), 3)
    assert (recipe.optim.lr, recipe.train.max_steps, recipe.output.dir) == (3e-5, None, "runs/x=y")
    assert recipe.mixture.sources[0].take.count == 16_000
    assert load_recipe(path).loss.beta == 0.5  # the file is not touched


def test_override_errors_look_like_file_errors(tmp_path: Path) -> None:
    problems = problems_of(with_mixture(), ("loss.bta=1", "lora.r=0", "loss", "x..y=1", "loss.beta=[1,"), tmp_path)
    where = str(tmp_path / "r.yaml")
    assert f"{where}: loss.bta: unknown key; did you mean loss.beta?" in problems
    assert f"{where}: lora.r: must be > 0 (got 0)." in problems
    assert f"{where}: override 'loss': is not KEY.PATH=VALUE; expected e.g. loss.beta=0.1." in problems
    assert f"{where}: override 'x..y=1': is not KEY.PATH=VALUE; expected e.g. loss.beta=0.1." in problems
    assert any(p.startswith(f"{where}: override 'loss.beta=[1,': its value is not valid YAML") for p in problems)
    assert len(problems) == 5


# --- help -------------------------------------------------------------------------------------------

def config_classes(cls: type = Recipe) -> list[type]:
    hints = typing.get_type_hints(cls)
    return [cls, *(c for f in fields(cls) if is_dataclass(hints[f.name]) for c in config_classes(hints[f.name]))]


def test_every_field_has_a_doc_and_appears_in_help() -> None:
    classes = config_classes()
    assert len(classes) == 9
    for cls in classes:
        docs = field_docs(cls)
        assert set(docs) == {f.name for f in fields(cls)}, cls.__name__
        assert all(docs.values()), cls.__name__
    text = recipe_help()
    assert "  loss.beta: float or null = null\n      beta of the implicit reward" in text
    assert "  loss.pairwise: rows | dpo or null = null\n" in text
    assert text.endswith("\n  una_mse: beta 0.01, pairwise dpo\n  una_bce: beta 0.01, pairwise dpo\n  dpo: beta 0.1\n"
                         "  kto: beta 0.1, desirable_weight 1, undesirable_weight 1\n  sft: none\n"
                         "  orpo: orpo_lambda 0.1\n  dpo_nll: beta 0.1, nll_alpha 1")
    assert "  loss.name: una_mse | una_bce | dpo | kto | sft | orpo | dpo_nll = una_mse" in text


def test_the_recipe_reads_the_loss_table() -> None:
    """loss.name's values and the loss.* defaults are the loss table's (uft_train.loss_table, torch-free):
    null in the recipe, each loss's own once resolved (una_* beta 0.01; dpo, kto, dpo_nll 0.1)."""
    assert typing.get_args(LossName) == tuple(LOSSES)
    base = recipe_from_mapping(with_mixture(), "r.yaml")
    for name, spec in LOSSES.items():
        loss = with_overrides(base, [f"loss.name={name}"]).loss
        assert all(getattr(loss, key) is None for key in spec.hyperparameters), name
        assert all(getattr(loss.resolved(), key) == value for key, value in spec.hyperparameters.items()), name
    assert [resolved(with_overrides(base, [f"loss.name={n}"])).loss.beta for n in LOSSES] == [
        0.01, 0.01, 0.1, 0.1, None, None, 0.1]


def test_overrides_of_loss_name_take_the_new_loss_defaults() -> None:
    """A recipe's null keys stay null through with_overrides, so switching the loss switches defaults;
    a value the recipe sets stays, and keys the new loss does not use resolve to null."""
    una = recipe_from_mapping(with_mixture(loss={"name": "una_mse"}), "r.yaml")
    assert (resolved(una).loss.beta, resolved(una).loss.pairwise) == (0.01, "dpo")
    kto = with_overrides(una, ["loss.name=kto"])  # pairwise was null: no error for kto
    assert (resolved(kto).loss.beta, resolved(kto).loss.pairwise, resolved(kto).loss.desirable_weight) == (0.1, None, 1.0)
    orpo = resolved(with_overrides(una, ["loss.name=orpo", "loss.beta=0.3"]))
    assert (orpo.loss.beta, orpo.loss.orpo_lambda) == (None, 0.1)


def test_pairwise_rows_only_where_the_mixture_holds_pairs() -> None:
    """Recipes whose mixtures hold no pairs (UltraChat + HelpSteer2 ratings) do not set loss.pairwise;
    each recipe sets beta where it relies on the papers' value (0.01 UFT, 0.03 second stages), ORPO its lambda."""
    for path in sorted((ROOT / "recipes").rglob("*.yaml")):
        loss = yaml.safe_load(path.read_text(encoding="utf-8")).get("loss", {"name": "sft"})
        assert "pairwise" not in loss, path.name
        assert "beta" in loss or loss["name"] == "sft" or "orpo_lambda" in loss, path.name  # orpo has no beta


# --- the CLI ------------------------------------------------------------------------------------------

def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def write_recipe(tmp_path: Path, **sections: object) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(with_mixture(**sections)), encoding="utf-8")
    return path


def build_manifest(tmp_path: Path, **changes: object) -> None:
    """A manifest of the mixture MIXTURE describes (the keys `uft-train` compares; the others empty)."""
    manifest = {"uft_mixture_version": 2, "name": "m", "seed": 0, "on_short": "error", "total": None,
                "sources": [{"name": "a", "take": "20k", "test": {"fraction": 0.01}}], "counts": {}, "dropped": {},
                "content_hash": "0" * 64, "files": [], "versions": {}} | changes
    empty = {"rows_train": 0, "rows_test": 0, "repeated_rows": 0, "files": [], "test_files": [],
             "accounting": {"records_in": 0, "records_used": 0, "dropped": {}}}
    manifest["sources"] = [empty | source for source in manifest["sources"]]  # type: ignore[attr-defined]
    (tmp_path / "mixes/m").mkdir(parents=True)
    (tmp_path / "mixes/m/manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_dry_run_prints_the_resolved_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path, loss={"beta": 0.2})
    code, out, err = run_main([str(recipe), "--dry-run", "lora.r=4"], capsys)
    assert code == 2 and out  # the recipe is printed, then the missing mixture is an error
    assert err == (f"uft-train: error: mixes/m/manifest.json: not found: the mixture is not built. "
                   f"Build it with: uftdata mix {recipe}\n")
    printed = yaml.safe_load(out)
    assert printed == recipe_to_dict(load_recipe(recipe, ["lora.r=4"]))
    assert (printed["loss"]["beta"], printed["lora"]["r"]) == (0.2, 4)
    assert out.splitlines()[-1] == "# data: mixes/m"

    code, out, err = run_main([str(recipe), "--dry-run", "--allow-missing-data"], capsys)
    assert code == 0 and err.startswith("uft-train: warning: mixes/m/manifest.json: not found")

    build_manifest(tmp_path)
    code, out, err = run_main([str(recipe), "--dry-run"], capsys)
    assert (code, err) == (0, "")


def test_a_mixture_built_from_another_spec_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path)
    build_manifest(tmp_path, sources=[{"name": "a", "take": "16k", "test": {"fraction": 0.01}}])
    code, _, err = run_main([str(recipe), "--dry-run"], capsys)
    assert code == 2
    assert err == ("uft-train: error: mixes/m/manifest.json: was built from another mixture section "
                   f"(sources[0].take: built '16k', recipe '20k'). Rebuild it with: uftdata mix {recipe} "
                   "--overwrite (or point data.path at the mixture you mean).\n")
    code, _, err = run_main([str(recipe), "--dry-run", "mixture.sources.0.take=16000"], capsys)
    assert (code, err) == (0, "")  # 16000 and 16k are the same take


def test_errors_are_one_line_each_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write_recipe(tmp_path, loss={"beta": -1, "nmae": "dpo"})
    code, out, err = run_main([str(recipe), "--dry-run", "train.epochs=0"], capsys)
    assert (code, out) == (2, "")
    assert sorted(err.splitlines()) == [
        f"uft-train: error: {recipe}: loss.beta: must be > 0 (got -1.0).",
        f"uft-train: error: {recipe}: loss.nmae: unknown key; did you mean loss.name?",
        f"uft-train: error: {recipe}: train.epochs: must be > 0 (got 0).",
    ]


# One reader of the mixture section: `uftdata mix RECIPE` and `uft-train RECIPE` print the same lines.
SAME_PROBLEMS = [
    ({"seeds": 1, "sources": [{"path": "a.parquet", "take": "2x", "tst": 1}]}, []),
    ({"out": 5, "seed": "x", "on_short": "repat", "sources": [{"path": "a.parquet", "test": {"fraction": 2}}]}, []),
    ({"out": "m", "total": 100, "sources": [{"path": "a.parquet", "take": 0.6}, {"path": "b.parquet", "take": 0.6}]}, []),
    ({"out": "m", "total": "10%", "sources": [{"path": "a.parquet"}, {"path": "a.parquet", "take": "1k"}]}, []),
    ({"out": "m", "sources": "a.parquet"}, []),
    (3, []),
    (MIXTURE, ["mixture.sources.0.take=0", "mixture.sources.0.test.fraction=1.5", "mixture..x=1", "mixture.seed=[1,"]),
]


@pytest.mark.parametrize(("mixture", "overrides"), SAME_PROBLEMS)
def test_mix_and_train_report_the_same_mixture_problems(tmp_path: Path, mixture: object, overrides: list[str]) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"mixture": mixture, "loss": {"beta": 0.1}}), encoding="utf-8")
    code, out, err = corpus.uftdata(["mix", "r.yaml", *overrides], tmp_path)
    train_code, train_out, train_err = corpus.uft_train(["r.yaml", *overrides, "--dry-run"], tmp_path)
    assert (code, out, train_code, train_out) == (2, "", 2, "")
    lines = [line.removeprefix("uftdata: error: ") for line in err.splitlines()]
    assert lines == [line.removeprefix("uft-train: error: ") for line in train_err.splitlines()]
    assert lines and all(line.startswith("r.yaml: mixture") or line.startswith("r.yaml: override") for line in lines)


def test_mix_takes_the_mixture_overrides_of_uft_train(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"mixture": MIXTURE}), encoding="utf-8")
    overrides = ["mixture.sources.0.take=16k", "mixture.seed=3", "mixture.total=null"]
    spec = load_recipe_mixture(path, overrides)
    assert spec == load_recipe(path, overrides).mixture and (spec.seed, spec.sources[0].take.count) == (3, 16_000)
    with pytest.raises(RecipeError) as info:
        load_recipe_mixture(path, ["loss.beta=0.1"])  # its schema is the trainer's: refused, not ignored
    assert info.value.problems == (f"{path}: override 'loss.beta=0.1': is not a mixture key: only the mixture: "
                                   "section is read here; expected mixture.KEY=VALUE.",)


def test_training_and_check_data_name_the_mix_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Without a built mixture, training stops before importing the trainer; so does --check-data."""
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path)
    for argv in ([str(recipe)], ["--check-data", str(recipe)], [str(recipe), "mixture.seed=3"]):
        code, _, err = run_main(argv, capsys)
        assert code == 2 and len(err.splitlines()) == 1 and f"Build it with: uftdata mix {recipe}" in err
    assert err.rstrip().endswith(f"Build it with: uftdata mix {recipe} mixture.seed=3")  # the overrides passed on


def test_missing_stage_one_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    build_manifest(tmp_path)
    recipe = write_recipe(tmp_path, model={"init_adapter": "runs/sft/adapter"})
    code, _, err = run_main([str(recipe), "--dry-run"], capsys)
    assert code == 2 and "model.init_adapter: runs/sft/adapter: has no adapter_config.json" in err
    assert run_main([str(recipe), "--dry-run", "--allow-missing-data"], capsys)[0] == 0


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["r.yaml", "--allow-missing-data"], capsys)[0] == 2
    code, _, err = run_main([], capsys)
    assert code == 2 and err.splitlines()[-1] == "uft-train: error: the recipe is required (see recipes/)"
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0 and "loss.beta: float or null = null" in out and "  dpo: beta 0.1" in out and "--dry-run" in out


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_passes_dry_run(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main([str(path), "--dry-run", "--allow-missing-data"], capsys)
    assert code == 0 and yaml.safe_load(out) == recipe_to_dict(load_recipe(path))


def test_the_script_dry_run_imports_no_torch(tmp_path: Path) -> None:
    """The real entry point in a fresh interpreter: exit codes, and torch never imported."""
    probe = ("import runpy, sys\nsys.argv = ['uft-train', *sys.argv[1:]]\ntry:\n"
             "    runpy.run_module('uft_train.cli', run_name='__main__')\nexcept SystemExit as e:\n"
             "    print('torch imported:', 'torch' in sys.modules, file=sys.stderr)\n    raise\n")
    recipe = str(ROOT / "recipes/tiny.yaml")
    missing = subprocess.run([sys.executable, "-c", probe, recipe, "--dry-run", "data.path=nowhere"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode == 2 and "torch imported: False" in missing.stderr
    assert "nowhere/manifest.json: not found" in missing.stderr and "Traceback" not in missing.stderr
    allowed = subprocess.run([sys.executable, "-c", probe, recipe, "--dry-run", "--allow-missing-data"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert allowed.returncode == 0 and "torch imported: False" in allowed.stderr
    assert yaml.safe_load(allowed.stdout)["model"]["name"] == "tiny"
    script = Path(sys.executable).with_name("uft-train")
    if script.exists():
        result = subprocess.run([str(script), recipe, "--dry-run", "--allow-missing-data"],
                                capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0 and result.stdout == allowed.stdout


def test_with_overrides_goes_through_the_loader() -> None:
    tiny = load_recipe(ROOT / "recipes/tiny.yaml")
    assert with_overrides(tiny, ["train.max_steps=2"]).train.max_steps == 2
    with pytest.raises(RecipeError, match="overrides: train.max_stpes: unknown key; did you mean train.max_steps"):
        with_overrides(tiny, ["train.max_stpes=2"])


def test_training_lists_every_missing_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path, model={"init_adapter": "runs/sft/adapter"})
    code, _, err = run_main([str(recipe)], capsys)
    assert code == 2 and [line.split(": ")[2] for line in err.splitlines()] == ["mixes/m/manifest.json", "model.init_adapter"]