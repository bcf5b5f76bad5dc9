"""content.DecodedCache: bounded in bytes, a delta chain stopped at a held base (its depth still
counted against core.delta_max_depth), damage still found, and a loader run once per id."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from lineagestore.core.codecs import stored_object
from lineagestore.core.content import DecodedCache, decode_stored
from lineagestore.core.errors import CorruptObject
from lineagestore.core.ids import hash_object
from lineagestore.core.objects import CODEC_DELTA, CODEC_PLANES


def _lineage(n: int, size: int = 4096) -> list[tuple[str, bytes, bytes]]:
    """(id, content, stored form) of ``n`` bf16-like versions, the newest first stored as
    planes and each older one a delta against the next newer (a reverse chain)."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal(size // 2).astype(np.float32)
    contents = []
    for _ in range(n):
        w = w + rng.standard_normal(w.shape).astype(np.float32) * 1e-3
        contents.append((w.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    contents.reverse()  # newest first
    out: list[tuple[str, bytes, bytes]] = []
    for i, data in enumerate(contents):
        oid = hash_object("blob", data)
        if i == 0:
            _, stored = stored_object("blob", data, CODEC_PLANES, 2, min_saving=0.0)
        else:
            base_id, base_data, _ = out[-1]
            codec, stored = stored_object("blob", data, CODEC_DELTA, 2, base=(base_id, base_data), min_saving=0.0)
            assert codec == CODEC_DELTA
        out.append((oid, data, stored))
    return out


def test_the_cache_holds_at_most_its_bytes_least_recently_used_leaving_first():
    cache = DecodedCache(10_000)
    for i in range(10):
        cache.put(f"{i:064x}", "blob", bytes(3000))
        assert cache.bytes <= 10_000
    assert len(cache) == 3 and cache.bytes == 9000
    assert cache.get(f"{9:064x}") is not None and cache.get(f"{0:064x}") is None
    cache.put("f" * 64, "blob", bytes(20_000))  # larger than the whole cache: not held
    assert cache.get("f" * 64) is None and cache.bytes == 9000


def test_a_chain_read_through_the_cache_decodes_each_link_once_and_byte_for_byte():
    chain = _lineage(6)
    stored = {oid: s for oid, _, s in chain}
    loads: list[str] = []

    def load(oid: str) -> bytes:
        loads.append(oid)
        return stored[oid]

    cache = DecodedCache(1 << 20)
    for oid, data, s in chain:  # newest first: each read's base is already held
        _, got = decode_stored(oid, s, load_base=load, cache=cache)
        assert got == data
    assert loads == []  # every base came from the cache
    oldest_id, oldest, s = chain[-1]
    cold = DecodedCache(1 << 20)
    _, got = decode_stored(oldest_id, s, load_base=load, cache=cold)
    assert got == oldest and len(loads) == 5  # each link loaded once...
    for oid, data, _ in chain:  # ...and every one of them now held, verified
        held = cold.get(oid)
        assert held is not None and bytes(held[1]) == data
    assert cold.get(chain[0][0])[2] == 0 and cold.get(oldest_id)[2] == 5


def test_a_held_base_still_counts_towards_the_depth_limit():
    chain = _lineage(6)
    stored = {oid: s for oid, _, s in chain}
    cache = DecodedCache(1 << 20)
    for oid, _, s in chain[:5]:
        decode_stored(oid, s, load_base=stored.__getitem__, cache=cache)
    oid, _, s = chain[5]  # 5 deltas deep; its base is held at depth 4
    with pytest.raises(CorruptObject, match="longer than core.delta_max_depth"):
        decode_stored(oid, s, load_base=stored.__getitem__, max_depth=4, cache=cache)
    decode_stored(oid, s, load_base=stored.__getitem__, max_depth=5, cache=cache)


def test_a_corrupt_base_is_found_with_a_cache_and_nothing_damaged_is_held():
    chain = _lineage(3)
    stored = {oid: bytearray(s) for oid, _, s in chain}
    middle = chain[1][0]
    stored[middle][-1] ^= 0x01  # a flipped byte in the base's payload
    cache = DecodedCache(1 << 20)
    oid, _, s = chain[2]
    with pytest.raises(CorruptObject) as e:
        decode_stored(oid, s, load_base=lambda i: bytes(stored[i]), cache=cache)
    assert oid in str(e.value) and middle in str(e.value)
    assert cache.get(middle) is None and cache.get(oid) is None
    assert cache.get(chain[0][0]) is not None  # the sound keyframe below it was verified


def test_a_damaged_piece_is_found_even_when_its_base_is_held():
    chain = _lineage(2)
    cache = DecodedCache(1 << 20)
    decode_stored(chain[0][0], chain[0][2], cache=cache)
    oid, _, s = chain[1]
    bad = bytearray(s)
    bad[-1] ^= 0x01
    with pytest.raises(CorruptObject, match=oid):
        decode_stored(oid, bytes(bad), cache=cache)
    assert cache.get(oid) is None


def test_load_runs_once_for_threads_asking_at_once_and_an_error_reaches_every_one():
    cache = DecodedCache(1 << 20)
    calls = []
    gate = threading.Event()

    def loader():
        calls.append(1)
        gate.wait(5)
        return "blob", b"x" * 10, 0

    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.load("a" * 64, loader))) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # (no timing asserted: only lets the threads meet at the loader)
    gate.set()
    for t in threads:
        t.join()
    assert len(calls) == 1 and got == [("blob", b"x" * 10, 0)] * 4

    def failing():
        raise CorruptObject("object b is corrupt")

    with pytest.raises(CorruptObject):
        cache.load("b" * 64, failing)
    assert cache.get("b" * 64) is None
    assert cache.load("b" * 64, lambda: ("blob", b"y", 0)) == ("blob", b"y", 0)  # tried again


def test_a_store_reading_through_caching_decodes_each_link_once_and_the_cache_goes_after():
    from lineagestore.core.store import MemoryObjectStore
    store = MemoryObjectStore()
    chain = _lineage(4)
    for oid, _, s in chain:  # newest (whole) first: each delta's base is in the store
        store.put_stored(oid, s)
    reads: list[str] = []
    read = store._read_file
    store._read_file = lambda oid: (reads.append(oid), read(oid))[1]  # type: ignore[method-assign]
    with store.caching(1 << 20) as cache:
        for oid, data, _ in reversed(chain):  # oldest first: the first read decodes the whole chain
            assert store.get_raw(oid) == ("blob", data)
        assert cache.hits >= 3
    assert sorted(reads) == sorted(oid for oid, _, _ in chain)  # each object read from the store once
    assert store.cache is None
    assert store.get_raw(chain[-1][0]) == ("blob", chain[-1][1])  # and a read without it decodes again
    assert len(reads) == 8
