"""A branch's queue in the store: ``refs/queues/BRANCH`` names a ``queue`` object (format 2).

Every change is one new document: read the ref, apply the change, store the new document,
move the ref by compare-and-swap (retried when another process changed it meanwhile), then
append an audit entry. A ``kill -9`` anywhere leaves the old document or the new one, never a
mix: the document is stored whole before the ref names it. Changes of one queue also take
``locks/queue-BRANCH.lock`` so that two processes take turns instead of redoing their work.

The loop's log lives in the document: the newest entries inline (``log``), older ones in blobs
of :data:`LOG_PART` entries that the document links (``log_parts``), so the log is kept, pushed
and fetched with the queue and one change rewrites at most ``LOG_PART`` entries.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import audit
from ..core.errors import CorruptObject, InvalidInput, RefConflict
from ..core.fsutil import FileLock, kill_point
from ..core.ids import is_object_id
from ..core.names import check_name
from ..core.objects import QueueDoc, canonical_json
from ..core.repo import RefChange, Repo, utc_now
from .model import Queue, clean_text, from_doc, stored_columns

QUEUE_REF = "refs/queues/"
QUEUE_FORMAT = 2  # the store format that holds queues (core/repo.py FORMATS)
LOG_PART = 1000  # log entries per log blob (and the most kept inline)
_TRIES = 200
_MAX_EVENT = 4096  # bytes of one log entry's event (canonical JSON)


@dataclass(frozen=True)
class LogEntry:
    """One line of a queue's log: when (UTC), what happened, and the event as the loop gave it."""

    time: str
    message: str
    event: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "message": self.message, "event": self.event}


def queue_ref(branch: str) -> str:
    return QUEUE_REF + check_name(branch, "branch name")


def _read_doc(repo: Repo, oid: str, branch: str) -> QueueDoc:
    doc = repo.objects.get(oid, "queue")
    assert isinstance(doc, QueueDoc)
    where = f"{queue_ref(branch)} ({oid[:12]})"
    if not isinstance(doc.log, list) or not isinstance(doc.log_parts, list) or not all(
            isinstance(x, str) and is_object_id(x) for x in doc.log_parts):
        raise CorruptObject(f"{where}: malformed queue (log)")
    if type(doc.log_count) is not int or doc.log_count < len(doc.log):
        raise CorruptObject(f"{where}: malformed queue (log_count)")
    return doc


def _empty_doc(branch: str) -> QueueDoc:
    return QueueDoc(branch=branch, next=1, paused=None, items={}, log=[], log_parts=[], log_count=0)


def load(repo: Repo, branch: str) -> Queue:
    """The queue of ``branch`` (an empty one when it has none yet)."""
    q, _doc, _oid = _load(repo, branch)
    return q


#: the last queue this process read or wrote, by document id: a document is immutable and named
#: by its content, so ``lin queue move`` (which reads the queue, then changes it) and the loop
#: (which reads it after its own change) parse 50,000 items once, not twice
_LAST: dict[str, tuple[Queue, QueueDoc]] = {}


def _load(repo: Repo, branch: str) -> tuple[Queue, QueueDoc, str | None]:
    ref = queue_ref(branch)
    oid = repo.refs.read(ref)
    if oid is None:
        return Queue(branch=branch), _empty_doc(branch), None
    hit = _LAST.get(oid)
    if hit is not None and hit[0].branch == branch and repo.objects.has(oid):
        return hit[0], hit[1], oid
    doc = _read_doc(repo, oid, branch)
    q = from_doc(doc, f"{ref} ({oid[:12]})", branch)
    _remember(oid, q, doc)
    return q, doc, oid


def _remember(oid: str, q: Queue, doc: QueueDoc) -> None:
    _LAST.clear()
    _LAST[oid] = (q, doc)


def update(repo: Repo, branch: str, change: Callable[[Queue], Queue], message: str,
           event: dict[str, Any] | None = None) -> Queue:
    """Apply ``change`` to the queue of ``branch`` and store the result; returns the new queue.

    ``change`` may be called more than once (again after a concurrent change of the queue) and
    must not have other effects; what it raises comes through and nothing is written.
    ``message`` (and ``event``, a small JSON object such as ``{"kind": "parked", "item": "q00042",
    "reason": "..."}``) is appended to the queue's log and noted in the audit log.
    """
    ref = queue_ref(branch)
    message = clean_text(message, "a queue log message")
    entry = [utc_now(), message, _check_event(event)]
    lock = FileLock(repo.path / "locks" / f"queue-{branch}.lock") if repo.path is not None else None
    for attempt in range(_TRIES):
        with repo.writing(), (lock.held("exclusive", repo.lock_timeout) if lock else nullcontext()):
            new = _update_once(repo, branch, ref, change, message, entry)
        if new is not None:
            return new
        time.sleep(random.uniform(0.0, 0.01 * min(attempt + 1, 20)))
    raise RefConflict(f"{ref}: changed by other processes {_TRIES} times while this change was made",
                      hint="run the command again")


