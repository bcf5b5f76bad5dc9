"""A work folder that costs no second copy: aligned raw objects (codec 4) and checkouts that share
their blocks with the store (FICLONERANGE) where the filesystem has reflinks.

The layout and decoding are tested on any filesystem (alignment forced where there are no
reflinks); the disk usage on a loop-mounted XFS image made here (``mkfs.xfs -m reflink=1``,
which needs root, a loop device and xfsprogs). Where that image cannot be made the XFS tests
skip, saying why, unless ``LIN_REQUIRE_LOOP=1`` (CI), which makes them fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_safetensors
from hypothesis import given, settings
from hypothesis import strategies as st

from lineagestore import Repo
from lineagestore.core.content import decode_stored, open_raw
from lineagestore.core.errors import CorruptObject
from lineagestore.core.ids import hash_object
from lineagestore.core.loose import (
    ALIGN_MIN,
    MAX_ALIGN,
    aligned_start,
    reflink_block,
    share_range,
    shared_bytes,
    work_sharing,
)
from lineagestore.core.objects import CODEC_ALIGNED, CODEC_RAW, HEADER_SIZE, pack_header

BLOCK = 4096


def aligned_object(content: bytes, origin: int, block: int = BLOCK) -> bytes:
    """An aligned blob in stored form, as docs/format.md specifies it (built here, not by lin)."""
    start = HEADER_SIZE + (origin - HEADER_SIZE) % block
    return pack_header("blob", CODEC_ALIGNED, len(content)) + bytes(start - HEADER_SIZE) + content


# ------------------------------------------------------------------------------ the layout


@settings(max_examples=60, deadline=None)
@given(content=st.binary(max_size=3 * BLOCK), origin=st.integers(0, 1 << 40),
       block=st.sampled_from([512, 4096, 65536]))
def test_aligned_objects_decode_to_their_content(content, origin, block):
    stored = aligned_object(content, origin, block)
    start = len(stored) - len(content)
    assert start == aligned_start(origin, block) and start % block == origin % block
    assert HEADER_SIZE <= start < HEADER_SIZE + block
    oid = hash_object("blob", content)
    h, data = decode_stored(oid, stored)
    assert (h.codec, data) == (CODEC_ALIGNED, content)


@settings(max_examples=40, deadline=None)
@given(content=st.binary(min_size=1, max_size=2 * BLOCK), origin=st.integers(0, 10 * BLOCK), data=st.data())
def test_a_flipped_byte_anywhere_in_an_aligned_object_is_corruption(content, origin, data):
    stored = bytearray(aligned_object(content, origin))
    i = data.draw(st.integers(HEADER_SIZE, len(stored) - 1))
    stored[i] ^= 0x01
    with pytest.raises(CorruptObject, match="object "):
        decode_stored(hash_object("blob", content), bytes(stored))


def test_padding_of_a_block_or_more_is_refused():
    content = b"x" * 100
    stored = pack_header("blob", CODEC_ALIGNED, len(content)) + bytes(MAX_ALIGN) + content
    with pytest.raises(CorruptObject, match="bytes after its header"):
        decode_stored(hash_object("blob", content), stored)
    short = pack_header("blob", CODEC_ALIGNED, len(content)) + content[:-1]
    with pytest.raises(CorruptObject, match="bytes after its header"):
        decode_stored(hash_object("blob", content), short)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 5 * BLOCK), src_off=st.integers(0, 3 * BLOCK), dst_off=st.integers(0, 3 * BLOCK),
       block=st.sampled_from([0, BLOCK]))
def test_share_range_writes_exactly_the_range(tmp_path_factory, size, src_off, dst_off, block):
    folder = tmp_path_factory.mktemp("share")
    payload = np.random.default_rng(size).integers(0, 256, src_off + size, dtype=np.uint8).tobytes()
    (folder / "src").write_bytes(payload)
    (folder / "dst").write_bytes(b"\xee" * dst_off)
    src, dst = os.open(folder / "src", os.O_RDONLY), os.open(folder / "dst", os.O_RDWR)
    try:
        shared = share_range(src, src_off, size, dst, dst_off, block)
    finally:
        os.close(src)
        os.close(dst)
    assert (folder / "dst").read_bytes() == b"\xee" * dst_off + payload[src_off:]
    assert shared % BLOCK == 0 and shared <= size
    if not reflink_block(folder):
        assert shared == 0


def test_no_alignment_where_the_filesystem_has_no_reflinks(tmp_path):
    if reflink_block(tmp_path):
        pytest.skip(f"{tmp_path} is on a filesystem with reflinks")
    repo = Repo.init(tmp_path / ".lineage")
    assert repo.objects.files.alignment() == 0
    share = work_sharing(repo.tmp_dir, tmp_path / "model")
    assert not share.shares and "no reflinks" in share.reason
    assert not list((repo.tmp_dir).iterdir())  # the probe left nothing behind


def model_folder(path: Path, seed: int = 0) -> Path:
    """A model of a real layout in miniature: an embedding, two layers of attention and MLP
    matrices (fp32, 256 KiB to 4 MiB) with their norms (1 KiB, stored compressed or unpadded),
    19 MB in all. As in real files, no tensor starts on a block boundary (the data starts at
    byte 2,216)."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, tuple[str, list[int], bytes]] = {}

    def add(name: str, *shape: int) -> None:
        tensors[name] = ("F32", list(shape), rng.standard_normal(shape, dtype=np.float32).tobytes())

    add("embed_tokens.weight", 2048, 512)
    for i in range(2):
        add(f"layers.{i}.input_layernorm.weight", 256)
        for part, rows in (("q_proj", 512), ("k_proj", 128), ("v_proj", 128), ("o_proj", 512)):
            add(f"layers.{i}.self_attn.{part}.weight", rows, 512)
        add(f"layers.{i}.post_attention_layernorm.weight", 256)
        for part in ("gate_proj", "up_proj"):
            add(f"layers.{i}.mlp.{part}.weight", 768, 512)
        add(f"layers.{i}.mlp.down_proj.weight", 512, 768)
    add("norm.weight", 512)
    path.mkdir(parents=True, exist_ok=True)
    write_safetensors(path / "model.safetensors", tensors, {"format": "pt"}, pad=5)
    (path / "config.json").write_text(json.dumps({"model_type": "toy", "hidden_size": 512}))
    return path


