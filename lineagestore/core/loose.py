"""The loose-object file layout: one read-only file per object at ``objects/<2 hex>/<62 hex>``
(header + payload, see docs/format.md), in read-only folders, and temp files in ``tmp/`` on the
same filesystem.

How such files are listed, read and written: atomically one at a time (temp file, fsync, rename,
fsync the folder), as a batch of waiting temp files made durable together
(:class:`WaitingFiles`), or by copying a piece of another file into a temp object file in the
kernel (:func:`LooseFolder.copy_piece`). No store logic: the disk store and its batch
(:mod:`.store`) are built on these.

Reflinks: where the store's filesystem can share blocks between files (XFS with reflink=1,
Btrfs; probed once per store folder and process, :func:`reflink_block`), large raw blobs are
written *aligned* (codec 4): zero padding after the header puts the content at the offset
congruent, modulo the filesystem block, to where it lies in the file it came from. A checkout
rebuilds that file byte for byte, so each piece lands at the same offset modulo the block, and
the blocks it covers whole are shared with the object file (FICLONERANGE, :func:`share_range`)
instead of copied: the work folder costs no second copy. Layout: docs/format.md, "Aligned raw
objects (codec 4)".
"""

from __future__ import annotations

import errno
import fcntl
import functools
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import CorruptObject, InvalidInput, ObjectNotFound
from .fsutil import AtomicFile, copy_range, fsync_dir, is_nospace, kill_point, nospace_error, pwrite_all, temp_name
from .ids import check_object_id, is_id_prefix, is_object_id
from .objects import CODEC_ALIGNED, CODEC_RAW, HEADER_SIZE, pack_header


def in_object_folder(folder: Path, action: Callable[[], None]) -> None:
    """Run ``action`` (which puts one file into ``folder``) with the read-only object folder
    opened for writing, then make it read-only again.

    Another writer may re-lock the folder between our chmod and the rename: retry.
    """
    for attempt in range(50):
        try:
            if not folder.is_dir():  # parents too: `objects/` itself may be gone (fsck --repair)
                folder.mkdir(mode=0o755, parents=True, exist_ok=True)
            if not folder.stat().st_mode & 0o200:
                os.chmod(folder, 0o755)
            action()
            os.chmod(folder, 0o555)  # object folders are read-only between writes
            return
        except PermissionError:
            if attempt == 49:
                raise
            time.sleep(0.01)


def _into_folder(path: Path, action: Callable[[], None]) -> None:
    """:func:`in_object_folder` for object file ``path``; a full disk is NoSpace naming it."""
    try:
        in_object_folder(path.parent, action)
    except OSError as e:
        if is_nospace(e):
            raise nospace_error(e, path) from e
        raise


# ------------------------------------------------------------------------------ reflinks

#: ioctl FICLONERANGE (linux/fs.h: _IOW(0x94, 13, struct file_clone_range)), on the destination
FICLONERANGE = 0x4020940D
_CLONE_RANGE = struct.Struct("=qQQQ")  # src_fd (s64), src_offset, src_length, dest_offset (u64)
#: what a clone that cannot be done here fails with: no reflinks on this filesystem (or no such
#: ioctl), another filesystem, offsets or a length the filesystem refuses. The caller copies.
_NO_CLONE = frozenset({errno.EOPNOTSUPP, errno.ENOTTY, errno.ENOSYS, errno.EXDEV, errno.EINVAL,
                       errno.EPERM, errno.EBADF, errno.ETXTBSY})
#: an aligned object's padding is shorter than this: the largest filesystem block lin aligns to
#: (XFS and Btrfs use 4 KiB; ZFS clones whole records, 128 KiB by default)
MAX_ALIGN = 1 << 20
#: raw blobs at least this large, and at least 16 blocks, are stored aligned where the store's
#: filesystem has reflinks (:func:`aligns`). The padding costs half a block on average (2 KiB of
#: a 4 KiB block: 3% of a 64 KiB tensor, at most 1/16 of any piece; 463 KB, 0.04%, for the 215
#: aligned pieces of a 1.2 GB Qwen3-shaped model) and saves the whole piece in the work folder;
#: smaller pieces (norms, biases) are compressed or stay unpadded, and are copied at checkout.
ALIGN_MIN = 64 << 10


