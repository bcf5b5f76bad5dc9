"""Packs (core/packs.py), the store reading them, ``lin repack`` (guard/repack.py), and gc and
fsck over packed stores: round trips, damage found naming pack and object, hostile indexes
refused, real kill -9 at every write point of a repack, hot versions loose and raw."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import blake3
import numpy as np
import pytest
from conftest import write_safetensors
from test_guard_helpers import run_lin, version_bytes

from lineagestore import Repo
from lineagestore.core.errors import CorruptObject, ObjectNotFound
from lineagestore.core.ids import hash_object
from lineagestore.core.objects import CODEC_DELTA, CODEC_PLANES, CODEC_RAW, TYPE_CODES, pack_header
from lineagestore.core.packs import FANOUT_SIZE, PACK_HEADER_SIZE, Pack, PackWriter
from lineagestore.core.store import DiskObjectStore
from lineagestore.guard import gc
from lineagestore.guard.fsck import check, check_packs
from lineagestore.guard.repack import repack


def _model(folder: Path, w: np.ndarray, i: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    bf16 = (w.view(np.uint32) >> 16).astype(np.uint16)
    write_safetensors(folder / "model.safetensors", {
        "w32": ("F32", list(w.shape), w.tobytes()),
        "w16": ("BF16", list(w.shape), bf16.tobytes()),
    }, {"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "toy", "i": i}))
    return folder


def _lineage(lin, root: Path, n: int) -> Repo:
    """A branch of ``n`` versions, each a small update of the last (as a fine-tune makes)."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((64, 512)).astype(np.float32)
    for i in range(n):
        w = w + rng.standard_normal(w.shape).astype(np.float32) * 1e-3
        code, _, err = lin("import" if i == 0 else "commit", str(_model(root / f"m{i}", w, i)), "--name", f"step{i}")
        assert code == 0, err
    return Repo.open(root / ".lineage")


def _all_versions(repo: Repo) -> dict[str, dict[str, bytes]]:
    return {v: version_bytes(repo, v) for v in sorted(repo.versions())}


def _set(repo: Repo, key: str, value) -> Repo:
    repo.config.set(key, value)
    repo.save_config()
    return Repo.open(repo.path)


# ----------------------------------------------------------------------------- the pack format


def _stored(type_name: str, data: bytes) -> tuple[str, bytes]:
    return hash_object(type_name, data), pack_header(type_name, CODEC_RAW, len(data)) + data


def test_every_object_type_round_trips_through_a_pack(repo):
    store = repo.objects
    assert isinstance(store, DiskObjectStore)
    objs = {t: _stored(t, json.dumps({"t": t}).encode() if t not in ("blob", "records") else os.urandom(48))
            for t in TYPE_CODES}
    w = PackWriter(store.packs.folder, repo.tmp_dir)
    for oid, stored in objs.values():
        w.add(oid, stored)
    pack = w.finish()
    assert pack.count == len(objs) and pack.verify_checksum()
    for t, (oid, stored) in objs.items():
        assert store.has(oid) and not store.is_loose(oid)
        assert store.get_stored(oid) == stored
        assert store.get_raw(oid) == (t, stored[16:])
        assert store.header(oid).type == t
        assert store.stored_size(oid) == len(stored)
        assert store.mtime(oid) == pack.mtime
        assert store.resolve_prefix(oid[:6]) == [oid]
    assert sorted(store.iter_ids()) == sorted(oid for oid, _ in objs.values())
    assert list(store.iter_ids()) == sorted(store.iter_ids())  # sorted, each once
    assert check_packs(repo) == []  # (the JSON here is no valid commit, tree, ...: only the packs)


def test_an_empty_pack_and_ids_with_trailing_zero_bytes(repo):
    store = repo.objects
    empty = PackWriter(store.packs.folder, repo.tmp_dir).finish()
    assert empty.count == 0 and list(empty.ids()) == []
    # an id whose last byte is 0 (numpy strips trailing NULs from fixed-width bytes)
    for i in range(100_000):
        oid, stored = _stored("blob", b"%d" % i)
        if oid.endswith("00"):
            break
    w = PackWriter(store.packs.folder, repo.tmp_dir)
    w.add(oid, stored)
    w.finish()
    assert store.get_raw(oid)[1] == stored[16:] and oid in list(store.iter_ids())


