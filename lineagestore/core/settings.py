"""Every setting lin reads: the keys of ``.lineage/config.toml``, typed and checked once, and the
environment variables it looks at.

:class:`Settings` is built when a store is opened (:meth:`Config.load`) and again whenever a key
is written (:meth:`Config.set`); code reads it (``repo.settings.core.workers``), never the TOML.
Each key's default, type and bounds are declared once, on its field below. A bad value is one
:class:`InvalidInput` line naming the file and the key; an unknown key is a warning (kept in
``Settings.warnings``; the CLI shows them once). :class:`Config` stays the writable view of the
file: it keeps what the user wrote, unknown keys included, and writes it back.

The environment variables lin reads are listed, and read, in :mod:`.environment`: one table says
what outside the file changes what lin does.
"""

from __future__ import annotations

import copy
import math
import re
import tomllib
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tomli_w

from .codecs import DEFAULT_MAX_DEPTH, DEFAULT_MIN_SAVING
from .environment import env_number
from .errors import InvalidInput
from .names import check_name
from .objects import COMPRESSION_MODES, DEFAULT_COMPRESSION, DEFAULT_LEVEL

# ----------------------------------------------------------------------------- durations

DAY = 86400.0
#: the shortest grace period gc accepts other than an explicit ``--grace 0``
MIN_GRACE_S = 3600.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": DAY, "w": 7 * DAY}


def parse_duration(text: str | float | int) -> float:
    """``14`` (days), ``14d``, ``12h``, ``30m``, ``45s``, ``2w`` -> seconds (finite, >= 0)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), "d"
        if not math.isfinite(value) or value < 0:
            raise InvalidInput(f"invalid duration {text!r}: must be a finite number >= 0")
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text))
        if not m:
            raise InvalidInput(f"invalid duration {text!r}: use a number of days or e.g. 12h, 30m, 2w")
        value, unit = float(m.group(1)), m.group(2) or "d"
    return value * _UNITS[unit]


def parse_grace(text: str | float | int) -> float:
    """A grace period given for one gc run: 0 (explicitly), or at least an hour."""
    seconds = parse_duration(text)
    if 0 < seconds < MIN_GRACE_S:
        raise InvalidInput(f"grace period {text!r} is under an hour: give at least 1h, or 0 explicitly")
    return seconds


# ----------------------------------------------------------------------------- one key's rule

ZSTD_LEVELS = (-131072, 22)  # zstd's fastest (negative) to its strongest level


@dataclass(frozen=True)
class Rule:
    """What a key accepts. ``kind``: str, choice, bool, int, number, duration, names (a list)."""

    kind: str
    low: float | None = None  # value >= low
    high: float | None = None  # value <= high
    above: float | None = None  # value > above
    below: float | None = None  # value < below
    choices: tuple[str, ...] = ()
    nonempty: bool = False
    optional: bool = False  # None means "not set" (training settings only)


def key(default: Any, kind: str, **rule: Any) -> Any:
    """A settings field: its default and its :class:`Rule`."""
    meta = {"rule": Rule(kind, **rule)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


class BadValue(ValueError):
    """A value its rule refuses; the text says why (e.g. ``must be >= 0``)."""


def check_value(value: Any, rule: Rule, *, lenient: bool = False) -> Any:
    """The value, checked (and for ints, floats of whole numbers made ints); raises BadValue.

    ``lenient`` (training settings from flags and config files) also takes numbers and booleans
    written as strings, and a comma-separated string for a list.
    """
    if value is None and rule.optional:
        return None
    k = rule.kind
    if k in ("str", "choice"):
        if not isinstance(value, str):
            raise BadValue("must be a string")
        if rule.nonempty and not value.strip():
            raise BadValue("must not be empty")
        if k == "choice" and value not in rule.choices:
            raise BadValue(f"is not one of {', '.join(rule.choices)}")
        return value
    if k == "bool":
        return _bool(value, lenient)
    if k == "names":
        return _names(value, lenient)
    if k == "duration":
        return _duration(value, rule)
    return _bounded(_number(value, k == "int", lenient), rule)


def _bool(value: Any, lenient: bool) -> bool:
    if isinstance(value, bool):
        return value
    if lenient and isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise BadValue("must be true or false")


def _names(value: Any, lenient: bool) -> list[str]:
    if lenient and isinstance(value, str):
        return [x.strip() for x in value.split(",") if x.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
        raise BadValue("must be a list of strings")
    return list(value)


def _number(value: Any, whole: bool, lenient: bool) -> int | float:
    if isinstance(value, bool):
        raise BadValue("must be a number, not true/false")
    if lenient and isinstance(value, str):
        try:
            value = float(value) if not re.fullmatch(r"\s*[-+]?\d+\s*", value) else int(value)
        except ValueError:
            raise BadValue("must be a number") from None
    if not isinstance(value, (int, float)):
        raise BadValue("must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadValue("must be a finite number")
    if whole:
        if isinstance(value, float) and not value.is_integer():
            raise BadValue("must be a whole number")
        return int(value)
    return float(value)


def _bounded(value: int | float, rule: Rule) -> int | float:
    if rule.low is not None and value < rule.low:
        raise BadValue(f"must be >= {rule.low:g}")
    if rule.high is not None and value > rule.high:
        raise BadValue(f"must be <= {rule.high:g}")
    if rule.above is not None and value <= rule.above:
        raise BadValue(f"must be > {rule.above:g}")
    if rule.below is not None and value >= rule.below:
        raise BadValue(f"must be < {rule.below:g}")
    return value


def _duration(value: Any, rule: Rule) -> int | float | str:
    """A duration keeps the form it was written in (days, or ``"12h"``); ``rule.low`` is in seconds."""
    written: int | float | str = value  # a str, or else a number (_number checks it below)
    if not isinstance(value, str):
        days = _number(value, False, False)
        if days < 0:
            raise BadValue("must be >= 0")
    try:
        seconds = parse_duration(value)
    except InvalidInput:
        raise BadValue('must be a number of days or a duration such as "12h", "2w"') from None
    if rule.low is not None and seconds < rule.low:
        if seconds == 0:
            raise BadValue("must be > 0: a zero grace period is only accepted when given explicitly "
                           "(lin gc --grace 0)")
        raise BadValue("must be at least one hour (e.g. \"1h\", or 0.5 for half a day)")
    return written


def rule_of(f: Field[Any]) -> Rule:
    rule: Rule = f.metadata["rule"]  # every settings field is made by key()
    return rule


def show(value: Any) -> str:
    """A value as the error line shows it: TOML-like, one line, short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "(a table)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ----------------------------------------------------------------------------- the tables

