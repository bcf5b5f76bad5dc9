"""The object stores: loose objects on disk (and batches of them), an in-memory twin, one contract.

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
import heapq
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol, overload

from .codecs import DEFAULT_MAX_DEPTH
from .content import (
    DecodedCache,
    ParallelWriter,
    RawBlob,
    decode_buffer,
    decode_stored,
    name_content,
    open_raw,
    piece_spans,
)
from .errors import CorruptObject, InvalidInput, ObjectNotFound
from .ids import ObjectId, check_object_id, hash_object, is_id_prefix
from .loose import LooseFolder, WaitingFiles, aligned_start, aligns
from .objects import (
    CODEC_ALIGNED,
    CODEC_DELTA,
    CODEC_PLANES,
    CODEC_RAW,
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
from .packs import PACK_DIR, ObjectFiles, PackEntry, PackSet

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

    def put(self, type_name: str, data: bytes | memoryview, at: int | None = None) -> ObjectId:
        """Store one object (at most its type's size, objects.MAX_SIZE); return its id. ``at``:
        the offset a blob's bytes will have in the file they belong to, if known (a raw blob may
        then be stored aligned to it: :meth:`_padding`)."""
        oid = hash_object(type_name, data)
        if self.has(oid):
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
        aligned object, codec 4), or None to store it as encoded. Only :class:`DiskObjectStore`
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
        h, data = decode_buffer(check_object_id(oid), self._read_file(oid), None, self._read_file,
                                self.delta_max_depth, self.cache)
        return h.type, data

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

        Here: read, then :meth:`put`. :class:`DiskObjectStore` copies in the kernel instead.
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


class DiskObjectStore(ObjectStore):
    """Loose objects in ``objects/<2 hex>/<62 hex>``, read-only files in read-only folders
    (the file layout: :mod:`.loose`)."""

    def __init__(self, root: Path, tmp_dir: Path, compression_level: int = DEFAULT_LEVEL,
                 compression: str = DEFAULT_COMPRESSION):
        self.root = root
        self.tmp_dir = tmp_dir
        self.files = LooseFolder(root, tmp_dir)
        self.packs = PackSet(root / PACK_DIR)
        self.stored = ObjectFiles(self.files, self.packs)
        self.compression_level = compression_level
        self.compression = compression

    def path_for(self, oid: str) -> Path:
        """The loose file of ``oid`` (a packed object has none: see :meth:`packed`)."""
        return Path(self.files.file(oid))

    # Loose files and packs are read as one (core.packs.ObjectFiles): a repack removes a loose
    # copy only once a pack holding it is durable, and gc turns packed objects loose before it
    # moves them, so an object is always in one of the two.

    def packed(self, oid: str) -> PackEntry | None:
        """Where ``oid`` lies in a pack; None if no pack holds it."""
        return self.packs.find(oid)

    def is_loose(self, oid: str) -> bool:
        return self.stored.is_loose(oid)

    def has(self, oid: str) -> bool:
        return self.stored.has(oid)

    def _read_file(self, oid: str) -> bytes:
        try:
            return self.stored.read(oid)
        except ObjectNotFound:
            if not self._brought_back(oid):
                raise
        return self.stored.read(oid)

    def _read_header_bytes(self, oid: str) -> bytes:
        return self.stored.read(oid, HEADER_SIZE)

    def _write_file(self, oid: str, data: list[bytes | memoryview]) -> None:
        self.files.write(oid, data)

    def _touch(self, oid: str) -> None:
        self.stored.touch(oid)

    def iter_ids(self) -> Iterator[str]:
        return self.stored.ids()

    def resolve_prefix(self, prefix: str) -> list[str]:
        return self.stored.ids_with_prefix(prefix)

    def stored_size(self, oid: str) -> int:
        return self.stored.size(oid)

    def mtime(self, oid: str) -> float:
        return self.stored.mtime(oid)

    def remove(self, oid: str) -> None:
        """Remove a loose object (packed ones leave with their pack: guard.repack)."""
        self.files.remove(oid)

    def open_raw_blob(self, oid: str) -> RawBlob | None:
        """Verify a raw-stored blob by hashing its file through mmap (no copy into Python) and
        return it open; None for compressed or packed objects. A flipped byte raises CorruptObject."""
        try:
            return open_raw(self.files.file(oid), oid)
        except ObjectNotFound:
            if self.packs.find(oid) is not None:
                return None
            if not self._brought_back(oid):
                raise
        return open_raw(self.files.file(oid), oid)

    def get_raw(self, oid: str) -> tuple[str, bytes]:
        try:
            return super().get_raw(oid)
        except CorruptObject as err:
            e = None if self.is_loose(oid) else self.packs.find(oid)
            if e is None:
                raise
            raise CorruptObject(f"{err} (in pack {e.pack.name}, offset {e.offset})", hint=err.hint) from err

    def _put_file_piece(self, src_fd: int, offset: int, size: int, where: str = "input") -> ObjectId:
        """Store a piece of an open file without passing its bytes through Python.

        The bytes are copied in the kernel into a temp object file, then hashed and probed there
        through mmap (:meth:`.loose.LooseFolder.copy_piece`), so the id is always that of the
        bytes stored, even if the source changes meanwhile. Raw objects are then fsynced and
        renamed into place; ones that ``core.compression`` compresses are re-encoded; one already
        stored is dropped. Pieces under 1 MiB are simply read, except on a filesystem with
        reflinks, where raw pieces large enough (:func:`.loose.aligns`) are stored aligned to
        their offset in the file (codec 4), so a checkout shares their blocks instead of copying.
        """
        block = self.files.alignment()
        if not aligns(size, block):
            block = 0
            if size < 1 << 20:
                return super()._put_file_piece(src_fd, offset, size, where)
        with self.files.copy_piece(src_fd, offset, size, where, block) as (fd, tmp, content, stored):
            oid = hash_object("blob", content)
            if self.has(oid):
                self._touch(oid)
                return oid
            codec, payload = encode_payload(content, self.compression_level, self.compression)
            if codec != CODEC_RAW:  # compressible after all: store it encoded, drop the copy
                self._write_file(oid, [pack_header("blob", codec, size), payload])
                self._wrote(HEADER_SIZE + len(payload))
                return oid
            if block:
                self._format_3()  # codec 4
            self._adopt(fd, tmp, oid)
        self._wrote(stored)
        return oid

    def _padding(self, type_name: str, codec: int, size: int, at: int | None) -> int | None:
        block = self.files.alignment()
        if at is None or type_name != "blob" or codec != CODEC_RAW or not aligns(size, block):
            return None
        return aligned_start(at, block) - HEADER_SIZE

    def _adopt(self, fd: int, tmp: Path, oid: str) -> None:
        """Make the complete temp file ``tmp`` (open as ``fd``) object ``oid``: fsync, rename
        into place, fsync the folder."""
        os.fsync(fd)
        self.files.install(tmp, oid)

    def batch(self, compression_level: int | None = None) -> BatchObjectStore:
        """This store, writing new objects as one batch (see :class:`BatchObjectStore`)."""
        level = self.compression_level if compression_level is None else compression_level
        batch = BatchObjectStore(self.root, self.tmp_dir, level, self.compression)
        batch.delta_max_depth, batch.before_new_codec = self.delta_max_depth, self.before_new_codec
        batch.files.block = self.files.block
        return batch


class BatchObjectStore(DiskObjectStore):
    """A disk store whose new objects wait in ``tmp/`` until :meth:`flush`.

    ``flush`` fsyncs every waiting file (many at once, on threads, each started as soon as the
    file is written), renames each into ``objects/`` in the order they were put and fsyncs the
    folders, so an object file that exists is always complete and never names an object that is
    not there (as with one-at-a-time writes), but the disk is waited for once per batch, not
    once per object (a 1.2 GB model: 70+ objects). Until then the batch's objects are known
    only to this instance, which reads them from their temp files (the contract holds for them
    too; only :meth:`remove`, gc's, acts on flushed objects alone); write what names them from
    outside (a commit, a ref) after ``flush``. A crash before ``flush`` leaves only temp files,
    which the next writer removes. Used by commits and training checkpoints.
    """

    def __init__(self, root: Path, tmp_dir: Path, compression_level: int, compression: str):
        super().__init__(root, tmp_dir, compression_level, compression)
        self.waiting = WaitingFiles(self.files)
        self.format_3_waiting = False  # an object of a format-3 codec waits: raise the format at flush

    def waiting_file(self, oid: str) -> Path | None:
        """The temp file holding ``oid`` until :meth:`flush`; None if it is not waiting."""
        return self.waiting.get(oid)

    def has(self, oid: str) -> bool:
        return oid in self.waiting or super().has(oid)

    def _read_file(self, oid: str) -> bytes:
        tmp = self.waiting.get(oid)
        return super()._read_file(oid) if tmp is None else tmp.read_bytes()

    def _read_header_bytes(self, oid: str) -> bytes:
        tmp = self.waiting.get(oid)
        if tmp is None:
            return super()._read_header_bytes(oid)
        with open(tmp, "rb") as f:
            return f.read(HEADER_SIZE)

    def _write_file(self, oid: str, data: list[bytes | memoryview]) -> None:
        self.waiting.write(oid, data)

    def _format_3(self) -> None:
        # nothing is placed before flush: a batch discarded (a refused fetch) leaves the format as it was
        self.format_3_waiting = True

    def _adopt(self, fd: int, tmp: Path, oid: str) -> None:
        self.waiting.adopt(tmp, oid)  # fsynced on the batch's threads

    def _touch(self, oid: str) -> None:
        tmp = self.waiting.get(oid)
        if tmp is None:
            super()._touch(oid)
        else:
            os.utime(tmp)

    def stored_size(self, oid: str) -> int:
        tmp = self.waiting.get(oid)
        return super().stored_size(oid) if tmp is None else os.path.getsize(tmp)

    def mtime(self, oid: str) -> float:
        tmp = self.waiting.get(oid)
        return super().mtime(oid) if tmp is None else os.path.getmtime(tmp)

    def iter_ids(self) -> Iterator[str]:
        waiting = self.waiting.ids()
        also = set(waiting)
        return heapq.merge(waiting, (i for i in super().iter_ids() if i not in also))

    def resolve_prefix(self, prefix: str) -> list[str]:
        if not is_id_prefix(prefix):
            return []
        return sorted(set(super().resolve_prefix(prefix)) | {i for i in self.waiting.ids() if i.startswith(prefix)})

    def open_raw_blob(self, oid: str) -> RawBlob | None:
        return None if self.waiting.get(oid) else super().open_raw_blob(oid)

    def flush(self) -> int:
        """Make every waiting object durable and visible; return how many there were.

        On an error (a full disk) the objects not yet in place are removed, and NoSpace or the
        OSError is raised: nothing half-written remains.
        """
        if self.format_3_waiting:
            super()._format_3()
            self.format_3_waiting = False
        return self.waiting.flush()

    def discard(self) -> None:
        """Drop the waiting objects (after an error)."""
        self.format_3_waiting = False
        self.waiting.discard()


class MemoryObjectStore(ObjectStore):
    """The in-memory twin: same contract, no disk. For tests and for upper layers' unit tests."""

    def __init__(self, compression_level: int = DEFAULT_LEVEL, compression: str = DEFAULT_COMPRESSION):
        self.compression_level = compression_level
        self.compression = compression
        self._files: dict[str, bytes] = {}
        self._mtimes: dict[str, float] = {}
        self._lock = threading.Lock()

    def has(self, oid: str) -> bool:
        return check_object_id(oid) in self._files

    def _read_file(self, oid: str) -> bytes:
        try:
            return self._files[oid]
        except KeyError:
            raise ObjectNotFound(f"object {oid} is missing from the store") from None

    def _read_header_bytes(self, oid: str) -> bytes:
        return self._read_file(oid)[:HEADER_SIZE]

    def _write_file(self, oid: str, data: list[bytes | memoryview]) -> None:
        blob = b"".join(bytes(d) for d in data)
        with self._lock:
            self._files.setdefault(oid, blob)
            self._mtimes[oid] = time.time()

    def _touch(self, oid: str) -> None:
        self._mtimes[oid] = time.time()

    def iter_ids(self) -> Iterator[str]:
        return iter(sorted(self._files))

    def stored_size(self, oid: str) -> int:
        return len(self._read_file(oid))

    def mtime(self, oid: str) -> float:
        self._read_file(oid)
        return self._mtimes[oid]

    def remove(self, oid: str) -> None:
        with self._lock:
            self._files.pop(oid, None)
            self._mtimes.pop(oid, None)

    def corrupt(self, oid: str, offset: int = -1) -> None:
        """Flip one byte of a stored object (tests)."""
        b = bytearray(self._files[oid])
        b[offset] ^= 0xFF
        self._files[oid] = bytes(b)
