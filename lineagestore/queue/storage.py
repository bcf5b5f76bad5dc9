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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..core import audit
from ..core.errors import CorruptObject, InvalidInput, RefConflict
from ..core.fsutil import FileLock, kill_point
from ..core.ids import is_object_id
from ..core.names import check_name
from ..core.objects import QueueDoc, canonical_json
from ..core.repo import RefChange, Repo, utc_now
from .model import COLUMNS, Queue, changed_columns, check_doc, clean_columns, clean_text, queue_of, stored_columns

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


def _read_doc(repo: Repo, oid: str, branch: str, *, items: bool = True) -> QueueDoc:
    doc = repo.objects.get(oid, "queue")
    assert isinstance(doc, QueueDoc)
    where = f"{queue_ref(branch)} ({oid[:12]})"
    if not isinstance(doc.log, list) or not isinstance(doc.log_parts, list) or not all(
            isinstance(x, str) and is_object_id(x) for x in doc.log_parts):
        raise CorruptObject(f"{where}: malformed queue (log)")
    if type(doc.log_count) is not int or doc.log_count < len(doc.log):
        raise CorruptObject(f"{where}: malformed queue (log_count)")
    if items:
        check_doc(doc, where, branch)
    return doc


def _empty_doc(branch: str) -> QueueDoc:
    return QueueDoc(branch=branch, next=1, paused=None, items={c: [] for c in COLUMNS}, log=[], log_parts=[],
                    log_count=0)


#: the last document this process read or wrote and the last queue it built, by document id: a
#: document is immutable and named by its content, so a command that reads the queue and then
#: changes it, or the loop that reads it after its own change, checks and builds 50,000 items once
_DOCS: dict[str, QueueDoc] = {}
_QUEUES: dict[str, Queue] = {}


def _current(repo: Repo, branch: str) -> tuple[QueueDoc, str | None]:
    oid = repo.refs.read(queue_ref(branch))
    if oid is None:
        return _empty_doc(branch), None
    doc = _DOCS.get(oid)
    if doc is None or doc.branch != branch or not repo.objects.has(oid):
        doc = _read_doc(repo, oid, branch)
        _DOCS.clear()
        _DOCS[oid] = doc
    return doc, oid


def read_doc(repo: Repo, branch: str) -> QueueDoc:
    """The stored document of the queue of ``branch``, checked (columns: see docs/format.md)."""
    return _current(repo, branch)[0]


def _queue(doc: QueueDoc, oid: str | None) -> Queue:
    if oid is None:
        return Queue(branch=doc.branch)
    q = _QUEUES.get(oid)
    if q is None:
        q = queue_of(doc)
        _QUEUES.clear()
        _QUEUES[oid] = q
    return q


def load(repo: Repo, branch: str) -> Queue:
    """The queue of ``branch`` (an empty one when it has none yet)."""
    return _queue(*_current(repo, branch))


def update(repo: Repo, branch: str, change: Callable[[Queue], Queue], message: str,
           event: dict[str, Any] | None = None) -> Queue:
    """Apply ``change`` to the queue of ``branch`` and store the result; returns the new queue.

    ``change`` may be called more than once (again after a concurrent change of the queue) and
    must not have other effects; what it raises comes through and nothing is written.
    ``message`` (and ``event``, a small JSON object such as ``{"kind": "parked", "item": "q00042",
    "reason": "..."}``) is appended to the queue's log and noted in the audit log.
    """
    def apply(doc: QueueDoc, oid: str | None) -> tuple[QueueDoc, Queue | None]:
        old = _queue(doc, oid)
        new = change(old)
        patched = changed_columns(old, new, doc.items, branch) if oid is not None else None
        cols, cleaned = patched if patched is not None else stored_columns(new, branch)
        paused = _paused(new.paused)
        same = not cleaned and paused == new.paused
        return replace(doc, items=cols, paused=paused, next=new.next_number), new if same else None

    doc, oid, q = _update(repo, branch, apply, message, event)
    if q is not None:
        _QUEUES.clear()
        _QUEUES[oid] = q
    return _queue(doc, oid)


