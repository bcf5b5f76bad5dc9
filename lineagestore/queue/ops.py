"""What ``lin queue`` does besides adding: list (with the estimated start), remove, move, park,
retry, pause and resume. Each change goes through :func:`.storage.update` and names its item
inside the change, so a change made meanwhile by another process (the loop) is seen.

Order: items are kept in queue order. Among the items not done, priorities never increase
along the queue (an item added with priority P goes after every item of priority >= P); a move
takes the priority its new neighbours require, so the order stays the one the priorities say.
Positions count the items not done, from 1.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ..core.errors import InvalidInput, Refused
from ..core.repo import Repo
from .model import DONE, PARKED, QUEUED, RUNNING, Item, Queue, clean_text
from .storage import load, update

KEEP_DONE = 5  # done items `lin queue ls` shows without --all (the last ones in queue order)
RATE_VERSIONS = 10  # training versions along the branch whose measured rate is averaged


def default_branch(repo: Repo, branch: str | None) -> str:
    """``branch``, else the branch HEAD is on (InvalidInput when HEAD is detached)."""
    if branch:
        return branch.removeprefix("refs/heads/")
    head = repo.head_branch()
    if head is None:
        raise InvalidInput("HEAD is detached (not on a branch): name the queue's branch with --branch")
    return head.removeprefix("refs/heads/")


# ----------------------------------------------------------------------------- changes


@dataclass
class Changed:
    """An item as a command left it, and where it stands (position None: done or removed)."""

    item: Item
    position: int | None
    old_position: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.item.to_dict(), "position": self.position, "old_position": self.old_position}


def remove(repo: Repo, branch: str, key: str) -> Changed:
    """Take an item out of the queue (not one being trained, not one done: that is history)."""
    got: list[Changed] = []

    def change(q: Queue) -> Queue:
        it = q.get(key)
        _refuse(it, "removed", running=True, done=True)
        got[:] = [Changed(it, None, q.position(it.id))]
        return q.with_items(tuple(x for x in q.items if x.id != it.id))

    _apply(repo, branch, change, "removed", "removed", got)
    return got[0]


def move(repo: Repo, branch: str, key: str, *, to: int | None = None, top: bool = False) -> Changed:
    """Move an item to position ``to`` (1 = next to train) or to the top."""
    if top:
        to = 1
    if to is None or to < 1:
        raise InvalidInput("give --to N (a position, 1 or more) or --top")
    got: list[Changed] = []

    def change(q: Queue) -> Queue:
        it = q.get(key)
        _refuse(it, "moved", running=False, done=True)
        old = q.position(it.id)
        rest = [x for x in q.items if x.id != it.id]
        idx, count = len(rest), 0
        for i, x in enumerate(rest):
            if x.status != DONE:
                count += 1
                if count == to:
                    idx = i
                    break
        after = next((x for x in rest[idx:] if x.status != DONE), None)
        before = next((x for x in reversed(rest[:idx]) if x.status != DONE), None)
        prio = it.priority
        if after is not None and prio < after.priority:
            prio = after.priority
        elif before is not None and prio > before.priority:
            prio = before.priority
        moved = replace(it, priority=prio)
        rest.insert(idx, moved)
        nq = q.with_items(tuple(rest))
        got[:] = [Changed(moved, nq.position(it.id), old)]
        return nq

    _apply(repo, branch, change, f"moved to {'the top' if top else f'position {to}'}", "moved", got,
           {"to": to})
    return got[0]


def park(repo: Repo, branch: str, key: str, reason: str) -> Changed:
    """Set an item aside with a reason: the loop skips it until ``retry``."""
    why = clean_text(reason, "--reason")
    got: list[Changed] = []

    def change(q: Queue) -> Queue:
        it = q.get(key)
        _refuse(it, "parked", running=True, done=True)
        new = replace(it, status=PARKED, reason=why)
        got[:] = [Changed(new, q.position(it.id))]
        return q.with_item(new)

    _apply(repo, branch, change, f"parked: {why}", "parked", got, {"reason": why})
    return got[0]


def retry(repo: Repo, branch: str, key: str) -> Changed:
    """Queue a parked item again, in its place, with its attempts counted from zero."""
    got: list[Changed] = []

    def change(q: Queue) -> Queue:
        it = q.get(key)
        if it.status != PARKED:
            raise Refused(f"{it.id} ({it.name}) is {it.status}, not parked: only a parked item is retried")
        new = replace(it, status=QUEUED, reason=None, attempts=0)
        got[:] = [Changed(new, q.position(it.id))]
        return q.with_item(new)

    _apply(repo, branch, change, "queued again", "retried", got)
    return got[0]


def _refuse(it: Item, what: str, *, running: bool, done: bool) -> None:
    if running and it.status == RUNNING:
        raise Refused(f"{it.id} ({it.name}) is being trained and cannot be {what}",
                      hint="stop `lin run` first (a file it leaves running is resumed by the next `lin run`)")
    if done and it.status == DONE:
        raise Refused(f"{it.id} ({it.name}) was trained into {it.version} and cannot be {what}: "
                      "it stays in the queue's history")


def _apply(repo: Repo, branch: str, change: Any, what: str, kind: str, got: list[Changed],
           event: dict[str, Any] | None = None) -> None:
    """Run ``change`` once on the queue as it is (it names its item in ``got``, or raises before
    anything is written), then for real through :func:`update` (where it runs again)."""
    change(load(repo, branch))
    it = got[0].item
    update(repo, branch, change, f"{it.id} ({it.name}) {what}", {"kind": kind, "item": it.id, **(event or {})})


@dataclass
class PauseResult:
    branch: str
    paused: str | None
    changed: bool


def pause(repo: Repo, branch: str, reason: str | None = None) -> PauseResult:
    """Pause the queue: the loop takes no next file until ``resume`` (or the next ``lin run``)."""
    why = clean_text(reason, "--reason") if reason else "paused by hand (lin queue pause)"
    q = load(repo, branch)
    if q.paused is not None:
        return PauseResult(branch, q.paused, False)
    update(repo, branch, lambda x: replace(x, paused=why), f"paused: {why}", {"kind": "paused", "reason": why})
    return PauseResult(branch, why, True)


def resume(repo: Repo, branch: str) -> PauseResult:
    q = load(repo, branch)
    if q.paused is None:
        return PauseResult(branch, None, False)
    update(repo, branch, lambda x: replace(x, paused=None), f"resumed (was paused: {q.paused})",
           {"kind": "resumed"})
    return PauseResult(branch, None, True)


# ----------------------------------------------------------------------------- listing


@dataclass
class Row:
    position: int | None
    item: Item
    start: str | None  # estimated start (UTC) from the measured rate; None: unknown or not queued
    start_in_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, **self.item.to_dict(), "estimated_start": self.start,
                "estimated_start_in_s": self.start_in_s}


@dataclass
class Listing:
    branch: str
    paused: str | None
    rows: list[Row]
    counts: dict[str, int]  # items per status
    hidden_done: int  # done items left out (without --all)
    rate: float | None  # tokens per second of training, measured on the branch's recent versions
    rate_versions: int
    tokens_queued: int
    eta_s: float | None  # until every queued item is trained, at that rate
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"branch": self.branch, "paused": self.paused, "counts": self.counts,
                "hidden_done": self.hidden_done, "rate_tokens_per_s": self.rate,
                "rate_versions": self.rate_versions, "tokens_queued": self.tokens_queued, "eta_s": self.eta_s,
                "items": [r.to_dict() for r in self.rows]}


def measured_rate(repo: Repo, branch: str, versions: int = RATE_VERSIONS) -> tuple[float | None, int]:
    """Tokens per second of training over the branch's last ``versions`` training versions that
    record ``tokens_trained`` and ``wall_time_s`` in their metrics; (None, 0) when none do."""
    tip = repo.refs.resolve(f"refs/heads/{branch}")
    tokens = wall = 0.0
    n = 0
    if tip is None:
        return None, 0
    for looked, (_cid, c) in enumerate(repo.ancestry(tip)):
        if n >= versions or looked >= 20 * versions:
            break
        t, w = _positive(c.metrics.get("tokens_trained")), _positive(c.metrics.get("wall_time_s"))
        if t is not None and w is not None:
            tokens += t
            wall += w
            n += 1
    return (tokens / wall if wall > 0 else None), n


def _positive(x: Any) -> float | None:
    """``x`` as a float when it is a finite number > 0 (a metric as recorded), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x < float("inf"):
        return None
    return float(x)


