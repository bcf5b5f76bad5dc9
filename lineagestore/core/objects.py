"""Object types and their encodings (no I/O).

Structured objects (everything but ``blob``) are canonical JSON: UTF-8, keys sorted, no
insignificant whitespace, so the same content always encodes to the same bytes and the same id.
See docs/format.md for the byte layout of each type and of the loose-object file.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Sequence
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any, ClassVar, NamedTuple, Self

import zstandard

from .errors import CorruptObject, InvalidInput, UnsupportedFormat
from .ids import check_object_id

# ----------------------------------------------------------------------------- file header

MAGIC = b"LIN\x01"
HEADER = struct.Struct("<4sBBHQ")  # magic, type code, codec, reserved, decoded size
HEADER_SIZE = HEADER.size  # 16

TYPE_CODES: dict[str, int] = {
    "blob": 1,
    "chunks": 2,
    "tensor-file": 3,
    "tree": 4,
    "commit": 5,
    "dataset": 6,
    "records": 7,
    "checkpoint": 8,
    "queue": 9,
}
TYPE_NAMES = {v: k for k, v in TYPE_CODES.items()}
#: types whose payload names other objects (the gc mark phase reads only these)
LINKING_TYPES = frozenset({"chunks", "tensor-file", "tree", "commit", "dataset", "checkpoint", "queue"})

CODEC_RAW = 0
CODEC_ZSTD = 1
CODEC_PLANES = 2  # byte planes (core/codecs.py); format 3
CODEC_DELTA = 3  # XOR delta against a base object, then byte planes (core/codecs.py); format 3
CODEC_ALIGNED = 4  # raw after zero padding, placed for reflinks (core/loose.py); format 3
CODEC_NAMES = {CODEC_RAW: "raw", CODEC_ZSTD: "zstd", CODEC_PLANES: "planes", CODEC_DELTA: "delta",
               CODEC_ALIGNED: "aligned"}

#: files (and tensors) larger than this are split into blobs of this size listed by a chunks object
CHUNK_SIZE = 16 << 20
#: a ``records`` object holds at most 262,144 ids of 16 bytes (lineagestore.data.ledger.PART_IDS)
RECORDS_MAX = 4 << 20
#: JSON objects (commits, trees, ...). The largest are tensor files, ~300 bytes per tensor (its
#: safetensors header entry plus its list entry): 64 MiB holds 200,000 tensors in one file.
JSON_MAX = 64 << 20
#: the largest decoded size each type may have. A header declaring more is corrupt: readers refuse
#: it before allocating or decoding anything, and writers never make such an object.
MAX_SIZE: dict[str, int] = {
    "blob": CHUNK_SIZE, "records": RECORDS_MAX,
    **{t: JSON_MAX for t in ("chunks", "tensor-file", "tree", "commit", "dataset", "checkpoint", "queue")},
}


class ObjectHeader(NamedTuple):
    """An object's fixed-size header, parsed (a tuple: one is made per read, at a third of the
    cost of a frozen dataclass)."""

    type: str
    codec: int
    size: int


def pack_header(type_name: str, codec: int, size: int) -> bytes:
    if size > MAX_SIZE[type_name]:
        raise InvalidInput(f"a {type_name} object holds at most {MAX_SIZE[type_name]:,} bytes; "
                           f"this one would hold {size:,}")
    return HEADER.pack(MAGIC, TYPE_CODES[type_name], codec, 0, size)


def unpack_header(raw: bytes | memoryview, where: str = "object") -> ObjectHeader:
    if len(raw) < HEADER_SIZE:
        raise CorruptObject(f"{where}: truncated header ({len(raw)} bytes)")
    magic, code, codec, _reserved, size = HEADER.unpack_from(raw)
    if magic != MAGIC:
        if magic[:3] == MAGIC[:3] and MAGIC[3] < magic[3] < 32:  # a later version, not a text or pack byte
            raise UnsupportedFormat(f"{where}: object format version {magic[3]} is newer than this lin")
        raise CorruptObject(f"{where}: bad magic bytes {magic!r}")
    if code not in TYPE_NAMES:
        raise CorruptObject(f"{where}: unknown object type code {code}")
    if codec not in CODEC_NAMES:
        raise CorruptObject(f"{where}: unknown codec {codec}")
    type_name = TYPE_NAMES[code]
    if size > MAX_SIZE[type_name]:
        raise CorruptObject(f"{where} is corrupt: its header declares {size:,} bytes, "
                            f"more than a {type_name} may hold ({MAX_SIZE[type_name]:,})",
                            hint="run `lin fsck` to list every damaged object")
    return ObjectHeader(type_name, codec, size)


# ------------------------------------------------------------------------------ compression

#: zstd level 1: on model weights it compresses as well as level 3 (bf16 ~0.78 of the size at
#: either: the gain is entropy coding of the exponent bytes, there are no matches to find) and
#: about 1.3-1.6x faster; on JSONL text it is even slightly better than 3 and twice as fast.
DEFAULT_LEVEL = 1
_ZSTD_LEVEL = DEFAULT_LEVEL

#: ``core.compression``: which objects writers compress (readers accept every codec, and an
#: object's id does not depend on it).
#:
#: - ``auto`` (default): zstd for what has repeated byte sequences (text, JSON, configs, zero or
#:   sparse tensors), raw for what has none. Trained float weights have none: zstd gains only by
#:   entropy-coding their exponent bytes (bf16 to ~0.78 of the size, fp32 ~0.93) and decodes
#:   that at ~1 GB/s per core, which makes every checkout of a model twice as slow as a copy.
#:   Objects over 64 KiB are probed first with zstd's fastest mode, which finds repeats but
#:   codes no entropy (borg's "auto" decides the same way with lz4); smaller ones are compressed.
#: - ``zstd``: compress everything at ``compression_level`` (smallest store; bf16 weights ~0.78).
#: - ``none``: store everything raw.
COMPRESSION_MODES = ("auto", "zstd", "none")
DEFAULT_COMPRESSION = "auto"
_PROBE_LEVEL = -5  # zstd's fast mode: matches only, literals left uncoded
_PROBE_SIZE = 64 << 10  # bytes from each of three places of a large object


_TLS = threading.local()  # zstd contexts per thread: making one costs more than a small object's work


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cs: dict[int, zstandard.ZstdCompressor] = _TLS.__dict__.setdefault("c", {})
    c = cs.get(level)
    if c is None:
        c = cs[level] = zstandard.ZstdCompressor(level=level)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_TLS, "d", None)
    if d is None:
        d = _TLS.d = zstandard.ZstdDecompressor()
    return d


compressor = _compressor  # the per-thread contexts, shared with .codecs
decompressor = _decompressor


def compress(data: bytes | memoryview, level: int = _ZSTD_LEVEL) -> tuple[int, bytes | memoryview]:
    """Compress with zstd; keep the raw bytes when compression saves less than 3%."""
    if len(data) < 64:
        return CODEC_RAW, data
    c = _compressor(level).compress(data)
    if len(c) > len(data) * 0.97:
        return CODEC_RAW, data
    return CODEC_ZSTD, c


def has_repeats(data: bytes | memoryview) -> bool:
    """Whether zstd's fast mode (matches, no entropy coding) saves 3% on samples of ``data``."""
    view = memoryview(data)
    n = len(view)
    sample: bytes | memoryview
    if n <= 3 * _PROBE_SIZE:
        sample = view
    else:
        mid = (n - _PROBE_SIZE) // 2
        sample = b"".join((view[:_PROBE_SIZE], view[mid:mid + _PROBE_SIZE], view[n - _PROBE_SIZE:]))
    return compress(sample, _PROBE_LEVEL)[0] != CODEC_RAW


