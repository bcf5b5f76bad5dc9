"""The per-step series of the runs behind the versions, as the charts need them.

A training version names its run's series in ``extra["series"]`` (lineagestore.train.series:
one row per optimizer step: tokens so far in the run, loss, tokens/s, seconds of training). A
series is immutable (named by its id), so each one is read and cut to a few points once per
process and kept: `lin serve` re-reads the store every few seconds without decoding the same
millions of steps again.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from ..core.errors import LinError
from ..core.ids import is_object_id
from ..core.objects import Commit
from ..core.repo import Repo
from ..train.series import read_series

#: series kept decoded and cut (each a few KB); the oldest are dropped beyond this
CACHE_ENTRIES = 20_000


@dataclass(frozen=True)
class StepPoints:
    """Points of one run's series (already cut to at most ``cap`` steps), and its evaluations."""

    tokens: tuple[float, ...]  # tokens trained in the run when the step ended
    loss: tuple[float | None, ...]
    tokens_per_s: tuple[float | None, ...]
    wall_s: tuple[float, ...]  # seconds of training in the run when the step ended
    evals: tuple[tuple[float, float], ...]  # (tokens in the run, eval loss) measured during it
    steps: int  # steps in the series before cutting


_cache: dict[tuple[str, int], StepPoints | None] = {}
_lock = threading.Lock()


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def series_id(c: Commit) -> str | None:
    sid = c.extra.get("series") if isinstance(c.extra, dict) else None
    return sid if isinstance(sid, str) and is_object_id(sid) else None


def step_points(repo: Repo, sid: str, cap: int, downsample: Any) -> StepPoints | None:
    """The points of series ``sid`` cut to ``cap`` steps by ``downsample`` (min and max kept);
    None when the series cannot be read (damaged, or not a series): the version's own metrics
    are drawn instead."""
    key = (sid, cap)
    with _lock:
        if key in _cache:
            return _cache[key]
    try:
        s = read_series(repo.objects, sid)
    except (LinError, ValueError, KeyError):
        pts = None
    else:
        loss = [_finite(v) for v in s.loss.tolist()]
        tps = [_finite(v) for v in s.tokens_per_s.tolist()]
        keep = downsample(len(loss), [loss, tps], cap)
        tokens, wall = s.tokens.tolist(), s.wall_s.tolist()
        evals = tuple((float(t), float(v)) for e in s.evals
                      if (t := _finite(e.get("tokens"))) is not None and (v := _finite(e.get("loss"))) is not None)
        pts = StepPoints(tuple(float(tokens[i]) for i in keep), tuple(loss[i] for i in keep),
                         tuple(tps[i] for i in keep), tuple(float(wall[i]) for i in keep), evals, len(loss))
    with _lock:
        if len(_cache) >= CACHE_ENTRIES:
            _cache.pop(next(iter(_cache)))
        _cache[key] = pts
    return pts
