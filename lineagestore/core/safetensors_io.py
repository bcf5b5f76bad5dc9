"""Reading the layout of a safetensors file without loading its tensors.

A safetensors file is ``u64 LE header length N`` + ``N bytes of JSON header`` + the tensor data
buffer. The header maps tensor names to ``dtype``, ``shape`` and ``data_offsets`` [begin, end)
into the buffer, plus an optional ``__metadata__`` map. We keep the header bytes exactly as
found (including any padding) so that the file rebuilds byte for byte.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import MalformedFile

#: bytes per element; dtypes not listed are stored without a size check
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "C64": 8,
    "I64": 8, "U64": 8, "F64": 8,
}
MAX_HEADER = 100 << 20


@dataclass(frozen=True)
class TensorSpan:
    name: str
    dtype: str
    shape: list
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
    metadata: dict


def read_layout(path: os.PathLike | str) -> SafetensorsLayout:
    """Parse and validate the header; raise MalformedFile naming the file on any problem."""
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        first = f.read(8)
        if len(first) < 8:
            raise MalformedFile(f"{p}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", first)
        if n > MAX_HEADER or n + 8 > size:
            raise MalformedFile(f"{p}: truncated or malformed safetensors file "
                                f"(header length {n} does not fit in {size} bytes)")
        header = f.read(n)
    return parse_header(header, size, str(p))


def parse_header(header: bytes, file_size: int, where: str) -> SafetensorsLayout:
    try:
        doc = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedFile(f"{where}: malformed safetensors header ({e})") from None
    if not isinstance(doc, dict):
        raise MalformedFile(f"{where}: malformed safetensors header (not a JSON object)")
    metadata = doc.pop("__metadata__", None) or {}
    spans = []
    for name, info in doc.items():
        try:
            dtype = info["dtype"]
            shape = [int(x) for x in info["shape"]]
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise MalformedFile(f"{where}: malformed entry for tensor {name!r}") from None
        if begin > end or any(d < 0 for d in shape):
            raise MalformedFile(f"{where}: tensor {name!r} has invalid offsets or shape")
        esize = DTYPE_SIZES.get(dtype)
        if esize is not None and (end - begin) != math.prod(shape) * esize:
            raise MalformedFile(f"{where}: tensor {name!r} is {end - begin} bytes but "
                                f"{dtype}{shape} needs {math.prod(shape) * esize}")
        spans.append(TensorSpan(name, dtype, shape, begin, end))
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
