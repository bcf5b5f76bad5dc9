"""``lin repack``: cold objects into packs (core.packs) with model-aware codecs; hot ones loose and raw.

**Hot** (checked out often, kept as today: loose files, raw weights copied in the kernel): every
object reached from the tip of each branch and the ``core.hot_versions`` - 1 versions before it
(first parents), HEAD, user tags (``refs/tags/`` names that are not version names), and
checkpoints of training runs that are still kept (refs/runs and what their reflog keeps).

**Cold**: every other reachable object. Metadata (commits, trees, tensor files, chunks,
datasets, records, queue documents) always goes into packs, zstd-compressed (``core.compression``
decides as for loose objects); so do blobs that are not hot. A cold blob that is a piece of a
tensor is stored as a reverse delta (codec 3) against the same piece of the same tensor in the
next newer version of its branch (git keeps recent objects whole, so do we: the newest versions
are hot and raw, older ones deltas towards them), or as byte planes (codec 2) when it is a
keyframe (every ``core.keyframe_interval``-th version counted from the branch's root), when no
base helps, or when a delta would make a chain longer than ``core.delta_max_depth``; raw when
neither saves ``core.codec_min_saving``.

Unreachable objects are left where they are (gc decides about them): loose ones stay loose, and
packed ones are written back loose, with their pack's mtime as their age, when their pack is
rewritten. A packed object that became hot again is written back loose (raw) too.

Crash safety (kill -9 anywhere loses nothing): objects leave a pack only after they are durable
elsewhere, in this order: (1) objects that must leave a pack are written loose; (2) the new packs
are written to tmp/, fsynced and renamed into ``objects/pack/`` (pack, then index); (3) the packs
they replace are deleted; (4) loose copies of objects now packed are deleted. gc calls
:func:`repack` under its exclusive lock with ``drop`` = what it will move to trash: those leave
every pack (written loose first, self-contained, for the trash) and deltas based on them are
re-encoded, so the invariant "an object present has every object it needs" holds throughout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field

from ..core.codecs import BASE_ID_SIZE, stored_object
from ..core.content import DecodedCache
from ..core.errors import CorruptObject, LinError, LockTimeout
from ..core.fsutil import FileLock, fsync_dir, kill_point
from ..core.names import parse_version
from ..core.objects import (
    CHUNK_SIZE,
    CODEC_DELTA,
    CODEC_NAMES,
    CODEC_PLANES,
    CODEC_RAW,
    HEADER_SIZE,
    encode_payload,
    pack_header,
)
from ..core.packs import Pack, PackEntry, PackWriter, remove_pack, tensor_pieces
from ..core.progress import NULL, Progress
from ..core.repo import Repo
from ..core.store import DiskObjectStore
from .reachability import Graph, reach_problems, ref_values, reflogs, refuse_on, root_sources

#: a new pack is closed and the next one started past this many bytes
PACK_LIMIT = 4 << 30
#: a pack holding at least this many times the bytes of all smaller packs together is not
#: merged (``git repack --geometric``): see :func:`packs_to_merge`
GEOMETRIC_FACTOR = 2
_WINDOW = 8  # pieces encoded ahead of the one being written


@dataclass
class RepackReport:
    dry_run: bool
    hot_versions: int
    hot_commits: int = 0
    hot_objects: int = 0  # loose objects kept loose because hot
    packed_objects: int = 0  # objects written into new packs
    copied_objects: int = 0  # of them, copied as stored from merged packs (not encoded again)
    raw_bytes: int = 0  # their decoded size
    copied_bytes: int = 0  # the stored size of those copied
    stored_bytes: int = 0  # their stored size in the packs
    codecs: dict[str, int] = field(default_factory=dict)  # objects packed per codec
    keyframes: int = 0
    unpacked_objects: int = 0  # written back loose (hot again, unreachable, or leaving with gc)
    packs_written: list[str] = field(default_factory=list)
    packs_removed: list[str] = field(default_factory=list)
    loose_removed: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.stored_bytes / self.raw_bytes if self.raw_bytes else 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 4)}


# ----------------------------------------------------------------------------- hot and cold


def _first_parents(repo: Repo, tip: str) -> list[str]:
    """The first-parent chain from ``tip`` back to its root, newest first (stops at a missing
    or unreadable commit)."""
    out: list[str] = []
    seen: set[str] = set()
    cur: str | None = tip
    while cur and cur not in seen:
        seen.add(cur)
        try:
            c = repo.objects.get(cur, "commit")
        except LinError:
            break
        out.append(cur)
        cur = c.parents[0] if c.parents else None
    return out


@dataclass
class _Temperature:
    chains: list[list[str]]  # first-parent chains of the branches, newest first
    hot_roots: set[str]
    kept_checkpoints: set[str]  # every checkpoint still kept: unfinished runs' and ended runs' (reflogs)
    reachable: set[str]
    hot: set[str]  # everything the hot roots reach
    graph: Graph
    problems: list[str]  # what makes the walk incomplete (reachability.reach_problems)


def temperature(repo: Repo, hot_versions: int, now: float) -> _Temperature:
    refs = ref_values(repo)
    g = Graph(repo.objects)
    sources = root_sources(repo, now=now, refs=refs, logs=reflogs(repo))
    reachable = g.walk(sources)
    chains: list[list[str]] = []
    hot_roots: set[str] = set()
    for name, oid in sorted(refs.values.items()):
        if name.startswith("refs/heads/"):
            chain = _first_parents(repo, oid)
            chains.append(chain)
            hot_roots.update(chain[:hot_versions])
        elif name == "HEAD" or (name.startswith("refs/tags/") and not parse_version(name[len("refs/tags/"):])):
            hot_roots.add(oid)
    head = repo.head()
    if head:
        hot_roots.add(head)
    # A run that can still resume (refs/runs/NAME) reads its checkpoint soon: hot. An ended
    # run's checkpoints stay kept (its reflog) but are not read again unless asked for: cold,
    # or the weights of every version lin train and lin run made would stay raw for 90 days.
    kept = {oid for oid in sources if g.load(oid) == "checkpoint"}
    hot_roots.update(oid for name, oid in refs.values.items() if name.startswith("refs/runs/") and oid in kept)
    return _Temperature(chains, hot_roots, kept, reachable, files_of(repo, g, hot_roots), g,
                        reach_problems(repo, g, reachable, sources, refs))


def files_of(repo: Repo, g: Graph, roots: set[str]) -> set[str]:
    """What the versions (checkpoints) ``roots`` hold: their commits and everything their trees
    reach, without following a commit's parents or datasets (those versions are not hot)."""
    start: list[str] = []
    for oid in roots:
        t = g.load(oid)
        if t == "commit":
            try:
                start.append(repo.objects.get(oid, "commit").tree)
            except LinError:
                continue
        elif t is not None:
            start.extend(g.links.get(oid, ()) if t == "checkpoint" else [oid])
    return g.walk(start) | set(roots)