def encode_payload(data: bytes | memoryview, level: int = _ZSTD_LEVEL,
                   mode: str = DEFAULT_COMPRESSION) -> tuple[int, bytes | memoryview]:
    """The codec and payload a writer stores ``data`` with, under ``core.compression`` ``mode``."""
    if mode == "none":
        return CODEC_RAW, data
    if mode == "auto" and len(data) > _PROBE_SIZE and not has_repeats(data):
        return CODEC_RAW, data
    return compress(data, level)


def decompress(codec: int, payload: bytes | memoryview, size: int, where: str = "object") -> bytes | memoryview:
    """The decoded content of a payload whose header declares ``size`` (already bounded by
    :func:`unpack_header`). Never produces more than ``size`` bytes: zstd allocates what the
    frame declares, so a frame declaring more than the header is refused before decoding.
    Raw payloads come back as given (callers check the length and hash)."""
    if codec == CODEC_RAW:
        return payload
    try:
        declared = zstandard.frame_content_size(payload)
        if declared > size:  # -1: not declared, then max_output_size bounds the output
            raise CorruptObject(f"{where} is corrupt: its zstd frame declares {declared:,} bytes, "
                                f"its header {size:,}", hint="run `lin fsck` to list every damaged object")
        return _decompressor().decompress(payload, max_output_size=size)
    except zstandard.ZstdError as e:
        raise CorruptObject(f"{where}: payload does not decompress ({e})") from e