# ----------------------------------------------------------------------------- damage and hostile input


def _one_pack(repo) -> tuple[Pack, dict[str, bytes]]:
    objs = dict(_stored("blob", os.urandom(200 + i)) for i in range(20))
    w = PackWriter(repo.objects.packs.folder, repo.tmp_dir)
    for oid, stored in objs.items():
        w.add(oid, stored)
    return w.finish(), objs


def _flip(path: Path, offset: int) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_a_pack_is_found_on_read_and_by_fsck(repo):
    pack, objs = _one_pack(repo)
    victim = sorted(objs)[3]
    e = pack.find(victim)
    assert e is not None
    _flip(pack.path, e.offset + 100)
    repo = Repo.open(repo.path)
    with pytest.raises(CorruptObject, match=f"{victim}.*{pack.name}"):
        repo.objects.get_raw(victim)
    rep = check(repo)
    found = [p for p in rep.problems if victim in p.subject or victim in p.message]
    assert found and any(pack.name in p.message for p in found)
    assert any(p.subject == f"objects/pack/{pack.name}" for p in rep.problems)  # the pack's checksum
    others = [o for o in objs if o != victim]
    assert all(repo.objects.get_raw(o)[1] == objs[o][16:] for o in others)


def test_a_flipped_byte_in_an_index_refuses_the_pack_naming_it(repo):
    pack, objs = _one_pack(repo)
    _flip(pack.idx_path, PACK_HEADER_SIZE + FANOUT_SIZE + 5)
    repo = Repo.open(repo.path)
    oid = next(iter(objs))
    with pytest.raises(ObjectNotFound, match=pack.idx_path.name):
        repo.objects.get_raw(oid)
    rep = check(repo)
    assert any(p.subject == f"objects/pack/{pack.idx_path.name}" and "checksum" in p.message for p in rep.problems)


def _rewrite_index(pack: Pack, edit) -> None:
    """Change an index's bytes with ``edit`` and give it a valid checksum again (a hostile one)."""
    raw = bytearray(pack.idx_path.read_bytes())
    edit(raw)
    raw[-32:] = blake3.blake3(bytes(raw[:-32])).digest()
    os.chmod(pack.idx_path, 0o644)
    pack.idx_path.write_bytes(bytes(raw))


@pytest.mark.parametrize("field,value,why", [
    ("offset", 1 << 40, "outside"), ("length", 1 << 40, "outside"), ("offset", 3, "outside"),
    ("length", 1, "outside"),
])
def test_hostile_index_offsets_and_lengths_are_refused(repo, field, value, why):
    pack, objs = _one_pack(repo)
    count = pack.count
    at = PACK_HEADER_SIZE + FANOUT_SIZE + 32 * count + 24 * 2 + (0 if field == "offset" else 8)
    _rewrite_index(pack, lambda raw: struct.pack_into("<Q", raw, at, value))
    repo = Repo.open(repo.path)
    repo.objects.packs.packs()
    assert why in repo.objects.packs.bad[pack.idx_path.name]
    assert not any(repo.objects.has(o) for o in objs)


def test_hostile_index_unsorted_ids_and_wrong_counts_are_refused(repo):
    pack, _ = _one_pack(repo)
    base = PACK_HEADER_SIZE + FANOUT_SIZE

    def swap(raw):
        a, b = bytes(raw[base:base + 32]), bytes(raw[base + 32:base + 64])
        raw[base:base + 32], raw[base + 32:base + 64] = b, a

    _rewrite_index(pack, swap)
    ps = Repo.open(repo.path).objects.packs
    ps.packs()
    assert "sorted" in ps.bad[pack.idx_path.name] or "fanout" in ps.bad[pack.idx_path.name]
    _rewrite_index(pack, lambda raw: struct.pack_into("<Q", raw, 8, 1 << 60))
    ps = Repo.open(repo.path).objects.packs
    ps.packs()
    assert "declares" in ps.bad[pack.idx_path.name]


