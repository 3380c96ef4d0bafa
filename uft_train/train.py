"""The training loop: one loop for every loss (docs/design.md, "Trainer").

A step takes one global batch from the seeded sampler (the same on every rank), gives each rank
its share in micro-batches, and reduces the loss as the sum of terms over the number of terms in
the whole step (sft: over its completion tokens), so gradient accumulation and DDP do not change
the math. Checkpoints hold the adapter, optimizer, scheduler, RNG and step; the batch schedule is a
pure function of (seed, epoch), so a resumed run continues the same trajectory.

The step's state and forward passes are `uft_train.step`, a micro-batch's loss terms
`uft_train.objective` (dispatching on `uft_train.loss_table`), and their metrics, summed by name
over micro-batches and ranks, `uft_train.stats`.
"""

from __future__ import annotations

import math
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import NamedTuple

import polars as pl
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from uft_train import fsdp
from uft_train.batching import GlobalBatch, batch_size_problems, chunk_units, global_batches, make_units, split_batch
from uft_train.checkpoint import check_resume, latest_checkpoint, load_checkpoint, save_checkpoint
from uft_train.config import Recipe, RecipeError, data_path, recipe_to_yaml
from uft_train.data import PROMPT_TRUNCATED, Example, check_kinds, read_split, tokenize_split
from uft_train.errors import TrainError
from uft_train.kl import eval_kto_kl, kto_kl
from uft_train.loss_table import get_loss, pairs_as_one_term
from uft_train.model import add_adapter, load_tokenizer_and_model, lora_config, model_identity
from uft_train.objective import micro_batch_terms
from uft_train.predictions import prediction_frame
from uft_train.refcache import reference_cache
from uft_train.runfolder import RunFolder, setup_distributed
from uft_train.schedule import make_optimizer, make_scheduler
from uft_train.stats import StepStats
from uft_train.step import Run, bf16_compute, forward
from uftdata.atomic import output_lock
from uftdata.errors import UftDataError
from uftdata.mixout import content_hash


def pick_device(name: str) -> torch.device:
    """`train.device` as a torch device; one that this machine does not have is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    backend = {"cuda": torch.cuda, "xpu": getattr(torch, "xpu", None), "mps": torch.backends.mps}.get(device.type)
    if backend is None:
        return device
    available = backend.is_available()
    count = int(available) if device.type == "mps" else (backend.device_count() if available else 0)
    index: int | None = device.index  # torch's stubs say int; it is None for a bare "cuda"
    if (index is None and available) or (index is not None and index < count):
        return device
    where = f"train.device: {name}"
    fix = "Set train.device=auto (the GPU when there is one, else the CPU) or train.device=cpu."
    if not available:
        cpu_only = device.type == "cuda" and not torch.version.cuda
        build = f" (this torch {torch.__version__} is built without CUDA)" if cpu_only else ""
        raise TrainError(where, f"no {device.type} device is available on this machine{build}", fix=fix)
    raise TrainError(where, f"this machine has {count} {device.type} device(s), numbered from 0", fix=fix)


def train_step(run: Run, batch: GlobalBatch, step: int) -> dict[str, float]:
    """One optimizer step over one global batch; returns the step's metrics."""
    rows = [run.train[i] for i in batch.rows]
    # The sampler counted the batch's terms when it cut it (batching.Unit.terms).
    denominator = sum(e.completion_len for e in rows) if run.spec.denominator == "tokens" else batch.terms
    kl = kto_kl(run, batch, step) if run.spec.needs_kl else None
    micro_batches = split_batch(batch, micro_batch_size=run.recipe.train.micro_batch_size,
                                world_size=run.world, rank=run.rank)
    stats = StepStats()
    for k, micro in enumerate(micro_batches):
        examples = [run.train[i] for i in micro.rows]
        with _gradient_sync(run.model, last=k == len(micro_batches) - 1):
            policy, ref = forward(run, examples, grad=True)
            terms = micro_batch_terms(run.recipe.loss, examples, micro.pairs, policy, ref, kl)
            # DDP averages gradients over ranks; scaling by world size makes it a sum.
            (terms.values.sum() * run.world / denominator).backward()
        stats.add(terms, examples, run.padded(examples))
    stats = stats.reduce(run.world, run.device)
    loss = stats.loss_sum / denominator
    if not math.isfinite(loss):
        raise NonFiniteLoss(loss)
    grad_norm = torch.nn.utils.clip_grad_norm_(
        [p for p in run.model.parameters() if p.requires_grad], run.recipe.optim.max_grad_norm)
    grad_norm = fsdp.full(grad_norm)  # a DTensor under FSDP: the norm over every rank's shards
    lr = float(run.scheduler.get_last_lr()[0])  # the lr this step's update uses; after .step() it is the next one's
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {"loss": loss, "grad_norm": float(grad_norm), "lr": lr, "tokens": stats.tokens,
            "padding_share": stats.padding_share(), **stats.by_kind(run.spec.denominator),
            **({"kto_kl": float(kl)} if kl is not None else {})}


