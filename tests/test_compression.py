"""core.compression (auto | zstd | none) and the checkout of raw-stored pieces by in-kernel copy."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import enospc_at_fsync, write_safetensors

from lineagestore import Repo
from lineagestore.core import fsutil
from lineagestore.core.errors import CorruptObject
from lineagestore.core.objects import CHUNK_SIZE, CODEC_RAW, CODEC_ZSTD, encode_payload, has_repeats
from lineagestore.versions.models import walk_tree


def _bf16(rng, n: int) -> bytes:
    """Trained-looking bf16 weights: the upper halves of N(0, 0.02) float32s."""
    f = (rng.standard_normal(n) * 0.02).astype(np.float32)
    return (f.view(np.uint32) >> 16).astype(np.uint16).tobytes()


def weights_folder(path: Path, seed: int = 0) -> Path:
    """A model whose big tensor (> one 16 MiB chunk) has no repeats, plus a zero tensor."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    big = CHUNK_SIZE // 2 + 300_000  # bf16 elements: 16.6 MiB, two chunks
    write_safetensors(path / "model.safetensors", {
        "embed.weight": ("BF16", [big], _bf16(rng, big)),
        "norm.weight": ("F32", [600_000], np.zeros(600_000, np.float32).tobytes()),
        "small.bias": ("F32", [64], rng.standard_normal(64).astype(np.float32).tobytes()),
    }, {"format": "pt"})
    (path / "config.json").write_text('{"model_type": "toy", "hidden_size": 64}\n' * 40)
    return path


def set_mode(store_dir: Path, mode: str) -> None:
    with open(store_dir / ".lineage" / "config.toml", "a") as f:
        f.write(f'\n[core]\ncompression = "{mode}"\n')


def codecs(repo: Repo, rev: str) -> dict[str, set[int]]:
    """Codec of every content piece, per tensor name (and per plain file path)."""
    out: dict[str, set[int]] = {}
    for f in walk_tree(repo.objects, repo.commit(repo.resolve(rev)).tree):
        if f.type == "tensor-file":
            for t in repo.objects.get(f.id, "tensor-file").entries():
                out[t.name] = _piece_codecs(repo, t.id)
        else:
            out[f.path] = _piece_codecs(repo, f.id)
    return out


def _piece_codecs(repo: Repo, oid: str) -> set[int]:
    h = repo.objects.header(oid)
    if h.type == "chunks":
        return {repo.objects.header(p).codec for p, _ in repo.objects.get(oid, "chunks").parts}
    return {h.codec}


def same_folder(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir() if not p.name.startswith(".lin-tmp")) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def test_probe_tells_weights_from_text():
    rng = np.random.default_rng(1)
    assert not has_repeats(_bf16(rng, 2 << 20))
    assert not has_repeats(rng.standard_normal(1 << 20).astype(np.float32).tobytes())
    assert has_repeats(bytes(3 << 20))
    assert has_repeats(b'{"text": "In the beginning God created the heaven and the earth."}\n' * 50_000)
    weights = _bf16(rng, 1 << 20)
    assert encode_payload(weights, 1, "auto")[0] == CODEC_RAW
    assert encode_payload(weights, 1, "zstd")[0] == CODEC_ZSTD  # entropy coding still gains ~20%
    assert encode_payload(bytes(1 << 21), 1, "none")[0] == CODEC_RAW


@pytest.mark.parametrize("mode", ["auto", "zstd", "none"])
def test_each_mode_round_trips_byte_for_byte(mode, store_dir, lin):
    set_mode(store_dir, mode)
    src = weights_folder(store_dir / "src")
    assert lin("import", src, "--name", "base")[0] == 0
    assert lin("checkout", "v001", "--to", store_dir / "out")[0] == 0
    assert same_folder(src, store_dir / "out")
    c = codecs(Repo.open(store_dir / ".lineage"), "v001")
    if mode == "auto":
        assert c["embed.weight"] == {CODEC_RAW}  # no repeats: stored as is, copied in the kernel
        assert c["norm.weight"] == {CODEC_ZSTD}  # zeros
        assert c["config.json"] == {CODEC_ZSTD}
    elif mode == "zstd":
        assert c["embed.weight"] == {CODEC_ZSTD} and c["norm.weight"] == {CODEC_ZSTD}
    else:
        assert all(v == {CODEC_RAW} for v in c.values())


def test_checkout_without_copy_file_range(store_dir, lin, monkeypatch):
    src = weights_folder(store_dir / "src")
    assert lin("import", src, "--name", "base")[0] == 0
    monkeypatch.setattr(fsutil, "_COPY_FILE_RANGE_OK", False)  # old kernels, other file systems
    assert lin("checkout", "v001", "--to", store_dir / "out")[0] == 0
    assert same_folder(src, store_dir / "out")