# ----------------------------------------------------------------------------- repack


def test_repack_keeps_hot_versions_loose_and_raw_and_packs_the_rest(lin, store_dir):
    repo = _lineage(lin, store_dir, 6)
    before = _all_versions(repo)
    repo = _set(repo, "core.hot_versions", 2)
    rep = repack(repo)
    assert rep.packs_written and rep.loose_removed and repo.format_version >= 3
    assert rep.codecs.get("delta") and rep.codecs.get("planes")
    repo = Repo.open(repo.path)
    assert (repo.path / "format").read_text().strip() >= "3"
    assert _all_versions(repo) == before
    store = repo.objects
    tips = sorted(repo.versions())[-2:]
    for v in sorted(repo.versions()):
        tf = store.get(store.get(repo.commit(repo.resolve(v)).tree, "tree").items()[0].id)
        for t in getattr(tf, "entries", list)():
            if v in tips:
                assert store.is_loose(t.id)
                with store.open_raw_blob(t.id) as raw:  # raw: checkouts copy it in the kernel
                    assert raw is not None
            else:
                assert not store.is_loose(t.id) and store.packed(t.id)
    assert check(repo).ok
    # nothing to do the second time
    again = repack(repo)
    assert not again.packs_written and not again.packed_objects


def test_reverse_deltas_keyframes_and_the_chain_bound(lin, store_dir):
    repo = _lineage(lin, store_dir, 8)
    before = _all_versions(repo)
    repo = _set(repo, "core.hot_versions", 1)
    repo = _set(repo, "core.delta_max_depth", 2)
    repack(repo)
    repo = Repo.open(repo.path)
    store = repo.objects
    depth_seen = 0
    for oid in store.iter_ids():
        n, cur = 0, oid
        while store.get_stored(cur)[5] == CODEC_DELTA:
            cur = store.get_stored(cur)[16:48].hex()
            n += 1
        depth_seen = max(depth_seen, n)
    assert depth_seen == 2  # deltas are used, and no chain is deeper than core.delta_max_depth
    assert _all_versions(repo) == before
    codecs = {store.get_stored(o)[5] for o in store.iter_ids()}
    assert CODEC_PLANES in codecs and CODEC_DELTA in codecs


def _cut_newest(repo: Repo, keep: int) -> list[str]:
    """Make all but the ``keep`` oldest versions unreachable (branch reset, names removed); the
    names kept."""
    names = sorted(repo.versions())
    repo.update_ref("refs/heads/main", repo.resolve("main"), repo.resolve(names[keep - 1]), "test: reset")
    for v in names[keep:]:
        repo.update_ref(f"refs/tags/{v}", repo.resolve(v), None, "test: rm")
    return names[:keep]


@pytest.mark.parametrize("point", ["repack-unpack", "pack-written", "idx-renamed", "repack-drop-pack", "gc-move"])
def test_gc_of_a_packed_store_killed_at_every_write_point_loses_nothing(lin, store_dir, point):
    repo = _lineage(lin, store_dir, 6)
    repo = _set(repo, "core.hot_versions", 1)
    repo = _set(repo, "gc.reflog_expire_days", 0)
    repack(repo)
    repo = Repo.open(repo.path)
    keep = _cut_newest(repo, 3)
    before = {v: version_bytes(repo, v) for v in keep}
    r = run_lin(repo.path, "gc", "--confirm", "--grace", "0", env={"LIN_TEST_KILL_AT": f"{point}:1"})
    assert r.returncode == -9, (point, r.returncode, r.stderr)
    repo = Repo.open(repo.path)
    rep = check(repo)
    assert rep.ok, (point, [p.message for p in rep.problems])
    assert {v: version_bytes(repo, v) for v in keep} == before
    r = run_lin(repo.path, "gc", "--confirm", "--grace", "0")
    assert r.returncode == 0, r.stderr
    repo = Repo.open(repo.path)
    rep = check(repo)
    assert rep.ok and rep.unreachable == 0, [p.message for p in rep.problems]
    assert {v: version_bytes(repo, v) for v in keep} == before


