"""The model being trained: device and precision, building it from the store, the loss, the
parameters the optimizer trains and the learning-rate schedule.

Shared by training (:mod:`~lineagestore.train.trainer`) and the plan's speed measurement
(:mod:`~lineagestore.train.estimate`), so that both compute the same thing.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path

from ..core.errors import CorruptObject, InvalidInput
from ..core.repo import Repo
from ..data.tokens import loader_error
from . import distributed as D
from .dataset import IGNORE
from .job import quiet, train_cache
from .modelio import load_weights, materialize, tree_weight_summary
from .settings import TrainSettings

__all__ = ["build_model", "compute_loss", "device_label", "lr_lambda", "param_groups", "resolve_device",
           "resolve_precision", "save_dtype", "schedule_lambda"]


def resolve_device(setting: str, dist: D.Dist):
    import torch
    if setting == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device(f"cuda:{dist.local_rank}")
    if setting == "cuda":
        raise InvalidInput("--device cuda: no GPU found", hint="train on the CPU with --device cpu")
    return torch.device("cpu")


def device_label(device, dist: D.Dist) -> str:
    """``cuda: NAME x2`` or ``cpu x2 processes``, as the version's metrics name where it trained."""
    if device.type == "cuda":
        import torch
        name = torch.cuda.get_device_name(device)
        return f"cuda: {name}" + (f" x{dist.world}" if dist.world > 1 else "")
    return "cpu" + (f" x{dist.world} processes" if dist.world > 1 else "")


def resolve_precision(setting: str, device) -> str:
    """fp32 | bf16 | fp16: ``auto`` is bf16 on a GPU that supports it, fp32 otherwise."""
    import torch
    if setting == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if setting == "fp16" and device.type != "cuda":
        raise InvalidInput("fp16 needs a GPU (its loss scaling is CUDA-only); use bf16 or fp32 on the CPU")
    return setting


def _autocast(device, precision: str):
    import torch
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def compute_loss(model, batch: dict, device, precision: str, denominator: int):
    """(loss to backpropagate = summed token cross-entropy / denominator, the summed cross-entropy)."""
    import torch
    import torch.nn.functional as F
    ids = torch.from_numpy(batch["input_ids"]).to(device)
    att = torch.from_numpy(batch["attention_mask"]).to(device)
    labels = torch.from_numpy(batch["labels"]).to(device)
    with _autocast(device, precision):
        logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits
    logits = logits[:, :-1, :].float()
    target = labels[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                         ignore_index=IGNORE, reduction="sum")
    return ce / denominator, ce


def build_model(repo: Repo, base_tree: str, meta_dir: Path | None, device, s: TrainSettings, *, version: str):
    """The base model in fp32 (master weights), built from its config and filled from the store.

    Weights go from the store into memory without a copy of the model on disk; for architectures
    whose stored names differ from the module names it falls back to ``from_pretrained`` on a
    checked-out folder. ``version`` names the base in errors.
    """
    import torch
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    if meta_dir is None:
        meta_dir = materialize(repo.objects, base_tree, train_cache(repo) / f"meta-{base_tree[:24]}", weights=False)
    with quiet():
        try:
            config = AutoConfig.from_pretrained(str(meta_dir))
            with torch.random.fork_rng(devices=[]):
                model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        # an unknown model_type, a config no causal LM is built from, a value of the wrong type
        except (ValueError, StrictDataclassError) as e:
            raise InvalidInput(f"cannot build the model of {version} from its config.json: {loader_error(e)}",
                               hint="its config.json must describe a causal LM this version of transformers "
                                    "knows") from None
        try:
            load_weights(repo.objects, base_tree, model)
        except CorruptObject:
            folder = materialize(repo.objects, base_tree, train_cache(repo) / f"base-{base_tree[:24]}")
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        if (meta_dir / "generation_config.json").is_file():
            try:
                model.generation_config = GenerationConfig.from_pretrained(str(meta_dir))
            except (OSError, ValueError):
                pass
    if s.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model.to(device)


def param_groups(model, s: TrainSettings) -> tuple[list[dict], list[str]]:
    """Trainable parameters (not frozen by pattern) in two groups: with and without weight decay."""
    decay: list = []
    no_decay: list = []
    names: list[str] = []
    for name, p in model.named_parameters():
        if any(fnmatch(name, pat) for pat in s.freeze):
            p.requires_grad_(False)
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
        names.append(name)
    if not names:
        raise InvalidInput("every parameter is frozen: nothing to train", hint="check the --freeze patterns")
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]], names


def schedule_lambda(s: TrainSettings, schedule) -> Callable[[int], float]:
    """:func:`lr_lambda` on the clock of the run as it started (a :class:`.course.Schedule`, which
    a resumed run changes in place before the first step)."""
    def f(step: int) -> float:
        return lr_lambda(s, schedule.total)(schedule.at(step))
    return f


def lr_lambda(s: TrainSettings, total: int) -> Callable[[int], float]:
    """The learning rate's factor at each step: linear warm-up, then constant, cosine or linear to ``min_lr_ratio``."""
    warm = s.warmup_steps
    floor = s.min_lr_ratio

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if s.scheduler == "constant" or total <= warm:
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        if s.scheduler == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return floor + (1 - floor) * (1 - progress)
    return f


def save_dtype(repo: Repo, base_tree: str):
    """The dtype the base stores its weights in (the new version keeps it)."""
    import torch
    main = tree_weight_summary(repo.objects, base_tree)["dtype"]
    return {"BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}.get(main, torch.float32)
