"""What the phases of one training session share (:mod:`.trainer`): the set-up, then what is
restored or seeded, then what the session starts with; and the counters a checkpoint saves."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.progress import Progress
from ..core.repo import Repo
from ..core.store import ObjectStore
from . import distributed as D
from .course import Schedule
from .dataset import Blocks
from .plan import Plan
from .series import SeriesWriter
from .settings import TrainSettings

__all__ = ["Counters", "Session"]


@dataclass
class Counters:
    """Where a run is, saved in each checkpoint's trainer state and restored on resume."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # units of the epoch's order already trained
    tokens: int = 0
    targets: int = 0
    wall_time_s: float = 0.0
    sessions: int = 0
    checkpoints: int = 0


@dataclass
class Session:
    """What the phases of one training session share: set up first, then restored or seeded."""

    repo: Repo
    plan: Plan
    base: str  # the base version's id (the plan's, which a plan that passed has)
    s: TrainSettings
    device: Any
    precision: str
    dist: D.Dist
    progress: Progress
    say: Callable[[str], None]
    base_tree: str
    blocks: Blocks
    pad_id: int
    per_epoch: int
    total: int  # optimizer steps of the whole run
    per_step: int  # training units per optimizer step, all ranks together
    end: tuple[int, int]  # (epoch, position) where the run ends (kept across resumes)
    schedule: Schedule  # the learning-rate schedule's clock (changed in place on resume)
    expect_head: tuple[str | None, str | None]  # (HEAD's branch, HEAD) when this session started
    model: Any
    optimizer: Any
    scheduler: Any
    scaler: Any  # fp16 only
    names: list[str]  # trainable parameters, in the optimizer's order
    trainable_params: int
    save_dtype: Any
    code: Any = None
    st: Counters = field(default_factory=Counters)
    losses: list[float] = field(default_factory=list)
    last_ckpt: str | None = None
    run_id: str = field(default_factory=lambda: secrets.token_hex(8))
    resumed_from: int | None = None  # step the run continued from (None: a fresh run)
    # set when the session starts (after restoring)
    ddp_model: Any = None
    env: dict = field(default_factory=dict)
    ckstore: ObjectStore | None = None
    frozen_names: set[str] = field(default_factory=set)
    frozen_ids: dict[str, str] = field(default_factory=dict)  # frozen tensors' ids, stored once
    written: int = 0  # checkpoints written by this process
    session_start: float = 0.0
    wall_before: float = 0.0
    steps_before: int = 0  # optimizer steps done when this session started
    tokens_before: int = 0  # tokens trained when this session started
    # the per-step series and the evaluation (.series, .evaluate)
    series: SeriesWriter = field(default_factory=SeriesWriter)
    grad_norm: float = float("nan")  # of the last optimizer step
    eval_on: bool = False  # the store has an evaluation set (every rank knows)
    evaluator: Any = None  # rank 0: the evaluation set, tokenized
    final_eval: Any = None  # rank 0: the evaluation of the final weights