def test_a_flipped_byte_in_a_raw_piece_fails_the_checkout_and_writes_nothing(store_dir, lin):
    src = weights_folder(store_dir / "src")
    assert lin("import", src, "--name", "base")[0] == 0
    repo = Repo.open(store_dir / ".lineage")
    tf = next(f for f in walk_tree(repo.objects, repo.commit(repo.resolve("v001")).tree)
              if f.type == "tensor-file")
    embed = repo.objects.get(tf.id, "tensor-file").entries()[0]
    piece = repo.objects.get(embed.id, "chunks").parts[1][0]
    assert repo.objects.header(piece).codec == CODEC_RAW
    p = repo.objects.path_for(piece)
    os.chmod(p, 0o644)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    out = store_dir / "out"
    code, _, err = lin("checkout", "v001", "--to", out)
    assert code == 5 and piece in err
    assert not (out / "model.safetensors").exists()
    assert not [n for n in os.listdir(out) if n.startswith(".lin-tmp")] if out.exists() else True
    with pytest.raises(CorruptObject, match=piece):
        repo.objects.open_raw_blob(piece)


def test_a_truncated_raw_object_is_reported_not_mapped(store_dir, lin):
    src = weights_folder(store_dir / "src")
    assert lin("import", src, "--name", "base")[0] == 0
    repo = Repo.open(store_dir / ".lineage")
    piece = next(oid for oid in repo.objects.iter_ids()
                 if repo.objects.header(oid).codec == CODEC_RAW and repo.objects.header(oid).size > 1 << 20)
    p = repo.objects.path_for(piece)
    os.chmod(p, 0o644)
    with open(p, "r+b") as f:
        f.truncate(os.path.getsize(p) - 1)
    with pytest.raises(CorruptObject, match=f"{piece} is corrupt"):
        repo.objects.open_raw_blob(piece)
    code, _, err = lin("checkout", "v001", "--to", store_dir / "out")
    assert code == 5 and piece in err


def test_an_unknown_mode_is_one_clear_error(store_dir, lin):
    set_mode(store_dir, "lz4")
    code, _, err = lin("log")
    assert code == 4
    assert "core.compression = 'lz4' is not one of auto, zstd, none" in err
    assert "config.toml" in err


def test_put_file_range_copies_verifies_and_dedupes(tmp_path):
    from lineagestore.core.content import ParallelWriter
    from lineagestore.core.errors import InvalidInput
    from lineagestore.core.ids import hash_object
    from lineagestore.core.store import DiskObjectStore
    (tmp_path / "objects").mkdir()
    (tmp_path / "tmp").mkdir()
    store = DiskObjectStore(tmp_path / "objects", tmp_path / "tmp")
    rng = np.random.default_rng(3)
    weights = _bf16(rng, (CHUNK_SIZE + (3 << 20)) // 2)  # 19 MiB: two pieces
    src = tmp_path / "src.bin"
    src.write_bytes(b"HEAD" + weights + bytes(2 << 20))
    fd = os.open(src, os.O_RDONLY)
    try:
        with ParallelWriter(2) as w:
            whole = store.put_range(fd, 4, len(weights), w).result()
            zeros = store.put_range(fd, 4 + len(weights), 2 << 20, w).result()
        assert store.read_content(whole) == weights
        assert zeros == hash_object("blob", bytes(2 << 20))
        assert store.header(zeros).codec == CODEC_ZSTD
        parts = store.get(whole, "chunks").parts
        assert {store.header(p).codec for p, _ in parts} == {CODEC_RAW}
        n = store.written_objects
        with ParallelWriter(2) as w:
            assert store.put_range(fd, 4, len(weights), w).result() == whole
        assert store.written_objects == n  # stored once
        with pytest.raises(InvalidInput, match="ended early"):
            store.put_range(fd, len(weights), 4 << 20, where=str(src))  # past the end
    finally:
        os.close(fd)
    assert not list((tmp_path / "tmp").iterdir())


def test_full_disk_while_copying_weights_in_the_kernel(store_dir, lin, monkeypatch):
    """ENOSPC at each fsync of a commit whose tensors take the copy_file_range path: exit 9,
    nothing half-written, no temp file, the store consistent."""
    from lineagestore.guard.fsck import check
    base = weights_folder(store_dir / "a", seed=1)
    new = weights_folder(store_dir / "b", seed=2)
    assert lin("import", base, "--name", "a")[0] == 0
    real_fsync = os.fsync
    seen = []
    for k in range(1, 8):
        monkeypatch.setattr(os, "fsync", enospc_at_fsync(k))
        code, _, err = lin("commit", new, "--name", f"b{k}")
        monkeypatch.setattr(os, "fsync", real_fsync)
        seen.append(code)
        assert code in (0, 9), err
        if code == 9:
            assert "no space left on device" in err and "Traceback" not in err
        repo = Repo.open(store_dir / ".lineage")
        rep = check(repo)
        assert rep.ok, [p.message for p in rep.problems]
        assert not list((store_dir / ".lineage" / "tmp").iterdir())
        if code == 0:
            break
    assert 9 in seen
