"""The per-step series of a training run: one row per optimizer step, kept in the store.

Layout (docs/format.md, "Training series and evaluation"). A series is a ``tree`` whose entries
are *segments*, ``blob`` objects named ``<first step, 12 digits>.seg``; *groups*, subtrees named
``<first step>.grp`` holding 256 segments each; and ``evals.json`` (the evaluations made during
the run). A segment holds the rows of consecutive steps as columns::

    header  "LSER" | version u8 (1) | 3 zero bytes | rows u64 LE          (16 bytes)
    body    one zstd frame of the columns, one after the other, little-endian:
            step u64 | tokens u64 | loss f32 | lr f32 | grad_norm f32 | tokens_per_s f32 | wall_s f64

Columns compress far better than rows (steps and token counts are nearly arithmetic). A
checkpoint writes one new segment with the steps since the previous one, seals a group when 256
segments are loose, and writes a new root naming the groups and loose segments by id, so what a
checkpoint writes barely grows with the length of the run. The checkpoint's state tree names the
series as its entry ``series``; the version names it in ``extra.series`` (a link, see
``core/objects.Commit.links``).
After ``kill -9`` a resumed run continues from the series of its last checkpoint: the steps after
it are trained again and recorded again.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zstandard

from ..core.errors import CorruptObject
from ..core.objects import CHUNK_SIZE, Tree, TreeEntry
from ..core.store import ObjectStore

__all__ = ["COLUMNS", "SERIES_ENTRY", "Series", "SeriesWriter", "compute_record", "decode_segment",
           "encode_segment", "read_series", "series_of_state"]

#: the columns of a segment, in order: (name, little-endian dtype)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("step", "<u8"), ("tokens", "<u8"), ("loss", "<f4"), ("lr", "<f4"), ("grad_norm", "<f4"),
    ("tokens_per_s", "<f4"), ("wall_s", "<f8"),
)
ROW_BYTES = sum(np.dtype(d).itemsize for _, d in COLUMNS)  # 40
MAGIC = b"LSER"
SEGMENT_VERSION = 1
SEG_HEADER = struct.Struct("<4sB3xQ")
#: rows per segment at most: 2.5 MiB of columns before compression, well under a blob's 16 MiB
MAX_ROWS = 1 << 16
SERIES_ENTRY = "series"  # the entry of a checkpoint's state tree that names its series
SEG_SUFFIX = ".seg"
GROUP_SUFFIX = ".grp"
#: segments per group: a full group becomes a subtree that later checkpoints name by id
GROUP = 256
EVALS_ENTRY = "evals.json"
_LEVEL = 3


@dataclass
class Series:
    """A run's per-step series as numpy columns (one element per optimizer step), plus the
    evaluations made during the run (``[{"step", "tokens", "loss", ...}]``)."""

    step: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    lr: np.ndarray
    grad_norm: np.ndarray  # NaN where it was not measured
    tokens_per_s: np.ndarray
    wall_s: np.ndarray  # seconds of training of the run when the step ended (all sessions)
    evals: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.step)

    def to_dict(self) -> dict[str, Any]:
        def clean(a: np.ndarray) -> list:
            return [None if isinstance(x, float) and not math.isfinite(x) else x for x in a.tolist()]
        return {**{name: clean(getattr(self, name)) for name, _ in COLUMNS}, "evals": self.evals}

    @classmethod
    def empty(cls) -> Series:
        return cls.of({name: np.zeros(0, dtype=d) for name, d in COLUMNS})

    @classmethod
    def of(cls, cols: dict[str, np.ndarray], evals: list[dict] | None = None) -> Series:
        return cls(step=cols["step"], tokens=cols["tokens"], loss=cols["loss"], lr=cols["lr"],
                   grad_norm=cols["grad_norm"], tokens_per_s=cols["tokens_per_s"], wall_s=cols["wall_s"],
                   evals=list(evals or []))


def encode_segment(cols: dict[str, np.ndarray]) -> bytes:
    """The bytes of one segment holding ``cols`` (equal lengths, at most :data:`MAX_ROWS`)."""
    n = len(cols["step"])
    if n > MAX_ROWS:
        raise ValueError(f"a segment holds at most {MAX_ROWS} rows, not {n}")
    body = b"".join(np.ascontiguousarray(cols[name], dtype=d).tobytes() for name, d in COLUMNS)
    frame = zstandard.ZstdCompressor(level=_LEVEL, write_content_size=True).compress(body)
    return SEG_HEADER.pack(MAGIC, SEGMENT_VERSION, n) + frame


def decode_segment(data: bytes, where: str = "segment") -> dict[str, np.ndarray]:
    """The columns of a segment; anything malformed is a :class:`CorruptObject` naming ``where``."""
    if len(data) < SEG_HEADER.size:
        raise CorruptObject(f"{where}: not a series segment (too short)")
    magic, version, n = SEG_HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptObject(f"{where}: not a series segment (magic {magic!r})")
    if version != SEGMENT_VERSION:
        raise CorruptObject(f"{where}: series segment version {version} is not one this lin reads")
    if n > MAX_ROWS:
        raise CorruptObject(f"{where}: {n} rows, more than a segment holds ({MAX_ROWS})")
    size = n * ROW_BYTES
    frame = data[SEG_HEADER.size:]
    try:
        declared = zstandard.frame_content_size(frame)
        if declared != size:
            raise CorruptObject(f"{where}: its columns declare {declared} bytes, {n} rows need {size}")
        body = zstandard.ZstdDecompressor().decompress(frame, max_output_size=size) if size else b""
    except zstandard.ZstdError as e:
        raise CorruptObject(f"{where}: columns do not decompress ({e})") from None
    if len(body) != size:
        raise CorruptObject(f"{where}: columns hold {len(body)} bytes, {n} rows need {size}")
    out, pos = {}, 0
    for name, d in COLUMNS:
        width = np.dtype(d).itemsize * n
        out[name] = np.frombuffer(body, dtype=d, count=n, offset=pos).copy()
        pos += width
    return out


def _segment_name(first_step: int) -> str:
    return f"{first_step:012d}{SEG_SUFFIX}"


class SeriesWriter:
    """Rows of a run in memory until the next checkpoint stores them as a segment.

    ``segments`` are the (name, blob id, size) stored already and not yet in a group; ``groups``
    the (name, tree id, size) of sealed groups of :data:`GROUP` segments. :meth:`store` adds the
    buffered rows as new segments, seals a group when :data:`GROUP` segments are loose, and writes
    the root tree: groups, loose segments, ``evals.json``. A checkpoint so writes its new rows,
    at most one group and a root of ~``steps / (GROUP x checkpoint_every)`` + :data:`GROUP`
    entries, however long the run."""

    def __init__(self, segments: list[tuple[str, str, int]] | None = None, evals: list[dict] | None = None,
                 last_step: int = 0, groups: list[tuple[str, str, int]] | None = None) -> None:
        self.segments = list(segments or [])
        self.groups = list(groups or [])
        self.evals = list(evals or [])
        self.last_step = last_step
        self._rows: list[tuple] = []
        self.tree_size = 0  # the sum of the sizes of what the last stored tree names

    @classmethod
    def resume(cls, store: ObjectStore, tree_id: str | None) -> SeriesWriter:
        """The writer of a run resumed from a checkpoint whose series is ``tree_id`` (None: none)."""
        if tree_id is None:
            return cls()
        root = _root_entries(store, tree_id)
        entries, evals = _series_entries(store, tree_id)
        last = 0
        if entries:
            cols = decode_segment(store.read_content(entries[-1].id), f"series segment {entries[-1].name}")
            last = int(cols["step"][-1]) if len(cols["step"]) else 0
        return cls([(e.name, e.id, e.size) for e in root if e.name.endswith(SEG_SUFFIX)], evals, last,
                   [(e.name, e.id, e.size) for e in root if e.name.endswith(GROUP_SUFFIX)])

    def add(self, step: int, tokens: int, loss: float, lr: float, grad_norm: float, tokens_per_s: float,
            wall_s: float) -> None:
        """One optimizer step's row (steps must increase: a repeated step is a bug upstream)."""
        if step <= self.last_step:
            raise ValueError(f"series step {step} after step {self.last_step}")
        self.last_step = step
        self._rows.append((step, tokens, loss, lr, grad_norm, tokens_per_s, wall_s))

    def add_eval(self, row: dict) -> None:
        self.evals.append(dict(row))

    @property
    def pending(self) -> int:
        return len(self._rows)

    def store(self, store: ObjectStore) -> str:
        """Store the buffered rows as segments and return the id of the series' root tree.

        Only the new rows are encoded and written; earlier segments and groups are named again by id."""
        rows, self._rows = self._rows, []
        for a in range(0, len(rows), MAX_ROWS):
            part = rows[a:a + MAX_ROWS]
            cols = {name: np.array([r[i] for r in part], dtype=d) for i, (name, d) in enumerate(COLUMNS)}
            data = encode_segment(cols)
            self.segments.append((_segment_name(int(part[0][0])), store.put("blob", data), len(data)))
            if len(self.segments) >= GROUP:
                self._seal(store)
        entries: list[TreeEntry] = [TreeEntry(n, "tree", i, sz, False) for n, i, sz in self.groups]
        entries += [TreeEntry(n, "blob", i, sz, False) for n, i, sz in self.segments]
        ev = json.dumps(self.evals, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        entries.append(TreeEntry(EVALS_ENTRY, "blob", store.put("blob", ev), len(ev), False))
        self.tree_size = sum(e.size for e in entries)
        entries.sort(key=lambda e: e.name)
        return store.put_object(Tree(entries=entries))

    def _seal(self, store: ObjectStore) -> None:
        seg = [TreeEntry(n, "blob", i, sz, False) for n, i, sz in self.segments]
        gid = store.put_object(Tree(entries=seg))
        self.groups.append((self.segments[0][0][:12] + GROUP_SUFFIX, gid, sum(e.size for e in seg)))
        self.segments = []


def _is_named(name: str, suffix: str) -> bool:
    return len(name) == 12 + len(suffix) and name.endswith(suffix) and name[:12].isdigit()


def _root_entries(store: ObjectStore, tree_id: str) -> list[TreeEntry]:
    return store.get(tree_id, "tree").items()


def _segment_entry(e: TreeEntry, where: str) -> TreeEntry:
    if not (e.type == "blob" and _is_named(e.name, SEG_SUFFIX)):
        raise CorruptObject(f"{where}: unexpected entry {e.name!r} ({e.type})")
    if e.size > CHUNK_SIZE:
        raise CorruptObject(f"{where}: segment {e.name} is larger than a blob")
    return e


def _series_entries(store: ObjectStore, tree_id: str) -> tuple[list[TreeEntry], list[dict]]:
    """Every segment of a series in step order (groups opened), and its evaluations; checks the names."""
    where = f"series {tree_id[:12]}"
    segs: list[TreeEntry] = []
    evals: list = []
    for e in _root_entries(store, tree_id):
        if e.name == EVALS_ENTRY and e.type == "blob":
            try:
                evals = json.loads(store.read_content(e.id))
            except ValueError as err:
                raise CorruptObject(f"{where}: {EVALS_ENTRY} is not JSON ({err})") from None
            if not isinstance(evals, list) or not all(isinstance(x, dict) for x in evals):
                raise CorruptObject(f"{where}: {EVALS_ENTRY} is not a list of objects")
        elif e.type == "tree" and _is_named(e.name, GROUP_SUFFIX):
            inner = [_segment_entry(x, f"{where} group {e.name}") for x in store.get(e.id, "tree").items()]
            if not inner or inner[0].name[:12] != e.name[:12]:
                raise CorruptObject(f"{where}: group {e.name} does not start with its first segment")
            segs.extend(inner)
        else:
            segs.append(_segment_entry(e, where))
    segs.sort(key=lambda e: e.name)
    return segs, evals


def read_series(store: ObjectStore, tree_id: str) -> Series:
    """The whole series named ``tree_id`` as columns; steps must increase across segments."""
    entries, evals = _series_entries(store, tree_id)
    parts = []
    last = 0
    for e in entries:
        cols = decode_segment(store.read_content(e.id), f"series {tree_id[:12]} segment {e.name}")
        steps = cols["step"]
        if len(steps) and (int(steps[0]) != int(e.name[:12]) or int(steps[0]) <= last
                           or (len(steps) > 1 and not bool(np.all(np.diff(steps.astype(np.int64)) > 0)))):
            raise CorruptObject(f"series {tree_id[:12]} segment {e.name}: steps out of order")
        if len(steps):
            last = int(steps[-1])
        parts.append(cols)
    if not parts:
        s = Series.empty()
        s.evals = evals
        return s
    return Series.of({name: np.concatenate([p[name] for p in parts]) for name, _ in COLUMNS}, evals)


def series_of_state(store: ObjectStore, state_tree: str | None) -> str | None:
    """The series tree a checkpoint's state tree names (None for checkpoints written before)."""
    if state_tree is None:
        return None
    for e in store.get(state_tree, "tree").items():
        if e.name == SERIES_ENTRY and e.type == "tree":
            return e.id
    return None


def store_final(repo: Any, writer: SeriesWriter) -> str:
    """Store the rows since the last checkpoint and the series tree, durable before the version names it."""
    with repo.writing():
        batch = repo.objects.batch()
        try:
            tid = writer.store(batch)
            batch.flush()
        except BaseException:
            batch.discard()
            raise
    return tid


def compute_record(device_kind: str, devices: int, wall_s: float) -> dict[str, Any]:
    """What a version records of the compute it took: ``device_hours`` = devices x wall hours."""
    return {"device_kind": device_kind, "devices": int(devices), "wall_s": round(float(wall_s), 3),
            "device_hours": float(devices) * float(wall_s) / 3600.0}


def device_kind(device: Any) -> str:
    """``cpu``, or the GPU's model name as torch reports it."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch
        return str(torch.cuda.get_device_name(device))
    return "cpu"


def concat(series: Iterable[Series]) -> Series:
    """Series of consecutive runs as one (steps as recorded: each run counts from 1)."""
    items = list(series)
    if not items:
        return Series.empty()
    return Series.of({name: np.concatenate([getattr(s, name) for s in items]) for name, _ in COLUMNS},
                     [e for s in items for e in s.evals])
