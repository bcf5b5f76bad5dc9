#!/usr/bin/env python3
"""Benchmark the core store: commit and checkout of a ~1.2 GB bf16 model, against cp and DVC.

    python benchmarks/bench_commit.py [--size-gb 1.2] [--workdir DIR] [--skip-dvc] [--repeat N] [--cold]

Generates a safetensors model shaped like Qwen3-0.6B (vocab 151936, hidden 1024, 28 layers,
MLP 3072, tied embeddings; bf16 weights ~ N(0, 0.02), fixed seed) and a child in which every
tensor changed slightly, then measures, each tool in its own fresh folders:

  first commit     lin import  | dvc add           | cp -r of the model
  re-commit        lin commit of the unchanged folder | dvc add again | cp -r
  child commit     lin commit after every tensor changed | dvc add | cp -r of the child
  checkout         into an emptied work folder: lin checkout v001 | dvc checkout | cp -r
  switch           work folder holds base, check out the child over it

lin and dvc run as subprocesses; their peak RSS comes from os.wait4. DVC is installed into
its own venv (benchmarks/.venv-dvc, created if missing) with its default settings (cache type
reflink,copy; only analytics and the update check are turned off: no network). Before each
timed step the script runs sync(2), so no tool pays for writeback left by another. The page
cache is warm for every tool unless --cold (drops caches before each timed step; needs root).
Nothing here is a test: it prints a table of seconds and ratios and removes what it made.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DVC_VENV = HERE / ".venv-dvc"

# Qwen3-0.6B: vocab 151936, hidden 1024, 28 layers, intermediate 3072, 16 query heads and 8
# key/value heads of 128, tied embeddings -> 596M parameters, 1.19 GB in bf16.
VOCAB, HIDDEN, LAYERS, MLP, HEADS, KV_HEADS, HEAD_DIM = 151936, 1024, 28, 3072, 16, 8, 128
FULL_PARAMS = VOCAB * HIDDEN + HIDDEN + LAYERS * (
    HIDDEN * HEADS * HEAD_DIM * 2 + HIDDEN * KV_HEADS * HEAD_DIM * 2 + 3 * HIDDEN * MLP + 2 * HIDDEN + 2 * HEAD_DIM)


# ------------------------------------------------------------------------------ the model


def model_shapes(size_gb: float) -> dict[str, list[int]]:
    """Tensor names and shapes of a Qwen3-0.6B-like model scaled to about ``size_gb`` GB."""
    f = size_gb * 1e9 / (FULL_PARAMS * 2)
    layers = max(1, round(LAYERS * min(f, 1.0)))
    vocab = max(1024, round(VOCAB * f))
    if f > 1.0:  # bigger than the real one: more layers
        layers = max(1, round(LAYERS * f))
        vocab = VOCAB
    shapes = {"model.embed_tokens.weight": [vocab, HIDDEN], "model.norm.weight": [HIDDEN]}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": [HIDDEN],
            p + "post_attention_layernorm.weight": [HIDDEN],
            p + "self_attn.q_proj.weight": [HEADS * HEAD_DIM, HIDDEN],
            p + "self_attn.k_proj.weight": [KV_HEADS * HEAD_DIM, HIDDEN],
            p + "self_attn.v_proj.weight": [KV_HEADS * HEAD_DIM, HIDDEN],
            p + "self_attn.o_proj.weight": [HIDDEN, HEADS * HEAD_DIM],
            p + "self_attn.q_norm.weight": [HEAD_DIM],
            p + "self_attn.k_norm.weight": [HEAD_DIM],
            p + "mlp.gate_proj.weight": [MLP, HIDDEN],
            p + "mlp.up_proj.weight": [MLP, HIDDEN],
            p + "mlp.down_proj.weight": [HIDDEN, MLP],
        })
    return shapes


def write_models(base: Path, child: Path, size_gb: float, seed: int = 1234) -> tuple[int, int]:
    """Write the base model and its child (every tensor nudged); return (tensors, bytes)."""
    import torch
    from safetensors.torch import save_file

    shapes = model_shapes(size_gb)
    g = torch.Generator().manual_seed(seed)
    tensors, nudged = {}, {}
    for name, shape in shapes.items():
        if len(shape) == 1:  # RMSNorm weights: around 1
            w = 1.0 + 0.05 * torch.randn(shape, generator=g)
        else:
            w = 0.02 * torch.randn(shape, generator=g)
        tensors[name] = w.to(torch.bfloat16)
        # a small training step: ~1% of the weight scale, so most bf16 values change by an ulp or so
        step = (0.01 * w.abs().mean()) * torch.randn(shape, generator=g)
        nudged[name] = (w + step).to(torch.bfloat16)
        del w, step
    cfg = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": shapes["model.embed_tokens.weight"][0],
           "hidden_size": HIDDEN, "intermediate_size": MLP, "num_hidden_layers": sum(1 for n in shapes if n.endswith("q_proj.weight")),
           "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM,
           "tie_word_embeddings": True, "torch_dtype": "bfloat16"}
    for folder, ts in ((base, tensors), (child, nudged)):
        folder.mkdir(parents=True)
        save_file(ts, str(folder / "model.safetensors"), metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        (folder / "generation_config.json").write_text(json.dumps({"do_sample": True, "temperature": 0.6}) + "\n")
    total = sum(p.stat().st_size for p in base.iterdir())
    return len(shapes), total


# ------------------------------------------------------------------------------ running things


@dataclass
class Step:
    seconds: float
    maxrss_kb: int


def run_timed(cmd: list[str], cwd: Path, env: dict | None = None, cold: bool = False) -> Step:
    """Run ``cmd``; wall seconds and the peak RSS of it (and of any child it waited for)."""
    # flush what earlier steps left dirty, so that no tool pays for another's writeback
    drop_caches() if cold else os.sync()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read() if p.stdout else b""
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)} in {cwd}\n{out.decode(errors='replace')}")
    return Step(dt, ru.ru_maxrss)


def sh(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    return r.stdout


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def can_drop_caches() -> bool:
    try:
        drop_caches()
        return True
    except OSError:
        return False


def copy_tree(src: Path, dst: Path) -> None:
    """Untimed set-up copy that keeps mtimes (the model was written earlier, as after training)."""
    sh(["cp", "-a", str(src), str(dst)])


def replace_contents(folder: Path, src: Path) -> None:
    """Put ``src``'s files into ``folder`` in place (new inodes, as a training run's save does)."""
    for p in src.iterdir():
        (folder / p.name).unlink(missing_ok=True)
        sh(["cp", "-a", str(p), str(folder / p.name)])


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir() if not p.name.startswith(".")):
        return False
    return all(subprocess.run(["cmp", "-s", str(a / n), str(b / n)]).returncode == 0 for n in names)


def du_bytes(path: Path) -> int:
    """Disk usage in bytes (allocated blocks), like ``du -sB1``."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for n in files:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def rmtree(path: Path) -> None:
    def onerror(func, p, _exc):
        os.chmod(os.path.dirname(p), 0o755)
        os.chmod(p, 0o755) if os.path.isdir(p) else None
        func(p)
    if path.exists():
        shutil.rmtree(path, onerror=onerror)


