"""The object store contract and what every store shares, over the few primitives each provides
(:class:`ObjectStore`); the stores themselves (on disk, its batches, the in-memory twin) are in
:mod:`.store`, which also gives every name here.

Contract:
- ``put(type, data)`` returns the id and stores the object once; putting it again stores
  nothing and refreshes its mtime (gc's grace period counts from the last put).
- ``get_raw(id)`` returns ``(type, bytes)`` and verifies the hash on every read; a corrupt
  object raises :class:`CorruptObject` naming the id, a missing one :class:`ObjectNotFound`.
- ``header(id)`` reads only the fixed-size header (type, codec, size) without decompressing.
- ``put_bytes_chunked`` (bytes in memory), ``put_stream`` (a file object) and ``put_range`` (a
  range of an open file; on disk copied in the kernel and hashed where stored) store content of
  any size by the chunking rule of :mod:`.content`; ``iter_content`` streams it back, verified.
- ``put_stored`` takes an object in stored form (from another store), verified first.
- ``open_raw_blob(id)`` gives a raw-stored blob, verified, open for an in-kernel copy (on disk;
  None elsewhere or for compressed objects).
- A disk store's read of the content of an object it lacks on purpose (weights dropped by
  core.local_versions) first asks :attr:`ObjectStore.absent` to bring it back, verified
  (:class:`AbsentObjects`); ``has`` and ``header`` (a probe) see the store as it is.
- ``batch()`` gives a view whose new objects become visible together at ``flush()`` (on disk).
- Every read decodes and verifies through :func:`.content.decode_stored`.
- Which objects are compressed follows ``compression`` (``core.compression``: auto, zstd, none;
  see :func:`lineagestore.core.objects.encode_payload`); ids never depend on it.
- All methods are safe to call from several threads at once.

Tested by tests/test_store_contract.py against the disk store, its batch and the memory twin.
"""

from __future__ import annotations

import collections
import functools
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Literal, Protocol, overload

from .codecs import DEFAULT_MAX_DEPTH
from .content import (
    DecodedCache,
    ParallelWriter,
    RawBlob,
    decode_buffer,
    decode_stored,
    name_content,
    piece_spans,
)
from .errors import CorruptObject, InvalidInput, ObjectNotFound
from .ids import ObjectId, check_object_id, hash_object, is_id_prefix
from .objects import (
    CODEC_ALIGNED,
    CODEC_DELTA,
    CODEC_PLANES,
    DEFAULT_COMPRESSION,
    DEFAULT_LEVEL,
    HEADER_SIZE,
    Checkpoint,
    Chunks,
    Commit,
    Dataset,
    JsonObject,
    ObjectHeader,
    TensorFile,
    Tree,
    decode_object,
    encode_payload,
    pack_header,
    unpack_header,
)

_COUNT_LOCK = threading.Lock()
_CODEC_BYTE = 5  # offset of the codec in the object header (docs/format.md)


