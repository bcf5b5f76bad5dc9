"""Records of JSONL data files: record ids, parsing blocks of lines, sorted id sets.

A record is one JSON object on one line of a ``.jsonl`` file (also ``.jsonl.gz``, ``.jsonl.zst``).
Its **record id** is the BLAKE3 hash, 16 bytes (128 bits) of output, of the record's canonical
JSON: keys sorted, no insignificant whitespace, UTF-8, exactly the bytes of
``json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` (the store's
canonical JSON, :func:`lineagestore.core.objects.canonical_json`). Key order, spacing and escapes
that decode to the same string do not change a record's id; any change of content does.

A **record-id set** is a sorted array of unique 16-byte ids (bytewise order). In numpy it is an
array of dtype ``S16`` (fixed 16-byte strings compare like ``memcmp``), so sorting, merging and
binary search run in numpy without converting the ids.

This module is what the parallel scan's worker processes import: it depends on the standard
library, blake3 and numpy only (the tokenizer is loaded lazily, by :mod:`lineagestore.data.tokens`).
"""

from __future__ import annotations

import json
import os
import re
import struct
import sys
import zlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import blake3
import numpy as np

from ..core.errors import InvalidInput
from ..core.ids import hash_object
from ..core.objects import CHUNK_SIZE, Chunks, canonical_json

ID_BYTES = 16
ID_DTYPE = np.dtype("S16")
#: the suffixes lin reads, longest first
FORMATS = ((".jsonl.zst", "jsonl.zst"), (".jsonl.gz", "jsonl.gz"), (".jsonl", "jsonl"))
#: at most this many bad lines are described (all are counted)
MAX_BAD_SHOWN = 10

_JSON_WS = re.compile(r"[ \t\n\r]*")
_INF = float("inf")


# ----------------------------------------------------------------------------- record ids


def record_id(record: object) -> bytes:
    """The 16-byte id of a parsed record (the reference definition)."""
    return blake3.blake3(canonical_json(record)).digest(ID_BYTES)


