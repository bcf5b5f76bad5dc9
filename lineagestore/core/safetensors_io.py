"""Reading the layout of a safetensors file without loading its tensors.

A safetensors file is ``u64 LE header length N`` + ``N bytes of JSON header`` + the tensor data
buffer. The header maps tensor names to ``dtype``, ``shape`` and ``data_offsets`` [begin, end)
into the buffer, plus an optional ``__metadata__`` map. We keep the header bytes exactly as
found (including any padding) so that the file rebuilds byte for byte.

A header is checked as strictly as the ``safetensors`` library checks it (0.8), so that lin
stores only files the library loads and two readers never disagree about what a file holds: a
header of at most 100,000,000 bytes, UTF-8, one JSON object nested at most 127 levels, no NaN or
Infinity, no lone UTF-16 surrogate; each entry a known ``dtype``, a ``shape`` of integers in
[0, 2**64), two integer ``data_offsets``, and a size that is exactly dtype bits x elements / 8
(a whole number of bytes, no overflow); the tensors tile the data buffer from 0 to the end of the
file without gap or overlap; ``__metadata__`` absent, null or a map of strings to strings. lin is
stricter in one point: a name given twice is refused (the library keeps the last).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import MalformedFile

#: bits per element of every dtype the safetensors library knows
DTYPE_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}
#: bytes per element of the dtypes whose elements are whole bytes
DTYPE_SIZES = {d: b // 8 for d, b in DTYPE_BITS.items() if b % 8 == 0}
#: the library's bound on the header length
MAX_HEADER = 100_000_000
#: the deepest nesting of JSON containers the library's parser accepts (the header object is 1)
MAX_DEPTH = 127
_U64 = 1 << 64


@dataclass(frozen=True)
class TensorSpan:
    name: str
    dtype: str
    shape: list[int]
    begin: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsLayout:
    header: bytes  # the JSON header exactly as stored
    tensors: list[TensorSpan]  # in data order
    data_start: int  # 8 + len(header)
    file_size: int
    metadata: dict[str, str]


def read_layout(path: os.PathLike[str] | str) -> SafetensorsLayout:
    """Parse and validate the header; raise MalformedFile naming the file on any problem."""
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        first = f.read(8)
        if len(first) < 8:
            raise MalformedFile(f"{p}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", first)
        if n > MAX_HEADER:
            raise MalformedFile(f"{p}: not a safetensors file: a header of {n:,} bytes is over the limit "
                                f"of {MAX_HEADER:,}")
        if n + 8 > size:
            raise MalformedFile(f"{p}: truncated or malformed safetensors file "
                                f"(header length {n} does not fit in {size} bytes)")
        header = f.read(n)
    return parse_header(header, size, str(p))


def parse_header(header: bytes, file_size: int, where: str) -> SafetensorsLayout:
    """The layout a header describes in a file of ``file_size`` bytes; MalformedFile naming
    ``where`` unless the header passes every check of the module docstring."""
    doc = _load(header, where)
    metadata = _metadata(doc.pop("__metadata__", None), where)
    spans = [_span(name, info, where) for name, info in doc.items()]
    spans.sort(key=lambda s: (s.begin, s.end, s.name))
    pos = 0
    for s in spans:
        if s.begin != pos:
            raise MalformedFile(f"{where}: tensor data is not contiguous at {s.name!r} "
                                f"(offset {s.begin}, expected {pos})")
        pos = s.end
    data_start = 8 + len(header)
    if data_start + pos != file_size:
        if data_start + pos > file_size:
            raise MalformedFile(f"{where}: truncated safetensors file: tensors need "
                                f"{data_start + pos} bytes, the file has {file_size}")
        raise MalformedFile(f"{where}: {file_size - data_start - pos} unexpected bytes after the last tensor")
    return SafetensorsLayout(header, spans, data_start, file_size, metadata)


def check_tensor_list(header: bytes, file_size: int, tensors: Sequence[tuple[str, str, list[int], int]],
                      where: str) -> SafetensorsLayout:
    """Check a stored tensor list ``(name, dtype, shape, size)`` against the header it was made
    from: the same tensors, listed so that their bytes in list order rebuild the data buffer."""
    layout = parse_header(header, file_size, where)
    by_name = {s.name: s for s in layout.tensors}
    pos = 0
    for name, dtype, shape, size in tensors:
        s = by_name.pop(name, None)
        if s is None or (dtype, list(shape), size) != (s.dtype, s.shape, s.size) or s.begin != pos:
            raise MalformedFile(f"{where}: its tensor list does not match its header (at tensor {name!r})")
        pos = s.end
    if by_name:
        raise MalformedFile(f"{where}: its tensor list does not match its header "
                            f"({len(by_name)} tensor(s) missing, e.g. {next(iter(by_name))!r})")
    return layout


# ------------------------------------------------------------------------------ the checks


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _Duplicate(k)
            seen.add(k)
    return d


class _Duplicate(ValueError):
    pass


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_reject_constant)


def _load(header: bytes, where: str) -> dict[str, Any]:
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedFile(f"{where}: malformed safetensors header (not UTF-8: {e.reason} "
                            f"at byte {e.start})") from None
    try:
        doc = _DECODER.decode(text)
    except _Duplicate as e:
        raise MalformedFile(f"{where}: malformed safetensors header (it names {e.args[0]!r} twice)") from None
    except RecursionError:
        raise MalformedFile(f"{where}: malformed safetensors header (nested more than "
                            f"{MAX_DEPTH} levels deep)") from None
    except json.JSONDecodeError as e:
        raise MalformedFile(f"{where}: malformed safetensors header ({e.msg} at column {e.colno})") from None
    except ValueError as e:  # NaN/Infinity, an integer of thousands of digits
        raise MalformedFile(f"{where}: malformed safetensors header ({str(e)[:80]})") from None
    if not isinstance(doc, dict):
        raise MalformedFile(f"{where}: malformed safetensors header (not a JSON object)")
    if "\\u" in text:  # only an escape can write a lone surrogate, which UTF-8 cannot hold
        _check_strings(doc, where)
    return doc


def _check_strings(doc: dict[str, Any], where: str) -> None:
    stack: list[Any] = [doc]
    while stack:
        v = stack.pop()
        items = list(v.items()) if isinstance(v, dict) else [(None, x) for x in v] if isinstance(v, list) else []
        for k, x in items:
            for s in (k, x):
                if isinstance(s, str):
                    try:
                        s.encode("utf-8")
                    except UnicodeEncodeError:
                        raise MalformedFile(f"{where}: malformed safetensors header (a lone UTF-16 "
                                            "surrogate escape)") from None
            if isinstance(x, (dict, list)):
                stack.append(x)


def _check_extra(value: Any, levels: int, where: str) -> None:
    """A value the library parses but does not use: at most ``levels`` deep, no number out of
    a double's range (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            if d > levels:
                raise MalformedFile(f"{where}: malformed safetensors header (nested more than "
                                    f"{MAX_DEPTH} levels deep)")
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and not _finite(v):
            raise MalformedFile(f"{where}: malformed safetensors header (a number out of range)")