def lin_command(source: Path | None = None) -> list[str]:
    """The installed ``lin``, or the lin of another source tree (``--baseline-lin``)."""
    if source is not None:
        return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(source)!r}); "
                "from lineagestore.cli.main import run; sys.exit(run())"]
    exe = Path(sys.executable).parent / "lin"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("lin")
    return [found] if found else [sys.executable, "-c", "import sys; from lineagestore.cli.main import run; sys.exit(run())"]


def ensure_dvc() -> Path:
    dvc = DVC_VENV / "bin" / "dvc"
    if not dvc.exists():
        print(f"creating {DVC_VENV} with DVC (pip install dvc) ...", file=sys.stderr, flush=True)
        sh([sys.executable if sys.prefix == sys.base_prefix else sys.base_prefix + "/bin/python3", "-m", "venv", str(DVC_VENV)])
        sh([str(DVC_VENV / "bin" / "pip"), "install", "-q", "dvc"])
    return dvc


# ------------------------------------------------------------------------------ one tool each

STEPS = ["first commit", "re-commit unchanged", "child commit", "checkout (empty folder)", "checkout (switch)"]

# Each tool is a generator that does its untimed set-up, then yields (step, Step) once per timed
# step, in STEPS order, and finally ("store bytes", n). The driver advances all tools in lock
# step (step 1 of every tool, then step 2, ...), so that a burst of load from other processes
# lands on every tool alike rather than on whichever ran during it; each run rotates the order.


def bench_cp(work: Path, base: Path, child: Path, cold: bool):
    for i, (step, src) in enumerate(zip(STEPS, (base, base, child, base, child), strict=True)):
        dst = work / f"cp-{i}"
        yield step, run_timed(["cp", "-r", str(src), str(dst)], work, cold=cold)
        rmtree(dst)
    yield "store bytes", 0


