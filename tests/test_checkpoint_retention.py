"""Checkpoints do not fill the disk: a committed or abandoned run keeps only its last checkpoint;
a live run keeps its last ``train.keep_checkpoints``; gc says what keeps the largest objects alive;
doctor warns when checkpoints hold much of the store.

Checkpoints are written through train/checkpoint.py's own functions (what the trainer calls), with
a distinct block of "weights" each, so what gc can reclaim is exactly known."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from conftest import make_model_dir

from lineagestore import Repo
from lineagestore.core.errors import InvalidInput
from lineagestore.core.publish import publish
from lineagestore.guard import gc
from lineagestore.guard.fsck import check
from lineagestore.train import runs
from lineagestore.train.checkpoint import (
    RUNNING,
    checkpoint_store,
    history,
    latest,
    read_checkpoint,
    run_ref,
    save_state,
    write_checkpoint,
)
from lineagestore.versions.models import build_trees

DAY = 86400.0
WEIGHTS = 200_000  # bytes of each checkpoint's own weights (random: stored raw)


def write_run(repo: Repo, run: str, n: int, *, seed: int = 0, parent: str | None = None) -> list[str]:
    """``n`` checkpoints of ``run`` as the trainer writes them: objects in one batch, flushed, then
    the checkpoint object and the ref (compare-and-swap from the previous checkpoint)."""
    rng = np.random.default_rng(seed)
    out = []
    for step in range(n):
        ckstore = checkpoint_store(repo)
        with repo.writing():
            w = ckstore.put_bytes_chunked(rng.bytes(WEIGHTS))
            model = build_trees(ckstore, [("model.safetensors", "blob", w, WEIGHTS, False)])
            state = save_state(ckstore, {"trainer": {"step": step, "seed": seed}})
            ckstore.flush()
            parent = write_checkpoint(repo, run, step=step, model=model, state=state, parent=parent,
                                      meta={"status": RUNNING}, message=f"checkpoint: step {step}/{n} (running)")
        out.append(parent)
    return out


def own_objects(repo: Repo, cid: str) -> set[str]:
    """A checkpoint, its model and state trees and what they hold (the blobs are unique per test run)."""
    ck = read_checkpoint(repo, cid)
    return {cid} | gc.Graph(repo.objects).walk([ck.model, *([ck.state] if ck.state else [])])


def commit_run(repo: Repo, run: str, last: str, base: str) -> str:
    """Publish the run's version and retire its ref, as the trainer's final commit does."""
    def content(batch) -> str:
        blob = batch.put_bytes_chunked(b"the final weights of " + run.encode())
        return build_trees(batch, [("model.safetensors", "blob", blob, 21 + len(run), False)])
    pub = publish(repo, content, name=run, kind="train", parents=[base], extra={"run": run, "checkpoint": last},
                  retire={run_ref(run): last})
    return pub.id


@pytest.fixture
def base(repo, tmp_path) -> str:
    return repo.import_model(make_model_dir(tmp_path / "base", seed=1), "base").id


@pytest.mark.parametrize("end", ["commit", "abandon"])
def test_an_ended_run_keeps_only_its_last_checkpoint(repo, base, end):
    cks = write_run(repo, "r", 5)
    if end == "commit":
        commit_run(repo, "r", cks[-1], base)
    else:
        runs.abandon(repo, "r", reason="test")
    assert repo.refs.resolve(run_ref("r")) is None
    older = set().union(*(own_objects(repo, c) for c in cks[:-1]))
    last = own_objects(repo, cks[-1])
    assert not older & last

    p = gc.plan(repo, grace_s=0)  # an explicit --grace 0: no wait
    assert set(p.order) == older, "every checkpoint but the last is collectable once the run ended"
    groups = sorted((g for g in p.groups if g.kind == "checkpoint"), key=lambda g: g.label)
    assert [g.label for g in groups] == [f"checkpoint r step {i}" for i in range(4)]
    # each says why: it left the last-2 window while the run went on, or the run ended
    assert all(g.reason == "refs/runs/r: not among the last 2 checkpoints of the run" for g in groups[:3])
    how = "train: published as v002_r" if end == "commit" else "abandon: test"
    assert groups[3].reason == f"refs/runs/r ended ({how}): only its last checkpoint is kept"

    res = gc.collect(repo, grace_s=0)
    assert res.moved_objects == len(older)
    assert res.moved_bytes >= 4 * WEIGHTS
    assert not any(repo.objects.has(o) for o in older) and all(repo.objects.has(o) for o in last)
    rep = check(repo)  # the last checkpoint names a parent that is gone: not damage
    assert rep.ok, [x.message for x in rep.problems]
    assert [c.id for c in history(repo, cks[-1])] == [cks[-1]]

    # the reflog of the ended run keeps the last one for gc.reflog_expire_days (90), then it goes too
    assert gc.plan(repo, grace_s=0, now=time.time() + 80 * DAY).order == []
    assert set(gc.plan(repo, grace_s=0, now=time.time() + 91 * DAY).order) == last


def test_the_grace_period_counts_from_the_end_of_the_run(repo, base):
    cks = write_run(repo, "r", 3)
    t_end = time.time()
    commit_run(repo, "r", cks[-1], base)
    # gc.grace_days (14): the earlier checkpoints wait 14 days from the commit, not 90 days
    assert gc.plan(repo, now=t_end + 13 * DAY).eligible_objects == 0
    p = gc.plan(repo, now=t_end + 15 * DAY)
    assert set(p.order) == own_objects(repo, cks[0]) | own_objects(repo, cks[1])


def test_a_live_run_keeps_its_last_keep_checkpoints(repo, base):
    cks = write_run(repo, "r", 6)
    objs = [own_objects(repo, c) for c in cks]
    p = gc.plan(repo, grace_s=0)  # default train.keep_checkpoints = 2
    assert set(p.order) == set().union(*objs[:4])
    assert all("last 2 checkpoints" in g.reason for g in p.groups), [g.reason for g in p.groups]
    repo.config.set("train.keep_checkpoints", 3)
    assert set(gc.plan(repo, grace_s=0).order) == set().union(*objs[:3])
    repo.config.set("train.keep_checkpoints", 1)
    res = gc.collect(repo, grace_s=0)
    assert res.moved_objects == len(set().union(*objs[:5]))
    assert check(repo).ok
    # the run goes on from its last checkpoint: resumable, and its next checkpoint names it
    assert latest(repo, "r").id == cks[-1]
    more = write_run(repo, "r", 1, seed=9, parent=cks[-1])
    assert read_checkpoint(repo, more[0]).parent == cks[-1]
    assert check(repo).ok


def test_a_kept_checkpoint_waits_the_grace_period_from_when_it_left_the_window(repo, base):
    cks = write_run(repo, "r", 3)
    logs = repo.refs.reflog(run_ref("r"))
    third = logs[-1].time  # the first checkpoint left the last-2 window when the third was written
    assert gc.plan(repo, now=third + 13 * DAY).eligible_objects == 0
    assert set(gc.plan(repo, now=third + 15 * DAY).order) == own_objects(repo, cks[0])


def test_a_restarted_run_name_keeps_the_last_checkpoint_of_the_ended_one(repo, base):
    first = write_run(repo, "r", 3, seed=1)
    runs.abandon(repo, "r")
    second = write_run(repo, "r", 3, seed=2)
    p = gc.plan(repo, grace_s=0)
    gone = own_objects(repo, first[0]) | own_objects(repo, first[1]) | own_objects(repo, second[0])
    assert set(p.order) == gone


def test_keep_checkpoints_is_a_checked_setting(repo):
    assert repo.settings.train.keep_checkpoints == 2
    for bad in (0, -1, 1.5, "two", True):
        with pytest.raises(InvalidInput, match="keep_checkpoints"):
            repo.config.set("train.keep_checkpoints", bad)
    (repo.path / "config.toml").write_text("[train]\nkeep_checkpoints = 0\n")
    with pytest.raises(InvalidInput, match=r"config.toml: train.keep_checkpoints = 0 must be >= 1"):
        Repo.open(repo.path)
    (repo.path / "config.toml").write_text("[train]\ncheckpoint_share_warn = 1.5\n")
    with pytest.raises(InvalidInput, match=r"train.checkpoint_share_warn = 1.5 must be <= 1"):
        Repo.open(repo.path)


def test_gc_says_what_keeps_the_largest_objects_alive(lin, repo, base):
    write_run(repo, "live", 3, seed=1)
    ended = write_run(repo, "done", 3, seed=2)
    commit_run(repo, "done", ended[-1], base)
    p = gc.plan(repo)
    by_name = {h.name: h for h in p.holders}
    live = by_name["run live"]
    assert live.objects and live.bytes >= 2 * WEIGHTS and "refs/runs/live" in live.via
    done = by_name["run done"]
    assert done.bytes >= WEIGHTS and done.bytes < 2 * WEIGHTS and done.via == ["reflog of refs/runs/done"]
    assert p.holders[0].bytes >= p.holders[-1].bytes  # largest first
    code, out, err = lin("gc")
    assert code == 0, err
    assert "Kept alive by" in out and "run live" in out and "refs/runs/live" in out
    assert "reflog of refs/runs/done" in out
    code, out, _ = lin("gc", "--json")
    holders = json.loads(out)["plan"]["holders"]
    assert {h["name"] for h in holders} >= {"run live", "run done"}


def test_doctor_warns_when_checkpoints_hold_much_of_the_store(lin, repo, base):
    code, out, _ = lin("doctor", "--json")
    assert "checkpoint-share" not in out
    write_run(repo, "big", 4, seed=3)
    code, out, _ = lin("doctor", "--json")
    (f,) = [f for f in json.loads(out)["findings"] if f["code"] == "checkpoint-share"]
    assert f["level"] == "info" and "run big" in f["message"] and "lin gc" in f["hint"]
    repo.config.set("train.checkpoint_share_warn", 1)
    repo.save_config()
    code, out, _ = lin("doctor", "--json")
    assert "checkpoint-share" not in out
