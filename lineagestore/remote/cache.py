"""What a remote is known to hold, cached under ``.lineage/cache/remotes/<remote id>/``.

Append-only files of object ids, one per line: ``known`` (objects seen on the remote: we
uploaded them, downloaded them, or a listing showed them), ``complete`` (ids whose whole
closure is on the remote: a push or fetch of them finished) and ``damaged`` (objects ``lin verify
--full`` found corrupt on the remote: the next push sends them again). The folder is named after the id in
the remote's ``format`` marker, so a remote that was wiped and started again gets a fresh cache.
Derived data: deleting it costs a listing on the next push, nothing else; ``lin verify --remote``
rewrites it from what it found.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Iterable

from ..core.fsutil import atomic_write_bytes
from ..core.ids import is_object_id
from ..core.repo import Repo

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class KnownObjects:
    def __init__(self, repo: Repo, remote_id: str):
        self.dir: Path | None = None
        if repo.path is not None and _ID_RE.match(remote_id):
            self.dir = repo.cache_dir / "remotes" / remote_id
        self._tmp = repo.tmp_dir if repo.path is not None else None
        self.known: set[str] = self._load("known")
        self.complete: set[str] = self._load("complete")
        self.damaged: set[str] = self._load("damaged")
        self._new: dict[str, list[str]] = {"known": [], "complete": []}
        self._lock = threading.Lock()

    def _load(self, name: str) -> set[str]:
        if self.dir is None:
            return set()
        try:
            text = (self.dir / name).read_text()
        except (FileNotFoundError, NotADirectoryError):
            return set()
        except OSError:
            return set()
        return {line for line in text.split() if is_object_id(line)}

    def add(self, ids: Iterable[str]) -> None:
        with self._lock:
            for i in ids:
                if i not in self.known:
                    self.known.add(i)
                    self._new["known"].append(i)

    def add_complete(self, ids: Iterable[str]) -> None:
        with self._lock:
            for i in ids:
                if i not in self.complete:
                    self.complete.add(i)
                    self._new["complete"].append(i)

    def forget(self) -> None:
        """Drop everything (the remote may have lost objects); saved by :meth:`reset`."""
        self.known, self.complete = set(), set()

    def save(self) -> None:
        """Append what was learned (not fsynced: a cache)."""
        if self.dir is None:
            return
        with self._lock:
            pending = {k: v for k, v in self._new.items() if v}
            self._new = {"known": [], "complete": []}
        if not pending:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for name, ids in pending.items():
                with open(self.dir / name, "a") as f:
                    f.write("".join(i + "\n" for i in ids))
        except OSError:
            pass  # a cache that cannot be written costs time later, nothing else

    def reset(self, known: set[str], complete: set[str], damaged: set[str] = frozenset()) -> None:
        """Replace the cache with exactly these sets."""
        with self._lock:
            self.known, self.complete, self.damaged = set(known), set(complete), set(damaged)
            self._new = {"known": [], "complete": []}
        self._rewrite(("known", "complete", "damaged"))

    def repaired(self, ids: Iterable[str]) -> None:
        """These damaged objects were sent again."""
        ids = set(ids) & self.damaged
        if ids:
            self.damaged -= ids
            self._rewrite(("damaged",))

    def _rewrite(self, names: tuple[str, ...]) -> None:
        if self.dir is None or self._tmp is None:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for name in names:
                ids = getattr(self, name)
                atomic_write_bytes(self.dir / name, "".join(i + "\n" for i in sorted(ids)).encode(),
                                   self._tmp, durable=False)
        except OSError:
            pass
