"""Refs (named pointers to objects), HEAD, and the reflog; disk and memory twins.

A ref changes only by compare-and-swap (:meth:`RefsContainer.set_if_equals`) under the refs lock,
and every change appends a reflog line first-class with the change itself: a ref update whose log
line cannot be written fails, and one that fails after its line was written (a full disk) takes
the line back. Reflog lines use git's layout::

    <old id> <new id> <who> <unix time> +0000<TAB><message>

with 64 zeros for "absent".
"""

from __future__ import annotations

import getpass
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidName, RefConflict
from .fsutil import AtomicFile, FileLock, append_line, fsync_dir
from .ids import check_object_id
from .names import check_name

ZERO = "0" * 64
SYMREF_PREFIX = "ref: "
_TOP = ("refs/heads/", "refs/tags/", "refs/runs/", "refs/data/", "refs/queues/", "refs/notes/", "refs/remotes/",
        "refs/backup/")


def check_ref_name(name: str) -> str:
    """Validate a full ref name (``HEAD`` or ``refs/<kind>/<name>[/<name>]``)."""
    if name == "HEAD":
        return name
    if not isinstance(name, str) or not name.startswith(_TOP):
        raise InvalidName(f"invalid ref {name!r}: must start with one of {', '.join(_TOP)}")
    parts = name.split("/")
    if len(parts) > 6:
        raise InvalidName(f"invalid ref {name!r}: too deep")
    for p in parts[2:]:
        check_name(p, "ref name component")
    if len(parts) < 3:
        raise InvalidName(f"invalid ref {name!r}")
    return name


def who() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = str(os.getuid())
    return f"{user} <{user}@{socket.gethostname()}>"


@dataclass(frozen=True)
class ReflogEntry:
    old: str | None
    new: str | None
    who: str
    time: float
    message: str

    def format(self) -> str:
        return (f"{self.old or ZERO} {self.new or ZERO} {self.who} {int(self.time)} +0000"
                f"\t{self.message.replace(chr(10), ' ')}")

    @classmethod
    def parse(cls, line: str) -> ReflogEntry:
        head, _, message = line.rstrip("\n").partition("\t")
        old, new, rest = head.split(" ", 2)
        who_part, ts, _tz = rest.rsplit(" ", 2)
        return cls(None if old == ZERO else old, None if new == ZERO else new, who_part, float(ts), message)


class RefsContainer(ABC):
    """Named refs. Subclasses provide raw storage; CAS and reflog logic is shared."""

    @abstractmethod
    def _read_raw(self, name: str) -> str | None: ...

    @abstractmethod
    def _write_raw(self, name: str, value: str | None) -> None: ...

    @abstractmethod
    def _append_log(self, name: str, entry: ReflogEntry) -> None: ...

    @abstractmethod
    def reflog(self, name: str) -> list[ReflogEntry]: ...

    @abstractmethod
    def reflog_names(self) -> list[str]: ...

    @abstractmethod
    def names(self, prefix: str = "refs/") -> list[str]: ...

    @abstractmethod
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the refs lock (exclusive) for a read-modify-write sequence."""

    # ---- reading

    def read(self, name: str) -> str | None:
        """The raw value: an id, ``ref: <target>`` for a symbolic ref, or None."""
        return self._read_raw(check_ref_name(name))

    def symbolic_target(self, name: str) -> str | None:
        raw = self.read(name)
        if raw is not None and raw.startswith(SYMREF_PREFIX):
            return raw[len(SYMREF_PREFIX):]
        return None

    def resolve(self, name: str) -> str | None:
        """Follow symbolic refs to an id (None if the ref or its target does not exist)."""
        for _ in range(5):
            raw = self.read(name)
            if raw is None:
                return None
            if raw.startswith(SYMREF_PREFIX):
                name = raw[len(SYMREF_PREFIX):]
                continue
            return raw
        raise RefConflict(f"ref {name!r}: symbolic ref loop")

    def as_dict(self, prefix: str = "refs/") -> dict[str, str]:
        """Every ref under ``prefix`` and the id it resolves to (50,000 data refs: ~0.5 s)."""
        out = {}
        for n in self.names(prefix):
            raw = self._read_raw(n)  # a name from our own listing: no need to validate it again
            v = self.resolve(n) if raw is not None and raw.startswith(SYMREF_PREFIX) else raw
            if v is not None:
                out[n] = v
        return out

    # ---- writing

    def set_if_equals(self, name: str, old: str | None, new: str | None, message: str,
                      *, check_old: bool = True) -> None:
        """Set ``name`` to ``new`` if it currently holds ``old`` (None: absent); log the change.

        ``new=None`` deletes the ref. Symbolic refs (HEAD) update their target.
        """
        check_ref_name(name)
        if new is not None:
            check_object_id(new)
        with self.locked():
            target = name
            raw = self._read_raw(name)
            if raw is not None and raw.startswith(SYMREF_PREFIX):
                target = raw[len(SYMREF_PREFIX):]
                raw = self._read_raw(target)
            current = raw
            if check_old and current != old:
                raise RefConflict(f"ref {target} changed underneath: expected {_s(old)}, found {_s(current)}",
                                  hint="another lin command changed it; run the command again")
            entry = ReflogEntry(current, new, who(), time.time(), message)
            with self._logged(target, entry):
                self._write_raw(target, new)
            if target != name:
                self._append_log(name, entry)

    def set_symbolic(self, name: str, target: str, message: str) -> None:
        check_ref_name(name)
        check_ref_name(target)
        with self.locked():
            old = self.resolve(name)
            new = self.resolve(target)
            self._write_raw(name, SYMREF_PREFIX + target)
            if old != new:
                self._append_log(name, ReflogEntry(old, new, who(), time.time(), message))

    def detach(self, name: str, new: str, message: str) -> None:
        """Point ``name`` (HEAD) directly at an id, replacing a symbolic ref."""
        check_object_id(new)
        with self.locked():
            old = self.resolve(name)
            with self._logged(name, ReflogEntry(old, new, who(), time.time(), message)):
                self._write_raw(name, new)

    @contextmanager
    def _logged(self, name: str, entry: ReflogEntry) -> Iterator[None]:
        """Append ``entry`` to ``name``'s reflog, then make the change: if either fails (a full
        disk), the reflog is cut back to where it was, so it never records a change that did
        not happen."""
        mark = self._log_mark(name)
        try:
            self._append_log(name, entry)
            yield
        except BaseException:
            self._log_rewind(name, mark)
            raise

    @abstractmethod
    def _log_mark(self, name: str) -> int | None:
        """Where ``name``'s reflog ends now (None: it does not exist)."""

    @abstractmethod
    def _log_rewind(self, name: str, mark: int | None) -> None:
        """Cut ``name``'s reflog back to ``mark`` (:meth:`_log_mark`)."""


