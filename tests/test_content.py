"""The content layer: bounded decode-and-verify of stored objects (crafted object files with
absurd sizes, raw and zstd), and ids of files computed without storing them."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import zstandard
from conftest import make_model_dir, write_safetensors

from lineagestore import Repo
from lineagestore.core.content import decode_stored, file_content_id, file_id, open_raw, tensor_file_of
from lineagestore.core.errors import CorruptObject, InvalidInput
from lineagestore.core.ids import hash_object
from lineagestore.core.objects import (
    CHUNK_SIZE,
    CODEC_RAW,
    CODEC_ZSTD,
    HEADER,
    JSON_MAX,
    MAGIC,
    MAX_SIZE,
    RECORDS_MAX,
    TYPE_CODES,
    canonical_json,
    links_of,
    pack_header,
)
from lineagestore.data.ledger import PART_IDS
from lineagestore.data.records import ID_BYTES
from lineagestore.guard.trash import read_trash_object
from lineagestore.versions.models import walk_tree

ABSURD = (1 << 64) - 1


def crafted(type_name: str, codec: int, declared: int, payload: bytes) -> bytes:
    """An object file whose header says what we like (pack_header refuses absurd sizes)."""
    return HEADER.pack(MAGIC, TYPE_CODES[type_name], codec, 0, declared) + payload


def one_line_corrupt(oid: str, stored: bytes, **kw) -> str:
    with pytest.raises(CorruptObject) as e:
        decode_stored(oid, stored, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------ limits


def test_the_limits_are_the_formats():
    assert MAX_SIZE["blob"] == CHUNK_SIZE == 16 << 20
    assert MAX_SIZE["records"] == RECORDS_MAX == PART_IDS * ID_BYTES == 4 << 20  # the ledger fills them
    assert {MAX_SIZE[t] for t in ("chunks", "tensor-file", "tree", "commit", "dataset", "checkpoint")} == {JSON_MAX}
    assert set(MAX_SIZE) == set(TYPE_CODES)
    with pytest.raises(InvalidInput, match="a commit object holds at most"):
        pack_header("commit", CODEC_RAW, JSON_MAX + 1)


@pytest.mark.parametrize("codec", [CODEC_RAW, CODEC_ZSTD])
@pytest.mark.parametrize("type_name,declared", [("blob", ABSURD), ("blob", CHUNK_SIZE + 1),
                                                ("records", RECORDS_MAX + 1), ("commit", JSON_MAX + 1),
                                                ("tree", 1 << 63)])
def test_a_header_declaring_too_much_is_refused_before_decoding(type_name, declared, codec, monkeypatch):
    payload = b"x" * 100 if codec == CODEC_RAW else zstandard.ZstdCompressor().compress(b"x" * 100)
    oid = hash_object(type_name, b"x" * 100)
    decoded = []
    monkeypatch.setattr(zstandard.ZstdDecompressor, "decompress",
                        lambda *a, **k: decoded.append(a) or b"")  # must never be reached
    msg = one_line_corrupt(oid, crafted(type_name, codec, declared, payload))
    assert msg.startswith(f"object {oid} is corrupt: its header declares {declared:,} bytes")
    assert f"more than a {type_name} may hold ({MAX_SIZE[type_name]:,})" in msg
    assert decoded == []


def test_a_zstd_frame_declaring_more_than_its_header_is_refused():
    data = b"abc" * 1000
    frame = zstandard.ZstdCompressor().compress(data)
    assert frame[4] == 0x60  # single segment, 2-byte content size: replace with an 8-byte 1 TiB
    huge = frame[:4] + bytes([0xE0]) + struct.pack("<Q", 1 << 40) + frame[7:]
    assert zstandard.frame_content_size(huge) == 1 << 40
    oid = hash_object("blob", data)
    msg = one_line_corrupt(oid, crafted("blob", CODEC_ZSTD, len(data), huge))
    assert f"object {oid} is corrupt: its zstd frame declares {1 << 40:,} bytes" in msg


def test_sizes_that_do_not_match_and_payloads_that_do_not_decode():
    data = os.urandom(1000)
    oid = hash_object("blob", data)
    assert "1000 bytes, header says 1001" in one_line_corrupt(oid, crafted("blob", CODEC_RAW, 1001, data))
    assert "999 bytes, header says 1000" in one_line_corrupt(oid, crafted("blob", CODEC_RAW, 1000, data[:-1]))
    assert "does not decompress" in one_line_corrupt(oid, crafted("blob", CODEC_ZSTD, 1000, b"not zstd at all"))
    short = zstandard.ZstdCompressor(write_content_size=False).compress(data[:500])
    assert "500 bytes, header says 1000" in one_line_corrupt(oid, crafted("blob", CODEC_ZSTD, 1000, short))
    other = os.urandom(1000)
    assert "hashes to" in one_line_corrupt(oid, crafted("blob", CODEC_RAW, 1000, other), where="object X on r")


def test_decoded_content_is_bytes_for_either_codec():
    tree = canonical_json({"entries": [{"name": "a", "type": "blob", "id": "1" * 64, "size": 1, "executable": False}]})
    oid = hash_object("tree", tree)
    for codec, payload in ((CODEC_RAW, tree), (CODEC_ZSTD, zstandard.ZstdCompressor().compress(tree))):
        for stored in (crafted("tree", codec, len(tree), payload), memoryview(crafted("tree", codec, len(tree), payload))):
            h, data = decode_stored(oid, stored)
            assert (h.type, data) == ("tree", tree) and type(data) is bytes
            assert links_of("tree", data) == ["1" * 64]  # JSON parses bytes, never a memoryview


# ------------------------------------------------------------------------------ crafted files in a store


def plant(repo: Repo, oid: str, stored: bytes) -> Path:
    """Put a crafted object file where the store keeps ``oid``."""
    p = repo.objects.path_for(oid)
    p.parent.mkdir(exist_ok=True)
    os.chmod(p.parent, 0o755)
    p.write_bytes(stored)
    return p


@pytest.mark.parametrize("codec", [CODEC_RAW, CODEC_ZSTD])
def test_every_reader_of_the_store_refuses_an_absurd_header(store_dir, lin, codec):
    repo = Repo.open(store_dir / ".lineage")
    data = b"z" * 5000
    oid = hash_object("blob", data)
    payload = data if codec == CODEC_RAW else zstandard.ZstdCompressor().compress(data)
    path = plant(repo, oid, crafted("blob", codec, ABSURD, payload))
    for read in (repo.objects.get_raw, repo.objects.header, repo.objects.read_content, repo.objects.open_raw_blob,
                 lambda o: open_raw(path, o), lambda o: read_trash_object(path, o)):
        with pytest.raises(CorruptObject, match=f"object {oid}.*header declares"):
            read(oid)
    code, out, err = lin("fsck", "--json")
    assert code == 1 and oid in out and "header declares" in out, out + err
    code, out, err = lin("fsck", "--quick")
    assert code == 1 and "header declares" in out


def test_a_clone_refuses_a_crafted_object_on_the_remote(tmp_path, lin):
    """A remote is untrusted: an object file there with an absurd header fails the clone in one
    line naming the object (exit 5), never OverflowError or a huge allocation."""
    repo = Repo.init(tmp_path / "a/.lineage")
    repo.import_model(make_model_dir(tmp_path / "src"), "base")
    remote = tmp_path / "remote"
    assert lin("--store", tmp_path / "a/.lineage", "remote", "add", "origin", remote)[0] == 0
    assert lin("--store", tmp_path / "a/.lineage", "push")[0] == 0
    tree = repo.commit(repo.resolve("v001")).tree
    cfg = next(f for f in walk_tree(repo.objects, tree) if f.path == "config.json").id
    key = next(p for p in remote.rglob("*") if p.is_file() and p.relative_to(remote).as_posix().replace("/", "")
               .endswith(cfg))
    os.chmod(key, 0o644)
    key.write_bytes(crafted("blob", CODEC_ZSTD, ABSURD, zstandard.ZstdCompressor().compress(b"{}")))
    code, out, err = lin("clone", remote, tmp_path / "b")
    assert code == 5, out + err
    assert cfg in err and "header declares" in err and "Traceback" not in err
    code, out, _ = lin("--store", tmp_path / "a/.lineage", "verify", "--remote", "origin", "--full", "--json")
    assert code == 1 and cfg in out


# ------------------------------------------------------------------------------ ids without storing


def test_ids_of_files_are_the_ids_the_store_gives_them(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    write_safetensors(src / "model.safetensors", {
        "big": ("U8", [CHUNK_SIZE + 100], rng.integers(0, 255, CHUNK_SIZE + 100, dtype=np.uint8).tobytes()),
        "empty": ("F32", [0], b""),
        "small": ("F32", [8], np.arange(8, dtype=np.float32).tobytes()),
    }, {"format": "pt"})
    (src / "config.json").write_text('{"model_type": "toy"}')
    (src / "empty.txt").write_bytes(b"")
    (src / "big.dat").write_bytes(os.urandom(CHUNK_SIZE + 5))
    repo = Repo.init(tmp_path / ".lineage")
    repo.import_model(src, "base")
    stored = {f.path: f for f in walk_tree(repo.objects, repo.commit(repo.resolve("v001")).tree)}
    assert stored["big.dat"].type == "chunks"
    for rel, f in stored.items():
        assert file_id(src / rel, f.type) == f.id, rel
        if f.type != "tensor-file":
            assert file_content_id(src / rel) == f.id
    tf = tensor_file_of(src / "model.safetensors")
    assert tf.encode() == repo.objects.get(stored["model.safetensors"].id, "tensor-file").encode()
    assert file_id(src / "config.json", "tensor-file") is None  # not a safetensors file
    assert file_id(tmp_path / "absent", "blob") is None