def clone_range(src_fd: int, src_offset: int, count: int, dst_fd: int, dst_offset: int) -> None:
    """Make ``count`` bytes of ``dst_fd`` at ``dst_offset`` share the blocks of ``src_fd`` at
    ``src_offset`` (FICLONERANGE). OSError where the filesystem cannot: see :data:`_NO_CLONE`."""
    fcntl.ioctl(dst_fd, FICLONERANGE, _CLONE_RANGE.pack(src_fd, src_offset, count, dst_offset))


def share_range(src_fd: int, src_offset: int, count: int, dst_fd: int, dst_offset: int, block: int) -> int:
    """Write ``count`` bytes of ``src_fd`` from ``src_offset`` into ``dst_fd`` at ``dst_offset``
    as :func:`.fsutil.copy_range` does, sharing blocks where it can; return the bytes shared.

    With ``block`` (the filesystem's block, from :func:`reflink_block`; 0: copy) and the two
    offsets congruent modulo it, the blocks of the destination the range covers whole are cloned
    (FICLONERANGE) and only the partial blocks at either end are copied. Otherwise, or where the
    clone is refused, everything is copied in the kernel.
    """
    if block and count and (src_offset - dst_offset) % block == 0:
        head = min(-dst_offset % block, count)
        middle = (count - head) // block * block
        if middle:
            try:
                clone_range(src_fd, src_offset + head, middle, dst_fd, dst_offset + head)
            except OSError as e:
                if e.errno not in _NO_CLONE:
                    raise
            else:
                copy_range(src_fd, src_offset, head, dst_fd, dst_offset)
                done = head + middle
                copy_range(src_fd, src_offset + done, count - done, dst_fd, dst_offset + done)
                return middle
    copy_range(src_fd, src_offset, count, dst_fd, dst_offset)
    return 0


_PROBED: dict[tuple[str, int, int], int] = {}
_PROBE_LOCK = threading.Lock()


def reflink_block(folder: Path) -> int:
    """The block size at which files in ``folder`` can share blocks, or 0 where its filesystem
    cannot (or ``folder`` is missing).

    Probed by cloning one block between two scratch files in ``folder`` (which must be writable:
    the store's ``tmp/``), once per folder and process; the answer is cached under the folder's
    device and inode, so a folder on a new filesystem is probed again.
    """
    try:
        st = os.stat(folder)
    except OSError:
        return 0
    key = (str(folder), st.st_dev, st.st_ino)
    with _PROBE_LOCK:
        if key not in _PROBED:
            _PROBED[key] = _probe(folder)
        return _PROBED[key]


