"""The loose-object file layout: one read-only file per object at ``objects/<2 hex>/<62 hex>``
(header + payload, see docs/format.md), in read-only folders, and temp files in ``tmp/`` on the
same filesystem.

How such files are listed, read and written: atomically one at a time (temp file, fsync, rename,
fsync the folder), as a batch of waiting temp files made durable together
(:class:`WaitingFiles`), or by copying a piece of another file into a temp object file in the
kernel (:func:`LooseFolder.copy_piece`). No store logic: the disk store and its batch
(:mod:`.store`) are built on these.
"""

from __future__ import annotations

import errno
import functools
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from .errors import InvalidInput, ObjectNotFound
from .fsutil import AtomicFile, copy_range, fsync_dir, is_nospace, kill_point, nospace_error, pwrite_all, temp_name
from .ids import check_object_id, is_id_prefix, is_object_id
from .objects import CODEC_RAW, HEADER_SIZE, pack_header


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


def _missing(oid: str) -> ObjectNotFound:
    return ObjectNotFound(f"object {oid} is missing from the store",
                          hint="run `lin fsck`; a remote backup can restore it")


class LooseFolder:
    """The files of ``objects/`` (``root``) and ``tmp/`` (``tmp_dir``)."""

    def __init__(self, root: Path, tmp_dir: Path):
        self.root = root
        self._root_s = str(root)
        self.tmp_dir = tmp_dir

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
    def copy_piece(self, src_fd: int, offset: int, size: int, where: str) -> Iterator[tuple[int, Path, memoryview]]:
        """Copy ``size`` bytes of ``src_fd`` from ``offset`` in the kernel (copy_file_range) into a
        new temp object file (a raw blob's header, then the bytes) and yield ``(fd, temp path,
        the bytes mapped read-only)``; the mapping is valid only inside the ``with``.

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
            pwrite_all(fd, pack_header("blob", CODEC_RAW, size), 0)
            try:
                copy_range(src_fd, offset, size, fd, HEADER_SIZE)
            except OSError as e:
                if e.errno == errno.EIO:
                    raise InvalidInput(f"{where}: file ended early; was it changed while being read?") from e
                raise
            with mmap.mmap(fd, HEADER_SIZE + size, prot=mmap.PROT_READ) as mm, \
                    memoryview(mm) as whole, whole[HEADER_SIZE:] as content:
                yield fd, tmp, content
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
