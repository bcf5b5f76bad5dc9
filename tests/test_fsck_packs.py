"""``lin fsck`` in full over packs (guard/fsck.py's pack pass): each pack verified in one pass
over its mapping in offset order, every object decoded and verified by the one decoder, a delta
chain's links decoded once each, the same report as over the same objects loose, and each kind
of damaged or hostile pack named in the report."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import blake3
import numpy as np
import pytest

from lineagestore import Repo
from lineagestore.core import content
from lineagestore.core.codecs import stored_object
from lineagestore.core.ids import hash_object
from lineagestore.core.objects import CODEC_DELTA, CODEC_PLANES, CODEC_RAW, pack_header
from lineagestore.core.packs import ENTRY_SIZE, FANOUT_SIZE, PACK_HEADER_SIZE, Pack, PackWriter
from lineagestore.guard import fsck_objects
from lineagestore.guard.fsck import check


def _messages(rep) -> list[str]:
    return [p.message for p in rep.problems]


def _pack_all_loose(repo: Repo) -> Pack:
    """Every loose object into one pack, the loose files removed (as a repack leaves them)."""
    store = repo.objects
    ids = list(store.iter_ids())
    w = PackWriter(store.packs.folder, repo.tmp_dir)
    for oid in ids:
        w.add(oid, store.get_stored(oid))
    pack = w.finish()
    for oid in ids:
        store.remove(oid)
    return pack


def _chain(n: int, size: int = 1 << 16) -> list[tuple[str, bytes]]:
    """``n`` float32 tensors, each a small update of the last, in stored form newest first: the
    newest whole (byte planes), each older one a delta against the one before it (as repack
    writes reverse deltas, each right after its base)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal(size // 4).astype(np.float32)
    versions = []
    for _ in range(n):
        w = w + rng.standard_normal(w.shape).astype(np.float32) * 1e-3
        versions.append(w.tobytes())
    versions.reverse()
    out: list[tuple[str, bytes]] = []
    for i, data in enumerate(versions):
        oid = hash_object("blob", data)
        if i == 0:
            codec, stored = stored_object("blob", data, CODEC_PLANES, 4, min_saving=0.0)
        else:
            codec, stored = stored_object("blob", data, CODEC_DELTA, 4, base=(out[-1][0], versions[i - 1]),
                                          min_saving=0.0)
        assert codec == (CODEC_PLANES if i == 0 else CODEC_DELTA)
        out.append((oid, stored))
    return out


@pytest.mark.parametrize("runs", ["one thread", "pool, short runs"])
def test_a_packed_delta_chain_is_verified_in_one_pass_each_link_decoded_once(repo, monkeypatch, runs):
    if runs != "one thread":  # every run on the pool, cut every 4 objects (never inside a chain)
        monkeypatch.setattr(fsck_objects, "_SMALL", 0)
        monkeypatch.setattr(fsck_objects, "_RUN_OBJECTS", 4)
    chain = _chain(8)
    small = [(hash_object("blob", b"%d" % i), pack_header("blob", CODEC_RAW, len(b"%d" % i)) + b"%d" % i)
             for i in range(50)]
    w = PackWriter(repo.objects.packs.folder, repo.tmp_dir)
    for oid, stored in small[:25] + chain + small[25:]:
        w.add(oid, stored)
    w.finish()
    repo = Repo.open(repo.path)
    undeltas: list[int] = []
    real_undelta = content._undelta
    monkeypatch.setattr(content, "_undelta", lambda *a: undeltas.append(1) or real_undelta(*a))
    reads: list[str] = []
    real_read = repo.objects._read_file
    monkeypatch.setattr(repo.objects, "_read_file", lambda oid: reads.append(oid) or real_read(oid))
    rep = check(repo)
    assert rep.ok, _messages(rep)
    assert rep.objects == len(chain) + len(small)
    assert rep.bytes_verified == 8 * (1 << 16) + sum(len(s) - 16 for _, s in small)
    assert len(undeltas) == len(chain) - 1  # each delta decoded once: its base came from the pass
    assert reads == []  # nothing read through the store: the pass reads the mapping
    assert repo.objects.cache is None
    # the same chain read alone from the store gives the same bytes
    for oid, _ in chain:
        assert hash_object("blob", repo.objects.get_raw(oid)[1]) == oid


def test_the_report_of_a_packed_store_is_the_report_of_the_same_objects_loose(lin, store_dir):
    from conftest import make_model_dir
    for i in range(3):
        code, _, err = lin("import" if i == 0 else "commit", str(make_model_dir(store_dir / f"m{i}", seed=i)),
                           "--name", f"step{i}")
        assert code == 0, err
    repo = Repo.open(store_dir / ".lineage")
    loose = check(repo)
    _pack_all_loose(repo)
    repo = Repo.open(repo.path)
    packed = check(repo)
    assert loose.ok and packed.ok, (_messages(loose), _messages(packed))
    for field in ("objects", "bytes_verified", "refs", "reachable", "unreachable"):
        assert getattr(packed, field) == getattr(loose, field), field
    assert packed.reachable > 10
    # an object loose and packed at once is verified and counted once
    some = next(iter(repo.objects.iter_ids()))
    repo.objects.put_stored(some, repo.objects.get_stored(some))
    assert check(Repo.open(repo.path)).objects == packed.objects


def _one_pack(repo: Repo, n: int = 20) -> tuple[Pack, dict[str, bytes]]:
    objs: dict[str, bytes] = {}
    for i in range(n):
        data = b"object %d " % i + bytes(200 + i)
        objs[hash_object("blob", data)] = pack_header("blob", CODEC_RAW, len(data)) + data
    w = PackWriter(repo.objects.packs.folder, repo.tmp_dir)
    for oid, stored in objs.items():
        w.add(oid, stored)
    return w.finish(), objs


def _writable(path: Path) -> None:
    os.chmod(path, 0o644)


def _rewrite_index(pack: Pack, edit) -> None:
    """Change an index's bytes with ``edit`` and give it a valid checksum again (a hostile one)."""
    raw = bytearray(pack.idx_path.read_bytes())
    edit(raw)
    raw[-32:] = blake3.blake3(bytes(raw[:-32])).digest()
    _writable(pack.idx_path)
    pack.idx_path.write_bytes(bytes(raw))


def _entry_at(pack: Pack, i: int) -> int:
    return PACK_HEADER_SIZE + FANOUT_SIZE + 32 * pack.count + ENTRY_SIZE * i


def test_a_flipped_byte_names_the_object_its_pack_and_offset_and_nothing_else(repo):
    pack, objs = _one_pack(repo)
    victim = sorted(objs)[7]
    e = pack.find(victim)
    assert e is not None
    _writable(pack.path)
    data = bytearray(pack.path.read_bytes())
    data[e.offset + 40] ^= 0x04
    pack.path.write_bytes(bytes(data))
    rep = check(Repo.open(repo.path))
    damaged = {p.subject for p in rep.problems}
    assert damaged == {victim, f"objects/pack/{pack.name}"}
    msg = next(p.message for p in rep.problems if p.subject == victim)
    assert "CRC-32" in msg and pack.name in msg
    assert rep.objects == len(objs)


def test_a_crc_in_the_index_that_is_not_the_objects_is_named(repo):
    pack, objs = _one_pack(repo)
    victim = sorted(objs)[3]  # entries are in id order
    _rewrite_index(pack, lambda raw: struct.pack_into("<I", raw, _entry_at(pack, 3) + 16, 12345))
    rep = check(Repo.open(repo.path))
    assert [p.subject for p in rep.problems] == [victim]
    assert "CRC-32" in rep.problems[0].message and pack.name in rep.problems[0].message


def test_a_truncated_pack_is_named_and_its_objects_read_as_missing(repo):
    pack, objs = _one_pack(repo)
    _writable(pack.path)
    with open(pack.path, "r+b") as f:
        f.truncate(os.path.getsize(pack.path) - 100)
    rep = check(Repo.open(repo.path))
    assert [p.subject for p in rep.problems] == [f"objects/pack/{pack.idx_path.name}"]
    assert pack.name in rep.problems[0].message
    assert rep.objects == 0


@pytest.mark.parametrize("field,value", [("offset", 1 << 40), ("length", 1 << 30), ("offset", 2)])
def test_an_index_pointing_outside_its_pack_is_named(repo, field, value):
    pack, objs = _one_pack(repo)
    at = _entry_at(pack, 5) + (0 if field == "offset" else 8)
    _rewrite_index(pack, lambda raw: struct.pack_into("<Q", raw, at, value))
    rep = check(Repo.open(repo.path))
    assert [p.subject for p in rep.problems] == [f"objects/pack/{pack.idx_path.name}"]
    assert "outside" in rep.problems[0].message and sorted(objs)[5] in rep.problems[0].message


def test_duplicate_and_unsorted_ids_in_an_index_are_named(repo):
    pack, objs = _one_pack(repo, 40)
    ids = sorted(objs)
    twin = next(i for i in range(len(ids) - 1) if ids[i][:2] == ids[i + 1][:2])  # same fanout slot
    base = PACK_HEADER_SIZE + FANOUT_SIZE

    def duplicate(raw):
        raw[base + 32 * (twin + 1):base + 32 * (twin + 2)] = raw[base + 32 * twin:base + 32 * (twin + 1)]

    _rewrite_index(pack, duplicate)
    rep = check(Repo.open(repo.path))
    assert [p.subject for p in rep.problems] == [f"objects/pack/{pack.idx_path.name}"]
    assert "sorted and unique" in rep.problems[0].message


def test_a_damaged_base_inside_a_pack_names_the_base_and_each_delta_on_it(repo):
    chain = _chain(4)
    w = PackWriter(repo.objects.packs.folder, repo.tmp_dir)
    for oid, stored in chain:
        w.add(oid, stored)
    pack = w.finish()
    base_id = chain[1][0]  # the first delta: the two older ones rest on it
    e = pack.find(base_id)
    assert e is not None
    _writable(pack.path)
    data = bytearray(pack.path.read_bytes())
    data[e.offset + e.length - 3] ^= 0x10
    pack.path.write_bytes(bytes(data))
    rep = check(Repo.open(repo.path))
    by = {p.subject: p.message for p in rep.problems}
    assert set(by) == {base_id, chain[2][0], chain[3][0], f"objects/pack/{pack.name}"}
    assert base_id in by[chain[2][0]]  # the delta's problem names the base it rests on
    assert chain[0][0] not in by  # the newest, stored whole, is sound
