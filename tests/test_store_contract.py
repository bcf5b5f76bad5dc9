"""One contract, three object stores: every test runs against the disk store, a batch of it (its
objects waiting in temp files until flush) and the memory twin."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineagestore.core.content import ParallelWriter, content_id, file_content_id
from lineagestore.core.errors import CorruptObject, InvalidInput, ObjectNotFound
from lineagestore.core.ids import hash_object
from lineagestore.core.objects import CHUNK_SIZE, CODEC_RAW, CODEC_ZSTD, RECORDS_MAX, Tree, TreeEntry
from lineagestore.core.store import BatchObjectStore, DiskObjectStore, MemoryObjectStore


@pytest.fixture(params=["disk", "batch", "memory"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryObjectStore()
        return
    (tmp_path / "objects").mkdir()
    (tmp_path / "tmp").mkdir()
    disk = DiskObjectStore(tmp_path / "objects", tmp_path / "tmp")
    if request.param == "disk":
        yield disk
        return
    batch = disk.batch()
    yield batch
    batch.discard()


def file_of(store, oid: str):
    """Where the bytes of ``oid`` are: its object file, or a batch's temp file until flush."""
    waiting = store.waiting_file(oid) if isinstance(store, BatchObjectStore) else None
    return waiting or store.path_for(oid)


def flip_byte(store, oid: str, offset: int = -1) -> None:
    if isinstance(store, MemoryObjectStore):
        store.corrupt(oid, offset)
        return
    p = file_of(store, oid)
    os.chmod(p, 0o644)
    b = bytearray(p.read_bytes())
    b[offset] ^= 0x01
    p.write_bytes(bytes(b))


def test_put_get_round_trip(store):
    oid = store.put("blob", b"hello world")
    assert oid == hash_object("blob", b"hello world")
    assert store.has(oid)
    assert store.get_raw(oid) == ("blob", b"hello world")
    assert store.header(oid).type == "blob"
    assert store.header(oid).size == 11


def test_id_depends_on_type_and_content_not_codec(store):
    compressible = b"a" * 10_000
    random_ = os.urandom(10_000)
    a = store.put("blob", compressible)
    b = store.put("blob", random_)
    assert store.header(a).codec == CODEC_ZSTD
    assert store.header(b).codec == CODEC_RAW
    assert a == hash_object("blob", compressible) and b == hash_object("blob", random_)
    assert store.put("records", compressible) != a


def test_put_twice_stores_once_and_refreshes_mtime(store):
    oid = store.put("blob", b"x" * 100)
    before = store.written_objects
    if isinstance(store, DiskObjectStore):
        old = time.time() - 3600
        os.utime(file_of(store, oid), (old, old))
    m0 = store.mtime(oid)
    store.put("blob", b"x" * 100)
    assert store.written_objects == before
    assert store.mtime(oid) > m0


def test_missing_object(store):
    with pytest.raises(ObjectNotFound, match="0" * 64):
        store.get_raw("0" * 64)


def test_invalid_ids_are_rejected_before_any_path_is_built(store):
    for bad in ("../../etc/passwd", "ab", "A" * 64, "g" * 64, "0" * 63 + "/"):
        with pytest.raises(InvalidInput):
            store.get_raw(bad)


def test_flipped_byte_is_detected_on_every_read(store):
    oid = store.put("blob", os.urandom(5000))
    flip_byte(store, oid)
    with pytest.raises(CorruptObject, match=oid):
        store.get_raw(oid)
    with pytest.raises(CorruptObject, match=oid):
        store.read_content(oid)


def test_flipped_byte_in_compressed_object(store):
    oid = store.put("blob", b"abc" * 10_000)
    assert store.header(oid).codec == CODEC_ZSTD
    flip_byte(store, oid, 20)
    with pytest.raises(CorruptObject, match=oid):
        store.get_raw(oid)


def test_structured_object_round_trip(store):
    t = Tree(entries=[TreeEntry("a.txt", "blob", "1" * 64, 3, False)])
    oid = store.put_object(t)
    back = store.get(oid, "tree")
    assert back.items() == t.items()
    with pytest.raises(CorruptObject, match=f"^object {oid} is a tree, expected a commit$"):
        store.get(oid, "commit")


