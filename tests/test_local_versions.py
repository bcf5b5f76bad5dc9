"""core.local_versions: weights of old versions leave the local store only when the backup remote
holds them (verified in that command); checkout fetches them back, fsck calls them "on the remote"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_guard_helpers import run_lin, version_bytes
from test_packs import _model

from lineagestore import Repo
from lineagestore.guard.drop import plan_drop
from lineagestore.guard.dropped import read_dropped
from lineagestore.guard.fsck import check
from lineagestore.guard.repack import repack


def _setup(lin, root: Path, n: int = 5, local: int = 2, hot: int = 1, remote: list[str] | None = None) -> Repo:
    """``n`` versions of one branch, pushed to a folder backup remote, core.local_versions = local."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((32, 256)).astype(np.float32)
    for i in range(n):
        w = w + rng.standard_normal(w.shape).astype(np.float32) * 1e-3
        code, _, err = lin("import" if i == 0 else "commit", str(_model(root / f"m{i}", w, i)), "--name", f"s{i}")
        assert code == 0, err
    code, _, err = lin("remote", "add", "backup", *(remote or [str(root / "remote")]), "--backup")
    assert code == 0, err
    code, _, err = lin("push")
    assert code == 0, err
    return _set(Repo.open(root / ".lineage"), core__local_versions=local, core__hot_versions=hot)


def _set(repo: Repo, **values) -> Repo:
    for key, value in values.items():
        repo.config.set(key.replace("__", "."), value)
    repo.save_config()
    return Repo.open(repo.path)


def _weights(repo: Repo, rev: str) -> set[str]:
    store = repo.objects
    out = set()
    for e in store.get(repo.commit(repo.resolve(rev)).tree, "tree").items():
        if e.type == "tensor-file":
            out |= {t.id for t in store.get(e.id, "tensor-file").entries()}
    return out


def _all(repo: Repo) -> dict[str, dict[str, bytes]]:
    return {v: version_bytes(repo, v) for v in sorted(repo.versions())}


