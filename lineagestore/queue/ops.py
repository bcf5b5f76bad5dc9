"""What ``lin queue`` does besides adding: list (with the estimated start), remove, move, park,
retry, pause and resume. Each change goes through :func:`.storage.update` and names its item
inside the change, so a change made meanwhile by another process (the loop) is seen.

Order: items are kept in queue order. Among the items not done, priorities never increase
along the queue (an item added with priority P goes after every item of priority >= P); a move
takes the priority its new neighbours require, so the order stays the one the priorities say.
Positions count the items not done, from 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..core.errors import InvalidInput, Refused
from ..core.objects import QueueDoc
from ..core.repo import Repo
from .model import COLUMNS, DONE, PARKED, QUEUED, RUNNING, Item, clean_text, find, item_at, position_at
from .storage import read_doc, update_doc

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


Cols = dict[str, list[Any]]


def remove(repo: Repo, branch: str, key: str) -> Changed:
    """Take an item out of the queue (not one being trained, not one done: that is history)."""
    def change(cols: Cols, i: int) -> tuple[Cols, int | None]:
        _refuse(cols, i, "removed", running=True)
        return {c: v[:i] + v[i + 1:] for c, v in cols.items()}, None

    return _apply(repo, branch, key, change, "removed", "removed", reorders=True)


def move(repo: Repo, branch: str, key: str, *, to: int | None = None, top: bool = False) -> Changed:
    """Move an item to position ``to`` (1 = next to train) or to the top."""
    if top:
        to = 1
    if to is None or to < 1:
        raise InvalidInput("give --to N (a position, 1 or more) or --top")
    target = to

    def change(cols: Cols, i: int) -> tuple[Cols, int | None]:
        _refuse(cols, i, "moved", running=False)
        rest = {c: v[:i] + v[i + 1:] for c, v in cols.items()}
        status, prio = rest["status"], rest["priority"]
        idx, count = len(status), 0
        for k, st in enumerate(status):
            if st != DONE:
                count += 1
                if count == target:
                    idx = k
                    break
        after = next((k for k in range(idx, len(status)) if status[k] != DONE), None)
        before = next((k for k in range(idx - 1, -1, -1) if status[k] != DONE), None)
        p = cols["priority"][i]
        if after is not None and p < prio[after]:
            p = prio[after]
        elif before is not None and p > prio[before]:
            p = prio[before]
        for c, v in rest.items():
            v.insert(idx, p if c == "priority" else cols[c][i])
        return rest, idx

    # a move reorders the checked items; the one priority it sets is one of theirs
    return _apply(repo, branch, key, change, f"moved to {'the top' if top else f'position {to}'}", "moved",
                  {"to": to}, reorders=True)


def park(repo: Repo, branch: str, key: str, reason: str) -> Changed:
    """Set an item aside with a reason: the loop skips it until ``retry``."""
    why = clean_text(reason, "--reason")

    def change(cols: Cols, i: int) -> tuple[Cols, int | None]:
        _refuse(cols, i, "parked", running=True)
        return _set(cols, i, status=PARKED, reason=why), i

    return _apply(repo, branch, key, change, f"parked: {why}", "parked", {"reason": why})


def retry(repo: Repo, branch: str, key: str) -> Changed:
    """Queue a parked item again, in its place, with its attempts counted from zero."""
    def change(cols: Cols, i: int) -> tuple[Cols, int | None]:
        if cols["status"][i] != PARKED:
            raise Refused(f"{cols['id'][i]} ({cols['name'][i]}) is {cols['status'][i]}, not parked: "
                          "only a parked item is retried")
        return _set(cols, i, status=QUEUED, reason=None, attempts=0), i

    return _apply(repo, branch, key, change, "queued again", "retried")


def _set(cols: Cols, i: int, **values: Any) -> Cols:
    """``cols`` with item ``i``'s ``values`` changed (new lists for those columns only)."""
    out = dict(cols)
    for c, v in values.items():
        out[c] = list(cols[c])
        out[c][i] = v
    return out


def _refuse(cols: Cols, i: int, what: str, *, running: bool) -> None:
    it, status = f"{cols['id'][i]} ({cols['name'][i]})", cols["status"][i]
    if running and status == RUNNING:
        raise Refused(f"{it} is being trained and cannot be {what}",
                      hint="stop `lin run` first (a file it leaves running is resumed by the next `lin run`)")
    if status == DONE:
        raise Refused(f"{it} was trained into {cols['version'][i]} and cannot be {what}: "
                      "it stays in the queue's history")