def test_forced_alignment_stores_codec_4_and_checks_out_byte_identical(tmp_path):
    """On any filesystem: objects written aligned read back, verify, fsck and check out exactly,
    and the store's format is raised to 3 before the first one (an older lin refuses it)."""
    repo = Repo.init(tmp_path / ".lineage")
    repo.objects.files.block = BLOCK
    src = model_folder(tmp_path / "src")
    other = np.random.default_rng(5).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    (src / "tokenizer.model").write_bytes(other)  # a binary file that is not safetensors: at 0
    res = repo.import_model(src, name="base")
    assert (tmp_path / ".lineage" / "format").read_text() == "3\n"
    assert repo.objects.stored_size(hash_object("blob", other)) == BLOCK + len(other)
    codecs = {}
    for oid in repo.objects.iter_ids():
        h = repo.objects.header(oid)
        codecs[oid] = h.codec
        if h.codec == CODEC_ALIGNED:
            assert h.size >= ALIGN_MIN
            raw = open_raw(repo.objects.path_for(oid), oid)
            assert raw is not None
            with raw:
                assert raw.start == repo.objects.stored_size(oid) - h.size and raw.start % BLOCK != HEADER_SIZE
    assert sum(c == CODEC_ALIGNED for c in codecs.values()) == 16  # every tensor of 64 KiB and more, the file
    again = Repo.open(tmp_path / ".lineage")
    again.checkout(res.name, to=tmp_path / "out")
    for name in ("model.safetensors", "config.json", "tokenizer.model"):
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes()
    from lineagestore.guard.fsck import check
    assert check(again).ok


def test_an_older_lin_refuses_the_store_and_old_objects_still_read(tmp_path, monkeypatch):
    repo = Repo.init(tmp_path / ".lineage")
    repo.objects.files.block = 0  # written as before: codec 0
    src = model_folder(tmp_path / "src")
    old = repo.import_model(src, name="base")
    assert (tmp_path / ".lineage" / "format").read_text() == "1\n"
    assert {repo.objects.header(i).codec for i in repo.objects.iter_ids()} <= {CODEC_RAW, 1}
    repo = Repo.open(tmp_path / ".lineage")
    repo.objects.files.block = BLOCK
    model_folder(src, seed=1)
    new = repo.import_model(src, name="child")
    assert (tmp_path / ".lineage" / "format").read_text() == "3\n"
    for version, seed in ((old, 0), (new, 1)):
        out = tmp_path / f"out-{seed}"
        repo.checkout(version.name, to=out)
        assert out.joinpath("model.safetensors").read_bytes() == model_folder(tmp_path / f"want-{seed}", seed).joinpath(
            "model.safetensors").read_bytes()
    import lineagestore.core.repo as core_repo
    monkeypatch.setattr(core_repo, "FORMAT_VERSION", 2)
    from lineagestore.core.errors import UnsupportedFormat
    with pytest.raises(UnsupportedFormat, match="format version 3 is newer"):
        Repo.open(tmp_path / ".lineage")


