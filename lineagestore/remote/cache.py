"""What a remote is known to hold, cached under ``.lineage/cache/remotes/<remote id>/``, and
what ``lin verify`` found damaged on the backup remote (``.lineage/backup/damaged``).

The cache: append-only files of object ids, one per line: ``known`` (objects seen on the remote:
we uploaded them, downloaded them, or a check showed them), ``complete`` (ids whose whole closure
was on the remote when a push or fetch of them finished) and ``damaged`` (objects ``lin verify``
found missing or corrupt there: the next push checks everything it sends and sends these again).
The folder is named after the id in the remote's ``format`` marker, so a remote that was wiped and
started again gets a fresh cache. The cache never answers for the remote (objects disappear from
remotes behind its back): a push asks the remote about every object under a ref before it writes
the ref; ``known`` only sizes that question, ``damaged`` only adds to what is sent. Derived data:
deleting it loses nothing; ``lin verify --remote`` rewrites it from what it found.

The damage record is not a cache: while it exists, ``lin status`` counts no version as backed up
(its tracking refs say what the remote accepted, not that the objects are still there). The
push that sends the damaged objects again removes it, and so does a ``lin verify`` that finds the
backup remote whole.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from pathlib import Path

from ..core.fsutil import atomic_write_bytes
from ..core.ids import is_object_id
from ..core.repo import Repo

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
DAMAGE_FILE = "backup/damaged"


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

    def reset(self, known: set[str], complete: set[str], damaged: AbstractSet[str] = frozenset()) -> None:
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


# ------------------------------------------------------------------------------ the damage record


def read_damage(repo: Repo, remote: str | None = None) -> dict | None:
    """The damage ``lin verify`` found on the backup remote: {"remote", "time", "missing",
    "corrupt"} (lists of ids); None when there is none (for ``remote``, when given)."""
    if repo.path is None:
        return None
    try:
        d = json.loads((repo.path / DAMAGE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or (remote is not None and d.get("remote") != remote):
        return None
    for k in ("missing", "corrupt"):
        d[k] = [i for i in d.get(k) or [] if isinstance(i, str) and is_object_id(i)]
    return d


def record_damage(repo: Repo, remote: str, missing: Iterable[str], corrupt: Iterable[str]) -> None:
    assert repo.path is not None
    d = {"remote": remote, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "missing": sorted(set(missing)), "corrupt": sorted(set(corrupt))}
    (repo.path / "backup").mkdir(exist_ok=True)
    atomic_write_bytes(repo.path / DAMAGE_FILE, (json.dumps(d, indent=1) + "\n").encode(), repo.tmp_dir)


def clear_damage(repo: Repo, remote: str) -> None:
    """Remove the damage record if it is about ``remote``."""
    if repo.path is not None and read_damage(repo, remote) is not None:
        (repo.path / DAMAGE_FILE).unlink(missing_ok=True)
