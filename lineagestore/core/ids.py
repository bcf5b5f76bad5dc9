"""BLAKE3 hashing of objects and id validation.

An object id is the BLAKE3-256 hash of ``b"<type> <decoded size>\\0"`` followed by the decoded
content, written as 64 lowercase hex characters. The id therefore depends only on the type and
the bytes, never on how they are stored (codec, chunking of the file on disk).
"""

from __future__ import annotations

import re
from typing import NewType

import blake3

from .errors import InvalidInput

#: a validated object id (64 lowercase hex characters). What makes ids (hashing, the store's puts,
#: :func:`check_object_id`) returns one; what only reads an id accepts any ``str``.
ObjectId = NewType("ObjectId", str)

_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_PREFIX_RE = re.compile(r"^[0-9a-f]{4,64}$")
#: files larger than this are hashed with blake3's own threads
_MT_THRESHOLD = 4 << 20


def object_header(type_name: str, size: int) -> bytes:
    return f"{type_name} {size}\0".encode("ascii")


def hash_object(type_name: str, data: bytes | memoryview) -> ObjectId:
    threads = blake3.blake3.AUTO if len(data) >= _MT_THRESHOLD else 1
    h = blake3.blake3(object_header(type_name, len(data)), max_threads=threads)
    h.update(data)
    digest: str = h.hexdigest()
    return ObjectId(digest)


def is_object_id(s: str) -> bool:
    return bool(_ID_RE.match(s))


def is_id_prefix(s: str) -> bool:
    return bool(_PREFIX_RE.match(s))


def check_object_id(s: str) -> ObjectId:
    """Validate an id before any path is built from it."""
    if not isinstance(s, str) or not _ID_RE.match(s):
        raise InvalidInput(f"invalid object id {s!r}: expected 64 lowercase hex characters")
    return ObjectId(s)


def short(oid: str, n: int = 10) -> str:
    return oid[:n]