# ----------------------------------------------------------------------------- codec choice


@dataclass
class _Choice:
    itemsize: int
    base: str | None  # delta base, or None: planes
    keyframe: bool


def _choose_codecs(repo: Repo, temp: _Temperature, candidates: set[str], interval: int,
                   max_depth: int, depth_of: _Depths, whole_bases: bool = False) -> dict[str, _Choice]:
    """For each cold tensor piece among ``candidates``: its element size and delta base.

    Branch by branch, newest version first, a piece not yet chosen takes as base the piece at the
    same place in the next newer version when that differs and has the same size, unless its
    version is a keyframe or the chain through the base would be longer than ``max_depth``.
    With ``whole_bases`` the base is instead the same piece in the nearest newer version where
    it is stored whole (a keyframe or a hot version): every delta one link deep, each larger."""
    memo: dict[str, list] = {}
    chosen: dict[str, _Choice] = {}
    depth: dict[str, int] = {}  # chain length below an object this run chose
    for chain in temp.chains:
        newer: dict[tuple[str, str, int], tuple[str, int]] = {}
        whole: dict[tuple[str, str, int], tuple[str, int]] = {}  # the nearest newer piece stored whole
        for i, cid in enumerate(chain):
            position = len(chain) - 1 - i  # from the branch's root
            pieces = tensor_pieces(repo.objects, cid, memo)
            for key, (blob, itemsize) in pieces.items():
                if blob not in candidates or blob in chosen:
                    if whole_bases and (depth[blob] if blob in depth else depth_of(blob)) == 0:
                        whole[key] = (blob, itemsize)
                    continue
                keyframe = position % interval == 0
                base = None
                nb = (whole if whole_bases else newer).get(key)
                if not keyframe and nb is not None and nb[0] != blob:
                    d = depth[nb[0]] if nb[0] in depth else depth_of(nb[0])
                    if d is not None and d + 1 + depth_of.above(blob) <= max_depth:
                        base = nb[0]
                        depth[blob] = d + 1
                chosen[blob] = _Choice(itemsize, base, keyframe)
                if depth.setdefault(blob, 0) == 0:
                    whole[key] = (blob, itemsize)
            newer = pieces
    return chosen