def sh_out(cmd: list[str], cwd: Path, env: dict) -> str:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True).stdout


def compile_bytecode(source: Path | None) -> None:
    """Byte-compile the lin under test, as pip does for every installed package (DVC's included):
    an editable checkout under PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module
    from source at each start (~25 ms)."""
    import compileall

    import lineagestore
    root = (source / "lineagestore") if source is not None else Path(lineagestore.__file__).parent
    compileall.compile_dir(str(root), quiet=1)


def bench_lin(work: Path, base: Path, child: Path, cold: bool,
              settings: list[str] = (), source: Path | None = None):
    lin = lin_command(source)
    compile_bytecode(source)
    env = dict(os.environ, LIN_STORE=str(work / ".lineage"))
    sh(lin + ["-q", "init", str(work)], cwd=work, env=env)
    if settings:
        set_lin_config(work / ".lineage" / "config.toml", settings)
    model = work / "model"
    copy_tree(base, model)
    yield STEPS[0], run_timed(lin + ["-q", "import", "model", "--name", "base"], work, env, cold)
    # an unchanged folder is refused ("nothing to commit") unless --allow-empty, where lin has it;
    # the step measures the full re-commit (every file vouched for by the stat cache), as before
    same = ["--allow-empty"] if "--allow-empty" in sh_out(lin + ["commit", "--help"], work, env) else []
    yield STEPS[1], run_timed(lin + ["-q", "commit", "model", "--name", "same", *same], work, env, cold)
    replace_contents(model, child)
    yield STEPS[2], run_timed(lin + ["-q", "commit", "model", "--name", "child"], work, env, cold)
    size = du_bytes(work / ".lineage" / "objects")
    rmtree(model)
    yield STEPS[3], run_timed(lin + ["-q", "checkout", "v001"], work, env, cold)
    if not same_files(base, model):
        raise SystemExit("lin checkout of v001 is not byte-identical to the base model")
    yield STEPS[4], run_timed(lin + ["-q", "checkout", "v003"], work, env, cold)
    if not same_files(child, model):
        raise SystemExit("lin checkout of v003 is not byte-identical to the child model")
    yield "store bytes", size


def set_lin_config(path: Path, settings: list[str]) -> None:
    """Apply ``section.key=value`` settings (TOML values) to a store's config.toml."""
    import tomllib

    import tomli_w
    doc = tomllib.loads(path.read_text()) if path.exists() else {}
    for item in settings:
        key, _, value = item.partition("=")
        *sections, name = key.strip().split(".")
        node = doc
        for sec in sections:
            node = node.setdefault(sec, {})
        node[name] = tomllib.loads(f"v = {value.strip()}")["v"]
    path.write_text(tomli_w.dumps(doc))


def bench_dvc(work: Path, base: Path, child: Path, cold: bool, dvc: Path):
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    d = [str(dvc)]
    sh(d + ["init", "--no-scm", "-q"], cwd=work, env=env)
    sh(d + ["config", "core.analytics", "false"], cwd=work, env=env)
    sh(d + ["config", "core.check_update", "false"], cwd=work, env=env)
    model = work / "model"
    copy_tree(base, model)
    yield STEPS[0], run_timed(d + ["add", "-q", "model"], work, env, cold)
    shutil.copy(work / "model.dvc", work / "base.dvc.saved")
    yield STEPS[1], run_timed(d + ["add", "-q", "model"], work, env, cold)
    replace_contents(model, child)
    yield STEPS[2], run_timed(d + ["add", "-q", "model"], work, env, cold)
    shutil.copy(work / "model.dvc", work / "child.dvc.saved")
    size = du_bytes(work / ".dvc" / "cache")
    # checking out the base means: its .dvc file back in place (as `git checkout` would do)
    shutil.copy(work / "base.dvc.saved", work / "model.dvc")
    rmtree(model)
    yield STEPS[3], run_timed(d + ["checkout", "-q"], work, env, cold)
    if not same_files(base, model):
        raise SystemExit("dvc checkout is not byte-identical to the base model")
    shutil.copy(work / "child.dvc.saved", work / "model.dvc")
    yield STEPS[4], run_timed(d + ["checkout", "-q"], work, env, cold)
    if not same_files(child, model):
        raise SystemExit("dvc checkout is not byte-identical to the child model")
    yield "store bytes", size


