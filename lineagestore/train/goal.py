"""Progress toward the token goal (``goal.tokens`` in config.toml, default 10^12).

Counted along a version's lineage (every ancestor, each once): the sum of the commits' metrics
``tokens_trained`` and ``wall_time_s``. The rate is tokens per second of training; the calendar
rate is tokens per second between the first and the last training version.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass

from ..core.repo import Repo


@dataclass
class GoalProgress:
    rev: str
    name: str
    goal: int
    trained: int
    remaining: int
    fraction: float
    versions: int  # versions in the lineage that report tokens_trained
    wall_time_s: float
    rate: float | None  # tokens per second of training
    eta_s: float | None  # seconds of training left at that rate
    first: str | None  # creation time of the first training version
    last: str | None
    calendar_rate: float | None  # tokens per calendar second, first to last training version
    calendar_eta_s: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def _parse(ts: str) -> float | None:
    try:
        return _dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC).timestamp()
    except (TypeError, ValueError):
        return None


def goal_progress(repo: Repo, rev: str | None = None) -> GoalProgress:
    cid = repo.resolve(rev or "HEAD")
    goal = repo.settings.goal.tokens
    trained = 0
    wall = 0.0
    n = 0
    times: list[float] = []
    stamps: list[str] = []
    for _aid, c in repo.all_ancestors(cid):
        t = c.metrics.get("tokens_trained")
        if not isinstance(t, (int, float)) or isinstance(t, bool) or t <= 0:
            continue
        n += 1
        trained += int(t)
        w = c.metrics.get("wall_time_s")
        if isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0:
            wall += float(w)
        when = _parse(c.created)
        if when is not None:
            times.append(when)
            stamps.append(c.created)
    remaining = max(0, goal - trained)
    rate = trained / wall if wall > 0 else None
    first = min(stamps) if stamps else None
    last = max(stamps) if stamps else None
    cal = None
    if len(times) >= 2 and max(times) > min(times):
        cal = trained / (max(times) - min(times))
    return GoalProgress(
        rev=cid, name=repo.name_of(cid) or cid[:12], goal=goal, trained=trained, remaining=remaining,
        fraction=(trained / goal) if goal else 1.0, versions=n, wall_time_s=wall, rate=rate,
        eta_s=(remaining / rate) if rate else None, first=first, last=last, calendar_rate=cal,
        calendar_eta_s=(remaining / cal) if cal else None)