class NonFiniteLoss(Exception):
    pass


def _gradient_sync(model: torch.nn.Module, *, last: bool) -> AbstractContextManager[object]:
    """DDP averages (FSDP reduce-scatters) gradients over ranks at the step's last micro-batch only,
    not at every backward."""
    if isinstance(model, DistributedDataParallel):
        return model.no_sync() if not last else nullcontext()
    return fsdp.gradient_sync(model, last=last)


def evaluate(run: Run) -> tuple[dict[str, float], torch.Tensor | None]:
    """The test split's loss (in the training loss's unit), per kind, mean reward per kind, pair
    accuracy and, for KTO, its own KL estimate (`kl.eval_kto_kl`, so `eval/loss` is the training
    objective); and each test example's implicit reward, in `run.test` order (None: no test split,
    or no reference).

    Every rank evaluates the whole test split (it is small), so rank 0 alone has every reward."""
    if not run.test:
        return {}, None
    run.model.eval()
    stats = StepStats()
    cfg = run.recipe.loss
    units = make_units(run.test, pairs_as_one_term=pairs_as_one_term(cfg.name, cfg.pairwise))
    kl = eval_kto_kl(run) if run.spec.needs_kl else None
    order: list[int] = []
    rewards: list[torch.Tensor] = []
    for micro in chunk_units(units, run.recipe.train.micro_batch_size):
        examples = [run.test[i] for i in micro.rows]
        policy, ref = forward(run, examples, grad=False, cached_reference=False)
        terms = micro_batch_terms(cfg, examples, micro.pairs, policy, ref, kl)
        stats.add(terms, examples, run.padded(examples))
        if terms.rewards is not None:
            order += micro.rows
            rewards.append(terms.rewards.float().cpu())
    n_terms = stats.tokens_completion if run.spec.denominator == "tokens" else sum(u.terms for u in units)
    by_kind = {f"eval/{key}": value for key, value in stats.by_kind(run.spec.denominator).items()}
    metrics = {"eval/loss": stats.loss_sum / max(1, n_terms), **by_kind,
               **({"eval/kto_kl": float(kl)} if kl is not None else {})}
    if not rewards:
        return metrics, None
    by_example = torch.empty(len(run.test), dtype=torch.float32)
    by_example[order] = torch.cat(rewards)
    return metrics, by_example


def read_splits(recipe: Recipe) -> dict[str, pl.DataFrame]:
    """The rows of the recipe's data, by split ("test" only when there is one)."""
    folder = data_path(recipe)
    splits = {split: read_split(folder, split) for split in ("train", "test")}
    return {split: rows for split, rows in splits.items() if rows is not None}


