#!/usr/bin/env python
"""The cost of `lin run`'s loop per file, beyond the optimizer steps (target: <= 2 s per file plus
the commit of the model), against the same cost of `lin train` on one file, in the same run.

A store with the tiny Qwen3 of the tests imported and a folder remote as its backup; FILES small
data files queued. The loop runs in-process (lineagestore.runner.run, through api.Repo so every
checkpoint and version is backed up, as `lin run` does); the time inside the optimizer steps
(trainer._step) is measured and taken out, and so is the commit of the model (storing the final
weights: trainer.store_model with the version's dtype). What is left is the loop's own cost:
the seven checks, the step-0 checkpoint, publishing, the backups, the queue updates.

The baseline is `lin train` of one file on the same machine and store, measured the same way
in-process (plan, train, publish, backup), plus a `lin train` process's start (python, imports)
timed as `lin --version` and `lin train --help`: a loop of one `lin train` per file pays it per file.

Usage: nice python benchmarks/bench_run.py [--files 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("OMP_NUM_THREADS", "1")

SETTINGS = {"device": "cpu", "batch_size": 2, "seq_len": 32, "checkpoint_every": 1000, "lr": 1e-3, "log_every": 1}


class Clock:
    """Seconds spent in the optimizer steps and in the final model's storing, patched in."""

    def __init__(self) -> None:
        import lineagestore.train.trainer as T
        self.steps = 0.0
        self.model_commit = 0.0
        step, store = T._step, T.store_model

        def timed_step(*a, **k):
            t = time.perf_counter()
            try:
                return step(*a, **k)
            finally:
                self.steps += time.perf_counter() - t

        def timed_store(*a, **k):
            t = time.perf_counter()
            try:
                return store(*a, **k)
            finally:
                if "dtype" in k:  # the version's weights (a checkpoint stores fp32 without it)
                    self.model_commit += time.perf_counter() - t

        T._step, T.store_model = timed_step, timed_store


def make_store(root: Path, files: int):
    from lineagestore.api import Repo
    from tools import samples
    samples.tiny_model_folder(root / "base", hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64)
    (root / "data").mkdir()
    paths = []
    for i in range(files):
        p = root / "data" / f"part_{i:03d}.jsonl"
        samples.write_jsonl(p, samples.bible_records(i * 24, 24))
        paths.append(p)
    repo = Repo.init(root / ".lineage")
    repo.import_model(root / "base", "base")
    repo.remote_add("origin", str(root / "remote"), backup=True)
    return Repo.open(root / ".lineage"), paths


def process_start() -> float:
    """Seconds a `lin train` process needs before it does anything (imports)."""
    env = {**os.environ, "LIN_NO_PROGRESS": "1"}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lineagestore.cli.main", "train", "--help"], env=env,
                   capture_output=True, check=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10)
    a = ap.parse_args()
    from lineagestore import queue as Q
    from lineagestore.runner import RunOptions, run
    from lineagestore.train.plan import make_plan
    from lineagestore.train.settings import TrainSettings
    from lineagestore.train.trainer import train
    clock = Clock()
    root = Path(tempfile.mkdtemp(prefix="lin-bench-run-"))
    try:
        settings = TrainSettings.build(SETTINGS)
        # baseline: `lin train` of one file (in-process: plan, train, publish, backup)
        repo, paths = make_store(root / "train", 1)
        s0, c0, t0 = clock.steps, clock.model_commit, time.perf_counter()
        plan = make_plan(repo, data=[paths[0]], name="one", settings=settings, measure=False)
        train(repo, plan)
        train_total = time.perf_counter() - t0
        train_steps, train_commit = clock.steps - s0, clock.model_commit - c0
        start = process_start()
        # the loop over FILES files
        repo, paths = make_store(root / "run", a.files)
        Q.add_files(repo, "main", [str(p) for p in paths])
        s0, c0, t0 = clock.steps, clock.model_commit, time.perf_counter()
        rep = run(repo, RunOptions(settings=settings))
        loop_total = time.perf_counter() - t0
        loop_steps, loop_commit = clock.steps - s0, clock.model_commit - c0
        assert len(rep.trained) == a.files, rep
        per_file = (loop_total - loop_steps - loop_commit) / a.files
        train_cost = train_total - train_steps - train_commit + start
        out = {
            "files": a.files,
            "loop_cost_per_file_s": round(per_file, 3),
            "model_commit_per_file_s": round(loop_commit / a.files, 3),
            "optimizer_steps_per_file_s": round(loop_steps / a.files, 3),
            "lin_train_one_file_cost_s": round(train_cost, 3),
            "lin_train_process_start_s": round(start, 3),
            "ratio_loop_to_lin_train": round(per_file / train_cost, 3),
            "target_s": 2.0,
            "meets_target": per_file <= 2.0,
            "cpus": os.cpu_count(), "python": sys.version.split()[0],
        }
        print(json.dumps(out, indent=2))
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
