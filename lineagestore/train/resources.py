"""What the plan's disk and device checks measure: free disk against what a run will write, and
the GPUs (count, free memory) against what the model needs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..core.environment import read_env
from ..core.repo import Repo
from .job import Job
from .settings import TrainSettings

__all__ = ["device_status", "disk_needs", "gpu_memory"]


def disk_needs(repo: Repo, model: dict, s: TrainSettings, steps: int | None, tokens: int | None, job: Job) -> dict:
    """Free and needed bytes for the checkpoints, the new version and the token cache, with a margin."""
    params = int(model.get("params", 0) or 0)
    stored = int(model.get("bytes", 0) or 0)
    trainable = params  # freeze patterns are resolved only when the model is built: assume all
    n_ckpt = 1 + (max(0, (steps or 0) - 1) // s.checkpoint_every) + 1  # periodic, plus one on interruption
    parts = {
        "checkpoints": n_ckpt * (trainable * 4 + trainable * 8),  # fp32 weights that changed + Adam moments
        "first checkpoint in fp32": max(0, params * 4 - stored),  # unchanged tensors stored once more in fp32
        "new version": stored,
        "token cache": 0 if job.data is not None else (tokens or 0) * 5,
    }
    margin = repo.settings.train.disk_margin
    need = int(sum(parts.values()) * (1 + margin) + 256e6)
    target = repo.path if repo.path is not None else Path.cwd()
    free = shutil.disk_usage(target).free
    return {"free": int(free), "need": need, "margin": margin, "checkpoints": n_ckpt, "parts": parts}


def device_status(s: TrainSettings, model: dict) -> dict:
    """Whether the device asked for is there, with memory for weights, gradients and Adam on each GPU."""
    if s.device == "cpu":
        return {"ok": True, "type": "cpu", "reason": f"CPU requested (--device cpu), {os.cpu_count()} cores",
                "count": 0}
    try:
        import torch
        available = torch.cuda.is_available()
    except ImportError:
        return {"ok": False, "type": "none", "reason": "torch is not installed",
                "hint": "pip install 'lineagestore[train]'"}
    if not available:
        return {"ok": False, "type": "none", "count": 0,
                "reason": "no GPU found (torch.cuda.is_available() is False)",
                "hint": "train on the CPU with --device cpu"}
    n = torch.cuda.device_count()
    need = int(model.get("params", 0) or 0) * 16  # fp32 weights + grads + two Adam moments
    details = []
    short = []
    memory = gpu_memory(n)
    for i in range(n):
        free, total = memory[i]
        details.append(f"cuda:{i} {torch.cuda.get_device_name(i)}: {free / 2**30:.1f} of {total / 2**30:.1f} GiB free")
        if i < s.gpus and free < need:
            short.append(i)
    if n < s.gpus:
        return {"ok": False, "type": "cuda", "count": n, "details": details,
                "reason": f"{s.gpus} GPUs asked for, {n} found"}
    if short:
        return {"ok": False, "type": "cuda", "count": n, "details": details,
                "reason": f"GPU {', '.join(map(str, short))}: less free memory than the ~{need / 2**30:.1f} GiB "
                          "that weights, gradients and optimizer state need",
                "hint": "free the GPU, or freeze part of the model (--freeze)"}
    return {"ok": True, "type": "cuda", "count": n, "details": details,
            "reason": f"{n} GPU(s); using {s.gpus}: {torch.cuda.get_device_name(0)}"}


def gpu_memory(n: int) -> list[tuple[int, int]]:
    """(free, total) bytes per GPU, from nvidia-smi when it answers (no CUDA context is opened
    in this process: with --gpus N it only launches the training processes)."""
    import subprocess
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
        rows = [[int(float(x)) * 2**20 for x in line.split(",")] for line in out.stdout.strip().splitlines()]
        visible = read_env("CUDA_VISIBLE_DEVICES")
        if visible and all(x.strip().isdigit() for x in visible.split(",")):
            rows = [rows[int(x)] for x in visible.split(",") if int(x) < len(rows)]
        if out.returncode == 0 and len(rows) >= n:
            return [(r[0], r[1]) for r in rows[:n]]
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        pass
    import torch
    return [torch.cuda.mem_get_info(i) for i in range(n)]