def test_large_content_is_chunked_and_streams_back(store, tmp_path):
    data = os.urandom(CHUNK_SIZE * 2 + 12345)
    p = tmp_path / "big.bin"
    p.write_bytes(data)
    with open(p, "rb") as f, ParallelWriter(2) as w:
        oid = store.put_stream(f, len(data), w).result()
    assert store.header(oid).type == "chunks"
    assert store.get(oid, "chunks").size == len(data)
    pieces = list(store.iter_content(oid))
    assert len(pieces) == 3 and b"".join(pieces) == data
    assert store.put_bytes_chunked(data) == oid
    assert store.get(oid, "chunks").parts == [[hash_object("blob", data[i:i + CHUNK_SIZE]), len(pieces[i // CHUNK_SIZE])]
                                               for i in range(0, len(data), CHUNK_SIZE)]
    fd = os.open(p, os.O_RDONLY)
    try:
        with ParallelWriter(2) as w:
            assert store.put_range(fd, 0, len(data), w).result() == oid
        assert store.put_range(fd, 0, len(data)) == oid
    finally:
        os.close(fd)
    with ParallelWriter(2) as w:
        assert store.put_bytes_chunked(data, w).result() == oid
    assert content_id([(hash_object("blob", data[i:i + CHUNK_SIZE]), len(data[i:i + CHUNK_SIZE]))
                       for i in range(0, len(data), CHUNK_SIZE)]) == oid == file_content_id(p)


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1])
def test_chunking_rule_at_the_edges(store, tmp_path, size):
    """Up to CHUNK_SIZE bytes (empty included) are one blob; one byte more is a chunks object."""
    data = (b"\x01\x02" * (size // 2 + 1))[:size]
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    oid = store.put_bytes_chunked(data)
    assert store.header(oid).type == ("blob" if size <= CHUNK_SIZE else "chunks")
    assert store.read_content(oid) == data and file_content_id(p) == oid
    with open(p, "rb") as f:
        assert store.put_stream(f, size) == oid


def test_stored_form_copies_between_stores_with_verification(store):
    other = MemoryObjectStore()
    oid = store.put("blob", b"payload" * 100)
    raw = store.get_stored(oid)
    other.put_stored(oid, raw)
    assert other.get_raw(oid) == ("blob", b"payload" * 100)
    with pytest.raises(CorruptObject, match=f"^object {'1' * 64} is corrupt: its content hashes to {oid[:16]}"):
        other.put_stored("1" * 64, raw)
    assert not other.has("1" * 64)


def test_iter_ids_and_prefix(store):
    ids = {store.put("blob", bytes([i]) * 70) for i in range(20)}
    assert set(store.iter_ids()) == ids
    one = sorted(ids)[0]
    assert one in store.resolve_prefix(one[:6])
    assert store.stored_size(one) == len(store.get_stored(one))


def test_objects_over_their_types_limit_are_never_written(store):
    with pytest.raises(InvalidInput, match="a records object holds at most"):
        store.put("records", bytes(RECORDS_MAX + 1))
    with pytest.raises(InvalidInput, match="a blob object holds at most"):
        store.put("blob", bytes(CHUNK_SIZE + 1))
    assert store.put("records", bytes(RECORDS_MAX)) == hash_object("records", bytes(RECORDS_MAX))
    assert list(store.iter_ids()) == [hash_object("records", bytes(RECORDS_MAX))]


def test_a_batch_shows_its_objects_only_after_flush(tmp_path):
    (tmp_path / "objects").mkdir()
    (tmp_path / "tmp").mkdir()
    disk = DiskObjectStore(tmp_path / "objects", tmp_path / "tmp")
    batch = disk.batch()
    oid = batch.put("blob", b"waiting" * 20)
    assert batch.has(oid) and not disk.has(oid) and list(disk.iter_ids()) == []
    assert batch.flush() == 1
    assert disk.get_raw(oid) == ("blob", b"waiting" * 20) and batch.waiting_file(oid) is None


def test_disk_objects_are_read_only(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "t").mkdir()
    s = DiskObjectStore(tmp_path / "o", tmp_path / "t")
    oid = s.put("blob", b"data" * 50)
    p = s.path_for(oid)
    assert p.stat().st_mode & 0o222 == 0
    assert p.parent.stat().st_mode & 0o222 == 0
    assert list((tmp_path / "t").iterdir()) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=5000), type_name=st.sampled_from(["blob", "records"]))
def test_property_any_bytes_round_trip(store, data, type_name):
    oid = store.put(type_name, data)
    assert store.get_raw(oid) == (type_name, data)
    assert oid == hash_object(type_name, data)
