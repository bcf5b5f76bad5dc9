"""Reachability: the roots of a store, the object graph, and reading the reflogs.

Roots (what is never collected): every ref (versions, branches, training runs in progress under
``refs/runs/``, registered data, remote-tracking refs), HEAD, and the old and new value of every
reflog entry younger than the reflog expiry. The graph is what each object links to: the type
comes from the object's 16-byte header, and only objects of
:data:`~lineagestore.core.objects.LINKING_TYPES` (metadata) are decoded; a blob's payload is
never read to mark it.

gc (what to collect), fsck (what must be present), protect (which entry removed a name) and the
trash (what to restore with an object) read these; nothing here imports them. Reads only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from ..core.errors import LinError, ObjectNotFound
from ..core.ids import check_object_id, is_object_id
from ..core.objects import LINKING_TYPES
from ..core.refs import ZERO, ReflogEntry, check_ref_name
from ..core.repo import Repo


# ----------------------------------------------------------------------------- refs and reflogs


@dataclass
class RefValues:
    """What every ref and HEAD holds, and the refs that could not be read (gc then refuses)."""

    values: dict[str, str]
    bad: list[str]


def ref_values(repo: Repo) -> RefValues:
    values: dict[str, str] = {}
    bad: list[str] = []
    for name in repo.refs.names("refs/"):
        try:
            v = repo.refs.resolve(name)
        except LinError as e:
            bad.append(f"{name}: {e}")
            continue
        if v is None or not is_object_id(v):
            bad.append(f"{name}: does not hold an object id ({v!r})")
        else:
            values[name] = v
    try:
        head = repo.refs.resolve("HEAD")
    except LinError as e:
        bad.append(f"HEAD: {e}")
        head = None
    if head is not None:
        if is_object_id(head):
            values["HEAD"] = head
        else:
            bad.append(f"HEAD: does not hold an object id ({head!r})")
    return RefValues(values, bad)


def reflogs(repo: Repo) -> dict[str, list]:
    """Every readable reflog: ref name -> entries (``reflog_problems`` names the others)."""
    out: dict[str, list] = {}
    for name in repo.refs.reflog_names():
        try:
            out[name] = repo.refs.reflog(name)
        except LinError:
            continue
    return out


def reflog_problems(repo: Repo) -> list[tuple[str, str]]:
    """(subject, message) for each reflog file with an invalid name or a line that does not
    parse (the reflog reader skips such lines, so gc cannot know what they named)."""
    if repo.path is None:
        return []
    logs = repo.path / "logs"
    out: list[tuple[str, str]] = []
    for name in repo.refs.reflog_names():
        try:
            check_ref_name(name)
            with open(os.path.join(logs, name), "rb") as f:
                lines = f.read().decode("utf-8").splitlines()
        except (LinError, OSError, UnicodeDecodeError) as e:
            out.append((f"logs/{name}", f"logs/{name}: not a readable reflog of a valid ref ({e})"))
            continue
        for i, line in enumerate(lines, 1):
            if not _reflog_line_ok(line):
                out.append((f"logs/{name}:{i}", f"logs/{name} line {i} is malformed: {line[:80]!r}"))
    return out


def _reflog_line_ok(line: str) -> bool:
    head, tab, _msg = line.partition("\t")
    parts = head.split(" ")
    if not tab or len(parts) < 5:
        return False
    old, new, ts, tz = parts[0], parts[1], parts[-2], parts[-1]
    if not all(x == ZERO or is_object_id(x) for x in (old, new)):
        return False
    try:
        float(ts)
    except ValueError:
        return False
    return tz.startswith(("+", "-"))


def is_removal(entry: ReflogEntry) -> bool:
    """Whether a reflog entry removed its ref (it had a value and has none after)."""
    return entry.old is not None and entry.new is None


def last_removal(entries: list[ReflogEntry]) -> ReflogEntry | None:
    """The latest entry of one ref's reflog that removed the ref (None if it was never removed)."""
    for e in reversed(entries):
        if is_removal(e):
            return e
    return None


def live_reflog_ids(logs: dict[str, list], *, now: float, expire_s: float) -> Iterator[tuple[str, str]]:
    """(id, ref) for the old and new value of every reflog entry younger than ``expire_s``, in
    reflog order (an id may come more than once)."""
    for name, entries in logs.items():
        for e in entries:
            if now - e.time > expire_s:
                continue
            for x in (e.old, e.new):
                if x and is_object_id(x):
                    yield x, name