# ------------------------------------------------------------------------------ report


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.processor())
    mem = next((int(ln.split()[1]) for ln in open("/proc/meminfo") if ln.startswith("MemTotal")), 0)
    return f"{os.cpu_count()} cores ({cpu}), {mem / 2**20:.0f} GiB RAM"


def disk(path: Path) -> str:
    st = os.statvfs(path)
    dev = fs = "?"
    best = ""
    for ln in open("/proc/mounts"):
        parts = ln.split()
        if str(path.resolve()).startswith(parts[1]) and len(parts[1]) >= len(best):
            best, dev, fs = parts[1], parts[0], parts[2]
    rot = "?"
    name = os.path.basename(dev)
    try:
        rot = "rotational=" + Path(f"/sys/block/{name}/queue/rotational").read_text().strip()
    except OSError:
        pass
    return f"{dev} ({fs}, {rot}), {st.f_bavail * st.f_frsize / 2**30:.0f} GiB free"


@dataclass
class Results:
    runs: list[dict[str, dict[str, Step]]] = field(default_factory=list)
    lin_store: list[int] = field(default_factory=list)
    dvc_cache: list[int] = field(default_factory=list)
    base_store: list[int] = field(default_factory=list)

    def times(self, tool: str, step: str) -> list[float]:
        return [r[tool][step].seconds for r in self.runs if tool in r]

    def rss(self, tool: str) -> int:
        return max((s.maxrss_kb for r in self.runs if tool in r for s in r[tool].values()), default=0)


TARGETS = {"first commit": 0.5, "re-commit unchanged": 0.3, "checkout (empty folder)": 1.0}