def test_gc_after_repack_keeps_every_reachable_object_and_reencodes_deltas_on_what_leaves(lin, store_dir):
    repo = _lineage(lin, store_dir, 6)
    repo = _set(repo, "core.hot_versions", 1)
    repo = _set(repo, "gc.reflog_expire_days", 0)
    repack(repo)
    repo = Repo.open(repo.path)
    # the three newest versions become unreachable: the older ones' deltas rest on them
    keep = _cut_newest(repo, 3)
    before = {v: version_bytes(repo, v) for v in keep}
    res = gc.collect(repo, grace_s=0)
    assert res.moved_objects and res.repack is not None
    repo = Repo.open(repo.path)
    assert {v: version_bytes(repo, v) for v in keep} == before
    rep = check(repo)
    assert rep.ok, [p.message for p in rep.problems]
    assert rep.unreachable == 0


# ----------------------------------------------------------------------------- kill -9


KILL_POINTS = ["repack-unpack", "pack-written", "pack-renamed", "idx-renamed", "repack-drop-loose"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_repack_killed_at_every_write_point_loses_nothing(lin, store_dir, point):
    repo = _lineage(lin, store_dir, 5)
    repo = _set(repo, "core.hot_versions", 1)
    repack(repo)  # a first pack; then make v003 hot again and more versions cold
    repo = _set(repo, "core.hot_versions", 3)
    lin("tag", "keep", "v002_step1")
    repo = _lineage_more(lin, store_dir, repo, 2)
    repo = _set(repo, "core.hot_versions", 1)
    before = _all_versions(repo)
    env = {"LIN_TEST_KILL_AT": f"{point}:1"}
    r = run_lin(repo.path, "repack", env=env)
    assert r.returncode == -9, (point, r.returncode, r.stderr)  # killed there
    repo = Repo.open(repo.path)
    rep = check(repo)
    assert rep.ok, (point, r.returncode, r.stderr, [p.message for p in rep.problems])
    assert any(n.kind == "stale-index" for n in rep.notes) == (point == "idx-renamed")
    assert _all_versions(repo) == before
    r = run_lin(repo.path, "repack")  # the next repack finishes the work
    assert r.returncode == 0, r.stderr
    repo = Repo.open(repo.path)
    assert check(repo).ok and _all_versions(repo) == before


def _lineage_more(lin, root: Path, repo: Repo, n: int) -> Repo:
    rng = np.random.default_rng(8)
    w = rng.standard_normal((64, 512)).astype(np.float32)
    for i in range(n):
        w = w + rng.standard_normal(w.shape).astype(np.float32) * 1e-3
        code, _, err = lin("commit", str(_model(root / f"more{i}", w, 100 + i)), "--name", f"more{i}")
        assert code == 0, err
    return Repo.open(repo.path)


def test_lin_repack_dry_run_and_json(lin, store_dir):
    _lineage(lin, store_dir, 3)
    code, out, _ = lin("repack", "--dry-run", "--json")
    assert code == 0
    rep = json.loads(out)
    assert rep["dry_run"] and rep["packed_objects"] and not rep["packs_written"]
    assert not list((store_dir / ".lineage" / "objects").glob("pack/*.pack"))
    code, out, _ = lin("repack")
    assert code == 0 and "Packed" in out


# ----------------------------------------------------------------------------- remotes


def _remote_codecs(root: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in root.rglob("*"):
        if p.is_file() and "objects" in p.parts:
            c = p.read_bytes()[5]
            out[str(c)] = out.get(str(c), 0) + 1
    return out


def test_a_packed_store_pushes_deltas_with_their_bases_and_clones_byte_exact(lin, store_dir, tmp_path):
    from lineagestore.remote.check import verify
    from lineagestore.remote.fetch import clone
    from lineagestore.remote.push import push
    repo = _lineage(lin, store_dir, 5)
    repo = _set(repo, "core.hot_versions", 1)
    repack(repo)
    before = _all_versions(Repo.open(repo.path))
    remote = tmp_path / "disk" / "remote"
    remote.parent.mkdir()
    # an old version alone: its deltas' bases (the newer versions) are not sent, so it goes whole
    assert lin("remote", "add", "old", str(remote.parent / "old"))[0] == 0
    repo = Repo.open(repo.path)
    oldest = sorted(repo.versions())[0]
    push(repo, "old", [oldest])
    assert str(CODEC_DELTA) not in _remote_codecs(remote.parent / "old")
    cloned, _ = clone(str(remote.parent / "old"), tmp_path / "c1", checkout=False)
    assert version_bytes(cloned, oldest) == before[oldest]
    # the whole lineage: deltas travel with their bases, the receiver verifies each by decoding it
    assert lin("remote", "add", "origin", str(remote))[0] == 0
    repo = Repo.open(repo.path)
    push(repo, "origin")
    assert _remote_codecs(remote).get(str(CODEC_DELTA))
    assert verify(repo, "origin", full=True).ok
    cloned, _ = clone(str(remote), tmp_path / "c2", checkout=False)
    assert _all_versions(cloned) == before
    assert check(cloned).ok


def _trained_bf16(folder: Path, state: dict) -> Path:
    """Save a torch state dict as bf16 safetensors (the fp32 master weights stay in ``state``)."""
    from safetensors.torch import save_file
    folder.mkdir(parents=True)
    save_file({k: v.to(dtype=__import__("torch").bfloat16).contiguous() for k, v in state.items()},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text("{}")
    return folder


def test_a_small_push_sends_a_child_of_a_few_optimizer_steps_as_deltas(lin, store_dir, tmp_path):
    torch = pytest.importorskip("torch")
    from lineagestore.remote.fetch import clone
    from lineagestore.remote.push import push
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 256))
    assert lin("import", str(_trained_bf16(tmp_path / "base", net.state_dict())), "--name", "base")[0] == 0
    remote = tmp_path / "disk" / "remote"
    remote.parent.mkdir()
    assert lin("remote", "add", "origin", str(remote))[0] == 0
    repo = _set(Repo.open(store_dir / ".lineage"), "remote.origin.transfer", "small")
    push(repo, "origin")
    held_before = sum(p.stat().st_size for p in remote.rglob("*") if p.is_file())
    opt = torch.optim.AdamW(net.parameters(), lr=2e-5)
    x = torch.randn(64, 256)
    for _ in range(3):  # a few real optimizer steps
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), x.flip(1)).backward()
        opt.step()
    child = _trained_bf16(tmp_path / "child", net.state_dict())
    assert lin("commit", str(child), "--name", "child")[0] == 0
    repo = Repo.open(store_dir / ".lineage")
    res = push(repo, "origin")
    held = sum(p.stat().st_size for p in remote.rglob("*") if p.is_file()) - held_before
    raw = (child / "model.safetensors").stat().st_size
    print(f"small push of a child: remote grew {held} bytes for a {raw}-byte model ({held / raw:.3f})")
    assert held <= 0.25 * raw, (held, raw, res.bytes_sent)
    cloned, _ = clone(str(remote), tmp_path / "c", checkout=False)
    assert version_bytes(cloned, "v002_child") == version_bytes(repo, "v002_child")
    assert check(cloned).ok
    # the receiver verified each delta by decoding it and stored it whole: loose objects are never
    # deltas (gc keeps or re-encodes the bases of packed ones only), the tip is raw for checkouts
    store = cloned.objects
    assert not [o for o in store.iter_ids() if store.header(o).codec == CODEC_DELTA]
    tip = {t.id for t in store.get(store.get(cloned.commit(cloned.resolve("v002_child")).tree,
                                             "tree").items()[1].id).entries()}
    assert tip and all(store.is_loose(o) for o in tip)
    big = [o for o in tip if store.header(o).size > 1 << 16]  # weights: raw, copied in the kernel
    assert big and all(store.open_raw_blob(o) is not None for o in big)