def update_doc(repo: Repo, branch: str, change: Callable[[QueueDoc], QueueDoc], message: str,
               event: dict[str, Any] | None = None, *, reorders: bool = False) -> QueueDoc:
    """:func:`update` on the stored columns: ``change`` returns the document with its new
    ``items`` (columns: new lists, never the ones it was given changed in place), ``paused`` and
    ``next``; no :class:`Item` is made, so a change of a 50,000-item queue costs little. Columns
    it hands back unchanged (the same lists) are not checked again, nor any with ``reorders``:
    a change that only reorders or drops items of the (checked) document it was given."""
    def apply(doc: QueueDoc, oid: str | None) -> tuple[QueueDoc, Queue | None]:
        new = change(doc)
        known = None if not reorders else {c: new.items[c] for c in new.items}
        cols, _ = clean_columns(new.items, new.next, branch, known=known or doc.items)
        return replace(doc, items=cols, paused=_paused(new.paused), next=new.next), None

    return _update(repo, branch, apply, message, event)[0]


def _paused(reason: str | None) -> str | None:
    return clean_text(reason, "the reason of a pause") if reason is not None else None


Apply = Callable[[QueueDoc, "str | None"], "tuple[QueueDoc, Queue | None]"]


def _update(repo: Repo, branch: str, apply: Apply, message: str,
            event: dict[str, Any] | None) -> tuple[QueueDoc, str, Queue | None]:
    ref = queue_ref(branch)
    message = clean_text(message, "a queue log message")
    entry = [utc_now(), message, _check_event(event)]
    lock = FileLock(repo.path / "locks" / f"queue-{branch}.lock") if repo.path is not None else None
    for attempt in range(_TRIES):
        with repo.writing(), (lock.held("exclusive", repo.lock_timeout) if lock else nullcontext()):
            done = _update_once(repo, branch, ref, apply, message, entry)
        if done is not None:
            return done
        time.sleep(random.uniform(0.0, 0.01 * min(attempt + 1, 20)))
    raise RefConflict(f"{ref}: changed by other processes {_TRIES} times while this change was made",
                      hint="run the command again")


def _update_once(repo: Repo, branch: str, ref: str, apply: Apply, message: str,
                 entry: list[Any]) -> tuple[QueueDoc, str, Queue | None] | None:
    """One read-change-write; None when the ref moved underneath (then the caller tries again)."""
    doc, old = _current(repo, branch)
    changed, q = apply(doc, old)
    notes_before = len(repo.notes)
    repo.require_format(QUEUE_FORMAT)
    log, parts = list(doc.log), list(doc.log_parts)
    if len(log) >= LOG_PART:
        parts.append(repo.objects.put("blob", canonical_json(log)))
        log = []
    log.append(entry)
    new_doc = replace(changed, branch=branch, log=log, log_parts=parts, log_count=doc.log_count + 1)
    oid = repo.objects.put_object(new_doc)
    kill_point("queue-object")
    try:
        repo.refs.set_if_equals(ref, old, oid, f"queue: {message}")
    except RefConflict:
        return None
    kill_point("queue-ref")
    _DOCS.clear()
    _DOCS[oid] = new_doc
    if repo.path is not None:
        # each change is its own entry, at once: a loop that runs for months must not keep its
        # changes for one entry at exit (and the CLI, which records repo.changes, does not see it)
        audit.record(repo, _argv(), [RefChange(ref, old, oid)],
                     notes=[f"queue {branch}: {message}", *repo.notes[notes_before:]])
        del repo.notes[notes_before:]  # recorded here (the format raise): not again by the command
    return new_doc, oid, q


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
    oid = repo.refs.read(queue_ref(branch))
    if oid is None:
        return []
    # the log alone: the items are not checked (each log entry is, as it is read)
    doc = _DOCS.get(oid) or _read_doc(repo, oid, branch, items=False)
    where = f"{queue_ref(branch)} ({oid[:12]})"
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

