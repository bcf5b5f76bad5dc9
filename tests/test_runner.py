"""`lin run`: the loop that trains a branch's queue (docs/continuous.md).

Real files (tools/samples.py), the tiny Qwen3 of the training tests, real processes where a
process is killed or two must run at once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_train_support import lin_proc, new_store, train_assets  # noqa: F401 - fixture

from lineagestore import Repo
from lineagestore import queue as Q
from lineagestore.runner.batch import file_slug, pick, version_slug
from lineagestore.runner.inbox import Inbox

#: a short CPU run per file: one epoch of 2 x 32-token units (about 10 steps), a checkpoint every 3 steps
RUN_ARGS = ["--device", "cpu", "--batch-size", "2", "--seq-len", "32", "--checkpoint-every", "3",
            "--lr", "1e-3", "--log-every", "1"]


def _files(folder: Path, n: int, per: int = 24, start: int = 0) -> list[Path]:
    from tools import samples
    out = []
    for i in range(n):
        p = folder / f"part_{i:02d}.jsonl"
        samples.write_jsonl(p, samples.bible_records(start + i * per, per))
        out.append(p)
    return out


def _store(tmp_path: Path, assets: Path, files: int = 3) -> tuple[Path, list[Path]]:
    folder = new_store(tmp_path / "w", assets)
    data = folder / "data"
    data.mkdir()
    return folder, _files(data, files)


def _queue(folder: Path, paths: list[Path]) -> list[Q.Item]:
    repo = Repo.open(folder / ".lineage")
    res = Q.add_files(repo, "main", [str(p) for p in paths])
    assert not res.skipped, res.skipped
    return res.added


def _run(folder: Path, *args: str, env: dict | None = None, timeout: float = 400) -> subprocess.CompletedProcess:
    return lin_proc(folder, "run", *RUN_ARGS, "--yes", "--json", *args, env=env, timeout=timeout)


def _lineage(folder: Path) -> list[tuple[str, list[str], str]]:
    """(version, data file names, tree) along main, oldest first, without the base."""
    repo = Repo.open(folder / ".lineage")
    out = []
    cid = repo.refs.resolve("refs/heads/main")
    while cid:
        c = repo.commit(cid)
        if c.kind == "train":
            out.append((c.name, list(c.params.get("data", [])), c.tree))
        cid = c.parents[0] if c.parents else None
    return out[::-1]


def _statuses(folder: Path) -> dict[str, tuple[str, str | None, str | None]]:
    q = Q.load(Repo.open(folder / ".lineage"), "main")
    return {Path(i.name).name: (i.status, i.version, i.reason) for i in q.items}


# ------------------------------------------------------------------------------ pieces


def test_version_names_from_files():
    assert file_slug("data/syllo_20k.jsonl") == "syllo_20k"
    assert file_slug("/x/My Data (v2).jsonl.gz") == "My_Data_v2"
    assert file_slug("v012_old.jsonl") == "f_v012_old"  # never read as a version name
    assert file_slug(".hidden.jsonl") == "hidden"

    class It:
        def __init__(self, i, name, tokens, status="queued"):
            self.id, self.name, self.tokens, self.status = i, name, tokens, status
    items = (It("q1", "syllo_20k.jsonl", 10, "done"), It("q2", "a.jsonl", 10), It("q3", "b.jsonl", 10),
             It("q4", "c.jsonl", 10), It("q5", "d.jsonl", 10))
    assert [i.id for i in pick(items, files=3, tokens=None, max_files=None)] == ["q2", "q3", "q4"]
    assert [i.id for i in pick(items, files=9, tokens=25, max_files=None)] == ["q2", "q3"]
    assert [i.id for i in pick(items, files=9, tokens=5, max_files=None)] == ["q2"]  # at least one
    assert [i.id for i in pick(items, files=9, tokens=None, max_files=1)] == ["q2"]
    assert version_slug([items[0], *items[1:4]]) == "syllo_20k_and_3_more"


def test_inbox_takes_a_slowly_written_file_only_when_complete(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    now = [0.0]
    box = Inbox(inbox, settle_s=5.0, clock=lambda: now[0])
    f = inbox / "slow.jsonl"
    for i in range(4):  # written a line at a time: never complete while it grows
        with open(f, "a") as fh:
            fh.write(json.dumps({"text": f"line {i}"}) + "\n")
        os.utime(f, ns=(int((1e9 + i) * 1e9), int((2e9 + i) * 1e9)))  # mtime in the future: only the clock counts
        now[0] += 3.0
        assert box.ready() == []
    (inbox / ".part.jsonl").write_text("{}\n")  # a name starting with "." is never taken
    (inbox / "notes.txt").write_text("x")
    now[0] += 3.0
    assert box.ready() == []  # unchanged for 3 s of the 5
    now[0] += 2.5
    assert box.ready() == [f]
    box.taken(f)
    assert box.ready() == []
    # renamed in whole (an mtime older than the settle time): taken on the second look
    src = tmp_path / "whole.jsonl"
    src.write_text(json.dumps({"text": "x"}) + "\n")
    os.utime(src, (time.time() - 60, time.time() - 60))
    os.rename(src, inbox / "whole.jsonl")
    assert box.ready() == []
    now[0] += 0.1
    assert box.ready() == [inbox / "whole.jsonl"]


# ------------------------------------------------------------------------------ the loop


def test_files_are_trained_in_order_each_exactly_once(tmp_path, train_assets):  # noqa: F811 - the fixture
    folder, paths = _store(tmp_path, train_assets, 3)
    _queue(folder, paths)
    p = _run(folder)
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads(p.stdout)
    assert [t["version"] for t in rep["trained"]] == ["v002_part_00", "v003_part_01", "v004_part_02"]
    assert rep["parked"] == [] and rep["stopped"] == "empty"
    assert [(v, d) for v, d, _ in _lineage(folder)] == [
        ("v002_part_00", ["part_00.jsonl"]), ("v003_part_01", ["part_01.jsonl"]), ("v004_part_02", ["part_02.jsonl"])]
    assert {k: v[:2] for k, v in _statuses(folder).items()} == {
        "part_00.jsonl": ("done", "v002_part_00"), "part_01.jsonl": ("done", "v003_part_01"),
        "part_02.jsonl": ("done", "v004_part_02")}
    repo = Repo.open(folder / ".lineage")
    c = repo.commit(repo.resolve("v003_part_01"))
    assert c.parents == [repo.resolve("v002_part_00")]
    assert c.params["lr"] == 1e-3 and c.params["seq_len"] == 32  # the run's settings, recorded
    assert repo.refs.names("refs/runs/") == []
    kinds = [e.event["kind"] for e in Q.read_log(repo, "main") if e.event]
    assert kinds.count("trained") == 3 and kinds.count("started") == 3
    # a renamed copy of a trained file is not queued
    copy = folder / "data" / "renamed.jsonl"
    shutil.copy(paths[1], copy)
    res = Q.add_files(repo, "main", [str(copy)])
    assert res.added == [] and "q00002" in res.skipped[0][1]
    # the queue is empty: a second run trains nothing and exits 0
    p = _run(folder)
    assert p.returncode == 0 and json.loads(p.stdout)["trained"] == []
    assert lin_proc(folder, "fsck").returncode == 0


def test_corrupt_file_is_parked_naming_its_line_and_the_loop_goes_on(tmp_path, train_assets):  # noqa: F811
    folder, paths = _store(tmp_path, train_assets, 3)
    _queue(folder, paths)
    text = paths[1].read_text().splitlines()
    text[6] = text[6][:25]  # the 7th line cut short after it was queued
    paths[1].write_text("\n".join(text) + "\n")
    p = _run(folder)
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads(p.stdout)
    assert [t["version"] for t in rep["trained"]] == ["v002_part_00", "v003_part_02"]
    assert [x["item"] for x in rep["parked"]] == ["q00002"]
    reason = rep["parked"][0]["reason"]
    assert "part_01.jsonl" in reason and "line 7" in reason, reason
    st = _statuses(folder)
    assert st["part_01.jsonl"][0] == "parked" and "line 7" in (st["part_01.jsonl"][2] or "")
    assert Repo.open(folder / ".lineage").refs.names("refs/runs/") == []


def test_nan_loss_is_retried_then_parked(tmp_path, train_assets):  # noqa: F811 - the fixture
    folder, paths = _store(tmp_path, train_assets, 2)
    _queue(folder, paths)
    p = _run(folder, "--retries", "1", env={"LIN_TEST_NAN_AT": "5"})
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads(p.stdout)
    # the NaN at step 5 comes back on every try: each file is tried twice, then parked
    assert rep["trained"] == [] and [x["item"] for x in rep["parked"]] == ["q00001", "q00002"]
    assert rep["retried"] == 2
    assert "failed 2 time(s)" in rep["parked"][0]["reason"] and "nan" in rep["parked"][0]["reason"].lower()
    repo = Repo.open(folder / ".lineage")
    assert list(repo.versions()) == ["v001_base"]  # nothing half-trained was published
    assert repo.refs.names("refs/runs/") == []  # the parked runs were given up
    kinds = [e.event["kind"] for e in Q.read_log(repo, "main") if e.event]
    assert kinds.count("retried") == 2 and kinds.count("parked") == 2


def test_a_machine_check_pauses_the_queue(tmp_path, train_assets):  # noqa: F811 - the fixture
    folder, paths = _store(tmp_path, train_assets, 2)
    _queue(folder, paths)
    p = lin_proc(folder, "run", *[a if a != "cpu" else "cuda" for a in RUN_ARGS], "--yes", "--json")
    assert p.returncode == 12, p.stdout + p.stderr
    rep = json.loads(p.stdout)
    assert rep["error"]["exit_code"] == 12 and "check 5" in rep["error"]["message"]
    q = Q.load(Repo.open(folder / ".lineage"), "main")
    assert q.paused and "device" in q.paused
    assert [i.status for i in q.items] == ["queued", "queued"]
    p = _run(folder)  # the next `lin run`, on the CPU, tries again and goes on
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(json.loads(p.stdout)["trained"]) == 2
    # a pause set by hand waits for `lin queue resume`
    repo = Repo.open(folder / ".lineage")
    Q.update(repo, "main", lambda q: __import__("dataclasses").replace(q, paused="disk swap"), "pause")
    p = _run(folder)
    assert p.returncode == 12 and "disk swap" in p.stderr


def test_files_per_version_trains_a_batch_into_one_version(tmp_path, train_assets):  # noqa: F811 - the fixture
    folder, paths = _store(tmp_path, train_assets, 3)
    _queue(folder, paths)
    p = _run(folder, "--files-per-version", "2", "--max-files", "2")
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads(p.stdout)
    assert [t["version"] for t in rep["trained"]] == ["v002_part_00_and_1_more"] and rep["stopped"] == "max-files"
    assert _lineage(folder)[0][1] == ["part_00.jsonl", "part_01.jsonl"]
    assert [v[0] for v in _statuses(folder).values()] == ["done", "done", "queued"]


def test_two_runners_on_one_branch_the_second_is_refused(tmp_path, train_assets):  # noqa: F811 - the fixture
    folder, paths = _store(tmp_path, train_assets, 2)
    _queue(folder, paths)
    pause = tmp_path / "paused"
    env = {**os.environ, "LIN_NO_PROGRESS": "1", "LIN_TEST_PAUSE_AT": "train-step:2", "LIN_TEST_PAUSE_FILE": str(pause)}
    env.pop("LIN_STORE", None)
    first = subprocess.Popen([sys.executable, "-m", "lineagestore.cli.main", "run", *RUN_ARGS, "--yes"], cwd=folder,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not pause.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = lin_proc(folder, "run", *RUN_ARGS, "--yes")
        assert second.returncode == 7, second.stderr
        assert "already trains branch 'main'" in second.stderr and f"pid {first.pid}" in second.stderr
        # another branch may run beside it (its queue is empty: it ends at once)
        assert lin_proc(folder, "branch", "side", "v001_base").returncode == 0
        other = lin_proc(folder, "run", *RUN_ARGS, "--yes", "--branch", "side")
        assert other.returncode == 0, other.stderr
    finally:
        pause.unlink(missing_ok=True)
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert [v for v, _, _ in _lineage(folder)] == ["v002_part_00", "v003_part_01"]


def test_kill_9_mid_loop_then_rerun_equals_uninterrupted(tmp_path, train_assets):  # noqa: F811 - the fixture
    ref_folder, ref_paths = _store(tmp_path / "ref", train_assets, 3)
    _queue(ref_folder, ref_paths)
    assert _run(ref_folder).returncode == 0
    reference = [(v, d, t) for v, d, t in _lineage(ref_folder)]
    folder, paths = _store(tmp_path / "k", train_assets, 3)
    _queue(folder, paths)
    kills = 0
    # killed during the second file's training, then between its publish and the queue update
    for at in ("train-step:14", "run-queue-done:2"):
        p = _run(folder, env={"LIN_TEST_KILL_AT": at})
        assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
        kills += 1
    p = _run(folder)
    assert p.returncode == 0, p.stdout + p.stderr
    assert _lineage(folder) == reference  # versions, their data and their weights, bit for bit
    assert {v[0] for v in _statuses(folder).values()} == {"done"}
    assert lin_proc(folder, "fsck", "--full").returncode == 0


def test_sigterm_checkpoints_and_exits_130_then_resumes(tmp_path, train_assets):  # noqa: F811 - the fixture
    folder, paths = _store(tmp_path, train_assets, 2)
    _queue(folder, paths)
    pause = tmp_path / "paused"
    env = {**os.environ, "LIN_NO_PROGRESS": "1", "LIN_TEST_PAUSE_AT": "train-step:4", "LIN_TEST_PAUSE_FILE": str(pause)}
    env.pop("LIN_STORE", None)
    proc = subprocess.Popen([sys.executable, "-m", "lineagestore.cli.main", "run", *RUN_ARGS, "--yes"], cwd=folder,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not pause.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        pause.unlink()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted at step 4" in err and "`lin run`" in err
    st = _statuses(folder)
    assert st["part_00.jsonl"][0] == "running" and "resumes" in (st["part_00.jsonl"][2] or "")
    p = _run(folder)
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads(p.stdout)
    assert [t["resumed_from"] for t in rep["trained"]] == [4, None]


@pytest.mark.slow
def test_inbox_queues_files_and_waits(tmp_path, train_assets):  # noqa: F811 - the fixture
    folder, _ = _store(tmp_path, train_assets, 0)
    inbox = folder / "inbox"
    inbox.mkdir()
    (folder / ".lineage" / "config.toml").open("a").write("\n[run]\ninbox_settle_s = 1.0\ninbox_poll_s = 0.2\n")
    env = {**os.environ, "LIN_NO_PROGRESS": "1"}
    env.pop("LIN_STORE", None)
    proc = subprocess.Popen([sys.executable, "-m", "lineagestore.cli.main", "run", *RUN_ARGS, "--yes", "--json",
                             "--inbox", str(inbox)], cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        src = _files(tmp_path, 1)[0]
        lines = src.read_text().splitlines(keepends=True)

        def slow_copy():
            with open(inbox / "slow.jsonl", "w") as f:
                for line in lines:
                    f.write(line)
                    f.flush()
                    time.sleep(0.3)
        t = threading.Thread(target=slow_copy)
        t.start()
        t.join()
        deadline = time.monotonic() + 200
        while not _lineage(folder):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    rep = json.loads(out)
    assert [t["files"] for t in rep["trained"]] == [[str(inbox / "slow.jsonl")]]
    # it was queued once, complete: its version trained every line
    repo = Repo.open(folder / ".lineage")
    assert repo.commit(repo.head()).metrics["tokens_trained"] > 0
    assert [i.examples for i in Q.load(repo, "main").items] == [len(lines)]


@pytest.mark.slow
def test_two_processes_under_gloo(tmp_path, train_assets):  # noqa: F811 - the fixture
    """`lin run --gpus 2` trains each file on two processes (gloo on the CPU); rank 0 publishes."""
    folder, paths = _store(tmp_path, train_assets, 2)
    _queue(folder, paths)
    p = _run(folder, "--gpus", "2", env={"OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads(p.stdout)
    assert [t["version"] for t in rep["trained"]] == ["v002_part_00", "v003_part_01"]
    repo = Repo.open(folder / ".lineage")
    assert repo.commit(repo.head()).metrics["world_size"] == 2
    assert repo.commit(repo.head()).parents == [repo.resolve("v002_part_00")]
    assert repo.refs.names("refs/runs/") == [] and {v[0] for v in _statuses(folder).values()} == {"done"}


def test_a_loss_past_the_bound_fails_the_run_and_parks_the_file(tmp_path, train_assets):  # noqa: F811
    folder, paths = _store(tmp_path, train_assets, 1)
    _queue(folder, paths)
    with open(folder / ".lineage" / "config.toml", "a") as f:
        f.write("\n[run]\nmax_loss_ratio = 1.0001\n")
    args = [a if a != "1e-3" else "20" for a in RUN_ARGS]  # a learning rate that makes the loss climb
    p = lin_proc(folder, "run", *args, "--yes", "--json", "--retries", "0")
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads(p.stdout)
    assert rep["trained"] == [] and len(rep["parked"]) == 1
    reason = rep["parked"][0]["reason"]
    assert "training failed 1 time(s)" in reason and ("grew to" in reason or "nan" in reason.lower()), reason
    assert list(Repo.open(folder / ".lineage").versions()) == ["v001_base"]


def test_with_an_inbox_a_pause_waits_or_is_tried_again(tmp_path, train_assets):  # noqa: F811 - the fixture
    """With --inbox the runner never stops on a pause: one set by hand waits for `lin queue resume`;
    one the runner set (a machine check) is tried again after run.paused_recheck_s."""
    import dataclasses

    from lineagestore.api import Repo as ApiRepo
    from lineagestore.runner import RunOptions, run
    from lineagestore.train.settings import TrainSettings
    folder, paths = _store(tmp_path, train_assets, 1)
    _queue(folder, paths)
    with open(folder / ".lineage" / "config.toml", "a") as f:
        f.write("\n[run]\npaused_recheck_s = 0.3\ninbox_poll_s = 0.05\n")
    (folder / "inbox").mkdir()
    repo = ApiRepo.open(folder / ".lineage")
    settings = TrainSettings.build({"device": "cpu", "batch_size": 2, "seq_len": 32, "lr": 1e-3,
                                    "checkpoint_every": 3})
    opts = RunOptions(settings=settings, inbox=folder / "inbox")

    def pause(reason):
        Q.update(repo, "main", lambda q: dataclasses.replace(q, paused=reason), "pause")
    pause("disks swapped by hand")
    looks = []
    rep = run(repo, opts, stop=lambda: len(looks) > 20, sleep=lambda s: looks.append(s))
    assert rep.trained == [] and rep.stopped == "stopped"  # waited, looking at the inbox
    assert Q.load(repo, "main").paused == "disks swapped by hand"
    pause("lin run: check 4 (enough disk space): 0.1 GB free, about 0.5 GB needed")

    def done() -> bool:
        return all(i.status == "done" for i in Q.load(repo, "main").items)
    rep = run(repo, opts, stop=done, sleep=time.sleep)
    assert [t.version for t in rep.trained] == ["v002_part_00"]
    events = [e.event for e in Q.read_log(repo, "main") if e.event]
    assert {"kind": "resumed", "reason": "lin run: check 4 (enough disk space): 0.1 GB free, about 0.5 GB needed"} \
        in events


def test_a_version_whose_backup_was_killed_is_backed_up_by_the_next_run(tmp_path, train_assets):  # noqa: F811
    folder, paths = _store(tmp_path, train_assets, 1)
    _queue(folder, paths)
    remote = tmp_path / "remote"
    assert lin_proc(folder, "remote", "add", "origin", str(remote), "--backup").returncode == 0
    args = [a if a != "3" else "1000" for a in RUN_ARGS]  # one checkpoint (step 0): its backup is the 1st
    p = lin_proc(folder, "run", *args, "--yes", env={"LIN_TEST_KILL_AT": "backup:2"})  # the version's
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert [v for v, _, _ in _lineage(folder)] == ["v002_part_00"]  # published, not backed up
    assert not (remote / "refs" / "tags" / "v002_part_00").exists()
    p = lin_proc(folder, "run", *args, "--yes", "--json")
    assert p.returncode == 0, p.stderr
    assert [t["version"] for t in json.loads(p.stdout)["trained"]] == ["v002_part_00"]
    assert (remote / "refs" / "tags" / "v002_part_00").is_file()
    assert _statuses(folder)["part_00.jsonl"][:2] == ("done", "v002_part_00")
