"""lin gc: a plan first; roots (refs, HEAD, live reflogs, runs, young objects); trash and restore."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from test_guard_helpers import folder_bytes, lineage, snapshot, version_bytes

from lineagestore import Repo
from lineagestore.core.errors import CheckFailed, InvalidInput, ObjectNotFound
from lineagestore.core.objects import Checkpoint, Tree, TreeEntry
from lineagestore.core.settings import parse_duration
from lineagestore.guard import gc, trash

DAY = 86400.0


@pytest.fixture
def four(repo, tmp_path):
    return lineage(repo, tmp_path)


def closure(repo, cid: str) -> set[str]:
    return gc.Graph(repo.objects).walk([cid])


def drop(repo, name: str) -> str:
    cid = repo.resolve(name)
    repo.rm(name, force=True, confirm_lineage=True, confirm_name=repo.commit(cid).name)
    return cid


def only_v003(repo, four) -> set[str]:
    """Objects of v003 that no other version shares."""
    others = set().union(*(closure(repo, repo.resolve(n)) for n in ("v001", "v002", "v004")))
    return closure(repo, repo.resolve("v003")) - others


def test_plan_lists_what_when_and_why_and_deletes_nothing(lin, repo, four):
    gone = only_v003(repo, four)
    drop(repo, "v003")
    later = time.time() + 100 * DAY  # reflog entry expired, grace over
    before = snapshot(repo.path)
    p = gc.plan(repo, now=later)
    assert snapshot(repo.path) == before
    assert set(p.order) == gone and p.eligible_objects == len(gone)
    (g,) = p.groups
    assert g.label == "v003_syllo_reasoning" and g.kind == "version"
    assert "rm: v003_syllo_reasoning" in g.reason and abs(g.since - time.time()) < 60
    assert g.eligible_bytes == sum(repo.objects.stored_size(o) for o in gone)
    code, out, err = lin("gc")  # today: the reflog entry of the removal still protects v003
    assert code == 0 and "Nothing to do" in out
    repo.config.set("gc.reflog_expire_days", 0)
    repo.save_config()
    before = snapshot(repo.path)
    code, out, err = lin("gc", "--grace", "0")
    assert code == 0 and "v003_syllo_reasoning" in out and "Nothing was deleted" in out
    assert snapshot(repo.path) == before


def test_live_reflog_entries_and_the_grace_period_are_roots(repo, four):
    gone = only_v003(repo, four)
    drop(repo, "v003")
    now = time.time()
    assert gc.plan(repo, now=now + 30 * DAY).eligible_objects == 0  # the reflog still names it (90 days)
    p = gc.plan(repo, now=now + 91 * DAY)
    assert set(p.order) == gone
    # an object becomes eligible only when it has been unreachable longer than the grace period,
    # counted from the last time a reflog entry named it (the removal), not from its mtime
    repo.config.set("gc.reflog_expire_days", 1)
    for o in gone:
        os.utime(repo.objects.path_for(o), (now - 400 * DAY, now - 400 * DAY))
    p = gc.plan(repo, now=now + 2 * DAY)
    assert p.eligible_objects == 0 and p.kept_objects == len(gone)
    assert p.groups[0].keep_until == pytest.approx(now + 14 * DAY, abs=60)
    assert set(gc.plan(repo, now=now + 15 * DAY).order) == gone


def test_young_objects_keep_what_they_reach(repo, four):
    old_blob = repo.objects.put("blob", b"old content, written long ago")
    t = time.time() - 100 * DAY
    os.utime(repo.objects.path_for(old_blob), (t, t))
    tree = repo.objects.put_object(Tree(entries=[TreeEntry("f", "blob", old_blob, 29)]))  # young
    p = gc.plan(repo)
    assert old_blob not in p.order and p.kept_objects == 2
    os.utime(repo.objects.path_for(tree), (t, t))
    assert set(gc.plan(repo).order) == {tree, old_blob}
    assert gc.plan(repo).order.index(tree) < gc.plan(repo).order.index(old_blob)  # containers first


def test_head_runs_and_other_refs_are_roots(repo, four):
    v3 = drop(repo, "v003")
    repo.config.set("gc.reflog_expire_days", 0)
    far = time.time() + 100 * DAY
    assert v3 in gc.plan(repo, now=far).order
    repo.refs.detach("HEAD", v3, "test")  # the active model, unnamed
    assert gc.plan(repo, now=far).eligible_objects == 0
    repo.refs.detach("HEAD", repo.resolve("v004"), "test")
    ck = repo.objects.put_object(Checkpoint(run="r", step=1, model=repo.commit(v3).tree))
    repo.update_ref("refs/runs/r", None, ck, "run in progress")
    p = gc.plan(repo, now=far)
    assert repo.commit(v3).tree not in p.order and set(p.order) == {v3}


def test_mark_phase_reads_headers_and_never_decompresses_weights(repo, four, monkeypatch):
    drop(repo, "v003")
    repo.config.set("gc.reflog_expire_days", 0)
    blobs = {o for o in repo.objects.iter_ids() if repo.objects.header(o).type in ("blob", "records")}
    read: list[str] = []
    real = type(repo.objects)._read_file
    monkeypatch.setattr(type(repo.objects), "_read_file", lambda self, oid: read.append(oid) or real(self, oid))
    p = gc.plan(repo, now=time.time() + 100 * DAY)
    assert blobs & set(p.order), "the plan must include unreachable blobs"
    assert read and not (set(read) & blobs)


def test_confirm_moves_to_trash_and_restore_brings_back_byte_exact(lin, repo, four):
    gone = only_v003(repo, four)
    v3 = drop(repo, "v003")
    repo.config.set("gc.reflog_expire_days", 0)
    repo.save_config()
    code, out, err = lin("gc", "--confirm", "--grace", "0", "--json")
    assert code == 0 and "--grace 0" in err
    res = json.loads(out)
    assert res["moved_objects"] == len(gone)
    batch = repo.path / "trash" / res["batch"]
    manifest = json.loads((batch / "manifest.json").read_text())
    order = [o[0] for o in manifest["objects"]]
    assert set(order) == gone and order.index(v3) == 0  # the commit goes first
    assert not any(repo.objects.has(o) for o in gone)
    assert lin("fsck")[0] == 0
    code, out, _ = lin("restore", v3[:12])
    assert code == 0 and f"Brought back {len(gone)} objects" in out and "v003_syllo_reasoning" in out
    repo = Repo.open(repo.path)
    assert version_bytes(repo, "v003") == folder_bytes(Path(four["v003_syllo_reasoning"]))
    assert lin("fsck")[0] == 0


def test_empty_trash_deletes_only_batches_older_than_the_grace_period(repo, four):
    gone = only_v003(repo, four)
    drop(repo, "v003")
    repo.config.set("gc.reflog_expire_days", 0)
    now = time.time()
    res = gc.collect(repo, grace_s=0, now=now)
    assert res.moved_objects == len(gone)
    res2 = gc.collect(repo, empty_trash=True, now=now + 13 * DAY)  # default grace: 14 days
    assert res2.purged_batches == [] and len(trash.trash_batches(repo)) == 1
    res3 = gc.collect(repo, empty_trash=True, now=now + 15 * DAY)
    assert res3.purged_batches == [res.batch] and res3.purged_objects == len(gone)
    assert not trash.trash_batches(repo)
    with pytest.raises(ObjectNotFound, match="neither in the store nor in trash"):
        repo.restore("v003_syllo_reasoning")


def test_a_killed_purge_is_finished_by_the_next_gc(repo, four):
    drop(repo, "v003")
    repo.config.set("gc.reflog_expire_days", 0)
    res = gc.collect(repo, grace_s=0)
    folder = repo.path / "trash"
    os.rename(folder / res.batch, folder / (trash.PURGE_PREFIX + res.batch))  # what a kill mid-purge leaves
    from lineagestore.guard.fsck import check
    rep = check(repo)
    assert rep.ok and [n.kind for n in rep.notes] == ["stale-purge"]
    gc.collect(repo)
    assert not any(folder.iterdir())


def test_gc_refuses_when_a_reachable_object_is_missing(lin, repo, four):
    drop(repo, "v003")
    repo.config.set("gc.reflog_expire_days", 0)
    repo.save_config()
    tree = repo.objects.get(repo.commit(repo.resolve("v004")).tree, "tree")
    repo.objects.remove(tree.items()[0].id)
    before = set(repo.objects.iter_ids())
    with pytest.raises(CheckFailed, match="is missing"):
        gc.collect(repo, grace_s=0)
    assert set(repo.objects.iter_ids()) == before
    code, _, err = lin("gc", "--confirm", "--grace", "0")
    assert code == 1 and "gc refuses to delete anything" in err


def test_zero_grace_must_be_explicit(lin, repo, four):
    with pytest.raises(InvalidInput, match="only accepted when given explicitly"):
        repo.config.set("gc.grace_days", 0)
    (repo.path / "config.toml").write_text("[gc]\ngrace_days = 0\n")
    code, _, err = lin("gc", "--confirm")
    assert code == 4 and "gc.grace_days = 0" in err and "only accepted when given explicitly" in err
    (repo.path / "config.toml").write_text("")
    code, _, err = lin("gc", "--grace", "0")
    assert code == 0 and "warning: --grace 0" in err
    assert parse_duration("12h") == 12 * 3600 and parse_duration("2w") == 14 * DAY
    with pytest.raises(InvalidInput, match="invalid duration"):
        parse_duration("-1")


def test_gc_refuses_when_a_reflog_line_cannot_be_read(repo, four):
    """A malformed reflog line may have named a version: gc does not guess."""
    drop(repo, "v003")
    repo.config.set("gc.reflog_expire_days", 0)
    with open(repo.path / "logs" / "refs" / "tags" / "v003_syllo_reasoning", "a") as f:
        f.write("damaged line\n")
    with pytest.raises(CheckFailed, match="malformed"):
        gc.collect(repo, grace_s=0)


def test_registered_data_gives_the_same_answers_after_gc(lin, repo, store_dir, tmp_path):
    """gc takes what nothing names (an old version's name, a run's older checkpoints, leftovers)
    and nothing the data registry or the ledger needs: `lin data check`, `manifest`, `ls` and
    `verify` answer the same before and after it, and again once the derived cache is gone."""
    import shutil

    from conftest import make_model_dir
    from test_checkpoint_retention import write_run

    from lineagestore.data import lookup
    from lineagestore.train.checkpoint import RUNNING, read_checkpoint, write_checkpoint

    def jsonl(name: str, texts: list[str]) -> Path:
        p = store_dir / name
        p.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        return p

    trained = jsonl("trained.jsonl", [f"trained {i}" for i in range(200)])
    overlap = jsonl("overlap.jsonl", [f"trained {i}" for i in range(50)] + [f"new {i}" for i in range(150)])
    running = jsonl("running.jsonl", [f"in a run {i}" for i in range(80)])
    nostore = jsonl("nostore.jsonl", [f"kept out {i}" for i in range(60)])
    fresh = jsonl("fresh.jsonl", [f"trained {i}" for i in range(10)] + ["never seen"])
    assert lin("import", str(make_model_dir(tmp_path / "m1", seed=1)), "--name", "base")[0] == 0
    for f in (trained, overlap, running):
        assert lin("data", "add", str(f), "--no-tokens")[0] == 0
    assert lin("data", "add", str(nostore), "--no-tokens", "--no-store")[0] == 0
    code, _, err = lin("commit", str(make_model_dir(tmp_path / "m2", seed=2)), "--name", "tuned", "--data", str(trained))
    assert code == 0, err
    # a run in progress on running.jsonl, with older checkpoints gc may take
    repo = Repo.open(repo.path)
    run_ds = lookup(repo, running).id
    cks = write_run(repo, "r", 4)
    last = read_checkpoint(repo, cks[-1])
    write_checkpoint(repo, "r", step=last.step, model=last.model, state=last.state, parent=cks[-1],
                     meta={"status": RUNNING, "datasets": [run_ds]}, message="checkpoint: with data")
    # a version whose name was removed, and the reflogs that would keep it: gc takes it
    repo.commit_folder(make_model_dir(tmp_path / "m3", seed=3), "dropped", activate=False)
    code, _, err = lin("rm", "v003", "--force", "--confirm-lineage", "--confirm-name", "v003_dropped")
    assert code == 0, err
    repo.config.set("gc.reflog_expire_days", 0)
    repo.save_config()
    files = [str(f) for f in (trained, overlap, running, nostore, fresh)]

    def answers() -> dict[str, str]:
        out = {}
        for args in (("data", "check", *files, "--json"), ("data", "manifest", "--json"), ("data", "ls", "--json"),
                     ("data", "verify", "--json"), ("data", "show", str(overlap), "--json")):
            code, text, err = lin(*args)
            assert code == 0, (args, err)
            out[" ".join(args[:2])] = text
        return out

    before = answers()
    status = {d["filename"]: d["status"] for d in json.loads(before["data ls"])}
    assert status == {"trained.jsonl": "trained", "overlap.jsonl": "untrained", "running.jsonl": "in training",
                      "nostore.jsonl": "untrained"}
    seen = {Path(c["path"]).name: c["records_seen"] for c in json.loads(before["data check"])}
    assert seen == {"trained.jsonl": 200, "overlap.jsonl": 50, "running.jsonl": 0, "nostore.jsonl": 0,
                    "fresh.jsonl": 10}
    code, out, err = lin("gc", "--confirm", "--grace", "0", "--json")
    assert code == 0, err
    res = json.loads(out)
    labels = {g["label"] for g in res["plan"]["groups"]}
    assert "v003_dropped" in labels and "checkpoint r step 0" in labels, labels
    assert lin("gc", "--confirm", "--grace", "0", "--empty-trash")[0] == 0
    assert not any((repo.path / "trash").iterdir())
    assert answers() == before
    shutil.rmtree(repo.path / "cache")  # derived: rebuilt from what gc left
    assert answers() == before
    assert lin("fsck", "--full")[0] == 0
