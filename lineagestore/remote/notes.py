"""The refs under ``refs/notes/`` on remotes: which travel, what each names, how they merge.

Notes have no history, so a fast-forward rule cannot decide between two values of
``refs/notes/eval``: a push or fetch that finds the remote's differ from ours merges both
(docs/format.md, "Notes on remotes"). How to merge is the notes' owner's knowledge
(``train/evalnotes.py``), a layer this package may not import: ``api.Repo`` registers it here.
It imports nothing of the remote machinery, so registering costs ``lin`` no start-up time; the
push side of the merge is in ``notesync.py``. Where no merge is registered a notes ref follows the rule of ``refs/data/`` (changed only from
the value last fetched), so nothing is ever overwritten either way.
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.errors import RefConflict
from ..core.repo import Repo
from ..core.store import ObjectStore

#: the store format that introduced refs/notes/ (docs/format.md, "Changes")
NOTES_FORMAT = 4
_TRIES = 20

#: merge(objects, ours or None, theirs) -> the merged value, written into ``objects``; it checks
#: ``theirs`` whole first and raises CorruptObject on anything malformed
Merge = Callable[[ObjectStore, str | None, str], str]
MERGES: dict[str, Merge] = {}


def register_merge(ref: str, merge: Merge) -> None:
    """Make pushes and fetches merge ``ref`` with ``merge`` (idempotent)."""
    MERGES[ref] = merge


def merge_into_local(repo: Repo, ref: str, theirs: str, why: str) -> tuple[str | None, str | None]:
    """Merge ``theirs`` (held in this store) into the local ``ref`` by compare-and-swap, merging
    again when another process moved it meanwhile. Returns (old, new) local values."""
    merge = MERGES[ref]
    for _ in range(_TRIES):
        cur = repo.refs.read(ref)
        new = merge(repo.objects, cur, theirs)
        if new == cur:
            return cur, cur
        repo.require_format(NOTES_FORMAT)
        try:
            repo.update_ref(ref, cur, new, why)
            return cur, new
        except RefConflict:
            continue  # a note was written meanwhile: merge with it
    raise RefConflict(f"{ref}: changed by other processes {_TRIES} times in a row while merging; try again")
