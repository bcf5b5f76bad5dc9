"""JSONL files -> tokenized training examples, and the deterministic order they are trained in.

Record shapes (one JSON object per line; blank lines are skipped; ``.jsonl.gz`` and
``.jsonl.zst`` files are read through their decompressor):

- ``{"text": ...}``: plain text; every token is a target; EOS is appended.
- ``{"messages": [{"role": ..., "content": ...}, ...]}`` (or ShareGPT ``"conversations"`` with
  ``from``/``value``): rendered with the tokenizer's chat template; only the assistant turns
  (their content and end-of-turn marker) are targets.
- ``{"prompt": ..., "completion": ...}`` or ``{"instruction": ..., "input": ..., "output": ...}``:
  the completion/output (plus EOS) is the target.

Each example keeps the record id of its line (docs/data.md, "Record ids"), so what a run trained
can be recorded record by record. Tokenized files are cached in ``.lineage/cache/tokens/``
(derived data, keyed by the file's fingerprint and the tokenizer), so a resumed run does not
tokenize again. While a file is read
its content id is recomputed and compared with the registered fingerprint: a file that changed
since the plan is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import blake3
import numpy as np

from ..core.errors import Conflict, MalformedFile, NotFound
from ..core.ids import hash_object
from ..core.objects import CHUNK_SIZE, Chunks
from ..core.progress import NULL, Progress
from ..core.settings import DataSettings

#: bump when the way records become tokens changes (invalidates the token cache); 2: record ids kept
TOKENIZATION_VERSION = 2
IGNORE = -100
RID_DTYPE = np.dtype("S16")  # a record id (lineagestore.data.records.ID_BYTES bytes)
_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "</s>", "<end_of_turn>", "<|endoftext|>")
def tokenizer_id(tok: Any) -> str:
    """A fingerprint of a tokenizer's behaviour (vocabulary, merges, specials, chat template)."""
    h = blake3.blake3()
    backend = getattr(tok, "backend_tokenizer", None)
    h.update((backend.to_str() if backend is not None else repr(sorted(tok.get_vocab().items()))).encode())
    h.update(repr((getattr(tok, "chat_template", None), tok.bos_token, tok.eos_token,
                   tok.pad_token)).encode())
    return h.hexdigest()[:32]


# ------------------------------------------------------------------------------ reading files


