"""The training loop: one loop for every loss (DESIGN.md, "Trainer").

A step takes one global batch from the seeded sampler (the same on every rank), gives each rank
its share in micro-batches, and reduces the loss as the sum of terms over the number of terms in
the whole step (sft: over its completion tokens), so gradient accumulation and DDP do not change
the math. Checkpoints hold the adapter, optimizer, scheduler, RNG and step; the batch schedule is a
pure function of (seed, epoch), so a resumed run continues the same trajectory.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch
import torch.distributed as dist

from uft_train import batching, losses
from uft_train.checkpoint import check_resume, latest_checkpoint, load_checkpoint, save_checkpoint
from uft_train.config import Recipe, RecipeError, data_path, recipe_to_yaml
from uft_train.data import PROMPT_TRUNCATED, Example, check_kinds, read_split, tokenize_split
from uft_train.kl import derangement, swap_completion
from uft_train.model import add_adapter, load_tokenizer_and_model, model_identity, reference, sequence_logps
from uft_train.objective import micro_batch_terms, uses_pair_terms
from uft_train.predictions import prediction_frame
from uft_train.refcache import ReferenceCache, reference_cache
from uft_train.runfolder import RunFolder, setup_distributed
from uft_train.schedule import make_optimizer, make_scheduler
from uftdata.atomic import output_lock
from uftdata.errors import UftDataError
from uftdata.mixout import content_hash
from uftdata.schema import KINDS


@dataclass
class Run:
    """Everything a step needs, built once."""

    recipe: Recipe
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train: list[Example]
    test: list[Example]
    units: list[tuple[int, ...]]
    pad_id: int
    device: torch.device
    rank: int = 0
    world: int = 1
    refs: ReferenceCache | None = None
    identity: dict[str, str] = field(default_factory=dict)  # the data's and model's, for checkpoints
    spec: losses.LossSpec = field(init=False)

    def __post_init__(self) -> None:
        self.spec = losses.get_loss(self.recipe.loss.name)

    def batches(self, epoch: int) -> list[list[int]]:
        return batching.global_batches(self.train, self.units, batch_size=self.recipe.train.batch_size,
                                       seed=self.recipe.train.seed, epoch=epoch)


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
    if (device.index is None and available) or (device.index is not None and device.index < count):
        return device
    where = f"train.device: {name}"
    fix = "Set train.device=auto (the GPU when there is one, else the CPU) or train.device=cpu."
    if not available:
        cpu_only = device.type == "cuda" and not torch.version.cuda
        build = f" (this torch {torch.__version__} is built without CUDA)" if cpu_only else ""
        raise UftDataError(where, f"no {device.type} device is available on this machine{build}", fix=fix)
    raise UftDataError(where, f"this machine has {count} {device.type} device(s), numbered from 0", fix=fix)


def bf16_autocast(run: Run) -> bool:
    return run.recipe.train.autocast_bf16 and run.device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast(run: Run):  # noqa: ANN201 - a context manager
    return torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=bf16_autocast(run))


def forward(run: Run, examples: list[Example], *, grad: bool,
            cached_reference: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Policy and reference log-probs of a micro-batch (the reference from the cache if there is one)."""
    batch = {k: v.to(run.device) for k, v in batching.collate(examples, run.pad_id).items() if torch.is_tensor(v)}
    args = (batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    with torch.set_grad_enabled(grad), autocast(run):
        policy = sequence_logps(run.model, *args)
    if not run.spec.needs_reference:
        return policy, None
    if run.refs is not None and cached_reference:
        return policy, run.refs.lookup(examples).to(run.device)
    with torch.no_grad(), reference(run.model), autocast(run):
        return policy, sequence_logps(run.model, *args)


def kto_kl(run: Run, batch: list[int], step: int) -> torch.Tensor:
    """KL estimate over the step's global batch: each prompt with the completion of its partner in
    a seeded derangement fixed before the batch is split, no gradient, averaged over all ranks
    (DESIGN.md, KTO). Its reference is always computed online: the cache holds matched rows."""
    partners = derangement(len(batch), seed=run.recipe.train.seed * 1_000_003 + step)
    mine = batching.split_batch(list(range(len(batch))), micro_batch_size=run.recipe.train.micro_batch_size,
                                world_size=run.world, rank=run.rank)
    total = torch.zeros(2, device=run.device, dtype=torch.float64)
    for micro in mine:
        mismatched = [swap_completion(run.train[batch[i]], run.train[batch[partners[i]]]) for i in micro]
        policy, ref = forward(run, mismatched, grad=False, cached_reference=False)
        total += torch.stack([(policy - ref).double().sum(), torch.tensor(len(micro), device=run.device)])
    if run.world > 1:
        dist.all_reduce(total)
    return (total[0] / total[1]).clamp(min=0).float().detach()


def train_step(run: Run, batch: batching.Batch, step: int) -> dict:
    """One optimizer step over one global batch; returns the step's metrics."""
    cfg = run.recipe.loss
    rows = [run.train[i] for i in batch]
    # The sampler counted the batch's terms when it cut it (batching.Unit.terms).
    denominator = (sum(len(e.input_ids) - e.prompt_len for e in rows) if run.spec.denominator == "tokens"
                   else batch.terms)
    kl = kto_kl(run, batch, step) if cfg.name == "kto" else None
    micro_batches = batching.split_batch(batch, micro_batch_size=run.recipe.train.micro_batch_size,
                                         world_size=run.world, rank=run.rank)
    stats = StepStats()
    for k, micro in enumerate(micro_batches):
        examples = [run.train[i] for i in micro]
        sync = k == len(micro_batches) - 1 or run.world == 1
        with (run.model.no_sync() if (run.world > 1 and not sync) else _nothing()):
            policy, ref = forward(run, examples, grad=True)
            terms = micro_batch_terms(cfg, examples, policy, ref, kl)
            # DDP averages gradients over ranks; scaling by world size makes it a sum.
            (terms.values.sum() * run.world / denominator).backward()
        stats.add(terms, examples)
    loss = stats.reduce(run, denominator)
    if not math.isfinite(loss):
        raise NonFiniteLoss(loss)
    grad_norm = torch.nn.utils.clip_grad_norm_(
        [p for p in run.model.parameters() if p.requires_grad], run.recipe.optim.max_grad_norm)
    lr = run.scheduler.get_last_lr()[0]  # the lr this step's update uses; after .step() it is the next one's
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {"loss": loss, "grad_norm": float(grad_norm), "lr": lr,
            "tokens": stats.tokens, "padding_share": stats.padding_share(), **stats.by_kind(), **(
                {"kto_kl": float(kl)} if kl is not None else {})}


class NonFiniteLoss(Exception):
    pass


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@dataclass
class StepStats:
    """Sums over a step's micro-batches, for the metrics: this rank's, or all ranks' after `reduce`."""

    loss_sum: float = 0.0
    tokens: int = 0
    tokens_completion: int = 0
    padded: int = 0
    kinds: dict[str, list[float]] = field(default_factory=dict)    # kind -> [sum of loss terms, terms]
    rewards: dict[str, list[float]] = field(default_factory=dict)  # kind -> [sum of rewards, rows]
    correct: list[float] = field(default_factory=lambda: [0.0, 0.0])  # [pairs ranked right, pairs]

    def add(self, terms, examples: list[Example]) -> None:  # noqa: ANN001
        values = terms.values.detach().float()
        self.loss_sum += float(values.sum())
        for kind, v in zip(terms.kinds, values.tolist()):
            _accumulate(self.kinds, kind, v)
        if terms.rewards is not None:
            for e, r in zip(examples, terms.rewards.tolist()):
                _accumulate(self.rewards, e.kind, r)
        self.correct = [self.correct[0] + sum(terms.pair_correct), self.correct[1] + len(terms.pair_correct)]
        lengths = [len(e.input_ids) for e in examples]
        self.tokens += sum(lengths)
        self.tokens_completion += sum(len(e.input_ids) - e.prompt_len for e in examples)
        self.padded += max(lengths) * len(lengths) - sum(lengths)

    def reduce(self, run: Run, denominator: int) -> float:
        """The step's loss; under DDP every counter is first summed over the ranks, so the metrics
        (per kind too) are the global batch's, as in one process."""
        if run.world > 1:
            # On the run's device: an NCCL process group reduces CUDA tensors only.
            flat = [self.loss_sum, self.tokens, self.tokens_completion, self.padded, *self.correct,
                    *(x for table in (self.kinds, self.rewards) for kind in KINDS for x in table.get(kind, (0.0, 0.0)))]
            total = torch.tensor(flat, dtype=torch.float64, device=run.device)
            dist.all_reduce(total)
            flat = total.tolist()
            self.loss_sum, self.correct = flat[0], flat[4:6]
            self.tokens, self.tokens_completion, self.padded = (int(x) for x in flat[1:4])
            pairs = list(zip(flat[6::2], flat[7::2]))  # (sum, count) per kind: losses, then rewards
            for table, sums in ((self.kinds, pairs[:len(KINDS)]), (self.rewards, pairs[len(KINDS):])):
                table.clear()
                table.update({kind: list(pair) for kind, pair in zip(KINDS, sums) if pair[1]})
        return self.loss_sum / denominator

    def padding_share(self) -> float:
        return self.padded / max(1, self.tokens + self.padded)

    def by_kind(self) -> dict:
        out: dict = {}
        for kind, (total, n) in sorted(self.kinds.items()):
            out[f"loss/{kind}"] = total / n
        for kind, (total, n) in sorted(self.rewards.items()):
            out[f"reward/{kind}"] = total / n
        if self.correct[1]:
            out["reward_accuracy/pairwise"] = self.correct[0] / self.correct[1]
        return out


def _accumulate(table: dict[str, list[float]], kind: str, value: float) -> None:
    total = table.setdefault(kind, [0.0, 0])
    total[0] += value
    total[1] += 1


def evaluate(run: Run) -> tuple[dict, torch.Tensor | None]:
    """Mean loss per term, per kind, mean reward per kind and pair accuracy on the test split; and
    each test example's implicit reward, in `run.test` order (None: no test split, or loss `sft`).

    Every rank evaluates the whole test split (it is small), so rank 0 alone has every reward."""
    if not run.test:
        return {}, None
    run.model.eval()
    stats = StepStats()
    units = batching.make_units(run.test, pairs_as_one_term=uses_pair_terms(run.recipe.loss))
    kl = torch.zeros((), device=run.device) if run.recipe.loss.name == "kto" else None
    order: list[int] = []
    rewards: list[torch.Tensor] = []
    for micro in chunk_units(units, run.recipe.train.micro_batch_size):
        examples = [run.test[i] for i in micro]
        policy, ref = forward(run, examples, grad=False, cached_reference=False)
        terms = micro_batch_terms(run.recipe.loss, examples, policy, ref, kl)
        stats.add(terms, examples)
        if terms.rewards is not None:
            order += micro
            rewards.append(terms.rewards.float().cpu())
    n_terms = stats.tokens_completion if run.spec.denominator == "tokens" else sum(u.terms for u in units)
    metrics = {"eval/loss": stats.loss_sum / max(1, n_terms), **{f"eval/{k}": v for k, v in stats.by_kind().items()}}
    if not rewards:
        return metrics, None
    by_example = torch.empty(len(run.test), dtype=torch.float32)
    by_example[order] = torch.cat(rewards)
    return metrics, by_example


def chunk_units(units: list[tuple[int, ...]], size: int) -> list[list[int]]:
    """Consecutive units packed into micro-batches of at most `size` rows; a pair is never split."""
    chunks: list[list[int]] = [[]]
    for unit in units:
        if chunks[-1] and len(chunks[-1]) + len(unit) > size:
            chunks.append([])
        chunks[-1].extend(unit)
    return [c for c in chunks if c]


def read_splits(recipe: Recipe) -> dict[str, pl.DataFrame]:
    """The rows of the recipe's data, by split ("test" only when there is one)."""
    folder = data_path(recipe)
    splits = {split: read_split(folder, split) for split in ("train", "test")}
    return {split: rows for split, rows in splits.items() if rows is not None}


def load_examples(recipe: Recipe, tokenizer) -> tuple[list[Example], list[Example], dict]:  # noqa: ANN001
    return tokenize_splits(recipe, tokenizer, read_splits(recipe))


def tokenize_splits(recipe: Recipe, tokenizer, splits: dict[str, pl.DataFrame],  # noqa: ANN001
                    ) -> tuple[list[Example], list[Example], dict]:
    """Train and test examples, and the data report: per split, rows, examples, kinds left out by
    data.kinds, drops by reason and prompts truncated."""
    spec = losses.get_loss(recipe.loss.name)
    report: dict = {}
    out = []
    for split in ("train", "test"):
        rows = splits.get(split)
        if rows is None or rows.height == 0:
            out.append([])
            continue
        rows, kept = check_kinds(rows, spec.kinds, recipe.data.kinds)
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
    problems = batching.batch_size_problems(recipe.train.batch_size, recipe.train.micro_batch_size, world,
                                            pairs_as_one_term=uses_pair_terms(recipe.loss))
    if world > 1 and problems:  # one process: the recipe loader has checked the sizes
        raise RecipeError([f"torchrun with {world} processes: {p}" for p in problems])
    device = pick_device(recipe.train.device)
    torch.manual_seed(recipe.train.seed)
    # Rank 0 first: it checks, makes the folder (overwrite: replaces ours) and writes the tiny
    # tokenizer that the other ranks then read, never half-written.
    if rank != 0:
        dist.barrier()
    inputs = [data_path(recipe), *([Path(recipe.model.init_adapter)] if recipe.model.init_adapter else [])]
    folder = RunFolder(Path(recipe.output.dir), overwrite=recipe.output.overwrite, rank=rank,
                       tensorboard=recipe.output.tensorboard, inputs=inputs)
    splits = read_splits(recipe)
    identity = data_identity(splits)
    checkpoint = folder.checkpoint() if rank == 0 else None
    if checkpoint is not None:
        check_resume(checkpoint, recipe, identity)  # before the model loads: a wrong lr costs no minutes
    tokenizer, base = load_tokenizer_and_model(recipe, folder.tokenizer_source())
    identity.update(model_identity(recipe.model, tokenizer, base))
    if checkpoint is not None:
        check_resume(checkpoint, None, identity)
    train_rows, test_rows, data_report = tokenize_splits(recipe, tokenizer, splits)
    if rank == 0:
        print("\n".join(data_report_lines(data_path(recipe), data_report)), flush=True)
    check_drop_shares(recipe, data_report)
    if not train_rows:
        raise UftDataError(str(data_path(recipe)), "no training rows left after tokenization", got=data_report)
    folder.prepare(tokenizer if recipe.model.name == "tiny" else None)
    if rank == 0 and world > 1:
        dist.barrier()
    model = add_adapter(base, recipe, implicit_reward=losses.get_loss(recipe.loss.name).needs_reference).to(device)
    units = batching.make_units(train_rows, pairs_as_one_term=uses_pair_terms(recipe.loss))
    steps_per_epoch = len(batching.global_batches(train_rows, units, batch_size=recipe.train.batch_size,
                                                  seed=recipe.train.seed, epoch=0))
    total_steps = recipe.train.max_steps or recipe.train.epochs * steps_per_epoch
    optimizer = make_optimizer(model, recipe.optim)
    scheduler = make_scheduler(optimizer, recipe.optim, total_steps)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    run = Run(recipe, model, optimizer, scheduler, train_rows, test_rows, units, tokenizer.pad_token_id, device,
              rank, world, identity=identity)
    if recipe.loss.reference == "precompute" and run.spec.needs_reference:
        run.refs = reference_cache(run, recipe, folder.tokenizer_dir())
    start = 0
    checkpoint = latest_checkpoint(folder.path)  # every rank: rank 0 has checked it
    if checkpoint is not None:
        start = load_checkpoint(checkpoint, run)
        if rank == 0:
            print(f"resumed at step {start} of {total_steps} (checkpoint {checkpoint})", flush=True)
    folder.start(recipe_to_yaml(recipe), data_report, steps_per_epoch, total_steps, resumed_at=start)
    run_loop(run, folder, start, total_steps, steps_per_epoch)
    if world > 1:
        dist.barrier()  # every rank returns a finished run folder (rank 0 writes it)
    return folder.path


def run_loop(run: Run, folder, start: int, total_steps: int, steps_per_epoch: int) -> None:  # noqa: ANN001
    cfg = run.recipe.train
    schedule: dict[int, list[list[int]]] = {}
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
            raise UftDataError(f"step {step + 1}", "the loss is not finite", got=float(error.args[0]),
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

