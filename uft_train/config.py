"""A recipe: YAML -> frozen dataclasses through one strict loader (DESIGN.md, "Recipes").

Every field's docstring is its help (`uft-train --help`). The loader reports every problem at
once, each as `<file>: <dotted key>: <what> (got <value>); expected <allowed>. <fix>`: unknown keys
(with a suggestion), wrong types, values out of range and combinations the trainer cannot run.
`a.b=value` overrides are applied to the YAML mapping before validation, so they get the same checks.
Importing this module never imports torch: `uft-train --dry-run` must stay fast and offline.
"""

from __future__ import annotations

import ast
import difflib
import functools
import inspect
import itertools
import math
import re
import textwrap
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from uftdata.errors import UftDataError
from uftdata.mixspec import MixtureSpec, spec_from_mapping
from uftdata.schema import KINDS

Dtype = Literal["float32", "bfloat16", "float16"]
LossName = Literal["una_mse", "una_bce", "dpo", "kto", "sft"]

# Which kinds each loss trains on and whether it has a reference model (DESIGN.md, "Loss x kind").
# The trainer's table is `uft_train.losses.LOSSES` (it imports torch); tests keep the two equal.
LOSS_KINDS: dict[str, frozenset[str]] = {
    "una_mse": frozenset(KINDS), "una_bce": frozenset(KINDS), "dpo": frozenset({"pairwise"}),
    "kto": frozenset({"sft", "binary", "pairwise"}), "sft": frozenset({"sft"}),
}
IMPLICIT_REWARD_LOSSES = frozenset({"una_mse", "una_bce", "dpo", "kto"})


@dataclass(frozen=True)
class TinyModelConfig:
    """The tiny Llama of `model.name: tiny` (demo, tests, CPU benchmarks)."""

    hidden_size: int = 64
    """Width of the tiny model."""
    num_layers: int = 2
    """Decoder layers of the tiny model."""
    num_heads: int = 4
    """Attention heads of the tiny model; must divide hidden_size."""
    intermediate_size: int = 128
    """MLP width of the tiny model."""
    max_position_embeddings: int = 512
    """Position range the tiny Llama is configured for (RoPE: not a hard limit on data.max_length)."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "tiny"
    """Hub id or local folder of the base model; `tiny` builds a tiny Llama from model.tiny with the project's own tokenizer (no download)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of model.name; null = the default branch."""
    template: str | None = None
    """Jinja chat template over `messages` for base models without one (Mistral-7B-v0.1: `[INST] {user} [/INST]{assistant}</s>`); it may not add tokens to the vocabulary."""
    dtype: Dtype = "float32"
    """Dtype the base weights are loaded in."""
    init_adapter: str | None = None
    """Stage-1 adapter folder (sequential baselines): merged into the base in memory; a fresh adapter is trained on top and the merged model is the reference."""
    trust_remote_code: bool = False
    """Let transformers run the model repository's own code."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third slower."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the tiny model (only read when model.name is `tiny`)."""