def _update_once(repo: Repo, branch: str, ref: str, change: Callable[[Queue], Queue], message: str,
                 entry: list[Any]) -> Queue | None:
    """One read-change-write; None when the ref moved underneath (then the caller tries again)."""
    queue, doc, old = _load(repo, branch)
    new = change(queue)
    cols, cleaned = stored_columns(new, branch)
    paused = clean_text(new.paused, "the reason of a pause") if new.paused is not None else None
    notes_before = len(repo.notes)
    repo.require_format(QUEUE_FORMAT)
    log, parts = list(doc.log), list(doc.log_parts)
    if len(log) >= LOG_PART:
        parts.append(repo.objects.put("blob", canonical_json(log)))
        log = []
    log.append(entry)
    new_doc = QueueDoc(branch=branch, next=new.next_number, paused=paused, items=cols,
                       log=log, log_parts=parts, log_count=doc.log_count + 1)
    if cleaned or paused != new.paused:
        new = from_doc(new_doc, queue_ref(branch), branch)  # what a reader will see
    oid = repo.objects.put_object(new_doc)
    kill_point("queue-object")
    try:
        repo.refs.set_if_equals(ref, old, oid, f"queue: {message}")
    except RefConflict:
        return None
    kill_point("queue-ref")
    _remember(oid, new, new_doc)
    if repo.path is not None:
        # each change is its own entry, at once: a loop that runs for months must not keep its
        # changes for one entry at exit (and the CLI, which records repo.changes, does not see it)
        audit.record(repo, _argv(), [RefChange(ref, old, oid)],
                     notes=[f"queue {branch}: {message}", *repo.notes[notes_before:]])
        del repo.notes[notes_before:]  # recorded here (the format raise): not again by the command
    return new


def _argv() -> list[str]:
    return [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "lin", *sys.argv[1:]]


def _check_event(event: dict[str, Any] | None) -> dict[str, Any] | None:
    if event is None:
        return None
    if not isinstance(event, dict):
        raise InvalidInput("a queue log event must be a JSON object")
    try:
        size = len(canonical_json(event))
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"a queue log event must be plain JSON: {e}") from None
    if size > _MAX_EVENT:
        raise InvalidInput(f"a queue log event is {size} bytes; at most {_MAX_EVENT}")
    return event


# ----------------------------------------------------------------------------- the log


def read_log(repo: Repo, branch: str, limit: int | None = None) -> list[LogEntry]:
    """The queue's log, oldest first; with ``limit``, only the newest ``limit`` entries."""
    ref = queue_ref(branch)
    oid = repo.refs.read(ref)
    if oid is None:
        return []
    doc = _read_doc(repo, oid, branch)
    where = f"{ref} ({oid[:12]})"
    rows: list[Any] = list(doc.log)
    for pid in reversed(doc.log_parts):
        if limit is not None and len(rows) >= limit:
            break
        try:
            part = json.loads(repo.objects.get(pid, "blob"))
        except ValueError:
            raise CorruptObject(f"{where}: log part {pid[:12]} is not JSON") from None
        if not isinstance(part, list):
            raise CorruptObject(f"{where}: log part {pid[:12]} is not a list")
        rows[:0] = part
    if limit is not None:
        rows = rows[-limit:] if limit > 0 else []
    return [_entry(r, where) for r in rows]


def _entry(row: Any, where: str) -> LogEntry:
    if (not isinstance(row, list) or len(row) != 3 or not isinstance(row[0], str) or not isinstance(row[1], str)
            or not (row[2] is None or isinstance(row[2], dict))):
        raise CorruptObject(f"{where}: malformed queue log entry {str(row)[:80]!r}")
    return LogEntry(row[0], row[1], row[2])


def queue_branches(repo: Repo) -> list[str]:
    """Branches that have a queue."""
    return [n[len(QUEUE_REF):] for n in repo.refs.names(QUEUE_REF)]

