"""The policy: a causal LM with a LoRA adapter; the reference is the same model with it disabled.

docs/design.md, "Reference = the policy at the start of the stage": first stages use the base model
with the adapter disabled (no second copy); second stages merge the stage-1 adapter into the base
weights in memory and train a fresh adapter on top. Dropout is off for implicit-reward losses, or
`r != 0` at step 0.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from uft_train.config import ModelConfig, Recipe
from uft_train.errors import TrainError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TINY_BASE_SEED = 0  # the tiny "base model" is the same whatever the training seed


def load_tokenizer_and_model(recipe: Recipe, tokenizer_dir: Path | None, *, device: torch.device | None = None,
                             ) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """The tokenizer and the base model (stage-1 adapter merged in, if any), before LoRA.

    The tiny model is built on `device` (None: the CPU), in `model.dtype` (`tiny.build_tiny_model`);
    a pretrained model is read to the CPU.

    The tiny model's tokenizer is read from `tokenizer_dir` (a run folder's; built and saved there if
    missing), or built in memory when it is None: a run saves it only once its checks have passed.
    A model that cannot be loaded is a `TrainError` naming `model.name`, never a traceback."""
    cfg = recipe.model
    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    if cfg.name == "tiny":
        from uft_train.tiny import build_tiny_model
        from uft_train.tokenizer import load_or_build_tokenizer, tiny_tokenizer

        tiny = cfg.tiny
        tokenizer = (tiny_tokenizer(tiny.tokenizer) if tokenizer_dir is None
                     else load_or_build_tokenizer(tokenizer_dir, tiny.tokenizer))
        check_attention(cfg, recipe.train.device)
        model = build_tiny_model(tokenizer, architecture=tiny.architecture, hidden_size=tiny.hidden_size,
                                 num_layers=tiny.num_layers, num_heads=tiny.num_heads, num_kv_heads=tiny.num_kv_heads,
                                 intermediate_size=tiny.intermediate_size,
                                 max_position_embeddings=tiny.max_position_embeddings, seed=TINY_BASE_SEED,
                                 attn_implementation=cfg.attn_implementation, device=device or "cpu",
                                 dtype=DTYPES[cfg.dtype])
    else:
        check_attention(cfg, recipe.train.device)
        tokenizer, model = load_pretrained(cfg)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # masks come from lengths, so pad may equal eos
    if cfg.init_adapter:
        with quiet_peft():
            model = PeftModel.from_pretrained(model, cfg.init_adapter).merge_and_unload()
    return tokenizer, model


def load_pretrained(cfg: ModelConfig) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and model of a Hub id or a local folder: safetensors weights only, and the repository's
    own code only with model.trust_remote_code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_local_model(cfg.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.name, revision=cfg.revision,
                                                  trust_remote_code=cfg.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            cfg.name, revision=cfg.revision, dtype=DTYPES[cfg.dtype], attn_implementation=cfg.attn_implementation,
            trust_remote_code=cfg.trust_remote_code, use_safetensors=True,
        )
    except (OSError, ValueError) as error:  # huggingface_hub's errors are OSErrors; "unrecognized model" a ValueError
        raise unloadable(cfg.name, error) from None
    return tokenizer, model


# The module each flash attention imports, and the pip package that installs it; without it,
# transformers falls back to the `kernels` package (which fetches a prebuilt kernel from the Hub).
FLASH_PACKAGES = {"flash_attention_2": ("flash_attn", "flash-attn"),
                  "flash_attention_3": ("flash_attn_interface", "flash-attn-3")}


def check_attention(cfg: ModelConfig, device: str) -> None:
    """A flash `model.attn_implementation` on a device or an install it cannot run on: one line
    naming the key and the fix, before any model is built (transformers' own error is an ImportError
    traceback, after the weights are read). `device` is `train.device`; `auto` is CUDA when present."""
    implementation = cfg.attn_implementation
    if implementation not in FLASH_PACKAGES:
        return
    where = f"model.attn_implementation: {implementation}"
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not on_cuda:
        raise TrainError(where, f"flash attention runs on CUDA GPUs only, and this run is on {device}",
                         fix="Set model.attn_implementation=sdpa (the default), or train on a CUDA GPU.")
    module, package = FLASH_PACKAGES[implementation]
    if importlib.util.find_spec(module) is None and importlib.util.find_spec("kernels") is None:
        raise TrainError(where, f"needs the {package} package (or kernels), and neither is installed",
                         fix=f"pip install {package} (or kernels), or set model.attn_implementation=sdpa.")


def check_local_model(name: str) -> None:
    """A `model.name` that is (or can only be) a local folder: it exists, with config.json and safetensors.

    A Hub id is `name` or `owner/name`; anything else (absolute, `./`, `~`, deeper) is a path, and so is
    an existing folder: transformers reads those without asking the Hub."""
    path = Path(name).expanduser()
    where = f"model.name: {name}"
    if not path.exists():
        if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1:
            raise TrainError(where, "no such folder",
                               fix="Point model.name at a model folder (config.json, *.safetensors, tokenizer "
                                   "files) or a Hub id.")
        return  # a Hub id
    if not path.is_dir():
        raise TrainError(where, "is a file, not a model folder",
                           fix="Point model.name at the folder that holds config.json and the *.safetensors weights.")
    if not (path / "config.json").is_file():
        raise TrainError(where, "has no config.json: it is not a saved model",
                           fix="Point model.name at a folder written by save_pretrained (or `uft-train export`).")
    if not any(path.glob("*.safetensors")):
        raise TrainError(where, "has no *.safetensors weights (uft-train loads safetensors only, never pickles)",
                           fix="Convert the weights to safetensors (save_pretrained(..., safe_serialization=True)).")


def unloadable(name: str, error: Exception) -> TrainError:
    """The one line for a Hub id transformers could not load: offline, unreachable, unknown or unusable."""
    text = " ".join(str(error).split())
    where = f"model.name: {name}"
    offline = "HF_HUB_OFFLINE=1 (and a local folder as model.name, or the model already in the Hugging Face cache)"
    from huggingface_hub import constants  # HF_HUB_OFFLINE as read when huggingface_hub was imported

    if constants.HF_HUB_OFFLINE:
        return TrainError(where, "is not in the local Hugging Face cache and HF_HUB_OFFLINE forbids downloading it",
                            fix=f"Download it once where there is network (hf download {name}), or set "
                                "model.name to a local folder.")
    if "safetensors" in text:
        return TrainError(where, "has no safetensors weights (uft-train loads safetensors only, never pickles)",
                            fix="Choose a revision or repository with *.safetensors weights.")
    if "connect" in text or "offline" in text:
        return TrainError(where, "cannot be downloaded: the Hugging Face Hub is not reachable",
                            fix=f"Check the network, or work offline: {offline}.")
    return TrainError(where, f"cannot be loaded ({text[:200]})",
                        fix=f"Check the Hub id (and model.revision) or the folder; to work offline: {offline}.")


@contextmanager
def quiet_peft() -> Iterator[None]:
    """peft reads a property transformers 5 deprecated (a FutureWarning per model); not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def add_adapter(model: PreTrainedModel, recipe: Recipe, *, implicit_reward: bool) -> PeftModel:
    """`model` with a fresh LoRA adapter; with `implicit_reward` (the loss has a reference) every
    dropout off, the adapter's and the base's (`disable_dropout`).

    Done here, once the model is loaded and the adapter added (peft's modules exist) and before any
    reference log-prob, online or cached, is computed: the trainer builds the run's model only here.
    `sft` has no reference and keeps the base config's dropout (and `lora.dropout`)."""
    with quiet_peft():
        peft_model = get_peft_model(model, lora_config(recipe, implicit_reward=implicit_reward))
    if implicit_reward:
        disable_dropout(peft_model)
    if recipe.model.gradient_checkpointing:
        peft_model.gradient_checkpointing_enable()
        peft_model.enable_input_require_grads()
    return peft_model


