#!/usr/bin/env python
"""Crash safety of `lin run` (the ``run`` scenario of benchmarks/crash.py): SIGKILL the loop in
every phase and check that nothing is lost and every file is trained exactly once.

A cycle copies a prepared store (the tiny Qwen3 of the tests imported, a few small data files
queued), adds a folder remote as the backup, and runs `lin run` again and again, each time with
a kill at a kill point of one phase, until one run ends by itself. The phases and their points:
the train step (``train-step``), the checkpoint (``train-checkpoint``, between its objects and
its ref), the publish (``train-commit``, the version's objects written, nothing named), the
backup (``backup``, when the after-publish hook starts a push: of a checkpoint or a version), the
queue update (``run-queue`` before the loop's change, ``queue-object`` and ``queue-ref`` inside
it). After every kill the store passes fsck (full, in-process); after every cycle:

- the lineage equals the one an uninterrupted `lin run` of the same queue produced: the same
  versions in the same order, each with the same data and, bit for bit, the same weights (tree id);
- every file is trained exactly once (no two versions name it) and every queue item is done
  with its version;
- `lin fsck --full` exits 0, no run is left in ``refs/runs/``, and the backup remote holds every
  version's tag.

Usage: python benchmarks/crash_run.py [--kills 200] [--seed 1] [--keep DIR] [--minutes M]
(or python benchmarks/crash.py --scenarios run). Prints one JSON summary; exits 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lineagestore import queue as Q  # noqa: E402
from lineagestore.core.repo import Repo  # noqa: E402
from lineagestore.guard import fsck  # noqa: E402

#: phase -> (kill point, the most hits of it to draw N from)
PHASES: dict[str, list[tuple[str, int]]] = {
    "train step": [("train-step", 8)],
    "checkpoint": [("train-checkpoint", 3)],
    "publish": [("train-commit", 2)],
    "backup": [("backup", 3)],
    "queue update": [("run-queue", 3), ("queue-object", 3), ("queue-ref", 3)],
}
RUN_ARGS = ["--device", "cpu", "--batch-size", "2", "--seq-len", "32", "--checkpoint-every", "3",
            "--lr", "1e-3", "--log-every", "1", "--seed", "3"]


class CrashCheckFailed(AssertionError):
    pass


@dataclass
class RunLab:
    root: Path
    seed: int = 1
    files: int = 2
    stats: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.template = self.root / "template"
        self.reference: list[tuple[str, list[str], str]] = []

    # ------------------------------------------------------------------ running lin

    def lin(self, folder: Path, *args: str, kill_at: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIN_TEST_") and k != "LIN_STORE"}
        env.update(LIN_NO_PROGRESS="1", LIN_LOCK_TIMEOUT="60", OMP_NUM_THREADS="1",
                   PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
        if kill_at:
            env["LIN_TEST_KILL_AT"] = kill_at
        p = subprocess.run([sys.executable, "-m", "lineagestore.cli.main", *args], cwd=folder, env=env,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
        if check and p.returncode not in (0, -signal.SIGKILL):
            raise CrashCheckFailed(f"`lin {' '.join(args)}` ({kill_at}) exited {p.returncode}: {p.stderr[-1500:]}")
        return p

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        from tools import samples
        t = self.template
        (t / "data").mkdir(parents=True)
        samples.tiny_model_folder(self.root / "base", hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64)
        for i in range(self.files):
            samples.write_jsonl(t / "data" / f"part_{i:02d}.jsonl", samples.bible_records(i * 16, 16))
        self.lin(t, "init")
        self.lin(t, "import", str(self.root / "base"), "--name", "base")
        self.lin(t, "queue", "add", "data")
        ref = self.new_cycle("reference")
        p = self.lin(ref, "run", *RUN_ARGS, "--yes")
        if p.returncode != 0:
            raise CrashCheckFailed(f"the uninterrupted run failed: {p.stderr[-1500:]}")
        self.reference = self.lineage(ref)
        if len(self.reference) != self.files:
            raise CrashCheckFailed(f"the uninterrupted run made {len(self.reference)} versions of {self.files}")

    def new_cycle(self, name: str) -> Path:
        folder = self.root / name
        if folder.exists():
            shutil.rmtree(folder, onerror=_writable_again)
        shutil.copytree(self.template, folder, symlinks=True)
        self.lin(folder, "remote", "add", "origin", str(folder / "remote"), "--backup")
        return folder

    # ------------------------------------------------------------------ checks

    def lineage(self, folder: Path) -> list[tuple[str, list[str], str]]:
        repo = Repo.open(folder / ".lineage")
        out = []
        cid = repo.refs.resolve("refs/heads/main")
        while cid:
            c = repo.commit(cid)
            if c.kind == "train":
                out.append((c.name, list(c.params.get("data", [])), c.tree))
            cid = c.parents[0] if c.parents else None
        return out[::-1]

    def check_store(self, folder: Path, after: str) -> None:
        repo = Repo.open(folder / ".lineage")
        rep = fsck.check(repo)
        if not rep.ok:
            raise CrashCheckFailed(f"fsck after {after}: " + "; ".join(f"{p.kind}: {p.message}" for p in rep.problems[:5]))
        self.stats["fsck checks"] += 1

    def check_cycle(self, folder: Path) -> None:
        got = self.lineage(folder)
        if got != self.reference:
            raise CrashCheckFailed(f"{folder.name}: lineage differs from the uninterrupted run:\n{got}\n{self.reference}")
        files = [f for _, data, _ in got for f in data]
        if len(files) != len(set(files)):
            raise CrashCheckFailed(f"{folder.name}: a file was trained twice: {files}")
        repo = Repo.open(folder / ".lineage")
        q = Q.load(repo, "main")
        want = {d[0]: v for v, d, _ in got}
        for it in q.items:
            if it.status != "done" or want.get(Path(it.name).name) != it.version:
                raise CrashCheckFailed(f"{folder.name}: queue item {it.id} is {it.status} ({it.version}, {it.reason})")
        if repo.refs.names("refs/runs/"):
            raise CrashCheckFailed(f"{folder.name}: runs left: {repo.refs.names('refs/runs/')}")
        p = self.lin(folder, "fsck", "--full", check=False)
        if p.returncode != 0:
            raise CrashCheckFailed(f"{folder.name}: lin fsck --full exited {p.returncode}: {p.stdout[-1500:]}"
                                   f"{p.stderr[-1500:]}")
        missing = [v for v, _, _ in got if not (folder / "remote" / "refs" / "tags" / v).is_file()]
        if missing:
            raise CrashCheckFailed(f"{folder.name}: not backed up: {missing}")
        self.stats["cycles checked"] += 1
        self.stats["versions checked bit for bit"] += len(got)

    # ------------------------------------------------------------------ rounds

    def cycle(self, n: int, kills_left: int) -> None:
        folder = self.new_cycle(f"cycle{n}")
        while True:
            phase = self.rng.choice(list(PHASES))
            label, top = self.rng.choice(PHASES[phase])
            at = f"{label}:{self.rng.randint(1, top)}"
            p = self.lin(folder, "run", *RUN_ARGS, "--yes", kill_at=at if kills_left > 0 else None)
            self.stats["rounds"] += 1
            if p.returncode == -signal.SIGKILL:
                kills_left -= 1
                self.stats["kills"] += 1
                self.stats[f"kills: {phase}"] += 1
                self.check_store(folder, f"a kill at {at}")
                continue
            if p.returncode != 0:
                raise CrashCheckFailed(f"lin run ({at}) exited {p.returncode}: {p.stderr[-1500:]}")
            break
        self.check_cycle(folder)
        shutil.rmtree(folder, onerror=_writable_again)


def _writable_again(func, path, _exc) -> None:
    """rmtree's error handler for read-only object folders."""
    os.chmod(os.path.dirname(path), 0o755)
    func(path)


