"""Model-aware codecs behind the object header: byte planes (codec 2) and XOR delta (codec 3).

Trained float weights have no repeated byte sequences, but their bytes are not alike: the byte
holding the sign and exponent of a bf16 (or fp32) value takes few values, its low mantissa
bytes look random. Byte planes put byte k of every element together, so zstd codes each plane
on its own statistics (the exponent plane shrinks to ~1/3, a random plane is kept raw).

A fine-tuned tensor differs from its parent's in few bits: the XOR of the two is mostly zero
in the high planes, and the delta codec stores that XOR as byte planes, with the base object's
id first. Decoding a delta needs the base's decoded content; :func:`.content.decode_stored`
follows the chain (bounded by ``core.delta_max_depth``) and verifies every object on it.

Layouts (docs/format.md, "Codecs 2 and 3"):

- planes payload: ``itemsize`` u8, ``plane count`` u8 (= itemsize), ``tail`` u8 (bytes after
  the last whole element, < itemsize), reserved u8 = 0; per plane: mode u8 (0 raw, 1 zstd
  frame) and stored length u32 LE; the ``tail`` bytes; then the planes in order (plane k = byte
  k of every whole element, in memory order).
- delta payload: the base id (32 bytes, binary) then a planes payload of ``data XOR base``.

Only numpy views and zstd buffers touch the bytes (no per-byte Python, nothing decoded into
Python objects); zstd and numpy's copies release the GIL, so pieces decode on all cores.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import zstandard

from .errors import CorruptObject, InvalidInput
from .ids import check_object_id
from .objects import CODEC_DELTA, CODEC_PLANES, CODEC_RAW, decompressor, pack_header

_HINT = "run `lin fsck` to list every damaged object"

HEAD = struct.Struct("<BBBB")  # itemsize, plane count, tail length, reserved
ENTRY = struct.Struct("<BI")  # plane mode, stored length
MODE_RAW = 0
MODE_ZSTD = 1
MAX_ITEMSIZE = 8
BASE_ID_SIZE = 32

#: ``core.codec_min_saving``: an encoding (and each plane of it) is kept only when it saves at
#: least this share of the raw size; otherwise the raw bytes are stored (fast to read).
DEFAULT_MIN_SAVING = 0.03
#: ``core.delta_max_depth``: the most delta objects a read follows before reaching a whole one.
DEFAULT_MAX_DEPTH = 10
#: zstd level of compressed planes. A plane has few repeats worth finding (the gain is entropy
#: coding of its bytes; short matches cost more than the literals they replace): on MiniLM's bf16
#: and fp32 weights and their deltas, level 1 with matches of 7 bytes or more and the smallest
#: hash table (64 entries) is the smallest of levels 1-3 and of larger tables (bf16 0.671 of raw
#: vs 0.686 at plain level 1, 0.702 at level 2), and its planes decode ~1.4x faster than plain
#: level 1's (docs/benchmarks.md, "Codecs").
DEFAULT_PLANE_LEVEL = 1
_TLS = threading.local()  # zstd contexts per thread, by level
_PROBE = 64 << 10  # bytes from each of three places of a plane, to skip compressing a random one

#: bytes per element of the safetensors dtypes (what a tensor-file entry's ``dtype`` names)
ITEMSIZES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}


def itemsize_of(dtype: str) -> int:
    """Bytes per element of a safetensors dtype name; 1 (a single plane) for one not listed."""
    return ITEMSIZES.get(dtype, 1)


# ------------------------------------------------------------------------------ encoding


if TYPE_CHECKING:  # numpy is imported where a codec runs: `lin init` and friends never load it
    import numpy as np

    Bytes = bytes | bytearray | memoryview | np.ndarray  # np: a uint8 array (numpy's buffer)


def plane_compressor(level: int) -> zstandard.ZstdCompressor:
    """This thread's zstd compressor for planes at ``level`` (minimum match 7, hash log 6)."""
    cs: dict[int, zstandard.ZstdCompressor] = _TLS.__dict__.setdefault("c", {})
    c = cs.get(level)
    if c is None:
        params = zstandard.ZstdCompressionParameters.from_level(level, min_match=7, hash_log=6)
        c = cs[level] = zstandard.ZstdCompressor(compression_params=params)
    return c


def _as_array(data: Bytes) -> np.ndarray:
    import numpy as np
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


def _probe_saves(plane: np.ndarray, min_saving: float) -> bool:
    """Whether the plane compressor saves ``min_saving`` on three 64 KiB samples of a large plane
    (a random plane is then not compressed whole only to be kept raw)."""
    import numpy as np
    n = len(plane)
    if n <= 3 * _PROBE:
        return True
    mid = (n - _PROBE) // 2
    sample = np.concatenate((plane[:_PROBE], plane[mid:mid + _PROBE], plane[n - _PROBE:]))
    return len(plane_compressor(DEFAULT_PLANE_LEVEL).compress(sample.data)) <= len(sample) * (1 - min_saving)