def _finite(x: int | float) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:  # an int beyond a double's range
        return False


def _metadata(meta: Any, where: str) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise MalformedFile(f"{where}: malformed safetensors header (__metadata__ must map strings to strings)")
    return meta


def _index(x: Any) -> bool:
    return type(x) is int and 0 <= x < _U64


def _span(name: str, info: Any, where: str) -> TensorSpan:
    if not isinstance(info, dict):
        raise MalformedFile(f"{where}: malformed entry for tensor {name!r} (not a JSON object)")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise MalformedFile(f"{where}: tensor {name!r} has an unknown dtype {dtype!r}")
    bits = DTYPE_BITS[dtype]
    if not isinstance(shape, list) or not all(_index(d) for d in shape):
        raise MalformedFile(f"{where}: tensor {name!r} has an invalid shape {_short(shape)} "
                            "(a list of whole numbers >= 0)")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_index(o) for o in offsets):
        raise MalformedFile(f"{where}: tensor {name!r} has invalid data_offsets {_short(offsets)} "
                            "(two whole numbers >= 0)")
    begin, end = offsets
    if begin > end:
        raise MalformedFile(f"{where}: tensor {name!r} has invalid offsets or shape (ends before it begins)")
    for k, v in info.items():
        if k not in ("dtype", "shape", "data_offsets"):
            _check_extra(v, MAX_DEPTH - 2, where)  # below the header and the entry
    elements = 1
    for d in shape:
        elements *= d
        if elements >= _U64:
            break
    nbits = elements * bits
    if nbits >= _U64:
        raise MalformedFile(f"{where}: tensor {name!r} is too large ({dtype}{shape} overflows 64 bits)")
    if nbits % 8:
        raise MalformedFile(f"{where}: tensor {name!r} does not end on a byte boundary ({dtype}{shape})")
    if end - begin != nbits // 8:
        raise MalformedFile(f"{where}: tensor {name!r} is {end - begin} bytes but "
                            f"{dtype}{shape} needs {nbits // 8}")
    return TensorSpan(name, dtype, shape, begin, end)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