class _Depths:
    """Delta chain lengths of objects already stored: below an object (how many deltas reading
    it follows) and above it (the longest chain of deltas resting on it), from packed headers."""

    def __init__(self, store: DiskObjectStore):
        self.store = store
        self.below: dict[str, int | None] = {}
        self.resting: dict[str, list[str]] = {}
        for p in store.packs.packs():
            for oid, e in p.entries():
                head = p.read_head(e, _HEAD)
                if _delta_base(head):
                    self.resting.setdefault(head[HEADER_SIZE:].hex(), []).append(oid)
        self._above: dict[str, int] = {}

    def __call__(self, oid: str) -> int | None:
        """Deltas followed to read ``oid`` (0: stored whole); None if it cannot be read."""
        if oid not in self.below:
            cur, n, result = oid, 0, None
            while n <= 1000:  # a loop (corrupt) ends here as unreadable
                head = _stored_head(self.store, cur)
                if head is None:
                    break
                base = _delta_base(head)
                if base is None:
                    result = n
                    break
                cur, n = base, n + 1
            self.below[oid] = result
        return self.below[oid]

    def above(self, oid: str) -> int:
        if oid not in self._above:
            self._above[oid] = 0  # a loop of deltas (corrupt) counts as none
            self._above[oid] = max((1 + self.above(x) for x in self.resting.get(oid, ())), default=0)
        return self._above[oid]


_HEAD = HEADER_SIZE + BASE_ID_SIZE  # the stored bytes that say whether (and on what) an object is a delta


def _delta_base(head: bytes) -> str | None:
    """The base id of a delta object from its first stored bytes; None for any other codec."""
    if len(head) >= _HEAD and head[5] == CODEC_DELTA:
        return head[HEADER_SIZE:_HEAD].hex()
    return None


def _stored_head(store: DiskObjectStore, oid: str) -> bytes | None:
    e = store.packs.find(oid)
    if e is not None:
        return e.pack.read_head(e, _HEAD)
    try:
        return store.files.read(oid, _HEAD)
    except LinError:
        return None


# ----------------------------------------------------------------------------- the plan


@dataclass
class _Plan:
    to_pack: list[str]  # loose (or re-encoded) objects for the new packs, in link order
    copy: list[tuple[str, PackEntry]]  # (id, pack entry) copied as stored from replaced packs
    reencode: set[str]  # packed deltas whose base leaves: decoded and encoded again
    unpack: dict[str, float | None]  # id -> mtime to give it (None: now), written loose
    replace: list  # packs rewritten
    loose_packed: list[str]  # loose objects removed once the new packs are durable
    codecs: dict[str, _Choice]


