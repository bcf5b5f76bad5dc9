"""Model-aware codecs (core/codecs.py): byte planes (codec 2) and XOR delta (codec 3), read
through the real store (decode_stored), bounded chains, damage found on read and by fsck."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineagestore.core import codecs
from lineagestore.core.codecs import pack_planes, stored_object
from lineagestore.core.errors import CorruptObject, InvalidInput, ObjectNotFound
from lineagestore.core.ids import hash_object
from lineagestore.core.objects import CODEC_DELTA, CODEC_PLANES, CODEC_RAW, HEADER_SIZE, pack_header
from lineagestore.core.repo import Repo
from lineagestore.guard.fsck import check

# (name, itemsize, torch dtype or None for numpy-made bytes) of every dtype a tensor may have
DTYPES = [("BF16", 2, torch.bfloat16), ("F16", 2, torch.float16), ("F32", 4, torch.float32),
          ("I8", 1, torch.int8), ("F64", 8, torch.float64)]
DTYPES += [(n, 1, getattr(torch, t)) for n, t in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"))
           if hasattr(torch, t)]
SPECIAL = [0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e-45, 1e-40, 6e-8, 1e-8, 2.0 ** -126,
           2.0 ** -149, 65504.0, 448.0, 57344.0, -1.5, 1.0]


def tensor_bytes(dtype: torch.dtype, seed: int, n: int, specials: list[int], scale: float) -> bytes:
    """``n`` elements like trained weights (normal, ``scale``), with special values (NaN, Inf,
    subnormals, -0) at the given positions, as the dtype's raw bytes."""
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.int8:
        t = torch.randint(-128, 128, (n,), generator=g, dtype=torch.int8)
    else:
        w = torch.randn(n, generator=g, dtype=torch.float64) * scale
        for k, pos in enumerate(specials):
            if n:
                w[pos % n] = SPECIAL[k % len(SPECIAL)]
        t = w.to(dtype)
    return t.view(torch.uint8).numpy().tobytes() if n else b""


@pytest.fixture(scope="module")
def repo():
    with tempfile.TemporaryDirectory() as d:
        yield Repo.init(Path(d) / ".lineage")


def put_encoded(repo: Repo, data: bytes, codec: int, itemsize: int, base: str | None = None) -> str:
    """Store ``data`` with ``codec`` whatever it saves (forced: the payload built directly)."""
    oid = hash_object("blob", data)
    if codec == CODEC_PLANES:
        payload = pack_planes(data, itemsize)
    else:
        assert base is not None
        payload = bytes.fromhex(base) + pack_planes(codecs.xor_bytes(data, repo.objects.read_content(base)), itemsize)
    repo.objects.put_stored(oid, pack_header("blob", codec, len(data)) + payload)
    return oid


def object_file(repo: Repo, oid: str) -> Path:
    assert repo.path is not None
    return repo.path / "objects" / oid[:2] / oid[2:]


def flip(path: Path, offset: int) -> None:
    os.chmod(path.parent, 0o755)
    os.chmod(path, 0o644)
    b = bytearray(path.read_bytes())
    b[offset] ^= 0x10
    path.write_bytes(bytes(b))
    os.chmod(path, stat.S_IRUSR)


sizes = st.one_of(st.sampled_from([0, 1, 2, 3, 7, 64, 65, 1000, 4097]), st.integers(0, 70_000))
examples = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("dtype", DTYPES, ids=[d[0] for d in DTYPES])
@examples
@given(n=sizes, seed=st.integers(0, 2**31), tail=st.integers(0, 7), specials=st.lists(st.integers(0, 10**6), max_size=20),
       scale=st.sampled_from([0.02, 1.0, 1e-30]))
