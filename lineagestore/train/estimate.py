"""The plan's estimates: exactly how many tokens a run trains on, and how long it will take.

The rate (tokens/s) comes from the newest earlier run of the same model size on the same kind
of device; failing that, from timing two forward+backward passes on real batches.
"""

from __future__ import annotations

import math
import time

from ..core.errors import LinError
from ..core.repo import Repo
from .dataset import Blocks, TokenizedData, epoch_order
from .job import Job
from .model import build_model, compute_loss, resolve_precision
from .settings import TrainSettings

__all__ = ["earlier_rate", "estimate_time", "measure_rate", "tokens_for_steps"]


def tokens_for_steps(data: TokenizedData, units: int, settings: TrainSettings, world: int, steps: int) -> int:
    """Exactly the tokens the run trains on: whole epochs, then the start of the next epoch's order."""
    import numpy as np
    blocks = Blocks(data, settings.seq_len, settings.packing)
    lengths = np.fromiter((b - a for a, b in (blocks.span(i) for i in range(units))), dtype=np.int64, count=units)
    per_step = settings.batch_size * settings.grad_accum * world
    per_epoch = max(1, math.ceil(units / per_step))
    full, rest = divmod(steps, per_epoch)
    total = int(lengths.sum()) * full
    if rest:
        total += int(lengths[epoch_order(units, settings.seed, full)[:rest * per_step]].sum())
    return total


def estimate_time(repo: Repo, job: Job, settings: TrainSettings, *, base_tree: str | None, model: dict,
                  device: dict, steps: int | None, tokens_total: int | None, done_steps: int, measure: bool,
                  world: int) -> tuple[float | None, str]:
    """(seconds left, where the rate came from); a measured model is kept in ``job.model`` for training."""
    est, source = None, "unknown"
    if steps and tokens_total:
        left = tokens_total * max(0, steps - done_steps) / steps
        rate, source = earlier_rate(repo, model, device)
        if rate is None and measure and world == 1 and device["ok"] and base_tree and job.data is not None:
            try:
                rate, source, job.model = measure_rate(repo, base_tree, job, settings, device["type"])
            except Exception as e:  # noqa: BLE001 - an estimate must not stop the plan
                source = f"unknown (measurement failed: {type(e).__name__}: {e})"
        if rate:
            est = left / rate
    return est, source


def earlier_rate(repo: Repo, model: dict, device: dict) -> tuple[float | None, str]:
    """tokens/s of the newest train commit of the same model size on the same kind of device."""
    want = "cpu" if device.get("type") == "cpu" else "cuda"
    for vname, cid in reversed(list(repo.versions().items())):
        try:
            c = repo.commit(cid)
        except LinError:
            continue
        m = c.metrics
        if c.kind != "train" or not m.get("tokens_per_s"):
            continue
        if m.get("model_params") != model.get("params") or not str(m.get("device", "")).startswith(want):
            continue
        return float(m["tokens_per_s"]), f"from earlier run {vname} ({float(m['tokens_per_s']):,.0f} tokens/s)"
    return None, "unknown"


def measure_rate(repo: Repo, base_tree: str, job: Job, s: TrainSettings, device_type: str):
    """Time two forward+backward passes on real batches (no optimizer step: weights unchanged).

    Returns (tokens/s, how it was found, the model built for it)."""
    import torch
    dev = torch.device("cuda:0" if device_type == "cuda" else "cpu")
    model = job.model or build_model(repo, base_tree, job.meta_dir, dev, s)
    blocks = Blocks(job.data, s.seq_len, s.packing)
    idx = list(range(min(len(blocks), s.batch_size)))
    batch = blocks.batch(idx, job.tokenizer.pad_token_id or 0)
    n_tokens, _ = blocks.tokens_of(idx)
    prec = resolve_precision(s.precision, dev)
    model.train()
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        loss, _sum = compute_loss(model, batch, dev, prec, max(1, n_tokens))
        loss.backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    rate = n_tokens / max(times[-1], 1e-9) / 1.1  # optimizer step and bookkeeping: ~10%
    return rate, f"measured ({_human_rate(rate)} over {n_tokens:,} tokens)", model


def _human_rate(r: float) -> str:
    return f"{r:,.0f} tokens/s"
