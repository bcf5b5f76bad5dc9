#!/usr/bin/env python3
"""Scale of the data registry: everyday commands on a store that knows ~50,000 data files.

    python benchmarks/bench_scale.py [--files 50000] [--trained 10000] [--versions 5] [--workdir DIR] [--keep]

The problem lin is built for trains toward a trillion tokens over ~50,000 JSONL files. This
makes a store with --files registered files (small JSONL files of 2-5 text records each,
registered in-process with ``lineagestore.data.register``, no tokenizer) and a lineage of five
versions of a tiny model, the last four trained on --trained of those files between them. Then
it times, as subprocesses, the commands a user runs every day (``--versions N`` makes the
lineage N versions long, one more commit each):

  lin data ls / data ls --json     every registered file with its status (trained, in training)
  lin data show FILE               one entry
  lin data check FILE              a new file: content and records against everything trained
  lin data add FILE                registering one more file
  lin registry --json / log        the versions with their training data
  lin status, lin fsck (quick)     the store's state and consistency
  lin gc                           the plan (what is unreachable), nothing deleted

Each command runs twice: the first run builds the derived caches (``cache/data/``), the second
uses them. Baseline: ``ls -l`` of the data folder, and ``python -c pass`` (interpreter start).
Nothing here is a test; it prints a table and removes what it made unless --keep.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, int]:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate()
    dt = time.perf_counter() - t0
    if p.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)}: exit {p.returncode}\n{err.decode(errors='replace')}")
    return dt, len(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=50_000)
    ap.add_argument("--trained", type=int, default=10_000, help="files trained in the lineage")
    ap.add_argument("--versions", type=int, default=5, help="versions in the lineage (at least 5)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)

    from conftest import make_model_dir

    from lineagestore import Repo, data

    work = args.workdir or Path(tempfile.mkdtemp(prefix="lin-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    files = work / "data"
    files.mkdir()
    try:
        repo = Repo.init(work / ".lineage")
        repo = Repo.open(work / ".lineage")
        t0 = time.perf_counter()
        paths = []
        for i in range(args.files):
            p = files / f"shard-{i:06d}.jsonl"
            n = 2 + i % 4
            p.write_text("".join(json.dumps({"text": f"shard {i} record {j}: " + "lorem ipsum " * (1 + j)})
                                 + "\n" for j in range(n)))
            paths.append(p)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        for k, p in enumerate(paths):
            data.register(repo, p, tokenizer=False)
            if k and k % 5000 == 0:
                print(f"registered {k:,} files ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        reg = time.perf_counter() - t0
        print(f"{args.files:,} files written in {made:.1f} s, registered in-process in {reg:.1f} s "
              f"({reg / args.files * 1000:.1f} ms each)", file=sys.stderr, flush=True)

        model = make_model_dir(work / "model")
        repo.import_model(model, "base")
        per = max(1, args.trained // 4)
        for v in range(4):
            chunk = paths[v * per:(v + 1) * per]
            infos = [data.register(repo, p, tokenizer=False) for p in chunk]  # already registered
            make_model_dir(model, seed=v + 1)
            repo.commit_folder(model, f"step{v + 1}", datasets=[i.id for i in infos])
        t0 = time.perf_counter()
        for v in range(5, args.versions):  # a long lineage: a version per file trained, for years
            (model / "config.json").write_text(json.dumps({"model_type": "toy", "step": v}))
            repo.commit_folder(model, f"step{v + 1}", metrics={"loss": 1.0 / v})
        if args.versions > 5:
            print(f"{args.versions - 5:,} more versions committed in-process in {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr, flush=True)

        new = work / "new.jsonl"
        new.write_text("".join(json.dumps({"text": f"fresh record {j}"}) + "\n" for j in range(1000))
                       + "".join(paths[3].read_text().splitlines(True)))  # a few records already trained
        extra = work / "one_more.jsonl"
        extra.write_text(json.dumps({"text": "one more file"}) + "\n")

        lin = [str(Path(sys.executable).parent / "lin")]
        env = dict(os.environ, LIN_STORE=str(work / ".lineage"), LIN_NO_PROGRESS="1")
        rows = [
            ("python -c pass (baseline)", [sys.executable, "-c", "pass"]),
            ("ls -l of the data folder (baseline)", ["ls", "-l", str(files)]),
            ("lin data ls", lin + ["data", "ls"]),
            ("lin data ls --json", lin + ["data", "ls", "--json"]),
            ("lin data show FILE", lin + ["data", "show", str(paths[7])]),
            ("lin data check FILE (1,000 new + trained records)", lin + ["data", "check", str(new)]),
            ("lin data add FILE (one more)", lin + ["data", "add", str(extra), "--no-tokens"]),
            ("lin registry --json", lin + ["registry", "--json"]),
            ("lin log", lin + ["log"]),
            ("lin log --graph", lin + ["log", "--graph"]),
            ("lin status", lin + ["status"]),
            ("lin fsck (every object re-hashed)", lin + ["fsck"]),
            ("lin gc (plan only)", lin + ["gc"]),
        ]
        print(f"\nstore: {args.files + 1:,} registered files, {max(5, args.versions):,} versions, {4 * per:,} files trained; "
              f"{sum(1 for _ in (work / '.lineage' / 'objects').rglob('*') if _.is_file()):,} objects")
        print("| command | seconds, first run | seconds, again | stdout |")
        print("|---|---:|---:|---:|")
        for label, cmd in rows:
            dt, n = timed(cmd, work, env)
            again = "" if "data add" in label else f"{timed(cmd, work, env)[0]:.2f}"
            size = f"{n:,} B" if n < 10240 else f"{n / 1024:,.0f} KiB"
            print(f"| {label} | {dt:.2f} | {again} | {size} |", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
