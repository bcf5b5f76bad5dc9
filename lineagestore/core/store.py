"""The object store: a disk store and an in-memory twin with one contract.

Contract (tested by tests/test_store_contract.py against both):
- ``put(type, data)`` returns the id and stores the object once; putting it again stores
  nothing and refreshes its mtime (gc's grace period counts from the last put).
- ``get_raw(id)`` returns ``(type, bytes)`` and verifies the hash on every read; a corrupt
  object raises :class:`CorruptObject` naming the id, a missing one :class:`ObjectNotFound`.
- ``header(id)`` reads only the fixed-size header (type, codec, size) without decompressing.
- ``put_bytes_chunked`` / ``iter_content`` store and stream byte strings of any size as a blob
  or, above :data:`CHUNK_SIZE`, as blobs listed by a ``chunks`` object; ``put_range`` does the
  same for a range of an open file (on disk: copied in the kernel, hashed where stored).
- ``open_raw_blob(id)`` gives a raw-stored blob, verified, open for an in-kernel copy (on disk;
  None elsewhere or for compressed objects).
- Which objects are compressed follows ``compression`` (``core.compression``: auto, zstd, none;
  see :func:`lineagestore.core.objects.encode_payload`); ids never depend on it.
- All methods are safe to call from several threads at once.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .errors import CorruptObject, InvalidInput, ObjectNotFound, AmbiguousRevision
from .fsutil import (AtomicFile, copy_range, fsync_dir, is_nospace, kill_point, nospace_error, pwrite_all,
                     temp_name)
from .ids import check_object_id, hash_object, is_id_prefix, is_object_id
from .objects import (CHUNK_SIZE, CODEC_RAW, DEFAULT_COMPRESSION, DEFAULT_LEVEL, HEADER_SIZE, Chunks,
                      ObjectHeader, decode_object, decompress, encode_payload, pack_header, unpack_header)


_COUNT_LOCK = threading.Lock()


class ObjectStore(ABC):
    compression_level: int = DEFAULT_LEVEL
    compression: str = DEFAULT_COMPRESSION  # core.compression: auto | zstd | none
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

    def put(self, type_name: str, data: bytes | memoryview) -> str:
        oid = hash_object(type_name, data)
        if self.has(oid):
            self._touch(oid)
            return oid
        codec, payload = encode_payload(data, self.compression_level, self.compression)
        self._write_file(oid, [pack_header(type_name, codec, len(data)), payload])
        with _COUNT_LOCK:
            self.written_objects += 1
            self.written_bytes += HEADER_SIZE + len(payload)
        return oid

    def put_object(self, obj) -> str:
        return self.put(obj.type_name, obj.encode())

    def header(self, oid: str) -> ObjectHeader:
        check_object_id(oid)
        return unpack_header(self._read_header_bytes(oid), f"object {oid}")

    def get_raw(self, oid: str) -> tuple[str, bytes]:
        check_object_id(oid)
        raw = self._read_file(oid)
        where = f"object {oid}"
        h = unpack_header(raw, where)
        data = decompress(h.codec, raw[HEADER_SIZE:] if h.codec != CODEC_RAW else memoryview(raw)[HEADER_SIZE:],
                          h.size, where)
        if len(data) != h.size:
            raise CorruptObject(f"{where} is corrupt: {len(data)} bytes, header says {h.size}",
                                hint="run `lin fsck` to list every damaged object")
        actual = hash_object(h.type, data)
        if actual != oid:
            raise CorruptObject(f"{where} is corrupt: its content hashes to {actual[:16]}...",
                                hint="run `lin fsck` to list every damaged object")
        return h.type, bytes(data)

    def get(self, oid: str, expect: str | None = None):
        type_name, data = self.get_raw(oid)
        if expect is not None and type_name != expect:
            raise CorruptObject(f"object {oid} is a {type_name}, expected a {expect}")
        return decode_object(type_name, data, f"object {oid}")

    def verify(self, oid: str) -> None:
        self.get_raw(oid)

    def open_raw_blob(self, oid: str) -> "RawBlob | None":
        """A blob stored raw, verified and open for an in-kernel copy; None where the store
        cannot offer one (compressed object, another type, not on disk): then use get_raw."""
        return None

    # ---- batches: many objects made durable together (DiskObjectStore; others write at once)

    def batch(self, compression_level: int | None = None) -> "ObjectStore":
        """A view of this store whose new objects become visible together at :meth:`flush`."""
        return self

    def flush(self) -> int:
        """Make a batch's waiting objects durable and visible; return how many there were."""
        return 0

    def discard(self) -> None:
        """Drop a batch's waiting objects (after an error)."""

    # ---- stored form (header + payload), for copying objects between stores (remotes)

    def get_stored(self, oid: str) -> bytes:
        """The object exactly as stored (header + compressed payload), unverified."""
        check_object_id(oid)
        return self._read_file(oid)

    def put_stored(self, oid: str, raw: bytes) -> None:
        """Store an object received in stored form, after verifying that it hashes to ``oid``."""
        check_object_id(oid)
        where = f"object {oid}"
        h = unpack_header(raw, where)
        data = decompress(h.codec, raw[HEADER_SIZE:], h.size, where)
        if len(data) != h.size or hash_object(h.type, data) != oid:
            raise CorruptObject(f"{where}: received bytes do not hash to its id; not stored")
        if self.has(oid):
            self._touch(oid)
            return
        self._write_file(oid, [raw])
        with _COUNT_LOCK:
            self.written_objects += 1
            self.written_bytes += len(raw)

    def resolve_prefix(self, prefix: str) -> list[str]:
        if not is_id_prefix(prefix):
            return []
        return sorted(i for i in self.iter_ids() if i.startswith(prefix))

    # ---- large byte strings

    def put_bytes_chunked(self, data: bytes | memoryview, pool: ThreadPoolExecutor | None = None) -> str:
        """Store bytes as one blob, or as 16 MiB blobs plus a ``chunks`` object."""
        if len(data) <= CHUNK_SIZE:
            return self.put("blob", data)
        view = memoryview(data)
        parts = [view[i:i + CHUNK_SIZE] for i in range(0, len(view), CHUNK_SIZE)]
        if pool is not None:
            ids = list(pool.map(lambda p: self.put("blob", p), parts))
        else:
            ids = [self.put("blob", p) for p in parts]
        return self.put_object(Chunks(size=len(data), parts=[[i, len(p)] for i, p in zip(ids, parts)]))

    def put_stream(self, f: BinaryIO, size: int, writer: "ParallelWriter | None" = None,
                   on_bytes: Callable[[int], None] | None = None) -> "str | Future[str]":
        """Store ``size`` bytes read from ``f``, chunked; reads at most CHUNK_SIZE at a time.

        With a :class:`ParallelWriter`, returns a future whose result is the id, and the
        hashing/compression of the chunks runs on the writer's threads.
        """
        if size <= CHUNK_SIZE:
            data = _read_exact(f, size)
            if on_bytes:
                on_bytes(size)
            return writer.submit(self.put, "blob", data) if writer else self.put("blob", data)
        futures = []
        left = size
        while left:
            n = min(CHUNK_SIZE, left)
            data = _read_exact(f, n)
            left -= n
            if on_bytes:
                on_bytes(n)
            futures.append((writer.submit(self.put, "blob", data) if writer else _done(self.put("blob", data)), n))

        def finish() -> str:
            return self.put_object(Chunks(size=size, parts=[[fu.result(), n] for fu, n in futures]))

        return writer.submit_after([fu for fu, _ in futures], finish) if writer else finish()

    def put_file_range(self, src_fd: int, offset: int, size: int, where: str = "input") -> str:
        """Store ``size`` bytes of an open file from ``offset`` as one blob (at most CHUNK_SIZE).

        Here: read, then :meth:`put`. :class:`DiskObjectStore` copies in the kernel instead.
        """
        data = os.pread(src_fd, size, offset)
        if len(data) != size:
            raise InvalidInput(f"{where}: file ended early (expected {size - len(data)} more bytes); "
                               "was it changed while being read?")
        return self.put("blob", data)

    def put_range(self, src_fd: int, offset: int, size: int, writer: "ParallelWriter",
                  on_bytes: Callable[[int], None] | None = None, where: str = "input") -> "Future[str]":
        """Store ``size`` bytes of an open file from ``offset``, chunked, on ``writer``'s threads
        (each piece with :meth:`put_file_range`; ``on_bytes`` is called as pieces finish).
        The file must stay open until the returned future is done."""
        futures = []
        for start in range(offset, offset + size, CHUNK_SIZE) if size else [offset]:
            n = min(CHUNK_SIZE, offset + size - start)
            fu = writer.submit(self.put_file_range, src_fd, start, n, where)
            if on_bytes:
                fu.add_done_callback(lambda f, n=n: f.exception() is None and on_bytes(n))
            futures.append((fu, n))
        if len(futures) == 1:
            return futures[0][0]

        def finish() -> str:
            return self.put_object(Chunks(size=size, parts=[[fu.result(), n] for fu, n in futures]))

        return writer.submit_after([fu for fu, _ in futures], finish)

    def content_size(self, oid: str) -> int:
        h = self.header(oid)
        if h.type == "chunks":
            return self.get(oid, "chunks").size
        return h.size

    def iter_content(self, oid: str) -> Iterator[bytes]:
        """Yield the bytes of a blob or chunks object, verifying every piece."""
        type_name, data = self.get_raw(oid)
        if type_name == "blob":
            yield data
        elif type_name == "chunks":
            ch = decode_object("chunks", data, f"object {oid}")
            for part_id, n in ch.parts:
                t, piece = self.get_raw(part_id)
                if t != "blob" or len(piece) != n:
                    raise CorruptObject(f"object {oid}: part {part_id} is not a {n}-byte blob")
                yield piece
        else:
            raise CorruptObject(f"object {oid} is a {type_name}, expected bytes (blob or chunks)")

    def read_content(self, oid: str) -> bytes:
        return b"".join(self.iter_content(oid))