def run_lab(root: Path, seed: int, kills: int, minutes: float | None = None) -> dict:
    """Cycles until ``kills`` kills (or, with ``minutes``, the first cycle boundary after that
    much time); a line of the figures so far on stderr after every cycle."""
    lab = RunLab(root, seed)
    t0 = time.monotonic()
    lab.setup()
    n = 0
    while lab.stats["kills"] < kills and (minutes is None or time.monotonic() - t0 < 60 * minutes):
        n += 1
        lab.cycle(n, kills - lab.stats["kills"])
        print(json.dumps({"cycle": n, "seconds": round(time.monotonic() - t0), **dict(lab.stats)}),
              file=sys.stderr, flush=True)
    return {"seed": seed, "seconds": round(time.monotonic() - t0, 1), **dict(lab.stats)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="keep the lab in this folder")
    ap.add_argument("--minutes", type=float, default=None, help="stop at the first cycle's end after this long")
    a = ap.parse_args(argv)
    base = a.keep or Path(tempfile.mkdtemp(prefix="lin-crash-run-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        result = run_lab(base, a.seed, a.kills, a.minutes)
        failed = None
    except CrashCheckFailed as e:
        result, failed = {"seed": a.seed}, str(e)
    summary = {**result, "lost_versions": 0 if failed is None else None, "failure": failed,
               "by_phase": {k.removeprefix("kills: "): v for k, v in result.items() if k.startswith("kills: ")},
               "python": sys.version.split()[0], "cpus": os.cpu_count()}
    print(json.dumps({"summary": summary}, indent=2))
    if a.keep is None and failed is None:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
