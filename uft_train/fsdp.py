"""FSDP2 (`train.parallel: fsdp` under torchrun): the model sharded over the processes (docs/design.md,
"Across GPUs").

`shard` applies `torch.distributed.fsdp.fully_shard` bottom-up: each decoder layer's LoRA modules as a
unit of their own (float32, the only trained parameters), then the layer's frozen base weights, then
the LM head as its own unit (the chunked log-probs call it outside the root forward: `unsharded`),
then the root (embeddings, final norm). Parameters are stored in their own dtype (the base in
`model.dtype`, LoRA in float32); where the run computes in bf16 (`step.bf16_autocast`) a
`MixedPrecisionPolicy` all-gathers in bf16 and reduces gradients in float32.

A pretrained base is built on the meta device (`meta_skeleton`) and every rank reads only its own
rows of each weight from the safetensors files (`load_local_rows`): a 32B model never exists whole
on one device or in one process's memory. The LoRA weights are drawn as a one-process run draws them
(`drawn_adapter`), so both start from the same adapter.

Checkpoints hold full tensors, as a one-process run's do: `trainable_state` and `optimizer_state`
gather them (every rank must call them), `load_trainable` and `load_optimizer` shard them again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TypeVar
from unittest import mock

import torch
import torch.distributed as dist
from peft import PeftConfig, PeftModel, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from uft_train.config import ModelConfig
from uft_train.errors import TrainError
from uft_train.model import Ends

WHERE = "train.parallel: fsdp"
T = TypeVar("T")


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def shard(model: PeftModel, device: torch.device, world: int, *, bf16: bool,
          weights: Path | None = None, adapter: Mapping[str, torch.Tensor] | None = None) -> PeftModel:
    """`model` sharded over `world` processes in place (see the module docstring). With `weights` (a
    folder of safetensors files) the model is on the meta device: its base is read from there, rank by
    rank, and its adapter from `adapter` (`drawn_adapter`)."""
    mesh = init_device_mesh(device.type, (world,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
    base = model.get_base_model()
    assert isinstance(base, PreTrainedModel)
    layer_types = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in base.modules() if type(m).__name__ in layer_types]
    if not layers:
        raise TrainError(WHERE, f"{type(base).__name__} does not name its decoder layers (_no_split_modules)",
                         fix="Use train.parallel=ddp for this model.")
    head = base.get_output_embeddings()
    blocks = [*layers, *([head] if isinstance(head, torch.nn.Module) and not _tied(base) else [])]
    for block in blocks:
        lora = lora_modules(block)
        if lora:
            fully_shard(lora, mesh=mesh, mp_policy=policy)
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    # FSDP fixes each unit's gradient dtypes from its parameters' requires_grad at its first forward.
    # peft's disable_adapter() turns LoRA's requires_grad off, and a run's first forward may be the
    # reference's (the precomputed cache): LoRA's bf16 gradients would then never be cast back to
    # float32. Initialising now (once the weights are in place), with the adapter on, fixes them as trained.
    if weights is not None:
        _materialize(model, device, weights, adapter or {})
    model._get_fsdp_state()._lazy_init()
    return model


def lora_modules(block: torch.nn.Module) -> list[torch.nn.Module]:
    """The LoRA A and B modules inside `block` (every adapter), in module order."""
    found: list[torch.nn.Module] = []
    for module in block.modules():
        if isinstance(module, LoraLayer):
            for name in module.active_adapters:
                found += [module.lora_A[name], module.lora_B[name]]
    return found


def _tied(base: PreTrainedModel) -> bool:
    head, embedding = base.get_output_embeddings(), base.get_input_embeddings()
    return head is not None and head.weight is embedding.weight


@contextmanager
def unsharded(head: torch.nn.Module, root: torch.nn.Module) -> Iterator[None]:
    """`head`'s weights whole while the chunked log-probs use them outside the root forward: its own
    unit is all-gathered, and resharded after. A head tied to the embeddings belongs to the root's
    unit, which FSDP keeps unsharded after the forward (gathered here should it not be)."""
    if not isinstance(head, FSDPModule):
        if isinstance(getattr(head, "weight", None), DTensor) and isinstance(root, FSDPModule):
            root.unshard()
        yield
        return
    head.unshard()
    try:
        yield
    finally:
        head.reshard()


# --- a pretrained base on the meta device, each rank reading its own rows -------------------------

@contextmanager
def meta_parameters() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device (no memory, no random draws) and
    their buffers where they are made: the non-persistent ones (rotary frequencies) are computed
    from the config, not read from the weights, so they must be real."""
    register = torch.nn.Module.register_parameter

    def on_meta(module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and not param.is_meta:  # one already there is kept: tied weights stay one object
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    with mock.patch.object(torch.nn.Module, "register_parameter", on_meta):
        yield


def drawn_adapter(model: PeftModel, config: PeftConfig, rng_before: torch.Tensor) -> dict[str, torch.Tensor]:
    """The LoRA weights a one-process run draws, for `model`, whose base (and so, as peft places an
    adapter on its base's device, whose adapter) is on the meta device.

    peft draws each adapter on the CPU from the global generator, then moves it to its base layer's
    device: here that loses the values. They are drawn again, from the generator's state before
    `get_peft_model` (`rng_before`), into a stand-in of the base made of its linear layers only, each
    weight one zero broadcast to its shape (no memory), with the same names, shapes and dtype. The
    generator must end where `get_peft_model` left it: the same draws, in the same order."""
    rng_after = torch.get_rng_state()
    stand_in = torch.nn.Module()
    tuners: list[str] = []
    for name, module in model.get_base_model().named_modules():
        if any(name.startswith(f"{tuner}.") for tuner in tuners):
            continue  # the adapter's own modules and the wrapped base layer
        if isinstance(module, BaseTunerLayer):
            tuners.append(name)
            _set_module(stand_in, name, _zero_linear(module.get_base_layer()))
        elif isinstance(module, torch.nn.Linear):
            _set_module(stand_in, name, _zero_linear(module))
    torch.set_rng_state(rng_before)
    inject_adapter_in_model(config, stand_in)
    if not torch.equal(torch.get_rng_state(), rng_after):
        raise TrainError(WHERE, "cannot draw the adapter as a one-process run draws it (this peft version draws "
                         "differently)", fix="Use train.parallel=ddp, or the peft version in constraints.txt.")
    drawn = {f"base_model.model.{name}": p.detach().to(torch.float32) for name, p in stand_in.named_parameters()
             if "lora_" in name}
    missing = {n for n, p in model.named_parameters() if p.requires_grad} - set(drawn)
    if missing:
        raise TrainError(WHERE, f"the adapter has weights the stand-in lacks ({sorted(missing)[0]}, ...)",
                         fix="Use train.parallel=ddp for this model.")
    return drawn


def _zero_linear(layer: torch.nn.Module) -> torch.nn.Linear:
    assert isinstance(layer, torch.nn.Linear)
    stand_in = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
    for name, param in layer.named_parameters(recurse=False):
        zero = torch.zeros((), dtype=param.dtype).expand(param.shape)
        setattr(stand_in, name, torch.nn.Parameter(zero, requires_grad=False))
    return stand_in


def _set_module(root: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    *path, last = name.split(".")
    parent = root
    for part in path:
        if not hasattr(parent, part):
            parent.add_module(part, torch.nn.Module())
        parent = getattr(parent, part)
    parent.add_module(last, module)


def weight_files(folder: Path) -> dict[str, Path]:
    """Each tensor name of a safetensors model folder and the file holding it."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        mapping = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {name: folder / file for name, file in mapping.items()}
    found: dict[str, Path] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            found.update((name, file) for name in f.keys())
    return found


def checkpoint_name(parameter: str) -> str:
    """A peft-wrapped model's parameter name as the base model's checkpoint names it."""
    return parameter.removeprefix("base_model.model.").replace(".base_layer.", ".")


def _materialize(model: PeftModel, device: torch.device, folder: Path, adapter: Mapping[str, torch.Tensor]) -> None:
    """The sharded meta model on `device`: buffers kept, LoRA weights from `adapter` (full, CPU), every
    other weight's local rows read from `folder`."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    model.to_empty(device=device)
    files = weight_files(folder)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
        for name, param in model.named_parameters():
            if name in adapter:
                param.copy_(_like(adapter[name], param))
                continue
            key = checkpoint_name(name)
            if key not in files:
                raise TrainError(WHERE, f"the weights of {folder} have no tensor {key}",
                                 fix="Use train.parallel=ddp for this model.")
            load_local_rows(param, files[key], key)


def load_local_rows(param: torch.Tensor, file: Path, key: str) -> None:
    """This rank's rows of a dim-0 sharded parameter (torch.chunk's split, FSDP2's), read from `file`."""
    local = param.to_local() if isinstance(param, DTensor) else param
    rows = param.shape[0] if param.dim() else 1
    if isinstance(param, DTensor):
        size = math.ceil(rows / param.device_mesh.size())
        start = min(param.device_mesh.get_local_rank() * size, rows)
    else:
        start = 0
    if local.numel() == 0:
        return
    with safe_open(str(file), framework="pt") as f:
        stored = f.get_slice(key)
        shape = tuple(stored.get_shape())
        part = stored[start:start + local.shape[0]] if param.dim() else stored[:]
    if shape != tuple(param.shape):
        raise TrainError(WHERE, f"{key} in {file} has shape {shape}, the model's {tuple(param.shape)}",
                         fix="Check that model.name's config matches its weights.")
    local.copy_(part.to(local.dtype))


# --- checkpoints: full tensors in, full tensors out -----------------------------------------------

def _like(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """`full` placed as `param` is: this rank's shard of it when `param` is sharded."""
    full = full.to(param.device, param.dtype)
    if isinstance(param, DTensor):
        return distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
    return full


def full(value: T) -> T:
    """A sharded tensor whole, on the CPU (collective); anything else as it is."""
    return value.full_tensor().cpu() if isinstance(value, DTensor) else value  # type: ignore[return-value]


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every trained parameter, whole, on the CPU, by name (collective under FSDP: every rank calls it)."""
    return {name: full(p.detach()).cpu() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, saved: Mapping[str, torch.Tensor], adapter_name: str = "default") -> None:
    """Trained parameters from a saved peft adapter (keys without the adapter's name, as peft saves)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                key = name.replace(f".{adapter_name}.", ".")
                if key not in saved:
                    raise KeyError(f"the saved adapter has no {key}")
                param.copy_(_like(saved[key], param))


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """`optimizer.state_dict()` with every sharded tensor whole (collective under FSDP)."""
    state = optimizer.state_dict()
    state["state"] = {index: {key: full(value) for key, value in entry.items()}
                      for index, entry in state["state"].items()}
    return state


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """`optimizer_state`'s output loaded back: each whole tensor sharded as its parameter is."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {**state, "state": {index: {key: _like(value, params[index]) if _shaped_as(value, params[index]) else value
                                        for key, value in entry.items()}
                                for index, entry in state["state"].items()}}
    optimizer.load_state_dict(state)


def _shaped_as(value: object, param: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and isinstance(param, DTensor) and tuple(value.shape) == tuple(param.shape)


def gradient_sync(model: torch.nn.Module, *, last: bool) -> nullcontext[None]:
    """FSDP reduce-scatters gradients at the step's last micro-batch only."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(last)
    return nullcontext()


@contextmanager
def first_then_others(rank: int, world: int) -> Iterator[None]:
    """Rank 0 runs the body first (a download fills the cache), then the others (cache hits)."""
    if world > 1 and rank != 0:
        dist.barrier()
    yield
    if world > 1 and rank == 0:
        dist.barrier()


def pretrained_skeleton(cfg: ModelConfig, rank: int, world: int) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, Path]:
    """The tokenizer, the base model with its parameters on the meta device, and the folder of its
    safetensors weights (a Hub id's files are fetched once, by rank 0, into the Hugging Face cache)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from uft_train.model import DTYPES, check_local_model, unloadable

    if cfg.init_adapter:
        raise TrainError("model.init_adapter", "cannot be merged into a base sharded over processes",
                         fix="Merge it first (uft-train export STAGE1_RUN) and set model.name to that folder.")
    check_local_model(cfg.name)
    try:
        with first_then_others(rank, world):
            folder = Path(cfg.name).expanduser()
            if not folder.is_dir():
                from huggingface_hub import snapshot_download

                folder = Path(snapshot_download(cfg.name, revision=cfg.revision,
                                                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
        tokenizer = AutoTokenizer.from_pretrained(cfg.name, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
        config = AutoConfig.from_pretrained(cfg.name, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as error:
        raise unloadable(cfg.name, error) from None
    if not any(folder.glob("*.safetensors")):
        raise TrainError(f"model.name: {cfg.name}", "has no *.safetensors weights (uft-train loads safetensors only)",
                         fix="Choose a revision or repository with *.safetensors weights.")
    with meta_parameters():
        model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[cfg.dtype],
                                                 attn_implementation=cfg.attn_implementation,
                                                 trust_remote_code=cfg.trust_remote_code)
    return tokenizer, model, folder


def file_ends(folder: Path) -> Ends:
    """`model.model_identity`'s sampler for a model on the meta device: each tensor's first and last
    rows read from `folder`'s files, so the fingerprint equals the same model's loaded whole. A tied
    weight is read under the name it was first met by (the one the files store)."""
    files = weight_files(folder)
    stored_as: dict[int, str] = {}

    def ends(name: str, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = stored_as.setdefault(id(tensor), name)
        if key not in files:
            raise TrainError(WHERE, f"the weights of {folder} have no tensor {key}",
                             fix="Use train.parallel=ddp for this model.")
        return _ends(files[key], key)

    return ends


def _ends(file: Path, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A stored tensor's first and last rows, flattened: enough to hold its first and last 64 values."""
    with safe_open(str(file), framework="pt") as f:
        stored = f.get_slice(key)
        shape = list(stored.get_shape())
        if not shape:
            whole = f.get_tensor(key).reshape(-1)
            return whole, whole
        rows = min(shape[0], math.ceil(64 / max(1, math.prod(shape[1:]))))
        return stored[:rows].reshape(-1), stored[shape[0] - rows:].reshape(-1)
