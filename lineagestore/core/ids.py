"""BLAKE3 hashing of objects and id validation.

An object id is the BLAKE3-256 hash of ``b"<type> <decoded size>\\0"`` followed by the decoded
content, written as 64 lowercase hex characters. The id therefore depends only on the type and
the bytes, never on how they are stored (codec, chunking of the file on disk).
"""

from __future__ import annotations

import re

import blake3

from .errors import InvalidInput

ID_HEX_LEN = 64
_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_PREFIX_RE = re.compile(r"^[0-9a-f]{4,64}$")
#: files larger than this are hashed with blake3's own threads
_MT_THRESHOLD = 4 << 20


def object_header(type_name: str, size: int) -> bytes:
    return f"{type_name} {size}\0".encode("ascii")


def hash_object(type_name: str, data: bytes | memoryview) -> str:
    threads = blake3.blake3.AUTO if len(data) >= _MT_THRESHOLD else 1
    h = blake3.blake3(object_header(type_name, len(data)), max_threads=threads)
    h.update(data)
    return h.hexdigest()


class ObjectHasher:
    """Incremental id computation when the size is known in advance."""

    def __init__(self, type_name: str, size: int):
        self._h = blake3.blake3(object_header(type_name, size), max_threads=blake3.blake3.AUTO)
        self._expected = size
        self._seen = 0

    def update(self, data: bytes | memoryview) -> None:
        self._seen += len(data)
        self._h.update(data)

    def hexdigest(self) -> str:
        if self._seen != self._expected:
            raise ValueError(f"hashed {self._seen} bytes, expected {self._expected}")
        return self._h.hexdigest()


def is_object_id(s: str) -> bool:
    return bool(_ID_RE.match(s))


def is_id_prefix(s: str) -> bool:
    return bool(_PREFIX_RE.match(s))


def check_object_id(s: str) -> str:
    """Validate an id before any path is built from it."""
    if not isinstance(s, str) or not _ID_RE.match(s):
        raise InvalidInput(f"invalid object id {s!r}: expected 64 lowercase hex characters")
    return s


def short(oid: str, n: int = 10) -> str:
    return oid[:n]
