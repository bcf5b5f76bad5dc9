"""The trash: what ``lin gc --confirm`` moved out of ``objects/``, kept for the grace period.

A batch is ``trash/<UTC stamp>-<pid>-<random>/`` with a ``manifest.json`` and the object files in
the ``objects/`` layout. A batch is deleted by renaming it to ``trash/.purge-<name>`` first, then
removing it, so it is gone or whole, never half; a leftover of a killed purge is finished by the
next ``gc --confirm``. :func:`restore_closure` brings objects back (``lin restore``).
"""

from __future__ import annotations

import calendar
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.codecs import DEFAULT_MAX_DEPTH, delta_base
from ..core.content import LoadStored, decode_stored
from ..core.errors import InvalidInput, ObjectNotFound
from ..core.fsutil import fsync_dir, kill_point
from ..core.ids import check_object_id, is_object_id
from ..core.objects import CODEC_DELTA, HEADER_SIZE, links_of, unpack_header
from ..core.repo import Repo
from .reachability import object_links

BATCH_RE = re.compile(r"^\d{8}T\d{6}Z-\d+-[0-9a-f]{6}$")  # <UTC stamp>-<pid>-<random>
PURGE_PREFIX = ".purge-"


@dataclass
class TrashBatch:
    name: str
    created: float
    objects: int
    bytes: int
    expired: bool  # older than the grace period: --empty-trash deletes it

    def to_dict(self) -> dict:
        return asdict(self)



def trash_dir(repo: Repo) -> Path:
    if repo.path is None:
        raise InvalidInput("this store has no trash/ folder (an in-memory store)")
    return repo.path / "trash"


def trash_batches(repo: Repo) -> list[Path]:
    d = trash_dir(repo)
    try:
        return sorted(p for p in d.iterdir() if BATCH_RE.match(p.name) and p.is_dir())
    except FileNotFoundError:
        return []


def _batch_created(batch: Path) -> float:
    try:
        return float(json.loads((batch / "manifest.json").read_text())["created"])
    except (OSError, ValueError, KeyError, TypeError):
        return float(calendar.timegm(time.strptime(batch.name.split("-", 1)[0], "%Y%m%dT%H%M%SZ")))


def _batch_files(batch: Path) -> Iterator[tuple[str, Path]]:
    try:
        dirs = sorted(os.listdir(batch))
    except FileNotFoundError:
        return
    for d in dirs:
        if len(d) != 2 or not (batch / d).is_dir():
            continue
        for n in sorted(os.listdir(batch / d)):
            if is_object_id(d + n):
                yield d + n, batch / d / n


def batch_info(batch: Path, now: float, grace: float) -> TrashBatch:
    created = _batch_created(batch)
    files = list(_batch_files(batch))
    total = 0
    for _, f in files:
        try:
            total += f.stat().st_size
        except FileNotFoundError:
            pass
    return TrashBatch(batch.name, created, len(files), total, now - created > grace)


def find_in_trash(repo: Repo, prefix: str) -> dict[str, Path]:
    """Object ids in trash starting with ``prefix`` -> a file holding each."""
    out: dict[str, Path] = {}
    for b in reversed(trash_batches(repo)):
        d = b / prefix[:2]
        try:
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for n in names:
            oid = prefix[:2] + n
            if is_object_id(oid) and oid.startswith(prefix):
                out.setdefault(oid, d / n)
    return out


def read_trash_object(path: Path, oid: str, load_base: LoadStored | None = None,
                      max_depth: int = DEFAULT_MAX_DEPTH) -> tuple[str, bytes, bytes]:
    """(type, decoded content, stored bytes) of an object file in trash, verified against ``oid``
    (a delta against its base, read with ``load_base``: see :func:`stored_anywhere`)."""
    raw = path.read_bytes()
    h, data = decode_stored(oid, raw, f"object {oid} in {path.parent.parent.name}", load_base, max_depth)
    return h.type, data, raw