def tokenize_splits(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, splits: dict[str, pl.DataFrame],
                    ) -> tuple[list[Example], list[Example], dict]:
    """Train and test examples, and the data report: per split, rows, examples, kinds left out by
    data.kinds, drops by reason and prompts truncated."""
    spec = get_loss(recipe.loss.name)
    report: dict = {}
    out: list[list[Example]] = []
    for split in ("train", "test"):
        rows = splits.get(split)
        if rows is None or rows.height == 0:
            out.append([])
            continue
        rows, kept = check_kinds(rows, spec.kinds, recipe.data.kinds, loss=recipe.loss.name)
        examples, dropped = tokenize_split(rows, tokenizer, template=recipe.model.template,
                                           max_length=recipe.data.max_length,
                                           max_prompt_length=recipe.data.max_prompt_length,
                                           truncation=recipe.data.truncation)
        truncated = dropped.pop(PROMPT_TRUNCATED, 0)  # kept rows, not drops
        report[split] = {"rows": rows.height, "examples": len(examples), "kinds_filtered": dict(kept),
                         "dropped": dict(dropped), "prompt_truncated": truncated}
        out.append(examples)
    return out[0], out[1], report


def data_report_lines(folder: Path, report: dict) -> list[str]:
    """What tokenization made of each split, printed before training (data.json keeps it too)."""
    lines = [f"data: {folder}"]
    for split, r in report.items():
        dropped = sum(r["dropped"].values())
        reasons = ", ".join(f"{reason} {n}" for reason, n in _largest(r["dropped"]))
        filtered = "".join(f", {kind} {n}" for kind, n in sorted(r["kinds_filtered"].items()))
        lines.append(f"  {split}: {r['rows']} rows -> {r['examples']} examples; dropped {dropped} "
                     f"({_share(dropped, r['rows'])}){': ' + reasons if reasons else ''}; "
                     f"prompt_truncated {r['prompt_truncated']}" + (f"; left out by data.kinds{filtered}" if filtered else ""))
    return lines


def check_drop_shares(recipe: Recipe, report: dict) -> None:
    """Stop before training when tokenization drops more than data.max_drop_share of a split's rows:
    a run on the rest would answer another question than the recipe asks."""
    limit = recipe.data.max_drop_share
    over = []
    for split, r in report.items():
        dropped = sum(r["dropped"].values())
        if r["rows"] and dropped / r["rows"] > limit:
            reasons = ", ".join(f"{reason} {n}" for reason, n in _largest(r["dropped"])[:3])
            over.append(f"the {split} split would lose {dropped} of its {r['rows']} rows "
                        f"({_share(dropped, r['rows'])}: {reasons})")
    if over:
        raise UftDataError(str(data_path(recipe)), f"{'; '.join(over)}, more than data.max_drop_share {limit:g}",
                           fix="Raise data.max_length / data.max_prompt_length, set "
                               "data.truncation=truncate_prompt_left, or raise data.max_drop_share.")