def _encode_plane(plane: np.ndarray, level: int, min_saving: float) -> tuple[int, bytes | memoryview]:
    """The mode and stored bytes of one plane: zstd when it saves ``min_saving``, else raw."""
    raw = plane.data
    if len(plane) >= 64 and _probe_saves(plane, min_saving):
        packed = plane_compressor(level).compress(raw)
        if len(packed) <= len(plane) * (1 - min_saving):
            return MODE_ZSTD, packed
    return MODE_RAW, raw


def pack_planes(data: Bytes, itemsize: int, level: int = DEFAULT_PLANE_LEVEL,
                min_saving: float = DEFAULT_MIN_SAVING) -> bytes:
    """A planes payload of ``data`` (elements of ``itemsize`` bytes; a trailing partial element
    is kept as is), whatever it saves. See :func:`encode_planes`."""
    import numpy as np
    if not 1 <= itemsize <= MAX_ITEMSIZE:
        raise InvalidInput(f"byte planes: element size {itemsize} is not 1 to {MAX_ITEMSIZE}")
    arr = _as_array(data)
    whole = len(arr) - len(arr) % itemsize
    grid = arr[:whole].reshape(-1, itemsize)
    tail = arr[whole:]
    planes = [_encode_plane(np.ascontiguousarray(grid[:, k]), level, min_saving) for k in range(itemsize)]
    head = [HEAD.pack(itemsize, itemsize, len(tail), 0)]
    head += [ENTRY.pack(mode, len(body)) for mode, body in planes]
    return b"".join([*head, tail.tobytes(), *(body for _, body in planes)])


def encode_planes(data: bytes | bytearray | memoryview, itemsize: int, level: int = DEFAULT_PLANE_LEVEL,
                  min_saving: float = DEFAULT_MIN_SAVING) -> bytes | None:
    """The codec-2 payload of ``data`` as byte planes of ``itemsize``-byte elements, each plane
    zstd-compressed at ``level`` or kept raw when that saves under ``min_saving``; None when the
    whole payload saves under ``min_saving`` of ``len(data)`` (store it raw then)."""
    payload = pack_planes(data, itemsize, level, min_saving)
    return payload if len(payload) <= memoryview(data).nbytes * (1 - min_saving) else None


def xor_bytes(data: bytes | bytearray | memoryview, base: bytes | bytearray | memoryview) -> np.ndarray:
    """``data XOR base`` (same length) as a new uint8 array."""
    import numpy as np
    out: np.ndarray = np.bitwise_xor(_as_array(data), _as_array(base))
    return out


def encode_delta(data: bytes | bytearray | memoryview, base_data: bytes | bytearray | memoryview,
                 base_id: str, itemsize: int, level: int = DEFAULT_PLANE_LEVEL,
                 min_saving: float = DEFAULT_MIN_SAVING) -> bytes | None:
    """The codec-3 payload of ``data`` against the object ``base_id`` whose decoded content is
    ``base_data`` (same length): the base id, then the planes of ``data XOR base_data``. None
    when it saves under ``min_saving`` of ``len(data)``."""
    size, base_size = memoryview(data).nbytes, memoryview(base_data).nbytes
    if size != base_size:
        raise InvalidInput(f"delta against object {base_id}: it holds {base_size:,} bytes, the content {size:,}")
    payload = bytes.fromhex(check_object_id(base_id)) + pack_planes(xor_bytes(data, base_data), itemsize, level,
                                                                      min_saving)
    return payload if len(payload) <= size * (1 - min_saving) else None


def stored_object(type_name: str, data: bytes | bytearray | memoryview, codec: int, itemsize: int = 1, *,
                  base: tuple[str, bytes | bytearray | memoryview] | None = None,
                  level: int = DEFAULT_PLANE_LEVEL, min_saving: float = DEFAULT_MIN_SAVING,
                  mode: str = "auto") -> tuple[int, bytes]:
    """An object in stored form (16-byte header + payload) with ``codec`` (CODEC_PLANES, or
    CODEC_DELTA with ``base`` = (base id, its decoded content)), for a loose file or a pack.

    Falls back to codec 0 (raw) when the codec saves under ``min_saving``, and always under
    ``mode`` ``"none"`` (``core.compression``). Returns (the codec used, the stored bytes).
    Its id is that of ``data`` as ever (:func:`.ids.hash_object`); the caller knows it.
    """
    size = memoryview(data).nbytes
    payload: bytes | None = None
    if mode != "none":
        if codec == CODEC_PLANES:
            payload = encode_planes(data, itemsize, level, min_saving)
        elif codec == CODEC_DELTA:
            if base is None:
                raise InvalidInput("a delta object needs a base")
            payload = encode_delta(data, base[1], base[0], itemsize, level, min_saving)
        else:
            raise InvalidInput(f"stored_object makes codecs {CODEC_PLANES} and {CODEC_DELTA}, not {codec}")
    if payload is None:
        return CODEC_RAW, pack_header(type_name, CODEC_RAW, size) + bytes(memoryview(data).cast("B"))
    return codec, pack_header(type_name, codec, size) + payload


# ------------------------------------------------------------------------------ decoding


def _corrupt(where: str, what: str) -> CorruptObject:
    return CorruptObject(f"{where} is corrupt: {what}", hint=_HINT)


