"""Records of JSONL data files: what a record is, its id, and the formats of the files that hold them.

A record is one JSON object on one line of a ``.jsonl`` file (also ``.jsonl.gz``, ``.jsonl.zst``).
Its **record id** is the BLAKE3 hash, 16 bytes (128 bits) of output, of the record's canonical
JSON: keys sorted, no insignificant whitespace, UTF-8, exactly the bytes of
``json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` (the store's
canonical JSON, :func:`lineagestore.core.objects.canonical_json`). Key order, spacing and escapes
that decode to the same string do not change a record's id; any change of content does.

This is the bottom of the data package: it depends on the standard library, blake3 and the store
core only. Blocks of lines are parsed by :mod:`lineagestore.data.blocks`, sets of record ids are
:mod:`lineagestore.data.idsets`, tokens are counted by :mod:`lineagestore.data.tokens`.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import blake3

from ..core.errors import InvalidInput
from ..core.objects import canonical_json

ID_BYTES = 16
#: the deepest nesting of a record (the record object is level 1); deeper lines are bad lines, in
#: every process alike (Python's own limit would depend on the depth of the caller's stack)
MAX_DEPTH = 128
#: the suffixes lin reads, longest first
FORMATS = ((".jsonl.zst", "jsonl.zst"), (".jsonl.gz", "jsonl.gz"), (".jsonl", "jsonl"))

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
    rec, reason = PARSER.parse(line)
    if reason is not None:
        raise InvalidInput(f"not a record: {reason}")
    assert rec is not None
    return rec[0]


def too_deep(line: str, obj: object) -> bool:
    """Whether the record parsed from ``line`` is nested more than MAX_DEPTH levels; cheap for
    the lines that cannot be (fewer than MAX_DEPTH + 1 opening brackets)."""
    if len(line) <= 2 * MAX_DEPTH or line.count("[") + line.count("{") <= MAX_DEPTH:
        return False
    stack = [(obj, 1)]
    while stack:
        v, d = stack.pop()
        if d > MAX_DEPTH:
            return True
        if type(v) is dict:
            stack.extend((x, d + 1) for x in v.values() if type(x) in (dict, list))
        elif type(v) is list:
            stack.extend((x, d + 1) for x in v if type(x) in (dict, list))
    return False


TOO_DEEP = f"record nested more than {MAX_DEPTH} levels deep"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class RecordParser:
    """Parse one line and compute its record id, with a fast path for plain lines.

    A line without a backslash holds no escapes, so every string in it is written literally and
    is already canonical (strict JSON forbids raw control characters in strings): the canonical
    form can be built by joining the strings with quotes, without the encoder's escaping scan.
    Lines with escapes go through the C encoder of the ``json`` module. Both give the bytes of
    :func:`canonical_json` (a property test checks it).
    """

    def __init__(self) -> None:
        self.decoder = json.JSONDecoder(parse_constant=_reject_constant)
        # JSONDecoder.__init__ sets scan_once (Lib/json/decoder.py); typeshed's JSONDecoder leaves it out
        self.scan: Callable[[str, int], tuple[Any, int]] = self.decoder.scan_once  # type: ignore[attr-defined]
        from json.encoder import encode_basestring
        try:
            from _json import make_encoder  # what json.encoder uses as c_make_encoder
        except ImportError:  # pragma: no cover - CPython always has the C encoder
            self.encode = lambda o: json.dumps(o, sort_keys=True, separators=(",", ":"),
                                               ensure_ascii=False, allow_nan=False)
        else:
            enc = make_encoder(None, _no_default, encode_basestring, None, ":", ",", True, False, False)
            self.encode = lambda o: "".join(enc(o, 0))

    def parse(self, line: str) -> tuple[tuple[bytes, dict[str, Any]] | None, str | None]:
        """(id, record) or a reason why the line is not a record."""
        try:
            obj, end = self.scan(line, 0)
            if end != len(line) and _JSON_WS.fullmatch(line, end) is None:
                obj = self.decoder.decode(line)  # raises "Extra data" with its position
        except StopIteration:
            try:
                obj = self.decoder.decode(line)  # leading whitespace, or an error with a message
            except json.JSONDecodeError as e:
                return None, f"invalid JSON ({e.msg} at column {e.colno})"
            except RecursionError:
                return None, TOO_DEEP
            except ValueError as e:
                return None, f"invalid JSON ({e})"
        except json.JSONDecodeError as e:
            return None, f"invalid JSON ({e.msg} at column {e.colno})"
        except RecursionError:  # only far beyond MAX_DEPTH: the parser's stack allows much more
            return None, TOO_DEEP
        except ValueError as e:
            return None, f"invalid JSON ({e})"
        if type(obj) is not dict:
            return None, f"not a JSON object (a {_json_type(obj)})"
        if too_deep(line, obj):
            return None, TOO_DEEP
        try:
            text = canon_plain(obj) if "\\" not in line else self.encode(obj)
            rid = blake3.blake3(text.encode("utf-8")).digest(ID_BYTES)
        except ValueError as e:  # NaN/Infinity from an overflowing number
            return None, f"invalid JSON number ({e})"
        except UnicodeEncodeError:
            return None, "invalid JSON string (a lone UTF-16 surrogate escape)"
        except RecursionError:  # a caller already deep in its stack
            return None, TOO_DEEP
        return (rid, obj), None


def _no_default(o):  # pragma: no cover - parsed JSON holds only JSON types
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _json_type(obj) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(obj), type(obj).__name__)


_frepr = float.__repr__
_irepr = int.__repr__
_encode_basestring = json.encoder.encode_basestring


def canon_plain(o) -> str:
    """Canonical JSON of a value parsed from a line without escapes (see :class:`RecordParser`)."""
    t = type(o)
    if t is str:
        return '"' + o + '"'
    if t is dict:
        return "{" + ",".join(['"' + k + '":' + canon_plain(o[k]) for k in sorted(o)]) + "}"
    if t is list:
        return "[" + ",".join([canon_plain(x) for x in o]) + "]"
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


def canon_escaped(o) -> str:
    """Canonical JSON of any parsed value (strings escaped like the json module does)."""
    t = type(o)
    if t is str:
        return _escape(o)
    if t is dict:
        return "{" + ",".join([_escape(k) + ":" + canon_escaped(o[k]) for k in sorted(o)]) + "}"
    if t is list:
        return "[" + ",".join([canon_escaped(x) for x in o]) + "]"
    return canon_plain(o)


PARSER = RecordParser()


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
    """Streaming decompression of a file's bytes (identity, gzip or zstd; multi-member aware).

    :meth:`pieces` yields the output in bounded pieces whatever the compression ratio (a 16 MiB
    piece of a gzip file can hold 16 GiB, of a zstd file 512 GiB): input is fed in slices, gzip's
    output is capped at :data:`OUT_PIECE` per call, and a zstd slice of 2 KiB cannot expand to
    more than 64 MiB (~32,768x is zstd's limit). A reader that refuses overlong lines thus holds
    at most one piece more than a line.
    """

    OUT_PIECE = 8 << 20  # most bytes of gzip output per piece
    _SLICE = {"jsonl.gz": 64 << 10, "jsonl.zst": 2 << 10}  # input fed to the decompressor at a time

    def __init__(self, fmt: str, name: str):
        self.fmt = fmt
        self.name = name
        self._d: Any = None  # a zlib or zstandard decompressor; None for plain files
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
        """All the output of ``data`` at once (for input known to expand little)."""
        return b"".join(self.pieces(data))

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """The output of ``data``, in bounded pieces (see the class)."""
        if self._d is None:
            if data:
                yield data
            return
        view = memoryview(data)
        step = self._SLICE[self.fmt]
        for start in range(0, len(view), step):
            rest: bytes | memoryview = view[start:start + step]
            while rest:
                out, rest = self._step(rest)
                if out:
                    yield out

    def _step(self, data: bytes | memoryview) -> tuple[bytes, bytes | memoryview]:
        """Decompress some of ``data``: (output, the input left: cut off by the output cap, or
        after the end of a member or frame, which the next decompressor takes)."""
        try:
            out = self._d.decompress(data, self.OUT_PIECE) if self.fmt == "jsonl.gz" else self._d.decompress(data)
        except Exception as e:  # zlib.error, zstandard.ZstdError
            raise self._corrupt(str(e)) from None
        self._fed = True
        if self._d.eof:
            rest = self._d.unused_data
            self._new()
            return out, rest
        return out, (self._d.unconsumed_tail if self.fmt == "jsonl.gz" else b"")

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


# ----------------------------------------------------------------------------- bounded lines


class LineLimit:
    """Refuses a line longer than ``limit`` bytes as soon as the bytes fed show it, naming its
    file and number, so no more than ``limit`` bytes of one line are ever held.

    Fed the (decompressed) bytes of a file in order; each piece costs a few scans in C (find,
    rfind, count), and pieces longer than the limit a jump from newline to newline.
    """

    def __init__(self, path: Path, limit: int):
        self.path = path
        self.limit = limit
        self.pos = 0  # bytes fed
        self.line_start = 0  # where the current line began
        self.lines = 0  # newlines fed

    def feed(self, data: bytes | bytearray) -> None:
        first = data.find(b"\n")
        if first < 0:
            self.pos += len(data)
        else:
            if self.pos + first - self.line_start > self.limit:
                self._refuse(self.lines + 1)
            last = data.rfind(b"\n")
            if last - first > self.limit + 1:  # a whole line between them may be too long
                self._check_between(data, first, last)
            self.lines += data.count(b"\n")
            self.line_start = self.pos + last + 1
            self.pos += len(data)
        if self.pos - self.line_start > self.limit:
            self._refuse(self.lines + 1)

    def _check_between(self, data: bytes | bytearray, first: int, last: int) -> None:
        p = first
        while p < last:
            q = data.rfind(b"\n", p + 1, p + self.limit + 2)  # the farthest newline a line may reach
            if q < 0:
                self._refuse(self.lines + data.count(b"\n", 0, p + 1) + 1)
            p = q

    def _refuse(self, line: int) -> None:
        raise InvalidInput(f"{self.path}: line {line} is longer than {self.limit:,} bytes (data.max_record_bytes)",
                           hint="split the record into shorter ones, or raise data.max_record_bytes in "
                                ".lineage/config.toml")


def bounded_lines(pieces: Iterable[bytes], path: Path | str, limit: int) -> Iterator[tuple[int, bytes]]:
    """``(line number, line)`` of the (decompressed) bytes ``pieces`` of the file ``path``, without
    their newlines; a line longer than ``limit`` bytes raises InvalidInput naming the file and
    line before it is held (:class:`LineLimit`). A last line without a newline is yielded too."""
    guard = LineLimit(Path(path), limit)
    pending: list[bytes] = []  # the start of a line that has no newline yet (a list: no quadratic joins)
    lineno = 0
    for piece in pieces:
        guard.feed(piece)
        start = 0
        while (nl := piece.find(b"\n", start)) >= 0:
            lineno += 1
            if pending:
                pending.append(piece[start:nl])
                yield lineno, b"".join(pending)
                pending.clear()
            else:
                yield lineno, piece[start:nl]
            start = nl + 1
        if start < len(piece):
            pending.append(piece[start:])
    if pending:
        yield lineno + 1, b"".join(pending)
