"""The push side of merging evaluation notes (``notes.py`` holds the rule and the registry)."""

from __future__ import annotations

from ..core.errors import InvalidName
from ..core.progress import Progress
from ..core.repo import Repo
from .backend import Entry, md5_etag
from .cache import KnownObjects
from .notes import MERGES, merge_into_local
from .session import NOTE_REFS, RemoteSession, ref_bytes, set_tracking, untrusted_hint
from .transfer import download_closure


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
