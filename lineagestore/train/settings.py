"""Training settings: defaults, ``[train]`` in config.toml, a config file, then flags (last wins)."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..core.errors import InvalidInput, MalformedFile, NotFound

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("linear", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")

#: settings that change the numbers a run produces; a resumed run must keep them
RESULT_KEYS = ("lr", "epochs", "batch_size", "seq_len", "grad_accum", "precision", "seed", "max_steps",
               "warmup_steps", "weight_decay", "scheduler", "max_grad_norm", "freeze", "packing",
               "adam_beta1", "adam_beta2", "adam_eps", "min_lr_ratio")


@dataclass
class TrainSettings:
    lr: float = 2e-5
    epochs: int = 1
    batch_size: int = 8
    seq_len: int = 512
    grad_accum: int = 1
    precision: str = "auto"  # auto: bf16 on a GPU that supports it, fp32 otherwise
    seed: int = 0
    max_steps: int | None = None
    checkpoint_every: int = 500  # optimizer steps; also on SIGTERM/SIGINT
    warmup_steps: int = 0
    weight_decay: float = 0.0
    scheduler: str = "linear"
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    freeze: list = field(default_factory=list)  # fnmatch patterns of parameter names not trained
    packing: bool = True  # concatenate examples and cut blocks of seq_len
    log_every: int = 10  # steps per entry of metrics["loss_per_interval"]
    device: str = "auto"
    gpus: int = 1
    deterministic: bool | None = None  # default: on for the CPU, off on a GPU
    gradient_checkpointing: bool = False

    def validate(self) -> "TrainSettings":
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise InvalidInput(f"invalid training setting: {msg}")
        need(self.lr > 0, f"lr must be > 0 (got {self.lr})")
        need(self.epochs >= 1, f"epochs must be >= 1 (got {self.epochs})")
        need(self.batch_size >= 1, f"batch_size must be >= 1 (got {self.batch_size})")
        need(self.seq_len >= 2, f"seq_len must be >= 2 (got {self.seq_len})")
        need(self.grad_accum >= 1, f"grad_accum must be >= 1 (got {self.grad_accum})")
        need(self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1 (got {self.max_steps})")
        need(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1 (got {self.checkpoint_every})")
        need(self.warmup_steps >= 0, "warmup_steps must be >= 0")
        need(self.log_every >= 1, "log_every must be >= 1")
        need(self.gpus >= 1, f"gpus must be >= 1 (got {self.gpus})")
        need(0 <= self.min_lr_ratio <= 1, "min_lr_ratio must be within [0, 1]")
        need(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        need(self.scheduler in SCHEDULERS, f"scheduler must be one of {', '.join(SCHEDULERS)} (got {self.scheduler!r})")
        need(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)} (got {self.device!r})")
        need(isinstance(self.freeze, list) and all(isinstance(x, str) for x in self.freeze),
             "freeze must be a list of name patterns")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def result_dict(self) -> dict:
        d = self.to_dict()
        return {k: d[k] for k in RESULT_KEYS}

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def build(cls, *layers: dict[str, Any] | None) -> "TrainSettings":
        """Defaults, then each layer in order (None values are skipped); validated."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for layer in layers:
            for k, v in (layer or {}).items():
                key = k.replace("-", "_")
                if key not in known:
                    raise InvalidInput(f"unknown training setting {k!r}",
                                       hint="known: " + ", ".join(sorted(known)))
                if v is None:
                    continue
                values[key] = _coerce(key, v, known[key].type)
        return cls(**values).validate()


def _coerce(key: str, v: Any, typ: Any) -> Any:
    t = str(typ)
    try:
        if key == "freeze":
            if isinstance(v, str):
                return [x.strip() for x in v.split(",") if x.strip()]
            return [str(x) for x in v]
        if key == "deterministic":
            return None if v is None else _bool(v)
        if t.startswith("bool"):
            return _bool(v)
        if t.startswith("int"):
            if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                raise ValueError
            return int(v)
        if t.startswith("float"):
            return float(v)
        if t.startswith("str"):
            return str(v)
    except (TypeError, ValueError):
        raise InvalidInput(f"invalid training setting {key}={v!r}") from None
    return v


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(v, str) and v.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(v)


#: keys of a config file that are not training settings
JOB_KEYS = ("base", "data", "output", "name", "run", "allow_overlap", "message")


def load_config_file(path: Path) -> tuple[dict, dict]:
    """A TOML or JSON file -> (training settings, job keys: base/data/output/...).

    Settings may sit at the top level or under ``[train]``.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{path}: no such config file") from None
    try:
        if path.suffix.lower() == ".json":
            doc = json.loads(raw)
        else:
            doc = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedFile(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'} ({e})") from None
    if not isinstance(doc, dict):
        raise MalformedFile(f"{path}: expected a table of settings")
    settings = dict(doc.pop("train", {}) or {})
    job = {}
    for k, v in doc.items():
        key = k.replace("-", "_")
        if key in JOB_KEYS:
            job[key] = v
        else:
            settings[k] = v
    return settings, job
