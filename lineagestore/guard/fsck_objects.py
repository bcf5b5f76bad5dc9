"""What ``lin fsck`` reads of every object (guard/fsck.py checks the rest): each object decoded
and verified, and of each its type, size and links, with the rules a linking object's content
must follow (tree entry names, version names, tensor-file headers).

A full check verifies packed objects pack by pack, each in one sequential pass over the pack's
mapping in offset order (:func:`verify_objects`); loose objects, and every object in a quick
check, are read one by one through the store.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from ..core.content import decode_buffer
from ..core.errors import InvalidName, LinError, MalformedFile
from ..core.names import check_version_name, tree_entry_problems
from ..core.objects import CHUNK_SIZE, CODEC_DELTA, LINKING_TYPES, Commit, decode_object
from ..core.packs import Pack, PackEntry
from ..core.progress import Progress
from ..core.safetensors_io import check_tensor_list
from ..core.store import DiskObjectStore

FILE_TYPES = {"blob", "chunks", "tensor-file"}


@dataclass
class Problem:
    kind: str  # corrupt | missing | dangling | bad-ref | bad-reflog | bad-link | unsafe-tree | bad-name | audit ...
    subject: str  # the object id, ref or file concerned
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Link:
    id: str
    types: frozenset | None  # allowed types of the target (None: any)
    what: str  # how the parent names it ("tree", "parent", "entry config.json", ...)
    size: int | None = None  # declared content size, checked for file content


@dataclass
class _Info:
    type: str
    size: int  # content size (for chunks: the joined size; tensor-file: the file size)
    links: list[_Link]
    name: str | None = None  # commits: the version name


def _links(type_name: str, obj) -> list[_Link]:
    """What ``obj`` links to, with the types (and sizes) each link must have; links a newer
    object layout adds beyond these rules are checked for presence only."""
    typed = _typed_links(type_name, obj)
    known = {ln.id for ln in typed}
    return typed + [_Link(x, None, "link") for x in obj.links() if x not in known]


def _typed_links(type_name: str, obj) -> list[_Link]:
    T = frozenset
    if type_name == "commit":
        return ([_Link(obj.tree, T({"tree"}), "tree")] + [_Link(p, T({"commit"}), "parent") for p in obj.parents]
                + [_Link(d, T({"dataset"}), "dataset") for d in obj.datasets])
    if type_name == "tree":
        return [_Link(e.id, T({e.type}) if e.type in FILE_TYPES | {"tree"} else T(), f"entry {e.name!r}",
                      e.size if e.type in FILE_TYPES else None) for e in obj.items()]
    if type_name == "tensor-file":
        return [_Link(t.id, T({"blob", "chunks"}), f"tensor {t.name!r}", t.size) for t in obj.entries()]
    if type_name == "chunks":
        # file content is split into blobs; a large record-id set (data ledger) into records
        return [_Link(pid, T({"blob", "records"}), f"part {i}", n) for i, (pid, n) in enumerate(obj.parts)]
    if type_name == "dataset":
        out = [_Link(obj.content, T(FILE_TYPES), "content", obj.size)] if obj.stored else []
        return out + ([_Link(obj.records, T({"records", "chunks"}), "records")] if obj.records else [])
    if type_name == "checkpoint":  # its parent is a plain id, not a link: gc may have collected it
        return [_Link(obj.model, T({"tree"}), "model")] + ([_Link(obj.state, T({"tree"}), "state")] if obj.state else [])
    return []


def _rule_problem(oid: str, type_name: str, obj) -> Problem | None:
    """What fetch and checkout refuse (core.names): a tree whose entry names break the rules
    (``.lineage``/``.git`` in any case, control characters, separators, duplicates), a commit
    whose name is not a version name. The object itself is sound, so its links are still checked."""
    if type_name == "tree":
        bad = tree_entry_problems(e.name for e in obj.items())
        if bad:
            shown = "; ".join(f"entry {n!r} {why}" for n, why in bad[:3]) + (f"; {len(bad) - 3} more" if len(bad) > 3 else "")
            return Problem("unsafe-tree", oid, f"tree {oid}: {shown} (lin refuses to check it out or fetch it)")
    elif type_name == "commit":
        try:
            check_version_name(obj.name)
        except InvalidName as e:
            return Problem("bad-name", oid, f"commit {oid}: {e}")
    return None


def _tensor_file_problem(oid: str, type_name: str, obj) -> Problem | None:
    """A tensor file whose header the safetensors library would refuse, or whose tensor list is
    not what its header says (checked as a commit checks the file it reads)."""
    if type_name != "tensor-file":
        return None
    try:
        check_tensor_list(obj.header.encode("utf-8"), obj.size,
                          [(t.name, t.dtype, t.shape, t.size) for t in obj.entries()], f"tensor-file {oid}")
    except MalformedFile as e:
        return Problem("malformed", oid, str(e))
    except UnicodeEncodeError:
        return Problem("malformed", oid, f"tensor-file {oid}: its header is not UTF-8 text")
    return None


@dataclass
class Found:
    """What the object pass found: each readable object's type, size and links, and the ids of
    the corrupt ones (present, but unreadable)."""

    info: dict[str, _Info]
    corrupt: set[str]

    def present(self, oid: str) -> bool:
        return oid in self.info or oid in self.corrupt

    def links(self, oid: str) -> list[str]:
        inf = self.info.get(oid)
        return [ln.id for ln in inf.links] if inf is not None else []



_Result = tuple[str, _Info | None, int, Problem | None]  # id, its info, bytes verified, the problem
_Packed = tuple[str, int, int, int]  # id, offset, length, CRC-32 (Pack.in_pack_order)
_ERRORS = (LinError, OSError, ValueError, TypeError, KeyError, AttributeError)


def _verify_one(store, oid: str, quick: bool) -> _Result:
    """One object read through the store (a loose one, or any with ``quick``)."""
    try:
        if quick:  # the header tells whether the object links to others; only those are read
            h = store.header(oid)
            if h.type not in LINKING_TYPES:
                return oid, _Info(h.type, h.size, []), 0, None
        type_name, data = store.get_raw(oid)  # verified: its size is the header's
        return _examine(oid, type_name, data)
    except _ERRORS as e:
        return _broken(oid, e)


def _examine(oid: str, type_name: str, data: bytes | memoryview) -> _Result:
    """What fsck keeps of an object already decoded and verified: its type, size and links."""
    n = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
    if type_name not in LINKING_TYPES:
        return oid, _Info(type_name, n, []), n, None
    obj = decode_object(type_name, bytes(data), f"object {oid}")
    size = getattr(obj, "size", n)
    name = obj.name if isinstance(obj, Commit) else None
    problem = _rule_problem(oid, type_name, obj) or _tensor_file_problem(oid, type_name, obj)
    return oid, _Info(type_name, size, _links(type_name, obj), name), n, problem


def _broken(oid: str, e: Exception, where: str = "") -> _Result:
    msg = str(e) if oid in str(e) else f"object {oid}: {e}"
    return oid, None, 0, Problem("corrupt", oid, msg if " pack " in msg else msg + where)


def verify_objects(store, ids: list[str], quick: bool, progress: Progress) -> tuple[Found, int, list[Problem]]:
    """Every object's header (quick) or every byte (full): what was found, bytes verified, problems.
    In full, packed objects are verified pack by pack in the order of their bytes (:func:`_pack_pass`)
    and only the rest one by one through the store."""
    info: dict[str, _Info] = {}
    problems: list[Problem] = []
    nbytes = 0

    def take(results: list[_Result], leaves: tuple[int, int] = (0, 0)) -> None:
        """Results of objects; ``leaves``: (how many, bytes) a pack run put in ``info`` itself."""
        nonlocal nbytes
        nbytes += leaves[1]
        for oid, inf, n, prob in results:
            nbytes += n
            if prob:
                problems.append(prob)
            if inf:
                info[oid] = inf
        progress.advance(len(results) + leaves[0])

    progress.start("verifying objects" + (" (metadata only)" if quick else ""), len(ids), "objects")
    # quick: small reads and JSON, bound by the GIL (one thread was fastest: 150,000 objects in
    # 8.4 s vs 12.4 s on 6); full: hashing big objects, which releases it
    workers = 1 if quick else min(32, (os.cpu_count() or 1) + 4)
    packs = [] if quick or not isinstance(store, DiskObjectStore) else store.packs.packs()
    with ThreadPoolExecutor(workers) as pool:
        if packs:
            _pack_pass(store, packs, pool, workers, info, take)
        done = set(info) | {p.subject for p in problems}
        rest = [i for i in ids if i not in done]
        # in batches of 256: one future per object cost more than reading a header (150,000: 12 s)
        for results in pool.map(lambda batch: [_verify_one(store, oid, quick) for oid in batch],
                                [rest[i:i + 256] for i in range(0, len(rest), 256)]):
            take(results)
    progress.finish()
    return Found(info, {p.subject for p in problems}), nbytes, problems


#: a pack is verified in runs of consecutive objects of about this many stored bytes, each
#: starting at an object stored whole (so a delta's base was decoded just before it, in its run)
_RUN_BYTES = 32 << 20
#: ... and of at most this many objects (progress moves at least this often)
_RUN_OBJECTS = 8192
#: runs whose objects average fewer stored bytes are verified in this thread: Python per object,
#: under the GIL, where more threads only add switching; larger ones on the pool (hashing,
#: zstd and numpy release the GIL)
_SMALL = 64 << 10


def _pack_pass(store: DiskObjectStore, packs: list[Pack], pool: ThreadPoolExecutor, workers: int,
               info: dict[str, _Info], take: Callable[[list[_Result], tuple[int, int]], None]) -> None:
    """Every object of every pack, each pack in one sequential pass over its mapping in offset
    order: the CRC-32 its index declares, then decoded and verified from the mapped bytes by
    :func:`.content.decode_buffer` (no lookup by id, no read through the store), its links kept.
    A delta finds its base in a bounded :class:`.content.DecodedCache` (a repack writes each
    piece right after its base), else reads it from the store."""
    import numpy as np  # lazily, as core.packs
    runs: list[tuple[Pack, list[_Packed], bool]] = []  # (pack, objects, whether they average _SMALL or more)
    deltas = False
    for pack in packs:
        ids, offsets, lengths, crcs, codecs = pack.in_pack_order()
        if not ids:
            continue
        # runs start at objects stored whole, at the first of each _RUN_BYTES / _RUN_OBJECTS
        whole = np.flatnonzero(codecs != CODEC_DELTA)
        deltas = deltas or len(whole) < len(ids)
        before = np.cumsum(lengths) - lengths
        step = (before[whole] // _RUN_BYTES) * (len(ids) // _RUN_OBJECTS + 1) + whole // _RUN_OBJECTS
        starts = sorted({0, *whole[np.flatnonzero(np.diff(step, prepend=-1))].tolist()})
        for a, b in zip(starts, [*starts[1:], len(ids)], strict=True):
            run = list(zip(ids[a:b], offsets[a:b].tolist(), lengths[a:b].tolist(), crcs[a:b].tolist(), strict=True))
            runs.append((pack, run, int(before[b - 1] + lengths[b - 1] - before[a]) >= _SMALL * (b - a)))
    with store.caching((workers + 2) * CHUNK_SIZE) if deltas else _no_cache():
        futures = [pool.submit(_verify_run, store, pack, run, info) for pack, run, big in runs if big]
        for pack, run, big in runs:
            if not big:
                take(*_verify_run(store, pack, run, info))
        for fu in futures:
            take(*fu.result())


def _verify_run(store: DiskObjectStore, pack: Pack, run: list[_Packed],
                info: dict[str, _Info]) -> tuple[list[_Result], tuple[int, int]]:
    """The objects of a run verified: objects that link to nothing go straight into ``info`` (one
    record shared by those of a type and size: nothing changes it), the others are returned
    with the problems, then (how many went into ``info``, their bytes)."""
    out: list[_Result] = []
    leaves: dict[tuple[str, int], _Info] = {}
    n = nbytes = 0
    load, depth, cache, mapped, crc32 = store.get_stored, store.delta_max_depth, store.cache, pack.mapped(), zlib.crc32
    for oid, offset, length, crc in run:
        try:
            stored = mapped[offset:offset + length]
            if crc32(stored) != crc:
                pack.read_checked(oid, PackEntry(pack, offset, length, crc))  # raises, naming object and pack
            h, data = decode_buffer(oid, stored, None, load, depth, cache)
            if h.type in LINKING_TYPES:
                out.append(_examine(oid, h.type, data))
                continue
            leaf = leaves.get((h.type, h.size))
            if leaf is None:
                leaf = leaves[h.type, h.size] = _Info(h.type, h.size, [])
            info[oid] = leaf  # (a dict's item set is atomic: runs on the pool write here too)
            n += 1
            nbytes += h.size
        except _ERRORS as err:
            out.append(_broken(oid, err, f" (in pack {pack.name}, offset {offset})"))
    return out, (n, nbytes)


@contextmanager
def _no_cache() -> Iterator[None]:
    yield None