def lora_config(recipe: Recipe, *, implicit_reward: bool) -> PeftLoraConfig:
    lora = recipe.lora
    return PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, target_modules=list(lora.targets), bias="none", task_type="CAUSAL_LM",
        lora_dropout=0.0 if implicit_reward else lora.dropout,
    )


def disable_dropout(model: torch.nn.Module) -> None:
    """Every dropout of `model` set to 0: `nn.Dropout` modules, the dropout probabilities modules keep
    as attributes (Llama's attention reads `self.attention_dropout` in train mode) and those of its
    configs, as TRL's `disable_dropout_in_model` does for the modules.

    Losses with a reference need it: the policy and the online reference run in train mode and the
    cached reference in eval mode, so any dropout left on makes the implicit reward nonzero at step 0
    and the two references disagree. Mistral, Qwen2 and Llama configs ship 0.0; other bases may not.
    The config is changed in memory only: a run's checkpoints fingerprint the base before the
    adapter is added (`model_identity`), and `uft-train export` reloads the base as it ships."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        _zero_dropouts(module)
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig):
            _zero_config_dropouts(config)


def _zero_config_dropouts(config: PretrainedConfig) -> None:
    """A config's dropouts and its sub-configs' (a multimodal model's `text_config`, ...)."""
    _zero_dropouts(config)
    for value in list(vars(config).values()):
        if isinstance(value, PretrainedConfig):
            _zero_config_dropouts(value)


def _zero_dropouts(holder: object) -> None:
    for name, value in list(vars(holder).items()):
        if _is_dropout(name, value):
            setattr(holder, name, 0.0)


DROPOUT_SUFFIXES = ("dropout", "_pdrop", "dropout_rate", "dropout_prob")  # attention_dropout, resid_pdrop, ...


def _is_dropout(name: str, value: object) -> bool:
    """A dropout probability by its name (Llama/Mistral/Qwen2 `attention_dropout`, GPT-2/Phi
    `resid_pdrop`, BERT `hidden_dropout_prob`, T5 `dropout_rate`) holding a nonzero number."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return name.endswith(DROPOUT_SUFFIXES) and numeric and value != 0


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DistributedDataParallel's `.module`, or `model` itself."""
    inner = getattr(model, "module", model)
    return inner if isinstance(inner, torch.nn.Module) else model


def reference(model: torch.nn.Module) -> AbstractContextManager:
    """Context in which `model` computes the reference: the adapter disabled."""
    inner = unwrapped(model)
    return inner.disable_adapter() if isinstance(inner, PeftModel) else nullcontext()


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    inner = unwrapped(model)
    base = inner.get_base_model() if isinstance(inner, PeftModel) else inner
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def model_fingerprint(recipe: Recipe, tokenizer_dir: Path) -> dict:
    """What identifies the reference model, for the reference-cache key."""
    cfg = recipe.model
    if cfg.name == "tiny":
        model_id = {"tiny": vars(cfg.tiny), "seed": TINY_BASE_SEED}
    else:
        model_id = {"name": cfg.name, "revision": cfg.revision}
    return {
        "model": model_id,
        "attn_implementation": cfg.attn_implementation,  # kernels round differently: r = 0 at step 0 needs the same
        "init_adapter": _folder_hash(Path(cfg.init_adapter)) if cfg.init_adapter else None,
        "dtype": cfg.dtype,
        "template": cfg.template,
        "tokenizer": _folder_hash(tokenizer_dir) if cfg.name == "tiny" else None,
    }


# A tensor's flattened first and last rows (enough for its first and last 64 values), for a tensor on
# the meta device whose values are elsewhere (`fsdp.file_ends`: in the model's files).
Ends = Callable[[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def model_identity(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel,
                   ends: Ends | None = None) -> dict[str, str]:
    """What a checkpoint records of the base model and tokenizer, beyond the recipe's model.* keys, so a
    resumed run knows it continues on the same ones: the Hub commit the weights came from, sha256s of
    the config, of the weights (`weights_sha256`), of the tokenizer (its full serialization, chat
    template and special tokens) and of the stage-1 adapter. `ends` reads the values of a model on
    the meta device."""
    config = {k: v for k, v in model.config.to_dict().items()
              if k not in ("transformers_version", "_commit_hash", "_name_or_path")}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    tokens = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    identity = {
        "model.commit": str(getattr(model.config, "_commit_hash", None)),
        "model.config_sha256": _sha256(json.dumps(config, sort_keys=True, default=str)),
        "model.weights_sha256": weights_sha256(model, ends),
        "model.tokenizer_sha256": _sha256(json.dumps([tokens, tokenizer.chat_template,
                                                      tokenizer.special_tokens_map], sort_keys=True, default=str)),
    }
    if cfg.init_adapter:
        identity["model.init_adapter_sha256"] = _folder_hash(Path(cfg.init_adapter))
    return identity


def weights_sha256(model: torch.nn.Module, ends: Ends | None = None) -> str:
    """sha256 of every state-dict tensor's name, dtype, shape and first and last 64 values, in the
    model's order (the whole weights would take minutes at 7B; a sample tells two checkpoints of one
    architecture apart). A tensor on the meta device is sampled through `ends`."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if tensor.is_meta and ends is not None:
            head, tail = ends(name, tensor)
        else:
            head = tail = tensor.detach().reshape(-1)
        sample = torch.cat([head[:64], tail[-64:]]).to(tensor.dtype).to("cpu", torch.float64).numpy()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(json.dumps(str(path.relative_to(folder))).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