def test_the_background_repack_after_a_version_packs_what_became_cold_one_at_a_time(lin, store_dir):
    from lineagestore.core.fsutil import FileLock
    from lineagestore.guard.repack import start_background
    repo = _lineage(lin, store_dir, 3)
    assert start_background(repo) is None  # no packs yet: only `lin repack` starts packing a store
    repo = _set(repo, "core.hot_versions", 1)
    repack(repo)
    repo = _lineage_more(lin, store_dir, repo, 1)
    before = _all_versions(repo)
    newly_cold = {t.id for t in repo.objects.get(repo.objects.get(repo.commit(repo.resolve("v003_step2")).tree,
                                                                     "tree").items()[1].id).entries()}
    assert all(repo.objects.is_loose(o) for o in newly_cold)
    with FileLock(repo.path / "locks" / "repack.lock").held("exclusive", 1):  # one at a time
        _, status = os.waitpid(start_background(repo), 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert all(Repo.open(repo.path).objects.is_loose(o) for o in newly_cold)
    _, status = os.waitpid(start_background(repo), 0)
    assert os.waitstatus_to_exitcode(status) == 0
    repo = Repo.open(repo.path)
    assert not any(repo.objects.is_loose(o) for o in newly_cold)
    assert _all_versions(repo) == before and check(repo).ok


def _kill_everywhere(store: Path, work: Path, args: list[str], check_after) -> int:
    """Run ``lin ARGS`` on a fresh copy of ``store`` killed at its 1st, 2nd, ... kill point of any
    kind (LIN_TEST_KILL_AT=any:N) until a run finishes unkilled; ``check_after(repo)`` after each
    kill and after the next clean run. Returns how many kills there were."""
    import shutil
    kills = 0
    for n in range(1, 200):
        copy = work / f"k{n}" / ".lineage"
        shutil.copytree(store, copy, symlinks=True)
        r = run_lin(copy, *args, env={"LIN_TEST_KILL_AT": f"any:{n}"})
        if r.returncode == 0:
            return kills
        assert r.returncode == -9, (n, r.returncode, r.stderr)
        kills += 1
        check_after(Repo.open(copy), n)
        assert run_lin(copy, *args).returncode == 0  # the next run finishes the work
        check_after(Repo.open(copy), n)
        shutil.rmtree(copy.parent)
    raise AssertionError("never finished")


@pytest.mark.slow
def test_repack_and_gc_killed_at_every_kill_point_in_turn_lose_nothing(lin, store_dir, tmp_path):
    repo = _lineage(lin, store_dir, 5)
    repo = _set(repo, "core.hot_versions", 1)
    repo = _set(repo, "gc.reflog_expire_days", 0)
    repack(repo)
    lin("tag", "keep", "v002_step1")  # hot again: unpacked by the next repack
    repo = _lineage_more(lin, store_dir, repo, 1)
    before = _all_versions(repo)

    def intact(r: Repo, n: int) -> None:
        rep = check(r)
        assert rep.ok, (n, [p.message for p in rep.problems])
        assert _all_versions(r) == before, n

    assert _kill_everywhere(repo.path, tmp_path / "repack", ["repack"], intact) >= 6
    # gc of a packed store: the newest versions cut off, their pieces the bases of older deltas
    repack(repo)
    repo = Repo.open(repo.path)
    keep = _cut_newest(repo, 3)
    kept = {v: before[v] for v in keep}

    def kept_intact(r: Repo, n: int) -> None:
        rep = check(r)
        assert rep.ok, (n, [p.message for p in rep.problems])
        assert {v: version_bytes(r, v) for v in keep} == kept, n

    assert _kill_everywhere(repo.path, tmp_path / "gc", ["gc", "--confirm", "--grace", "0"], kept_intact) >= 6