def test_planes_round_trip_through_the_store(repo, dtype, n, seed, tail, specials, scale):
    name, itemsize, tdtype = dtype
    data = tensor_bytes(tdtype, seed, n, specials, scale) + bytes(range(tail % itemsize))
    oid = put_encoded(repo, data, CODEC_PLANES, itemsize)
    assert repo.objects.header(oid).codec == CODEC_PLANES
    assert repo.objects.get_raw(oid) == ("blob", data)
    # what a writer would choose: planes only when they save, and then they decode the same
    payload = codecs.encode_planes(data, itemsize)
    assert payload is None or codecs.decode_planes(payload, len(data)) == data
    assert payload is None or len(payload) <= 0.97 * len(data)


@pytest.mark.parametrize("dtype", DTYPES, ids=[d[0] for d in DTYPES])
@examples
@given(n=sizes, seed=st.integers(0, 2**31), tail=st.integers(0, 7), specials=st.lists(st.integers(0, 10**6), max_size=20),
       step=st.sampled_from([0.0, 1e-6, 1e-3, 1.0]))
def test_delta_round_trip_through_the_store(repo, dtype, n, seed, tail, specials, step):
    name, itemsize, tdtype = dtype
    extra = bytes(range(tail % itemsize))
    base = tensor_bytes(tdtype, seed, n, specials, 0.05) + extra
    if tdtype == torch.int8 or n == 0:
        child = bytes(np.frombuffer(base, np.uint8) ^ np.uint8(seed % 256)) if base else b""
    else:  # one small optimizer-like step: most high bytes unchanged
        w = torch.frombuffer(bytearray(base[:len(base) - len(extra)]), dtype=tdtype).to(torch.float64)
        g = torch.Generator().manual_seed(seed + 1)
        child = (w + torch.randn(n, generator=g, dtype=torch.float64) * step).to(tdtype).view(torch.uint8).numpy().tobytes()
        child += extra[::-1]
    base_id = repo.objects.put("blob", base)
    if child == base or repo.objects.has(hash_object("blob", child)):
        return  # stored once already (as a delta on itself, or on its own delta, it would loop)
    oid = put_encoded(repo, child, CODEC_DELTA, itemsize, base_id)
    assert repo.objects.header(oid).codec == CODEC_DELTA
    assert repo.objects.get_raw(oid) == ("blob", child)
    payload = codecs.encode_delta(child, base, base_id, itemsize)
    assert payload is None or codecs.decode_delta(payload, len(child), base) == child


def test_weights_compress_and_random_bytes_stay_raw():
    w = tensor_bytes(torch.bfloat16, 1, 1 << 20, [], 0.02)
    payload = codecs.encode_planes(w, 2)
    assert payload is not None and len(payload) < 0.75 * len(w)
    modes = [m for m, _ in codecs.plane_sizes(payload, len(w))]
    assert modes == [codecs.MODE_RAW, codecs.MODE_ZSTD]  # random low mantissa kept raw, exponents coded
    noise = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    assert codecs.encode_planes(noise, 2) is None
    assert stored_object("blob", noise, CODEC_PLANES, 2)[0] == CODEC_RAW
    # core.compression = "none" keeps even compressible weights raw
    codec, stored = stored_object("blob", w, CODEC_PLANES, 2, mode="none")
    assert codec == CODEC_RAW and stored == pack_header("blob", CODEC_RAW, len(w)) + w


def test_stored_object_of_a_fine_tune_is_a_small_delta(tmp_path):
    repo = Repo.init(tmp_path / ".lineage")
    base = tensor_bytes(torch.bfloat16, 2, 1 << 20, [], 0.02)
    w = torch.frombuffer(bytearray(base), dtype=torch.bfloat16).float()
    child = (w + torch.randn(w.shape, generator=torch.Generator().manual_seed(3)) * 2e-5).to(torch.bfloat16)
    child_bytes = child.view(torch.uint8).numpy().tobytes()
    base_id = repo.objects.put("blob", base)
    codec, stored = stored_object("blob", child_bytes, CODEC_DELTA, 2, base=(base_id, base))
    assert codec == CODEC_DELTA and len(stored) < 0.3 * len(child_bytes)
    assert (tmp_path / ".lineage" / "format").read_text() == "1\n"
    oid = hash_object("blob", child_bytes)
    repo.objects.put_stored(oid, stored)
    # the first object with a format-3 codec raised the store's format before it was written
    assert (tmp_path / ".lineage" / "format").read_text() == "3\n"
    assert Repo.open(tmp_path / ".lineage").objects.read_content(oid) == child_bytes


