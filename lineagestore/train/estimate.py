"""The plan's estimates: exactly how many tokens a run trains on, and how long it will take.

The rate (tokens/s) comes from the newest earlier run of the same model size on the same kind
of device; failing that, from timing two forward+backward passes on real batches.
"""

from __future__ import annotations

import time

from ..core.errors import LinError
from ..core.repo import Repo
from .dataset import Blocks, TokenizedData, epoch_order
from .job import Job
from .model import build_model, compute_loss, resolve_precision
from .settings import TrainSettings

__all__ = ["earlier_rate", "estimate_time", "measure_rate", "tokens_between"]


def tokens_between(data: TokenizedData, units: int, settings: TrainSettings, start: tuple[int, int],
                   end: tuple[int, int]) -> int:
    """Exactly the tokens a run trains from position ``start`` to ``end`` (:mod:`.course`):
    the rest of the start's epoch, whole epochs, then the start of the end's epoch's order."""
    import numpy as np
    blocks = Blocks(data, settings.seq_len, settings.packing)
    lengths = np.fromiter((b - a for a, b in (blocks.span(i) for i in range(units))), dtype=np.int64, count=units)
    (e0, p0), (e1, p1) = start, end
    if (e0, p0) >= (e1, p1):
        return 0

    def part(epoch: int, lo: int, hi: int) -> int:
        if lo == 0 and hi >= units:
            return int(lengths.sum())
        return int(lengths[epoch_order(units, settings.seed, epoch)[lo:hi]].sum())
    if e0 == e1:
        return part(e0, p0, p1)
    total = part(e0, p0, units) + int(lengths.sum()) * (e1 - e0 - 1)
    return total + (part(e1, 0, p1) if p1 else 0)


def estimate_time(repo: Repo, job: Job, settings: TrainSettings, *, base_tree: str | None, base_name: str | None,
                  model: dict, device: dict, tokens_left: int | None, measure: bool,
                  world: int) -> tuple[float | None, str]:
    """(seconds left, where the rate came from); a measured model is kept in ``job.model`` for training."""
    est, source = None, "unknown"
    if tokens_left:
        rate, source = earlier_rate(repo, model, device, world)
        if rate is None and measure and world == 1 and device["ok"] and base_tree and job.data is not None:
            try:
                rate, source, job.model = measure_rate(repo, base_tree, base_name or base_tree[:12], job, job.data,
                                                       settings, device["type"])
            except Exception as e:  # noqa: BLE001 - an estimate must not stop the plan
                source = f"unknown (measurement failed: {type(e).__name__}: {e})"
        if rate:
            est = tokens_left / rate
    return est, source


def earlier_rate(repo: Repo, model: dict, device: dict, world: int = 1) -> tuple[float | None, str]:
    """tokens/s of the newest train commit of the same model size on the same kind of device,
    for ``world`` processes: a run on another number is scaled (each process trains as fast)."""
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
        theirs = int(m.get("world_size", 1) or 1)
        rate = float(m["tokens_per_s"]) * world / theirs
        how = f" on {theirs} process(es), scaled to {world}" if theirs != world else ""
        return rate, f"from earlier run {vname} ({float(m['tokens_per_s']):,.0f} tokens/s{how})"
    return None, "unknown"


def measure_rate(repo: Repo, base_tree: str, version: str, job: Job, data: TokenizedData, s: TrainSettings,
                 device_type: str):
    """Time two forward+backward passes on real batches of ``data`` (no optimizer step: weights unchanged).

    Returns (tokens/s, how it was found, the model built for it)."""
    import torch
    dev = torch.device("cuda:0" if device_type == "cuda" else "cpu")
    model = job.model or build_model(repo, base_tree, job.meta_dir, dev, s, version=version)
    blocks = Blocks(data, s.seq_len, s.packing)
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