def _damaged_packs(packs: list[Pack], loose: set[str]) -> set[str]:
    """Packs holding a damaged copy of an object also held loose (``lin fsck --repair`` writes
    the good copy loose, as packs are never changed): rewritten without it, from the loose copy,
    so that a loose copy is never removed in favour of a packed one that fails its check."""
    out = set()
    for p in packs:  # looked up by the loose ids: few, where the packs may hold millions
        for oid in loose:
            e = p.find(oid)
            if e is not None and p.name not in out:
                try:
                    p.read_checked(oid, e)
                except CorruptObject:
                    out.add(p.name)
    return out


def packs_to_merge(packs: list[Pack]) -> set[str]:
    """The names of the packs a repack merges into its new pack (copying their stored bytes).

    As ``git repack --geometric=2``: the packs under ``PACK_LIMIT``, smallest first, keep a
    geometric progression (each at least twice the bytes of all smaller ones together); the
    smallest packs up to the last one that breaks it are merged. A repack after every version
    (``lin run``) then works as a binary counter: a stored byte is copied O(log n) times over
    n repacks, and the large packs are not rewritten each time a few small ones pile up; a
    full pack is never merged."""
    small = sorted((p for p in packs if p.size < PACK_LIMIT), key=lambda p: (p.size, p.name))
    split, below = 0, 0
    for j, p in enumerate(small):
        if p.size < GEOMETRIC_FACTOR * below:
            split = j + 1
        below += p.size
    return {p.name for p in small[:split]} if split >= 2 else set()


def _plan(repo: Repo, store: DiskObjectStore, temp: _Temperature, drop: set[str], settings,
          whole_bases: bool = False) -> _Plan:
    packs = store.packs.packs()
    loose = list(store.files.ids())
    loose_set = set(loose)
    merge = packs_to_merge(packs) | _damaged_packs(packs, loose_set)
    packed_ids: dict[str, PackEntry] = {}
    replace = []
    resting_on_drop: set[str] = set()
    for p in packs:
        rewrite = p.name in merge
        for oid, e in p.entries():
            packed_ids.setdefault(oid, e)
            if oid in drop:
                rewrite = True
            elif drop:
                base = _delta_base(p.read_head(e, _HEAD))
                if base is not None and base in drop:
                    resting_on_drop.add(oid)
                    rewrite = True
        if rewrite:
            replace.append(p)
    replaced = {p.name for p in replace}
    cold_loose = [o for o in loose if o in temp.reachable and o not in temp.hot and o not in drop]
    # hot metadata goes into packs too: only weights and files are read in bulk by a checkout
    cold_loose += [o for o in loose if o in temp.hot and o not in drop and temp.graph.type.get(o) not in ("blob", None)]
    to_pack = [o for o in cold_loose if o not in packed_ids or packed_ids[o].pack.name in replaced]
    copy: list[tuple[str, PackEntry]] = []
    unpack: dict[str, float | None] = {}
    seen = set(to_pack)
    for p in replace:
        for oid, e in p.entries():
            if oid in seen:
                continue
            seen.add(oid)
            if oid in drop or oid not in temp.reachable:
                if oid not in loose_set:
                    unpack[oid] = None if oid in drop else p.mtime
            elif oid in temp.hot and temp.graph.type.get(oid) == "blob":
                if oid not in loose_set:
                    unpack[oid] = None
            elif oid in resting_on_drop:
                to_pack.append(oid)
            else:
                copy.append((oid, e))
    for oid in loose:  # a hot piece received as a delta (a small push): whole again for checkouts
        if oid in temp.hot and oid not in drop and temp.graph.type.get(oid) == "blob" and oid not in unpack:
            if _delta_base(store.files.read(oid, _HEAD)) is not None:
                unpack[oid] = None
    for oid in packed_ids:  # hot blobs in packs that stay: loose again for checkouts
        if oid in temp.hot and oid not in loose_set and oid not in unpack and temp.graph.type.get(oid) == "blob":
            unpack[oid] = None
    depths = _Depths(store)
    blobs = {o for o in to_pack if temp.graph.type.get(o) == "blob"}
    interval = min(settings.keyframe_interval, settings.delta_max_depth + 1)
    codecs = (_choose_codecs(repo, temp, blobs, interval, settings.delta_max_depth, depths, whole_bases)
              if blobs else {})
    for ch in codecs.values():  # a base that leaves with gc, is not kept, or was dropped (guard.drop)
        if ch.base is not None and (ch.base in drop or ch.base not in temp.reachable or not store.has(ch.base)):
            ch.base = None
    return _Plan(to_pack, copy, resting_on_drop, unpack, replace,
                 [o for o in cold_loose if o in loose_set], codecs)


