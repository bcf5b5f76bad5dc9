"""Per-step series at the scale of a long run: bytes and seconds per checkpoint, and the read.

A run of ``--steps`` optimizer steps (default 1,000,000) with a checkpoint every
``--checkpoint-every`` (500) records its series as lin does (train/series.py: the new rows as a
segment, then a new tree naming every segment), into a real on-disk store. The baseline, measured
in the same run into another store, is what the segments avoid: the whole series written again
at every checkpoint (one zstd-compressed column blob, as a single-file design would). Rows are
synthetic (a decaying loss with noise, a linear schedule, increasing tokens and wall time).

Prints, for both: bytes written into the store over the run, seconds spent storing, the bytes
and seconds of the last checkpoint, and the time to read the whole series back; then the ratios.
The baseline is measured only up to ``--baseline-steps`` (default 200,000: its cost grows with
the square of the run) and its totals for the full run extrapolated from that (stated as such).

    nice python benchmarks/bench_series.py                      # 1M steps (~1-2 min on 2 cores)
    nice python benchmarks/bench_series.py --steps 100000       # quick
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lineagestore.core.repo import Repo  # noqa: E402
from lineagestore.train.series import COLUMNS, GROUP, SeriesWriter, read_series  # noqa: E402


def _rows(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    step = np.arange(1, n + 1, dtype=np.uint64)
    return {"step": step, "tokens": (step * 262_144).astype(np.uint64),
            "loss": (2.0 + 3.0 * np.exp(-step.astype(np.float64) / 2e5) + 0.05 * rng.standard_normal(n)).astype(np.float32),
            "lr": (2e-5 * (1 - step / (n + 1))).astype(np.float32),
            "grad_norm": np.abs(1 + 0.3 * rng.standard_normal(n)).astype(np.float32),
            "tokens_per_s": (250_000 + 5_000 * rng.standard_normal(n)).astype(np.float32),
            "wall_s": (step * 1.05).astype(np.float64)}


def _stored_bytes(repo: Repo) -> int:
    assert repo.path is not None
    return sum(p.stat().st_size for p in (repo.path / "objects").rglob("*") if p.is_file())


def run_segments(root: Path, rows: dict[str, np.ndarray], every: int) -> dict[str, float]:
    repo = Repo.init(root / ".lineage")
    w = SeriesWriter()
    n = len(rows["step"])
    spent = last_s = 0.0
    last_before = 0
    tid = ""
    for a in range(0, n, every):
        for i in range(a, min(a + every, n)):
            w.add(int(rows["step"][i]), int(rows["tokens"][i]), float(rows["loss"][i]), float(rows["lr"][i]),
                  float(rows["grad_norm"][i]), float(rows["tokens_per_s"][i]), float(rows["wall_s"][i]))
        if a + every >= n:
            last_before = _stored_bytes(repo)
        t0 = time.perf_counter()
        batch = repo.objects.batch()
        tid = w.store(batch)
        batch.flush()
        last_s = time.perf_counter() - t0
        spent += last_s
    total = _stored_bytes(repo)
    t0 = time.perf_counter()
    s = read_series(repo.objects, tid)
    read_s = time.perf_counter() - t0
    assert len(s) == n and s.loss.tobytes() == rows["loss"].tobytes()
    return {"bytes": total, "seconds": spent, "last_bytes": total - last_before, "last_s": last_s, "read_s": read_s,
            "segments": len(w.segments) + GROUP * len(w.groups), "series_bytes": w.tree_size}


def run_rewrite(root: Path, rows: dict[str, np.ndarray], every: int, steps: int) -> dict[str, float]:
    """The baseline: the whole series so far as one compressed blob at every checkpoint."""
    repo = Repo.init(root / ".lineage")
    spent = last_s = 0.0
    written = 0
    cz = zstandard.ZstdCompressor(level=3)
    blob = b""
    for a in range(every, steps + every, every):
        b = min(a, steps)
        t0 = time.perf_counter()
        blob = cz.compress(b"".join(np.ascontiguousarray(rows[name][:b]).tobytes() for name, _ in COLUMNS))
        for k in range(0, len(blob), 16 << 20):
            repo.objects.put("blob", blob[k:k + (16 << 20)])
        last_s = time.perf_counter() - t0
        spent += last_s
        written += len(blob)
    t0 = time.perf_counter()
    zstandard.ZstdDecompressor().decompress(blob, max_output_size=40 * steps)
    return {"bytes": written, "seconds": spent, "last_bytes": len(blob), "last_s": last_s,
            "read_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--checkpoint-every", type=int, default=500)
    ap.add_argument("--baseline-steps", type=int, default=200_000)
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args()
    rows = _rows(a.steps)
    work = Path(tempfile.mkdtemp(prefix="bench-series-", dir=a.workdir))
    try:
        seg = run_segments(work / "segments", rows, a.checkpoint_every)
        base_steps = min(a.steps, a.baseline_steps)
        base = run_rewrite(work / "rewrite", rows, a.checkpoint_every, base_steps)
        scale = (a.steps / base_steps) ** 2  # written bytes and time grow with the square of the run
        print(f"{a.steps:,} steps, a checkpoint every {a.checkpoint_every} ({seg['segments']:,} segments)")
        print(f"{'':34}{'segments (lin)':>18}{'rewrite (baseline)':>22}")
        print(f"{'stored over the run':34}{seg['bytes'] / 1e6:>15.1f} MB{base['bytes'] * scale / 1e6:>19.1f} MB"
              + ("  (extrapolated)" if base_steps < a.steps else ""))
        print(f"{'seconds storing over the run':34}{seg['seconds']:>16.2f} s{base['seconds'] * scale:>20.2f} s")
        last_b = base["last_bytes"] * a.steps / base_steps
        print(f"{'bytes of the last checkpoint':34}{seg['last_bytes'] / 1e3:>15.1f} kB{last_b / 1e3:>19.1f} kB")
        print(f"{'read the whole series':34}{seg['read_s']:>16.3f} s{base['read_s'] * a.steps / base_steps:>20.3f} s")
        print(f"{'final series (segments), per step':34}{seg['series_bytes'] / a.steps:>16.1f} B"
              f"{base['last_bytes'] / base_steps:>20.1f} B")
        print(f"ratios rewrite/segments: stored {base['bytes'] * scale / seg['bytes']:.1f}x, "
              f"seconds {base['seconds'] * scale / seg['seconds']:.1f}x, "
              f"last checkpoint {last_b / seg['last_bytes']:.1f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