@dataclass(frozen=True)
class LoraConfig:
    r: int = 16
    """LoRA rank."""
    alpha: int = 16
    """LoRA alpha (the update is scaled by alpha / r)."""
    dropout: float = 0.0
    """LoRA dropout; must be 0 for implicit-reward losses (else r != 0 at step 0)."""
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Module names that get an adapter."""


@dataclass(frozen=True)
class DataConfig:
    path: str | None = None
    """Mixture folder to train on; null = mixture.out."""
    kinds: tuple[str, ...] | None = None
    """Keep only rows of these kinds (the others are counted and reported); null = all, and a kind the loss does not train on is an error at load."""
    max_length: int = 2048
    """Longest prompt + completion, in tokens."""
    max_prompt_length: int = 1024
    """Longest prompt, in tokens; less than max_length."""
    truncation: Literal["drop", "truncate_prompt_left"] = "drop"
    """Rows over a limit: `drop` them with their pair partner (the authors' rule), or cut the prompt from the left; completions are never cut."""
    max_drop_share: float = 0.1
    """Largest share of a split's rows (after data.kinds) that tokenization may drop (too long, broken pairs, ...) before uft-train stops instead of training on the rest; in [0, 1]. Provisional default 0.1, set on the tiny tokenizer (the demo drops 1.7%); to be recalibrated with the real Mistral tokenizer."""


@dataclass(frozen=True)
class LossConfig:
    name: LossName = "una_mse"
    """una_mse (UFT/UNA score loss), una_bce (binary cross-entropy on the score), dpo, kto or sft."""
    beta: float = 0.01
    """beta of the implicit reward r = beta * (logp_policy - logp_ref)."""
    pairwise: Literal["rows", "dpo"] = "rows"
    """una_* only: pairwise rows as two scored rows (`rows`) or one DPO term per pair (`dpo`)."""
    desirable_weight: float = 1.0
    """kto: weight of desirable rows."""
    undesirable_weight: float = 1.0
    """kto: weight of undesirable rows."""
    reference: Literal["online", "precompute"] = "online"
    """Reference log-probs: `online` (adapter disabled, every step) or `precompute` (once, cached under $UFT_CACHE)."""


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-5
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    warmup_ratio: float = 0.1
    """Fraction of the steps with linear warmup."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate decay after warmup."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip."""


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    """Seed of the sampler, the KTO partners and the adapter init."""
    epochs: int = 2
    """Passes over the training rows (unless max_steps stops earlier)."""
    batch_size: int = 8
    """Terms per optimizer step, all ranks together (a pair is one term where the loss pairs rows)."""
    micro_batch_size: int = 8
    """Terms per forward pass per rank; batch_size must be a multiple of it times the world size."""
    max_steps: int | None = None
    """Stop after this many optimizer steps; null = epochs decide."""
    eval_every: int | None = None
    """Evaluate on the test split every N steps (and always at the end); null = only at the end."""
    save_every: int | None = None
    """Write a resumable checkpoint every N steps; null = only the final adapter."""
    log_every: int = 1
    """Print metrics every N steps (all are written to metrics.jsonl)."""
    device: str = "auto"
    """auto (cuda if present, else cpu), cpu, cuda, cuda:N or mps."""
    autocast_bf16: bool = True
    """bfloat16 autocast, only where the device supports it."""


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "runs/run"
    """Run folder: adapter, metrics, the resolved recipe."""
    tensorboard: bool = False
    """Also write TensorBoard events."""
    overwrite: bool = False
    """Start fresh: discard the run in output.dir, finished or interrupted (its checkpoints too). Only a folder holding uft's run.json is ever removed."""


@dataclass(frozen=True)
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """The adapter trained."""
    data: DataConfig = field(default_factory=DataConfig)
    """Rows trained on and their token limits."""
    loss: LossConfig = field(default_factory=LossConfig)
    """The one loss of the stage."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Loop: batches, steps, evaluation, device."""
    output: OutputConfig = field(default_factory=OutputConfig)
    """Where the run is written."""
    mixture: MixtureSpec | None = None
    """What `uftdata mix RECIPE` builds (sources, takes, test splits, out); see recipes/."""


class RecipeError(UftDataError):
    """Every problem of a recipe, one per line; the CLI prints each line and exits 2."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("recipe", "\n".join(self.problems))

    def line(self) -> str:
        return "\n".join(self.problems)


class _Invalid(Exception):
    def __init__(self, what: str, expected: str = "", fix: str = "") -> None:
        super().__init__(what)
        self.what, self.expected, self.fix = what, expected, fix


def problem(where: str, key: str, what: str, value: object = ..., expected: str = "", fix: str = "") -> str:
    """One line in the project's error style; without `value` (Ellipsis, as null is a value) no `(got ...)`."""
    text = f"{where}: {key}: {what}" if key else f"{where}: {what}"
    if value is not ...:
        got = "null" if value is None else repr(value)
        text += f" (got {got[:80] + '...' if len(got) > 80 else got})"
    text += f"; expected {expected}" if expected else ""
    text += ("" if text.endswith(("?", ".")) else ".") + (f" {fix}" if fix else "")
    return " ".join(text.split("\n"))


def load_recipe(path: Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe file, apply `a.b=value` overrides, validate; a `RecipeError` lists every problem."""
    where = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise RecipeError([problem(where, "", f"cannot read the recipe ({' '.join(str(e).split())})")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError([problem(where, "", "is not a mapping of sections", type(data).__name__,
                                   "model:, lora:, data:, loss:, optim:, train:, output:, mixture:")])
    return _with_overrides(data, overrides, where)


def _with_overrides(data: dict, overrides: Sequence[str], where: str) -> Recipe:
    problems = apply_overrides(data, overrides, where)
    recipe, more = _build_recipe(data, where)
    if problems or more:
        raise RecipeError(problems + more)
    return recipe


def recipe_from_mapping(data: dict, where: str) -> Recipe:
    """The recipe a parsed YAML mapping describes; `where` (the file name) starts every error line."""
    recipe, problems = _build_recipe(data, where)
    if problems:
        raise RecipeError(problems)
    return recipe


def apply_overrides(data: dict, overrides: Sequence[str], where: str) -> list[str]:
    """Set each `a.b=value` (value parsed as YAML; a number indexes a list) in `data`; returns the problems."""
    problems = []
    for text in overrides:
        key, sep, raw = text.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*|\d+", p) for p in parts):
            problems.append(problem(where, f"override {text!r}", "is not KEY.PATH=VALUE", expected="e.g. loss.beta=0.1"))
            continue
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            problems.append(problem(where, f"override {text!r}", "its value is not valid YAML",
                                    fix="Quote it for the shell, e.g. 'model.template=\"...\"'."))
            continue
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                problems.append(problem(where, ".".join(parts[:i]) or key, f"cannot set {key}: not a mapping", node))
                break
            if not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]
        else:
            last = parts[-1]
            if isinstance(node, list) and last.isdigit() and int(last) < len(node):
                node[int(last)] = value
            elif isinstance(node, dict):
                node[last] = value
            else:
                problems.append(problem(where, key, "cannot be set: its parent is not a mapping", node))
    return problems


def _build_recipe(data: dict, where: str) -> tuple[Recipe, list[str]]:
    problems: list[str] = []
    bad: set[str] = set()  # keys already reported, so the combination checks skip them
    recipe = _build(Recipe, data, "", where, problems, bad)
    # A field with a type error was left at its default: check its range only once it is fixed, and
    # combinations only once every field is, so that no line reports a value the user did not write.
    checks = _value_checks(recipe) if bad else itertools.chain(_value_checks(recipe), _combination_checks(recipe))
    problems += [problem(where, key, what, value, expected, fix)
                 for key, what, value, expected, fix in checks if key not in bad]
    return recipe, problems


def _build(cls: type, data: object, key: str, where: str, problems: list[str], bad: set[str]) -> Any:
    """An instance of the dataclass `cls` from `data`, each bad field reported and left at its default."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(problem(where, key, "must be a mapping", data, f"keys {', '.join(f.name for f in fields(cls))}"))
        bad.add(key)
        return cls()
    hints = _hints(cls)
    kwargs = {}
    for name, value in data.items():
        sub = f"{key}.{name}" if key else str(name)
        if name not in hints:
            problems.append(_unknown_key(where, sub, hints))
            continue
        tp = hints[name]
        if MixtureSpec in get_args(tp):
            kwargs[name] = _mixture(value, sub, where, problems, bad)
        elif is_dataclass(tp):
            kwargs[name] = _build(tp, value, sub, where, problems, bad)
        else:
            try:
                kwargs[name] = _convert(value, tp)
            except _Invalid as e:
                problems.append(problem(where, sub, e.what, value, e.expected, e.fix))
                bad.add(sub)
    return cls(**kwargs)


def _mixture(value: object, key: str, where: str, problems: list[str], bad: set[str]) -> MixtureSpec | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.append(problem(where, key, "must be a mapping", value, "the `uftdata mix` section; see recipes/"))
    else:
        try:
            return spec_from_mapping(value, f"{where}: {key}")
        except UftDataError as e:  # spec_from_mapping lists several problems on indented lines
            lines = e.what.split("\n  ")
            problems += [e.line()] if len(lines) == 1 else [line for line in lines[1:]]
    bad.add(key)
    return None


def _unknown_key(where: str, key: str, hints: dict[str, Any]) -> str:
    parent, _, name = key.rpartition(".")
    prefix = f"{parent}." if parent else ""
    close = difflib.get_close_matches(name, list(hints), n=1)
    if close:
        return problem(where, key, f"unknown key; did you mean {prefix}{close[0]}?")
    elsewhere = [k for k in _leaf_keys(Recipe) if k.rpartition(".")[2] == name]
    if elsewhere:
        return problem(where, key, f"unknown key here; did you mean {elsewhere[0]}?")
    return problem(where, key, "unknown key", expected=f"one of {', '.join(prefix + k for k in hints)}")


def _convert(value: object, tp: Any) -> object:
    """`value` as type `tp`, or `_Invalid` saying what was expected."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        try:
            return _convert(value, inner)
        except _Invalid as e:
            raise _Invalid(e.what, f"{e.expected} or null" if e.expected else "", e.fix) from None
    if origin is Literal:
        if value in args and isinstance(value, str):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        raise _Invalid("is not allowed", "one of " + ", ".join(args), f"Did you mean {close[0]}?" if close else "")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Invalid("must be a list", _type_name(tp))
        items = args[:1] * len(value) if args[1:] == (Ellipsis,) else args
        if len(items) != len(value):
            raise _Invalid(f"must have {len(items)} items", _type_name(tp))
        try:
            return tuple(_convert(v, t) for v, t in zip(value, items))
        except _Invalid:
            raise _Invalid("has an item of the wrong type", _type_name(tp)) from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Invalid("must be true or false", "a boolean")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Invalid("must be an integer", "a whole number")
    if tp is float:
        return _float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Invalid("must be a string", "text", "Quote it in the YAML.")
    raise TypeError(f"no YAML conversion for {tp!r}")  # a new field type: a bug here, not the user's


# PyYAML reads `3e-5` (no dot) as a string (YAML 1.1); a number written so is still a number.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _float(value: object) -> float:
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
        raise _Invalid("must be finite", "a number")
    raise _Invalid("must be a number", "e.g. 0.01 or 3e-5")


def _type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(args)
    if origin is tuple:
        if args[1:] == (Ellipsis,):
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} {_type_name(args[0])}"
    return getattr(tp, "__name__", str(tp))


# --- checks of values and combinations, after the types are right ---------------------------------

Check = tuple[str, str, object, str, str]  # key, what, value, expected, fix


def _value_checks(r: Recipe) -> Iterator[Check]:
    positive = ["lora.r", "lora.alpha", "data.max_length", "data.max_prompt_length", "train.epochs",
                "train.batch_size", "train.micro_batch_size", "train.log_every", "train.max_steps",
                "train.eval_every", "train.save_every", "loss.beta", "loss.desirable_weight",
                "loss.undesirable_weight", "optim.lr", "optim.eps", "optim.max_grad_norm",
                *(f"model.tiny.{f.name}" for f in fields(TinyModelConfig))]
    for key in positive:
        value = _get(r, key)
        if value is not None and value <= 0:
            yield key, "must be > 0", value, "", ""
    for key in ["optim.weight_decay", "train.seed"]:
        if _get(r, key) < 0:
            yield key, "must be >= 0", _get(r, key), "", ""
    for key, value in [("optim.warmup_ratio", r.optim.warmup_ratio), ("lora.dropout", r.lora.dropout),
                       *(("optim.betas", b) for b in r.optim.betas)]:
        if not 0 <= value < 1:
            yield key, "must be in [0, 1)", value, "", ""
    if not 0 <= r.data.max_drop_share <= 1:
        yield "data.max_drop_share", "must be in [0, 1]", r.data.max_drop_share, "", ""


def _combination_checks(r: Recipe) -> Iterator[Check]:
    loss, train, data = r.loss, r.train, r.data
    if data.max_prompt_length >= data.max_length:
        yield ("data.max_prompt_length", "must be less than data.max_length", data.max_prompt_length,
               f"< {data.max_length}", "")
    if train.micro_batch_size > 0 and train.batch_size % train.micro_batch_size:
        yield ("train.batch_size", "must be a multiple of train.micro_batch_size", train.batch_size,
               f"a multiple of {train.micro_batch_size}",
               "Checked for one process; under torchrun it must be a multiple of micro_batch_size x world size.")
    if loss.name == "kto" and train.batch_size < 2:
        yield ("train.batch_size", "kto needs a global batch of at least 2 (its KL term pairs each row with "
               "another row of the batch)", train.batch_size, ">= 2", "")
    if loss.pairwise == "dpo" and loss.name not in ("una_mse", "una_bce"):
        yield ("loss.pairwise", f"applies to una_mse and una_bce only, not {loss.name}", loss.pairwise, "rows", "")
    if loss.name not in IMPLICIT_REWARD_LOSSES and loss.reference == "precompute":
        yield ("loss.reference", f"{loss.name} has no reference model to precompute", loss.reference, "online", "")
    if loss.name in IMPLICIT_REWARD_LOSSES and r.lora.dropout != 0:
        yield ("lora.dropout", f"must be 0 for {loss.name}: with dropout the implicit reward is not 0 at step 0 "
               "and online and cached references differ", r.lora.dropout, "0.0", "")
    for kind in data.kinds or ():
        if kind not in KINDS:
            yield "data.kinds", f"has an unknown kind {kind!r}", list(data.kinds), f"kinds among {', '.join(KINDS)}", ""
        elif kind not in LOSS_KINDS[loss.name]:
            yield ("data.kinds", f"{kind} rows are not trained by {loss.name}", list(data.kinds),
                   f"kinds among {', '.join(sorted(LOSS_KINDS[loss.name]))}", "")
    if data.kinds is not None and not data.kinds:
        yield "data.kinds", "is empty", [], "null (every kind the loss trains on) or a list of kinds", ""
    yield from _model_checks(r)
    if data.path is None and (r.mixture is None or r.mixture.out is None):
        yield ("data.path", "is not set and the recipe has no mixture.out", None, "a mixture folder",
               "Set data.path, or add a mixture: section with out: (see recipes/).")


def _model_checks(r: Recipe) -> Iterator[Check]:
    tiny = r.model.tiny
    if r.model.name == "tiny" and tiny.num_heads > 0 and tiny.hidden_size % tiny.num_heads:
        yield "model.tiny.hidden_size", "must be a multiple of model.tiny.num_heads", tiny.hidden_size, "", ""
    if not re.fullmatch(r"auto|cpu|mps|(cuda|xpu)(:\d+)?", r.train.device):
        yield "train.device", "is not a device", r.train.device, "auto, cpu, cuda, cuda:N or mps", ""
    if r.model.template is not None:
        error = _template_error(r.model.template)
        if error:
            yield "model.template", f"is not a valid Jinja template ({error})", r.model.template, "", ""


def _template_error(template: str) -> str | None:
    try:
        import jinja2  # transformers renders chat templates with it; without it, train reports it
    except ImportError:
        return None
    try:
        jinja2.Environment().parse(template)
    except jinja2.TemplateSyntaxError as e:
        return f"line {e.lineno}: {e.message}"
    return None


def _get(obj: object, key: str) -> Any:
    return functools.reduce(getattr, key.split("."), obj)


# --- the other direction, and help -----------------------------------------------------------------

def recipe_to_dict(recipe: Recipe) -> dict:
    """A plain YAML-able mapping (tuples as lists) that `recipe_from_mapping` reads back to `recipe`."""
    out: dict[str, Any] = {}
    for f in fields(recipe):
        value = getattr(recipe, f.name)
        if isinstance(value, MixtureSpec):
            out[f.name] = _mixture_to_dict(value)
        elif is_dataclass(value):
            out[f.name] = recipe_to_dict(value)  # type: ignore[arg-type]
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


class _RecipeDumper(yaml.SafeDumper):
    """Multi-line strings (chat templates) as `|` blocks, readable in the saved recipe."""


_RecipeDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def recipe_to_yaml(recipe: Recipe) -> str:
    """The resolved recipe as YAML, keys in declaration order: what a run folder's recipe.yaml holds."""
    return yaml.dump(recipe_to_dict(recipe), Dumper=_RecipeDumper, sort_keys=False, allow_unicode=True, width=100)


def _mixture_to_dict(spec: MixtureSpec) -> dict:
    sources = []
    for s in spec.sources:
        item: dict[str, Any] = {"path": s.path, "take": s.take.text}
        if s.test is not None:
            item["test"] = {"fraction": s.test.fraction} if s.test.fraction is not None else {"file": s.test.file}
        sources.append(item)
    out = {"out": spec.out, "seed": spec.seed, "sources": sources, "on_short": spec.on_short}
    return out | ({"total": spec.total} if spec.total is not None else {})


def data_path(recipe: Recipe) -> Path:
    """The mixture folder trained on: `data.path`, else `mixture.out` (DESIGN.md, "Recipes")."""
    if recipe.data.path is not None:
        return Path(recipe.data.path)
    if recipe.mixture is not None and recipe.mixture.out is not None:
        return Path(recipe.mixture.out)
    raise RecipeError([problem("recipe", "data.path", "is not set and the recipe has no mixture.out",
                               fix="Set data.path, or add a mixture: section with out: (see recipes/).")])


def with_overrides(recipe: Recipe, overrides: Sequence[str], where: str = "overrides") -> Recipe:
    """`recipe` with `a.b=value` overrides applied, through the same loader (tests, sweeps)."""
    return _with_overrides(recipe_to_dict(recipe), overrides, where)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstrings under each field of a dataclass (read from its source; empty if it has none)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _leaf_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in fields(cls):
        tp = _hints(cls)[f.name]
        keys += _leaf_keys(tp, f"{prefix}{f.name}.") if is_dataclass(tp) else [prefix + f.name]
    return keys


def recipe_help() -> str:
    """Every recipe key with its type, default and docstring: the epilog of `uft-train --help`."""
    lines = []
    for key in _leaf_keys(Recipe):
        *path, name = key.split(".")
        owner: type = functools.reduce(lambda c, p: _hints(c)[p], path, Recipe)
        default = "null" if key == "mixture" else _yaml_scalar(getattr(owner(), name))
        lines.append(f"  {key}: {_type_name(_hints(owner)[name])} = {default}\n      {field_docs(owner).get(name, '')}")
    return "\n".join(lines)


def _yaml_scalar(value: object) -> str:
    return yaml.safe_dump(list(value) if isinstance(value, tuple) else value, default_flow_style=True,
                          width=10_000).strip().removesuffix("\n...").removesuffix("...").strip()