def stored_anywhere(repo: Repo, oid: str) -> bytes:
    """The stored form of ``oid`` from the store, else from trash (a delta's base may be in
    either); ObjectNotFound if neither has it."""
    if repo.objects.has(oid):
        return repo.objects.get_stored(oid)
    found = find_in_trash(repo, oid).get(oid)
    if found is None:
        raise ObjectNotFound(f"object {oid} is neither in the store nor in trash/")
    return found.read_bytes()


def make_writable(path: Path) -> None:
    try:
        os.chmod(path, 0o755)
    except FileNotFoundError:
        pass


def _rmtree(path: Path) -> None:
    def onerror(func, p, _exc):
        make_writable(Path(p).parent)
        func(p)
    if path.exists():
        for dirpath, dirnames, _ in os.walk(path):
            for d in dirnames:
                make_writable(Path(dirpath) / d)
        shutil.rmtree(path, onerror=onerror)

def purge_batch(batch: Path) -> None:
    """Delete a trash batch: rename it out of sight first, so it is gone or whole, never half."""
    gone = batch.with_name(PURGE_PREFIX + batch.name)
    os.rename(batch, gone)
    fsync_dir(batch.parent)
    kill_point("gc-purge")
    _rmtree(gone)


def finish_purges(trash: Path) -> None:
    try:
        leftovers = [p for p in trash.iterdir() if p.name.startswith(PURGE_PREFIX)]
    except FileNotFoundError:
        return
    for p in leftovers:
        _rmtree(p)


def stale_purges(repo: Repo) -> list[Path]:
    try:
        return sorted(p for p in trash_dir(repo).iterdir() if p.name.startswith(PURGE_PREFIX))
    except FileNotFoundError:
        return []


# ----------------------------------------------------------------------------- restoring


@dataclass
class RestoredObjects:
    objects: int = 0
    bytes: int = 0
    batches: list[str] = field(default_factory=list)


def restore_closure(repo: Repo, oid: str) -> RestoredObjects:
    """Bring ``oid`` and everything it links to back from trash into the store.

    Objects come back children first (the store never holds an object whose links are absent),
    verified, written atomically and read-only, with a fresh mtime (a new grace period). Raises
    ObjectNotFound naming the first object that is neither in the store nor in trash.
    Call under ``repo.writing()``.
    """
    out = RestoredObjects()
    store = repo.objects
    done: set[str] = set()
    # iterative post-order: (id, expanded?)
    stack: list[tuple[str, bool]] = [(check_object_id(oid), False)]
    pending: dict[str, tuple[Path, bytes]] = {}
    while stack:
        cur, expanded = stack.pop()
        if cur in done:
            continue
        if expanded:
            if cur in pending:
                path, raw = pending.pop(cur)
                store.put_stored(cur, raw)
                path.unlink(missing_ok=True)
                out.objects += 1
                out.bytes += len(raw)
                batch = path.parent.parent.name
                if batch not in out.batches:
                    out.batches.append(batch)
            done.add(cur)
            continue
        if store.has(cur):
            t = store.header(cur).type
            children = object_links(store, cur, t)
            store._touch(cur)
        else:
            found = find_in_trash(repo, cur).get(cur)
            if found is None:
                raise ObjectNotFound(f"object {cur} is neither in the store nor in trash/; it cannot be restored",
                                     hint="fetch it from a backup remote if one has it")
            t, data, raw = read_trash_object(found, cur, lambda b: stored_anywhere(repo, b),
                                             store.delta_max_depth)
            children = links_of(t, data, f"object {cur}")
            if unpack_header(raw[:HEADER_SIZE]).codec == CODEC_DELTA:  # its base goes back first, as a link
                children = [*children, delta_base(memoryview(raw)[HEADER_SIZE:])]
            pending[cur] = (found, raw)
        stack.append((cur, True))
        stack.extend((c, False) for c in children if c not in done)
    return out