def line_record_id(line: str | bytes) -> bytes:
    """The id of one JSONL line (any key order or whitespace); InvalidInput if it is not a record."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidInput(f"record is not valid UTF-8 ({e.reason})") from None
    rec, reason = _PARSER.parse(line)
    if reason is not None:
        raise InvalidInput(f"not a record: {reason}")
    return rec[0]


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class _Parser:
    """Parse one line and compute its record id, with a fast path for plain lines.

    A line without a backslash holds no escapes, so every string in it is written literally and
    is already canonical (strict JSON forbids raw control characters in strings): the canonical
    form can be built by joining the strings with quotes, without the encoder's escaping scan.
    Lines with escapes go through the C encoder of the ``json`` module. Both give the bytes of
    :func:`canonical_json` (a property test checks it).
    """

    def __init__(self) -> None:
        self.decoder = json.JSONDecoder(parse_constant=_reject_constant)
        self.scan = self.decoder.scan_once
        from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
        if c_make_encoder is None:  # pragma: no cover - CPython always has the C encoder
            self.encode = lambda o: json.dumps(o, sort_keys=True, separators=(",", ":"),
                                               ensure_ascii=False, allow_nan=False)
        else:
            enc = c_make_encoder(None, _no_default, encode_basestring, None, ":", ",", True, False, False)
            self.encode = lambda o: "".join(enc(o, 0))

    def parse(self, line: str) -> tuple[tuple[bytes, object] | None, str | None]:
        """(id, record) or a reason why the line is not a record."""
        try:
            obj, end = self.scan(line, 0)
            if end != len(line) and _JSON_WS.match(line, end).end() != len(line):  # type: ignore[union-attr]
                obj = self.decoder.decode(line)  # raises "Extra data" with its position
        except StopIteration:
            try:
                obj = self.decoder.decode(line)  # leading whitespace, or an error with a message
            except json.JSONDecodeError as e:
                return None, f"invalid JSON ({e.msg} at column {e.colno})"
            except (ValueError, RecursionError) as e:
                return None, f"invalid JSON ({e})"
        except json.JSONDecodeError as e:
            return None, f"invalid JSON ({e.msg} at column {e.colno})"
        except (ValueError, RecursionError) as e:
            return None, f"invalid JSON ({e})"
        if type(obj) is not dict:
            return None, f"not a JSON object (a {_json_type(obj)})"
        try:
            text = _canon_plain(obj) if "\\" not in line else self.encode(obj)
            rid = blake3.blake3(text.encode("utf-8")).digest(ID_BYTES)
        except ValueError as e:  # NaN/Infinity from an overflowing number
            return None, f"invalid JSON number ({e})"
        except UnicodeEncodeError:
            return None, "invalid JSON string (a lone UTF-16 surrogate escape)"
        except RecursionError:
            return None, "invalid JSON (nested too deeply)"
        return (rid, obj), None


def _no_default(o):  # pragma: no cover - parsed JSON holds only JSON types
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _json_type(obj) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(obj), type(obj).__name__)


_frepr = float.__repr__
_irepr = int.__repr__
_encode_basestring = json.encoder.encode_basestring  # type: ignore[attr-defined]


def _canon_plain(o) -> str:
    """Canonical JSON of a value parsed from a line without escapes (see :class:`_Parser`)."""
    t = type(o)
    if t is str:
        return '"' + o + '"'
    if t is dict:
        return "{" + ",".join(['"' + k + '":' + _canon_plain(o[k]) for k in sorted(o)]) + "}"
    if t is list:
        return "[" + ",".join([_canon_plain(x) for x in o]) + "]"
    if t is int:
        return _irepr(o)
    if o is None:
        return "null"
    if o is True:
        return "true"
    if o is False:
        return "false"
    if t is float:
        if o != o or o == _INF or o == -_INF:
            raise ValueError("out of range: " + _frepr(o))
        return _frepr(o)
    raise TypeError(f"unexpected {t.__name__}")  # pragma: no cover


def _escape(s: str) -> str:
    """``json``'s string encoding (ensure_ascii=False), fast for text whose only escapes are \\ " and \\n."""
    r = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    if r.isprintable():  # no other control character is left: nothing else to escape
        return '"' + r + '"'
    return _encode_basestring(s)


def _canon_escaped(o) -> str:
    """Canonical JSON of any parsed value (strings escaped like the json module does)."""
    t = type(o)
    if t is str:
        return _escape(o)
    if t is dict:
        return "{" + ",".join([_escape(k) + ":" + _canon_escaped(o[k]) for k in sorted(o)]) + "}"
    if t is list:
        return "[" + ",".join([_canon_escaped(x) for x in o]) + "]"
    return _canon_plain(o)


_PARSER = _Parser()


#: ShareGPT ``from`` values and the chat roles they mean (others are kept as they are)
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "model": "assistant", "bot": "assistant"}


def record_kind(obj: dict) -> tuple[str | None, str | None]:
    """("chat" | "text" | "pair", None) for a usable record, or (None, reason).

    chat: ``messages``, or ShareGPT ``conversations`` (``from``/``value``); text: ``text``;
    pair: ``prompt``/``completion`` or ``instruction``/``output`` (with an optional ``input``).
    """
    if "messages" in obj:
        msgs = obj["messages"]
        if type(msgs) is not list or not msgs:
            return None, "'messages' is not a non-empty list"
        for m in msgs:
            if type(m) is not dict or type(m.get("role")) is not str:
                return None, "'messages' holds an entry without a string 'role'"
        return "chat", None
    if "text" in obj:
        if type(obj["text"]) is not str:
            return None, f"'text' is not a string (a {_json_type(obj['text'])})"
        return "text", None
    if "conversations" in obj:
        conv = obj["conversations"]
        if type(conv) is not list or not conv:
            return None, "'conversations' is not a non-empty list"
        for m in conv:
            if type(m) is not dict or type(m.get("from")) is not str or type(m.get("value")) is not str:
                return None, "'conversations' holds an entry without a string 'from' and 'value'"
        return "chat", None
    for a, b in (("prompt", "completion"), ("instruction", "output")):
        if a in obj or b in obj:
            if type(obj.get(a)) is not str or type(obj.get(b)) is not str:
                return None, f"'{a}' and '{b}' must both be strings"
            if a == "instruction" and type(obj.get("input", "")) is not str:
                return None, "'input' is not a string"
            return "pair", None
    return None, ("record has no 'text', 'messages', 'conversations', 'prompt'/'completion' or "
                  "'instruction'/'output'")


