"""Which training checkpoints lin repack keeps hot: a run that can still resume reads its
checkpoint soon, so its weights stay loose and raw; the checkpoints of ended runs stay kept
(their reflog) but are packed like any old version, so a lineage made by `lin train` shrinks."""

from __future__ import annotations

import math
import signal
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from test_train_support import TRAIN_ARGS, lin_proc, new_store, train_assets  # noqa: F401 - fixture

from lineagestore import Repo
from lineagestore.guard.fsck import check
from lineagestore.guard.repack import PACK_LIMIT, files_of, packs_to_merge, repack, temperature
from lineagestore.versions.materialize import iter_file_bytes
from lineagestore.versions.models import walk_tree


def _pieces(repo: Repo, roots: set[str]) -> set[str]:
    t = temperature(repo, 1, time.time())
    return {o for o in files_of(repo, t.graph, roots) if t.graph.type.get(o) == "blob"}


def test_ended_runs_checkpoints_are_cold_and_a_resumable_runs_is_hot(train_assets, tmp_path):  # noqa: F811
    folder = new_store(tmp_path / "w", train_assets)
    lin_proc(folder, "train", "--data", "bible.jsonl", "--name", "one", *TRAIN_ARGS, "--yes", check=True)
    lin_proc(folder, "train", "--data", "bible2.jsonl", "--name", "two", *TRAIN_ARGS, "--yes", check=True)
    p = lin_proc(folder, "train", "--data", "chat.jsonl", "--name", "three", *TRAIN_ARGS, "--yes",
                 env={"LIN_TEST_KILL_AT": "train-step:13"})
    assert p.returncode == -signal.SIGKILL
    repo = Repo.open(folder / ".lineage")
    repo.config.set("core.hot_versions", 1)
    repo.save_config()
    repo = Repo.open(folder / ".lineage")
    before = {name: {f.path: b"".join(iter_file_bytes(repo.objects, f))
                     for f in walk_tree(repo.objects, repo.commit(repo.resolve(name)).tree)}
              for name in repo.versions()}
    t = temperature(repo, 1, time.time())
    resumable = repo.refs.resolve("refs/runs/three")
    assert resumable in t.hot_roots and resumable in t.kept_checkpoints
    ended = t.kept_checkpoints - {resumable}
    assert ended and not ended & t.hot_roots  # the two finished runs' checkpoints: kept, cold

    repack(repo)
    repo = Repo.open(folder / ".lineage")
    store = repo.objects
    first = repo.resolve("v002_one")
    cold = _pieces(repo, {first}) - _pieces(repo, t.hot_roots)
    assert cold and not any(store.is_loose(o) for o in cold)  # v002's weights are packed
    assert all(store.is_loose(o) for o in _pieces(repo, {resumable}))  # the resumable run's: raw
    assert check(repo).ok
    for name, files in before.items():  # every version reads back byte-exact
        tree = repo.commit(repo.resolve(name)).tree
        assert {f.path: b"".join(iter_file_bytes(store, f)) for f in walk_tree(store, tree)} == files
    lin_proc(folder, "train", "--resume", "--device", "cpu", "--yes", check=True)  # the run resumes


# ------------------------------------------------------------------ which packs a repack merges

class _P:
    def __init__(self, name: str, size: int):
        self.name, self.size = name, size


def test_packs_merge_geometrically_and_full_packs_never():
    assert packs_to_merge([_P("a", 10)]) == set()
    assert packs_to_merge([_P("a", 10), _P("b", 10)]) == {"a", "b"}
    assert packs_to_merge([_P("a", 10), _P("b", 30)]) == set()  # 30 >= 2 x 10: a progression
    assert packs_to_merge([_P("a", 10), _P("b", 10), _P("c", 50)]) == {"a", "b"}
    assert packs_to_merge([_P("a", 10), _P("b", 10), _P("c", 30)]) == {"a", "b", "c"}  # 30 < 2 x 20
    full = [_P(f"f{i}", PACK_LIMIT + i) for i in range(20)]
    assert packs_to_merge([*full, _P("a", 10)]) == set()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 1000), min_size=1, max_size=300))
def test_a_repack_after_every_version_copies_each_byte_o_log_n_times(sizes):
    """The binary counter: after n repacks of new packs, the packs form a geometric progression
    (so there are O(log) of them) and no byte was copied more than ~log2(n) + 1 times."""
    packs: list[_P] = []
    copied = 0
    for i, size in enumerate(sizes):
        packs.append(_P(f"p{i}", size))
        merge = packs_to_merge(packs)
        if merge:
            moved = [p for p in packs if p.name in merge]
            copied += sum(p.size for p in moved)
            packs = [p for p in packs if p.name not in merge] + [_P(f"m{i}", sum(p.size for p in moved))]
    total = sum(sizes)
    ordered = sorted(p.size for p in packs)
    assert all(s >= 2 * sum(ordered[:j]) for j, s in enumerate(ordered))
    assert len(packs) <= math.log2(total / min(sizes)) + 2
    assert copied <= total * (math.log2(len(sizes) * max(sizes) / min(sizes)) + 1)


# ------------------------------------------------------------------ a pack that lost its index