def _probe(folder: Path) -> int:
    try:
        block = os.statvfs(folder).f_bsize
    except OSError:
        return 0
    if not 512 <= block <= MAX_ALIGN or block & (block - 1):
        return 0
    src, dst = temp_name(folder, ".probe"), temp_name(folder, ".probe")  # collected if we die
    fds: list[int] = []
    try:
        fds.append(os.open(src, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        fds.append(os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        pwrite_all(fds[0], b"\x5a" * (2 * block), 0)
        clone_range(fds[0], block, block, fds[1], block)  # the second block: offsets as aligned objects use
        return block if os.pread(fds[1], block, block) == b"\x5a" * block else 0
    except OSError:
        return 0
    finally:
        for fd in fds:
            os.close(fd)
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)


@dataclass(frozen=True)
class Sharing:
    """Whether a checkout into a folder shares blocks with the store (``block`` > 0) or copies,
    and why, in a few words."""

    block: int
    reason: str

    @property
    def shares(self) -> bool:
        return self.block > 0


def work_sharing(tmp_dir: Path, target: Path) -> Sharing:
    """Whether files written into ``target`` (a folder, or where one would be created) can
    share blocks with the object files of the store whose temp folder is ``tmp_dir``."""
    block = reflink_block(tmp_dir)
    if not block:
        return Sharing(0, "the store's filesystem has no reflinks")
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        same = os.stat(existing).st_dev == os.stat(tmp_dir).st_dev
    except OSError:
        same = False
    if not same:
        return Sharing(0, "the work folder is on another filesystem than the store")
    return Sharing(block, f"reflinks, {block}-byte blocks")


FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap)
_FIEMAP = struct.Struct("=QQIIII")  # fm_start, fm_length, fm_flags, fm_mapped_extents, fm_extent_count, reserved
_EXTENT = struct.Struct("=QQQQQIIII")  # logical, physical, length, 2 reserved; flags, 3 reserved
_EXTENT_LAST, _EXTENT_SHARED = 0x1, 0x2000
_EXTENTS_PER_CALL = 256


def shared_bytes(path: os.PathLike[str] | str) -> int | None:
    """How many bytes of the file ``path`` lie in blocks shared with another file (reflinked:
    with the store's objects, after a checkout that shared), by FIEMAP; None where the
    filesystem cannot say."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        shared, start = 0, 0
        while start < size:
            buf = bytearray(_FIEMAP.size + _EXTENTS_PER_CALL * _EXTENT.size)
            _FIEMAP.pack_into(buf, 0, start, size - start, 0, 0, _EXTENTS_PER_CALL, 0)
            fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
            mapped = _FIEMAP.unpack_from(buf)[3]
            if not mapped:
                break
            for i in range(mapped):
                logical, _, length, _, _, flags, *_ = _EXTENT.unpack_from(buf, _FIEMAP.size + i * _EXTENT.size)
                if flags & _EXTENT_SHARED:
                    shared += max(0, min(logical + length, size) - max(logical, start))
                start = logical + length
                if flags & _EXTENT_LAST:
                    return shared
        return shared
    except OSError:
        return None
    finally:
        os.close(fd)


def aligns(size: int, block: int) -> bool:
    """Whether a raw blob of ``size`` bytes is stored aligned to ``block`` (0: no reflinks)."""
    return bool(block) and size >= max(ALIGN_MIN, 16 * block)


def aligned_start(origin: int, block: int) -> int:
    """Where an aligned object's content starts in its file: the first offset after the header
    congruent to ``origin`` (the content's offset in the file it came from) modulo ``block``."""
    return HEADER_SIZE + (origin - HEADER_SIZE) % block


def aligned_content(payload: memoryview, size: int, where: str) -> memoryview:
    """The ``size``-byte content of an aligned object's ``payload`` (everything after the header:
    zero padding, then the content), checked; CorruptObject naming ``where`` otherwise."""
    pad = len(payload) - size
    if not 0 <= pad < MAX_ALIGN:
        raise CorruptObject(f"{where} is corrupt: {len(payload):,} bytes after its header for "
                            f"{size:,} bytes of content", hint="run `lin fsck` to list every damaged object")
    if payload[:pad] != bytes(pad):
        raise CorruptObject(f"{where} is corrupt: its padding is not zero",
                            hint="run `lin fsck` to list every damaged object")
    return payload[pad:]


def _missing(oid: str) -> ObjectNotFound:
    return ObjectNotFound(f"object {oid} is missing from the store",
                          hint="run `lin fsck`; a remote backup can restore it")


class LooseFolder:
    """The files of ``objects/`` (``root``) and ``tmp/`` (``tmp_dir``)."""

    def __init__(self, root: Path, tmp_dir: Path):
        self.root = root
        self._root_s = str(root)
        self.tmp_dir = tmp_dir
        #: the block large raw blobs are aligned to (see :func:`reflink_block`); None: probe the
        #: store's filesystem on first use, 0: never align
        self.block: int | None = None

    def alignment(self) -> int:
        """The block large raw blobs are aligned to here: the filesystem's block where it has
        reflinks, else 0 (they are written unpadded, codec 0)."""
        if self.block is None:
            self.block = reflink_block(self.tmp_dir)
        return self.block

    def file(self, oid: str) -> str:
        """The object's file as a string path (no pathlib: fsck asks for 100,000s of them)."""
        check_object_id(oid)
        return f"{self._root_s}/{oid[:2]}/{oid[2:]}"

    def read(self, oid: str, n: int = -1) -> bytes:
        """The object file's bytes (the first ``n`` only, if given); ObjectNotFound if absent."""
        try:
            with open(self.file(oid), "rb") as f:
                return f.read(n)
        except FileNotFoundError:
            raise _missing(oid) from None

    def stat(self, oid: str) -> os.stat_result:
        try:
            return os.stat(self.file(oid))
        except FileNotFoundError:
            raise _missing(oid) from None

    def touch(self, oid: str) -> None:
        try:
            os.utime(self.file(oid))
        except (FileNotFoundError, PermissionError):
            pass

    def ids(self) -> Iterator[str]:
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

    def ids_with_prefix(self, prefix: str) -> list[str]:
        if not is_id_prefix(prefix):
            return []
        try:
            names = os.listdir(self.root / prefix[:2])
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(prefix[:2] + n for n in names if (prefix[:2] + n).startswith(prefix) and len(n) == 62)

    def write(self, oid: str, data: list[bytes | memoryview]) -> None:
        """Write object file ``oid`` atomically (temp file, fsync, rename, fsync the folder)."""
        path = Path(self.file(oid))

        def write() -> None:
            with AtomicFile(path, self.tmp_dir, readonly=True) as f:
                for piece in data:
                    f.write(piece)

        _into_folder(path, write)

    def install(self, tmp: Path, oid: str) -> None:
        """Make the complete, fsynced temp file ``tmp`` object file ``oid``: rename it into place
        and fsync the folder (as AtomicFile does)."""
        path = Path(self.file(oid))

        def install() -> None:
            os.chmod(tmp, 0o444)
            kill_point("write")
            os.replace(tmp, path)
            kill_point("rename")
            fsync_dir(path.parent)

        _into_folder(path, install)

    def remove(self, oid: str) -> None:
        path = Path(self.file(oid))
        if path.parent.is_dir():
            os.chmod(path.parent, 0o755)
        path.unlink(missing_ok=True)

    @contextmanager
    def copy_piece(self, src_fd: int, offset: int, size: int, where: str,
                   block: int = 0) -> Iterator[tuple[int, Path, memoryview, int]]:
        """Copy ``size`` bytes of ``src_fd`` from ``offset`` in the kernel (copy_file_range) into a
        new temp object file (a raw blob's header, then the bytes) and yield ``(fd, temp path,
        the bytes mapped read-only, the file's size)``; the mapping is valid only inside the ``with``.

        With ``block`` (:meth:`alignment`), the file is an aligned object (codec 4): the content
        starts at :func:`aligned_start` of ``offset``, and the blocks it has in common with the
        source are shared, not copied, where the filesystem allows (:func:`share_range`).

        Only our own temp file is mapped: a source truncated meanwhile is an error, never a
        SIGBUS. The temp file is removed afterwards unless it was renamed away meanwhile; a full
        disk is NoSpace naming it.
        """
        tmp = temp_name(self.tmp_dir)
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            if is_nospace(e):
                raise nospace_error(e, tmp) from e
            raise
        try:
            start = aligned_start(offset, block) if block else HEADER_SIZE
            header = pack_header("blob", CODEC_ALIGNED if block else CODEC_RAW, size)
            pwrite_all(fd, header + bytes(start - HEADER_SIZE), 0)
            try:
                share_range(src_fd, offset, size, fd, start, block)
            except OSError as e:
                if e.errno == errno.EIO:
                    raise InvalidInput(f"{where}: file ended early; was it changed while being read?") from e
                raise
            with mmap.mmap(fd, start + size, prot=mmap.PROT_READ) as mm, \
                    memoryview(mm) as whole, whole[start:] as content:
                yield fd, tmp, content, start + size
        except OSError as e:
            if is_nospace(e):
                raise nospace_error(e, tmp) from e
            raise
        finally:
            os.close(fd)
            tmp.unlink(missing_ok=True)  # gone already when it became an object (or a batch's)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WaitingFiles:
    """Object files written as temp files in ``tmp/`` that become visible together at :meth:`flush`.

    Each file's fsync starts on a thread as soon as it is written; ``flush`` waits for them,
    renames the files into ``objects/`` in the order they were added and fsyncs the folders.
    """

    def __init__(self, folder: LooseFolder):
        self.folder = folder
        self._files: dict[str, Path | None] = {}  # None: being written
        self._syncs: list[Future[None]] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def __contains__(self, oid: str) -> bool:
        return oid in self._files

    def get(self, oid: str) -> Path | None:
        """The temp file holding ``oid``; None if it is not waiting (or still being written)."""
        with self._lock:
            return self._files.get(oid)

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(k for k, v in self._files.items() if v is not None)

    def _claim(self, oid: str) -> bool:
        with self._lock:
            if oid in self._files:
                return False
            self._files[oid] = None
            return True

    def write(self, oid: str, data: list[bytes | memoryview]) -> None:
        """Write object file ``oid`` as a waiting temp file (nothing if it already waits)."""
        if not self._claim(oid):
            return
        tmp = temp_name(self.folder.tmp_dir)  # "<pid>-...": other writers' clean-up leaves it alone
        try:
            with open(tmp, "xb") as f:
                for piece in data:
                    f.write(piece)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            with self._lock:
                self._files.pop(oid, None)
            if is_nospace(e):
                raise nospace_error(e, tmp) from e
            raise
        self._wait_for(oid, tmp)

    def adopt(self, tmp: Path, oid: str) -> None:
        """Keep the complete temp file ``tmp`` as waiting object file ``oid`` (renamed away from
        ``tmp``, so that the caller's clean-up leaves it alone)."""
        if not self._claim(oid):
            return
        kept = temp_name(self.folder.tmp_dir)
        os.rename(tmp, kept)
        self._wait_for(oid, kept)

    def _wait_for(self, oid: str, tmp: Path) -> None:
        with self._lock:
            self._files[oid] = tmp
            if self._pool is None:
                self._pool = ThreadPoolExecutor(8, thread_name_prefix="lin-fsync")
            self._syncs.append(self._pool.submit(_fsync_file, tmp))  # the disk works while we hash on

    def _take(self) -> tuple[dict[str, Path | None], list[Future[None]], ThreadPoolExecutor | None]:
        with self._lock:
            files, self._files = self._files, {}
            syncs, self._syncs = self._syncs, []
            pool, self._pool = self._pool, None
        return files, syncs, pool

    def flush(self) -> int:
        """Make every waiting file durable and visible; return how many there were.

        On an error (a full disk) the files not yet in place are removed, and NoSpace or the
        OSError is raised: nothing half-written remains.
        """
        files, syncs, pool = self._take()
        waiting = {k: v for k, v in files.items() if v is not None}
        if not waiting:
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
            for oid, tmp in waiting.items():
                os.chmod(tmp, 0o444)
                path = Path(self.folder.file(oid))
                in_object_folder(path.parent, functools.partial(os.replace, tmp, path))
                folders.add(path.parent)
                placed.add(oid)
            assert pool is not None
            list(pool.map(fsync_dir, folders))
        except OSError as e:
            for oid, tmp in waiting.items():
                if oid not in placed:
                    tmp.unlink(missing_ok=True)
            if is_nospace(e):
                raise nospace_error(e, self.folder.tmp_dir) from e
            raise
        finally:
            if pool is not None:
                pool.shutdown()
        return len(waiting)

    def discard(self) -> None:
        """Drop the waiting files (after an error)."""
        files, syncs, pool = self._take()
        for f in syncs:
            f.exception()  # wait: the file must not be synced after it is removed
        if pool is not None:
            pool.shutdown()
        for tmp in files.values():
            if tmp is not None:
                tmp.unlink(missing_ok=True)