def _largest(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "0.0%"


def data_identity(splits: dict[str, pl.DataFrame]) -> dict[str, str]:
    """The content hash of the rows read (ids hash the text; scores, labels and pairs are hashed
    too): a resumed run must read the same rows, whether from a mixture or a plain Parquet file."""
    return {"data.content_hash": content_hash(splits)}


def train(recipe: Recipe, recipe_path: Path | None = None) -> Path:
    """Run the recipe; returns the run folder (adapter/, metrics.jsonl, recipe.yaml, summary.json).

    Everything that can refuse the run comes before the run folder is made or changed: the device,
    the folder itself, the data, the checkpoint's recipe, data and model (a resume), the model's
    loading and the drop shares."""
    rank, world = setup_distributed()
    # Rank 0 holds output.dir's lock for the whole run: a second uft-train on the same folder stops.
    with output_lock(Path(recipe.output.dir)) if rank == 0 else nullcontext():
        return _train(recipe, rank, world)


def _train(recipe: Recipe, rank: int, world: int) -> Path:
    _check_world_sizes(recipe, world)
    device = pick_device(recipe.train.device)
    torch.manual_seed(recipe.train.seed)
    # Rank 0 first: it checks, makes the folder (overwrite: replaces ours) and writes the tiny
    # tokenizer that the other ranks then read, never half-written.
    if rank != 0:
        dist.barrier()
    inputs = [data_path(recipe), *([Path(recipe.model.init_adapter)] if recipe.model.init_adapter else [])]
    folder = RunFolder(Path(recipe.output.dir), overwrite=recipe.output.overwrite, rank=rank,
                       tensorboard=recipe.output.tensorboard, inputs=inputs)
    loaded = _load_checked(recipe, folder, rank, device, world)
    folder.prepare(loaded.tokenizer if recipe.model.name == "tiny" else None)
    if rank == 0 and world > 1:
        dist.barrier()
    run, steps_per_epoch, total_steps = _make_run(recipe, loaded, device, rank, world)
    report = dict(loaded.report)
    if recipe.loss.reference == "precompute" and run.spec.needs_reference:
        run.refs = reference_cache(run, recipe, folder.tokenizer_dir())
        report["reference_cache"] = {"hits": run.refs.hits, "misses": run.refs.misses, "store": str(run.refs.store)}
    start = _resume(run, folder, total_steps)
    folder.start(recipe_to_yaml(recipe), report, steps_per_epoch, total_steps, resumed_at=start)
    run_loop(run, folder, start, total_steps, steps_per_epoch)
    if world > 1:
        dist.barrier()  # every rank returns a finished run folder (rank 0 writes it)
    return folder.path


def _check_world_sizes(recipe: Recipe, world: int) -> None:
    """Under torchrun, the batch sizes against the world size (one process: the recipe loader has)."""
    problems = batch_size_problems(recipe.train.batch_size, recipe.train.micro_batch_size, world,
                                   pairs_as_one_term=pairs_as_one_term(recipe.loss.name, recipe.loss.pairwise))
    if world > 1 and problems:
        raise RecipeError([f"torchrun with {world} processes: {p}" for p in problems])


class Loaded(NamedTuple):
    """What a run starts from, checked: tokenizer, base model, examples, the data report and the
    identity (data and model) a checkpoint records."""

    tokenizer: PreTrainedTokenizerBase
    base: PreTrainedModel
    train: list[Example]
    test: list[Example]
    report: dict
    identity: dict[str, str]
    weights: Path | None = None  # FSDP: `base` is on the meta device and its weights are read from here


def _sharded_load(recipe: Recipe, world: int) -> bool:
    """FSDP over several processes reads a pretrained base rank by rank; the tiny model is built whole."""
    return recipe.train.parallel == "fsdp" and world > 1 and recipe.model.name != "tiny"


def _load_checked(recipe: Recipe, folder: RunFolder, rank: int, device: torch.device, world: int) -> Loaded:
    """The data, the model and the examples, each refused as early as it can be: a resume with
    another recipe or data before the model loads (a wrong lr costs no minutes), then the model, then
    the drop shares."""
    splits = read_splits(recipe)
    identity = data_identity(splits)
    checkpoint = folder.checkpoint() if rank == 0 else None
    if checkpoint is not None:
        check_resume(checkpoint, recipe, identity)
    weights: Path | None = None
    if _sharded_load(recipe, world):
        tokenizer, base, weights = fsdp.pretrained_skeleton(recipe.model, rank, world)
    else:
        tokenizer, base = load_tokenizer_and_model(recipe, folder.tokenizer_source(), device=device)
    ends = None if weights is None else fsdp.file_ends(weights)
    identity.update(model_identity(recipe.model, tokenizer, base, ends=ends))
    if checkpoint is not None:
        check_resume(checkpoint, None, identity)
    train_rows, test_rows, data_report = tokenize_splits(recipe, tokenizer, splits)
    if rank == 0:
        print("\n".join(data_report_lines(data_path(recipe), data_report)), flush=True)
    check_drop_shares(recipe, data_report)
    if not train_rows:
        raise UftDataError(str(data_path(recipe)), "no training rows left after tokenization", got=data_report)
    return Loaded(tokenizer, base, train_rows, test_rows, data_report, identity, weights)


def _make_run(recipe: Recipe, loaded: Loaded, device: torch.device, rank: int, world: int) -> tuple[Run, int, int]:
    """The run's state before its first step, and its steps per epoch and in all."""
    implicit = get_loss(recipe.loss.name).needs_reference
    rng = torch.get_rng_state()
    adapted = add_adapter(loaded.base, recipe, implicit_reward=implicit)
    model: torch.nn.Module
    if recipe.train.parallel == "fsdp" and world > 1:
        drawn = (None if loaded.weights is None
                 else fsdp.drawn_adapter(adapted, lora_config(recipe, implicit_reward=implicit), rng))
        model = fsdp.shard(adapted, device, world, bf16=bf16_compute(recipe, device), weights=loaded.weights,
                           adapter=drawn)
    else:
        model = adapted.to(device)
    units = make_units(loaded.train, pairs_as_one_term=pairs_as_one_term(recipe.loss.name, recipe.loss.pairwise))
    steps_per_epoch = len(global_batches(loaded.train, units, batch_size=recipe.train.batch_size,
                                         seed=recipe.train.seed, epoch=0))
    total_steps = recipe.train.max_steps or recipe.train.epochs * steps_per_epoch
    optimizer = make_optimizer(model, recipe.optim)
    scheduler = make_scheduler(optimizer, recipe.optim, total_steps)
    if world > 1 and not fsdp.is_sharded(model):
        model = DistributedDataParallel(model)
    run = Run(recipe, model, optimizer, scheduler, loaded.train, loaded.test, units, loaded.tokenizer.pad_token_id,
              device, rank, world, identity=loaded.identity)
    return run, steps_per_epoch, total_steps


def _resume(run: Run, folder: RunFolder, total_steps: int) -> int:
    """The step to start at: 0, or the latest checkpoint's, restored into `run`."""
    checkpoint = latest_checkpoint(folder.path)  # every rank: rank 0 has checked it
    if checkpoint is None:
        return 0
    start = load_checkpoint(checkpoint, run)
    if run.rank == 0:
        print(f"resumed at step {start} of {total_steps} (checkpoint {checkpoint})", flush=True)
    return start


def run_loop(run: Run, folder: RunFolder, start: int, total_steps: int, steps_per_epoch: int) -> None:
    cfg = run.recipe.train
    schedule: dict[int, list[GlobalBatch]] = {}
    for step in folder.progress(range(start, total_steps), total_steps, start):
        epoch, index = divmod(step, steps_per_epoch)
        if epoch not in schedule:
            schedule = {epoch: run.batches(epoch)}
        run.model.train()
        began = time.perf_counter()
        try:
            metrics = train_step(run, schedule[epoch][index], step)
        except NonFiniteLoss as error:
            save_checkpoint(folder.path, run, step)
            raise TrainError(f"step {step + 1}", "the loss is not finite", got=float(error.args[0]),
                               fix=f"A checkpoint of the last good step is in {folder.path / 'checkpoints'}; "
                                   "lower optim.lr or check the data.") from None
        metrics.update(step=step + 1, epoch=epoch, tokens_per_s=metrics["tokens"] / (time.perf_counter() - began))
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0:
            metrics.update(evaluate(run)[0])
        folder.log(metrics)
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < total_steps:
            save_checkpoint(folder.path, run, step + 1)
    final, rewards = evaluate(run)
    predictions = None if rewards is None else prediction_frame(run.test, rewards, step=max(start, total_steps))
    folder.finish(run, final, predictions)

