"""What `lin progress` adds to the token goal: the queue, the eval loss and the per-device-hour rates.

Read-only, from the commits, the evaluation notes, the queue (when ``lineagestore.queue`` is
there) and the runs in progress. docs/dashboard.md, "What each number means", defines the figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.repo import Repo
from ..train.goal import GoalProgress, goal_progress
from ..train.runs import list_runs
from .collect import eval_summaries

__all__ = ["Journey", "journey"]


@dataclass
class Journey:
    goal: GoalProgress
    device_hours: float  # of the lineage's training versions
    tokens_per_device_hour: float | None
    eval_loss: float | None  # the tip's, on the evaluation set
    eval_set: str | None
    eval_first: float | None  # the earliest evaluated version of the lineage
    eval_first_name: str | None
    gain_per_device_hour: float | None  # (eval_first - eval_loss) / device-hours trained after eval_first
    queue: dict[str, int] | None  # status -> items, of the tip's branch (None: no queues in this lin)
    queue_branch: str | None
    queue_paused: str | None
    runs: list[dict] = field(default_factory=list)  # runs in progress: name, status, step, total, tokens

    def to_dict(self) -> dict[str, Any]:
        """The goal's fields at the top (as `lin progress --json` always had them), then the rest."""
        d = asdict(self)
        return {**d.pop("goal"), **d}


def _queue(repo: Repo) -> tuple[dict[str, int] | None, str | None, str | None]:
    from .. import queue as q
    branch_ref = repo.head_branch()
    if branch_ref is None:
        return None, None, None
    branch = branch_ref[len("refs/heads/"):]
    queue = q.load(repo, branch)
    counts = {s: 0 for s in q.STATUSES}
    for it in queue.items:
        counts[it.status] = counts.get(it.status, 0) + 1
    return counts, branch, queue.paused


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def journey(repo: Repo, rev: str | None = None) -> Journey:
    """The goal's progress along ``rev``'s lineage (default HEAD) and what `lin progress` adds."""
    g = goal_progress(repo, rev)
    evals = eval_summaries(repo)
    chain = []  # first parents, root first
    cur: str | None = g.rev
    seen: set[str] = set()
    while cur is not None and cur not in seen:
        seen.add(cur)
        c = repo.commit(cur)
        chain.append((cur, c))
        cur = c.parents[0] if c.parents else None
    chain.reverse()
    dh_total = 0.0
    first: tuple[str, float] | None = None
    dh_after_first = 0.0
    for cid, c in chain:
        dh = _number(c.metrics.get("device_hours")) or 0.0
        dh_total += dh
        if first is not None:
            dh_after_first += dh
        loss = (evals.get(cid) or {}).get("eval_loss")
        if first is None and loss is not None:
            first = (c.name, float(loss))
    tip = evals.get(g.rev) or {}
    tip_loss = tip.get("eval_loss")
    gain_dh = None
    if first is not None and tip_loss is not None and dh_after_first > 0:
        gain_dh = (first[1] - float(tip_loss)) / dh_after_first
    counts, branch, paused = _queue(repo)
    runs = [{"name": r.name, "status": r.status, "step": r.step, "total_steps": r.total_steps,
             "tokens_trained": r.tokens_trained} for r in list_runs(repo)]
    return Journey(goal=g, device_hours=dh_total,
                   tokens_per_device_hour=(g.trained / dh_total) if dh_total > 0 else None,
                   eval_loss=tip_loss, eval_set=tip.get("set"), eval_first=first[1] if first else None,
                   eval_first_name=first[0] if first else None, gain_per_device_hour=gain_dh,
                   queue=counts, queue_branch=branch, queue_paused=paused, runs=runs)
