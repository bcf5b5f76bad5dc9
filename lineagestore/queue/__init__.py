"""Training queues: the files a branch will be trained on, in order, kept in the store.

``refs/queues/BRANCH`` names a ``queue`` object (store format 2; docs/format.md, "Queues").
:func:`load` reads a queue, :func:`update` changes one crash-safely (compare-and-swap, audit
entry, log line), :func:`read_log` reads the loop's log, :func:`add_files` registers and queues
data files. ``lin queue`` (cli/queue_cmd.py) and the loop (``lineagestore.runner``) use these.

Modules, bottom up: ``model`` (Item, Queue, the stored columns checked), ``storage`` (the ref,
the document, the log), ``add`` (adding files), ``ops`` (list, remove, move, park, retry,
pause, resume).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .model import DONE, PARKED, QUEUED, RUNNING, STATUSES, Item, Queue
from .ops import (
    Changed,
    Listing,
    PauseResult,
    default_branch,
    listing,
    measured_rate,
    move,
    park,
    pause,
    remove,
    resume,
    retry,
)
from .storage import QUEUE_REF, LogEntry, load, queue_branches, queue_ref, read_doc, read_log, update, update_doc

if TYPE_CHECKING:
    from .add import AddResult, add_files, expand_paths, folder_files

_LAZY = {"AddResult", "add_files", "expand_paths", "folder_files"}


def __getattr__(name: str) -> Any:
    # adding files needs the data registry (numpy, the scanner); listing and changing a queue do
    # not, so `lin queue ls` does not import it
    if name in _LAZY:
        from . import add
        return getattr(add, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "DONE", "PARKED", "QUEUED", "QUEUE_REF", "RUNNING", "STATUSES", "AddResult", "Changed", "Item", "Listing",
    "LogEntry", "PauseResult", "Queue", "add_files", "default_branch", "expand_paths", "folder_files",
    "listing", "load", "measured_rate", "move", "park", "pause", "queue_branches", "queue_ref", "read_doc",
    "read_log", "remove", "resume", "retry", "update", "update_doc",
]