def test_a_dropped_version_is_fetched_on_checkout_byte_identical(lin, store_dir):
    repo = _setup(lin, store_dir)
    before = _all(repo)
    versions = sorted(repo.versions())
    code, out, err = lin("repack", "--drop", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["dropped_objects"] > 0 and res["remote"] == "backup"
    repo = Repo.open(repo.path)
    listed = read_dropped(repo)
    old, kept = versions[:-2], versions[-2:]
    for v in old:  # weights gone, metadata (commit, tree, tensor file, config.json) here
        assert _weights(repo, v) and all(not repo.objects.has(o) and o in listed for o in _weights(repo, v))
    for v in kept:
        assert all(repo.objects.has(o) for o in _weights(repo, v))
        assert version_bytes(repo, v) == before[v]
    rep = check(repo)
    assert rep.ok, [p.message for p in rep.problems]
    assert rep.on_remote == len(listed) and rep.on_remote_bytes > 0
    code, out, _ = lin("fsck")
    assert code == 0 and "on the remote:" in out and "not damage" in out
    code, out, _ = lin("gc", "--confirm", "--grace", "0")  # gc takes dropped weights as intended, not lost
    assert code == 0, out
    code, out, _ = lin("status")
    assert code == 0 and "on the remote only (backup), held once there; every version is also on the backup remote" in out, out
    code, out, _ = lin("doctor", "--json")
    assert "local-dropped" in out
    code, _, err = lin("diff", versions[1], versions[-1])  # a reader of dropped weights fetches them
    assert code == 0, err
    # checkout of the oldest: fetched from the remote, verified, byte-identical on disk
    code, out, err = lin("checkout", versions[0], "--to", str(store_dir / "old"))
    assert code == 0, err
    for path, data in before[versions[0]].items():
        assert (store_dir / "old" / path).read_bytes() == data
    repo = Repo.open(repo.path)
    assert all(repo.objects.has(o) for o in _weights(repo, versions[0]))
    assert check(repo).ok
    # a new version after the drop is backed up as usual (the push skips what the remote holds)
    w = np.ones((32, 256), np.float32)
    code, _, err = lin("commit", str(_model(store_dir / "m9", w, 9)), "--name", "after")
    assert code == 0, err
    code, _, err = lin("push")
    assert code == 0, err


def test_a_drop_is_refused_when_the_remote_lacks_one_object(lin, store_dir):
    repo = _setup(lin, store_dir)
    plan = plan_drop(repo, 2)
    assert plan.candidates
    victim = sorted(plan.candidates)[1]
    (store_dir / "remote" / "objects" / victim[:2] / victim[2:]).unlink()
    code, _, err = lin("repack", "--drop")
    assert code == 11, err
    assert victim in err and "missing" in err and len(err.strip().splitlines()) <= 2
    repo = Repo.open(repo.path)
    assert not read_dropped(repo) and all(repo.objects.has(o) for o in plan.candidates)
    # a damaged copy there is no copy either
    victim2 = sorted(plan.candidates)[0]
    path = store_dir / "remote" / "objects" / victim2[:2] / victim2[2:]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    code, _, err = lin("repack", "--drop")
    assert code == 11 and victim2 in err
    assert all(Repo.open(repo.path).objects.has(o) for o in plan.candidates)


def test_a_drop_is_refused_when_the_remote_is_unreachable_or_none_is_set(lin, store_dir):
    repo = _setup(lin, store_dir)
    shutil.rmtree(store_dir / "remote")
    (store_dir / "remote").write_text("not a folder")
    code, _, err = lin("repack", "--drop")
    assert code == 11, err
    assert not read_dropped(Repo.open(repo.path))
    _set(repo, core__local_versions=0)
    code, _, err = lin("repack", "--drop")
    assert code == 4 and "core.local_versions" in err


def test_hot_tagged_and_metadata_never_dropped(lin, store_dir):
    repo = _setup(lin, store_dir, n=6, local=1, hot=2)
    versions = sorted(repo.versions())
    code, _, err = lin("tag", "keepme", versions[0])
    assert code == 0, err
    repo = Repo.open(repo.path)
    plan = plan_drop(repo, 1)
    protected = _weights(repo, versions[0]) | _weights(repo, versions[-1]) | _weights(repo, versions[-2])
    assert plan.candidates and not (set(plan.candidates) & protected)
    assert all(repo.objects.header(o).type == "blob" for o in plan.candidates)
    code, _, err = lin("repack", "--drop")
    assert code == 0, err
    repo = Repo.open(repo.path)
    for v in versions:  # every commit, tree and tensor file stays
        c = repo.commit(repo.resolve(v))
        assert repo.objects.has(c.tree)
        for e in repo.objects.get(c.tree, "tree").items():
            assert repo.objects.has(e.id)
    assert all(repo.objects.has(o) for o in protected)


def test_a_packed_store_drops_and_checks_out_again(lin, store_dir):
    repo = _setup(lin, store_dir, n=5, local=1, hot=1)
    before = _all(repo)
    repack(repo)
    code, _, err = lin("repack", "--drop")
    assert code == 0, err
    repo = Repo.open(repo.path)
    assert read_dropped(repo) and check(repo).ok
    versions = sorted(repo.versions())
    assert version_bytes(repo, versions[-1]) == before[versions[-1]]
    code, _, err = lin("repack")  # a later repack finds no base among the dropped
    assert code == 0, err
    code, _, err = lin("gc", "--confirm", "--grace", "0")  # gc of a packed store repacks too
    assert code == 0, err
    assert check(Repo.open(repo.path)).ok
    code, _, err = lin("checkout", versions[1], "--to", str(store_dir / "w1"))
    assert code == 0, err
    assert {p: (store_dir / "w1" / p).read_bytes() for p in before[versions[1]]} == before[versions[1]]
    repo = Repo.open(repo.path)
    for v in versions:  # every version reads back, the dropped ones fetched through the resolver
        assert version_bytes(repo, v) == before[v]
    assert check(Repo.open(repo.path)).ok


def test_fsck_remote_checks_the_dropped_weights_there(lin, store_dir):
    repo = _setup(lin, store_dir)
    code, _, err = lin("repack", "--drop")
    assert code == 0, err
    code, out, err = lin("fsck", "--remote", "backup")
    assert code == 0, out + err
    victim = sorted(read_dropped(Repo.open(repo.path)))[0]
    (store_dir / "remote" / "objects" / victim[:2] / victim[2:]).unlink()
    code, out, _ = lin("fsck", "--remote", "backup")
    assert code == 1 and victim in out


@pytest.mark.parametrize("point", ["drop-listed", "drop-remove"])
def test_kill_9_during_a_drop_then_fsck_is_clean(lin, store_dir, point):
    repo = _setup(lin, store_dir)
    before = _all(repo)
    r = run_lin(repo.path, "repack", "--drop", env={"LIN_TEST_KILL_AT": f"{point}:1"})
    assert r.returncode == -9, r.stderr
    repo = Repo.open(repo.path)
    rep = check(repo)
    assert rep.ok, [p.message for p in rep.problems]
    r = run_lin(repo.path, "repack", "--drop")
    assert r.returncode == 0, r.stderr
    r = run_lin(repo.path, "checkout", sorted(before)[0], "--to", str(store_dir / "back"))
    assert r.returncode == 0, r.stderr
    for path, data in before[sorted(before)[0]].items():
        assert (store_dir / "back" / path).read_bytes() == data
    assert check(Repo.open(repo.path)).ok


@pytest.mark.parametrize("point", ["drop-listed", "repack-unpack", "repack-drop-pack", "drop-remove"])
def test_kill_9_during_a_drop_in_a_packed_store_then_fsck_is_clean(lin, store_dir, point):
    repo = _setup(lin, store_dir, n=5, local=1, hot=1)
    before = _all(repo)
    repack(repo)
    r = run_lin(repo.path, "repack", "--drop", env={"LIN_TEST_KILL_AT": f"{point}:1"})
    assert r.returncode == -9, (point, r.stderr)
    repo = Repo.open(repo.path)
    rep = check(repo)
    assert rep.ok, (point, [p.message for p in rep.problems])
    r = run_lin(repo.path, "repack", "--drop")
    assert r.returncode == 0, r.stderr
    repo = Repo.open(repo.path)
    assert check(repo).ok and read_dropped(repo)
    for v in sorted(before)[:2]:
        r = run_lin(repo.path, "checkout", v, "--to", str(store_dir / v))
        assert r.returncode == 0, r.stderr
        assert {p: (store_dir / v / p).read_bytes() for p in before[v]} == before[v]


def test_on_an_s3_backup_remote_a_drop_is_refused_then_done_and_fetched_back(lin, store_dir, s3_bucket_url):
    loc = s3_bucket_url
    repo = _setup(lin, store_dir, remote=[loc.url, "--endpoint-url", loc.endpoint_url])
    before = _all(repo)
    victim = sorted(plan_drop(repo, 2).candidates)[0]
    s3 = loc.client()
    s3.delete_object(Bucket=loc.bucket, Key=loc.key(f"objects/{victim[:2]}/{victim[2:]}"))
    code, _, err = lin("repack", "--drop")
    assert code == 11 and victim in err
    assert not read_dropped(Repo.open(repo.path))
    s3.put_object(Bucket=loc.bucket, Key=loc.key(f"objects/{victim[:2]}/{victim[2:]}"),
                  Body=Repo.open(repo.path).objects.get_stored(victim))
    code, _, err = lin("repack", "--drop")
    assert code == 0, err
    assert victim in read_dropped(Repo.open(repo.path))
    oldest = sorted(before)[0]
    code, _, err = lin("checkout", oldest, "--to", str(store_dir / "old"))
    assert code == 0, err
    assert {p: (store_dir / "old" / p).read_bytes() for p in before[oldest]} == before[oldest]


def test_after_a_drop_new_versions_back_up_and_verify_even_when_they_hold_dropped_weights(lin, store_dir):
    """A new version may hold weights dropped here (a tensor the fine-tune left alone, a model
    committed again): its commit stores them again, the push backs it up, verify agrees."""
    repo = _setup(lin, store_dir)
    first = sorted(repo.versions())[0]
    assert lin("repack", "--drop")[0] == 0
    repo = Repo.open(repo.path)
    assert not all(repo.objects.has(o) for o in _weights(repo, first))  # dropped here
    again = version_bytes(repo, first)  # fetched back to build a folder that holds them
    folder = store_dir / "again"
    folder.mkdir()
    for name, data in again.items():
        (folder / name).write_bytes(data)
    code, out, err = lin("commit", str(folder), "--name", "again")
    assert code == 0, err
    repo = Repo.open(repo.path)
    assert all(repo.objects.has(o) for o in _weights(repo, "HEAD"))  # the new version holds its weights
    code, out, err = lin("push")
    assert code == 0, err + out
    code, out, err = lin("verify")
    assert code == 0, err + out
    assert check(repo).ok


def test_a_second_remote_receives_the_weights_dropped_here_from_the_backup(lin, store_dir, tmp_path):
    repo = _setup(lin, store_dir)
    before = _all(repo)
    assert lin("repack", "--drop")[0] == 0
    assert read_dropped(Repo.open(repo.path))
    assert lin("remote", "add", "second", str(tmp_path / "second"))[0] == 0
    code, out, err = lin("push", "second")
    assert code == 0, err + out
    assert lin("clone", str(tmp_path / "second"), str(tmp_path / "c"), "--no-checkout")[0] == 0
    assert _all(Repo.open(tmp_path / "c" / ".lineage")) == before


def test_a_remote_holding_the_only_copy_of_dropped_weights_is_not_removed_without_force(lin, store_dir):
    repo = _setup(lin, store_dir)
    assert lin("repack", "--drop")[0] == 0
    code, out, err = lin("remote", "rm", "backup")
    assert code != 0 and "remote backup holds the only copy of" in err and "dropped here" in err
    assert "backup" in Repo.open(repo.path).config.get("remote", {})  # still there
    code, out, err = lin("remote", "rm", "backup", "--force")
    assert code == 0, err


def test_nothing_is_dropped_while_a_reachable_object_is_missing(lin, store_dir):
    repo = _setup(lin, store_dir)
    newest = repo.resolve("HEAD")
    tree = repo.commit(newest).tree
    repo.objects.remove(tree)  # damage: HEAD's tree gone
    code, out, err = lin("repack", "--drop")
    assert code == 1 and "nothing may be dropped" in err
    assert not read_dropped(Repo.open(repo.path))
