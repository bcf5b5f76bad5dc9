"""Low-level filesystem helpers: atomic writes, directory fsync, the store lock.

Every file lineagestore writes inside a store goes through :class:`AtomicFile`: the bytes go to a
temporary file in the store's ``tmp/`` folder (same filesystem), are fsynced, renamed over the
final name, and the folder is fsynced. A crash at any point leaves either the old file or the
new one, never a mix; what is left in ``tmp/`` is removed by :func:`clean_stale_temp`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from .environment import read_env
from .errors import LockTimeout, NoSpace

_NOSPACE = {errno.ENOSPC, errno.EDQUOT}

# --------------------------------------------------------------------------- crash-test hooks
#: ``LIN_TEST_KILL_AT=LABEL:N`` makes the process SIGKILL itself the N-th time it reaches a
#: kill point named LABEL (``any`` counts every point); ``LIN_TEST_PAUSE_AT=LABEL:N`` with
#: ``LIN_TEST_PAUSE_FILE=PATH`` creates PATH there and waits until it is deleted. Read once at
#: import; when unset, :func:`kill_point` costs one comparison. Used by tests/test_crash*.py.
_TEST_HOOKS = {k: v for k in ("LIN_TEST_KILL_AT", "LIN_TEST_PAUSE_AT") if (v := read_env(k))} or None
_hits: dict[str, int] = {}
_hits_lock = threading.Lock()


def kill_point(label: str) -> None:
    if _TEST_HOOKS is not None:
        _test_point(label, _TEST_HOOKS)


def _test_point(label: str, hooks: dict[str, str]) -> None:
    with _hits_lock:
        for key in (label, "any"):
            _hits[key] = _hits.get(key, 0) + 1
        counts = dict(_hits)
    for var, spec in hooks.items():
        want, _, n = spec.partition(":")
        if want not in (label, "any") or counts[want] != int(n or 1):
            continue
        if var == "LIN_TEST_KILL_AT":
            os.kill(os.getpid(), signal.SIGKILL)
        flag = Path(read_env("LIN_TEST_PAUSE_FILE") or "")
        flag.write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while flag.exists() and time.monotonic() < deadline:
            time.sleep(0.01)


def nospace_error(exc: OSError, path: os.PathLike[str] | str) -> NoSpace:
    return NoSpace(f"no space left on device while writing {path}",
                   hint="free some disk space and run the command again; nothing was half-written")


def is_nospace(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _NOSPACE


def fsync_dir(path: os.PathLike[str] | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(tmp_dir: Path, suffix: str = ".tmp", prefix: str = "") -> Path:
    """A fresh temp file name that records the owning pid (so stale ones can be found)."""
    return tmp_dir / f"{prefix}{os.getpid()}-{os.urandom(8).hex()}{suffix}"


class AtomicFile:
    """Write a file atomically: ``with AtomicFile(path, tmp_dir) as f: f.write(...)``.

    On a clean exit the temp file is fsynced, renamed to ``path`` and the folder fsynced; on an
    exception the temp file is removed and ``path`` is untouched. ``readonly`` marks the result
    0o444 (objects are immutable). ``durable=False`` skips the fsyncs (caches only).
    """

    def __init__(self, path: os.PathLike[str] | str, tmp_dir: os.PathLike[str] | str | None = None, *,
                 readonly: bool = False, durable: bool = True, prefix: str = ""):
        self.path = Path(path)
        self.prefix = prefix
        self.tmp_dir = Path(tmp_dir) if tmp_dir is not None else self.path.parent
        self.readonly = readonly
        self.durable = durable
        self.tmp_path: Path | None = None
        self._f: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        self.tmp_path = temp_name(self.tmp_dir, prefix=self.prefix)
        try:
            self._f = open(self.tmp_path, "xb")
        except OSError as e:
            if is_nospace(e):
                raise nospace_error(e, self.path) from e
            raise
        return self._f

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._f is not None and self.tmp_path is not None
        if exc_type is not None:
            self._abort()
            return
        try:
            self._f.flush()
            if self.durable:
                os.fsync(self._f.fileno())
            self._f.close()
            if self.readonly:
                os.chmod(self.tmp_path, 0o444)
            kill_point("write")
            os.replace(self.tmp_path, self.path)
            kill_point("rename")
            if self.durable:
                fsync_dir(self.path.parent)
        except OSError as e:
            self._abort()
            if is_nospace(e):
                raise nospace_error(e, self.path) from e
            raise

    def _abort(self) -> None:
        try:
            if self._f is not None and not self._f.closed:
                self._f.close()
        except OSError:
            pass
        try:
            if self.tmp_path is not None:
                self.tmp_path.unlink()
        except FileNotFoundError:
            pass


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """``os.pwrite`` until every byte of ``data`` is written at ``offset``."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