# ------------------------------------------------------------------------------ canonical JSON


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def parse_json(data: bytes, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptObject(f"{where}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise CorruptObject(f"{where}: expected a JSON object")
    return obj


class JsonObject:
    """Mixin for dataclass objects stored as canonical JSON."""

    type_name: ClassVar[str]
    #: every subclass is a dataclass (declared, not set here: ``dataclass`` sets it on each)
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def encode(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def decode(cls, data: bytes, where: str = "object") -> Self:
        d = parse_json(data, where)
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError, KeyError) as e:
            raise CorruptObject(f"{where}: malformed {cls.type_name} ({e})") from e

    def links(self) -> list[str]:
        """Ids of the objects this one refers to."""
        return []


@dataclass(frozen=True)
class Chunks(JsonObject):
    """A large byte string split into blobs, in order."""

    type_name: ClassVar[str] = "chunks"
    size: int
    parts: list[list[Any]] = field(default_factory=list)  # list of [blob id, size]

    def links(self) -> list[str]:
        return [p[0] for p in self.parts]


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: list[int]
    size: int
    id: str  # blob or chunks id of the raw tensor bytes


@dataclass(frozen=True)
class TensorFile(JsonObject):
    """A safetensors file: the exact header bytes (as text) and its tensors in data order.

    Rebuilding is ``len(header) as u64 LE`` + header + each tensor's bytes in list order.
    """

    type_name: ClassVar[str] = "tensor-file"
    header: str
    tensors: Sequence[TensorEntry | dict[str, Any]]  # TensorEntry dicts once decoded
    size: int

    def entries(self) -> list[TensorEntry]:
        return [TensorEntry(**t) if isinstance(t, dict) else t for t in self.tensors]

    def to_dict(self) -> dict[str, Any]:
        return {"header": self.header, "size": self.size,
                "tensors": [asdict(t) if isinstance(t, TensorEntry) else t for t in self.tensors]}

    def links(self) -> list[str]:
        return [t.id for t in self.entries()]


@dataclass(frozen=True)
class TreeEntry:
    name: str
    type: str  # blob | chunks | tensor-file | tree
    id: str
    size: int
    executable: bool = False


@dataclass(frozen=True)
class Tree(JsonObject):
    type_name: ClassVar[str] = "tree"
    entries: Sequence[TreeEntry | dict[str, Any]]  # sorted by name; TreeEntry dicts once decoded

    def items(self) -> list[TreeEntry]:
        return [TreeEntry(**e) if isinstance(e, dict) else e for e in self.entries]

    def to_dict(self) -> dict[str, Any]:
        return {"entries": [asdict(e) if isinstance(e, TreeEntry) else e for e in self.entries]}

    def links(self) -> list[str]:
        return [e.id for e in self.items()]


@dataclass(frozen=True)
class Commit(JsonObject):
    """A model version. ``name`` is its immutable version name (``v004_full_stack``)."""

    type_name: ClassVar[str] = "commit"
    tree: str
    parents: list[str]
    name: str
    kind: str = "commit"  # import | commit | train
    datasets: list[str] = field(default_factory=list)  # dataset object ids
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    code: dict[str, Any] | None = None  # {"path", "commit", "dirty", "branch"} of the training code's git repo
    env: dict[str, Any] = field(default_factory=dict)
    author: str = ""
    created: str = ""  # ISO 8601 UTC
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def links(self) -> list[str]:
        # a trained version's per-step series (format 4): a tree of segments, kept as long as the version
        series = self.extra.get("series") if isinstance(self.extra, dict) else None
        return [self.tree, *self.parents, *self.datasets, *([series] if isinstance(series, str) else [])]


@dataclass(frozen=True)
class Dataset(JsonObject):
    """A registered data file. ``content`` is the id of the file's bytes (blob or chunks)."""

    type_name: ClassVar[str] = "dataset"
    content: str
    filename: str
    format: str
    size: int
    examples: int
    #: id of the sorted record-id set: a ``records`` object, or for a large set a ``chunks`` object
    #: whose parts are ``records`` objects (lineagestore.data.ledger); None if empty
    records: str | None
    tokens: dict[str, Any] = field(default_factory=dict)  # tokenizer id -> token count
    description: str = ""
    first_seen: str = ""
    stored: bool = True  # False with --no-store: content is not in the store
    skipped_lines: int = 0
    #: str keys; typed Any so that ``{k: extra[k] for k in (...) if k in extra}`` (data.parts)
    #: stays a ``dict[str, ...]``: mypy narrows ``k`` to the literals when the keys are ``str``
    extra: dict[Any, Any] = field(default_factory=dict)

    def links(self) -> list[str]:
        out = [self.content] if self.stored else []
        if self.records:
            out.append(self.records)
        return out


@dataclass(frozen=True)
class Checkpoint(JsonObject):
    """A training-run checkpoint: model tree, trainer state tree, and run metadata."""

    type_name: ClassVar[str] = "checkpoint"
    run: str
    step: int
    model: str  # tree id
    state: str | None = None  # tree id of optimizer/scheduler/rng/data-position state
    parent: str | None = None  # previous checkpoint id: a plain id, not a link (see links)
    meta: dict[str, Any] = field(default_factory=dict)

    def links(self) -> list[str]:
        # ``parent`` is not followed: a run's last checkpoint would otherwise keep every earlier
        # one alive, so gc could never reclaim them (which checkpoints stay is the run reflog's rule)
        return [x for x in (self.model, self.state) if x]


@dataclass(frozen=True)
class QueueDoc(JsonObject):
    """A branch's training queue (format 2; read and checked by ``lineagestore.queue``).

    ``items`` holds one list per field (columns, in queue order); ``log`` the newest loop-log
    entries and ``log_parts`` blobs of the older ones, oldest first.
    """

    type_name: ClassVar[str] = "queue"
    branch: str
    next: int
    paused: str | None
    items: dict[str, Any]
    log: list[Any]
    log_parts: list[str]
    log_count: int

    def to_dict(self) -> dict[str, Any]:
        # shallow: ``asdict`` would copy every element of 50,000-item columns one by one (~3 s)
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def links(self) -> list[str]:
        datasets = self.items.get("dataset", []) if isinstance(self.items, dict) else []
        return [*self.log_parts, *datasets]


JSON_TYPES: dict[str, type[JsonObject]] = {
    c.type_name: c for c in (Chunks, TensorFile, Tree, Commit, Dataset, Checkpoint, QueueDoc)
}


def decode_object(type_name: str, data: bytes, where: str = "object") -> Any:
    """Decode a structured object into its class in :data:`JSON_TYPES`; ``blob`` and ``records``
    return the bytes unchanged. (Typed ``Any``: which it is depends on ``type_name`` at run time;
    ``ObjectStore.get`` with a literal type gives the class.)"""
    cls = JSON_TYPES.get(type_name)
    if cls is None:
        return data
    return cls.decode(data, where)


def links_of(type_name: str, data: bytes, where: str = "object") -> list[str]:
    if type_name not in LINKING_TYPES:
        return []
    return [check_object_id(x) for x in JSON_TYPES[type_name].decode(data, where).links()]
