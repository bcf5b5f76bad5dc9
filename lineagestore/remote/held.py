"""The remote side of ``core.local_versions`` (guard.drop): is every object held on the backup
remote, whole and verified, before its local copy leaves; and bringing dropped weights back.

Verification reads each object from the remote and decodes it there (hash checked), a delta's
bases read from the remote itself (check.remote_bases): a copy that exists only as a delta
against a base the remote lacks is no copy. Fetching back goes through transfer.download_closure,
the path fetch and clone use: every object verified by decoding before it is stored
(:class:`DroppedWeights`, the store's resolver of absent objects, for every reader).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
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


class DroppedWeights:
    """The one way weights dropped here (``.lineage/dropped``) come back: the store's resolver of
    absent objects (:class:`lineagestore.core.store.AbsentObjects`, installed by ``api.Repo``), so
    every reader of a blob (checkout, export, diff and show ``--tensors``, training from a
    version, evaluation) fetches what it reads; a checkout asks for its whole version at once
    (:meth:`fetch_version`: one parallel download instead of one object at a time).

    Each object comes from the remote its line of the list names, through
    transfer.download_closure (decoded and hashed, a delta's bases fetched with it) into a batch
    that becomes visible only when every object asked for arrived whole: a missing or corrupt
    copy places nothing and raises one line naming the object, its version and the remote (exit
    5). Fetched objects stay local, still listed (fsck counts them local again), until the next
    drop. ``listed`` gives the list (id -> remote name); guard.drop reads it, which remote may
    not import.
    """

    def __init__(self, repo: Repo, listed: Callable[[], Mapping[str, str]]):
        self.repo = repo
        self._listed = listed
        self._cached: Mapping[str, str] = {}
        self._lock = threading.RLock()  # one fetch at a time; the threads of a read wait for it
        self._sessions: dict[str, tuple[RemoteSession, KnownObjects]] = {}

    def __call__(self, oid: str) -> bool:
        return oid in self.fetch({oid: ""})

    def held_by(self, oid: str) -> str | None:
        """The remote named for ``oid`` in the list when this store lacks it; None otherwise."""
        with self._lock:
            if self.repo.objects.has(oid):
                return None
            if oid not in self._cached:
                self._cached = self._listed()
            return self._cached.get(oid)

    def fetch_version(self, rev: str, progress: Progress = NULL) -> int:
        """Bring back what the version ``rev`` needs and this store dropped (how many objects
        came); 0 without contacting a remote when nothing of it was dropped."""
        try:
            need = missing_in(self.repo, rev)
        except LinError:
            return 0  # an unknown revision or damaged metadata: the reader itself says so
        return len(self.fetch(need, progress))

    def fetch(self, ids: Mapping[str, str], progress: Progress = NULL) -> set[str]:
        """Fetch those of ``ids`` (id -> the version naming it, "" if unknown) that are listed
        and absent; the ids placed. Raises (nothing placed) when one cannot be brought back."""
        with self._lock:
            store = self.repo.objects
            todo = {oid: where for oid, where in ids.items() if not store.has(oid)}
            if any(oid not in self._cached for oid in todo):
                self._cached = self._listed()  # dropped since this resolver last looked
            by_remote: dict[str, dict[str, str]] = {}
            for oid, where in todo.items():
                if oid in self._cached:
                    by_remote.setdefault(self._cached[oid], {})[oid] = where
            if not by_remote:
                return set()
            with self.repo.writing():
                for name, wanted in sorted(by_remote.items()):
                    self._fetch_from(name, wanted, progress)
            return {oid for wanted in by_remote.values() for oid in wanted}

    def _session(self, name: str) -> tuple[RemoteSession, KnownObjects]:
        if name not in self._sessions:
            rs = open_session(self.repo, name)
            rid = rs.identity(create=False)
            if rid is None:
                raise RemoteError(f"remote {rs.name} ({rs.url}) is empty: it holds none of the weights dropped here",
                                  hint=f"`lin fsck --remote {rs.name}` lists what it lacks")
            self._sessions[name] = (rs, KnownObjects(self.repo, rid))
        return self._sessions[name]

    def _fetch_from(self, name: str, wanted: dict[str, str], progress: Progress) -> None:
        rs, known = self._session(name)
        failed: list[tuple[str, str]] = []
        batch = self.repo.objects.batch()
        try:
            download_closure(self.repo, rs, wanted, known, progress, into=batch,
                             on_missing=lambda oid, _where, why: failed.append((oid, why)))
            if failed:
                oid, why = min(failed)
                raise _not_brought_back(self.repo, rs, oid, wanted.get(oid) or _version_holding(self.repo, oid),
                                        why, len(failed) - 1)
            batch.flush()
        except BaseException:
            batch.discard()
            raise


def _not_brought_back(repo: Repo, rs: RemoteSession, oid: str, where: str, why: str, more: int) -> LinError:
    """The one-line error for a dropped object the remote lacks or serves damaged (exit 5)."""
    what = f"object {oid} of {where or 'no version (unreachable)'}, dropped here (core.local_versions),"
    tail = f" (and {more} more)" if more else ""
    hint = (f"nothing was placed; `lin fsck --remote {rs.name}` lists every dropped object the remote "
            "lacks or holds damaged; push it there again from a store that has it")
    if why == "missing":
        return ObjectNotFound(f"{what} is missing on remote {rs.name} ({rs.url}){tail}", hint=hint)
    detail = why.partition(": ")[2] or why
    return CorruptObject(f"{what} is damaged on remote {rs.name} ({rs.url}): {detail}{tail}", hint=hint)


def _version_holding(repo: Repo, oid: str) -> str:
    """``version NAME`` of the first version (in version order) whose files name ``oid``; "" if none.
    Only for an error's message: it reads the files of every version."""
    store = repo.objects
    for name, cid in repo.versions().items():
        try:
            stack, seen = [store.get(cid, "commit").tree], set()
            while stack:
                cur = stack.pop()
                if cur in seen or not store.has(cur):
                    continue
                seen.add(cur)
                if store.header(cur).type in ("tree", "tensor-file", "chunks"):
                    links = store.get(cur).links()
                    if oid in links:
                        return f"version {name}"
                    stack.extend(links)
        except LinError:
            continue
    return ""
