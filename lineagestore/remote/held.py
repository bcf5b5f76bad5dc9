"""The remote side of ``core.local_versions`` (guard.drop): is every object held on the backup
remote, whole and verified, before its local copy leaves; and bringing dropped weights back.

Verification reads each object from the remote and decodes it there (hash checked), a delta's
bases read from the remote itself (check.remote_bases): a copy that exists only as a delta
against a base the remote lacks is no copy. Fetching back goes through transfer.download_closure,
the path fetch and clone use: every object verified by decoding before it is stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..core.content import decode_stored
from ..core.errors import CorruptObject, LinError, ObjectNotFound, RemoteError
from ..core.progress import NULL, Progress
from ..core.repo import Repo
from .backup import backup_remote
from .cache import KnownObjects
from .check import remote_bases
from .session import RemoteSession, object_key, open_session, unordered_map
from .transfer import download_closure


def _backup_session(repo: Repo, remote: str | None) -> RemoteSession:
    name = remote or backup_remote(repo)
    if not name:
        raise RemoteError("no backup remote: weights are dropped only once [backup] remote holds them",
                          hint="`lin remote add NAME URL --backup`, then `lin push`")
    return open_session(repo, name)


def _check_one(rs: RemoteSession, oid: str) -> str | None:
    """None when the remote holds ``oid`` whole (decoded, hashed), else why not."""
    try:
        got = rs.backend.read(object_key(oid))
        if got is None:
            return f"object {oid} is missing on remote {rs.name} ({rs.url})"
        decode_stored(oid, got[0], f"object {oid} on remote {rs.name}", remote_bases(rs))
    except (CorruptObject, ObjectNotFound) as e:
        return str(e)
    return None


def verify_held(repo: Repo, ids: Iterable[str], remote: str | None = None, *,
                progress: Progress = NULL) -> str:
    """Return the remote's name when it holds every object of ``ids``; else RemoteError naming
    the first object (by id) that is missing or does not verify there."""
    rs = _backup_session(repo, remote)
    todo = sorted(ids)
    progress.start(f"verifying on {rs.name}", len(todo), "objects")
    bad: list[str] = []
    for err in unordered_map(lambda oid: _check_one(rs, oid), todo, rs.workers):
        progress.advance(1)
        if err is not None:
            bad.append(err)
    progress.finish()
    if bad:
        raise RemoteError(f"refusing to drop anything: {sorted(bad)[0]}"
                          + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""),
                          hint=f"`lin push {rs.name}` then try again; `lin verify --remote {rs.name} --full`")
    rid = rs.identity(create=False)
    if rid is not None:  # a later push there need not look for what it verified
        known = KnownObjects(repo, rid)
        known.add(todo)
        known.save()
    return rs.name


@dataclass
class RemoteCheck:
    remote: str
    checked: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (id, what is wrong)


def check_dropped(repo: Repo, ids: Iterable[str], remote: str | None = None, *,
                  progress: Progress = NULL) -> RemoteCheck:
    """``lin fsck --remote``: each dropped object decoded and hashed on the remote."""
    rs = _backup_session(repo, remote)
    res = RemoteCheck(rs.name)
    todo = sorted(ids)
    progress.start(f"checking dropped weights on {rs.name}", len(todo), "objects")
    for oid, err in unordered_map(lambda oid: (oid, _check_one(rs, oid)), todo, rs.workers):
        res.checked += 1
        progress.advance(1)
        if err is not None:
            res.problems.append((oid, err))
    progress.finish()
    res.problems.sort()
    return res


def missing_in(repo: Repo, rev: str) -> dict[str, str]:
    """Objects the version ``rev`` needs that this store lacks (id -> how the version names it)."""
    store = repo.objects
    commit_id = repo.resolve(rev)
    tree = store.get(commit_id, "commit").tree
    out: dict[str, str] = {}
    stack = [tree]
    seen: set[str] = set()
    while stack:
        oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        if not store.has(oid):
            out[oid] = f"version {repo.name_of(commit_id) or commit_id}"
            continue
        if store.header(oid).type in ("tree", "tensor-file", "chunks"):
            stack.extend(store.get(oid).links())
    return out


def fetch_dropped(repo: Repo, rev: str, remote: str | None = None, *, progress: Progress = NULL) -> int:
    """Bring back, verified, what ``rev`` needs and this store dropped; returns how many objects
    came. Nothing to do (0) when the version is whole here: no remote is contacted."""
    try:
        need = missing_in(repo, rev)
    except LinError:
        return 0  # an unknown revision or damaged metadata: the checkout itself says so
    if not need:
        return 0
    rs = _backup_session(repo, remote)
    with repo.writing():
        rid = rs.identity(create=False)
        if rid is None:
            raise RemoteError(f"remote {rs.name} ({rs.url}) is empty: cannot fetch the dropped weights of {rev}")
        count, _, _ = download_closure(repo, rs, need, KnownObjects(repo, rid), progress)
    return count
