"""Record-id sets: sorted arrays of unique 16-byte record ids, and streams of them.

A **record-id set** is a sorted array of unique ids (bytewise order). In numpy it is an array of
dtype ``S16`` (fixed 16-byte strings compare like ``memcmp``), so sorting, merging and binary
search run in numpy without converting the ids. Large sets travel as streams of sorted chunks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from .records import ID_BYTES

ID_DTYPE = np.dtype(f"S{ID_BYTES}")


def as_ids(buf: bytes | bytearray | memoryview) -> np.ndarray:
    if len(buf) % ID_BYTES:
        raise ValueError(f"record-id buffer of {len(buf)} bytes is not a multiple of {ID_BYTES}")
    return np.frombuffer(buf, dtype=ID_DTYPE)


def sort_unique(a: np.ndarray, presorted_runs: bool = False) -> np.ndarray:
    """Sort ``S16`` ids and drop duplicates (``presorted_runs``: a concatenation of sorted runs)."""
    if len(a) == 0:
        return a
    s = np.sort(a, kind="stable" if presorted_runs else "quicksort")
    if len(s) == 1:
        return s
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s if keep.all() else s[keep]


def merge_sorted(streams: Sequence[Iterable[np.ndarray]]) -> Iterator[np.ndarray]:
    """K-way merge of streams of sorted ``S16`` chunks into sorted, unique chunks.

    Memory: one chunk per stream plus one output chunk. Each round takes, from every stream,
    the ids up to the smallest of the streams' last loaded ids (so at least one stream's chunk
    is used up per round), sorts them with a run-aware sort and drops duplicates.
    """
    iters = [iter(s) for s in streams]
    bufs: list[np.ndarray | None] = [None] * len(iters)

    def refill(k: int) -> None:
        for chunk in iters[k]:
            if len(chunk):
                bufs[k] = chunk
                return
        bufs[k] = None

    for k in range(len(iters)):
        refill(k)
    last: np.ndarray | None = None  # the last id emitted (1-element array)
    while True:
        live = [(k, b) for k, b in enumerate(bufs) if b is not None]
        if not live:
            return
        if len(live) == 1:
            k, chunk = live[0]
            if last is not None and chunk[0] <= last[0]:
                chunk = chunk[chunk > last[0]]
            if len(chunk) > 1 and not bool(np.all(chunk[1:] != chunk[:-1])):
                chunk = sort_unique(chunk, presorted_runs=True)
            if len(chunk):
                last = chunk[-1:]
                yield chunk
            refill(k)
            continue
        lasts = np.concatenate([b[-1:] for _, b in live])
        cut = np.sort(lasts)[:1]
        taken = []
        for k, b in live:
            n = int(np.searchsorted(b, cut, side="right")[0])
            if n:
                taken.append(b[:n])
            if n == len(b):
                refill(k)
            else:
                bufs[k] = b[n:]
        merged = sort_unique(np.concatenate(taken), presorted_runs=True)
        if last is not None and len(merged) and merged[0] == last[0]:
            merged = merged[1:]
        if len(merged):
            last = merged[-1:]
            yield merged


def rechunk(chunks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Regroup a stream of arrays into arrays of exactly ``size`` items (the last may be shorter)."""
    pending: list[np.ndarray] = []
    have = 0
    for c in chunks:
        while len(c):
            take = min(size - have, len(c))
            pending.append(c[:take])
            have += take
            c = c[take:]
            if have == size:
                yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, have = [], 0
    if have:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)
