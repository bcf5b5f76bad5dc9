"""The object stores: loose objects and packs on disk (:class:`DiskObjectStore`), batches of new
objects made durable together (:class:`BatchObjectStore`) and an in-memory twin
(:class:`MemoryObjectStore`), each over the primitives of :class:`.store_base.ObjectStore`, whose
docstring states the contract all of them keep (tests/test_store_contract.py). The contract's
names are given here too: ``from .store import ObjectStore``.
"""

from __future__ import annotations

import heapq
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from .content import RawBlob, open_raw
from .errors import CorruptObject, ObjectNotFound
from .ids import ObjectId, check_object_id, hash_object, is_id_prefix
from .loose import LooseFolder, WaitingFiles, aligned_start, aligns
from .objects import (
    CODEC_RAW,
    DEFAULT_COMPRESSION,
    DEFAULT_LEVEL,
    HEADER_SIZE,
    ObjectHeader,
    encode_payload,
    pack_header,
)
from .packs import PACK_DIR, ObjectFiles, PackEntry, PackSet
from .store_base import AbsentObjects, ObjectStore, Readable

_T = TypeVar("_T")

__all__ = ["AbsentObjects", "BatchObjectStore", "DiskObjectStore", "MemoryObjectStore", "ObjectStore", "Readable"]


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
            return self._other_copy(oid, err, lambda stored: self.decode(oid, stored))

    def get_buffer(self, oid: str) -> tuple[str, bytes | memoryview]:
        try:
            return super().get_buffer(oid)
        except CorruptObject as err:
            return self._other_copy(oid, err, lambda stored: self.decode_buffer(oid, stored))

    def _other_copy(self, oid: str, err: CorruptObject,
                    decode: Callable[[bytes], tuple[ObjectHeader, _T]]) -> tuple[str, _T]:
        """A read whose copy failed to verify: an object both packed and loose (``lin fsck
        --repair`` writes a good copy loose beside a damaged packed one, since packs are never
        changed) is read from its loose copy; otherwise the error, naming the pack."""
        e = self.packs.find(oid)
        if e is None:
            raise err
        if self.is_loose(oid):
            try:
                h, data = decode(self.files.read(oid))
                return h.type, data
            except (CorruptObject, ObjectNotFound):
                pass
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
