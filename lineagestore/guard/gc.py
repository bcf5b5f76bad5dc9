"""Garbage collection: a plan first; with confirmation, unreachable objects move to ``trash/``.

Reachable (never collected): what the roots reach (every ref, versions, branches, runs, data,
remotes and backups alike, HEAD, and every reflog entry younger than ``gc.reflog_expire_days``,
90, except that a training run's reflog keeps only the last ``train.keep_checkpoints`` of a run in
progress and the last checkpoint of an ended one: see :mod:`.reachability`), and every object
younger than the grace period (``gc.grace_days``, 14) together with everything it reaches. An
unreachable object's age counts from the later of its mtime (refreshed by every put), the last
reflog entry that named it, and for a checkpoint the moment its run's reflog stopped keeping it,
so a name removed yesterday keeps its objects for the whole grace period. The plan also says
which names keep the most bytes alive (:func:`.reachability.holders`).

The mark phase reads the 16-byte header of each object it reaches and decodes only objects of
:data:`~lineagestore.core.objects.LINKING_TYPES` (metadata); it never reads a blob's payload.

``collect`` holds the store lock exclusively (writers hold it shared), so no command can be
half-way through writing objects that nothing names yet. It moves objects parents-first, so at
every moment an object in ``objects/`` has every object it links to: a kill at any point leaves
a consistent store (see docs/safety.md). Objects go into a new trash batch (:mod:`.trash`);
``--empty-trash`` first deletes batches older than the grace period (a leftover of a killed
purge is finished first), then moves what is newly eligible: what goes to trash always stays
there for a grace period.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.errors import LinError, NoSpace, ObjectNotFound
from ..core.fsutil import atomic_write_bytes, fsync_dir, kill_point
from ..core.progress import NULL, Progress
from ..core.repo import Repo
from ..core.store import DiskObjectStore
from .reachability import (
    Graph,
    Holder,
    holders,
    last_named,
    reach_problems,
    ref_values,
    reflogs,
    refuse_on,
    root_sources,
    run_releases,
)
from .trash import TrashBatch, batch_info, finish_purges, make_writable, purge_batch, trash_batches, trash_dir

DAY = 86400.0
#: the order objects go to trash: containers before what they contain
_TYPE_RANK = {"commit": 0, "checkpoint": 1, "dataset": 2, "tree": 3, "tensor-file": 4, "chunks": 5,
              "records": 6, "blob": 7}


# ----------------------------------------------------------------------------- settings


def configured_grace(repo: Repo) -> float:
    """The grace period from config.toml (checked when the store was opened: never under an hour)."""
    return repo.settings.gc.grace_s


def reflog_expiry(repo: Repo) -> float:
    return repo.settings.gc.reflog_expire_s


# ----------------------------------------------------------------------------- the plan


@dataclass
class GcGroup:
    """Unreachable objects that belonged to one version (or dataset, checkpoint, or nothing)."""

    label: str  # version name, "dataset FILE", "checkpoint RUN step N" or "(no version)"
    kind: str  # version | dataset | checkpoint | orphan
    id: str | None  # the commit / dataset / checkpoint heading the group
    since: float  # unix time it was last written or named by a reflog entry
    reason: str  # the last reflog entry that named it, or why it has none
    eligible_objects: int = 0
    eligible_bytes: int = 0
    kept_objects: int = 0
    kept_bytes: int = 0
    keep_until: float | None = None  # the end of its grace period, when objects are kept

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GcPlan:
    now: float
    grace_s: float
    reflog_expire_s: float
    objects: int = 0
    reachable: int = 0
    unreachable: int = 0
    eligible_objects: int = 0
    eligible_bytes: int = 0
    kept_objects: int = 0
    kept_bytes: int = 0
    groups: list[GcGroup] = field(default_factory=list)
    trash: list[TrashBatch] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: every object's stored bytes; the names keeping reachable objects alive, largest first (what
    #: only each keeps), and what several of them keep
    bytes: int = 0
    holders: list[Holder] = field(default_factory=list)
    shared_objects: int = 0
    shared_bytes: int = 0
    #: eligible ids in the order they go to trash (containers first); not part of the report
    order: list[str] = field(default_factory=list, repr=False)
    entries: dict[str, list] = field(default_factory=dict, repr=False)  # id -> [type, bytes, label]

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("order", "entries")}
        d["groups"] = [g.to_dict() for g in self.groups]
        d["trash"] = [b.to_dict() for b in self.trash]
        d["holders"] = [asdict(h) for h in self.holders]
        return d


def plan(repo: Repo, *, grace_s: float | None = None, now: float | None = None,
         progress: Progress = NULL) -> GcPlan:
    """What ``collect`` would move to trash, and why. Reads only."""
    now = time.time() if now is None else now
    grace = configured_grace(repo) if grace_s is None else grace_s
    p = GcPlan(now=now, grace_s=grace, reflog_expire_s=reflog_expiry(repo))
    store = repo.objects
    g = Graph(store)
    reachable, logs, sources = _mark(repo, g, p, progress)

    all_ids = list(store.iter_ids())
    p.objects = len(all_ids)
    p.reachable = len(reachable - g.missing)
    unreachable = [o for o in all_ids if o not in reachable]
    p.unreachable = len(unreachable)
    named = last_named(logs)
    for oid, (t, why) in run_releases(logs, keep_checkpoints=repo.settings.train.keep_checkpoints).items():
        if t >= named.get(oid, (0.0, ""))[0]:
            named[oid] = (t, why)
    size, since = _ages(store, g, unreachable, named)
    p.holders, p.shared_objects, p.shared_bytes = holders(g, sources, lambda o: _stored_size(store, o))
    p.bytes = sum(h.bytes for h in p.holders) + p.shared_bytes + sum(size.values())
    present = [o for o in unreachable if o in since]
    young = [o for o in present if now - since[o] <= grace]
    kept = g.walk(young, stop=reachable) - g.missing
    eligible = {o for o in present if o not in kept}

    groups = _attribute(repo, g, present, since, named, reachable)
    _tally(p, g, groups, present, eligible, size, since)
    p.order = _top_down(g, eligible)
    if repo.path is not None:
        p.trash = [batch_info(b, now, grace) for b in trash_batches(repo)]
    return p


def _mark(repo: Repo, g: Graph, p: GcPlan,
          progress: Progress) -> tuple[set[str], dict[str, list], dict[str, list[str]]]:
    """Everything the roots reach (missing objects included), the reflogs read, and the roots with
    where each is named; what makes the result unknown (an unreadable ref or reflog, a missing or
    unreadable reachable object) goes to ``p.problems``."""
    refs = ref_values(repo)
    logs = reflogs(repo)
    sources = root_sources(repo, now=p.now, reflog_expire_s=p.reflog_expire_s, refs=refs, logs=logs)
    progress.start("marking reachable objects", None, "objects")
    reachable = g.walk(sources)
    progress.finish()
    p.problems.extend(reach_problems(repo, g, reachable, sources, refs))
    return reachable, logs, sources


def _stored_size(store, oid: str) -> int:
    try:
        return store.stored_size(oid)
    except LinError:  # missing or unreadable: the mark phase reported it
        return 0


def _ages(store, g: Graph, unreachable: list[str],
          named: dict[str, tuple[float, str]]) -> tuple[dict[str, int], dict[str, float]]:
    """Stored size and "unreachable since" (the later of its mtime and the last reflog entry that
    named it) of each unreachable object still present; loads their types and links into ``g``."""
    size: dict[str, int] = {}
    since: dict[str, float] = {}
    for oid in unreachable:
        try:
            size[oid] = store.stored_size(oid)
            mtime = store.mtime(oid)
        except ObjectNotFound:  # removed underneath (only without the exclusive lock)
            continue
        since[oid] = max(mtime, named.get(oid, (0.0, ""))[0])
        g.load(oid)
    return size, since


def _tally(p: GcPlan, g: Graph, groups: dict[str, GcGroup], present: list[str], eligible: set[str],
           size: dict[str, int], since: dict[str, float]) -> None:
    """Count each present unreachable object as eligible or kept, in its group and in the plan."""
    for oid in present:
        grp = groups[oid]
        if oid in eligible:
            grp.eligible_objects += 1
            grp.eligible_bytes += size[oid]
        else:
            grp.kept_objects += 1
            grp.kept_bytes += size[oid]
            until = since[oid] + p.grace_s
            grp.keep_until = max(grp.keep_until or 0.0, until)
        p.entries[oid] = [g.type.get(oid, "?"), size[oid], grp.label]
    p.groups = sorted({id(x): x for x in groups.values()}.values(), key=lambda x: (x.kind != "version", x.since))
    p.eligible_objects = len(eligible)
    p.eligible_bytes = sum(size[o] for o in eligible)
    p.kept_objects = len(present) - len(eligible)
    p.kept_bytes = sum(size[o] for o in present) - p.eligible_bytes


def _attribute(repo: Repo, g: Graph, present: list[str], since: dict[str, float],
               named: dict[str, tuple[float, str]], reachable: set[str]) -> dict[str, GcGroup]:
    """Assign each unreachable object to the version (dataset, checkpoint) it belonged to."""
    pset = set(present)
    out: dict[str, GcGroup] = {}
    heads = [o for o in present if g.type.get(o) in ("commit", "checkpoint", "dataset")]
    rank = {"commit": 0, "checkpoint": 1, "dataset": 2}
    heads.sort(key=lambda o: (rank[g.type[o]], -since[o]))
    for h in heads:
        if h in out:
            continue
        t = g.type[h]
        label, kind = h[:12], {"commit": "version", "checkpoint": "checkpoint", "dataset": "dataset"}[t]
        try:
            obj = repo.objects.get(h)
            label = (obj.name if t == "commit" else
                     f"checkpoint {obj.run} step {obj.step}" if t == "checkpoint" else f"dataset {obj.filename}")
        except LinError:
            pass
        _, why = named.get(h, (0.0, "never named: left by an interrupted or failed command"))
        grp = GcGroup(label, kind, h, since[h], why)
        for oid in g.walk([h], stop=reachable):
            if oid in pset and oid not in out:
                out[oid] = grp
    orphan = None
    for oid in present:
        if oid not in out:
            if orphan is None:
                orphan = GcGroup("(no version)", "orphan", None, 0.0,
                                 "not part of any version: left by an interrupted or failed command")
            orphan.since = max(orphan.since, since[oid])
            out[oid] = orphan
    return out


def _top_down(g: Graph, ids: set[str]) -> list[str]:
    """``ids`` ordered so that every object comes before the objects it links to."""
    indeg = dict.fromkeys(ids, 0)
    for o in ids:
        for c in g.links.get(o, ()):
            if c in indeg:
                indeg[c] += 1
    ready = deque(sorted((o for o, n in indeg.items() if n == 0),
                         key=lambda o: (_TYPE_RANK.get(g.type.get(o, ""), -1), o)))
    order = []
    while ready:
        o = ready.popleft()
        order.append(o)
        for c in g.links.get(o, ()):
            if c in indeg:
                indeg[c] -= 1
                if indeg[c] == 0:
                    ready.append(c)
    if len(order) != len(ids):  # a cycle cannot happen with content ids; keep what is left last
        order.extend(sorted(set(ids) - set(order)))
    return order


# ----------------------------------------------------------------------------- trash


# ----------------------------------------------------------------------------- collecting


@dataclass
class GcResult:
    plan: GcPlan
    batch: str | None = None  # the trash batch objects were moved into
    moved_objects: int = 0
    moved_bytes: int = 0
    purged_batches: list[str] = field(default_factory=list)
    purged_objects: int = 0
    purged_bytes: int = 0
    repack: dict | None = None  # guard.repack's report, when the store has packs

    def to_dict(self) -> dict:
        d = asdict(self)
        d["plan"] = self.plan.to_dict()
        return d


def collect(repo: Repo, *, grace_s: float | None = None, empty_trash: bool = False,
            progress: Progress = NULL, on_wait=None, now: float | None = None) -> GcResult:
    """Move eligible objects to trash (and with ``empty_trash`` delete expired trash batches).

    Holds the store lock exclusively. Refuses (CheckFailed) when a reachable object is missing or
    unreadable or a ref cannot be read: what is reachable would then be unknown.
    """
    trash = trash_dir(repo)
    with repo.exclusive(on_wait):
        finish_purges(trash)
        _restore_folder_modes(repo)
        now = time.time() if now is None else now
        purged = []
        if empty_trash:  # first, so that a full disk gets space back before anything moves
            grace = configured_grace(repo) if grace_s is None else grace_s
            for b in trash_batches(repo):
                info = batch_info(b, now, grace)
                if info.expired:
                    purge_batch(b)
                    purged.append(info)
        p = plan(repo, grace_s=grace_s, now=now, progress=progress)
        refuse_on(p.problems, "gc refuses to delete anything")
        res = GcResult(p, purged_batches=[b.name for b in purged],
                       purged_objects=sum(b.objects for b in purged), purged_bytes=sum(b.bytes for b in purged))
        if repo.path is not None and isinstance(repo.objects, DiskObjectStore) and repo.objects.packs.packs():
            # a store that has packs (made by `lin repack`, which raised it to format 3) is
            # repacked here: what became cold goes into packs, and what goes to trash leaves
            # every pack first (written loose, self-contained), deltas on it re-encoded. A store
            # without packs is not repacked by gc, so gc never raises a store's format.
            from .repack import repack
            res.repack = repack(repo, drop=set(p.order), locked=True, progress=progress, now=now).to_dict()
        if p.order:
            _move_to_trash(repo, p, res, progress)
    return res


def _move_to_trash(repo: Repo, p: GcPlan, res: GcResult, progress: Progress) -> None:
    assert repo.path is not None
    store = repo.objects
    assert isinstance(store, DiskObjectStore)  # a store with a path keeps its objects there (Repo.open)
    trash = trash_dir(repo)
    name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(p.now)) + f"-{os.getpid()}-{secrets.token_hex(3)}"
    batch = trash / name
    batch.mkdir(parents=True)
    groups = [g.to_dict() for g in p.groups if g.eligible_objects]
    manifest = {"format": 1, "created": p.now, "grace_s": p.grace_s, "groups": groups,
                "objects": [[o, *p.entries[o]] for o in p.order]}
    try:
        atomic_write_bytes(batch / "manifest.json", json.dumps(manifest).encode(), repo.tmp_dir)
    except NoSpace:
        pass  # the manifest only describes the batch; on a full disk, moving (renames) still works
    touched: set[Path] = set()
    progress.start("moving unreachable objects to trash", len(p.order), "objects")
    try:
        for oid in p.order:
            src = store.path_for(oid)
            dst = batch / oid[:2] / oid[2:]
            dst.parent.mkdir(exist_ok=True)
            if src.parent not in touched:
                make_writable(src.parent)
                touched.add(src.parent)
            try:
                os.rename(src, dst)
            except FileNotFoundError:
                continue
            kill_point("gc-move")
            res.moved_objects += 1
            res.moved_bytes += p.entries[oid][1]
            progress.advance(1)
    finally:
        progress.finish()
        for folder in touched:
            os.chmod(folder, 0o555)
            fsync_dir(folder)
        for d in {batch} | {batch / o[:2] for o in p.order}:
            if d.is_dir():
                fsync_dir(d)
        fsync_dir(trash)
    res.batch = name


def _restore_folder_modes(repo: Repo) -> None:
    """Make every object folder read-only again (a killed gc may have left some writable)."""
    assert repo.path is not None
    root = repo.path / "objects"
    try:
        dirs = os.listdir(root)
    except FileNotFoundError:
        return
    for d in dirs:
        p = root / d
        if len(d) == 2 and p.is_dir() and p.stat().st_mode & 0o222:
            os.chmod(p, 0o555)
