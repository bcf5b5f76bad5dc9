"""A run's course through its data: where it ends, how many steps are left, what it consumed.

Training units (packed blocks, or examples) are trained in the order :func:`epoch_order` gives
each epoch; a run's **position** is (epoch, units of that epoch's order done). A run ends at a
fixed position, its **end**: the position an uninterrupted run reaches (every epoch, or
``max_steps`` steps of the number of processes it started on). The end is set when the run
starts and kept in its checkpoints, so a run resumed on another number of processes continues
from the units it consumed and trains exactly the units an uninterrupted run would: only the
number of steps left changes. The learning-rate schedule keeps counting in the steps of the run
as it started (:class:`Schedule`).

**What a run consumed.** A unit is consumed once trained; at the end of a run, the units
consumed are every unit when it finished an epoch, else the first ``position`` units of epoch
0's order. An example (one record of a file) is consumed when **any** of its tokens is in a
consumed unit: with packing, an example split across a consumed and an unconsumed block counts
as trained (the ledger answers "was any part of this record trained?"), and its untrained
tokens are not trained by a later run of the file's rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .dataset import Blocks, epoch_order

__all__ = ["Schedule", "consumed_examples", "consumed_units", "end_position", "limit", "resumed_course",
           "steps_left"]


def end_position(units: int, per_step: int, total_steps: int) -> tuple[int, int]:
    """Where a run of ``total_steps`` steps of ``per_step`` units ends: (epoch, position)."""
    per_epoch = max(1, math.ceil(units / per_step))
    full, rest = divmod(total_steps, per_epoch)
    return full, rest * per_step


def steps_left(units: int, per_step: int, epoch: int, position: int, end: tuple[int, int]) -> int:
    """Optimizer steps of ``per_step`` units from (epoch, position) to ``end`` (each epoch's last
    step may be short; so is the last step of the run when the end falls inside a step)."""
    e_end, p_end = end
    if (epoch, position) >= (e_end, p_end):
        return 0
    if epoch == e_end:
        return math.ceil((p_end - position) / per_step)
    per_epoch = math.ceil(units / per_step)
    return (math.ceil((units - position) / per_step) + (e_end - epoch - 1) * per_epoch
            + math.ceil(p_end / per_step))


def limit(units: int, epoch: int, end: tuple[int, int]) -> int:
    """How far into ``epoch``'s order the run goes."""
    return end[1] if epoch == end[0] else units


def consumed_units(units: int, seed: int, epoch: int, position: int) -> np.ndarray:
    """Which units a run at (epoch, position) trained at least once."""
    if epoch >= 1:
        return np.ones(units, dtype=bool)
    done = np.zeros(units, dtype=bool)
    done[epoch_order(units, seed, 0)[:position]] = True
    return done


def consumed_examples(blocks: Blocks, units: np.ndarray) -> np.ndarray:
    """Which examples have a token in a consumed unit."""
    if not blocks.packing:
        return np.asarray(units, dtype=bool).copy()  # one unit per example
    offsets = np.asarray(blocks.data.offsets, dtype=np.int64)
    first = offsets[:-1] // blocks.seq_len
    last = (offsets[1:] - 1) // blocks.seq_len  # every example has a token
    done = np.concatenate([[0], np.cumsum(units, dtype=np.int64)])
    return (done[last + 1] - done[first]) > 0


@dataclass
class Schedule:
    """The clock of the learning-rate schedule: the steps of the run as it started.

    ``segments`` are ``[real step, schedule step, schedule steps per real step]``: a run resumed
    on another number of processes takes steps of another size, and its schedule goes on at the
    rate its data does (twice the processes, twice the schedule per step)."""

    total: int  # the run's steps as it started (the schedule's length)
    per_step: int  # units per step as it started
    segments: list = field(default_factory=lambda: [[0, 0, 1.0]])

    def at(self, step: int) -> float | int:
        """The schedule's step at real step ``step`` (``step`` itself while the size never changed)."""
        if len(self.segments) == 1:
            return step
        seg = next(s for s in reversed(self.segments) if s[0] <= step)
        return seg[1] + (step - seg[0]) * seg[2]

    def continue_with(self, step: int, per_step: int) -> None:
        """From real step ``step`` on, steps are of ``per_step`` units."""
        rate = per_step / self.per_step
        if rate != self.segments[-1][2]:
            self.segments.append([step, self.at(step), rate])

    def to_json(self) -> dict:
        return {"total": self.total, "per_step": self.per_step, "segments": self.segments}

    @classmethod
    def from_json(cls, d: dict) -> Schedule:
        return cls(int(d["total"]), int(d["per_step"]), [[int(a), float(b), float(c)] for a, b, c in d["segments"]])


def resumed_course(trainer: dict, units: int, per_process: int, per_step: int,
                   total: int) -> tuple[tuple[int, int], Schedule]:
    """(end, schedule) of a run resumed from its trainer state, now taking ``per_step`` units a
    step. ``per_process``: units per step of one process; ``total``: the steps a fresh run would
    take, for a state written before ends were recorded (its end is then its own plan's)."""
    if "end" in trainer:
        end = (int(trainer["end"][0]), int(trainer["end"][1]))
        sched = Schedule.from_json(trainer["schedule"])
    else:
        started = per_process * int(trainer.get("world_size", 1))
        sched = Schedule(int(trainer.get("total_steps", total)), started)
        end = end_position(units, started, sched.total)
    sched.continue_with(int(trainer["step"]), per_step)
    return end, sched