ColChange = Callable[[Cols, int], "tuple[Cols, int | None]"]


def _apply(repo: Repo, branch: str, key: str, change: ColChange, what: str, kind: str,
           event: dict[str, Any] | None = None, *, reorders: bool = False) -> Changed:
    """Find ``key`` and run ``change`` once on the queue as it is (it raises, writing nothing,
    when it cannot), then for real through :func:`update_doc` (where it runs again on the queue
    as it is then, the item found again by its id)."""
    doc = read_doc(repo, branch)
    i = find(doc.items, key, branch)
    item_key = doc.items["id"][i]
    change(doc.items, i)
    got: list[Changed] = []

    def on_doc(d: QueueDoc) -> QueueDoc:
        k = find(d.items, item_key, branch)
        old = position_at(d.items, k)
        item = item_at(d.items, k)
        cols, at = change(d.items, k)
        got[:] = [Changed(item_at(cols, at) if at is not None else item,
                          position_at(cols, at) if at is not None else None, old)]
        return replace(d, items=cols)

    name = doc.items["name"][i]
    update_doc(repo, branch, on_doc, f"{item_key} ({name}) {what}", {"kind": kind, "item": item_key, **(event or {})},
               reorders=reorders)
    return got[0]


@dataclass
class PauseResult:
    branch: str
    paused: str | None
    changed: bool


def pause(repo: Repo, branch: str, reason: str | None = None) -> PauseResult:
    """Pause the queue: the loop takes no next file until ``resume`` (or the next ``lin run``)."""
    why = clean_text(reason, "--reason") if reason else "paused by hand (lin queue pause)"
    current = read_doc(repo, branch).paused
    if current is not None:
        return PauseResult(branch, current, False)
    update_doc(repo, branch, lambda d: replace(d, paused=why), f"paused: {why}", {"kind": "paused", "reason": why})
    return PauseResult(branch, why, True)


def resume(repo: Repo, branch: str) -> PauseResult:
    current = read_doc(repo, branch).paused
    if current is None:
        return PauseResult(branch, None, False)
    update_doc(repo, branch, lambda d: replace(d, paused=None), f"resumed (was paused: {current})",
               {"kind": "resumed"})
    return PauseResult(branch, None, True)


# ----------------------------------------------------------------------------- listing


@dataclass
class Listing:
    branch: str
    paused: str | None
    #: each shown item: ``position`` (None when done), the item's fields (COLUMNS),
    #: ``estimated_start`` (UTC; None: unknown or not queued) and ``estimated_start_in_s``
    rows: list[dict[str, Any]]
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
                "items": self.rows}


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


_ROW_KEYS = ("position", *COLUMNS, "estimated_start", "estimated_start_in_s")


def listing(repo: Repo, branch: str, *, show_all: bool = False, now: float | None = None) -> Listing:
    """The queue as `lin queue ls` shows it: every item not done, the last few done (all with
    ``show_all``), each with its position and estimated start (rows are plain dicts, made from
    the stored columns: 50,000 rows cost no Item each)."""
    doc = read_doc(repo, branch)
    cols = doc.items
    rate, n_rate = measured_rate(repo, branch)
    now = time.time() if now is None else now
    status = cols["status"]
    counts = {s: status.count(s) for s in (QUEUED, RUNNING, PARKED, DONE)}
    skip_done = 0 if show_all else max(0, counts[DONE] - KEEP_DONE)
    ahead = 0.0
    rows: list[dict[str, Any]] = []
    pos = 0
    tokens = cols["tokens"]
    for i, row in enumerate(zip(*(cols[c] for c in COLUMNS), strict=True)):
        st = status[i]
        if st == DONE:
            if skip_done:
                skip_done -= 1
                continue
            rows.append(dict(zip(_ROW_KEYS, (None, *row, None, None), strict=True)))
            continue
        pos += 1
        start = start_in = None
        if st == QUEUED and rate:
            start_in = ahead / rate
            start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + start_in))
        if st in (QUEUED, RUNNING):
            ahead += tokens[i]
        rows.append(dict(zip(_ROW_KEYS, (pos, *row, start, start_in), strict=True)))
    return Listing(branch=branch, paused=doc.paused, rows=rows, counts=counts,
                   hidden_done=counts[DONE] - min(counts[DONE], counts[DONE] if show_all else KEEP_DONE),
                   rate=rate, rate_versions=n_rate, tokens_queued=int(ahead), eta_s=(ahead / rate) if rate else None)