def read_verified_lines(path: Path, expect: str | None,
                        max_record_bytes: int = DataSettings.max_record_bytes) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line number, line)`` of a file while recomputing its content id (as the store
    computes it: one blob, or 16 MiB blobs listed by a chunks object); raise Conflict at the
    end if it differs from ``expect``. Lines are read as the registry reads them
    (:func:`lineagestore.data.records.bounded_lines`): decompressed in bounded pieces, and a line
    over ``max_record_bytes`` (``data.max_record_bytes``) is refused naming the file and line."""
    try:
        size = path.stat().st_size
        f = open(path, "rb")
    except FileNotFoundError:
        raise NotFound(f"{path}: no such data file") from None
    from ..data.records import Decoder, bounded_lines, detect_format
    decoder = Decoder(detect_format(path.name), str(path))  # .jsonl, .jsonl.gz, .jsonl.zst
    parts: list[list] = []

    def decoded() -> Iterator[bytes]:
        while piece := f.read(CHUNK_SIZE):
            parts.append([hash_object("blob", piece), len(piece)])
            yield from decoder.pieces(piece)
        decoder.finish()  # refuses a compressed stream cut short

    with f:
        yield from bounded_lines(decoded(), path, max_record_bytes)
    total = sum(n for _, n in parts)
    if total != size:
        raise Conflict(f"{path}: changed while it was being read; run the command again")
    if expect is None:
        return
    if len(parts) <= 1:
        actual = parts[0][0] if parts else hash_object("blob", b"")
    else:
        actual = hash_object("chunks", Chunks(size=total, parts=parts).encode())
    if actual != expect:
        raise Conflict(f"{path}: its content changed since it was registered or planned "
                       f"(fingerprint {actual[:12]}, expected {expect[:12]})",
                       hint="plan again: the changed file is new data and must be registered")


# ------------------------------------------------------------------------------ records


@dataclass
class Segment:
    text: str
    target: bool
    special: bool = False  # tokenize with the tokenizer's special tokens (BOS) added


def record_segments(rec: Any, tok: Any, where: str) -> list[Segment]:
    """Split a record into text segments, each a target or not."""
    if not isinstance(rec, dict):
        raise MalformedFile(f"{where}: expected a JSON object, found {type(rec).__name__}")
    from ..data.records import chat_messages, pair_parts, record_kind
    kind, reason = record_kind(rec)  # the registry's rules, so both see the same record
    if kind == "text":
        return [Segment(rec["text"], True, special=True)]
    if kind == "chat":
        return _chat_segments(chat_messages(rec), tok, where)
    if kind == "pair":
        prompt, completion = pair_parts(rec)
        return [Segment(prompt, False, special=True), Segment(completion, True)]
    raise MalformedFile(f"{where}: {reason}",
                        hint='use {"text": ...}, {"messages": [...]}, {"conversations": [...]}, '
                             '{"prompt": ..., "completion": ...} or {"instruction": ..., "output": ...}')


def _chat_segments(msgs: list, tok: Any, where: str) -> list[Segment]:
    clean = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise MalformedFile(f"{where}: message {i} needs a string 'role' and 'content'")
        clean.append({"role": m["role"], "content": m["content"]})
    if not clean:
        raise MalformedFile(f"{where}: no messages")
    if not any(m["role"] == "assistant" for m in clean):
        raise MalformedFile(f"{where}: no assistant message to train on")
    render = _renderer(tok)
    segs: list[Segment] = []
    done = ""
    try:
        for i, m in enumerate(clean):
            if m["role"] != "assistant":
                continue
            prompt = render(clean[:i], True)
            full = render(clean[:i + 1], False)
            if not (prompt.startswith(done) and full.startswith(prompt)):
                raise _NotPrefix
            segs.append(Segment(prompt[len(done):], False))
            segs.append(Segment(full[len(prompt):], True))
            done = full
        whole = render(clean, False)
        if not whole.startswith(done):
            raise _NotPrefix
        if whole[len(done):]:
            segs.append(Segment(whole[len(done):], False))
        return [s for s in segs if s.text]
    except _NotPrefix:
        return _chat_segments_by_search(clean, render(clean, False), tok)


class _NotPrefix(Exception):
    pass


def _chat_segments_by_search(msgs: list, text: str, tok: Any) -> list[Segment]:
    """For templates that rewrite earlier turns: find each assistant content in the rendering."""
    segs: list[Segment] = []
    pos = 0
    markers = [m for m in (*_END_MARKERS, tok.eos_token) if m]
    for m in msgs:
        if m["role"] != "assistant" or not m["content"]:
            continue
        start = text.find(m["content"], pos)
        if start < 0:
            continue
        end = start + len(m["content"])
        for mark in markers:
            if text.startswith(mark, end):
                end += len(mark)
                break
        segs.append(Segment(text[pos:start], False))
        segs.append(Segment(text[start:end], True))
        pos = end
    segs.append(Segment(text[pos:], False))
    return [s for s in segs if s.text]


def _renderer(tok: Any):
    if getattr(tok, "chat_template", None):
        def render(msgs: list, gen: bool) -> str:
            if not msgs:
                return tok.apply_chat_template([], tokenize=False, add_generation_prompt=gen) if gen else ""
            return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        return render

    def chatml(msgs: list, gen: bool) -> str:  # no template: ChatML as plain text
        out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs)
        return out + ("<|im_start|>assistant\n" if gen else "")
    return chatml


# ------------------------------------------------------------------------------ tokenizing


@dataclass
class TokenizedFile:
    path: str
    fingerprint: str | None
    examples: int
    tokens: int
    targets: int
    skipped_lines: int = 0


@dataclass
class TokenizedData:
    """All examples concatenated: ``ids`` and ``mask`` (1 = target) with example ``offsets``;
    ``rids``: each example's record id (``S16``). The examples of ``files[i]`` follow those of
    ``files[i - 1]``."""

    ids: np.ndarray
    mask: np.ndarray
    offsets: np.ndarray
    tokenizer: str
    files: list[TokenizedFile] = field(default_factory=list)
    rids: np.ndarray = field(default_factory=lambda: np.zeros(0, RID_DTYPE))

    def file_examples(self, i: int) -> slice:
        """The examples of ``files[i]``."""
        start = sum(f.examples for f in self.files[:i])
        return slice(start, start + self.files[i].examples)

    def select(self, keep: np.ndarray) -> TokenizedData:
        """Only the examples where ``keep`` is true (each file's counts follow)."""
        keep = np.asarray(keep, dtype=bool)
        if keep.all():
            return self
        bounds = np.asarray(self.offsets, dtype=np.int64)
        lengths = np.diff(bounds)
        tokens = np.repeat(keep, lengths)
        offsets = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
        np.cumsum(lengths[keep], out=offsets[1:])
        mask = np.asarray(self.mask)[tokens]
        files = []
        for i, f in enumerate(self.files):
            k = keep[self.file_examples(i)]
            sel = np.repeat(k, lengths[self.file_examples(i)])
            start = int(np.asarray(self.offsets)[self.file_examples(i).start])
            fmask = np.asarray(self.mask)[start:start + len(sel)][sel]
            files.append(replace(f, examples=int(k.sum()), tokens=int(sel.sum()), targets=int(fmask.sum())))
        return TokenizedData(np.asarray(self.ids)[tokens], mask, offsets, self.tokenizer, files,
                             np.asarray(self.rids)[keep])

    @property
    def examples(self) -> int:
        return len(self.offsets) - 1

    @property
    def tokens(self) -> int:
        return int(len(self.ids))

    @property
    def targets(self) -> int:
        return int(self.mask.sum())


#: what :func:`tokenize_file` returns: token ids, loss mask, example offsets, record ids, counts
Tokenized = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, TokenizedFile]


