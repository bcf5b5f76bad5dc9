#!/usr/bin/env python3
"""A Qwen3-0.6B-shaped bf16 lineage trained for real, committed and repacked by lin, against DVC,
zstd -3 and ZipNN (docs/benchmarks.md "A Qwen3-shaped lineage"). Run under nice:

    nice .venv/bin/python benchmarks/bench_lineage.py [--children 10] [--steps 3] [--workdir DIR]
    nice .venv/bin/python benchmarks/bench_lineage.py --small        # 2 layers instead of 28
    nice .venv/bin/python benchmarks/bench_lineage.py --step-only    # time 3 AdamW steps, no store

The model: transformers' Qwen3ForCausalLM from a Qwen3Config with Qwen3-0.6B's shapes (vocab
151936, hidden 1024, 28 layers, 16 query / 8 key-value heads of 128, MLP 3072, tied embeddings:
596M parameters, 1.19 GB in bf16), its weights drawn by bench_commit.write_models (the model
bench_commit.py commits; its nudged child is discarded). ``--small`` keeps the embedding, the
final norm and the first ``--layers`` decoder layers of the same draw (2 layers: 0.37 GB), for
machines where a 0.6B step is too slow or too large. Nothing is downloaded.

The lineage: the drawn weights upcast to fp32 master weights; each of ``--children`` children
after ``--steps`` AdamW steps (lr 2e-5, torch's defaults otherwise) of causal-LM loss on real
text, saved as bf16 safetensors. The text is the King James Bible (tools/samples.py), tokenized
with the GPT-2 BPE tools/samples.py loads: its ids (< 50,259) are below the vocabulary (151,936),
so they index Qwen3's embedding directly; windows of ``--seq`` tokens, ``--batch`` a step.

Each version is committed as a user does (``lin import model`` then ``lin commit model`` in a
work folder, real processes), then ``lin repack`` with core.hot_versions = 1 and the default
core.keyframe_interval (as `lin run` repacks after each version). At the end, with
bench_storage._repack_and_read, every version is read back (every cold chain decoded and
verified) and timed. Reported, as JSON on stdout (and ``--json FILE``):

- the store (objects/) against DVC's cache (one copy per distinct file: the sum of the model
  files), against ``zstd -3`` of each file, against ZipNN 0.5.4 of each model (per tensor, bf16
  byte grouping) and ZipNN of each child's XOR with its parent (a delta the ZipNN way);
- stored/raw per version and per dtype (each piece counted in the oldest version holding it);
- MB/s of each ``lin repack`` (raw bytes it packed per second), GB/s of each version read back,
  the AdamW step times (forward + backward, optimizer) and the peak RSS of this process.

The work folder (``--workdir``, default a temporary folder; needs ~20 GB free for the full
model) is removed at the end unless ``--keep``. Nothing here is a test; no timed assertions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (ROOT, HERE, ROOT / "tools", ROOT / "tests"):
    sys.path.insert(0, str(p))

import bench_commit  # noqa: E402
import bench_storage  # noqa: E402
from bench_codecs import zipnn_row  # noqa: E402

from lineagestore import Repo  # noqa: E402
from lineagestore.core.settings import CoreSettings  # noqa: E402

FULL_GB = bench_commit.FULL_PARAMS * 2 / 1e9


# ------------------------------------------------------------------------------ the model


def qwen3_config(layers: int):
    from transformers import Qwen3Config
    return Qwen3Config(vocab_size=bench_commit.VOCAB, hidden_size=bench_commit.HIDDEN, num_hidden_layers=layers,
                       num_attention_heads=bench_commit.HEADS, num_key_value_heads=bench_commit.KV_HEADS,
                       head_dim=bench_commit.HEAD_DIM, intermediate_size=bench_commit.MLP, tie_word_embeddings=True,
                       max_position_embeddings=4096)


def drawn_weights(work: Path, layers: int) -> dict:
    """The bf16 tensors bench_commit.write_models draws for the full model, the first ``layers``
    decoder layers kept."""
    from safetensors.torch import load_file
    base, child = work / "drawn" / "base", work / "drawn" / "child"
    bench_commit.write_models(base, child, FULL_GB)
    tensors = load_file(str(base / "model.safetensors"))
    bench_commit.rmtree(work / "drawn")
    keep = {f"model.layers.{i}." for i in range(layers)}
    return {n: t for n, t in tensors.items() if not n.startswith("model.layers.") or n[:n.index(".", 13) + 1] in keep}


def build_model(tensors: dict, layers: int):
    """Qwen3ForCausalLM in fp32 (the master weights) holding the drawn bf16 values exactly."""
    import torch
    from transformers import Qwen3ForCausalLM
    model = Qwen3ForCausalLM(qwen3_config(layers)).float()
    missing, unexpected = model.load_state_dict({n: t.float() for n, t in tensors.items()}, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise SystemExit(f"drawn tensors do not fit the config: missing {missing}, unexpected {unexpected}")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    model.train()
    torch.manual_seed(0)
    return model


def token_windows(count: int, seq: int) -> list[list[int]]:
    """``count`` consecutive windows of ``seq`` GPT-2 ids of King James verses (EOS between)."""
    import samples
    tok = samples.gpt2_tokenizer()
    ids: list[int] = []
    for rec in samples.bible_records(0, None):
        ids += tok(rec["text"])["input_ids"] + [samples.GPT2_VOCAB_SIZE - 1]
        if len(ids) >= count * seq:
            break
    out = [ids[i * seq:(i + 1) * seq] for i in range(count)]
    if len(out[-1]) < seq or max(map(max, out)) >= bench_commit.VOCAB:
        raise SystemExit("not enough text, or a token id beyond the vocabulary")
    return out


def save_bf16(model, names: list[str], folder: Path) -> dict:
    """The master weights cast to bf16 and written as model.safetensors (+ config.json)."""
    import torch
    from safetensors.torch import save_file
    state = model.state_dict()
    out = {n: state[n].detach().to(torch.bfloat16).contiguous() for n in names}
    tmp = folder / "model.safetensors.tmp"
    save_file(out, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, folder / "model.safetensors")
    return out


def train_steps(model, opt, windows: list[list[int]], batch: int) -> list[dict]:
    import torch
    times = []
    for i in range(0, len(windows), batch):
        ids = torch.tensor(windows[i:i + batch])
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        t1 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append({"fwd_bwd_s": round(t1 - t, 2), "adamw_s": round(time.perf_counter() - t1, 2),
                      "loss": round(float(loss.detach()), 3)})
    return times


# ------------------------------------------------------------------------------ the baselines


def zstd3_bytes(path: Path) -> tuple[int, float]:
    """Size of ``zstd -3`` of the file (one thread, as the CLI's default) and its seconds."""
    t = time.perf_counter()
    p = subprocess.run(["zstd", "-3", "-q", "-c", str(path)], stdout=subprocess.PIPE, check=True)
    return len(p.stdout), time.perf_counter() - t


def zipnn_sizes(tensors: dict, parent: dict | None) -> dict:
    """ZipNN (bf16 byte grouping, one thread) of every tensor, and of its XOR with the parent's:
    stored bytes and seconds, through bench_codecs.zipnn_row (a copy given: it may modify it)."""
    import torch
    out = {"zipnn_bytes": 0, "zipnn_s": 0.0, "zipnn_xor_bytes": 0, "zipnn_xor_s": 0.0}
    for name, t in tensors.items():
        raw = t.view(dtype=torch.uint16).numpy().tobytes()
        pieces = [(name, raw, 2)]
        r = zipnn_row(pieces, "bfloat16")
        out["zipnn_bytes"] += round(r["ratio"] * len(raw))
        out["zipnn_s"] += len(raw) / 1e6 / r["encode_mb_s"]
        if parent is not None:
            p = parent[name].view(dtype=torch.uint16).numpy().reshape(-1)
            xor = (np.frombuffer(raw, np.uint16) ^ p).tobytes()
            r = zipnn_row([(name, xor, 2)], "bfloat16")
            out["zipnn_xor_bytes"] += round(r["ratio"] * len(raw))
            out["zipnn_xor_s"] += len(raw) / 1e6 / r["encode_mb_s"]
    return out


def baselines(folder: Path, dvc_files: dict[str, int], bf16: dict, parent: dict | None, zipnn: bool) -> dict:
    """The version's raw size, ``zstd -3`` of its files and (with ``zipnn``) ZipNN of its tensors;
    its files recorded by md5 in ``dvc_files`` (DVC's cache keeps one copy per distinct file)."""
    files = list(folder.iterdir())
    for f in files:
        dvc_files[md5(f)] = f.stat().st_size
    zs = [zstd3_bytes(f) for f in files]
    row: dict = {"raw_bytes": sum(f.stat().st_size for f in files), "zstd3_bytes": sum(z[0] for z in zs),
                 "zstd3_s": round(sum(z[1] for z in zs), 1)}
    if zipnn:
        row.update({k: (round(x, 1) if isinstance(x, float) else x) for k, x in zipnn_sizes(bf16, parent).items()})
    return row


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------ the store


def per_version(store_path: Path) -> list[dict]:
    """Stored/raw of each version, by dtype; every piece counted once, in the oldest version
    holding it (file content outside tensors under "other")."""
    from lineagestore.versions.materialize import _content_parts
    from lineagestore.versions.models import walk_tree
    repo = Repo.open(store_path)
    store, seen, rows = repo.objects, set(), []
    for name in sorted(repo.versions()):
        by: dict[str, list[int]] = {}
        for f in walk_tree(store, repo.commit(repo.resolve(name)).tree):
            if f.type == "tensor-file":
                parts = [(t.dtype, oid, n) for t in store.get(f.id, "tensor-file").entries() if t.size
                         for oid, n in _content_parts(store, t.id, t.size)]
            else:
                parts = [("other", oid, n) for oid, n in _content_parts(store, f.id, f.size)]
            for dtype, oid, n in parts:
                row = by.setdefault(dtype, [0, 0])
                row[0] += n
                if oid not in seen:
                    seen.add(oid)
                    row[1] += store.stored_size(oid)
        raw, stored = sum(r[0] for r in by.values()), sum(r[1] for r in by.values())
        rows.append({"version": name, "raw_bytes": raw, "stored_bytes": stored,
                     "stored_vs_raw": round(stored / raw, 4),
                     "by_dtype": {d: round(s / r, 4) for d, (r, s) in by.items()}})
    return rows


def lin_json(lin: list[str], args: list[str], cwd: Path, env: dict) -> tuple[dict, float]:
    t = time.perf_counter()
    p = subprocess.run(lin + args + ["--json"], cwd=cwd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"lin {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return json.loads(p.stdout), dt


# ------------------------------------------------------------------------------ the run


def run(args: argparse.Namespace, work: Path) -> dict:
    import torch
    torch.set_num_threads(args.threads)
    layers = args.layers if args.small else bench_commit.LAYERS
    out: dict = {"machine": bench_commit.machine(), "python": platform.python_version(), "torch": torch.__version__,
                 "layers": layers, "children": args.children, "steps": args.steps, "seq": args.seq,
                 "batch": args.batch, "threads": args.threads, "load_start": round(os.getloadavg()[0], 1)}
    t = time.perf_counter()
    tensors = drawn_weights(work, layers)
    out["draw_s"] = round(time.perf_counter() - t, 1)
    names = list(tensors)
    out["params"] = sum(t.numel() for t in tensors.values())
    model = build_model(tensors, layers)
    del tensors
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
    windows = token_windows(max(1, args.children) * args.steps * args.batch, args.seq)
    if args.step_only:
        out["step_times"] = train_steps(model, opt, windows[:3 * args.batch], args.batch)
        out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
        return out

    lin = bench_commit.lin_command()
    bench_commit.compile_bytecode(None)
    env = dict(os.environ, LIN_STORE=str(work / ".lineage"), LIN_NO_PROGRESS="1")
    bench_commit.sh(lin + ["-q", "init", str(work)], cwd=work, env=env)
    bench_commit.set_lin_config(work / ".lineage" / "config.toml", ["core.hot_versions=1"])
    folder = work / "model"
    folder.mkdir()
    qwen3_config(layers).to_json_file(str(folder / "config.json"))
    dvc_files: dict[str, int] = {}  # md5 -> size: DVC's cache keeps one copy per distinct file
    versions, parent, step_times = [], None, []
    for v in range(args.children + 1):
        row: dict = {"version": v}
        if v:
            st = train_steps(model, opt, windows[(v - 1) * args.steps * args.batch:v * args.steps * args.batch], args.batch)
            step_times += st
            row["loss"] = st[-1]["loss"]
        bf16 = save_bf16(model, names, folder)  # v0: the drawn values, exact in fp32 and back
        row.update(baselines(folder, dvc_files, bf16, parent, not args.skip_zipnn))
        parent = bf16
        _, secs = lin_json(lin, ["import" if v == 0 else "commit", "model", "--name", "base" if v == 0 else f"child{v}"], work, env)
        row["commit_s"] = round(secs, 1)
        if v:
            rep, secs = lin_json(lin, ["repack"], work, env)
            # a repack that merges smaller packs (guard.repack.packs_to_merge) copies their stored
            # bytes, not encoding them: its MB/s is no encoding rate, so it is marked and left out below
            row["repack"] = {"raw_bytes": rep["raw_bytes"], "stored_bytes": rep["stored_bytes"], "codecs": rep["codecs"],
                             "seconds": round(secs, 1), "mb_s": round(rep["raw_bytes"] / 1e6 / secs, 1),
                             "merged": bool(rep["packs_removed"])}
        row["store_bytes"] = bench_storage._store_bytes(work / ".lineage")
        row["load"] = round(os.getloadavg()[0], 1)
        versions.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    del model, opt, parent, bf16
    out["versions"] = versions
    out["step_times"] = step_times
    out["step_s_median"] = round(statistics.median(s["fwd_bwd_s"] + s["adamw_s"] for s in step_times), 1) if step_times else None
    out["dvc_cache_bytes"] = sum(dvc_files.values())
    out["zstd3_bytes"] = sum(r["zstd3_bytes"] for r in versions)
    if not args.skip_zipnn:
        out["zipnn_bytes"] = sum(r["zipnn_bytes"] for r in versions)
        out["zipnn_delta_bytes"] = versions[0]["zipnn_bytes"] + sum(r["zipnn_xor_bytes"] for r in versions[1:])
    interval = CoreSettings().keyframe_interval
    out["store"] = bench_storage._repack_and_read(work / ".lineage", interval, out["dvc_cache_bytes"])
    out["store"]["keyframe_interval"] = interval
    rates = out["store"]["decode_gb_s"]
    cold = sorted(r for name, r in rates.items() if name != max(rates))  # the tip is hot (raw)
    out["store"]["cold_read_gb_s"] = {"worst": cold[0], "median": statistics.median(cold), "best": cold[-1]} if cold else None
    out["per_version"] = per_version(work / ".lineage")
    repacked = [r["repack"] for r in versions if "repack" in r and not r["repack"]["merged"]]
    if repacked:  # the repacks that encoded newly cold versions into one new pack each
        out["repack_encode_mb_s"] = round(sum(r["raw_bytes"] for r in repacked) / 1e6 / sum(r["seconds"] for r in repacked), 1)
    out["load_end"] = round(os.getloadavg()[0], 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="keep only --layers decoder layers of the drawn model")
    ap.add_argument("--layers", type=int, default=2, help="decoder layers with --small (default 2)")
    ap.add_argument("--children", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3, help="AdamW steps before each child")
    ap.add_argument("--seq", type=int, default=64, help="tokens per sequence")
    ap.add_argument("--batch", type=int, default=1, help="sequences per step")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--workdir", type=Path, default=None, help="where the store and model go (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="leave the work folder in place")
    ap.add_argument("--skip-zipnn", action="store_true")
    ap.add_argument("--step-only", action="store_true", help="only time 3 AdamW steps (memory and seconds)")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-lineage-", dir=args.workdir))
    try:
        out = run(args, work)
    finally:
        if not args.keep:
            bench_commit.rmtree(work)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