class Readable(Protocol):
    """What :meth:`ObjectStore.put_stream` reads from: a binary file (``open(path, "rb")``)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class AbsentObjects(Protocol):
    """What brings back an object this store lacks on purpose: weights that ``core.local_versions``
    dropped here, held by a remote. The layer that knows remotes installs it as
    :attr:`ObjectStore.absent` (``api.Repo``: core may not import remote).

    Called by a read that found ``oid`` absent: True once ``oid`` is placed here, verified (the
    read then tries again); False when it is none of those (the read raises ObjectNotFound as
    ever); it raises, naming the object, when it is one but cannot be brought back whole."""

    def __call__(self, oid: str, /) -> bool: ...

    def held_by(self, oid: str, /) -> str | None:
        """The remote that holds ``oid`` when this store lacks it on purpose (None when it does
        not), without fetching it: a push walking old versions counts such an object as there."""


class ObjectStore(ABC):
    compression_level: int = DEFAULT_LEVEL
    compression: str = DEFAULT_COMPRESSION  # core.compression: auto | zstd | none
    delta_max_depth: int = DEFAULT_MAX_DEPTH  # core.delta_max_depth: deltas a read follows
    #: called before the first object with a format-3 codec (planes, delta) is written, so the
    #: repo raises the store's format first (Repo.require_format(3)); None: nothing to raise
    before_new_codec: Callable[[], None] | None = None
    #: brings back what this store lacks on purpose before a read of its content fails (see
    #: :class:`AbsentObjects`); only a disk store's own reads ask it, never its batches (writes)
    absent: AbsentObjects | None = None
    #: objects and (stored) bytes this instance has written; for reports of store growth
    written_objects: int = 0
    written_bytes: int = 0

    # ---- primitives each implementation provides

    @abstractmethod
    def has(self, oid: str) -> bool: ...

    @abstractmethod
    def _read_file(self, oid: str) -> bytes:
        """The stored bytes (header + payload); ObjectNotFound if absent."""

    @abstractmethod
    def _read_header_bytes(self, oid: str) -> bytes: ...

    @abstractmethod
    def _write_file(self, oid: str, data: list[bytes | memoryview]) -> None:
        """Store header + payload atomically (no-op if present)."""

    @abstractmethod
    def _touch(self, oid: str) -> None: ...

    @abstractmethod
    def iter_ids(self) -> Iterator[str]: ...

    @abstractmethod
    def stored_size(self, oid: str) -> int: ...

    @abstractmethod
    def mtime(self, oid: str) -> float: ...

    @abstractmethod
    def remove(self, oid: str) -> None:
        """Remove one object (only gc calls this, under the exclusive store lock)."""

    # ---- behaviour shared by all stores

    def put(self, type_name: str, data: bytes | memoryview, at: int | None = None, *,
            replace: bool = False) -> ObjectId:
        """Store one object (at most its type's size, objects.MAX_SIZE); return its id. ``at``:
        the offset a blob's bytes will have in the file they belong to, if known (a raw blob may
        then be stored aligned to it: :meth:`_padding`). ``replace``: written even if held, its
        loose copy replaced (a repair of a damaged copy; a packed one stays, read after this)."""
        oid = hash_object(type_name, data)
        if replace:
            self.remove(oid)
        elif self.has(oid):
            self._touch(oid)
            return oid
        codec, payload = encode_payload(data, self.compression_level, self.compression)
        pad = self._padding(type_name, codec, len(data), at)
        if pad is None:
            self._write_file(oid, [pack_header(type_name, codec, len(data)), payload])
        else:
            self._format_3()  # codec 4
            self._write_file(oid, [pack_header(type_name, CODEC_ALIGNED, len(data)), bytes(pad), payload])
        self._wrote(HEADER_SIZE + (pad or 0) + len(payload))
        return oid

    def _padding(self, type_name: str, codec: int, size: int, at: int | None) -> int | None:
        """The zero bytes to put before the content of a blob stored at file offset ``at`` (an
        aligned object, codec 4), or None to store it as encoded. Only :class:`.store.DiskObjectStore`
        on a filesystem with reflinks aligns."""
        return None

    def _brought_back(self, oid: str) -> bool:
        """Whether :attr:`absent` placed ``oid``, absent a moment ago (a read may then try again)."""
        return self.absent is not None and self.absent(oid)

    def _wrote(self, stored: int) -> None:
        """Count one new object of ``stored`` bytes in :attr:`written_objects` / ``written_bytes``."""
        with _COUNT_LOCK:
            self.written_objects += 1
            self.written_bytes += stored

    def put_object(self, obj: JsonObject) -> ObjectId:
        return self.put(obj.type_name, obj.encode())

    def header(self, oid: str, *, bring_back: bool = False) -> ObjectHeader:
        """The object's header. A probe (the default) sees the store as it is; ``bring_back``, for
        a reader about to read the content: an object this store lacks on purpose comes back
        first (:attr:`absent`), as any read of content brings it back."""
        check_object_id(oid)
        try:
            return unpack_header(self._read_header_bytes(oid), f"object {oid}")
        except ObjectNotFound:
            if not bring_back or not self._brought_back(oid):
                raise
        return unpack_header(self._read_header_bytes(oid), f"object {oid}")

    #: verified decoded content shared by this store's reads (None: none), set for the length of
    #: a read that meets the same objects again (:meth:`caching`)
    cache: DecodedCache | None = None

    def get_raw(self, oid: str) -> tuple[str, bytes]:
        held = self.cache.get(oid) if self.cache is not None else None
        if held is not None:
            return held[0], bytes(held[1]) if not isinstance(held[1], bytes) else held[1]
        h, data = self.decode(check_object_id(oid), self._read_file(oid))
        return h.type, data

    def get_buffer(self, oid: str) -> tuple[str, bytes | memoryview]:
        """:meth:`get_raw` without the copy into ``bytes`` (a read-only buffer; for reads that
        only pass the content on, as a repack encoding it)."""
        held = self.cache.get(oid) if self.cache is not None else None
        if held is not None:
            return held[0], held[1]
        h, data = self.decode_buffer(check_object_id(oid), self._read_file(oid))
        return h.type, data

    def decode_buffer(self, oid: str, stored: bytes | memoryview) -> tuple[ObjectHeader, bytes | memoryview]:
        """:meth:`decode` without the copy into ``bytes`` (:func:`.content.decode_buffer`)."""
        return decode_buffer(oid, stored, None, self._read_file, self.delta_max_depth, self.cache)

    def decode(self, oid: str, stored: bytes | memoryview, where: str | None = None) -> tuple[ObjectHeader, bytes]:
        """:func:`.content.decode_stored` with this store's delta bases and chain bound: the one
        way an object in stored form (from here, a remote or the trash) is decoded."""
        return decode_stored(oid, stored, where, self._read_file, self.delta_max_depth, self.cache)

    @contextmanager
    def caching(self, max_bytes: int) -> Iterator[DecodedCache]:
        """Reads through a :class:`.content.DecodedCache` of ``max_bytes`` while the block runs
        (a delta chain's links decoded once for every object resting on them); nested: the
        outer cache stays."""
        if self.cache is not None:
            yield self.cache
            return
        self.cache = DecodedCache(max_bytes)
        try:
            yield self.cache
        finally:
            self.cache = None

    @overload
    def get(self, oid: str, expect: Literal["chunks"]) -> Chunks: ...
    @overload
    def get(self, oid: str, expect: Literal["tensor-file"]) -> TensorFile: ...
    @overload
    def get(self, oid: str, expect: Literal["tree"]) -> Tree: ...
    @overload
    def get(self, oid: str, expect: Literal["commit"]) -> Commit: ...
    @overload
    def get(self, oid: str, expect: Literal["dataset"]) -> Dataset: ...
    @overload
    def get(self, oid: str, expect: Literal["checkpoint"]) -> Checkpoint: ...
    @overload
    def get(self, oid: str, expect: str | None = None) -> Any: ...

    def get(self, oid: str, expect: str | None = None) -> Any:
        """The decoded object (see :func:`.objects.decode_object`); CorruptObject if it is not of
        type ``expect``."""
        type_name, data = self.get_raw(oid)
        if expect is not None and type_name != expect:
            raise CorruptObject(f"object {oid} is a {type_name}, expected a {expect}")
        return decode_object(type_name, data, f"object {oid}")

    def verify(self, oid: str) -> None:
        self.get_raw(oid)

    def open_raw_blob(self, oid: str) -> RawBlob | None:
        """A blob stored raw, verified and open for an in-kernel copy; None where the store
        cannot offer one (compressed object, another type, not on disk): then use get_raw."""
        return None

    # ---- batches: many objects made durable together (DiskObjectStore; others write at once)

    def batch(self, compression_level: int | None = None) -> ObjectStore:
        """A view of this store whose new objects become visible together at :meth:`flush`."""
        return self

    def flush(self) -> int:
        """Make a batch's waiting objects durable and visible; return how many there were."""
        return 0

    def discard(self) -> None:
        """Drop a batch's waiting objects (after an error)."""
        return  # not abstract: outside a batch every object is written at once, none waits

    # ---- stored form (header + payload), for copying objects between stores (remotes)

    def get_stored(self, oid: str) -> bytes:
        """The object exactly as stored (header + compressed payload), unverified."""
        check_object_id(oid)
        return self._read_file(oid)

    def put_stored(self, oid: str, raw: bytes) -> None:
        """Store an object received in stored form, after verifying that it hashes to ``oid``
        (CorruptObject otherwise, and nothing is stored). A delta's base must be in this store.
        An object held already is only touched: the copy received is not kept, and decoding it
        could need the held one (a delta against its own delta here is a loop)."""
        if self.has(oid):
            self._touch(oid)
            return
        self.decode(oid, raw)
        self._new_codec(raw)
        self._write_file(oid, [raw])
        self._wrote(len(raw))

    def _new_codec(self, stored: bytes | memoryview) -> None:
        """Let the repo raise the store's format before an object with a codec of format 3."""
        if len(stored) > _CODEC_BYTE and stored[_CODEC_BYTE] in (CODEC_PLANES, CODEC_DELTA, CODEC_ALIGNED):
            self._format_3()

    def _format_3(self) -> None:
        """An object of a format-3 codec is about to be placed: raise the store's format first."""
        if self.before_new_codec:
            self.before_new_codec()

    def resolve_prefix(self, prefix: str) -> list[str]:
        if not is_id_prefix(prefix):
            return []
        return sorted(i for i in self.iter_ids() if i.startswith(prefix))

    # ---- content of any size, chunked by the rule of .content

    # The futures are of ``str``, not ObjectId: a Future is invariant in its result type, and
    # callers keep them beside the ids of other sources.

    def put_bytes_chunked(self, data: bytes | memoryview, writer: ParallelWriter | None = None,
                          at: int | None = None) -> ObjectId | Future[str]:
        """Store bytes in memory as content; with a writer, a future of the id (hashing and
        compression of the pieces on its threads). The bytes must not change until it is done.
        ``at``: their offset in the file they are part of (a tensor's in its safetensors file),
        so that a checkout of that file can share the blocks of raw pieces (:meth:`put`)."""
        view = memoryview(data).cast("B")
        return self._put_content(((functools.partial(self.put, "blob", view[o:o + n], None if at is None else at + o), n)
                                  for o, n in piece_spans(len(view))), writer)

    def put_stream(self, f: Readable, size: int, writer: ParallelWriter | None = None,
                   on_bytes: Callable[[int], None] | None = None, at: int | None = None) -> ObjectId | Future[str]:
        """Store ``size`` bytes read from ``f`` (at most CHUNK_SIZE at a time, in this thread) as
        content; with a writer, a future of the id. ``at``: where the bytes start in their file
        (0 for a whole file), so a checkout can share the blocks of raw pieces (:meth:`put`)."""
        def pieces() -> Iterator[tuple[Callable[[], ObjectId], int]]:
            for o, n in piece_spans(size):
                data = _read_exact(f, n)
                if on_bytes:
                    on_bytes(n)
                yield functools.partial(self.put, "blob", data, None if at is None else at + o), n

        return self._put_content(pieces(), writer)

    def put_range(self, src_fd: int, offset: int, size: int, writer: ParallelWriter | None = None,
                  on_bytes: Callable[[int], None] | None = None,
                  where: str = "input") -> ObjectId | Future[str]:
        """Store ``size`` bytes of an open file from ``offset`` as content, each piece with
        :meth:`_put_file_piece` (``on_bytes`` is called as pieces finish); with a writer, a
        future of the id. The file must stay open until it is done."""
        def piece(start: int, n: int) -> ObjectId:
            oid = self._put_file_piece(src_fd, start, n, where)
            if on_bytes:
                on_bytes(n)
            return oid

        return self._put_content(((functools.partial(piece, offset + o, n), n) for o, n in piece_spans(size)), writer)

    def _put_content(self, pieces: Iterable[tuple[Callable[[], ObjectId], int]],
                     writer: ParallelWriter | None) -> ObjectId | Future[str]:
        """Run the jobs storing each piece (on the writer's threads if given), then name the content."""
        if writer is None:
            return self._name_content([(job(), n) for job, n in pieces])
        futures: list[tuple[Future[str], int]] = [(writer.submit(job), n) for job, n in pieces]
        if len(futures) == 1:
            return futures[0][0]
        return writer.submit_after([fu for fu, _ in futures],
                                   lambda: self._name_content([(fu.result(), n) for fu, n in futures]))

    def _name_content(self, parts: list[tuple[str, int]]) -> ObjectId:
        named = name_content(parts)  # one piece: its id, which put gave
        return ObjectId(named) if isinstance(named, str) else self.put_object(named)

    def _put_file_piece(self, src_fd: int, offset: int, size: int, where: str = "input") -> ObjectId:
        """Store ``size`` bytes (at most CHUNK_SIZE) of an open file from ``offset`` as one blob.

        Here: read, then :meth:`put`. :class:`.store.DiskObjectStore` copies in the kernel instead.
        """
        data = os.pread(src_fd, size, offset)
        if len(data) != size:
            raise InvalidInput(f"{where}: file ended early (expected {size - len(data)} more bytes); "
                               "was it changed while being read?")
        return self.put("blob", data)

    def iter_content(self, oid: str) -> Iterator[bytes]:
        """Yield the bytes of a blob or chunks object, verifying every piece."""
        type_name, data = self.get_raw(oid)
        if type_name == "blob":
            yield data
        elif type_name == "chunks":
            yield from self._iter_parts(oid, Chunks.decode(data, f"object {oid}").parts)
        else:
            raise CorruptObject(f"object {oid} is a {type_name}, expected bytes (blob or chunks)")

    def _iter_parts(self, oid: str, parts: list[list[Any]]) -> Iterator[bytes]:
        """The verified blobs of a chunks object in order, decoded up to one per core ahead on
        threads (reading, hashing and the codecs' zstd and numpy work release the GIL)."""
        def part(p: list[Any]) -> bytes:
            t, piece = self.get_raw(p[0])
            if t != "blob" or len(piece) != p[1]:
                raise CorruptObject(f"object {oid}: part {p[0]} is not a {p[1]}-byte blob")
            return piece

        ahead = min(len(parts), os.cpu_count() or 1)
        if ahead <= 1:
            yield from map(part, parts)
            return
        with ThreadPoolExecutor(ahead, thread_name_prefix="lin-read") as pool:
            pending = collections.deque(pool.submit(part, p) for p in parts[:ahead])
            rest = iter(parts[ahead:])
            while pending:
                piece = pending.popleft().result()
                nxt = next(rest, None)
                if nxt is not None:
                    pending.append(pool.submit(part, nxt))
                yield piece

    def read_content(self, oid: str) -> bytes:
        return b"".join(self.iter_content(oid))


def _read_exact(f: Readable, n: int) -> memoryview:
    """``n`` bytes of ``f`` in a new buffer (a view of it: hashing and compression read views)."""
    view = memoryview(bytearray(n))
    got = 0
    while got < n:
        k = f.readinto(view[got:])
        if not k:
            raise InvalidInput(f"{getattr(f, 'name', 'input')}: file ended early "
                               f"(expected {n - got} more bytes); was it changed while being read?")
        got += k
    return view