def chat_messages(obj: dict) -> list:
    """The messages of a chat record: ``messages``, or ``conversations`` with ShareGPT roles mapped."""
    if "messages" in obj:
        return obj["messages"]
    return [{"role": SHAREGPT_ROLES.get(m["from"].lower(), m["from"]), "content": m["value"]}
            for m in obj["conversations"]]


def pair_parts(obj: dict) -> tuple[str, str]:
    """(prompt, completion) of a pair record; for instruction/output, the prompt is the
    instruction, then the input if any, each followed by a blank line."""
    if "prompt" in obj or "completion" in obj:
        return obj["prompt"], obj["completion"]
    prompt = obj["instruction"] + (f"\n\n{obj['input']}" if obj.get("input") else "") + "\n\n"
    return prompt, obj["output"]


def _collect(obj: dict, kind: str, texts: list, chats: list, plain: list) -> None:
    """Put a valid record's parts where the token counter wants them."""
    if kind == "chat":
        chats.append(chat_messages(obj))
    elif kind == "text":
        texts.append(obj["text"])
    else:
        prompt, completion = pair_parts(obj)
        texts.append(prompt)
        plain.append(completion)


# ----------------------------------------------------------------------------- blocks of lines


@dataclass
class BlockResult:
    """What one block of whole lines holds. ``ids`` is a sorted, unique ``S16`` buffer."""

    ids: bytes
    lines: int  # lines in the block (blank and bad ones included)
    examples: int  # valid records (duplicates included)
    text: int
    chat: int
    bad: int
    bad_first: list = field(default_factory=list)  # [(line number in block, 1-based), reason]
    tokens: int | None = None