def test_a_pack_without_its_index_is_never_removed_and_repack_refuses_until_it_is_back(lin, store_dir):
    from test_packs import _all_versions, _lineage, _set
    repo = _set(_lineage(lin, store_dir, 4), "core.hot_versions", 1)
    before = _all_versions(repo)
    repack(repo)
    folder = repo.path / "objects" / "pack"
    (idx,) = folder.glob("pack-*.idx")
    pack = idx.with_suffix(".pack")
    held = idx.read_bytes()
    idx.unlink()  # outside damage: the only copy of the cold versions' objects is in the pack
    code, out, err = lin("repack")
    assert code == 1 and "repack refuses to change anything: object " in err and "is missing" in err
    code, out, err = lin("repack", "--dry-run")
    assert code == 1
    assert pack.exists()
    rep = check(Repo.open(repo.path))
    assert [p.kind for p in rep.problems if p.kind == "pack-without-index"] == ["pack-without-index"]
    assert any(pack.name in p.message and "never removes it" in p.message for p in rep.problems)
    from lineagestore.guard.doctor import diagnose
    assert [f.code for f in diagnose(Repo.open(repo.path)).findings if f.code.startswith("pack")] == \
        ["pack-without-index"]
    idx.write_bytes(held)  # the index back (from a copy of the store): nothing was lost
    repo = Repo.open(repo.path)
    assert check(repo).ok and _all_versions(repo) == before
    assert lin("repack")[0] == 0


def test_an_index_without_its_pack_is_a_note_and_the_next_repack_removes_it(lin, store_dir):
    from test_packs import _all_versions, _lineage, _set
    repo = _set(_lineage(lin, store_dir, 4), "core.hot_versions", 1)
    before = _all_versions(repo)
    folder = repo.path / "objects" / "pack"
    folder.mkdir(parents=True, exist_ok=True)
    stray = folder / ("pack-" + "ab" * 32 + ".idx")
    stray.write_bytes(b"LINI" + bytes(100))  # what a repack killed between its renames leaves
    rep = check(Repo.open(repo.path))
    assert rep.ok and [n.kind for n in rep.notes if n.kind == "stale-index"] == ["stale-index"]
    assert lin("repack")[0] == 0
    assert not stray.exists() and _all_versions(Repo.open(repo.path)) == before


# ------------------------------------------------------------------ repair of a packed object

def test_fsck_repair_of_an_object_damaged_inside_a_pack_really_repairs_it(lin, store_dir, tmp_path):
    import os

    from test_packs import _all_versions, _lineage, _set

    from lineagestore.core.packs import Pack
    repo = _set(_lineage(lin, store_dir, 4), "core.hot_versions", 1)
    before = _all_versions(repo)
    assert lin("remote", "add", "origin", str(tmp_path / "remote"))[0] == 0
    assert lin("push")[0] == 0
    repack(repo)
    (idx,) = (repo.path / "objects" / "pack").glob("pack-*.idx")
    pack = Pack(idx)
    oid, e = max(pack.entries(), key=lambda item: item[1].length)  # a tensor piece
    pack.close()
    path = idx.with_suffix(".pack")
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(e.offset + e.length // 2)
        b = f.read(1)
        f.seek(e.offset + e.length // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    assert not check(Repo.open(repo.path)).ok
    code, out, err = lin("fsck", "--repair")
    assert code == 0, out + err
    assert f"repaired: object {oid}" in err + out
    repo = Repo.open(repo.path)
    assert check(repo).ok and _all_versions(repo) == before
    assert not path.exists()  # the damaged pack was rewritten without the damaged copy


# ------------------------------------------------------------------ a checkout that fails writes nothing

def test_a_checkout_that_meets_a_damaged_object_leaves_every_folder_as_it_was(lin, store_dir, tmp_path):
    import os

    from test_guard_helpers import snapshot
    from test_packs import _lineage, _set

    from lineagestore.core.packs import Pack
    repo = _set(_lineage(lin, store_dir, 4), "core.hot_versions", 1)
    repack(repo)
    repo = Repo.open(repo.path)
    oldest = sorted(repo.versions())[0]
    tensor_files = [f for f in walk_tree(repo.objects, repo.commit(repo.resolve(oldest)).tree)
                    if f.type == "tensor-file"]
    victim = tensor_files[-1].id
    pieces = {t.id for t in repo.objects.get(victim, "tensor-file").entries()}
    (idx,) = (repo.path / "objects" / "pack").glob("pack-*.idx")
    pack = Pack(idx)
    oid, e = next((o, e) for o, e in pack.entries() if o in pieces)
    pack.close()
    path = idx.with_suffix(".pack")
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(e.offset + e.length - 1)
        b = f.read(1)
        f.seek(e.offset + e.length - 1)
        f.write(bytes([b[0] ^ 0x01]))
    def outside_store() -> dict:
        return {k: v for k, v in snapshot(store_dir).items() if not k.startswith(".lineage")}

    before = outside_store()
    code, out, err = lin("checkout", oldest, "--to", str(tmp_path / "new" / "a" / "b"))
    assert code == 5 and oid in err
    assert not (tmp_path / "new").exists()  # nothing written, not even the folders
    code, out, err = lin("checkout", oldest, "--force")
    assert code == 5 and oid in err
    assert outside_store() == before  # the work folder untouched