def listing(repo: Repo, branch: str, *, show_all: bool = False, now: float | None = None) -> Listing:
    """The queue as `lin queue ls` shows it: every item not done, the last few done (all with
    ``show_all``), each with its position and estimated start."""
    q = load(repo, branch)
    rate, n_rate = measured_rate(repo, branch)
    now = time.time() if now is None else now
    counts = {s: 0 for s in (QUEUED, RUNNING, PARKED, DONE)}
    for it in q.items:
        counts[it.status] += 1
    keep_done = counts[DONE] if show_all else KEEP_DONE
    done_seen = 0
    ahead = 0.0
    rows: list[Row] = []
    pos = 0
    for it in q.items:
        if it.status == DONE:
            done_seen += 1
            if counts[DONE] - done_seen < keep_done:
                rows.append(Row(None, it, None, None))
            continue
        pos += 1
        start = start_in = None
        if it.status in (QUEUED, RUNNING):
            if it.status == QUEUED and rate:
                start_in = ahead / rate
                start = _dt.datetime.fromtimestamp(now + start_in, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            ahead += it.tokens
        rows.append(Row(pos, it, start, start_in))
    return Listing(branch=branch, paused=q.paused, rows=rows, counts=counts,
                   hidden_done=counts[DONE] - min(keep_done, counts[DONE]), rate=rate, rate_versions=n_rate,
                   tokens_queued=int(ahead), eta_s=(ahead / rate) if rate else None)