def parse_block(data: bytes, *, at_file_start: bool = False, counter=None,
                skip_bad_lines: bool = True) -> BlockResult:
    """Parse a block of whole lines: record ids (sorted, unique), counts, bad lines, tokens.

    ``counter`` (a :class:`lineagestore.data.tokens.TokenCounter`) counts tokens of the valid records.
    With ``skip_bad_lines=False`` the tokens are not counted once a bad line is seen (the file
    will be refused anyway).
    """
    try:
        text = data.decode("utf-8")
        lines: list[str] | None = text.split("\n")
        raw_lines = None
    except UnicodeDecodeError:
        lines = None
        raw_lines = data.split(b"\n")
    n_lines = len(lines) if lines is not None else len(raw_lines)  # type: ignore[arg-type]
    if data.endswith(b"\n"):
        n_lines -= 1  # the empty piece after the final newline is not a line
    parse = _PARSER.parse
    scan = _PARSER.scan
    b3 = blake3.blake3
    ids: list[bytes] = []
    add_id = ids.append
    texts: list[str] = []  # counted with the tokenizer's special tokens (text, prompts)
    plain: list[str] = []  # counted without them (completions: they follow their prompt)
    chats: list[list] = []
    bad_first: list = []
    bad = 0
    n_chat = 0
    for i in range(n_lines):
        if lines is not None:
            line = lines[i]
        else:
            try:
                line = raw_lines[i].decode("utf-8")  # type: ignore[index]
            except UnicodeDecodeError as e:
                bad += 1
                if len(bad_first) < MAX_BAD_SHOWN:
                    bad_first.append((i + 1, f"not valid UTF-8 (byte 0x{e.object[e.start]:02x} "
                                             f"at column {e.start + 1})"))
                continue
        if i == 0 and at_file_start and line.startswith("\ufeff"):
            line = line[1:]
        # the hot path: one JSON object filling the line; anything else goes to parse() for its message
        try:
            obj, end = scan(line, 0)
        except (StopIteration, ValueError, RecursionError):
            obj = None
        if type(obj) is dict and (end == len(line) or (end == len(line) - 1 and line[end] == "\r")):
            if "messages" in obj:
                kind, reason = record_kind(obj)
            elif type(obj.get("text")) is str:
                kind, reason = "text", None
            else:
                kind, reason = record_kind(obj)
            if reason is None:
                try:
                    canon = _canon_plain(obj) if "\\" not in line else _canon_escaped(obj)
                    add_id(b3(canon.encode()).digest(16))
                except (ValueError, RecursionError):
                    pass  # NaN, Infinity, lone surrogates: parse() below says which
                else:
                    if kind == "chat":
                        n_chat += 1
                    if counter is not None:
                        _collect(obj, kind, texts, chats, plain)
                    continue
        rec, reason = parse(line)
        if reason is None:
            obj = rec[1]  # type: ignore[index]
            kind, reason = record_kind(obj)  # type: ignore[arg-type]
        elif not line.strip(" \t\r"):
            continue  # a blank line
        if reason is not None:
            bad += 1
            if len(bad_first) < MAX_BAD_SHOWN:
                bad_first.append((i + 1, reason))
            continue
        add_id(rec[0])  # type: ignore[index]
        if kind == "chat":
            n_chat += 1
        if counter is not None:
            _collect(obj, kind, texts, chats, plain)  # type: ignore[arg-type]
    tokens = None
    if counter is not None and (skip_bad_lines or not bad):
        tokens = counter.count(texts, chats, plain)
    arr = sort_unique(np.frombuffer(b"".join(ids), dtype=ID_DTYPE))
    return BlockResult(arr.tobytes(), n_lines, len(ids), len(ids) - n_chat, n_chat, bad, bad_first, tokens)


# ----------------------------------------------------------------------------- file formats


def detect_format(name: str) -> str:
    low = name.lower()
    for suffix, fmt in FORMATS:
        if low.endswith(suffix):
            return fmt
    raise InvalidInput(f"{name}: unsupported data format; lin reads .jsonl, .jsonl.gz and .jsonl.zst files",
                       hint='convert the data to JSON lines: one {"text": ...}, {"messages": [...]} or '
                            '{"prompt": ..., "completion": ...} object per line')


class Decoder:
    """Streaming decompression of a file's bytes (identity, gzip or zstd; multi-member aware)."""

    def __init__(self, fmt: str, name: str):
        self.fmt = fmt
        self.name = name
        self._d = None
        self._fed = False
        self._new()

    def _new(self) -> None:
        if self.fmt == "jsonl.gz":
            self._d = zlib.decompressobj(wbits=31)
        elif self.fmt == "jsonl.zst":
            import zstandard
            self._d = zstandard.ZstdDecompressor().decompressobj()
        self._fed = False

    def feed(self, data: bytes) -> bytes:
        if self._d is None:
            return data
        out = []
        while data:
            try:
                out.append(self._d.decompress(data))
            except Exception as e:  # zlib.error, zstandard.ZstdError
                raise self._corrupt(str(e)) from None
            self._fed = True
            if self._d.eof:
                data = self._d.unused_data
                self._new()
            else:
                data = b""
        return b"".join(out)

    def finish(self) -> bytes:
        if self._d is None:
            return b""
        if self._fed and not self._d.eof:
            raise self._corrupt("the file ends in the middle of a compressed stream")
        return b""

    def _corrupt(self, why: str) -> InvalidInput:
        kind = "gzip" if self.fmt == "jsonl.gz" else "zstd"
        return InvalidInput(f"{self.name}: truncated or corrupt {kind} file ({why})",
                            hint="the file was probably cut short while copying; copy it again")


