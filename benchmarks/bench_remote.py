#!/usr/bin/env python3
"""Benchmark remotes: push and clone a ~1.2 GB model against a real S3 server (SeaweedFS).

    python benchmarks/bench_remote.py [--size-gb 1.2] [--repeat 3] [--workdir DIR] [--workers N]
                                      [--history N]

In one run, against one `weed mini` server started on 127.0.0.1 (tests/s3server.py):

  baseline upload     boto3 ``upload_file`` of model.safetensors (default TransferConfig)
  baseline download   boto3 ``download_file`` of the same object
  lin push            `lin push` of a store holding the model, to a fresh prefix (first push)
  lin push again      `lin push` of the unchanged store (target: under 1 s)
  lin push child      `lin push` after committing a child in which every tensor changed a little
  lin clone           `lin clone` of the prefix into an empty folder (download, verify, store,
                      then write the work folder)
  lin push on history with ``--history N``: N more versions (each a new config.json on the
                      child's weights) pushed, then one more committed and `lin push` timed: a
                      push asks the remote about every object the new version reaches, the whole
                      history included

lin runs as a subprocess (`python -m lineagestore.cli.main`), so its times include starting
Python; the baseline runs in this process. Throughput is counted in raw model bytes (the
safetensors file), whatever lin stores (compressed objects). Targets: push >= 0.8x the
baseline upload's throughput; a second push under 1 s. The model is generated like
benchmarks/bench_commit.py (Qwen3-0.6B shapes, bf16 N(0, 0.02), fixed seed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

from bench_commit import write_models  # noqa: E402
from s3server import S3Server  # noqa: E402

CPU: dict[str, list[float]] = {}


def lin(*args: str, env: dict, cwd: Path, label: str | None = None) -> float:
    """Run lin; return wall seconds (CPU seconds, user + sys, go to CPU[label])."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "lineagestore.cli.main", *args], cwd=cwd, env=env,
                       capture_output=True, text=True)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if label:
        CPU.setdefault(label, []).append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if r.returncode:
        raise SystemExit(f"lin {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return dt


def differences(a: Path, b: Path) -> list[str]:
    """Files that are not byte-identical between two folders (empty: identical)."""
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    if fa != fb:
        return [f"file lists differ: {fa} vs {fb}"]
    out = []
    for rel in fa:
        with open(a / rel, "rb") as x, open(b / rel, "rb") as y:
            offset = 0
            while True:
                cx, cy = x.read(1 << 24), y.read(1 << 24)
                if cx != cy:
                    out.append(f"{rel}: differs in the 16 MiB block at {offset}")
                    break
                if not cx:
                    break
                offset += len(cx)
    return out


def rmtree(p: Path) -> None:
    for root, dirs, _ in os.walk(p):
        for d in dirs:
            try:
                os.chmod(os.path.join(root, d), 0o755)
            except OSError:
                pass
    shutil.rmtree(p, ignore_errors=True)


def history(store: Path, child: Path, folder: Path, n: int, start: int = 0) -> int:
    """Commit ``n`` versions of ``child`` with a new config.json each (in this process; the
    weights come from the stat cache); return how many objects the last one reaches."""
    sys.path.insert(0, str(ROOT))
    from lineagestore.core.repo import Repo
    from lineagestore.remote.transfer import local_closure
    from lineagestore.versions.commit import commit_folder

    if not folder.exists():
        shutil.copytree(child, folder)
    repo = Repo.open(store)
    for i in range(start, start + n):
        (folder / "config.json").write_text(json.dumps({"history": i}) + "\n")
        cid = commit_folder(repo, folder, f"h{i}").id
    return len(local_closure(repo, {cid: "bench"}, set())[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=1.2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=0, help="LIN_REMOTE_WORKERS for lin (default: lin's own)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (for a look after a failure)")
    ap.add_argument("--history", type=int, default=0,
                    help="also time a push of one version on top of N more pushed versions (default: skip)")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-remote-", dir=args.workdir))
    try:
        return run(work, args)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            rmtree(work)


def run(work: Path, args) -> int:
    from boto3.s3.transfer import TransferConfig

    base, child = work / "base", work / "child"
    t0 = time.perf_counter()
    ntensors, nbytes = write_models(base, child, args.size_gb)
    print(f"model: {ntensors} tensors, {nbytes / 1e9:.2f} GB (generated in {time.perf_counter() - t0:.0f}s)")
    weights = base / "model.safetensors"
    raw = weights.stat().st_size + sum(p.stat().st_size for p in base.iterdir() if p.name != weights.name)

    srv = S3Server(startup_timeout=60)
    srv.start(work / "s3data", bucket="bench")
    env = {**os.environ, **srv.env(), "LIN_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT)}
    if args.workers:
        env["LIN_REMOTE_WORKERS"] = str(args.workers)
    os.environ.update(srv.env())
    try:
        s3 = srv.client(retries={"max_attempts": 3})
        store = work / "store"
        store.mkdir()
        t0 = time.perf_counter()
        lin("init", env=env, cwd=store)
        lin("import", str(base), "--name", "base", env=env, cwd=store)
        print(f"lin import: {time.perf_counter() - t0:.1f}s (not part of the comparison)")

        res: dict[str, list[float]] = {k: [] for k in ("upload", "download", "push", "push_again",
                                                      "push_child", "clone", "push_history")}
        for i in range(args.repeat):
            key = f"plain/{uuid.uuid4().hex}/model.safetensors"
            t0 = time.perf_counter()
            s3.upload_file(str(weights), "bench", key, Config=TransferConfig())
            res["upload"].append(time.perf_counter() - t0)
            dl = work / "dl.safetensors"
            t0 = time.perf_counter()
            s3.download_file("bench", key, str(dl), Config=TransferConfig())
            res["download"].append(time.perf_counter() - t0)
            assert dl.read_bytes() == weights.read_bytes() if args.size_gb < 0.1 else dl.stat().st_size == weights.stat().st_size
            dl.unlink()

            name = f"r{i}"
            url = f"s3://bench/run-{uuid.uuid4().hex[:8]}"
            lin("remote", "add", name, url, "--endpoint-url", srv.endpoint_url, env=env, cwd=store)
            res["push"].append(lin("push", name, env=env, cwd=store, label="push"))
            res["push_again"].append(lin("push", name, env=env, cwd=store, label="push_again"))
            dest = work / f"clone{i}"
            res["clone"].append(lin("clone", url, str(dest), "--endpoint-url", srv.endpoint_url, env=env, cwd=work,
                                    label="clone"))
            diff = differences(dest / "model", base)
            if diff:
                raise SystemExit(f"clone {dest} is not byte-identical: {diff}")
            rmtree(dest)
        # the child (every tensor changed a little) pushed to the last remote: only its new objects travel
        lin("commit", str(child), "--name", "child", env=env, cwd=store)
        res["push_child"].append(lin("push", name, env=env, cwd=store, label="push_child"))
        if args.history:
            objects = history(store / ".lineage", child, work / "hist", args.history)
            lin("push", name, env=env, cwd=store)
            objects += history(store / ".lineage", child, work / "hist", 1, start=args.history)
            print(f"history: {args.history + 3} versions, {objects} objects under the last")
            res["push_history"].append(lin("push", name, env=env, cwd=store, label="push_history"))
    finally:
        srv.stop()

    med = {k: statistics.median(v) for k, v in res.items() if v}
    mb = raw / 1e6
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform(terse=True)}, "
          f"python {platform.python_version()}, boto3 {__import__('boto3').__version__}, "
          f"SeaweedFS weed mini on 127.0.0.1 (same machine)")
    print(f"model: {raw / 1e9:.2f} GB raw; median of {args.repeat}; lin as a subprocess")
    try:
        load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    print(f"load average at the end: {load} (other work on the machine inflates wall times)")
    print(f"{'step':<38}{'seconds':>9}{'MB/s':>9}{'vs baseline':>13}{'lin CPU s':>11}")
    rows = [("boto3 upload_file (baseline)", "upload", "upload"),
            ("lin push (first, fresh prefix)", "push", "upload"),
            ("lin push again (unchanged)", "push_again", None),
            ("lin push child (all tensors new)", "push_child", "upload"),
            ("lin push, 1 version on a long history", "push_history", None),
            ("boto3 download_file (baseline)", "download", "download"),
            ("lin clone (download+verify+checkout)", "clone", "download")]
    for label, k, base_k in rows:
        if k not in med:
            continue
        s = med[k]
        ratio = f"{(med[base_k] / s):.2f}x" if base_k else ""
        rate = f"{mb / s:.0f}" if base_k else ""
        cpu = f"{statistics.median(CPU[k]):.2f}" if k in CPU else ""
        print(f"{label:<38}{s:>9.2f}{rate:>9}{ratio:>13}{cpu:>11}")
    print()
    ok_push = med["upload"] / med["push"] >= 0.8
    ok_again = med["push_again"] < 1.0
    print(f"target push >= 0.8x upload throughput: {'met' if ok_push else 'NOT met'} "
          f"({med['upload'] / med['push']:.2f}x); second push < 1 s: {'met' if ok_again else 'NOT met'} "
          f"({med['push_again']:.2f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