# ----------------------------------------------------------------------------- encoding


def _encode(store: DiskObjectStore, oid: str, choice: _Choice | None, compression: str, level: int,
            min_saving: float, cache: DecodedCache) -> tuple[bytes, int, int]:
    """(stored bytes, codec, decoded size) of one object for a pack. A tensor piece and its
    base are read through ``cache``: the piece packed just before is usually this one's base
    (:func:`_link_order`), so each is read and verified once."""
    if choice is None:
        type_name, whole = store.get_raw(oid)
        codec, payload = encode_payload(whole, level, "zstd" if compression == "auto" else compression)
        return pack_header(type_name, codec, len(whole)) + bytes(payload), codec, len(whole)
    type_name, data, _ = cache.load(oid, lambda: (*store.get_buffer(oid), 0))
    size = memoryview(data).nbytes
    if compression == "none":
        return pack_header(type_name, CODEC_RAW, size) + bytes(data), CODEC_RAW, size
    codec, stored = CODEC_RAW, b""
    if choice.base is not None:
        base: str = choice.base
        _, base_data, _ = cache.load(base, lambda: (*store.get_buffer(base), 0))
        if memoryview(base_data).nbytes == size:
            codec, stored = stored_object(type_name, data, CODEC_DELTA, choice.itemsize,
                                          base=(base, base_data), min_saving=min_saving)
    if codec == CODEC_RAW:
        codec, stored = stored_object(type_name, data, CODEC_PLANES, choice.itemsize, min_saving=min_saving)
    return stored, codec, size


def _link_order(to_pack: list[str], codecs: dict[str, _Choice]) -> list[str]:
    """``to_pack`` with every tensor piece right after its delta base (newest to oldest along
    each chain; other objects first), so that a piece's base was read just before it."""
    pieces = [o for o in to_pack if o in codecs]
    resting: dict[str, list[str]] = {}
    roots = []
    for o in pieces:
        b = codecs[o].base
        if b is not None and b in codecs and b != o:
            resting.setdefault(b, []).append(o)
        else:
            roots.append(o)
    out: list[str] = []
    for root in roots:
        stack = [root]
        while stack:
            o = stack.pop()
            out.append(o)
            stack.extend(reversed(resting.get(o, ())))
    placed = set(out)
    return [o for o in to_pack if o not in codecs] + out + [o for o in pieces if o not in placed]


def _self_contained(store: DiskObjectStore, oid: str, level: int, compression: str) -> bytes:
    """An object's stored form without a delta (for a loose file: the trash, a hot version)."""
    type_name, data = store.get_raw(oid)
    codec, payload = encode_payload(data, level, compression)
    return pack_header(type_name, codec, len(data)) + bytes(payload)


# ----------------------------------------------------------------------------- running