def test_aligned_objects_travel_through_a_remote_and_raise_the_receivers_format(tmp_path):
    """A remote holds objects as stored: a clone receives aligned objects verbatim, so it is
    raised to format 3 before the first one lands, and checks them out exactly."""
    repo = Repo.init(tmp_path / "a" / ".lineage")
    repo.objects.files.block = BLOCK
    src = model_folder(tmp_path / "src")
    res = repo.import_model(src, name="base")
    repo.remote_add("origin", str(tmp_path / "remote"))
    repo.push("origin")
    clone = Repo.clone(str(tmp_path / "remote"), tmp_path / "b")
    assert (tmp_path / "b" / ".lineage" / "format").read_text() == "3\n"
    assert any(clone.objects.header(i).codec == CODEC_ALIGNED for i in clone.objects.iter_ids())
    clone.checkout(res.name, to=tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()


def test_a_flipped_byte_in_an_aligned_object_file_fails_the_checkout(tmp_path):
    repo = Repo.init(tmp_path / ".lineage")
    repo.objects.files.block = BLOCK
    res = repo.import_model(model_folder(tmp_path / "src"), name="base")
    oid = next(i for i in repo.objects.iter_ids() if repo.objects.header(i).codec == CODEC_ALIGNED)
    path = repo.objects.path_for(oid)
    os.chmod(path.parent, 0o755)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[HEADER_SIZE + 3] ^= 0x10  # in the padding
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptObject, match=oid):
        repo.checkout(res.name, to=tmp_path / "out")


# ------------------------------------------------------------------------------ on XFS


