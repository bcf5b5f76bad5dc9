"""Record-id sets in the store, and the ledger index that says which sets hold a record.

**Record-id sets (objects).** A dataset's records are a sorted set of unique 16-byte ids. Up to
:data:`PART_IDS` ids are one ``records`` object (payload: the ids, concatenated). A larger set
is a ``chunks`` object whose parts are ``records`` objects of at most :data:`PART_IDS` ids each,
in order (so gc and fsck follow it like any chunks object).

**The ledger index (derived, in ``.lineage/cache/data/ledger/``).** Answering "which of these
records were trained?" must not load every trained id. The index is a set of *segments*; a
segment is a file of sorted 16-byte entries::

    entry = record id[0:12] || ordinal (uint32, big-endian)

where the ordinal numbers a record-id set (``manifest.json`` maps ordinals to set ids). One
entry per (record, set): 16 bytes on disk per indexed record. Next to each segment, a *fence*
file holds every :data:`FENCE_EVERY`-th entry, so a lookup reads only the 64 KiB blocks its
queries fall in (or the whole segment, in large sequential reads, when the queries are many).

A lookup yields *candidates* (query, set) whose first 96 bits match; each candidate is then
confirmed exactly against the full 128-bit ids of that set, read from its ``records`` objects.
So "seen" is always exact, and memory is bounded by the query set plus one read window.

Segments are added when sets are indexed and merged geometrically (a new segment is merged
with the ones before it while they are at most twice its size), so there are O(log n) of them
and each entry is rewritten O(log n) times. Deleting the folder loses nothing: it is rebuilt
from the store the next time it is needed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import CorruptObject
from ..core.fsutil import AtomicFile, FileLock, atomic_write_bytes
from ..core.objects import Chunks
from ..core.progress import NULL, Progress
from ..core.repo import Repo
from ..core.store import ObjectStore
from .idsets import ID_DTYPE, as_ids, merge_sorted, rechunk
from .records import ID_BYTES

PART_IDS = 1 << 18  # ids per records object (4 MiB)
FENCE_EVERY = 4096  # entries per block (64 KiB)
READ_ENTRIES = 1 << 18  # entries read at a time when merging segments
MAX_WINDOW_BLOCKS = 1024  # at most 64 MiB read at once by a lookup
GAP_BLOCKS = 4  # read across gaps of up to this many unneeded blocks rather than seek
MAX_FANIN = 32  # segments or sets merged at once
BATCH_IDS = 8 << 20  # ids of new sets gathered into one new segment
MANIFEST_VERSION = 1


# ----------------------------------------------------------------------------- record-id sets


@dataclass
class RecordSetInfo:
    id: str | None  # records or chunks object id; None for an empty set
    count: int
    parts: list  # [[records object id, first id hex], ...]


def put_record_set(store: ObjectStore, chunks: Iterable[np.ndarray]) -> RecordSetInfo:
    """Store sorted unique ids as ``records`` objects (one, or a chunks object of several)."""
    parts: list[list] = []
    sizes: list[int] = []
    count = 0
    for part in rechunk(chunks, PART_IDS):
        pid = store.put("records", part.tobytes())
        parts.append([pid, part[:1].tobytes().hex()])
        sizes.append(len(part) * ID_BYTES)
        count += len(part)
    if not parts:
        return RecordSetInfo(None, 0, [])
    if len(parts) == 1:
        return RecordSetInfo(parts[0][0], count, parts)
    rid = store.put_object(Chunks(size=count * ID_BYTES, parts=[[p[0], n] for p, n in zip(parts, sizes, strict=True)]))
    return RecordSetInfo(rid, count, parts)


def record_set_parts(store: ObjectStore, rid: str) -> list[str]:
    """The ``records`` object ids of a set, in order."""
    h = store.header(rid)
    if h.type == "records":
        return [rid]
    if h.type == "chunks":
        return [p[0] for p in store.get(rid, "chunks").parts]
    raise CorruptObject(f"object {rid} is a {h.type}, expected a record-id set (records or chunks)")


def read_part(store: ObjectStore, pid: str) -> np.ndarray:
    t, data = store.get_raw(pid)
    if t != "records":
        raise CorruptObject(f"object {pid} is a {t}, expected records")
    return as_ids(data)


def iter_record_set(store: ObjectStore, rid: str | None) -> Iterator[np.ndarray]:
    if rid is None:
        return
    for pid in record_set_parts(store, rid):
        yield read_part(store, pid)


# ----------------------------------------------------------------------------- entries


def to_entries(ids: np.ndarray, ordinal: int) -> np.ndarray:
    b = np.ascontiguousarray(ids).view(np.uint8).reshape(-1, ID_BYTES).copy()
    b[:, 12:] = np.frombuffer(int(ordinal).to_bytes(4, "big"), dtype=np.uint8)
    return b.reshape(-1).view(ID_DTYPE)


def _keys(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first 8 bytes (as uint64) and the next 4 (as uint32) of each id or entry: its 96-bit prefix."""
    a = np.ascontiguousarray(a)
    return a.view(">u8")[0::2].astype(np.uint64), a.view(">u4")[2::4].astype(np.uint32)