def table(res: Results, has_dvc: bool, has_base: bool = False) -> str:
    def fmt(ts: list[float]) -> str:
        if not ts:
            return "-"
        if len(ts) == 1:
            return f"{ts[0]:.2f}"
        return f"{statistics.median(ts):.2f} ({min(ts):.2f}-{max(ts):.2f})"

    def ratio(a: list[float], b: list[float]) -> str:
        if not a or not b:
            return "-"
        r = f"{statistics.median(a) / statistics.median(b):.2f}x"
        return r if len(a) == 1 else r + f" ({min(a) / min(b):.2f}x)"

    base_head = " baseline lin s | lin/baseline |" if has_base else ""
    head = f"| step | lin s | cp s | dvc s | lin/cp | lin/dvc | target (lin/dvc) |{base_head}"
    lines = [head, "|" + "---|" * (9 if has_base else 7)]
    for step in STEPS:
        lt, ct, dt = res.times("lin", step), res.times("cp", step), res.times("dvc", step)
        tgt = TARGETS.get(step)
        met = ""
        if tgt is not None and lt and dt:
            met = (" met" if statistics.median(lt) / statistics.median(dt) <= tgt else " MISSED")
        row = (f"| {step} | {fmt(lt)} | {fmt(ct)} | {fmt(dt) if has_dvc else '-'} | {ratio(lt, ct)} | "
               f"{ratio(lt, dt) if has_dvc else '-'} | {f'<= {tgt:.1f}x{met}' if tgt else ''} |")
        if has_base:
            bt = res.times("baseline", step)
            row += f" {fmt(bt)} | {ratio(lt, bt)} |"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--write-models"]:
        print(json.dumps(write_models(Path(argv[1]), Path(argv[2]), float(argv[3]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=1.2, help="model size (default 1.2, like Qwen3-0.6B in bf16)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to work (default: a new folder under /tmp)")
    ap.add_argument("--skip-dvc", action="store_true", help="compare with cp only")
    ap.add_argument("--repeat", type=int, default=1, help="run every tool N times; the table shows median (min-max)")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before each timed step (root)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw figures to this file")
    ap.add_argument("--baseline-lin", type=Path, default=None, metavar="DIR",
                    help="also run the lin of this source tree (DIR/lineagestore), e.g. before a change")
    ap.add_argument("--lin-config", action="append", default=[], metavar="KEY=VALUE",
                    help="a non-default store setting for lin (not the baseline), e.g. core.compression_level=1")
    args = ap.parse_args(argv)

    import tempfile
    base_dir = Path(tempfile.mkdtemp(prefix="lin-bench-", dir=args.workdir)).resolve()
    # base + child, and for each of lin, baseline lin and dvc at once: work folder + two versions
    need = args.size_gb * 1e9 * (2 + 3 * 3 + 1)
    free = shutil.disk_usage(base_dir).free
    if free < need:
        raise SystemExit(f"{base_dir}: {free / 1e9:.1f} GB free, the benchmark needs about {need / 1e9:.1f} GB")
    if args.cold and not can_drop_caches():
        raise SystemExit("--cold: cannot write /proc/sys/vm/drop_caches here (not root, or a container)")
    dvc = None if args.skip_dvc else ensure_dvc()
    try:
        t0 = time.perf_counter()
        base, child = base_dir / "src" / "base", base_dir / "src" / "child"
        # in a child process, so that this one stays small: a forked child's ru_maxrss starts
        # from its parent's RSS, and torch plus two models would be counted as lin's peak
        out = sh([sys.executable, str(Path(__file__).resolve()), "--write-models", str(base), str(child), str(args.size_gb)])
        n_tensors, n_bytes = json.loads(out)
        print(f"model: {n_tensors} tensors, {n_bytes / 1e9:.2f} GB (written in {time.perf_counter() - t0:.0f}s) in {base_dir}",
              file=sys.stderr, flush=True)
        res = Results()
        for i in range(args.repeat):
            tools = {"cp": bench_cp, "lin": bench_lin}
            if args.baseline_lin is not None:
                tools["baseline"] = bench_lin
            if dvc is not None:
                tools["dvc"] = bench_dvc
            gens = {}
            for tool, fn in tools.items():
                work = base_dir / f"{tool}-{i}"
                work.mkdir()
                extra = {"lin": (args.lin_config,), "baseline": ([], args.baseline_lin), "dvc": (dvc,)}.get(tool, ())
                gens[tool] = (work, fn(work, base, child, args.cold, *extra))
            run: dict[str, dict[str, Step]] = {t: {} for t in tools}
            for step in STEPS + ["store bytes"]:
                if step != "store bytes":
                    print(f"run {i + 1}/{args.repeat}: {step} (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
                order = list(gens)
                order = order[i % len(order):] + order[:i % len(order)]  # no tool always goes first
                for tool in order:
                    work, gen = gens[tool]
                    got, value = next(gen)
                    assert got == step, (tool, got, step)
                    if step != "store bytes":
                        run[tool][step] = value
                    elif tool in ("lin", "baseline", "dvc"):
                        {"lin": res.lin_store, "baseline": res.base_store, "dvc": res.dvc_cache}[tool].append(value)
            for work, gen in gens.values():
                gen.close()
                rmtree(work)
            res.runs.append(run)
        load = os.getloadavg()
        print()
        print(f"model: {n_tensors} tensors, {n_bytes / 1e9:.2f} GB bf16 safetensors (Qwen3-0.6B shapes, scaled to {args.size_gb} GB)")
        print(f"machine: {machine()}; disk {disk(base_dir)}; page cache {'dropped before each step' if args.cold else 'warm'}")
        print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; runs: {args.repeat}"
              + (f"; lin settings: {', '.join(args.lin_config)}" if args.lin_config else "; lin default settings"))
        print()
        print(table(res, dvc is not None, args.baseline_lin is not None))
        if args.repeat > 1:
            print("seconds: median (min-max) of the runs; ratios: of the medians (of the minimums)")
        print()
        lin_size = max(res.lin_store)
        line = f"store size after base + child: lin {lin_size / 1e9:.2f} GB"
        if res.dvc_cache:
            d = max(res.dvc_cache)
            line += f", DVC cache {d / 1e9:.2f} GB (lin/dvc {lin_size / d:.2f}x)"
        if res.base_store:
            line += f", baseline lin {max(res.base_store) / 1e9:.2f} GB"
        print(line + f"; model {n_bytes / 1e9:.2f} GB")
        rss = res.rss("lin")
        print(f"peak RSS: lin {rss / 2**20:.2f} GiB (target <= 1 GiB: {'met' if rss <= 2**20 else 'MISSED'})"
              + (f", dvc {res.rss('dvc') / 2**20:.2f} GiB" if dvc else "")
              + (f", baseline lin {res.rss('baseline') / 2**20:.2f} GiB" if args.baseline_lin else ""))
        if args.json:
            args.json.write_text(json.dumps({
                "size_gb": args.size_gb, "bytes": n_bytes, "machine": machine(), "load": load, "cold": args.cold,
                "runs": [{t: {s: vars(v) for s, v in r.items()} for t, r in run.items()} for run in res.runs],
                "lin_store": res.lin_store, "dvc_cache": res.dvc_cache, "baseline_store": res.base_store,
                "lin_settings": args.lin_config, "baseline_lin": str(args.baseline_lin or "")}, indent=1))
    finally:
        if not args.keep:
            rmtree(base_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
