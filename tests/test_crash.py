"""Crash safety with real processes: SIGKILL at kill points and random moments; full disks.

The rounds come from benchmarks/crash.py (which runs 500+ of them); here a few dozen run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import enospc_at_fsync, make_model_dir
from test_guard_helpers import ROOT, folder_bytes, run_lin, version_bytes
from test_train_support import train_assets  # noqa: F401 - the fixture (tiny model, data files)

from lineagestore import Repo
from lineagestore.guard import gc
from lineagestore.guard.fsck import check

sys.path.insert(0, str(ROOT / "benchmarks"))
import crash  # noqa: E402


@pytest.mark.slow
def test_sigkill_commit_checkout_and_gc_at_random_points(tmp_path):
    lab = crash.Lab(tmp_path / "lab", seed=11)
    lab.setup()
    schedule = ["commit"] * 12 + ["checkout"] * 7 + ["gc"] * 10 + ["gc-empty"] * 4
    lab.rng.shuffle(schedule)
    for kind in schedule:
        if kind == "commit":
            lab.round_commit()
        elif kind == "checkout":
            lab.round_checkout()
        else:
            lab.round_gc(empty=kind == "gc-empty")
    lab.final_check()
    s = lab.stats
    assert s["kills"] >= 18, dict(s)  # rounds whose random kill point lies past the end finish unkilled
    assert s["commit kills"] and s["gc kills"] and s["checkout kills"], dict(s)
    assert s["killed commits absent"] + s["killed commits complete"] == s["commit kills"]


@pytest.mark.slow
@pytest.mark.skipif(not crash.data_add_available(),
                    reason="`lin data add` does not exist yet (lineagestore/cli/data_cmd.py is missing)")
def test_sigkill_data_add_at_random_points(tmp_path):
    lab = crash.Lab(tmp_path / "lab", seed=12)
    lab.setup()
    for _ in range(6):
        lab.round_data_add()
    assert lab.stats["data-add kills"] >= 3, dict(lab.stats)


@pytest.mark.slow
@pytest.mark.parametrize("kind", crash.REMOTE_SCENARIOS)
def test_sigkill_push_fetch_pull_and_clone_at_random_points(tmp_path, kind):
    """Each round: a kill at a random kill point of the store's or the folder remote's writes; then
    the store it wrote passes fsck --full with every version byte-exact, the remote passes verify
    --full, and the command run again completes (benchmarks/crash.py runs hundreds of these)."""
    lab = crash.Lab(tmp_path / "lab", seed=21, scenarios=crash.REMOTE_SCENARIOS, delay_share=0)
    lab.cli_every = 3
    lab.setup()
    for _ in range(5):
        if kind == "push":
            lab.round_push()
        elif kind == "clone":
            lab.round_clone()
        else:
            lab.round_fetch(kind)
    lab.final_check()
    s = lab.stats
    assert s[f"{kind} kills"] >= 3, dict(s)
    assert s["remote checks (verify --full)"] >= 5 and s["remote checks through `lin verify --full`"] >= 1


def test_leftovers_of_a_kill_are_notes_and_the_next_writer_recovers_them(repo, tmp_path):
    repo.import_model(make_model_dir(tmp_path / "a", seed=1), "a")
    folder = make_model_dir(tmp_path / "b", seed=2)
    r = run_lin(repo.path, "commit", str(folder), "--name", "b", env={"LIN_TEST_KILL_AT": "write:2"})
    assert r.returncode == -9
    assert any((repo.path / "tmp").iterdir())  # the temp file of the write it was killed in
    records = list((repo.path / "locks").glob("*.holders/*.json"))
    assert records  # the killed process never removed its lock record ...
    f = run_lin(repo.path, "fsck")
    assert f.returncode == 0 and "note: tmp/" in f.stdout and "lock record" in f.stdout
    r = run_lin(repo.path, "commit", str(folder), "--name", "b", env={"LIN_LOCK_TIMEOUT": "5"})
    assert r.returncode == 0, r.stderr  # ... and the lock was free at once (the kernel released it)
    assert not any((repo.path / "tmp").iterdir())
    assert not any(p for p in (repo.path / "locks").glob("*.holders/*.json"))


def test_a_killed_checkout_leaves_no_conflicts_and_its_temp_files_go(repo, tmp_path):
    a = make_model_dir(tmp_path / "a", seed=1)
    b = make_model_dir(tmp_path / "b", seed=2)
    repo.import_model(a, "a")
    repo.commit_folder(b, "b")
    assert run_lin(repo.path, "checkout", "v001").returncode == 0
    r = run_lin(repo.path, "checkout", "v002", env={"LIN_TEST_KILL_AT": "write:1"})
    assert r.returncode == -9
    work = repo.path.parent / "model"
    assert any(p.name.startswith(".lin-tmp-") for p in work.iterdir())
    assert check(Repo.open(repo.path)).ok
    r = run_lin(repo.path, "checkout", "v002")  # no --force needed
    assert r.returncode == 0, r.stderr
    assert folder_bytes(work) == folder_bytes(b)


def _incompressible_model(path: Path, nbytes: int, seed: int) -> Path:
    from safetensors.numpy import save_file
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    save_file({"w": rng.integers(0, 2**31, nbytes // 4, dtype=np.int32)}, str(path / "model.safetensors"))
    (path / "config.json").write_text("{}")
    return path


def test_full_disk_on_a_small_tmpfs_fails_cleanly(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a 1 MB tmpfs here (needs root and mount): {r.stderr.strip()}; "
                    "test_injected_enospc_at_every_write covers ENOSPC without a mount")
    try:
        store = mnt / ".lineage"
        small = _incompressible_model(tmp_path / "small_model", 100_000, 1)
        assert run_lin(store, "init").returncode == 0
        assert run_lin(store, "import", str(small), "--name", "base").returncode == 0
        big = _incompressible_model(tmp_path / "big_model", 2_000_000, 2)
        r = run_lin(store, "commit", str(big), "--name", "big")
        assert r.returncode == 9, r.stderr
        assert "no space left on device" in r.stderr and "Traceback" not in r.stderr
        f = run_lin(store, "fsck", "--full")
        assert f.returncode == 0, f.stdout
        repo = Repo.open(store)
        assert version_bytes(repo, "v001") == folder_bytes(small)
        assert not any((store / "tmp").iterdir())
        assert [n for n in repo.versions()] == ["v001_base"]
        # the space the failed commit used comes back with gc, then a commit that fits succeeds
        assert run_lin(store, "gc", "--confirm", "--grace", "0").returncode == 0
        assert run_lin(store, "gc", "--confirm", "--grace", "0", "--empty-trash").returncode == 0
        fits = _incompressible_model(tmp_path / "fits", 100_000, 3)
        r = run_lin(store, "commit", str(fits), "--name", "fits")
        assert r.returncode == 0, r.stderr
        assert run_lin(store, "fsck").returncode == 0
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_injected_enospc_at_every_write(lin, store_dir, monkeypatch):
    """ENOSPC at the k-th file fsync of a commit, for every k: exit 9, a consistent store, the
    earlier version intact, no temp file left; the version is absent or complete."""
    base = make_model_dir(store_dir / "a", seed=1)
    new = make_model_dir(store_dir / "b", seed=2)
    assert lin("import", str(base), "--name", "a")[0] == 0
    pristine = store_dir / "pristine"
    shutil.copytree(store_dir / ".lineage", pristine, symlinks=True)
    real_fsync = os.fsync
    outcomes = []
    for k in range(1, 40):
        store = store_dir / f"s{k}"
        shutil.copytree(pristine, store, symlinks=True)
        monkeypatch.setenv("LIN_STORE", str(store))
        monkeypatch.setattr(os, "fsync", enospc_at_fsync(k))
        code, out, err = lin("commit", str(new), "--name", "b")
        monkeypatch.setattr(os, "fsync", real_fsync)
        repo = Repo.open(store)
        assert code in (0, 9), err
        if code == 9:
            assert "no space left on device" in err
        rep = check(repo)
        assert rep.ok, [p.message for p in rep.problems]
        assert version_bytes(repo, "v001") == folder_bytes(base)
        assert not any((store / "tmp").iterdir())
        if "v002_b" in repo.versions():
            assert version_bytes(repo, "v002") == folder_bytes(new)
        outcomes.append((code, "v002_b" in repo.versions()))
        shutil.rmtree(store)
        if code == 0:
            break
    assert outcomes[-1] == (0, True), "the commit must succeed once no fsync fails"
    assert sum(1 for c, _ in outcomes if c == 9) >= 8
    assert (9, False) in outcomes


# ----------------------------------------------------------------------------- ENOSPC: checkout, gc, data add, checkpoints
# A full disk at every point of a command: exit 9 with one line, nothing half-written, the store
# consistent, nothing lost, and the same command completes once there is space.


def _files_state(folder: Path) -> dict[str, bytes]:
    return folder_bytes(folder) if folder.exists() else {}


def test_enospc_during_checkout_leaves_whole_files_and_an_intact_store(lin, store_dir, monkeypatch):
    a = make_model_dir(store_dir / "a", seed=1)
    b = make_model_dir(store_dir / "b", seed=2, n_layers=5)
    assert lin("import", str(a), "--name", "a")[0] == 0
    assert lin("commit", str(b), "--name", "b")[0] == 0
    assert lin("checkout", "v001")[0] == 0
    work = store_dir / "model"
    old, new = folder_bytes(a), folder_bytes(b)
    real_fsync = os.fsync
    seen = []
    for k in range(1, 12):
        assert lin("checkout", "v001", "--force")[0] == 0
        monkeypatch.setattr(os, "fsync", enospc_at_fsync(k))
        code, _, err = lin("checkout", "v002")
        monkeypatch.setattr(os, "fsync", real_fsync)
        seen.append(code)
        assert code in (0, 9), err
        if code == 9:
            assert "no space left on device" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
        # every file in the work folder is the old one or the new one, whole; no temp file stays
        for rel, data in folder_bytes(work).items():
            assert data in (old.get(rel), new.get(rel)), rel
        assert not [p for p in work.rglob("*") if p.name.startswith(".lin-tmp-")]
        rep = check(Repo.open(store_dir / ".lineage"))
        assert rep.ok, [p.message for p in rep.problems]
        if code == 0:
            assert folder_bytes(work) == new
            break
        # the same checkout, with space again, completes it
        assert lin("checkout", "v002")[0] == 0 and folder_bytes(work) == new
    assert 9 in seen and seen[-1] == 0
    # a checkout --to a new folder that fails leaves whole files only, and runs again to the end
    for k in (1, 3):
        dest = store_dir / f"out{k}"
        monkeypatch.setattr(os, "fsync", enospc_at_fsync(k))
        code, _, err = lin("checkout", "v002", "--to", str(dest))
        monkeypatch.setattr(os, "fsync", real_fsync)
        assert code == 9 and err.startswith("error: no space left on device while writing "), err
        assert len(err.strip().splitlines()) <= 2 and "Traceback" not in err, err
        assert all(data == new[rel] for rel, data in _files_state(dest).items())
        assert not [p for p in dest.rglob("*") if p.name.startswith(".lin-tmp-")]
        assert lin("checkout", "v002", "--to", str(dest))[0] == 0 and folder_bytes(dest) == new


def _enospc_at_mkdir(k: int, under: str):
    """An os.mkdir that fails with ENOSPC at its k-th call for a path containing ``under`` (a new
    folder needs a block too)."""
    import errno
    real_mkdir = os.mkdir
    calls = [0]

    def failing_mkdir(path, *a, **kw):
        if under in str(path):
            calls[0] += 1
            if calls[0] == k:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_mkdir(path, *a, **kw)

    return failing_mkdir


def test_enospc_during_gc_loses_nothing(lin, repo, tmp_path, monkeypatch):
    from test_guard_helpers import lineage
    four = lineage(repo, tmp_path)
    v3 = repo.resolve("v003")
    repo.rm("v003_syllo_reasoning", force=True, confirm_lineage=True, confirm_name="v003_syllo_reasoning")
    repo.config.set("gc.reflog_expire_days", 0)
    repo.save_config()
    before = set(repo.objects.iter_ids())
    gone = set(gc.plan(repo, grace_s=0).order)
    assert v3 in gone and len(gone) >= 5
    trash = repo.path / "trash"

    def trashed() -> set[str]:
        return {p.parent.name + p.name for p in trash.rglob("*") if p.is_file() and p.name != "manifest.json"}

    # the trash batch's folders: the batch itself, then one per object folder; a full disk at any
    # of them stops gc half-way with every object in objects/ or in trash/, folders read-only
    for k in (1, 2, 4):
        with monkeypatch.context() as m:
            m.setattr(os, "mkdir", _enospc_at_mkdir(k, "trash"))
            code, _, err = lin("gc", "--confirm", "--grace", "0")
        assert code == 9, err
        assert "no space left on device" in err and "Traceback" not in err
        r = Repo.open(repo.path)
        rep = check(r)
        assert rep.ok, [p.message for p in rep.problems]
        now_here = set(r.objects.iter_ids())
        assert now_here | trashed() == before and not now_here & trashed()  # nothing lost, nothing twice
        assert before - gone <= now_here  # nothing reachable moved
        assert all(not d.stat().st_mode & 0o222 for d in (repo.path / "objects").iterdir())
    assert trashed() and v3 in trashed() | set(Repo.open(repo.path).objects.iter_ids())
    # a full disk while writing the manifest only drops the manifest: the objects still move
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", enospc_at_fsync(1))
        code, out, err = lin("gc", "--confirm", "--grace", "0")
    assert code == 0, err
    r = Repo.open(repo.path)
    assert check(r).ok and set(r.objects.iter_ids()) == before - gone and trashed() == gone
    # and everything comes back from the batches, byte for byte
    code, out, err = lin("restore", "v003_syllo_reasoning")
    assert code == 0, err
    r = Repo.open(repo.path)
    assert version_bytes(r, "v003") == folder_bytes(Path(four["v003_syllo_reasoning"]))
    assert set(r.objects.iter_ids()) == before and check(r).ok


def test_enospc_during_data_add_leaves_no_objects_and_the_registry_unchanged(lin, store_dir, monkeypatch):
    import json
    first = store_dir / "first.jsonl"
    first.write_text("".join(json.dumps({"text": f"first {i}"}) + "\n" for i in range(50)))
    data = store_dir / "more.jsonl"
    data.write_text("".join(json.dumps({"text": f"record {i} " + "x" * (i % 50)}) + "\n" for i in range(3000)))
    assert lin("data", "add", str(first), "--no-tokens")[0] == 0
    store = store_dir / ".lineage"
    repo = Repo.open(store)
    objects, refs = set(repo.objects.iter_ids()), repo.refs.as_dict("refs/data/")
    listing = lin("data", "ls", "--json")[1]
    reflogs = repo.refs.reflog_names()
    logs = {n: repo.refs.reflog(n) for n in reflogs}
    seen: list[int] = []
    failed_in: list[str] = []
    for k in range(1, 30):
        with monkeypatch.context() as m:
            m.setattr(os, "fsync", enospc_at_fsync(k))
            code, _, err = lin("data", "add", str(data), "--no-tokens")
        seen.append(code)
        assert code in (0, 9), err
        repo = Repo.open(store)
        if code == 0:
            assert len(repo.refs.as_dict("refs/data/")) == 2
            break
        assert "no space left on device" in err and "Traceback" not in err
        # the registry, and the reflog, as they were: no record of a registration that did not happen
        assert repo.refs.as_dict("refs/data/") == refs and lin("data", "ls", "--json")[1] == listing
        assert repo.refs.reflog_names() == reflogs and all(repo.refs.reflog(n) == logs[n] for n in reflogs)
        assert not any((store / "tmp").iterdir())
        left = set(repo.objects.iter_ids()) - objects
        in_ref = "/.lineage/refs/" in err or "/.lineage/logs/" in err
        assert in_ref or not left, "a data add that fails while storing leaves no object behind"
        # only a failure of the final ref write leaves the (complete) objects: nothing names them,
        # and gc takes exactly them (removing them here could race a writer that stores them too)
        assert set(gc.plan(repo, grace_s=0).order) == left
        rep = check(repo)
        assert rep.ok, [p.message for p in rep.problems]
        failed_in.append("ref" if in_ref else "objects")
    assert seen[-1] == 0 and failed_in.count("objects") >= 3 and "ref" in failed_in, failed_in
    code, out, _ = lin("data", "check", str(data), "--json")
    assert code == 0 and json.loads(out)


@pytest.mark.parametrize("full", ["once", "until the end"])
def test_enospc_at_a_checkpoint_stops_training_resumable_from_the_previous_one(tmp_path, lin, monkeypatch, full,
                                                                                train_assets):  # noqa: F811
    """A full disk while a checkpoint is written: training stops (exit 9) rather than train on
    with nothing durable to fall back on; the run keeps its previous checkpoint (marked failed, or,
    when not even that fits, left as a stopped run), nothing of the failed one stays, and
    `lin train --resume` continues from that checkpoint once there is space."""
    import json

    from test_train_support import TRAIN_ARGS, final_state, new_store

    import lineagestore.train.trainer as T
    folder = new_store(tmp_path / "w", train_assets)
    monkeypatch.chdir(folder)
    store = folder / ".lineage"
    real_save, real_fsync = T.save_state, os.fsync
    calls = [0]

    def save_state(*a, **kw):  # checkpoints at steps 0, 5, 10: the disk fills during the third
        calls[0] += 1
        if calls[0] == 3:
            monkeypatch.setattr(os, "fsync", enospc_at_fsync(1) if full == "once" else _enospc_always(real_fsync))
        return real_save(*a, **kw)

    monkeypatch.setattr(T, "save_state", save_state)
    code, out, err = lin("train", "--data", "bible.jsonl", "--name", "bible", *TRAIN_ARGS, "--no-measure", "--yes")
    monkeypatch.setattr(os, "fsync", real_fsync)
    monkeypatch.setattr(T, "save_state", real_save)
    assert code == 9, err
    assert "no space left on device" in err and "Traceback" not in err and "lin train --resume" in err
    repo = Repo.open(store)
    assert list(repo.versions()) == ["v001_base"]
    code, out, _ = lin("runs", "--json")
    (run,) = json.loads(out)
    assert run["name"] == "bible" and run["step"] == 5, run
    if full == "once":
        assert run["status"] == "failed" and "no space left on device" in run["error"], run
    else:
        assert run["status"] == "stopped" and "could not record the failure" in out + err, run
    assert not any((store / "tmp").iterdir())
    rep = check(repo)
    assert rep.ok, [p.message for p in rep.problems]
    code, out, err = lin("train", "--resume", "--run", "bible", "--device", "cpu", "--yes")
    assert code == 0, err
    assert "from step 5" in out + err
    tree, losses, metrics = final_state(folder)
    assert metrics["steps"] == 16 and len(losses) == 16 and metrics["sessions"] == 2
    assert check(Repo.open(store)).ok



def _enospc_always(real_fsync):
    """An os.fsync that fails with ENOSPC for every regular file (a disk that stays full)."""
    import errno
    import stat

    def failing_fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    return failing_fsync


@pytest.mark.slow
def test_sigkill_lin_run_in_every_phase_loses_nothing(tmp_path):
    """`lin run` killed in the train step, the checkpoint, the publish, the backup and the queue
    update: every cycle ends with the lineage of an uninterrupted run (weights bit for bit), each
    file trained once, all backed up, `fsck --full` clean (benchmarks/crash_run.py runs 200+)."""
    import crash_run
    lab = crash_run.RunLab(tmp_path / "lab", seed=5, files=2)
    lab.setup()
    for phase, points in crash_run.PHASES.items():  # one kill in each phase, then the cycle ends
        folder = lab.new_cycle(f"cycle-{phase.replace(' ', '-')}")
        label = points[0][0]
        p = lab.lin(folder, "run", *crash_run.RUN_ARGS, "--yes", kill_at=f"{label}:2")
        assert p.returncode == -9, (phase, p.stderr[-800:])
        lab.check_store(folder, phase)
        p = lab.lin(folder, "run", *crash_run.RUN_ARGS, "--yes")
        assert p.returncode == 0, p.stderr[-800:]
        lab.check_cycle(folder)
    assert lab.stats["cycles checked"] == len(crash_run.PHASES)


@pytest.mark.slow
def test_sigkill_of_a_training_run_keeps_the_series_of_its_last_checkpoint(tmp_path, train_assets):  # noqa: F811
    """kill -9 in a step, between a checkpoint's objects and its ref, and in the commit: the series
    named by the run's last checkpoint holds exactly its steps, and the resumed run's version holds
    every step of an uninterrupted run, the same bit for bit (CPU)."""
    from test_train_support import TRAIN_ARGS, lin_proc, new_store

    from lineagestore.train.checkpoint import latest
    from lineagestore.train.series import read_series, series_of_state
    args = ["train", "--data", "bible.jsonl", "--name", "bible", *TRAIN_ARGS, "--no-measure", "--yes"]
    ref = new_store(tmp_path / "ref", train_assets)
    lin_proc(ref, *args, check=True)
    want = Repo.open(ref / ".lineage").series("HEAD")
    assert want.step.tolist() == list(range(1, 17))
    # (label, hit): step 7; after the objects of the step-10 checkpoint (its ref still at step 5);
    # in the commit after the last step
    for label, hit, kept_step in (("train-step", 7, 5), ("train-checkpoint", 3, 5), ("train-commit", 1, 15)):
        folder = new_store(tmp_path / f"{label}-{hit}", train_assets)
        p = lin_proc(folder, *args, env={"LIN_TEST_KILL_AT": f"{label}:{hit}"})
        assert p.returncode == -9, (label, p.stderr[-500:])
        repo = Repo.open(folder / ".lineage")
        ck = latest(repo, "bible")
        assert ck is not None and ck.step == kept_step, (label, ck)
        kept = read_series(repo.objects, series_of_state(repo.objects, ck.state) or "")
        assert kept.step.tolist() == list(range(1, kept_step + 1)), label
        assert kept.loss.tobytes() == want.loss[:kept_step].tobytes(), label
        assert check(repo).ok, label
        lin_proc(folder, "train", "--resume", "--device", "cpu", "--yes", check=True)
        got = Repo.open(folder / ".lineage").series("HEAD")
        for name in ("step", "tokens", "loss", "lr", "grad_norm"):
            assert getattr(got, name).tobytes() == getattr(want, name).tobytes(), (label, name)