# ----------------------------------------------------------------------------- sorted id sets


def as_ids(buf: bytes | bytearray | memoryview) -> np.ndarray:
    if len(buf) % ID_BYTES:
        raise ValueError(f"record-id buffer of {len(buf)} bytes is not a multiple of {ID_BYTES}")
    return np.frombuffer(buf, dtype=ID_DTYPE)


def sort_unique(a: np.ndarray, presorted_runs: bool = False) -> np.ndarray:
    """Sort ``S16`` ids and drop duplicates (``presorted_runs``: a concatenation of sorted runs)."""
    if len(a) == 0:
        return a
    s = np.sort(a, kind="stable" if presorted_runs else "quicksort")
    if len(s) == 1:
        return s
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s if keep.all() else s[keep]


def merge_sorted(streams: list[Iterable[np.ndarray]]) -> Iterator[np.ndarray]:
    """K-way merge of streams of sorted ``S16`` chunks into sorted, unique chunks.

    Memory: one chunk per stream plus one output chunk. Each round takes, from every stream,
    the ids up to the smallest of the streams' last loaded ids (so at least one stream's chunk
    is used up per round), sorts them with a run-aware sort and drops duplicates.
    """
    iters = [iter(s) for s in streams]
    bufs: list[np.ndarray | None] = [None] * len(iters)

    def refill(k: int) -> None:
        for chunk in iters[k]:
            if len(chunk):
                bufs[k] = chunk
                return
        bufs[k] = None

    for k in range(len(iters)):
        refill(k)
    last: np.ndarray | None = None  # the last id emitted (1-element array)
    while True:
        live = [k for k in range(len(bufs)) if bufs[k] is not None]
        if not live:
            return
        if len(live) == 1:
            k = live[0]
            chunk = bufs[k]
            assert chunk is not None
            if last is not None and chunk[0] <= last[0]:
                chunk = chunk[chunk > last[0]]
            if len(chunk) > 1 and not bool(np.all(chunk[1:] != chunk[:-1])):
                chunk = sort_unique(chunk, presorted_runs=True)
            if len(chunk):
                last = chunk[-1:]
                yield chunk
            refill(k)
            continue
        lasts = np.concatenate([bufs[k][-1:] for k in live])  # type: ignore[index]
        cut = np.sort(lasts)[:1]
        taken = []
        for k in live:
            b = bufs[k]
            assert b is not None
            n = int(np.searchsorted(b, cut, side="right")[0])
            if n:
                taken.append(b[:n])
            if n == len(b):
                refill(k)
            else:
                bufs[k] = b[n:]
        merged = sort_unique(np.concatenate(taken), presorted_runs=True)
        if last is not None and len(merged) and merged[0] == last[0]:
            merged = merged[1:]
        if len(merged):
            last = merged[-1:]
            yield merged