def parse_record(line: bytes, lineno: int, where: str) -> tuple[bytes, Any]:
    """(record id, record) of a non-blank line, as the registry parses it; MalformedFile if it is
    not a JSON object (the registry's reason)."""
    from ..data.records import PARSER
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedFile(f"{where}: not valid UTF-8 ({e.reason} at column {e.start + 1})") from None
    if lineno == 1:
        text = text.removeprefix("\ufeff")
    parsed, reason = PARSER.parse(text)
    if parsed is None:
        raise MalformedFile(f"{where}: {reason}")
    return parsed[0], parsed[1]


def tokenize_file(path: Path, tok: Any, *, fingerprint: str | None = None, skip_bad_lines: bool = False,
                  progress: Progress = NULL, batch: int = 512,
                  max_record_bytes: int = DataSettings.max_record_bytes) -> Tokenized:
    eos = tok.eos_token_id
    ids_parts: list[np.ndarray] = []
    mask_parts: list[np.ndarray] = []
    lengths: list[int] = []
    rids: list[bytes] = []
    skipped = 0
    pending: list[list[Segment]] = []
    pending_rids: list[bytes] = []

    def flush() -> None:
        flat = [s for segs in pending for s in segs]
        plain = [s.text for s in flat if not s.special]
        special = [s.text for s in flat if s.special]
        enc_plain = tok(plain, add_special_tokens=False)["input_ids"] if plain else []
        enc_special = tok(special, add_special_tokens=True)["input_ids"] if special else []
        ip = iter(enc_plain)
        isp = iter(enc_special)
        for rid, segs in zip(pending_rids, pending, strict=True):
            ids: list[int] = []
            mask: list[int] = []
            for s in segs:
                t = next(isp) if s.special else next(ip)
                ids.extend(t)
                mask.extend([1 if s.target else 0] * len(t))
            if eos is not None and segs and segs[-1].target and segs[-1].text and (not ids or ids[-1] != eos) \
                    and not _ends_with_marker(segs[-1].text):
                ids.append(eos)
                mask.append(1)
            if not ids:
                continue
            ids_parts.append(np.asarray(ids, dtype=np.int32))
            mask_parts.append(np.asarray(mask, dtype=np.uint8))
            lengths.append(len(ids))
            rids.append(rid)
        pending.clear()
        pending_rids.clear()

    progress.start(f"tokenizing {path.name}", path.stat().st_size if path.exists() else None, "B")
    try:
        for lineno, line in read_verified_lines(path, fingerprint, max_record_bytes):
            progress.advance(len(line) + 1)
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rid, rec = parse_record(line, lineno, where)
                pending.append(record_segments(rec, tok, where))
                pending_rids.append(rid)
            except MalformedFile:
                if not skip_bad_lines:
                    raise
                skipped += 1
                continue
            if len(pending) >= batch:
                flush()
        flush()
    finally:
        progress.finish()
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int32)
    mask = np.concatenate(mask_parts) if mask_parts else np.zeros(0, np.uint8)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    info = TokenizedFile(str(path), fingerprint, len(lengths), int(len(ids)), int(mask.sum()), skipped)
    return ids, mask, offsets, np.array(rids, dtype=RID_DTYPE), info


def _ends_with_marker(text: str) -> bool:
    t = text.rstrip()
    return any(t.endswith(m) for m in _END_MARKERS)


def load_data(files: list[tuple[Path, str | None]], tok: Any, *, cache_dir: Path | None = None,
              skip_bad_lines: bool = False, progress: Progress = NULL,
              max_record_bytes: int = DataSettings.max_record_bytes) -> TokenizedData:
    """Tokenize (or load from the cache) each ``(path, fingerprint)`` and concatenate in order;
    a line over ``max_record_bytes`` is refused naming its file and line."""
    tid = tokenizer_id(tok)
    ids_l, mask_l, rid_l, infos = [], [], [], []
    off_l: list[np.ndarray] = []  # each file's example offsets, moved to where its tokens go
    base = 0
    for path, fp in files:
        got = _cache_load(cache_dir, fp, tid) if (cache_dir is not None and fp) else None
        if got is None:
            got = tokenize_file(Path(path), tok, fingerprint=fp, skip_bad_lines=skip_bad_lines, progress=progress,
                                max_record_bytes=max_record_bytes)
            if cache_dir is not None and fp:
                _cache_save(cache_dir, fp, tid, *got)
        ids, mask, offsets, rids, info = got
        info.path = str(path)
        ids_l.append(np.asarray(ids))
        mask_l.append(np.asarray(mask))
        rid_l.append(np.asarray(rids, dtype=RID_DTYPE))
        off_l.append(np.asarray(offsets[:-1] if len(off_l) < len(files) - 1 else offsets) + base)
        base += len(ids)
        infos.append(info)
    if not files:
        return TokenizedData(np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(1, np.int64), tid, [])
    offsets = np.concatenate(off_l)
    return TokenizedData(np.concatenate(ids_l), np.concatenate(mask_l), offsets, tid, infos, np.concatenate(rid_l))