class RawBlob:
    """A blob stored raw whose bytes hashed to its id, open for copying without decoding.

    Its content is bytes ``[HEADER_SIZE, HEADER_SIZE + size)`` of the open object file: the
    same open file the hash was computed from. Close it (or use ``with``).
    """

    def __init__(self, oid: str, fd: int, size: int):
        self.oid = oid
        self.fd = fd
        self.size = size

    def copy_to(self, dst_fd: int, offset: int) -> None:
        """Write the content into ``dst_fd`` at ``offset`` (copy_file_range: no user-space copy)."""
        try:
            copy_range(self.fd, HEADER_SIZE, self.size, dst_fd, offset)
        except OSError as e:
            if is_nospace(e):
                raise
            raise CorruptObject(f"object {self.oid}: could not be read ({e})",
                                hint="run `lin fsck` to list every damaged object") from e

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "RawBlob":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _done(value: str) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


def _read_exact(f: BinaryIO, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            raise InvalidInput(f"{getattr(f, 'name', 'input')}: file ended early "
                               f"(expected {n - got} more bytes); was it changed while being read?")
        got += k
    return buf  # a bytearray is fine for hashing and compression


class ParallelWriter:
    """A bounded thread pool: at most ``max_inflight`` submitted chunks are held in memory.

    blake3, zstandard and copy_file_range release the GIL, so threads use every core.
    ``workers=0`` means two threads per core: a put spends part of its time blocked in the
    kernel (copying, or fsync outside a batch), and a second thread per core keeps the core busy
    meanwhile (1.2 GB model on 2 cores, median of 6: 2 threads 1.67 s, 4 threads 1.55 s, all
    zstd; with the kernel copy 4, 8 and 16 threads were within 5% of each other).
    """

    def __init__(self, workers: int = 0, max_inflight: int | None = None):
        self.workers = workers or 2 * (os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="lin-put")
        # at most 32 chunks (512 MiB of input) by default, whatever the core count
        self._sem = threading.BoundedSemaphore(max_inflight or min(self.workers * 2, 32))

    def submit(self, fn, *args) -> Future:
        self._sem.acquire()
        try:
            fut = self.pool.submit(fn, *args)
        except BaseException:
            self._sem.release()
            raise
        fut.add_done_callback(lambda _f: self._sem.release())
        return fut

    def submit_after(self, deps: list[Future], fn) -> Future:
        out: Future = Future()
        remaining = [len(deps)]
        lock = threading.Lock()

        def done(_f):
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                try:
                    out.set_result(fn())
                except BaseException as e:  # noqa: BLE001 - propagated through the future
                    out.set_exception(e)

        if not deps:
            try:
                out.set_result(fn())
            except BaseException as e:  # noqa: BLE001
                out.set_exception(e)
            return out
        for d in deps:
            d.add_done_callback(done)
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def __enter__(self) -> "ParallelWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def in_object_folder(folder: Path, action: Callable[[], None]) -> None:
    """Run ``action`` (which puts one file into ``folder``) with the read-only object folder
    opened for writing, then make it read-only again.

    Another writer may re-lock the folder between our chmod and the rename: retry.
    """
    for attempt in range(50):
        try:
            folder.mkdir(mode=0o755, exist_ok=True)
            if not folder.stat().st_mode & 0o200:
                os.chmod(folder, 0o755)
            action()
            os.chmod(folder, 0o555)  # object folders are read-only between writes
            return
        except PermissionError:
            if attempt == 49:
                raise
            time.sleep(0.01)


class DiskObjectStore(ObjectStore):
    """Loose objects in ``objects/<2 hex>/<62 hex>``, read-only files in read-only folders."""

    def __init__(self, root: Path, tmp_dir: Path, compression_level: int = DEFAULT_LEVEL,
                 compression: str = DEFAULT_COMPRESSION):
        self.root = root
        self._root_s = str(root)
        self.tmp_dir = tmp_dir
        self.compression_level = compression_level
        self.compression = compression

    def path_for(self, oid: str) -> Path:
        return Path(self._file(oid))

    def _file(self, oid: str) -> str:
        """The object's file as a string path (no pathlib: fsck asks for 100,000s of them)."""
        check_object_id(oid)
        return f"{self._root_s}/{oid[:2]}/{oid[2:]}"

    def has(self, oid: str) -> bool:
        return os.path.isfile(self._file(oid))

    def _read_file(self, oid: str) -> bytes:
        try:
            with open(self._file(oid), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ObjectNotFound(f"object {oid} is missing from the store",
                                 hint="run `lin fsck`; a remote backup can restore it") from None

    def put_file_range(self, src_fd: int, offset: int, size: int, where: str = "input") -> str:
        """Store a piece of an open file without passing its bytes through Python.

        The bytes are copied in the kernel (copy_file_range) into a temp object file, then hashed
        and probed there through mmap, so the id is always that of the bytes stored, even if the
        source changes meanwhile (and a source truncated meanwhile is an error, never a SIGBUS:
        only our own temp file is mapped). Raw objects are then fsynced and renamed into place;
        ones that ``core.compression`` compresses are re-encoded; one already stored is dropped.
        Pieces under 1 MiB are simply read.
        """
        if size < (1 << 20):
            return super().put_file_range(src_fd, offset, size, where)
        tmp = temp_name(self.tmp_dir)
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            if is_nospace(e):
                raise nospace_error(e, tmp) from e
            raise
        try:
            return self._put_copied(fd, tmp, src_fd, offset, size, where)
        except OSError as e:
            if is_nospace(e):
                raise nospace_error(e, tmp) from e
            raise
        finally:
            os.close(fd)
            tmp.unlink(missing_ok=True)  # gone already when it became an object (or a batch's)

    def _put_copied(self, fd: int, tmp: Path, src_fd: int, offset: int, size: int, where: str) -> str:
        pwrite_all(fd, pack_header("blob", CODEC_RAW, size), 0)
        try:
            copy_range(src_fd, offset, size, fd, HEADER_SIZE)
        except OSError as e:
            if e.errno == errno.EIO:
                raise InvalidInput(f"{where}: file ended early; was it changed while being read?") from e
            raise
        payload = None
        with mmap.mmap(fd, HEADER_SIZE + size, prot=mmap.PROT_READ) as mm:
            with memoryview(mm) as whole, whole[HEADER_SIZE:] as content:
                oid = hash_object("blob", content)
                if self.has(oid):
                    self._touch(oid)
                    return oid
                codec, encoded = encode_payload(content, self.compression_level, self.compression)
                if codec != CODEC_RAW:
                    payload = encoded
        if payload is not None:  # compressible after all: store it encoded, drop the copy
            self._write_file(oid, [pack_header("blob", codec, size), payload])
            stored = HEADER_SIZE + len(payload)
        else:
            self._adopt(fd, tmp, oid)
            stored = HEADER_SIZE + size
        with _COUNT_LOCK:
            self.written_objects += 1
            self.written_bytes += stored
        return oid

    def _adopt(self, fd: int, tmp: Path, oid: str) -> None:
        """Make the complete temp file ``tmp`` (open as ``fd``) object ``oid``: fsync, rename
        into place, fsync the folder (as AtomicFile does)."""
        os.fsync(fd)
        self._install(tmp, oid)

    def _install(self, tmp: Path, oid: str) -> None:
        path = self.path_for(oid)

        def install() -> None:
            os.chmod(tmp, 0o444)
            kill_point("write")
            os.replace(tmp, path)
            kill_point("rename")
            fsync_dir(path.parent)

        self._into_folder(path, install)

    @staticmethod
    def _into_folder(path: Path, action: Callable[[], None]) -> None:
        """:func:`in_object_folder` for object file ``path``; a full disk is NoSpace naming it."""
        try:
            in_object_folder(path.parent, action)
        except OSError as e:
            if is_nospace(e):
                raise nospace_error(e, path) from e
            raise

    def batch(self, compression_level: int | None = None) -> "BatchObjectStore":
        """This store, writing new objects as one batch (see :class:`BatchObjectStore`)."""
        level = self.compression_level if compression_level is None else compression_level
        return BatchObjectStore(self.root, self.tmp_dir, level, self.compression)

    def open_raw_blob(self, oid: str) -> RawBlob | None:
        """Verify a raw-stored blob by hashing its file through mmap (no copy into Python) and
        return it open; None for compressed objects. A flipped byte raises CorruptObject."""
        path = self.path_for(oid)
        where = f"object {oid}"
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ObjectNotFound(f"{where} is missing from the store",
                                 hint="run `lin fsck`; a remote backup can restore it") from None
        try:
            h = unpack_header(os.pread(fd, HEADER_SIZE, 0), where)
            if h.codec != CODEC_RAW or h.type != "blob":
                os.close(fd)
                return None
            stored = os.fstat(fd).st_size - HEADER_SIZE
            if stored != h.size:
                raise CorruptObject(f"{where} is corrupt: {stored} bytes, header says {h.size}",
                                    hint="run `lin fsck` to list every damaged object")
            if h.size:
                # object files are never truncated in place (atomic renames only), so the
                # mapping cannot shrink under us
                with mmap.mmap(fd, HEADER_SIZE + h.size, prot=mmap.PROT_READ) as mm:
                    with memoryview(mm) as whole, whole[HEADER_SIZE:] as content:
                        actual = hash_object("blob", content)
            else:
                actual = hash_object("blob", b"")
            if actual != oid:
                raise CorruptObject(f"{where} is corrupt: its content hashes to {actual[:16]}...",
                                    hint="run `lin fsck` to list every damaged object")
            return RawBlob(oid, fd, h.size)
        except BaseException:
            os.close(fd)
            raise

    def _read_header_bytes(self, oid: str) -> bytes:
        try:
            with open(self._file(oid), "rb") as f:
                return f.read(HEADER_SIZE)
        except FileNotFoundError:
            raise ObjectNotFound(f"object {oid} is missing from the store") from None

    def _write_file(self, oid: str, data: list[bytes | memoryview]) -> None:
        path = self.path_for(oid)

        def write() -> None:
            with AtomicFile(path, self.tmp_dir, readonly=True) as f:
                for piece in data:
                    f.write(piece)

        self._into_folder(path, write)

    def _touch(self, oid: str) -> None:
        try:
            os.utime(self._file(oid))
        except FileNotFoundError:
            pass
        except PermissionError:
            pass

    def iter_ids(self) -> Iterator[str]:
        try:
            dirs = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return
        for d in dirs:
            if len(d) != 2:
                continue
            try:
                names = sorted(os.listdir(self.root / d))
            except NotADirectoryError:
                continue
            for n in names:
                oid = d + n
                if is_object_id(oid):
                    yield oid

    def resolve_prefix(self, prefix: str) -> list[str]:
        if not is_id_prefix(prefix):
            return []
        try:
            names = os.listdir(self.root / prefix[:2])
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(prefix[:2] + n for n in names if (prefix[:2] + n).startswith(prefix) and len(n) == 62)

    def stored_size(self, oid: str) -> int:
        try:
            return self.path_for(oid).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(f"object {oid} is missing from the store") from None

    def mtime(self, oid: str) -> float:
        try:
            return self.path_for(oid).stat().st_mtime
        except FileNotFoundError:
            raise ObjectNotFound(f"object {oid} is missing from the store") from None

    def remove(self, oid: str) -> None:
        path = self.path_for(oid)
        if path.parent.is_dir():
            os.chmod(path.parent, 0o755)
        path.unlink(missing_ok=True)


class BatchObjectStore(DiskObjectStore):
    """A disk store whose new objects wait in ``tmp/`` until :meth:`flush`.

    ``flush`` fsyncs every waiting file (many at once, on threads, each started as soon as the
    file is written), renames each into ``objects/`` in the order they were put and fsyncs the
    folders, so an object file that exists is always complete and never names an object that is
    not there (as with one-at-a-time writes), but the disk is waited for once per batch, not
    once per object (a 1.2 GB model: 70+ objects). Until then the batch's objects are known
    only to this instance, which reads them from their temp files; write what names them from
    outside (a commit, a ref) after ``flush``. A crash before ``flush`` leaves only temp files,
    which the next writer removes. Used by commits and training checkpoints.
    """

    def __init__(self, root, tmp_dir, compression_level: int, compression: str):
        super().__init__(root, tmp_dir, compression_level, compression)
        self._pending: dict[str, Path | None] = {}
        self._syncs: list = []
        self._plock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def has(self, oid: str) -> bool:
        return oid in self._pending or super().has(oid)

    def _pending_file(self, oid: str) -> Path | None:
        with self._plock:
            return self._pending.get(oid)

    def _read_file(self, oid: str) -> bytes:
        tmp = self._pending_file(oid)
        if tmp is None:
            return super()._read_file(oid)
        with open(tmp, "rb") as f:
            return f.read()

    def _read_header_bytes(self, oid: str) -> bytes:
        tmp = self._pending_file(oid)
        if tmp is None:
            return super()._read_header_bytes(oid)
        with open(tmp, "rb") as f:
            return f.read(HEADER_SIZE)

    def open_raw_blob(self, oid: str) -> RawBlob | None:
        return None if self._pending_file(oid) else super().open_raw_blob(oid)

    def _adopt(self, fd: int, tmp: Path, oid: str) -> None:
        """Keep a kernel-copied temp file as a waiting object (renamed away from ``tmp`` so that
        the caller's clean-up leaves it alone)."""
        with self._plock:
            if oid in self._pending:
                return
            self._pending[oid] = None
        kept = temp_name(self.tmp_dir)
        os.rename(tmp, kept)
        self._wait_for(oid, kept)

    def _write_file(self, oid: str, data) -> None:
        with self._plock:
            if oid in self._pending:
                return
            self._pending[oid] = None
        tmp = temp_name(self.tmp_dir)  # "<pid>-...": other writers' clean-up leaves it alone
        try:
            with open(tmp, "xb") as f:
                for piece in data:
                    f.write(piece)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            with self._plock:
                self._pending.pop(oid, None)
            if is_nospace(e):
                raise nospace_error(e, tmp) from e
            raise
        self._wait_for(oid, tmp)

    def _wait_for(self, oid: str, tmp: Path) -> None:
        with self._plock:
            self._pending[oid] = tmp
            if self._pool is None:
                self._pool = ThreadPoolExecutor(8, thread_name_prefix="lin-fsync")
            self._syncs.append(self._pool.submit(_fsync_file, tmp))  # the disk works while we hash on

    def flush(self) -> int:
        """Make every waiting object durable and visible; return how many there were.

        On an error (a full disk) the objects not yet in place are removed, and NoSpace or the
        OSError is raised: nothing half-written remains.
        """
        with self._plock:
            pending = {k: v for k, v in self._pending.items() if v is not None}
            syncs, self._syncs = self._syncs, []
            self._pending = {}
            pool, self._pool = self._pool, None
        if not pending:
            if pool is not None:
                pool.shutdown()
            return 0
        placed: set[str] = set()
        try:
            errors = [f.exception() for f in syncs]  # wait for every fsync before anything else
            first = next((e for e in errors if e is not None), None)
            if first is not None:
                raise first
            folders = set()
            # insertion order is link order (an object is put only after the objects it names),
            # so objects/ never holds an object without what it links to, even if we die here
            for oid, tmp in pending.items():
                os.chmod(tmp, 0o444)
                folders.add(self._place(tmp, self.path_for(oid)))
                placed.add(oid)
            assert pool is not None
            list(pool.map(fsync_dir, folders))
        except OSError as e:
            for oid, tmp in pending.items():
                if oid not in placed:
                    tmp.unlink(missing_ok=True)
            if is_nospace(e):
                raise nospace_error(e, self.tmp_dir) from e
            raise
        finally:
            if pool is not None:
                pool.shutdown()
        return len(pending)

    @staticmethod
    def _place(tmp, path):
        """Rename into its read-only object folder; returns the folder (to fsync)."""
        in_object_folder(path.parent, lambda: os.replace(tmp, path))
        return path.parent

    def discard(self) -> None:
        """Drop the waiting objects (after an error)."""
        with self._plock:
            pending, self._pending = self._pending, {}
            syncs, self._syncs = self._syncs, []
            pool, self._pool = self._pool, None
        for f in syncs:
            f.exception()  # wait: the file must not be synced after it is removed
        if pool is not None:
            pool.shutdown()
        for tmp in pending.values():
            if tmp is not None:
                tmp.unlink(missing_ok=True)


def _fsync_file(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def resolve_unique_prefix(store: ObjectStore, prefix: str) -> str | None:
    found = store.resolve_prefix(prefix)
    if len(found) > 1:
        raise AmbiguousRevision(prefix, [f[:12] for f in found])
    return found[0] if found else None