def rechunk(chunks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Regroup a stream of arrays into arrays of exactly ``size`` items (the last may be shorter)."""
    pending: list[np.ndarray] = []
    have = 0
    for c in chunks:
        while len(c):
            take = min(size - have, len(c))
            pending.append(c[:take])
            have += take
            c = c[take:]
            if have == size:
                yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, have = [], 0
    if have:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)


# ----------------------------------------------------------------------------- content ids


def content_id(piece_ids: list[tuple[str, int]]) -> str:
    """The id of a file's bytes from the ids of its CHUNK_SIZE pieces (blob, or chunks above)."""
    if len(piece_ids) == 1:
        return piece_ids[0][0]
    size = sum(n for _, n in piece_ids)
    return hash_object("chunks", Chunks(size=size, parts=[[i, n] for i, n in piece_ids]).encode())


def file_content_id(path: os.PathLike | str) -> str:
    """The id the store gives a file's bytes (without storing anything)."""
    pieces: list[tuple[str, int]] = []
    with open(path, "rb") as f:
        while True:
            piece = f.read(CHUNK_SIZE)
            if not piece:
                break
            pieces.append((hash_object("blob", piece), len(piece)))
    return content_id(pieces) if pieces else hash_object("blob", b"")


# ----------------------------------------------------------------------------- worker processes
#
# The scan runs parse_block in worker processes started as ``python -c "...worker_main()"``.
# Messages on their stdin/stdout are ``u32 header length, u32 payload length`` (little-endian),
# a JSON header, then raw payload bytes: no pickle, and no re-import of the caller's __main__.

_MSG = struct.Struct("<II")


def send_message(f, header: dict, payload: bytes | memoryview = b"") -> None:
    h = json.dumps(header, separators=(",", ":")).encode()
    f.write(_MSG.pack(len(h), len(payload)))
    f.write(h)
    if payload:
        f.write(payload)
    f.flush()


def recv_message(f) -> tuple[dict, bytes] | None:
    """The next message, or None at a clean end of stream."""
    head = f.read(_MSG.size)
    if not head:
        return None
    if len(head) != _MSG.size:
        raise EOFError("message cut short")
    hl, pl = _MSG.unpack(head)
    h = f.read(hl)
    payload = f.read(pl) if pl else b""
    if len(h) != hl or len(payload) != pl:
        raise EOFError("message cut short")
    return json.loads(h), payload


def run_job(header: dict, payload: bytes, counter) -> tuple[dict, bytes]:
    """Parse one block: ``{"kind": "file", "path", "offset", "length"}`` or ``{"kind": "bytes"}`` + data."""
    if header["kind"] == "file":
        with open(header["path"], "rb") as f:
            data = os.pread(f.fileno(), header["length"], header["offset"])
        if len(data) != header["length"]:
            raise InvalidInput(f"{header['path']}: file shrank while being read; was it changed?")
        at_start = header["offset"] == 0
    else:
        data, at_start = payload, bool(header.get("at_start"))
    res = parse_block(data, at_file_start=at_start, counter=counter, skip_bad_lines=header["skip"])
    return ({"lines": res.lines, "examples": res.examples, "text": res.text, "chat": res.chat, "bad": res.bad,
             "bad_first": res.bad_first, "tokens": res.tokens}, res.ids)


def worker_main() -> None:  # pragma: no cover - runs in the worker processes (tested through scans)
    """A scan worker: the first message holds the tokenizer spec; then one result per job, in order."""
    import queue
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    inp = sys.stdin.buffer
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    jobs: queue.Queue = queue.Queue()

    def reader() -> None:  # always drain stdin, so the parent never blocks writing a job
        try:
            while (msg := recv_message(inp)) is not None:
                jobs.put(msg)
        finally:
            jobs.put(None)

    threading.Thread(target=reader, daemon=True).start()
    counter = None
    init_error = None
    first = jobs.get()
    if first is None:
        return
    spec = first[0].get("counter")
    if spec is not None:
        if first[1]:
            spec["backend"] = first[1].decode()
        try:
            from .tokens import TokenCounter
            counter = TokenCounter(spec)
        except Exception as e:  # noqa: BLE001 - reported with every job
            init_error = e
    while (msg := jobs.get()) is not None:
        try:
            if init_error is not None:
                raise init_error
            header, payload = run_job(msg[0], msg[1], counter)
            send_message(out, header, payload)
        except Exception as e:  # noqa: BLE001 - sent to the parent, which raises it
            send_message(out, {"error": str(e), "type": type(e).__name__, "hint": getattr(e, "hint", None)})