_COPY_FILE_RANGE_OK = hasattr(os, "copy_file_range")


def copy_range(src_fd: int, src_offset: int, count: int, dst_fd: int, dst_offset: int) -> None:
    """Copy ``count`` bytes of ``src_fd`` at ``src_offset`` to ``dst_fd`` at ``dst_offset``.

    In the kernel with ``copy_file_range`` where the system has it (no copy through user
    memory; shared blocks on file systems with reflinks), else ``pread`` + ``pwrite`` in 8 MiB
    pieces. Neither file position moves, so threads may fill one file in parallel. A source
    shorter than ``src_offset + count`` is an OSError (EIO), never a short copy.
    """
    global _COPY_FILE_RANGE_OK
    end = src_offset + count
    while src_offset < end and _COPY_FILE_RANGE_OK:
        try:
            n = os.copy_file_range(src_fd, dst_fd, end - src_offset, src_offset, dst_offset)
        except OSError as e:
            if e.errno in (errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                _COPY_FILE_RANGE_OK = False  # not here (old kernel, other file system): copy below
                break
            raise
        if n == 0:
            raise OSError(errno.EIO, f"source ended {end - src_offset} bytes early")
        src_offset += n
        dst_offset += n
    while src_offset < end:
        data = os.pread(src_fd, min(8 << 20, end - src_offset), src_offset)
        if not data:
            raise OSError(errno.EIO, f"source ended {end - src_offset} bytes early")
        pwrite_all(dst_fd, data, dst_offset)
        src_offset += len(data)
        dst_offset += len(data)


def atomic_write_bytes(path: os.PathLike[str] | str, data: bytes, tmp_dir: os.PathLike[str] | str | None = None,
                       *, readonly: bool = False, durable: bool = True) -> None:
    with AtomicFile(path, tmp_dir, readonly=readonly, durable=durable) as f:
        f.write(data)


def append_line(path: os.PathLike[str] | str, line: str, *, durable: bool = True) -> None:
    """Append one line with a single write(2) under O_APPEND (atomic for small lines), fsynced."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            kill_point("append")
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        if is_nospace(e):
            raise nospace_error(e, path) from e
        raise


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temp(tmp_dir: Path, *, max_age_s: float = 86400.0, prefix: str = "") -> int:
    """Remove temp files left by processes that died (pid in the name is gone) or are very old.

    With ``prefix``, only files named ``<prefix><pid>-...`` are considered (a folder shared with
    other files, such as a checkout target).
    """
    removed = 0
    if not tmp_dir.is_dir():
        return 0
    now = time.time()
    for p in tmp_dir.iterdir():
        if not p.name.startswith(prefix):
            continue
        try:
            pid = int(p.name[len(prefix):].split("-", 1)[0])
        except ValueError:
            pid = -1
        try:
            old = now - p.lstat().st_mtime > max_age_s
        except FileNotFoundError:
            continue
        if (pid != os.getpid() and not pid_alive(pid)) or old:
            try:
                p.unlink()
                removed += 1
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                pass
    return removed


# --------------------------------------------------------------------------- locks


@dataclass(frozen=True)
class LockHolder:
    pid: int
    mode: str
    command: str
    host: str
    since: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        own = ", this process" if self.pid == os.getpid() and self.host == socket.gethostname() else ""
        return f"pid {self.pid} ({self.command!r}, {self.mode}, since {when}{own})"


def current_command() -> str:
    argv = [os.path.basename(sys.argv[0] or "python")] + sys.argv[1:]
    return " ".join(argv)[:200]


#: ``on_wait(holders)``: told once, while a lock is busy, who holds it
OnWait = Callable[[list[LockHolder]], object]
#: ``fn(lock_path, holders)``, called once a lock has been busy for a second and the caller
#: passed no ``on_wait``; the CLI sets it (library code never prints) so that every waiting
#: command says what it waits for, and who holds it
_default_on_wait: Callable[[Path, list[LockHolder]], object] | None = None


def set_lock_wait_reporter(fn: Callable[[Path, list[LockHolder]], object] | None) -> None:
    global _default_on_wait
    _default_on_wait = fn


class FileLock:
    """A reader/writer lock on one file with ``flock(2)``, waiting with a timeout.

    The kernel releases a flock when its process dies, so a ``kill -9`` never leaves the store
    locked. Who holds the lock is recorded in ``<name>.holders/<pid>-<token>.json`` so that a
    waiting command can say who it waits for; records of dead pids are ignored and removed.
    Re-entrant within one object: nested ``acquire`` calls only count.
    """

    def __init__(self, path: Path, *, poll_s: float = 0.05):
        self.path = path
        self.holders_dir = path.with_name(path.name + ".holders")
        self.poll_s = poll_s
        self._fd: int | None = None
        self._mode: str | None = None
        self._depth = 0
        self._info: Path | None = None

    def holders(self, *, this_process: bool = False) -> list[LockHolder]:
        """The live holders of the lock; other lock objects of this process on the same file
        (a second Repo, another thread) only with ``this_process``."""
        out: list[LockHolder] = []
        try:
            entries = list(self.holders_dir.iterdir())
        except FileNotFoundError:
            return out
        for p in entries:
            try:
                d = json.loads(p.read_text())
                h = LockHolder(int(d["pid"]), d["mode"], d["command"], d.get("host", ""), float(d["since"]))
            except (OSError, ValueError, KeyError):
                self._drop_unreadable(p)
                continue
            if h.pid == os.getpid() and p != self._info and not this_process:
                continue
            if h.host == socket.gethostname() and not pid_alive(h.pid):
                try:
                    p.unlink()
                except OSError:
                    pass
                continue
            out.append(h)
        return out

    def acquire(self, mode: str = "shared", timeout: float = 300.0, on_wait: OnWait | None = None) -> None:
        """Take the lock in ``mode`` ("shared" or "exclusive"); raise LockTimeout after ``timeout``."""
        if self._depth:
            if mode == "exclusive" and self._mode != "exclusive":
                raise RuntimeError("cannot upgrade a shared store lock to exclusive")
            self._depth += 1
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        op = fcntl.LOCK_SH if mode == "shared" else fcntl.LOCK_EX
        start = time.monotonic()
        deadline = start + timeout
        report_after = 0.0
        if on_wait is None and _default_on_wait is not None:
            reporter = _default_on_wait
            on_wait, report_after = (lambda holders: reporter(self.path, holders)), 1.0
        told = False
        while True:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    who = "; ".join(h.describe() for h in self.holders(this_process=True)) or "an unknown process"
                    raise LockTimeout(f"timed out after {timeout:.0f}s waiting for the store lock "
                                      f"{self.path}: held by {who}",
                                      hint="wait for that command to finish, or raise LIN_LOCK_TIMEOUT") from None
                if not told and on_wait is not None and time.monotonic() - start >= report_after:
                    on_wait(self.holders())
                    told = True
                time.sleep(self.poll_s)
        self._fd, self._mode, self._depth = fd, mode, 1
        self.holders()  # drops the records of holders killed before they could remove theirs
        try:
            self.holders_dir.mkdir(exist_ok=True)
            self._info = self.holders_dir / f"{os.getpid()}-{os.urandom(4).hex()}.json"
            self._info.write_text(json.dumps({"pid": os.getpid(), "mode": mode, "command": current_command(),
                                              "host": socket.gethostname(), "since": time.time()}))
        except OSError:  # a full disk: the record is only for messages; never leave half of one
            if self._info is not None:
                self._info.unlink(missing_ok=True)
            self._info = None

    def _drop_unreadable(self, p: Path) -> None:
        """Remove a holder record that cannot be read (cut short by a full disk) once the process
        its name gives (``<pid>-<token>.json``) is gone; a live writer may still be writing it."""
        try:
            pid = int(p.name.split("-", 1)[0])
        except ValueError:
            pid = 0
        if pid != os.getpid() and not pid_alive(pid):
            p.unlink(missing_ok=True)

    def take_now(self, mode: str = "exclusive") -> str | None:
        """Take the lock without waiting: None when taken, else who holds it, in words."""
        try:
            self.acquire(mode, timeout=0)
        except LockTimeout:
            return "; ".join(h.describe() for h in self.holders()) or "another process"
        return None

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if self._depth:
            return
        if self._info is not None:
            try:
                self._info.unlink()
            except OSError:
                pass
            self._info = None
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        self._mode = None

    @contextmanager
    def held(self, mode: str = "shared", timeout: float = 300.0, on_wait: OnWait | None = None) -> Iterator[None]:
        self.acquire(mode, timeout, on_wait)
        try:
            yield
        finally:
            self.release()