def _loop_unavailable() -> str | None:
    if not sys.platform.startswith("linux"):
        return "loop-mounted XFS needs Linux"
    if os.geteuid() != 0:
        return "mounting a loop device needs root"
    for tool in ("mkfs.xfs", "mount", "umount", "truncate"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (Debian: apt-get install xfsprogs; `make test` installs it)"
    return None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("LIN_REQUIRE_LOOP") == "1":
        pytest.fail(f"{reason} (LIN_REQUIRE_LOOP=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def xfs(tmp_path_factory):
    """A 512 MB sparse XFS image with reflinks, loop-mounted for this module."""
    reason = _loop_unavailable()
    if reason:
        _skip_or_fail(reason)
    where = tmp_path_factory.mktemp("xfs")
    image, mnt = where / "xfs.img", where / "mnt"
    mnt.mkdir()
    for cmd in (["truncate", "-s", "512M", str(image)], ["mkfs.xfs", "-q", "-m", "reflink=1", str(image)],
                ["mount", "-o", "loop", str(image), str(mnt)]):
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            image.unlink(missing_ok=True)
            _skip_or_fail(f"cannot make a loop-mounted XFS image: `{' '.join(cmd)}` failed: "
                          f"{(p.stderr or p.stdout).strip()[:200]}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        image.unlink(missing_ok=True)


def used_bytes(mnt: Path) -> int:
    os.sync()
    s = os.statvfs(mnt)
    return (s.f_blocks - s.f_bfree) * s.f_frsize


def run_lin(cwd: Path, *args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "lineagestore.cli.main", *args], cwd=cwd, capture_output=True,
                       text=True, env={**os.environ, "LIN_NO_PROGRESS": "1"})
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_checkout_on_xfs_costs_no_second_copy(xfs):
    work = xfs / "project"
    src = model_folder(work / "src")
    size = sum(f.stat().st_size for f in src.iterdir())
    run_lin(work, "init")
    assert reflink_block(work / ".lineage" / "tmp") == BLOCK
    run_lin(work, "import", "src", "--name", "base")
    assert (work / ".lineage" / "format").read_text() == "3\n"
    before = used_bytes(xfs)
    res = json.loads(run_lin(work, "checkout", "v001", "--json"))
    grown = used_bytes(xfs) - before
    assert grown < 0.01 * size, f"checkout of {size:,} bytes took {grown:,} bytes of disk"
    assert res["bytes_shared"] > 0.99 * size
    for name in ("model.safetensors", "config.json"):
        assert (work / "model" / name).read_bytes() == (src / name).read_bytes()
    shared = shared_bytes(work / "model" / "model.safetensors")
    assert shared is not None and shared > 0.99 * size
    status = json.loads(run_lin(work, "status", "--json"))["work"]
    assert status["shares"] is True and status["shared_bytes"] == shared
    assert "Work folder shares blocks with the store" in run_lin(work, "status")
    doctor = subprocess.run([sys.executable, "-m", "lineagestore.cli.main", "doctor", "--json"], cwd=work,
                            capture_output=True, text=True)
    assert "work-shares" in {f["code"] for f in json.loads(doctor.stdout)["findings"]}
    # writing into a shared block of the work folder copies that block: the store keeps its bytes
    with open(work / "model" / "model.safetensors", "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xff" * 10_000)
    assert ": ok" in run_lin(work, "fsck")  # (and exit 0) every object still hashes to its id
    assert "modified" in run_lin(work, "status")
    run_lin(work, "checkout", "v001", "--force")
    assert (work / "model" / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()


def test_objects_written_before_alignment_are_copied_exactly_on_xfs(xfs):
    """A store written by an older lin (codec 0) checks out as before: copied, byte-identical."""
    work = xfs / "old-store"
    src = model_folder(work / "src", seed=3)
    repo = Repo.init(work / ".lineage")
    repo.objects.files.block = 0
    res = repo.import_model(src, name="base")
    assert (work / ".lineage" / "format").read_text() == "1\n"
    info = Repo.open(work / ".lineage").checkout(res.name, to=work / "out")
    assert info.bytes_shared == 0
    assert (work / "out" / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    status = run_lin(work, "status", "--to", "out")
    assert "Work folder shares blocks with the store" in status and "the rest are copies" in status


def test_a_folder_on_another_filesystem_copies(xfs, tmp_path):
    work = xfs / "other-fs"
    src = model_folder(work / "src", seed=4)
    repo = Repo.init(work / ".lineage")
    res = repo.import_model(src, name="base")
    share = work_sharing(repo.tmp_dir, tmp_path / "out")
    assert not share.shares and "another filesystem" in share.reason
    info = repo.checkout(res.name, to=tmp_path / "out")
    assert info.bytes_shared == 0
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()


def stored_from_memory(repo: Repo, seed: int = 0) -> tuple[str, bytes]:
    """A model's tensors stored from memory, as `lin train` stores them (no file to copy from),
    in a tree of one safetensors file; returns the tree id and the file's bytes."""
    import torch

    from lineagestore.train.tensorio import store_tensors
    from lineagestore.versions.materialize import iter_file_bytes
    from lineagestore.versions.models import FileInfo, build_trees
    g = torch.Generator().manual_seed(seed)
    tensors = {"embed.weight": torch.randn(6144, 512, generator=g), "norm.weight": torch.randn(300, generator=g),
               "proj.weight": torch.randn(256, 300, generator=g).to(torch.bfloat16)}
    tf_id, size = store_tensors(repo.objects, tensors, metadata={"format": "pt"})
    tree = build_trees(repo.objects, [("model.safetensors", "tensor-file", tf_id, size, False)])
    data = b"".join(iter_file_bytes(repo.objects, FileInfo("model.safetensors", "tensor-file", tf_id, size, False)))
    return tree, data


def test_tensors_stored_from_memory_are_aligned_to_their_place_in_the_file(tmp_path):
    from lineagestore.versions.materialize import checkout_tree
    repo = Repo.init(tmp_path / ".lineage")
    repo.objects.files.block = BLOCK
    tree, data = stored_from_memory(repo)
    tf = next(repo.objects.get(i, "tensor-file") for i in repo.objects.iter_ids()
              if repo.objects.header(i).type == "tensor-file")
    start = 8 + len(tf.header.encode())
    offsets, at = {}, start
    for t in tf.entries():
        offsets[t.id], at = at, at + t.size
    aligned = [i for i in repo.objects.iter_ids() if repo.objects.header(i).codec == CODEC_ALIGNED]
    assert len(aligned) == 2  # the two matrices; the norm (1.2 KB) is too small to align
    for oid in aligned:
        content_start = repo.objects.stored_size(oid) - repo.objects.header(oid).size
        assert content_start % BLOCK == offsets[oid] % BLOCK
    checkout_tree(repo.objects, tree, tmp_path / "out", cache_dir=repo.cache_dir)
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == data
    assert (tmp_path / ".lineage" / "format").read_text() == "3\n"


def test_tensors_stored_from_memory_share_blocks_on_xfs(xfs):
    from lineagestore.versions.materialize import checkout_tree
    repo = Repo.init(xfs / "trained" / ".lineage")
    tree, data = stored_from_memory(repo, seed=1)
    before = used_bytes(xfs)
    res = checkout_tree(repo.objects, tree, xfs / "trained" / "model", cache_dir=repo.cache_dir)
    grown = used_bytes(xfs) - before
    assert (xfs / "trained" / "model" / "model.safetensors").read_bytes() == data
    assert res.bytes_shared > 0.99 * len(data) and grown < 0.01 * len(data)
