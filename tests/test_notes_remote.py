"""Evaluation notes on remotes (push merges them, fetch and pull merge them in, clone brings them),
and the fixes around stored forms: fsck types the refs under refs/notes/, a batch raises the
store's format only when its objects are placed, an object already held is never refused for the
form it arrives in, ``fsck --repair`` stores a delta whole, and fsck decodes each base of a delta
chain once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_model_dir

from lineagestore import Repo
from lineagestore.core.codecs import stored_object
from lineagestore.core.ids import hash_object
from lineagestore.core.objects import CODEC_DELTA, CODEC_PLANES, Tree
from lineagestore.guard.fsck import check


def _bf16(seed: int, n: int = 1 << 14) -> bytes:
    """bf16 elements of small floats: their byte planes compress, so codecs 2 and 3 are kept."""
    w = np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.02
    return (w.view(np.uint32) >> 16).astype(np.uint16).tobytes()


def _format(repo: Repo) -> str:
    assert repo.path is not None
    return (repo.path / "format").read_text()


# ----------------------------------------------------------------------------- fsck of refs/notes/


def test_fsck_types_the_refs_under_refs_notes(repo):
    blob = repo.objects.put("blob", b"not a notes tree")
    tree = repo.objects.put_object(Tree(entries=[]))
    repo.update_ref("refs/notes/eval", None, tree, "test")
    assert check(repo).ok  # a tree, as a notes ref names
    repo.update_ref("refs/notes/eval", tree, blob, "test")
    repo.update_ref("refs/notes/eval-set", None, tree, "test")
    repo.update_ref("refs/notes/other", None, tree, "test")
    bad = {p.subject: p.message for p in check(repo).problems if p.kind == "bad-ref"}
    assert "expected a tree" in bad["refs/notes/eval"]
    assert "expected a dataset" in bad["refs/notes/eval-set"]
    assert "not a notes ref lin writes" in bad["refs/notes/other"]


# ----------------------------------------------------------------------------- stored forms


def test_a_batch_raises_the_format_only_when_its_objects_are_placed(repo):
    data = _bf16(1)
    oid = hash_object("blob", data)
    codec, stored = stored_object("blob", data, CODEC_PLANES, 2)
    assert codec == CODEC_PLANES
    batch = repo.objects.batch()
    batch.put_stored(oid, stored)
    assert _format(repo) == "1\n"  # waiting, not placed: a refused fetch discards it
    batch.discard()
    assert _format(repo) == "1\n" and not repo.objects.has(oid)
    batch = repo.objects.batch()
    batch.put_stored(oid, stored)
    batch.flush()
    assert _format(repo) == "3\n" and repo.objects.get_raw(oid) == ("blob", data)


def test_an_object_held_already_is_taken_in_any_form_it_arrives_in(repo):
    x, y = _bf16(2), _bf16(3)
    xid, yid = hash_object("blob", x), hash_object("blob", y)
    store = repo.objects
    store.put("blob", x)
    codec, y_on_x = stored_object("blob", y, CODEC_DELTA, 2, base=(xid, x))
    assert codec == CODEC_DELTA
    store.put_stored(yid, y_on_x)  # y held as a delta against x
    codec, x_on_y = stored_object("blob", x, CODEC_DELTA, 2, base=(yid, y))
    assert codec == CODEC_DELTA
    store.put_stored(xid, x_on_y)  # x arrives as a delta against its own delta: a loop to decode
    assert store.get_raw(xid) == ("blob", x) and store.header(xid).codec != CODEC_DELTA


# ----------------------------------------------------------------------------- notes on a folder remote


def _row(method: str, loss: float, time: str, set_id: str = "a" * 64) -> dict:
    return {"set": set_id, "set_name": "heldout.jsonl", "method": method, "loss": loss, "targets": 10,
            "examples": 2, "seq_len": 64, "batch_size": 2, "device": "cpu", "time": time, "by": "eval run"}


def _rows(repo: Repo, vid: str) -> dict[str, tuple[float, str]]:
    from lineagestore.train.evalnotes import note_of
    return {r["method"]: (r["loss"], r["time"]) for r in note_of(repo, vid)}


@pytest.fixture
def two_stores(lin, store_dir, tmp_path):
    """Store ``a`` with one version and one note, pushed to a folder remote; ``b`` cloned from it."""
    from lineagestore.remote.fetch import clone
    from lineagestore.remote.push import push
    from lineagestore.train.evalnotes import write_note
    assert lin("import", str(make_model_dir(tmp_path / "m")), "--name", "base")[0] == 0
    (tmp_path / "disk").mkdir()
    remote = tmp_path / "disk" / "remote"
    assert lin("remote", "add", "origin", str(remote))[0] == 0
    a = Repo.open(store_dir / ".lineage")
    vid = a.resolve("v001")
    write_note(a, vid, _row("m1", 3.0, "2026-01-01T00:00:00Z"))
    push(a, "origin")
    b, _ = clone(str(remote), tmp_path / "b", checkout=False)
    return a, b, vid, remote


def test_clone_brings_the_notes_and_the_evaluation_set(two_stores, tmp_path):
    a, b, vid, remote = two_stores
    assert _rows(b, vid) == {"m1": (3.0, "2026-01-01T00:00:00Z")}
    assert b.refs.read("refs/notes/eval") == a.refs.read("refs/notes/eval")
    assert (remote / "refs" / "notes" / "eval").read_text().strip() == a.refs.read("refs/notes/eval")
    assert b.format_version >= 4 and check(b).ok


def test_push_merges_notes_another_machine_pushed_instead_of_refusing_or_dropping_them(two_stores):
    from lineagestore.remote.fetch import fetch, pull
    from lineagestore.remote.push import push
    from lineagestore.train.evalnotes import write_note
    a, b, vid, remote = two_stores
    # both machines evaluate the same version: a new method each, and the same method (m1) again
    write_note(b, vid, _row("m2", 2.0, "2026-01-02T00:00:00Z"))
    write_note(b, vid, _row("m1", 2.5, "2026-01-03T00:00:00Z"))  # later than a's: wins
    write_note(a, vid, _row("m3", 1.0, "2026-01-02T00:00:00Z"))
    assert push(b, "origin").rejected == []
    res = push(a, "origin")  # the remote moved since a last saw it: merged, not refused
    assert res.rejected == [] and any(u.ref == "refs/notes/eval" and u.written for u in res.refs)
    want = {"m1": (2.5, "2026-01-03T00:00:00Z"), "m2": (2.0, "2026-01-02T00:00:00Z"),
            "m3": (1.0, "2026-01-02T00:00:00Z")}
    assert _rows(a, vid) == want
    fr = fetch(b, "origin")  # fetch merges the remote's notes into the local ref
    assert fr.merged and _rows(b, vid) == want
    assert b.refs.read("refs/notes/eval") == a.refs.read("refs/notes/eval")
    assert (remote / "refs" / "notes" / "eval").read_text().strip() == a.refs.read("refs/notes/eval")
    # an evaluation dated earlier never replaces a later one of the same set and method, on either side
    write_note(b, vid, _row("m1", 9.0, "2025-12-31T00:00:00Z"))
    write_note(a, vid, _row("m4", 0.5, "2026-01-04T00:00:00Z"))
    push(b, "origin")
    assert _rows(b, vid)["m1"] == (2.5, "2026-01-03T00:00:00Z")
    pull(a, "origin")
    assert _rows(a, vid) == {**want, "m4": (0.5, "2026-01-04T00:00:00Z")}
    assert check(a).ok and check(b).ok


def test_the_evaluation_set_travels_like_a_data_ref(two_stores, tmp_path):
    from lineagestore.data.registry import register
    from lineagestore.remote.fetch import clone, pull
    from lineagestore.remote.push import push
    a, b, vid, remote = two_stores
    f = tmp_path / "heldout.jsonl"
    f.write_text(json.dumps({"text": "held out"}) + "\n")
    did = register(a, f).id
    a.update_ref("refs/notes/eval-set", None, did, "test: eval set")
    push(a, "origin")
    pull(b, "origin")
    assert b.refs.read("refs/notes/eval-set") == did
    c, _ = clone(str(remote), tmp_path / "c", checkout=False)
    assert c.refs.read("refs/notes/eval-set") == did and check(c).ok


def test_fetch_refuses_malformed_notes_on_a_remote_and_places_nothing(two_stores):
    from lineagestore.core.errors import CorruptObject
    from lineagestore.core.objects import TreeEntry
    from lineagestore.core.store import MemoryObjectStore
    from lineagestore.remote.backend import FolderBackend
    from lineagestore.remote.fetch import fetch
    a, b, vid, remote = two_stores
    mem = MemoryObjectStore()
    lie = json.dumps({"version": "f" * 64, "evals": []}).encode()  # the note of another version
    bid = mem.put("blob", lie)
    fan = mem.put_object(Tree(entries=[TreeEntry(vid[2:], "blob", bid, len(lie))]))
    root = mem.put_object(Tree(entries=[TreeEntry(vid[:2], "tree", fan, len(lie))]))
    backend = FolderBackend(remote)
    for oid in (bid, fan, root):
        backend.write(f"objects/{oid[:2]}/{oid[2:]}", mem.get_stored(oid))
    backend.write("refs/notes/eval", f"{root}\n".encode())
    before = b.refs.read("refs/notes/eval")
    with pytest.raises(CorruptObject, match=bid):
        fetch(b, "origin")
    assert b.refs.read("refs/notes/eval") == before
    assert not any(b.objects.has(o) for o in (bid, fan, root))


# ----------------------------------------------------------------------------- repair from deltas


def _weights(folder: Path, w: np.ndarray) -> Path:
    from conftest import write_safetensors
    folder.mkdir(parents=True)
    bf16 = (w.view(np.uint32) >> 16).astype(np.uint16)
    write_safetensors(folder / "model.safetensors", {"w16": ("BF16", list(w.shape), bf16.tobytes())},
                      {"format": "pt"})
    return folder


def test_fsck_repair_from_a_remote_delta_stores_the_object_whole(lin, store_dir, tmp_path):
    from lineagestore.remote.check import repair
    from lineagestore.remote.push import push
    rng = np.random.default_rng(5)
    w = rng.standard_normal((256, 512)).astype(np.float32) * 0.02
    assert lin("import", str(_weights(tmp_path / "m0", w)), "--name", "base")[0] == 0
    w = w + rng.standard_normal(w.shape).astype(np.float32) * 1e-4
    assert lin("commit", str(_weights(tmp_path / "m1", w)), "--name", "child")[0] == 0
    remote = tmp_path / "disk" / "remote"
    remote.parent.mkdir()
    assert lin("remote", "add", "origin", str(remote))[0] == 0
    repo = Repo.open(store_dir / ".lineage")
    repo.config.set("remote.origin.transfer", "small")
    repo.save_config()
    repo = Repo.open(store_dir / ".lineage")
    push(repo, "origin")
    deltas = [p for p in (remote / "objects").rglob("*") if p.is_file() and p.read_bytes()[5] == CODEC_DELTA]
    assert deltas, "the small push sent no delta"
    oid = deltas[0].parent.name + deltas[0].name
    assert repo.objects.header(oid).codec != CODEC_DELTA
    loose = store_dir / ".lineage" / "objects" / oid[:2] / oid[2:]
    loose.parent.chmod(0o755)
    loose.chmod(0o644)
    damaged = bytearray(loose.read_bytes())
    damaged[-1] ^= 0xFF
    loose.write_bytes(bytes(damaged))
    problems = check(repo).problems
    assert [p.subject for p in problems if p.kind == "corrupt"] == [oid]
    res = repair(repo, "origin", problems)
    assert res.repaired == [oid] and not res.failed
    assert repo.objects.header(oid).codec != CODEC_DELTA  # loose objects are never deltas
    assert check(repo).ok


# ----------------------------------------------------------------------------- fsck over delta chains


def test_fsck_decodes_each_link_of_a_delta_chain_once(repo, monkeypatch):
    from lineagestore.core import content
    from lineagestore.core.packs import PackWriter
    depth = 8
    rng = np.random.default_rng(9)
    w = rng.standard_normal(1 << 14).astype(np.float32) * 0.02
    versions = []
    for _ in range(depth + 1):
        w = w + rng.standard_normal(w.shape).astype(np.float32) * 1e-4
        versions.append((w.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    repo.require_format(3)
    pack = PackWriter(repo.objects.packs.folder, repo.tmp_dir)
    newest = versions[-1]
    base = hash_object("blob", newest)
    pack.add(base, stored_object("blob", newest, CODEC_PLANES, 2)[1])
    base_data = newest
    for data in reversed(versions[:-1]):  # reverse deltas: each older version against the newer
        oid = hash_object("blob", data)
        codec, stored = stored_object("blob", data, CODEC_DELTA, 2, base=(base, base_data))
        assert codec == CODEC_DELTA
        pack.add(oid, stored)
        base, base_data = oid, data
    pack.finish()
    repo = Repo.open(repo.path)
    calls = []
    undelta = content._undelta
    monkeypatch.setattr(content, "_undelta", lambda *a: calls.append(1) or undelta(*a))
    rep = check(repo)
    assert rep.ok and rep.objects == depth + 1
    assert len(calls) == depth  # was depth * (depth + 1) / 2: every chain decoded again per object
    assert repo.objects.get_raw(base) == ("blob", versions[0])


def test_lin_fetch_and_clone_bring_notes_on_the_command_line(two_stores, lin, tmp_path):
    from lineagestore.remote.push import push
    from lineagestore.train.evalnotes import write_note
    a, b, vid, remote = two_stores
    write_note(a, vid, _row("m2", 1.5, "2026-02-01T00:00:00Z"))
    push(a, "origin")
    code, out, err = lin("--store", b.path, "fetch")
    assert code == 0, err
    assert "merged    refs/notes/eval" in out
    assert _rows(Repo.open(b.path), vid) == _rows(a, vid)
    code, out, err = lin("--store", b.path, "fetch", "--json")
    assert code == 0 and json.loads(out)["merged"] == []  # nothing new: nothing merged
    code, _, err = lin("clone", str(remote), tmp_path / "c", "--no-checkout")
    assert code == 0, err
    c = Repo.open(tmp_path / "c" / ".lineage")
    assert _rows(c, vid) == _rows(a, vid) and c.refs.read("refs/notes/eval") == a.refs.read("refs/notes/eval")