def repack(repo: Repo, *, dry_run: bool = False, drop: set[str] | frozenset[str] = frozenset(),
           locked: bool = False, if_idle: bool = False, progress: Progress = NULL, on_wait=None,
           now: float | None = None, whole_bases: bool = False) -> RepackReport:
    """Pack what is cold, unpack what is hot again, and (for gc) take ``drop`` out of every pack.

    Holds the store lock shared (writers go on; gc waits) and ``locks/repack.lock`` (one repack
    at a time), unless ``locked`` (gc, holding the store lock exclusively). With ``if_idle``
    (the background repack after a version): nothing when another repack runs or the store has
    no packs yet (only `lin repack` starts packing a store: it raises the format).
    ``whole_bases``: deltas against the nearest newer piece stored whole instead of a chain
    (one link each, larger; benchmarks/bench_storage.py measures both, docs/benchmarks.md).
    """
    started = time.monotonic()
    store = repo.objects
    settings = repo.settings.core
    rep = RepackReport(dry_run=dry_run, hot_versions=settings.hot_versions)
    if repo.path is None or not isinstance(store, DiskObjectStore):
        rep.notes.append("an in-memory store has no packs")
        return rep
    if if_idle and not store.packs.packs():
        rep.notes.append("the store has no packs: `lin repack` starts packing it")
        return rep
    with ExitStack() as stack:
        if not locked:
            stack.enter_context(repo.writing(on_wait))
            try:
                stack.enter_context(FileLock(repo.path / "locks" / "repack.lock").held(
                    "exclusive", 0.0 if if_idle else repo.lock_timeout, on_wait))
            except LockTimeout:
                if not if_idle:
                    raise
                rep.notes.append("another repack is running")
                return rep
        _remove_orphan_indexes(store)
        temp = temperature(repo, settings.hot_versions, time.time() if now is None else now)
        refuse_on(temp.problems, "repack refuses to change anything")  # what is cold is not known
        rep.hot_commits = sum(1 for o in temp.hot_roots if temp.graph.type.get(o) == "commit")
        plan = _plan(repo, store, temp, set(drop), settings, whole_bases)
        rep.hot_objects = sum(1 for o in temp.hot if temp.graph.type.get(o) == "blob")
        if dry_run:
            rep.packed_objects = len(plan.to_pack) + len(plan.copy)
            rep.unpacked_objects = len(plan.unpack)
            rep.packs_removed = [p.name for p in plan.replace]
            rep.loose_removed = len(plan.loose_packed)
        elif plan.to_pack or plan.copy or plan.unpack or plan.replace or plan.loose_packed:
            # loose copies alone of what packs hold: a repack killed before deleting them, or
            # pieces that were hot (written back loose) and turned cold again
            _execute(repo, store, plan, rep, progress)
    rep.seconds = time.monotonic() - started
    return rep


def _execute(repo: Repo, store: DiskObjectStore, plan: _Plan, rep: RepackReport, progress: Progress) -> None:
    settings = repo.settings.core
    # (1) what leaves a pack is made durable loose first
    progress.start("unpacking objects", len(plan.unpack), "objects")
    for oid, mtime in plan.unpack.items():
        store.files.write(oid, [_self_contained(store, oid, settings.compression_level, settings.compression)])
        if mtime is not None:
            os.utime(store.files.file(oid), (mtime, mtime))
        rep.unpacked_objects += 1
        progress.advance(1)
        kill_point("repack-unpack")
    progress.finish()
    # (2) the new packs
    if plan.to_pack or plan.copy:
        repo.require_format(3)
        _write_packs(store, plan, rep, progress, settings)
    # (3) the packs they replace, (4) loose copies of what is now packed
    for p in plan.replace:
        if p.name in rep.packs_written:
            # a pack is named by its content: a repack that writes the same objects again (after
            # one killed before removing what it merged) has just replaced this file by itself
            continue
        remove_pack(p)
        rep.packs_removed.append(p.name)
        kill_point("repack-drop-pack")
    if plan.replace:
        fsync_dir(store.packs.folder)
    folders = set()
    for oid in plan.loose_packed:
        path = store.path_for(oid)
        store.remove(oid)
        folders.add(path.parent)
        rep.loose_removed += 1
        kill_point("repack-drop-loose")
    for folder in folders:
        if folder.is_dir():
            os.chmod(folder, 0o555)
            fsync_dir(folder)