def _cache_key(fp: str, tid: str) -> str:
    return blake3.blake3(f"{TOKENIZATION_VERSION}\0{fp}\0{tid}".encode()).hexdigest()[:40]


def _cache_load(cache_dir: Path, fp: str, tid: str):
    d = cache_dir / "tokens" / _cache_key(fp, tid)
    try:
        info = json.loads((d / "info.json").read_text())
        ids = np.load(d / "ids.npy", mmap_mode="r", allow_pickle=False)
        mask = np.load(d / "mask.npy", mmap_mode="r", allow_pickle=False)
        offsets = np.load(d / "offsets.npy", allow_pickle=False)
        rids = np.load(d / "rids.npy", allow_pickle=False)
    except (OSError, ValueError, KeyError):
        return None
    if len(ids) != info.get("tokens") or len(offsets) != info.get("examples", -2) + 1 \
            or len(rids) != info.get("examples") or rids.dtype != RID_DTYPE:
        return None
    return ids, mask, offsets, rids, TokenizedFile(**info)


def _cache_save(cache_dir: Path, fp: str, tid: str, ids, mask, offsets, rids, info: TokenizedFile) -> None:
    """Best effort (a cache): written under a temporary name and renamed into place."""
    root = cache_dir / "tokens"
    final = root / _cache_key(fp, tid)
    tmp = root / f"{final.name}.{os.getpid()}.partial"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        np.save(tmp / "ids.npy", ids, allow_pickle=False)
        np.save(tmp / "mask.npy", mask, allow_pickle=False)
        np.save(tmp / "offsets.npy", offsets, allow_pickle=False)
        np.save(tmp / "rids.npy", rids, allow_pickle=False)
        (tmp / "info.json").write_text(json.dumps(info.__dict__))
        if final.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            return
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------ blocks and order


class Blocks:
    """The training units: fixed windows of ``seq_len`` tokens of the concatenated examples
    (``packing``), or one unit per example cut at ``seq_len``."""

    def __init__(self, data: TokenizedData, seq_len: int, packing: bool = True):
        self.data = data
        self.seq_len = seq_len
        self.packing = packing
        if packing:
            self.n = (data.tokens + seq_len - 1) // seq_len
        else:
            self.n = data.examples

    def __len__(self) -> int:
        return self.n

    def span(self, i: int) -> tuple[int, int]:
        if self.packing:
            start = i * self.seq_len
            return start, min(start + self.seq_len, self.data.tokens)
        start = int(self.data.offsets[i])
        return start, min(int(self.data.offsets[i + 1]), start + self.seq_len)

    def tokens_of(self, indices) -> tuple[int, int]:
        """(input tokens, target tokens that get a loss) of a list of units."""
        n = t = 0
        for i in indices:
            a, b = self.span(int(i))
            n += b - a
            if b - a > 1:
                t += int(self.data.mask[a + 1:b].sum())
        return n, t

    def batch(self, indices, pad_id: int) -> dict[str, Any]:
        """Padded numpy arrays ``input_ids``, ``attention_mask``, ``labels`` (IGNORE where no loss)."""
        spans = [self.span(int(i)) for i in indices]
        width = max([b - a for a, b in spans] + [1])
        n = len(spans)
        ids = np.full((n, width), pad_id, dtype=np.int64)
        att = np.zeros((n, width), dtype=np.int64)
        labels = np.full((n, width), IGNORE, dtype=np.int64)
        for r, (a, b) in enumerate(spans):
            k = b - a
            seq = np.asarray(self.data.ids[a:b], dtype=np.int64)
            ids[r, :k] = seq
            att[r, :k] = 1
            m = np.asarray(self.data.mask[a:b], dtype=bool)
            labels[r, :k] = np.where(m, seq, IGNORE)
        return {"input_ids": ids, "attention_mask": att, "labels": labels}


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of units in an epoch: a permutation that depends only on (seed, epoch)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x4C494E, int(epoch)]).permutation(n)