# ----------------------------------------------------------------------------- roots


def roots(repo: Repo, *, now: float | None = None, reflog_expire_s: float | None = None,
          refs: RefValues | None = None, logs: dict[str, list] | None = None) -> dict[str, str]:
    """Ids that are roots -> where each is named: a ref (training runs in progress included),
    HEAD, or a reflog entry younger than ``reflog_expire_s`` (``gc.reflog_expire_days``) ("reflog
    of REF")."""
    now = time.time() if now is None else now
    expire = repo.settings.gc.reflog_expire_s if reflog_expire_s is None else reflog_expire_s
    out: dict[str, str] = {}
    for name, oid in (refs or ref_values(repo)).values.items():
        out.setdefault(oid, name)
    live = live_reflog_ids(reflogs(repo) if logs is None else logs, now=now, expire_s=expire)
    for oid, name in live:
        out.setdefault(oid, f"reflog of {name}")
    return out


def last_named(logs: dict[str, list]) -> dict[str, tuple[float, str]]:
    """id -> (time, why) of the latest reflog entry naming it (expired entries included); ``why``
    prefers the removal of a name that pointed at it ("refs/tags/v003_x: rm: v003_x")."""
    latest: dict[str, tuple[float, str]] = {}
    removed: dict[str, str] = {}
    for name, entries in logs.items():
        for e in entries:
            for x in (e.old, e.new):
                if x and (x not in latest or latest[x][0] < e.time):
                    latest[x] = (e.time, f"{name}: {e.message}")
            if is_removal(e) and name.startswith("refs/"):
                removed[e.old] = f"{name} was removed ({e.message})"
    return {x: (t, removed.get(x, why)) for x, (t, why) in latest.items()}


# ----------------------------------------------------------------------------- the graph


def object_links(store, oid: str, type_name: str) -> list[str]:
    """What ``oid`` links to, given its type (from its header): only objects of a linking type
    (metadata) are decoded; any other object links to nothing and its payload is not read."""
    return list(store.get(oid).links()) if type_name in LINKING_TYPES else []


class Graph:
    """Types and links of objects, loaded lazily: headers for all, payloads of linking types only."""

    def __init__(self, store):
        self.store = store
        self.type: dict[str, str] = {}
        self.links: dict[str, list[str]] = {}
        self.missing: set[str] = set()
        self.broken: dict[str, str] = {}  # linking objects that could not be decoded

    def load(self, oid: str) -> str | None:
        """The type of ``oid`` (None when missing); decodes its links if it has any."""
        if oid in self.type:
            return self.type[oid]
        if oid in self.missing:
            return None
        try:
            t = self.store.header(oid).type
        except ObjectNotFound:
            self.missing.add(oid)
            return None
        except LinError as e:
            self.type[oid] = "?"
            self.broken[oid] = str(e)
            return "?"
        self.type[oid] = t
        if t in LINKING_TYPES:
            try:
                self.links[oid] = [check_object_id(x) for x in object_links(self.store, oid, t)]
            except LinError as e:
                self.broken[oid] = str(e)
                self.links[oid] = []
        return t

    def walk(self, start: Iterable[str], stop: set[str] | None = None) -> set[str]:
        """Every object reachable from ``start`` (present or missing), not entering ``stop``."""
        seen: set[str] = set()
        stack = [s for s in start if not stop or s not in stop]
        while stack:
            oid = stack.pop()
            if oid in seen:
                continue
            seen.add(oid)
            if self.load(oid) is None:
                continue
            for child in self.links.get(oid, ()):
                if child not in seen and (not stop or child not in stop):
                    stack.append(child)
        return seen


def reached_from(start: dict[str, str], links: Callable[[str], Iterable[str]],
                 reached: dict[str, str] | None = None) -> dict[str, str]:
    """Extend ``reached`` (id -> the root it was reached from) with everything ``start`` (id ->
    root) reaches, following ``links(id)``; what is already in ``reached`` is not entered again."""
    out = dict(reached or {})
    stack = [(oid, where) for oid, where in start.items()]
    while stack:
        oid, where = stack.pop()
        if oid in out:
            continue
        out[oid] = where
        stack.extend((child, where) for child in links(oid) if child not in out)
    return out