@dataclass(frozen=True)
class CoreSettings:
    work_dir: str = key("model", "str", nonempty=True)  # relative to the folder holding .lineage/
    compression: str = key(DEFAULT_COMPRESSION, "choice", choices=COMPRESSION_MODES)
    compression_level: int = key(DEFAULT_LEVEL, "int", low=ZSTD_LEVELS[0], high=ZSTD_LEVELS[1])
    lock_timeout: float = key(300, "number", low=0)  # seconds; LIN_LOCK_TIMEOUT overrides
    workers: int = key(0, "int", low=0)  # threads for hashing/compression/checkout; 0: two per core
    # a byte-plane or delta encoding (and each plane of it) is kept only if it saves this share
    codec_min_saving: float = key(DEFAULT_MIN_SAVING, "number", low=0, below=1)
    delta_max_depth: int = key(DEFAULT_MAX_DEPTH, "int", low=1, high=1000)  # deltas a read follows
    hot_versions: int = key(3, "int", low=1)  # last versions of each branch lin repack keeps loose and raw
    keyframe_interval: int = key(10, "int", low=1, high=1000)  # every Nth version of a branch packed whole
    # 0: off; N: weights of versions older than the last N of each branch may leave once the backup remote holds them
    local_versions: int = key(0, "int", low=0)


@dataclass(frozen=True)
class GcSettings:
    grace_days: float | str = key(14, "duration", low=MIN_GRACE_S)  # days, or "12h", "2w"
    reflog_expire_days: float | str = key(90, "duration", low=0)

    @property
    def grace_s(self) -> float:
        return parse_duration(self.grace_days)

    @property
    def reflog_expire_s(self) -> float:
        return parse_duration(self.reflog_expire_days)


@dataclass(frozen=True)
class DataSettings:
    overlap_threshold: float = key(0.01, "number", low=0, high=1)  # share of records already trained
    max_record_bytes: int = key(64 << 20, "int", low=1)  # longest line of a data file `lin data add` reads


@dataclass(frozen=True)
class GoalSettings:
    tokens: int = key(1_000_000_000_000, "int", low=1)  # `lin progress` goal


@dataclass(frozen=True)
class BackupSettings:
    remote: str = key("", "str")  # name of the remote every commit is pushed to; "" for none


@dataclass(frozen=True)
class RemoteSettings:
    """``[remote.NAME]``: where a remote is (never how to log in)."""

    url: str = key("", "str", nonempty=True)  # s3://bucket/prefix or an absolute folder
    endpoint_url: str = key("", "str")  # http(s)://host[:port] of an S3-compatible server
    region: str = key("", "str")
    # what a push sends: "small" (tensor pieces as deltas against the parent version's the remote
    # holds), "fast" (as stored here), "" (small for S3, fast for a folder)
    transfer: str = key("", "choice", choices=("", "small", "fast"))


@dataclass(frozen=True)
class TrainTable:
    """``[train]``: the store's defaults of any training setting, and keys of its own."""

    disk_margin: float = key(0.2, "number", low=0)  # margin of the plan's disk check
    checkpoint_compression_level: int = key(-5, "int", low=ZSTD_LEVELS[0], high=ZSTD_LEVELS[1])
    keep_checkpoints: int = key(2, "int", low=1)  # checkpoints gc keeps of a run in progress
    checkpoint_share_warn: float = key(0.5, "number", low=0, high=1)  # doctor: share of the store
    #: training settings set here (checked; see :class:`TrainSettings`), the layer after defaults
    defaults: dict[str, Any] = field(default_factory=dict)


def check_endpoint(endpoint: str | None) -> str | None:
    """An S3 endpoint: ``http(s)://host[:port]``, never with credentials; None for none."""
    if not endpoint:
        return None
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"endpoint URL {endpoint!r}: expected http(s)://host[:port]")
    if parts.username or parts.password or "@" in parts.netloc:
        raise InvalidInput(f"endpoint URL {endpoint!r}: credentials are not allowed in it",
                           hint="credentials come from the AWS environment or profile and are never stored")
    return endpoint.rstrip("/")


