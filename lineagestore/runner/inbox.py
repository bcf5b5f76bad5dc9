"""``lin run --inbox DIR``: data files dropped into a folder, taken once they are complete.

A file is complete when its size and modification time have not changed for ``run.inbox_settle_s``
(config) while the runner watched it, or, for a file renamed into the folder whole (its mtime
already older than that), on the second look that finds it unchanged. Names starting with ``.``
and names that are not ``*.jsonl``, ``*.jsonl.gz`` or ``*.jsonl.zst`` are never taken, so
``cp data.jsonl inbox/.data.jsonl.part && mv inbox/.data.jsonl.part inbox/data.jsonl`` is the
atomic way to drop a file; a plain ``cp data.jsonl inbox/`` works too, after the settle time.

The folder is polled (every ``run.inbox_poll_s``): the settle rule needs a clock, not events,
and polling works the same on local disks and network filesystems, where inotify-based
watchers see nothing written by another machine. One ``scandir`` per look costs microseconds
per file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from ..core.errors import NotFound

SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")


class Inbox:
    """Which files of ``folder`` are complete and not taken yet."""

    def __init__(self, folder: Path, settle_s: float, *, clock: Callable[[], float] = time.monotonic):
        if not folder.is_dir():
            raise NotFound(f"inbox folder {folder} does not exist", hint=f"create it: mkdir -p {folder}")
        self.folder = folder
        self.settle_s = settle_s
        self.clock = clock
        self._seen: dict[str, tuple[int, int, float, int]] = {}  # name -> size, mtime_ns, since, looks
        self._taken: set[tuple[str, int, int]] = set()

    def ready(self) -> list[Path]:
        """Complete files not taken yet, sorted by name."""
        now, wall = self.clock(), time.time()
        out = []
        names = set()
        for entry in sorted(os.scandir(self.folder), key=lambda e: e.name):
            name = entry.name
            if name.startswith(".") or not name.lower().endswith(SUFFIXES):
                continue
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
            except OSError:  # removed meanwhile
                continue
            names.add(name)
            key = (st.st_size, st.st_mtime_ns)
            prev = self._seen.get(name)
            if prev is None or prev[:2] != key:
                self._seen[name] = (*key, now, 1)
                if self.settle_s > 0:
                    continue
                prev = self._seen[name]
            since, looks = prev[2], prev[3] + 1
            self._seen[name] = (*key, since, looks)
            if (name, *key) in self._taken:
                continue
            if now - since >= self.settle_s or wall - st.st_mtime_ns / 1e9 >= self.settle_s:
                out.append(Path(entry.path))
        for gone in set(self._seen) - names:
            del self._seen[gone]
        return out

    def taken(self, path: Path) -> None:
        """Do not offer ``path`` again unless it changes."""
        try:
            st = path.stat()
        except OSError:
            return
        self._taken.add((path.name, st.st_size, st.st_mtime_ns))
