"""Every reader of weights dropped here (core.local_versions) fetches them from the remote through
one path (remote.held.DroppedWeights, the store's resolver of absent objects): the same bytes as
before the drop, verified before anything is placed; a copy the remote lacks or holds damaged is
refused in one line naming the object, its version and the remote (exit 5), nothing placed."""

from __future__ import annotations

import json

import pytest
from test_guard_helpers import version_bytes
from test_local_versions import _all, _setup, _weights
from test_train_support import train_assets  # noqa: F401 - the fixture

from lineagestore import Repo
from lineagestore.core.errors import CorruptObject, ObjectNotFound
from lineagestore.core.progress import NULL
from lineagestore.guard.dropped import read_dropped
from lineagestore.guard.fsck import check


def _dropped_setup(lin, root, **kw) -> tuple[Repo, dict, list[str]]:
    repo = _setup(lin, root, **kw)
    before = _all(repo)
    diff = {}
    versions = sorted(repo.versions())
    for a, b in ((versions[0], versions[-1]), (versions[1], versions[2])):
        code, out, err = lin("diff", a, b, "--json")
        assert code == 0, err
        diff[a, b] = json.loads(out)
    code, _, err = lin("repack", "--drop")
    assert code == 0, err
    repo = Repo.open(repo.path)
    assert all(not repo.objects.has(o) for o in _weights(repo, versions[0]))
    return repo, {"files": before, "diff": diff}, versions


def _remote_file(root, oid: str):
    return root / "remote" / "objects" / oid[:2] / oid[2:]


def test_diff_and_reads_of_a_dropped_version_give_the_bytes_from_before(lin, store_dir):
    repo, before, versions = _dropped_setup(lin, store_dir)
    for (a, b), want in before["diff"].items():  # diff reads every tensor of both versions
        code, out, err = lin("diff", a, b, "--json")
        assert code == 0, err
        assert json.loads(out) == want
    repo = Repo.open(repo.path)
    assert all(repo.objects.has(o) for o in _weights(repo, versions[0]))  # stays local, still listed
    assert set(_weights(repo, versions[0])) <= set(read_dropped(repo))
    for v in versions:  # the reader export and training use (materialize.iter_file_bytes)
        assert version_bytes(repo, v) == before["files"][v]
    rep = check(repo)
    assert rep.ok and rep.on_remote == 0, [p.message for p in rep.problems]


def test_training_and_evaluation_read_a_dropped_base_through_the_same_path(lin, store_dir):
    from lineagestore.train.modelio import materialize
    from lineagestore.train.plan import _verify_tree
    repo, before, versions = _dropped_setup(lin, store_dir)
    tree = repo.commit(repo.resolve(versions[1])).tree
    assert _verify_tree(repo, tree, NULL) == []  # lin train's check of its base
    repo = Repo.open(repo.path)
    tree = repo.commit(repo.resolve(versions[0])).tree
    out = materialize(repo.objects, tree, store_dir / "base0")
    assert {p: (out / p).read_bytes() for p in before["files"][versions[0]]} == before["files"][versions[0]]


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_dropped_object_the_remote_lacks_or_holds_damaged_is_refused_naming_it(lin, store_dir, damage):
    repo, before, versions = _dropped_setup(lin, store_dir)
    victim = sorted(_weights(repo, versions[0]))[0]
    path = _remote_file(store_dir, victim)
    if damage == "missing":
        path.unlink()
    else:
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.chmod(0o644)
        path.write_bytes(bytes(data))
    for args in (("diff", versions[0], versions[-1]), ("checkout", versions[0], "--to", str(store_dir / "w"))):
        code, out, err = lin(*args)
        assert code == 5, (args, out, err)
        first = err.strip().splitlines()[0]
        assert victim in first and versions[0] in first and "remote backup" in first, first
        assert ("missing" if damage == "missing" else "damaged") in first, first
        repo = Repo.open(repo.path)
        assert not repo.objects.has(victim)  # nothing placed
        assert not (store_dir / "w" / "model.safetensors").exists()
    # a read through the API raises the same error
    with pytest.raises(ObjectNotFound if damage == "missing" else CorruptObject, match=victim):
        version_bytes(repo, versions[0])
    assert not repo.objects.has(victim)
    assert check(Repo.open(repo.path)).ok


def test_on_an_s3_backup_remote_diff_of_a_dropped_version_fetches_it(lin, store_dir, s3_bucket_url):
    loc = s3_bucket_url
    repo, before, versions = _dropped_setup(lin, store_dir, remote=[loc.url, "--endpoint-url", loc.endpoint_url])
    for (a, b), want in before["diff"].items():
        code, out, err = lin("diff", a, b, "--json")
        assert code == 0, err
        assert json.loads(out) == want
    victim = sorted(_weights(repo, versions[1]) - _weights(repo, versions[-1]))[0]
    repo = Repo.open(repo.path)
    assert repo.objects.has(victim)
    # dropped again, then its copy on S3 damaged: refused naming it
    code, _, err = lin("repack", "--drop")
    assert code == 0, err
    s3 = loc.client()
    key = loc.key(f"objects/{victim[:2]}/{victim[2:]}")
    body = bytearray(s3.get_object(Bucket=loc.bucket, Key=key)["Body"].read())
    body[-1] ^= 0xFF
    s3.put_object(Bucket=loc.bucket, Key=key, Body=bytes(body))
    code, _, err = lin("diff", versions[1], versions[2])
    assert code == 5 and victim in err and "remote backup" in err, err
    assert not Repo.open(repo.path).objects.has(victim)


def test_eval_run_and_train_from_a_dropped_version(train_assets, tmp_path):  # noqa: F811 - the fixture
    """`lin eval run` and `lin train --base` of a version whose weights were dropped: the same loss
    as before the drop, and a new version trained from it."""
    import shutil as sh

    import numpy as np
    from safetensors.numpy import load_file, save_file
    from test_train_support import lin_proc, new_store

    from tools import samples
    folder = new_store(tmp_path / "w", train_assets)
    child = tmp_path / "child"
    sh.copytree(train_assets / "base", child)
    weights = {k: (v + np.float32(1e-3)).astype(v.dtype) if v.dtype.kind == "f" else v
               for k, v in load_file(str(child / "model.safetensors")).items()}
    save_file(weights, str(child / "model.safetensors"), metadata={"format": "pt"})
    samples.write_jsonl(folder / "heldout.jsonl", samples.bible_records(400, 30))
    for args in (("commit", str(child), "--name", "child"), ("eval", "set", "heldout.jsonl"),
                 ("remote", "add", "backup", str(tmp_path / "remote"), "--backup"), ("push",)):
        lin_proc(folder, *args, check=True)

    def loss() -> float:
        p = lin_proc(folder, "eval", "run", "v001", "--force", "--device", "cpu", "--json", check=True)
        return json.loads(p.stdout)[0]["loss"]

    before = loss()
    repo = Repo.open(folder / ".lineage")
    repo.config.set("core.local_versions", 1)
    repo.config.set("core.hot_versions", 1)
    repo.save_config()
    lin_proc(folder, "repack", "--drop", check=True)
    repo = Repo.open(folder / ".lineage")
    gone = _weights(repo, "v001")
    assert gone and not any(repo.objects.has(o) for o in gone)
    assert loss() == before
    lin_proc(folder, "train", "--base", "v001", "--data", "chat.jsonl", "--name", "again", "--yes", "--device",
             "cpu", "--batch-size", "4", "--seq-len", "32", "--max-steps", "2", "--no-measure", check=True)
    repo = Repo.open(folder / ".lineage")
    assert "v003_again" in repo.versions() and check(repo).ok
