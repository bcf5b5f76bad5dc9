"""Training a batch on several processes: ``lin train`` with the accepted plan under torchrun.

The runner plans; the processes train and rank 0 publishes (as ``lin train --gpus N`` does:
train/distributed.py); the runner reads the outcome from the store. The ranks end with the
runner (its pid is their launcher), so a killed runner leaves a resumable run. SIGTERM and SIGINT
sent to the runner are passed on to torchrun, which passes them to the ranks: they finish the
step, checkpoint and exit 130.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

from ..core.fsutil import atomic_write_bytes
from ..core.repo import Repo
from ..train import distributed as D
from ..train.plan import Plan


def train_processes(repo: Repo, plan: Plan, message: str) -> int:
    """Run the plan on ``plan.world_size`` processes; torchrun's exit code (130: interrupted)."""
    assert repo.path is not None
    plan_path = repo.tmp_dir / f"{os.getpid()}-run-plan.json"
    atomic_write_bytes(plan_path, json.dumps(plan.to_dict()).encode(), repo.tmp_dir)
    argv = ["--store", str(repo.path), "train", "--yes"] + (["--message", message] if message else [])
    cmd = D.relaunch_command(plan.world_size, argv)
    env = {**os.environ, D.PLAN_ENV: str(plan_path), D.LAUNCHER_ENV: str(os.getpid())}
    # what `lin train` prints is a diagnostic here: stdout holds the runner's own report (--json)
    proc = subprocess.Popen(cmd, env=env, stdout=sys.stderr)
    old: dict[signal.Signals, Any] = {}

    def forward(signum: int, _frame: Any) -> None:
        proc.send_signal(signum)

    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, forward)
        return proc.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.kill()
        plan_path.unlink(missing_ok=True)