def _match(a: np.ndarray, qh: np.ndarray, qm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query index, ordinal) for entries of sorted ``a`` with a query's 96-bit prefix."""
    eh = a.view(">u8")[0::2].astype(np.uint64)
    l = np.searchsorted(eh, qh, side="left")
    inside = np.nonzero(l < len(eh))[0]
    hit = inside[eh[l[inside]] == qh[inside]]  # most queries stop here: no entry shares 64 bits
    if len(hit) == 0:
        return np.empty(0, np.int64), np.empty(0, np.uint32)
    r = np.searchsorted(eh, qh[hit], side="right")
    k, pos = _expand(l[hit], r)
    qi = hit[k]
    words = a.view(">u4").reshape(-1, 4)
    keep = words[pos, 2] == qm[qi]
    return qi[keep], words[pos[keep], 3].astype(np.uint32)


def _expand(l: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (query index, position) pairs for per-query position ranges [l, r)."""
    counts = r - l
    nz = np.nonzero(counts > 0)[0]
    if len(nz) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    c = counts[nz]
    total = int(c.sum())
    qidx = np.repeat(nz, c)
    offs = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
    return qidx, np.repeat(l[nz], c) + offs


# ----------------------------------------------------------------------------- the index


@dataclass
class Segment:
    name: str
    entries: int


_MEMORY_DIRS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _memory_dir(repo) -> Path:
    d = _MEMORY_DIRS.get(repo.objects)
    if d is None:
        d = Path(tempfile.mkdtemp(prefix="lin-ledger-"))
        weakref.finalize(repo.objects, shutil.rmtree, str(d), True)
        _MEMORY_DIRS[repo.objects] = d
    return d


class Ledger:
    """The derived index over record-id sets of one store (see the module docstring)."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.store: ObjectStore = repo.objects
        base = repo.cache_dir / "data" if repo.path is not None else _memory_dir(repo)
        self.dir = base / "ledger"
        self.tmp_dir = repo.tmp_dir if repo.path is not None else base
        self.lock = FileLock(base / "ledger.lock")
        self.timeout = repo.lock_timeout if repo.path is not None else 60.0

    # ---- manifest

    def _empty(self) -> dict:
        return {"version": MANIFEST_VERSION, "entry": "id[0:12]+ordinal:u32be", "fence_every": FENCE_EVERY,
                "next_ordinal": 0, "sets": {}, "segments": []}

    def _load(self) -> dict:
        try:
            m = json.loads((self.dir / "manifest.json").read_text())
        except (OSError, ValueError):
            return self._empty()
        try:
            ok = (m.get("version") == MANIFEST_VERSION and m.get("fence_every") == FENCE_EVERY
                  and all(self._segment_ok(Segment(**s)) for s in m["segments"]))
        except (TypeError, KeyError):
            ok = False
        return m if ok else self._reset()

    def _segment_ok(self, seg: Segment) -> bool:
        try:
            n = (self.dir / f"{seg.name}.ids").stat().st_size
            f = (self.dir / f"{seg.name}.fence").stat().st_size
        except OSError:
            return False
        return n == seg.entries * ID_BYTES and f == -(-seg.entries // FENCE_EVERY) * ID_BYTES

    def _reset(self) -> dict:
        """Throw the index away (it is derived); it is rebuilt from the store as needed."""
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        return self._empty()

    def _save(self, m: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.dir / "manifest.json", json.dumps(m, separators=(",", ":")).encode(),
                           self.tmp_dir)

    @contextmanager
    def _locked(self, mode: str) -> Iterator[None]:
        with self.lock.held(mode, self.timeout):
            yield

    # ---- building

    def ordinals(self, set_ids: Iterable[str], progress: Progress = NULL) -> dict[str, int]:
        """Ordinals of the given record-id sets, indexing the ones not indexed yet."""
        wanted = [s for s in dict.fromkeys(set_ids) if s]
        with self._locked("shared"):
            m = self._load()
            if all(s in m["sets"] for s in wanted):
                return {s: m["sets"][s]["ordinal"] for s in wanted}
        with self._locked("exclusive"):
            m = self._load()
            missing = [s for s in wanted if s not in m["sets"]]
            if missing:
                self._add_sets(m, missing, progress)
            return {s: m["sets"][s]["ordinal"] for s in wanted}

    def _add_sets(self, m: dict, missing: list[str], progress: Progress) -> None:
        infos = []
        for sid in missing:
            parts = record_set_parts(self.store, sid)
            infos.append((sid, parts))
        progress.start("indexing trained records", len(infos), "sets")
        before = {s["name"] for s in m["segments"]}
        try:
            batch: list[tuple[str, int, list[str]]] = []
            batch_ids = 0
            for sid, parts in infos:
                ordinal = m["next_ordinal"]
                m["next_ordinal"] += 1
                batch.append((sid, ordinal, parts))
                batch_ids += len(parts) * PART_IDS
                if batch_ids >= BATCH_IDS or len(batch) >= MAX_FANIN:
                    self._write_batch(m, batch)
                    progress.advance(len(batch))
                    batch, batch_ids = [], 0
            if batch:
                self._write_batch(m, batch)
                progress.advance(len(batch))
        except BaseException:
            for seg in m["segments"]:  # not in any saved manifest: remove what this call wrote
                if seg["name"] not in before:
                    self._remove_segment(Segment(**seg))
            raise
        finally:
            progress.finish()
        self._compact(m)
        self._save(m)

    def _write_batch(self, m: dict, batch: list) -> int:
        streams = []
        for sid, ordinal, parts in batch:
            firsts: list[list] = []
            m["sets"][sid] = {"ordinal": ordinal, "count": 0, "parts": firsts}
            streams.append(self._set_entries(ordinal, parts, firsts, m["sets"][sid]))
        seg = self._write_segment(merge_sorted(streams))
        if seg.entries:
            m["segments"].append(seg.__dict__)
        else:
            self._remove_segment(seg)
        return seg.entries

    def _set_entries(self, ordinal: int, parts: list[str], firsts: list, info: dict) -> Iterator[np.ndarray]:
        for pid in parts:
            arr = read_part(self.store, pid)
            if len(arr) == 0:
                continue
            firsts.append([pid, arr[:1].tobytes().hex()])
            info["count"] += len(arr)
            for piece in rechunk([arr], READ_ENTRIES):
                yield to_entries(piece, ordinal)

    def _write_segment(self, chunks: Iterable[np.ndarray]) -> Segment:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"seg-{secrets.token_hex(8)}"
        n = 0
        fence: list[np.ndarray] = []
        with AtomicFile(self.dir / f"{name}.ids", self.tmp_dir) as f:
            for c in chunks:
                first = (-n) % FENCE_EVERY  # index in c of the next fence entry
                if first < len(c):
                    fence.append(c[first::FENCE_EVERY].copy())
                f.write(c.tobytes())
                n += len(c)
        fence_arr = np.concatenate(fence) if fence else np.empty(0, ID_DTYPE)
        atomic_write_bytes(self.dir / f"{name}.fence", fence_arr.tobytes(), self.tmp_dir)
        return Segment(name, n)

    def _remove_segment(self, seg: Segment) -> None:
        for ext in (".ids", ".fence"):
            try:
                (self.dir / f"{seg.name}{ext}").unlink()
            except FileNotFoundError:
                pass

    def _compact(self, m: dict) -> None:
        """Merge the newest segments while the ones before them are at most twice as large."""
        while True:
            segs = [Segment(**s) for s in m["segments"]]
            if len(segs) < 2:
                return
            j = len(segs) - 1
            total = segs[j].entries
            while j > 0 and segs[j - 1].entries <= 2 * total and len(segs) - j < MAX_FANIN:
                j -= 1
                total += segs[j].entries
            if j == len(segs) - 1:
                return
            group = segs[j:]
            merged = self._write_segment(merge_sorted([self._read_segment(s) for s in group]))
            m["segments"] = [s.__dict__ for s in segs[:j]] + [merged.__dict__]
            self._save(m)
            for s in group:
                self._remove_segment(s)

    def _read_segment(self, seg: Segment) -> Iterator[np.ndarray]:
        with open(self.dir / f"{seg.name}.ids", "rb") as f:
            while True:
                buf = f.read(READ_ENTRIES * ID_BYTES)
                if not buf:
                    return
                yield as_ids(buf)

    # ---- lookup

    def candidates(self, q: np.ndarray, ordinals: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(query index, ordinal) pairs whose first 96 bits match, for sorted unique queries ``q``.

        ``ordinals``: keep only these sets. Candidates are not yet confirmed (see :meth:`confirm`).
        """
        out_q: list[np.ndarray] = []
        out_o: list[np.ndarray] = []
        if len(q) == 0:
            return np.empty(0, np.int64), np.empty(0, np.uint32)
        qh, qm = _keys(q)
        with self._locked("shared"):
            m = self._load()
            for s in m["segments"]:
                qi, oi = self._lookup_segment(Segment(**s), qh, qm)
                if ordinals is not None and len(oi):
                    keep = np.isin(oi, ordinals)
                    qi, oi = qi[keep], oi[keep]
                out_q.append(qi)
                out_o.append(oi)
        if not out_q:
            return np.empty(0, np.int64), np.empty(0, np.uint32)
        return np.concatenate(out_q), np.concatenate(out_o)

    def _lookup_segment(self, seg: Segment, qh: np.ndarray, qm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidates in one segment. Binary search runs on the first 8 bytes as uint64 (3x
        faster than on 16-byte strings); equal first 8 bytes are then compared on the next 4."""
        fence_h, _ = _keys(as_ids((self.dir / f"{seg.name}.fence").read_bytes()))
        nblocks = len(fence_h)
        # entries whose first 8 bytes equal a query's lie in blocks b0..b1
        b0 = np.clip(np.searchsorted(fence_h, qh, side="left") - 1, 0, None)
        b1 = np.clip(np.searchsorted(fence_h, qh, side="right") - 1, 0, None)
        # group consecutive queries into read ranges of nearby blocks
        if len(b0) > 1:
            new_range = (b0[1:] > b1[:-1] + GAP_BLOCKS) | (
                (b0[1:] > b1[:-1]) & (b0[1:] // MAX_WINDOW_BLOCKS != b0[:-1] // MAX_WINDOW_BLOCKS))
            starts = np.concatenate([[0], np.nonzero(new_range)[0] + 1])
        else:
            starts = np.array([0])
        ends = np.concatenate([starts[1:], [len(b0)]])
        out_q: list[np.ndarray] = []
        out_o: list[np.ndarray] = []
        with open(self.dir / f"{seg.name}.ids", "rb") as f:
            fd = f.fileno()
            for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
                first_block = int(b0[s])
                last_block = min(int(b1[e - 1]), nblocks - 1)
                lo_entry = first_block * FENCE_EVERY
                hi_entry = min((last_block + 1) * FENCE_EVERY, seg.entries)
                a = as_ids(os.pread(fd, (hi_entry - lo_entry) * ID_BYTES, lo_entry * ID_BYTES))
                qi, oi = _match(a, qh[s:e], qm[s:e])
                if len(qi):
                    out_q.append(qi + s)
                    out_o.append(oi)
        if not out_q:
            return np.empty(0, np.int64), np.empty(0, np.uint32)
        return np.concatenate(out_q), np.concatenate(out_o)

    def confirm(self, q: np.ndarray, qidx: np.ndarray, ords: np.ndarray) -> np.ndarray:
        """Which candidates hold exactly: the full 16-byte id is in the set of that ordinal."""
        ok = np.zeros(len(qidx), dtype=bool)
        if len(qidx) == 0:
            return ok
        with self._locked("shared"):
            m = self._load()
        by_ordinal = {v["ordinal"]: v for v in m["sets"].values()}
        for o in np.unique(ords).tolist():
            rows = np.nonzero(ords == o)[0]
            info = by_ordinal.get(o)
            if info is None or not info["parts"]:
                continue
            ids = q[qidx[rows]]
            order = np.argsort(ids, kind="stable")
            ids_sorted = ids[order]
            firsts = np.concatenate([np.frombuffer(bytes.fromhex(p[1]), ID_DTYPE) for p in info["parts"]])
            part_of = np.clip(np.searchsorted(firsts, ids_sorted, side="right") - 1, 0, None)
            for k in np.unique(part_of).tolist():
                sel = np.nonzero(part_of == k)[0]
                part = read_part(self.store, info["parts"][k][0])
                want = ids_sorted[sel]
                pos = np.searchsorted(part, want)
                hit = np.zeros(len(want), dtype=bool)
                inside = pos < len(part)
                hit[inside] = part[pos[inside]] == want[inside]
                ok[rows[order[sel[hit]]]] = True
        return ok

    def stats(self) -> dict:
        with self._locked("shared"):
            m = self._load()
        entries = sum(s["entries"] for s in m["segments"])
        return {"sets": len(m["sets"]), "segments": len(m["segments"]), "entries": entries,
                "bytes": sum((self.dir / f"{s['name']}{ext}").stat().st_size
                             for s in m["segments"] for ext in (".ids", ".fence"))}