def chain(repo: Repo, length: int, seed: int = 0) -> list[str]:
    """A whole object and ``length`` deltas, each against the one before; ids, whole first."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal(3001).astype(np.float32).tobytes() + b"\x01"
    ids = [repo.objects.put("blob", data)]
    for _ in range(length):
        arr = np.frombuffer(data, np.uint8).copy()
        arr[rng.integers(0, len(arr), 5)] ^= 1
        data = arr.tobytes()
        ids.append(put_encoded(repo, data, CODEC_DELTA, 4, ids[-1]))
    return ids


def test_a_chain_at_the_depth_limit_reads_and_one_deeper_fails_naming_both(tmp_path):
    repo = Repo.init(tmp_path / ".lineage")
    assert repo.objects.delta_max_depth == codecs.DEFAULT_MAX_DEPTH == 10
    repo.objects.delta_max_depth = 100  # a store refuses to write a delta it could not read
    ids = chain(repo, 11)
    repo.objects.delta_max_depth = 10
    for oid in ids[:11]:
        repo.objects.verify(oid)
    with pytest.raises(CorruptObject) as e:
        repo.objects.get_raw(ids[11])
    msg = str(e.value)
    assert "\n" not in msg and ids[11] in msg and ids[0] in msg and "core.delta_max_depth (10)" in msg
    # the bound is a setting
    repo.config.set("core.delta_max_depth", 11)
    repo.save_config()
    assert Repo.open(tmp_path / ".lineage").objects.read_content(ids[11])
    repo.config.set("core.delta_max_depth", 2)
    repo.save_config()
    again = Repo.open(tmp_path / ".lineage")
    again.objects.verify(ids[2])
    with pytest.raises(CorruptObject, match=f"object {ids[3]}: .*delta_max_depth \\(2\\) at base object {ids[0]}"):
        again.objects.get_raw(ids[3])


def test_missing_or_corrupt_base_fails_naming_both(tmp_path):
    repo = Repo.init(tmp_path / ".lineage")
    base, child = chain(repo, 1)
    flip(object_file(repo, base), HEADER_SIZE + 100)
    with pytest.raises(CorruptObject) as e:
        repo.objects.get_raw(child)
    assert child in str(e.value) and base in str(e.value) and "\n" not in str(e.value)
    os.chmod(object_file(repo, base).parent, 0o755)
    object_file(repo, base).unlink()
    with pytest.raises(CorruptObject) as e:
        repo.objects.get_raw(child)
    assert child in str(e.value) and base in str(e.value) and "missing" in str(e.value)
    problems = {p.subject: p.message for p in check(repo).problems}
    assert child in problems and base in problems[child]


def test_a_delta_of_another_size_or_a_loop_is_corrupt(tmp_path):
    repo = Repo.init(tmp_path / ".lineage")
    small = repo.objects.put("blob", b"\x00" * 100)
    data = bytes(range(200))
    stored = pack_header("blob", CODEC_DELTA, 200) + bytes.fromhex(small) + pack_planes(data, 1)
    with pytest.raises(CorruptObject, match=f"{hash_object('blob', data)}.*{small}.*100 bytes"):
        repo.objects.put_stored(hash_object("blob", data), stored)
    # two deltas naming each other (written around the checks, as damage would)
    a, b = hash_object("blob", b"a" * 64), hash_object("blob", b"b" * 64)
    for oid, base in ((a, b), (b, a)):
        repo.objects.files.write(oid, [pack_header("blob", CODEC_DELTA, 64) + bytes.fromhex(base) + pack_planes(bytes(64), 1)])
    with pytest.raises(CorruptObject, match=f"object {a}.*loops back to object {a}"):
        repo.objects.get_raw(a)
    assert not (tmp_path / ".lineage" / "objects" / hash_object("blob", data)[:2] / hash_object("blob", data)[2:]).exists()


@pytest.mark.parametrize("codec", [CODEC_PLANES, CODEC_DELTA])
def test_a_flipped_byte_is_found_on_read_and_by_fsck(tmp_path, codec):
    repo = Repo.init(tmp_path / ".lineage")
    data = tensor_bytes(torch.bfloat16, 5, 50_000, [1, 2, 3], 0.02)
    base = repo.objects.put("blob", tensor_bytes(torch.bfloat16, 6, 50_000, [], 0.02))
    oid = put_encoded(repo, data, codec, 2, base)
    assert check(repo).problems == []
    path = object_file(repo, oid)
    flip(path, path.stat().st_size - 10)  # inside the last plane
    with pytest.raises(CorruptObject, match=oid):
        repo.objects.get_raw(oid)
    assert [p.subject for p in check(repo).problems] == [oid]


@pytest.mark.parametrize("payload,why", [
    (b"", "no header"),
    (bytes([3, 3, 0, 0]), "not 3-byte elements"),
    (bytes([9, 9, 0, 0]), "element size 9"),
    (bytes([2, 1, 0, 0]), "1 planes"),
    (bytes([2, 2, 2, 0]), "tail 2"),
    (bytes([2, 2, 0, 0]) + bytes([0, 4, 0, 0, 0]) * 2 + b"\x00" * 8, "raw plane 0 holds 4 bytes, not 5"),
    (bytes([2, 2, 0, 0]) + bytes([7, 5, 0, 0, 0]) * 2 + b"\x00" * 10, "unknown mode 7"),
    (bytes([2, 2, 0, 0]) + bytes([1, 5, 0, 0, 0]) * 2 + b"\x00" * 10, "does not decompress"),
    (bytes([2, 2, 0, 0]) + bytes([0, 5, 0, 0, 0]) * 2 + b"\x00" * 11, "does not match its table"),
])
def test_malformed_plane_payloads_are_one_line_errors(payload, why):
    with pytest.raises(CorruptObject, match=why) as e:
        codecs.decode_planes(payload, 10, "object X")
    assert str(e.value).startswith("object X") and "\n" not in str(e.value)


def test_a_zstd_plane_declaring_more_than_its_share_is_refused_before_decoding():
    big = codecs.plane_compressor(1).compress(bytes(1 << 20))
    payload = bytes([1, 1, 0, 0]) + bytes([1]) + len(big).to_bytes(4, "little") + big
    with pytest.raises(CorruptObject, match="declares 1,048,576 bytes, not 10"):
        codecs.decode_planes(payload, 10, "object X")


def test_encoders_refuse_what_they_cannot_encode():
    with pytest.raises(InvalidInput):
        pack_planes(b"abc", 0)
    with pytest.raises(InvalidInput):
        codecs.encode_delta(b"abc", b"ab", "0" * 64, 1)
    with pytest.raises(InvalidInput):
        stored_object("blob", b"abc", CODEC_DELTA)
    assert codecs.itemsize_of("BF16") == 2 and codecs.itemsize_of("F32") == 4 and codecs.itemsize_of("X") == 1


def test_restore_from_trash_brings_a_delta_back_after_its_base(tmp_path):
    from lineagestore.guard.trash import restore_closure

    repo = Repo.init(tmp_path / ".lineage")
    base, child = chain(repo, 1)
    batch = tmp_path / ".lineage" / "trash" / "20261206T000000Z-1-abcdef"
    for oid in (base, child):  # both moved to trash, as gc moves objects
        src = object_file(repo, oid)
        (batch / oid[:2]).mkdir(parents=True, exist_ok=True)
        os.chmod(src.parent, 0o755)
        os.replace(src, batch / oid[:2] / oid[2:])
    assert not repo.objects.has(child) and not repo.objects.has(base)
    with repo.writing():
        out = restore_closure(repo, child)
    assert out.objects == 2
    assert repo.objects.header(child).codec == CODEC_DELTA
    assert repo.objects.get_raw(child)[1] == repo.objects.read_content(child)
    repo.objects.verify(base)


def test_pieces_of_a_chunks_object_decode_ahead_in_order_and_damage_stops_the_read(tmp_path):
    from lineagestore.core.objects import Chunks

    repo = Repo.init(tmp_path / ".lineage")
    pieces = [tensor_bytes(torch.bfloat16, k, 20_000 + k, [], 0.02) for k in range(9)]
    ids = [put_encoded(repo, p, CODEC_PLANES, 2) for p in pieces]
    whole = repo.objects.put_object(Chunks(size=sum(map(len, pieces)), parts=[[i, len(p)] for i, p in zip(ids, pieces, strict=True)]))
    assert repo.objects.read_content(whole) == b"".join(pieces)
    first = repo.objects.iter_content(whole)
    assert next(first) == pieces[0]
    first.close()  # a reader that stops early leaves no thread behind
    flip(object_file(repo, ids[5]), 30)
    got = []
    with pytest.raises(CorruptObject, match=ids[5]):
        for piece in repo.objects.iter_content(whole):
            got.append(piece)
    assert got == pieces[:5]


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**31), itemsize=st.sampled_from([1, 2, 4, 8]), n=st.integers(0, 3000),
       cut=st.integers(0, 10_000), pos=st.integers(0, 10_000), xor=st.integers(1, 255),
       codec=st.sampled_from([CODEC_PLANES, CODEC_DELTA]), declared=st.integers(-3, 3))
def test_hostile_payloads_fail_as_one_corrupt_object(seed, itemsize, n, cut, pos, xor, codec, declared):
    """A damaged or crafted payload (a byte flipped, cut short, another declared size) is a
    CorruptObject naming the object, never another exception or a wrong result."""
    from lineagestore.core.content import decode_stored

    rng = np.random.default_rng(seed)
    data = (rng.standard_normal(n) * 0.02).astype(np.float32).tobytes()[:n]
    base = bytes(rng.integers(0, 256, len(data), dtype=np.uint8))
    base_id = hash_object("blob", base)
    body = pack_planes(data if codec == CODEC_PLANES else codecs.xor_bytes(data, base), itemsize)
    payload = bytearray((bytes.fromhex(base_id) if codec == CODEC_DELTA else b"") + body)
    if payload:
        payload[pos % len(payload)] ^= xor
    payload = payload[:len(payload) - cut % (len(payload) + 1)] if cut % 3 == 0 else payload
    size = max(0, len(data) + declared)
    oid = hash_object("blob", data)
    stored = {base_id: pack_header("blob", CODEC_RAW, len(base)) + base}

    def load(i: str) -> bytes:
        if i not in stored:
            raise ObjectNotFound(f"object {i} is missing")
        return stored[i]

    try:
        _, got = decode_stored(oid, pack_header("blob", codec, size) + bytes(payload), load_base=load)
    except CorruptObject as e:
        assert oid in str(e) and "\n" not in str(e)
    else:
        assert got == data


def test_damage_deep_in_a_chain_names_the_object_read_and_the_damaged_base(tmp_path):
    repo = Repo.init(tmp_path / ".lineage")
    ids = chain(repo, 3)
    # the middle delta cut to a few bytes: no base id left in it
    path = object_file(repo, ids[2])
    os.chmod(path.parent, 0o755)
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:HEADER_SIZE + 5])
    with pytest.raises(CorruptObject) as e:
        repo.objects.get_raw(ids[3])
    msg = str(e.value)
    assert msg.startswith(f"object {ids[3]} cannot be decoded") and ids[2] in msg and "\n" not in msg
