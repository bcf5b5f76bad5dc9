"""Reachability: the roots of a store, the object graph, and reading the reflogs.

Roots (what is never collected): every ref (versions, branches, training runs in progress under
``refs/runs/``, registered data, remote-tracking refs), HEAD, and the old and new value of every
reflog entry younger than the reflog expiry, except in the reflog of a training run
(``refs/runs/RUN`` and its remote-tracking twins): there only the last ``train.keep_checkpoints``
checkpoints of a run in progress, and the last checkpoint of an ended run (committed or
abandoned) until its removal entry expires, are roots (:func:`run_retention`). Of a queue's reflog
(``refs/queues/BRANCH`` and its twins) no entry is a root: the queue's current document links
everything it needs, including its whole log. A checkpoint does
not link its parent, so the rest become collectable after the grace period. The graph is what
each object links to: the type comes from the object's 16-byte header, and only objects of
:data:`~lineagestore.core.objects.LINKING_TYPES` (metadata) are decoded; a blob's payload is
never read to mark it. :func:`holders` says which names keep what alive.

gc (what to collect), fsck (what must be present), protect (which entry removed a name) and the
trash (what to restore with an object) read these; nothing here imports them. Reads only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..core.errors import CheckFailed, LinError, ObjectNotFound
from ..core.ids import check_object_id, is_object_id
from ..core.objects import LINKING_TYPES
from ..core.refs import ZERO, ReflogEntry, check_ref_name
from ..core.repo import Repo
from ..core.store import ObjectStore
from .dropped import read_dropped

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


def live_reflog_ids(logs: dict[str, list], *, now: float, expire_s: float,
                    keep_checkpoints: int) -> Iterator[tuple[str, str]]:
    """(id, ref) for the old and new value of every reflog entry younger than ``expire_s``, in
    reflog order (an id may come more than once); of a run's reflog, only what
    :func:`run_retention` keeps."""
    for name, entries in logs.items():
        if is_queue_ref(name):
            continue  # a queue's current document (the ref) links its whole log; older ones go
        if is_run_ref(name):
            kept = run_retention(name, entries, now=now, expire_s=expire_s, keep=keep_checkpoints).kept
            yield from ((x, name) for x in kept if is_object_id(x))
            continue
        for e in entries:
            if now - e.time > expire_s:
                continue
            for x in (e.old, e.new):
                if x and is_object_id(x):
                    yield x, name


# ----------------------------------------------------------------------------- training runs


def is_run_ref(name: str) -> bool:
    """``refs/runs/RUN``, or its remote-tracking twin ``refs/remotes/REMOTE/runs/RUN``."""
    parts = name.split("/")
    return name.startswith("refs/runs/") or (len(parts) > 4 and parts[:2] == ["refs", "remotes"]
                                             and parts[3] == "runs")


def is_queue_ref(name: str) -> bool:
    """``refs/queues/BRANCH``, or its remote-tracking twin ``refs/remotes/REMOTE/queues/BRANCH``."""
    parts = name.split("/")
    return name.startswith("refs/queues/") or (len(parts) > 4 and parts[:2] == ["refs", "remotes"]
                                               and parts[3] == "queues")


@dataclass
class RunRetention:
    """What one run ref's reflog keeps (id -> ``reflog of REF``), and since when (unix time) and
    why each checkpoint it named and no longer keeps stopped being kept."""

    kept: dict[str, str]
    released: dict[str, tuple[float, str]]


def run_retention(name: str, entries: list[ReflogEntry], *, now: float, expire_s: float,
                  keep: int) -> RunRetention:
    """Which checkpoints the reflog of run ref ``name`` keeps.

    The reflog is cut into lives (from the entry that creates the ref to the one that removes it;
    a run name may be used again). A live run keeps its last ``keep`` checkpoints whatever their
    age (a paused run must stay resumable); an ended run keeps its last checkpoint, the removal
    entry's old value, while that entry is younger than ``expire_s``. Every other checkpoint is
    released: when ``keep`` newer ones had been written, or when its run ended.
    """
    out = RunRetention({}, {})
    mine = f"reflog of {name}"

    def release(oid: str, t: float, why: str) -> None:
        if oid not in out.released or out.released[oid][0] < t:
            out.released[oid] = (t, why)

    for life, end in _lives(entries):
        for i, (_, oid) in enumerate(life):
            if i + keep < len(life):
                release(oid, life[i + keep][0], f"{name}: not among the last {keep} checkpoints of the run")
            elif end is None:
                out.kept[oid] = mine
            elif oid != end.old:
                release(oid, end.time, f"{name} ended ({end.message}): only its last checkpoint is kept")
        if end is not None and end.old and now - end.time <= expire_s:
            out.kept[end.old] = mine
    for oid in out.kept:
        out.released.pop(oid, None)
    return out


def _lives(entries: list[ReflogEntry]) -> Iterator[tuple[list[tuple[float, str]], ReflogEntry | None]]:
    """(the (time, value) the ref took, the entry that removed it or None) for each span from
    creation to removal; a creation while a value is set ends the span before it."""
    life: list[tuple[float, str]] = []
    for e in entries:
        if e.new is None:
            if e.old is not None or life:
                yield life, e
            life = []
            continue
        if e.old is None and life:
            yield life, ReflogEntry(life[-1][1], None, e.who, e.time, e.message)
            life = []
        life.append((e.time, e.new))
    if life:
        yield life, None


def run_releases(logs: dict[str, list], *, keep_checkpoints: int) -> dict[str, tuple[float, str]]:
    """id -> (when, why) each checkpoint a run reflog named stopped being kept (gc counts an
    unreachable checkpoint's grace period from then; expiry does not change these times)."""
    out: dict[str, tuple[float, str]] = {}
    for name, entries in logs.items():
        if not is_run_ref(name):
            continue
        ret = run_retention(name, entries, now=0.0, expire_s=float("inf"), keep=keep_checkpoints)
        for oid, (t, why) in ret.released.items():
            if oid not in out or out[oid][0] < t:
                out[oid] = (t, why)
    return out


# ----------------------------------------------------------------------------- roots


def roots(repo: Repo, *, now: float | None = None, reflog_expire_s: float | None = None,
          refs: RefValues | None = None, logs: dict[str, list] | None = None) -> dict[str, str]:
    """Ids that are roots -> where each is named first: a ref (training runs in progress
    included), HEAD, or a reflog entry younger than ``reflog_expire_s``
    (``gc.reflog_expire_days``) ("reflog of REF"; of a run's reflog, what :func:`run_retention`
    keeps)."""
    srcs = root_sources(repo, now=now, reflog_expire_s=reflog_expire_s, refs=refs, logs=logs)
    return {oid: where[0] for oid, where in srcs.items()}


def root_sources(repo: Repo, *, now: float | None = None, reflog_expire_s: float | None = None,
                 refs: RefValues | None = None, logs: dict[str, list] | None = None) -> dict[str, list[str]]:
    """Like :func:`roots`, with every place that names each root, refs first."""
    now = time.time() if now is None else now
    expire = repo.settings.gc.reflog_expire_s if reflog_expire_s is None else reflog_expire_s
    out: dict[str, list[str]] = {}
    for name, oid in (refs or ref_values(repo)).values.items():
        out.setdefault(oid, []).append(name)
    live = live_reflog_ids(reflogs(repo) if logs is None else logs, now=now, expire_s=expire,
                           keep_checkpoints=repo.settings.train.keep_checkpoints)
    for oid, name in live:
        where = out.setdefault(oid, [])
        if f"reflog of {name}" not in where:
            where.append(f"reflog of {name}")
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


def object_links(store: ObjectStore, oid: str, type_name: str) -> list[str]:
    """What ``oid`` links to, given its type (from its header): only objects of a linking type
    (metadata) are decoded; any other object links to nothing and its payload is not read."""
    return list(store.get(oid).links()) if type_name in LINKING_TYPES else []


class Graph:
    """Types and links of objects, loaded lazily: headers for all, payloads of linking types only."""

    def __init__(self, store: ObjectStore) -> None:
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


def reach_problems(repo: Repo, g: Graph, reachable: set[str], sources: dict[str, list[str]],
                   refs: RefValues) -> list[str]:
    """What makes a walk from the roots incomplete, so that nothing may be deleted or moved on
    its word: an unreadable ref or reflog, a reachable object missing (weights dropped on purpose
    are on the remote, not missing) or unreadable."""
    out = [f"unreadable ref {b}" for b in refs.bad]
    out += [f"unreadable reflog: {msg}" for _, msg in reflog_problems(repo)]
    for oid in sorted(reachable & g.missing - set(read_dropped(repo))):
        where = sources[oid][0] if oid in sources else "a reachable object"
        out.append(f"object {oid} (named by {where}) is missing")
    out += [f"reachable object {oid} cannot be read ({err}); what it links to is unknown"
            for oid, err in sorted(g.broken.items()) if oid in reachable]
    return out


def refuse_on(problems: list[str], refusal: str) -> None:
    """Raise CheckFailed, "``refusal``: the first problem (and N more)", when the walk behind a
    change that deletes or moves objects was incomplete (:func:`reach_problems`)."""
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise CheckFailed(f"{refusal}: {problems[0]}{more}",
                          hint="run `lin fsck` to see every problem; restore missing objects from a backup "
                               "remote (`lin fsck --repair`) or trash/ (`lin restore ID`) first")


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


# ----------------------------------------------------------------------------- what keeps what


@dataclass
class Holder:
    """A name and the roots it holds (a ref, its reflog, its remote-tracking twins), with the
    objects only it keeps alive: what removing them would free, once the grace period is over."""

    name: str  # "run RUN", "version vNNN_x", "branch main", "data FILE", "HEAD", or the ref
    kind: str  # run | version | branch | data | head | other
    via: list[str]  # the roots: "refs/runs/r", "reflog of refs/runs/r", ...
    objects: int = 0
    bytes: int = 0


def holder_of(root: str) -> tuple[str, str]:
    """(name, kind) of the holder of a root as :func:`root_sources` names it."""
    ref = root.removeprefix("reflog of ")
    if ref == "HEAD":
        return "HEAD", "head"
    parts = ref.split("/")
    if len(parts) > 4 and parts[:2] == ["refs", "remotes"]:  # a remote-tracking ref: as the local one
        parts = ["refs", *parts[3:]]
    ns, rest = (parts[1], "/".join(parts[2:])) if len(parts) > 2 and parts[0] == "refs" else ("", ref)
    kind = {"runs": "run", "tags": "version", "heads": "branch", "data": "data"}.get(ns, "other")
    return (f"{kind} {rest}" if kind != "other" else ref), kind


def holders(g: Graph, sources: dict[str, list[str]], size: Callable[[str], int]) -> tuple[list[Holder], int, int]:
    """Who keeps what: each holder with the objects only it reaches (largest first), and the
    number and bytes of the objects that several holders reach.

    Every object is owned by the first holder that reaches it, or marked shared when another one
    does too (and so is everything below it): each object changes state at most twice.
    """
    found: dict[str, Holder] = {}
    starts: dict[str, list[str]] = {}
    for oid, where in sources.items():
        for root in where:
            name, kind = holder_of(root)
            h = found.setdefault(name, Holder(name, kind, []))
            if root not in h.via:
                h.via.append(root)
            starts.setdefault(name, []).append(oid)
    shared = ""  # the owner of what several holders reach
    owner: dict[str, str] = {}
    for name, start in starts.items():
        stack = [(oid, False) for oid in start]
        while stack:
            oid, below_shared = stack.pop()
            cur = owner.get(oid)
            if cur == shared or (cur == name and not below_shared):
                continue
            owner[oid] = name if cur is None and not below_shared else shared
            if g.load(oid) is not None:
                stack.extend((c, owner[oid] == shared) for c in g.links.get(oid, ()))
    n_shared = b_shared = 0
    for oid, who in owner.items():
        if oid in g.missing:
            continue
        n = size(oid)
        if who == shared:
            n_shared += 1
            b_shared += n
        else:
            found[who].objects += 1
            found[who].bytes += n
    out = sorted((h for h in found.values() if h.objects), key=lambda h: (-h.bytes, h.name))
    return out, n_shared, b_shared