# ----------------------------------------------------------------------------- training settings

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("linear", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
#: settings that change the numbers a run produces; a resumed run must keep them
RESULT_KEYS = ("lr", "epochs", "batch_size", "seq_len", "grad_accum", "precision", "seed", "max_steps",
               "warmup_steps", "weight_decay", "scheduler", "max_grad_norm", "freeze", "packing",
               "adam_beta1", "adam_beta2", "adam_eps", "min_lr_ratio")


@dataclass
class TrainSettings:
    """The settings of one training run (docs/training.md): defaults, ``[train]`` in
    config.toml, a config file, then flags. Here rather than in ``train`` because config.toml's
    ``[train]`` table is checked when the store is opened."""

    lr: float = key(2e-5, "number", above=0)
    epochs: int = key(1, "int", low=1)
    batch_size: int = key(8, "int", low=1)
    seq_len: int = key(512, "int", low=2)
    grad_accum: int = key(1, "int", low=1)
    precision: str = key("auto", "choice", choices=PRECISIONS)  # auto: bf16 on a GPU that has it
    seed: int = key(0, "int", low=0)
    max_steps: int | None = key(None, "int", low=1, optional=True)
    checkpoint_every: int = key(500, "int", low=1)  # optimizer steps; also on SIGTERM/SIGINT
    warmup_steps: int = key(0, "int", low=0)
    weight_decay: float = key(0.0, "number", low=0)
    scheduler: str = key("linear", "choice", choices=SCHEDULERS)
    min_lr_ratio: float = key(0.0, "number", low=0, high=1)
    max_grad_norm: float = key(1.0, "number", low=0)  # 0: no clipping
    adam_beta1: float = key(0.9, "number", low=0, below=1)
    adam_beta2: float = key(0.999, "number", low=0, below=1)
    adam_eps: float = key(1e-8, "number", low=0)
    freeze: list[str] = key([], "names")  # fnmatch patterns of parameter names not trained
    packing: bool = key(True, "bool")  # concatenate examples and cut blocks of seq_len
    log_every: int = key(10, "int", low=1)  # steps per entry of metrics["loss_per_interval"]
    device: str = key("auto", "choice", choices=DEVICES)
    gpus: int = key(1, "int", low=1)
    deterministic: bool | None = key(None, "bool", optional=True)  # default: on for the CPU, off on a GPU
    gradient_checkpointing: bool = key(False, "bool")
    eval_every: int = key(0, "int", low=0)  # optimizer steps between evaluations; 0: at the end only

    def validate(self) -> TrainSettings:
        for f in fields(self):
            v = getattr(self, f.name)
            try:
                check_value(v, rule_of(f))
            except BadValue as e:
                raise InvalidInput(f"invalid training setting: {f.name} = {show(v)} {e}") from None
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def result_dict(self) -> dict[str, Any]:
        d = self.to_dict()
        return {k: d[k] for k in RESULT_KEYS}

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def check_layer(cls, layer: dict[str, Any] | None,
                    where: str = "invalid training setting: ") -> dict[str, Any]:
        """One layer of settings (``-`` may stand for ``_``; None values are left out), each value
        checked and converted; an unknown name or a bad value is one InvalidInput line."""
        known = {f.name: f for f in fields(cls)}
        out: dict[str, Any] = {}
        for k, v in (layer or {}).items():
            name = k.replace("-", "_")
            if name not in known:
                raise InvalidInput(f"unknown training setting {k!r}", hint="known: " + ", ".join(sorted(known)))
            if v is None:
                continue
            try:
                out[name] = check_value(v, rule_of(known[name]), lenient=True)
            except BadValue as e:
                raise InvalidInput(f"{where}{k} = {show(v)} {e}") from None
        return out

    @classmethod
    def build(cls, *layers: dict[str, Any] | None) -> TrainSettings:
        """Defaults, then each layer in order (None values are skipped); validated."""
        values: dict[str, Any] = {}
        for layer in layers:
            values.update(cls.check_layer(layer))
        return cls(**values).validate()


# ----------------------------------------------------------------------------- the whole file

@dataclass(frozen=True)
class RunSettings:
    """``[run]``: the training loop of ``lin run`` (docs/continuous.md)."""

    retries: int = key(2, "int", low=0)  # tries again from the last checkpoint before a file is parked
    max_loss_ratio: float = key(10.0, "number", above=1)  # a step's loss above this x the first step's fails
    inbox_settle_s: float = key(10.0, "number", low=0)  # an inbox file unchanged this long is complete
    inbox_poll_s: float = key(2.0, "number", above=0)  # seconds between looks at the inbox
    paused_recheck_s: float = key(300.0, "number", above=0)  # with --inbox: a paused queue is retried this often


@dataclass(frozen=True)
class EvalSettings:
    """``[eval]``: how the evaluation set is measured (docs/dashboard.md)."""

    seq_len: int = key(1024, "int", low=2)  # tokens of each example measured (longer ones are cut)
    batch_size: int = key(8, "int", low=1)  # examples per forward pass


_TABLES: dict[str, type] = {"core": CoreSettings, "gc": GcSettings, "data": DataSettings,
                            "goal": GoalSettings, "backup": BackupSettings, "run": RunSettings,
                            "eval": EvalSettings}
_TRAIN_OWN = tuple(f.name for f in fields(TrainTable) if f.name != "defaults")  # the rest: TrainSettings


@dataclass(frozen=True)
class Settings:
    """``config.toml``, typed: ``settings.core.workers``, ``settings.remotes["origin"].url``."""

    core: CoreSettings = field(default_factory=CoreSettings)
    gc: GcSettings = field(default_factory=GcSettings)
    data: DataSettings = field(default_factory=DataSettings)
    goal: GoalSettings = field(default_factory=GoalSettings)
    backup: BackupSettings = field(default_factory=BackupSettings)
    train: TrainTable = field(default_factory=TrainTable)
    run: RunSettings = field(default_factory=RunSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    remotes: dict[str, RemoteSettings] = field(default_factory=dict)  # by name, sorted
    #: unknown keys and ignored tables, one line each, naming the file
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_toml(cls, doc: dict[str, Any], path: Path | str | None = None) -> Settings:
        """Check a parsed config.toml; a bad value raises one InvalidInput line naming file and key."""
        reader = _Reader(str(path or "config.toml"))
        tables: dict[str, Any] = {}
        for name, raw in doc.items():
            if name in _TABLES:
                tables[name] = reader.table(_TABLES[name], raw, name)
            elif name == "train":
                tables[name] = reader.train(raw)
            elif name == "remote":
                tables["remotes"] = reader.remotes(raw)
            else:
                what = f"table [{name}]" if isinstance(raw, dict) else f"key {name}"
                reader.warnings.append(f"{reader.where}: unknown {what} (ignored)")
        return cls(**tables, warnings=tuple(reader.warnings))

    def to_toml(self, *, every_key: bool = False) -> dict[str, Any]:
        """The TOML document of these settings: the keys that differ from the defaults (or all)."""
        doc: dict[str, Any] = {}
        for name in _TABLES:
            doc[name] = _table_toml(getattr(self, name), every_key)
        train = _table_toml(self.train, every_key)
        train.pop("defaults", None)
        doc["train"] = {**train, **self.train.defaults}
        doc["remote"] = {n: _table_toml(r, every_key) for n, r in self.remotes.items()}
        return {k: v for k, v in doc.items() if v or every_key}


def _table_toml(table: Any, every_key: bool) -> dict[str, Any]:
    out = {}
    for f in fields(table):
        v = getattr(table, f.name)
        if every_key or v != _default_of(f):
            out[f.name] = v
    return out


def _default_of(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise TypeError(f"settings field {f.name} has no default")


class _Reader:
    """Checks one file's tables, collecting warnings; errors name ``where`` and the key."""

    def __init__(self, where: str):
        self.where = where
        self.warnings: list[str] = []

    def bad(self, key_name: str, value: Any, problem: str) -> InvalidInput:
        return InvalidInput(f"{self.where}: {key_name} = {show(value)} {problem}")

    def values(self, cls: type, raw: Any, prefix: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.bad(prefix, raw, "must be a table")
        known = {f.name: f for f in fields(cls) if f.name not in skip}
        out = {}
        for k, v in raw.items():
            if k not in known:
                self.warnings.append(f"{self.where}: unknown key {prefix}.{k} (ignored)")
                continue
            try:
                out[k] = check_value(v, rule_of(known[k]))
            except BadValue as e:
                raise self.bad(f"{prefix}.{k}", v, str(e)) from None
        return out

    def table(self, cls: type, raw: Any, prefix: str) -> Any:
        return cls(**self.values(cls, raw, prefix))

    def train(self, raw: Any) -> TrainTable:
        if not isinstance(raw, dict):
            raise self.bad("train", raw, "must be a table")
        own = {k: v for k, v in raw.items() if k in _TRAIN_OWN}
        rest = {k: v for k, v in raw.items() if k not in own}
        known = set(TrainSettings.names())
        for k in [k for k in rest if k not in known]:
            self.warnings.append(f"{self.where}: unknown key train.{k} (ignored)")
            del rest[k]
        defaults = TrainSettings.check_layer(rest, f"{self.where}: train.")
        return TrainTable(**self.values(TrainTable, own, "train", skip=("defaults",)), defaults=defaults)

    def remotes(self, raw: Any) -> dict[str, RemoteSettings]:
        if not isinstance(raw, dict):
            raise self.bad("remote", raw, "must be a table of [remote.NAME] tables")
        out = {}
        for name in sorted(raw):
            prefix = f"remote.{name}"
            try:
                check_name(name, "remote name")
            except InvalidInput:
                raise self.bad(prefix, raw[name], "is not a valid remote name") from None
            values = self.values(RemoteSettings, raw[name], prefix)
            if not values.get("url"):
                self.warnings.append(f"{self.where}: [{prefix}] has no url (ignored)")
                continue
            url = values["url"]
            if url.startswith("s3://") and "@" in urlsplit(url).netloc:
                raise self.bad(f"{prefix}.url", url, "must not carry credentials")
            try:
                check_endpoint(values.get("endpoint_url"))
            except InvalidInput as e:
                raise self.bad(f"{prefix}.endpoint_url", values["endpoint_url"], f"is refused: {e}") from None
            out[name] = RemoteSettings(**values)
        return out


def lock_timeout(settings: Settings | None = None) -> float:
    """Seconds to wait for a lock: ``LIN_LOCK_TIMEOUT``, else ``core.lock_timeout``."""
    return env_number("LIN_LOCK_TIMEOUT", float((settings or Settings()).core.lock_timeout))


# ----------------------------------------------------------------------------- the file itself

def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


class Config:
    """The writable view of ``config.toml``: what the user wrote (``user``) and, checked, the
    :class:`Settings` it makes. ``set`` checks the new value before it takes it; ``dumps`` gives
    the file's text (unknown keys kept). Code reads settings from :attr:`settings`."""

    def __init__(self, data: dict[str, Any] | None = None, path: Path | None = None):
        self.path = path
        self.user = data or {}
        self.settings = Settings.from_toml(self.user, path)

    @classmethod
    def load(cls, path: Path) -> Config:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            data = {}
        except tomllib.TOMLDecodeError as e:
            raise InvalidInput(f"{path}: invalid TOML ({e})") from e
        return cls(data, path)

    def get(self, key_name: str, default: Any = None) -> Any:
        """The file's value of a dotted key, or its default (for library users; lin reads
        :attr:`settings`)."""
        node: Any = _merge(Settings().to_toml(every_key=True), self.user)
        for part in key_name.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def set(self, key_name: str, value: Any) -> None:
        """Set (or with None remove) a dotted key; a value the settings refuse changes nothing."""
        user = copy.deepcopy(self.user)
        parts = key_name.split(".")
        node = user
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
        self.settings = Settings.from_toml(user, self.path)
        self.user = user

    def dumps(self) -> str:
        return tomli_w.dumps(self.user)
