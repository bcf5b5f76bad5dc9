"""One store lock: writers share it, gc holds it exclusively; waiting commands say who holds it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import make_model_dir
from test_guard_helpers import folder_bytes, run_lin, spawn_lin, version_bytes

from lineagestore import Repo
from lineagestore.core.fsutil import FileLock
from lineagestore.guard.fsck import check


@pytest.fixture
def based(repo, tmp_path):
    repo.import_model(make_model_dir(tmp_path / "base", seed=0), "base")
    repo.config.set("gc.reflog_expire_days", 0)  # gc may take anything no ref names
    repo.save_config()
    return repo


@pytest.mark.slow
def test_sixteen_concurrent_committers_beside_gc_lose_nothing(based, tmp_path):
    folders = [make_model_dir(tmp_path / f"m{i}", seed=100 + i) for i in range(16)]
    procs = [spawn_lin(based.path, "commit", str(f), "--name", f"c{i}") for i, f in enumerate(folders)]
    gcs = [spawn_lin(based.path, "gc", "--confirm", "--grace", "0") for _ in range(2)]
    results = [(p.communicate(timeout=300), p.returncode) for p in procs + gcs]
    assert all(rc == 0 for _, rc in results[16:]), [err for (_, err), rc in results[16:] if rc]
    # a committer whose branch moved meanwhile keeps its version and says so (exit 6), never
    # moving the branch sideways onto its own line
    committed = [rc for _, rc in results[:16]]
    assert set(committed) <= {0, 6} and 0 in committed, [err for (_, err), rc in results[:16] if rc not in (0, 6)]
    for (_, err), rc in results[:16]:
        if rc == 6:
            assert "was committed, but main moved to" in err and "lin branch NAME" in err, err
    repo = Repo.open(based.path)
    versions = repo.versions()
    assert len(versions) == 17
    numbers = sorted(int(n[1:4]) for n in versions)
    assert numbers == list(range(1, 18))  # distinct numbers, none lost, none reused
    for i, f in enumerate(folders):
        (name,) = [n for n in versions if n.endswith(f"_c{i}")]
        assert version_bytes(repo, name) == folder_bytes(f)
    # `lin log` reaches every version on main and names how many are on no branch
    log = run_lin(repo.path, "log").stdout
    line, _, side = log.partition("Versions on no branch")
    on_line = [n for n in versions if n in line]
    side_count = int(side.split(")")[0].strip(" (")) if side else 0
    assert len(on_line) + side_count == 17 and side_count == committed.count(6), log
    assert check(repo).ok
    assert run_lin(repo.path, "audit", "--verify").returncode == 0


def test_a_waiting_command_says_who_holds_the_lock_then_times_out(based, tmp_path):
    folder = make_model_dir(tmp_path / "m", seed=7)
    lock = FileLock(based.path / "locks" / "store.lock")
    lock.acquire("exclusive")
    try:
        # it waits (the message below is printed after a second of waiting), then times out
        r = run_lin(based.path, "commit", str(folder), "--name", "late", env={"LIN_LOCK_TIMEOUT": "2"})
    finally:
        lock.release()
    import os
    assert r.returncode == 8
    assert f"waiting for the store lock, held by pid {os.getpid()}" in r.stderr
    assert "exclusive, since" in r.stderr
    assert "timed out after 2s" in r.stderr and f"pid {os.getpid()}" in r.stderr.split("timed out")[1]
    assert "late" not in " ".join(Repo.open(based.path).versions())

    lock.acquire("exclusive")
    p = spawn_lin(based.path, "commit", str(folder), "--name", "late")
    try:
        _stderr_until(p, "waiting for the store lock")
    finally:
        lock.release()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err  # it went on once the lock was free


def _stderr_until(proc, text: str, timeout: float = 120) -> str:
    """Read ``proc``'s stderr until ``text`` appears (the process keeps running)."""
    import os
    import select
    seen = b""
    deadline = time.monotonic() + timeout
    fd = proc.stderr.fileno()
    while text.encode() not in seen:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"never printed {text!r}: {seen.decode(errors='replace')[-500:]}")
        if select.select([fd], [], [], 0.2)[0]:
            seen += os.read(fd, 4096)
    return seen.decode(errors="replace")


def _wait_for(path: Path, proc, timeout: float = 60) -> None:
    """Wait until ``proc`` reaches its pause point (it creates ``path``)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"never reached the pause point: {proc.communicate()[1][-500:]}")
        time.sleep(0.02)


def test_gc_beside_a_commit_never_deletes_the_commits_new_objects(based, tmp_path):
    """A commit is paused after storing some objects (nothing names them yet); gc --grace 0
    must wait for it instead of taking them."""
    folder = make_model_dir(tmp_path / "m", seed=9)
    flag = tmp_path / "paused"
    commit = spawn_lin(based.path, "commit", str(folder), "--name", "slow",
                       env={"LIN_TEST_PAUSE_AT": "write:3", "LIN_TEST_PAUSE_FILE": str(flag)})
    _wait_for(flag, commit)
    gc_proc = spawn_lin(based.path, "gc", "--confirm", "--grace", "0")
    waiting = _stderr_until(gc_proc, "waiting for the store lock")  # gc must wait for the commit
    flag.unlink()
    c_out, c_err = commit.communicate(timeout=120)
    g_out, g_err = gc_proc.communicate(timeout=120)
    assert commit.returncode == 0, c_err
    assert gc_proc.returncode == 0, waiting + g_err
    g_err = waiting + g_err
    assert f"held by pid {commit.pid}" in g_err and "commit" in g_err
    repo = Repo.open(based.path)
    assert version_bytes(repo, "v002") == folder_bytes(folder)
    assert check(repo).ok


def test_a_commit_waits_while_gc_holds_the_lock(based, tmp_path):
    repo = based
    v2 = repo.commit_folder(make_model_dir(tmp_path / "m2", seed=2), "second")
    repo.commit_folder(make_model_dir(tmp_path / "m3", seed=3), "third", parents=[repo.resolve("v001")])
    repo.rm("v002", force=True, confirm_lineage=True, confirm_name=v2.name)  # a leaf: gc has work
    flag = tmp_path / "paused"
    gc_proc = spawn_lin(repo.path, "gc", "--confirm", "--grace", "0",
                        env={"LIN_TEST_PAUSE_AT": "gc-move:1", "LIN_TEST_PAUSE_FILE": str(flag)})
    _wait_for(flag, gc_proc)
    folder = make_model_dir(tmp_path / "m4", seed=4)
    commit = spawn_lin(repo.path, "commit", str(folder), "--name", "fourth")
    waiting = _stderr_until(commit, "waiting for the store lock")  # a commit waits while gc works
    flag.unlink()
    assert gc_proc.wait(120) == 0
    out, err = commit.communicate(timeout=120)
    err = waiting + err
    assert commit.returncode == 0, err
    assert f"held by pid {gc_proc.pid}" in err and "gc --confirm" in err
    repo = Repo.open(repo.path)
    assert version_bytes(repo, "v004") == folder_bytes(folder)
    assert check(repo).ok
