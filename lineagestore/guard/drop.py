"""``core.local_versions``: weights of old versions leave the local store, their copy on the backup remote.

**What may be dropped** (docs/format.md "Dropped weights"): blobs named by a ``tensor-file``
(tensor pieces) or by a ``chunks`` object (parts of a large file) that only versions older than
the last ``core.local_versions`` of each branch hold. Never dropped: anything a kept version
holds (the last N of each branch, HEAD, user tags, hot versions, kept run checkpoints), anything
reached other than through a version's tree (datasets, records, ledger, queues), and every
object that names others (commits, trees, tensor files, chunks): metadata always stays local.

**The numcopies rule**: a drop happens only after ``verify`` (given by the caller: the remote
layer, which guard may not import) confirmed in the same command that the backup remote holds
every candidate, decoded and hashed there with its delta bases read from the remote itself.

**Crash safety**: the list ``.lineage/dropped`` is written (atomically, durably) *before* any
object is removed, so after a kill -9 an object is either present or listed; a listed object
that is still present is harmless (fsck counts it local). Packed candidates leave their packs
through :func:`guard.repack.repack` with ``drop`` (deltas resting on them are re-encoded first).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ..core.errors import InvalidInput, LinError
from ..core.fsutil import fsync_dir, kill_point
from ..core.progress import NULL, Progress
from ..core.repo import Repo
from ..core.store import DiskObjectStore
from .dropped import Dropped, read_dropped, write_dropped
from .reachability import refuse_on


@dataclass
class DropPlan:
    local_versions: int
    kept_versions: int = 0  # versions whose weights stay local
    cold_versions: int = 0  # versions whose weights may leave
    candidates: dict[str, int] = field(default_factory=dict)  # id -> decoded size, present here now
    already_dropped: int = 0  # listed and absent before this command


@dataclass
class DropResult:
    plan: DropPlan
    remote: str = ""
    dropped_objects: int = 0
    dropped_bytes: int = 0
    seconds: float = 0.0
    repack: dict | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["plan"]["candidates"] = len(self.plan.candidates)
        return d


def plan_drop(repo: Repo, local_versions: int, now: float | None = None) -> DropPlan:
    """Which weights may leave (see the module's docstring); changes nothing."""
    from .repack import files_of, temperature
    store = repo.objects
    keep_n = max(local_versions, repo.settings.core.hot_versions)
    temp = temperature(repo, keep_n, time.time() if now is None else now)
    refuse_on(temp.problems, "nothing may be dropped")  # which versions are old is not known
    g = temp.graph
    keep = files_of(repo, g, temp.hot_roots | temp.kept_checkpoints)
    commits = [o for o in temp.reachable if g.type.get(o) == "commit"]
    cold = [o for o in commits if o not in temp.hot_roots]
    trees: set[str] = set()
    for oid in commits:
        try:
            trees.add(store.get(oid, "commit").tree)
        except LinError:
            continue
    # what is reached other than through a version's files (datasets, records, queues, ...)
    files = files_of(repo, g, set(commits))
    elsewhere = g.walk([o for o in temp.reachable if g.type.get(o) not in ("commit", "tree", None)
                        and o not in files], stop=trees)
    plan = DropPlan(local_versions, kept_versions=len(commits) - len(cold), cold_versions=len(cold))
    listed = read_dropped(repo)
    plan.already_dropped = sum(1 for o in listed if not store.has(o))
    for oid in files_of(repo, g, set(cold)):
        if g.type.get(oid) not in ("tensor-file", "chunks"):
            continue
        for child in g.links.get(oid, ()):
            if child in keep or child in elsewhere or g.type.get(child) != "blob" or not store.has(child):
                continue
            plan.candidates[child] = store.header(child).size
    return plan


def drop(repo: Repo, local_versions: int, verify: Callable[[dict[str, int]], str], *,
         dry_run: bool = False, progress: Progress = NULL, on_wait=None) -> DropResult:
    """Drop the weights :func:`plan_drop` names once ``verify(candidates)`` returned the name of
    the remote that holds them all (it raises, naming the object, when one is not there whole).

    The (slow) verification runs before the store lock is taken, so writers go on meanwhile; the
    plan is then made again under the lock held exclusively (as gc: no checkout reads an object
    while it leaves), and what it adds is verified there before anything is dropped."""
    started = time.monotonic()
    if local_versions < 1:
        raise InvalidInput("core.local_versions is 0 (off): set it to the number of versions of each "
                           "branch whose weights stay local: `local_versions = 3` under [core] in .lineage/config.toml")
    first = plan_drop(repo, local_versions)
    res = DropResult(first)
    if dry_run or not first.candidates:
        res.seconds = time.monotonic() - started
        return res
    res.remote = verify(first.candidates)
    with repo.exclusive(on_wait):
        plan = res.plan = plan_drop(repo, local_versions)
        added = {oid: n for oid, n in plan.candidates.items() if oid not in first.candidates}
        if added and verify(added) != res.remote:  # the backup remote changed meanwhile: all again
            res.remote = verify(plan.candidates)
        if plan.candidates:
            _apply(repo, plan, res, progress)
    res.seconds = time.monotonic() - started
    return res


def _apply(repo: Repo, plan: DropPlan, res: DropResult, progress: Progress) -> None:
    store = repo.objects
    assert isinstance(store, DiskObjectStore) and repo.path is not None
    repo.require_format(3)  # an older lin would take the absent weights for damage
    # never pruned: an unreachable tensor file waiting for gc's grace period still names them
    listed = read_dropped(repo)
    listed.update({oid: Dropped(size, res.remote) for oid, size in plan.candidates.items()})
    write_dropped(repo, listed)  # (1) listed before anything leaves
    kill_point("drop-listed")
    drop_set = set(plan.candidates)
    if store.packs.packs():  # (2) packed candidates leave their packs (written loose first)
        from .repack import repack
        res.repack = repack(repo, drop=drop_set, locked=True, progress=progress).to_dict()
    progress.start("dropping weights kept on the remote", len(drop_set), "objects")
    folders = set()
    for oid in sorted(drop_set):  # (3) the loose files
        if store.is_loose(oid):
            folders.add(store.path_for(oid).parent)
            store.remove(oid)
            kill_point("drop-remove")
        res.dropped_objects += 1
        res.dropped_bytes += plan.candidates[oid]
        progress.advance(1)
    progress.finish()
    for folder in folders:
        if folder.is_dir():
            os.chmod(folder, 0o555)
            fsync_dir(folder)


@dataclass
class LocalSummary:
    """How much of this store's content is here, and how much only on a remote."""

    dropped_objects: int = 0  # listed and absent: held only on the remote
    dropped_bytes: int = 0
    remotes: list[str] = field(default_factory=list)
    refetched: int = 0  # listed but present again (fetched back by a checkout)


def local_summary(repo: Repo) -> LocalSummary:
    out = LocalSummary()
    remotes: set[str] = set()
    for oid, d in read_dropped(repo).items():
        if repo.objects.has(oid):
            out.refetched += 1
            continue
        out.dropped_objects += 1
        out.dropped_bytes += d.size
        remotes.add(d.remote)
    out.remotes = sorted(remotes)
    return out
