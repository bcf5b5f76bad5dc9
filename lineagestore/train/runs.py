"""Training runs: ``refs/runs/<run>`` while a run is unfinished, its status, abandoning it.

A run's ref exists from its first checkpoint until the run is committed (the ref is deleted in
the same command that writes the version) or abandoned (``lin runs abandon``). While it exists,
gc keeps its last ``train.keep_checkpoints`` checkpoints; afterwards only its last one, through
the ref's reflog until that expires (guard.reachability.run_retention). A process training a run
holds ``locks/run-<run>.lock``: a run whose checkpoint says "running" but whose lock is free was
killed and can be resumed.
"""

from __future__ import annotations

import signal
import socket
import threading
from dataclasses import asdict, dataclass, field

from ..core.errors import Conflict, NotFound, Refused
from ..core.fsutil import FileLock, pid_alive
from ..core.names import check_name
from ..core.repo import Repo
from .checkpoint import FAILED, INTERRUPTED, RUNNING, RUNS_PREFIX, read_checkpoint, run_ref

#: run status shown by ``lin runs``
LIVE, STOPPED = "training", "stopped"


@dataclass
class RunInfo:
    name: str
    checkpoint: str
    status: str  # training | interrupted | failed | stopped (killed: process gone)
    step: int
    total_steps: int | None
    base: str | None
    base_name: str | None
    output: str | None
    datasets: list = field(default_factory=list)
    data_paths: list = field(default_factory=list)
    updated: str = ""
    tokens_trained: int = 0
    error: str | None = None
    pid: int | None = None
    host: str | None = None
    settings: dict = field(default_factory=dict)
    allow_overlap: bool = False  # started with --allow-overlap: it trains its data whole, resumed too

    def to_dict(self) -> dict:
        return asdict(self)


def run_lock(repo: Repo, run: str) -> FileLock:
    check_name(run, "run name")
    assert repo.path is not None
    return FileLock(repo.path / "locks" / f"run-{run}.lock")


def is_live(repo: Repo, run: str, meta: dict | None = None) -> bool:
    """True when a process holds the run's lock (it is training now)."""
    if repo.path is None:
        return False
    lock = run_lock(repo, run)
    if lock.take_now() is not None:
        return True
    lock.release()
    return False


def hold_run(repo: Repo, run: str) -> FileLock | None:
    """Take the run's lock for the life of a training process; Conflict if another holds it."""
    if repo.path is None:
        return None
    lock = run_lock(repo, run)
    who = lock.take_now()
    if who is not None:
        raise Conflict(f"run {run!r} is being trained right now by {who}",
                       hint="wait for it to finish, or stop that process first")
    return lock


def info(repo: Repo, name: str) -> RunInfo:
    cid = repo.refs.resolve(run_ref(name))
    if cid is None:
        raise NotFound(f"no unfinished run named {name!r}", hint="list runs with `lin runs`")
    ck = read_checkpoint(repo, cid)
    m = ck.meta
    status = str(m.get("status", RUNNING))
    if status == RUNNING:
        status = LIVE if is_live(repo, name) else STOPPED
    base = m.get("base")
    return RunInfo(
        name=name, checkpoint=cid, status=status, step=ck.step, total_steps=m.get("total_steps"),
        base=base, base_name=(repo.name_of(base) if base else None), output=m.get("output"),
        datasets=list(m.get("datasets", [])), data_paths=list(m.get("data_paths", [])),
        updated=str(m.get("created", "")), tokens_trained=int(m.get("tokens_trained", 0) or 0),
        error=m.get("error"), pid=m.get("pid"), host=m.get("host"), settings=dict(m.get("settings", {})),
        allow_overlap=bool(m.get("allow_overlap", False)))


def list_runs(repo: Repo) -> list[RunInfo]:
    out = []
    for ref in repo.refs.names(RUNS_PREFIX):
        out.append(info(repo, ref[len(RUNS_PREFIX):]))
    return out


def on_base(repo: Repo, base: str) -> list[RunInfo]:
    return [r for r in list_runs(repo) if r.base == base]


def abandon(repo: Repo, name: str, *, reason: str = "") -> RunInfo:
    """Delete ``refs/runs/<name>``: all its checkpoints but the last become unreachable (gc
    collects them after the grace period); the reflog keeps the last one for a while."""
    r = info(repo, name)
    if r.status == LIVE:
        raise Refused(f"run {name!r} is training right now; stop it before abandoning it")
    with repo.writing():
        repo.update_ref(run_ref(name), r.checkpoint, None, f"abandon: {reason or 'by user'}")
    return r


class StopFlag:
    """SIGTERM/SIGINT -> finish the step, checkpoint, stop; a second signal stops at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum
        for sig, old in self._old.items():  # a second signal: the default behaviour
            signal.signal(sig, old)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def describe_owner(meta: dict) -> str:
    pid, host = meta.get("pid"), meta.get("host")
    if pid is None:
        return "unknown process"
    here = host == socket.gethostname()
    alive = pid_alive(int(pid)) if here else None
    return f"pid {pid} on {host}" + ("" if alive is None else (" (running)" if alive else " (gone)"))


__all__ = ["RunInfo", "LIVE", "STOPPED", "INTERRUPTED", "FAILED", "StopFlag", "info", "list_runs", "on_base",
           "abandon", "hold_run", "is_live", "run_lock"]