def _write_packs(store: DiskObjectStore, plan: _Plan, rep: RepackReport, progress: Progress, settings) -> None:
    folder = store.packs.folder
    writer = PackWriter(folder, store.tmp_dir)
    workers = settings.workers or 2 * (os.cpu_count() or 1)
    # the pieces in flight, the one before them and its base: what the next piece may need
    cache = DecodedCache((workers + _WINDOW + 2) * CHUNK_SIZE)
    progress.start("packing objects", len(plan.to_pack) + len(plan.copy), "objects")
    try:
        def job(oid: str) -> tuple[str, bytes, int, int]:
            return (oid, *_encode(store, oid, plan.codecs.get(oid), settings.compression,
                                  settings.compression_level, settings.codec_min_saving, cache))

        with ThreadPoolExecutor(workers, thread_name_prefix="lin-repack") as pool:
            order = _link_order(plan.to_pack, plan.codecs)
            for oid, stored, codec, size in _ordered(pool, job, order, workers + _WINDOW):
                writer = _add(writer, folder, store, rep, oid, stored, size)
                rep.codecs[CODEC_NAMES.get(codec, str(codec))] = rep.codecs.get(CODEC_NAMES.get(codec, str(codec)), 0) + 1
                ch = plan.codecs.get(oid)
                rep.keyframes += bool(ch and ch.keyframe)
                progress.advance(1)
        for oid, e in plan.copy:
            stored = e.pack.read_checked(oid, e)
            writer = _add(writer, folder, store, rep, oid, stored, int.from_bytes(stored[8:16], "little"))
            rep.copied_objects += 1
            rep.copied_bytes += len(stored)
            name = CODEC_NAMES.get(stored[5], str(stored[5]))
            rep.codecs[name] = rep.codecs.get(name, 0) + 1
            progress.advance(1)
        if len(writer):
            rep.packs_written.append(writer.finish().name)
        else:
            writer.abort()
    except BaseException:
        writer.abort()
        raise
    finally:
        progress.finish()


def _add(writer: PackWriter, folder, store: DiskObjectStore, rep: RepackReport, oid: str, stored: bytes,
         size: int) -> PackWriter:
    writer.add(oid, stored)
    rep.packed_objects += 1
    rep.raw_bytes += size
    rep.stored_bytes += len(stored)
    if writer.bytes_written < PACK_LIMIT:
        return writer
    rep.packs_written.append(writer.finish().name)
    return PackWriter(folder, store.tmp_dir)


def _ordered(pool: ThreadPoolExecutor, fn, items: list[str], window: int) -> Iterator:
    """``fn`` over ``items`` on the pool, results in order, at most ``window`` running ahead."""
    futures = []
    it = iter(items)
    for x in it:
        futures.append(pool.submit(fn, x))
        if len(futures) >= window:
            break
    while futures:
        done = futures.pop(0)
        nxt = next(it, None)
        if nxt is not None:
            futures.append(pool.submit(fn, nxt))
        yield done.result()


def start_background(repo: Repo) -> int | None:
    """Start ``lin repack --if-idle`` as a detached, low-priority process (``nice 19``, its own
    session, no terminal) and return its pid; None for a store without packs or a path. For
    ``lin run`` after each version: it never waits for the repack, and the repack waits for
    nobody (one at a time: a second finds the repack lock taken and exits)."""
    if repo.path is None or not isinstance(repo.objects, DiskObjectStore) or not repo.objects.packs.packs():
        return None
    cmd = [sys.executable, "-m", "lineagestore.cli.main", "repack", "--if-idle"]
    nice = shutil.which("nice")
    if nice:
        cmd = [nice, "-n", "19", *cmd]
    env = {**os.environ, "LIN_STORE": str(repo.path), "LIN_NO_PROGRESS": "1"}
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env, cwd=repo.path.parent)
    return proc.pid


def _remove_orphan_indexes(store: DiskObjectStore) -> None:
    """An ``.idx`` whose pack never arrived or was removed (a repack killed between the two
    renames or the two deletions: core.packs orders them so). A ``.pack`` without its index is
    never removed here: only outside damage makes one, and it may hold the only copy of what it
    holds (``lin fsck`` reports it)."""
    folder = store.packs.folder
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for n in names:
        if n.startswith("pack-") and n.endswith(".idx") and n[:-4] + ".pack" not in names:
            (folder / n).unlink(missing_ok=True)