def _plane_table(payload: memoryview, size: int, where: str) -> tuple[int, int, list[tuple[int, int]], int]:
    """(itemsize, tail length, [(mode, stored length)] per plane, offset of the tail) of a planes
    payload whose decoded size is ``size``, checked against the payload's length."""
    if len(payload) < HEAD.size:
        raise _corrupt(where, f"byte-plane payload of {len(payload)} bytes has no header")
    itemsize, count, tail, reserved = HEAD.unpack_from(payload)
    if not 1 <= itemsize <= MAX_ITEMSIZE or count != itemsize or reserved or tail >= itemsize:
        raise _corrupt(where, f"bad byte-plane header (element size {itemsize}, {count} planes, tail {tail})")
    if (size - tail) % itemsize or size < tail:
        raise _corrupt(where, f"{size} bytes are not {itemsize}-byte elements and a {tail}-byte tail")
    start = HEAD.size + count * ENTRY.size
    if len(payload) < start:
        raise _corrupt(where, "byte-plane table is truncated")
    entries = [ENTRY.unpack_from(payload, HEAD.size + k * ENTRY.size) for k in range(count)]
    if start + tail + sum(n for _, n in entries) != len(payload):
        raise _corrupt(where, f"byte-plane payload of {len(payload)} bytes does not match its table")
    return itemsize, tail, entries, start


def _decode_plane(mode: int, body: memoryview, n: int, where: str, k: int) -> memoryview | bytes:
    if mode == MODE_RAW:
        if len(body) != n:
            raise _corrupt(where, f"raw plane {k} holds {len(body)} bytes, not {n}")
        return body
    if mode != MODE_ZSTD:
        raise _corrupt(where, f"plane {k} has unknown mode {mode}")
    try:
        declared = zstandard.frame_content_size(body)
        if declared > n:  # -1: not declared, then max_output_size bounds the output
            raise _corrupt(where, f"plane {k}'s zstd frame declares {declared:,} bytes, not {n:,}")
        out = decompressor().decompress(body, max_output_size=n)
    except zstandard.ZstdError as e:
        raise _corrupt(where, f"plane {k} does not decompress ({e})") from e
    if len(out) != n:
        raise _corrupt(where, f"plane {k} decodes to {len(out)} bytes, not {n}")
    return out


def unpack_planes(payload: bytes | memoryview, size: int, where: str) -> np.ndarray:
    """The ``size`` decoded bytes of a planes payload, as a new uint8 array."""
    import numpy as np
    view = memoryview(payload).cast("B")
    itemsize, tail, entries, pos = _plane_table(view, size, where)
    out = np.empty(size, dtype=np.uint8)
    whole = size - tail
    out[whole:] = np.frombuffer(view[pos:pos + tail], dtype=np.uint8)
    pos += tail
    planes = []
    for k, (mode, n) in enumerate(entries):
        planes.append(np.frombuffer(_decode_plane(mode, view[pos:pos + n], whole // itemsize, where, k), np.uint8))
        pos += n
    if itemsize == 2:  # as 16-bit integers: vector shifts beat numpy's strided byte copy ~2x
        pairs = out[:whole].view("<u2")
        np.left_shift(planes[1], 8, out=pairs, dtype="<u2")
        np.bitwise_or(pairs, planes[0], out=pairs)
        return out
    grid = out[:whole].reshape(-1, itemsize)
    for k, plane in enumerate(planes):
        grid[:, k] = plane
    return out


def decode_planes(payload: bytes | memoryview, size: int, where: str = "object") -> bytes:
    """The decoded content of a codec-2 payload whose header declares ``size`` bytes."""
    return unpack_planes(payload, size, where).tobytes()


def delta_base(payload: bytes | memoryview, where: str = "object") -> str:
    """The id of the base object a codec-3 payload is a delta against."""
    view = memoryview(payload).cast("B")
    if len(view) < BASE_ID_SIZE:
        raise _corrupt(where, f"delta payload of {len(view)} bytes has no base id")
    return bytes(view[:BASE_ID_SIZE]).hex()


def decode_delta(payload: bytes | memoryview, size: int, base_data: bytes | memoryview,
                 where: str = "object") -> bytes:
    """The decoded content of a codec-3 payload, given its base's decoded content (verified by
    the caller, and of ``size`` bytes)."""
    import numpy as np
    view = memoryview(payload).cast("B")
    delta_base(view, where)
    if len(memoryview(base_data).cast("B")) != size:
        raise _corrupt(where, f"its delta base holds {len(memoryview(base_data).cast('B')):,} bytes, not {size:,}")
    out = unpack_planes(view[BASE_ID_SIZE:], size, where)
    np.bitwise_xor(out, _as_array(base_data), out=out)
    return out.tobytes()


def plane_sizes(payload: bytes | memoryview, size: int, where: str = "object") -> Sequence[tuple[int, int]]:
    """(mode, stored length) of each plane of a codec-2 payload (for reports and tests)."""
    return _plane_table(memoryview(payload).cast("B"), size, where)[2]