def _s(v: str | None) -> str:
    return "nothing" if v is None else v[:12]


class DiskRefsContainer(RefsContainer):
    """Refs as files under the store root, written atomically; reflogs under ``logs/``."""

    def __init__(self, root: Path, tmp_dir: Path, lock_path: Path, lock_timeout: float = 300.0):
        self.root = root
        self._root_s = str(root)
        self.tmp_dir = tmp_dir
        self.logs = root / "logs"
        self._lock = FileLock(lock_path)
        self._lock_timeout = lock_timeout
        self._tlock = threading.RLock()

    def _path(self, name: str) -> Path:
        return self.root / name

    def _read_raw(self, name: str) -> str | None:
        try:
            with open(os.path.join(self._root_s, name), "rb") as f:  # no pathlib: 50,000 refs are read at once
                text = f.read().decode("utf-8").strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        return text or None

    def _write_raw(self, name: str, value: str | None) -> None:
        path = self._path(name)
        if value is None:
            try:
                path.unlink()
                fsync_dir(path.parent)
            except FileNotFoundError:
                pass
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with AtomicFile(path, self.tmp_dir) as f:
            f.write((value + "\n").encode("utf-8"))

    def _append_log(self, name: str, entry: ReflogEntry) -> None:
        path = self.logs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        append_line(path, entry.format())

    def _log_mark(self, name: str) -> int | None:
        try:
            return os.path.getsize(self.logs / name)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _log_rewind(self, name: str, mark: int | None) -> None:
        path = self.logs / name
        try:
            if mark is None:
                path.unlink(missing_ok=True)
            else:
                os.truncate(path, mark)
        except OSError:  # the change failed already; a line left here is what a kill would leave
            pass

    def reflog(self, name: str) -> list[ReflogEntry]:
        check_ref_name(name)
        try:
            with open(os.path.join(self._root_s, "logs", name), "rb") as f:
                lines = f.read().decode("utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(ReflogEntry.parse(line))
            except ValueError:
                continue  # fsck reports malformed lines
        return out

    def reflog_names(self) -> list[str]:
        if not self.logs.is_dir():
            return []
        out: list[str] = []
        for dirpath, _dirs, filenames in os.walk(self.logs):
            rel = Path(dirpath).relative_to(self.logs).as_posix()
            out.extend(f if rel == "." else f"{rel}/{f}" for f in filenames)
        return sorted(out)

    def names(self, prefix: str = "refs/") -> list[str]:
        # walk only the deepest folder the prefix names (refs/data/ alone may hold 50,000 refs)
        start = prefix[:prefix.rfind("/") + 1] if prefix.startswith("refs/") else "refs/"
        folder = self.root / start
        if not folder.is_dir():
            return []
        out = []
        for dirpath, _dirs, filenames in os.walk(folder):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for f in filenames:
                if not f.endswith(".lock"):
                    n = f"{rel}/{f}"
                    if n.startswith(prefix):
                        out.append(n)
        return sorted(out)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._tlock:
            with self._lock.held("exclusive", self._lock_timeout):
                yield


class MemoryRefsContainer(RefsContainer):
    def __init__(self) -> None:
        self._refs: dict[str, str] = {}
        self._logs: dict[str, list[ReflogEntry]] = {}
        self._lock = threading.RLock()

    def _read_raw(self, name: str) -> str | None:
        return self._refs.get(name)

    def _write_raw(self, name: str, value: str | None) -> None:
        if value is None:
            self._refs.pop(name, None)
        else:
            self._refs[name] = value

    def _append_log(self, name: str, entry: ReflogEntry) -> None:
        self._logs.setdefault(name, []).append(entry)

    def _log_mark(self, name: str) -> int | None:
        return len(self._logs[name]) if name in self._logs else None

    def _log_rewind(self, name: str, mark: int | None) -> None:
        if mark is None:
            self._logs.pop(name, None)
        else:
            del self._logs[name][mark:]

    def reflog(self, name: str) -> list[ReflogEntry]:
        return list(self._logs.get(name, []))

    def reflog_names(self) -> list[str]:
        return sorted(self._logs)

    def names(self, prefix: str = "refs/") -> list[str]:
        return sorted(n for n in self._refs if n.startswith(prefix) and n != "HEAD")

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield
