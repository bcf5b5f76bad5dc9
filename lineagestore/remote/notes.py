"""The refs under ``refs/notes/`` on remotes: which travel, what each names, how they merge.

Notes have no history, so a fast-forward rule cannot decide between two values of
``refs/notes/eval``: a push or fetch that finds the remote's differ from ours merges both
(docs/format.md, "Notes on remotes"). How to merge is the notes' owner's knowledge
(``train/evalnotes.py``), a layer this package may not import: ``api.Repo`` registers it here.
Where no merge is registered a notes ref follows the rule of ``refs/data/`` (changed only from
the value last fetched), so nothing is ever overwritten either way.
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.errors import InvalidName, RefConflict
from ..core.progress import Progress
from ..core.repo import Repo
from ..core.store import ObjectStore
from .backend import Entry, md5_etag
from .cache import KnownObjects
from .session import NOTE_REFS, RemoteSession, ref_bytes, set_tracking, untrusted_hint
from .transfer import download_closure

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


def merge_remote_notes(repo: Repo, rs: RemoteSession, wanted: dict[str, tuple[str, str]], listing: dict[str, Entry],
                       known: KnownObjects, progress: Progress) -> None:
    """Notes have no history: where the remote holds other notes than ours, fetch them (checked
    whole, as a fetch does), merge them into ours, and push the union (``wanted`` is updated), so
    a push never drops notes another machine pushed. The tracking ref records the remote's value,
    from which the push's conditional write then moves it."""
    for ref in sorted(set(wanted) & set(MERGES)):
        src, mine = wanted[ref]
        if src != ref or ref not in listing or listing[ref].etag == md5_etag(ref_bytes(mine)):
            continue
        got = rs.read_ref(ref)
        if got is None or got[0] == mine:
            continue
        theirs = got[0]
        batch = repo.objects.batch()
        try:
            download_closure(repo, rs, {theirs: f"{ref} on {rs.name}"}, known, progress, into=batch)
            if batch.header(theirs).type != NOTE_REFS[ref]:
                raise InvalidName(f"ref {ref} on remote {rs.name} names a {batch.header(theirs).type}, "
                                  f"not a {NOTE_REFS[ref]}", hint=untrusted_hint(rs.name))
            MERGES[ref](batch, None, theirs)  # checked whole before anything is placed
            batch.flush()
        except BaseException:
            batch.discard()
            raise
        _, new = merge_into_local(repo, ref, theirs, f"push: merge {rs.name}")
        set_tracking(repo, rs.name, {ref: theirs}, f"push: {rs.name}")
        assert new is not None  # a merge with the remote's notes holds them
        wanted[ref] = (ref, new)
