"""Moving objects: the closure of what a ref names here, and fetching a closure from a remote."""

from __future__ import annotations

from typing import Callable, Iterator

from ..core.content import decode_stored
from ..core.errors import CorruptObject, ObjectNotFound
from ..core.objects import HEADER_SIZE, LINKING_TYPES, links_of, unpack_header
from ..core.progress import Progress
from ..core.repo import Repo
from .cache import KnownObjects
from .session import RemoteSession, object_key, unordered_map


def local_closure(repo: Repo, roots: dict[str, str], stop: set[str]) -> tuple[list[str], list[str]]:
    """Every object under ``roots`` (id -> where it was named), not descending into ``stop``.

    Returns (ids, ids of commits/checkpoints/datasets among them)."""
    store = repo.objects
    seen: set[str] = set()
    order: list[str] = []
    tops: list[str] = []
    stack = [(r, w) for r, w in roots.items()]
    while stack:
        oid, where = stack.pop()
        if oid in seen or oid in stop:
            continue
        seen.add(oid)
        try:
            h = store.header(oid)
        except ObjectNotFound:
            raise ObjectNotFound(f"object {oid} (reached from {where}) is missing from this store; "
                                 "cannot push it", hint="run `lin fsck`; `lin fsck --repair` can fetch it "
                                                        "from another remote") from None
        order.append(oid)
        if h.type in LINKING_TYPES:
            if h.type in ("commit", "checkpoint", "dataset"):
                tops.append(oid)
            for child in store.get(oid).links():
                if child not in seen and child not in stop:
                    stack.append((child, where))
    return order, tops


def download_closure(repo: Repo, rs: RemoteSession, roots: dict[str, str], known: KnownObjects,
                     progress: Progress, *, on_missing: Callable[[str, str, str], None] | None = None
                     ) -> tuple[int, int, set[str]]:
    """Fetch every object under ``roots`` (id -> where named) that this store lacks.

    Leaves are verified and stored as they arrive; objects that name others are verified,
    held, and stored after everything they name (children first), so a store never holds an
    object whose closure is incomplete because of an interrupted fetch. With ``on_missing``,
    objects absent or corrupt on the remote are reported (id, where, why) instead of raised.
    Returns (objects, bytes received, ids that failed).
    """
    store = repo.objects
    held: dict[str, tuple[bytes, list[str]]] = {}
    failed: set[str] = set()
    seen: set[str] = set(roots)
    frontier = [(oid, where) for oid, where in roots.items() if not store.has(oid)]
    count = nbytes = 0
    started = False

    def get(item: tuple[str, str]):
        oid, where = item
        got = rs.backend.read(object_key(oid))
        if got is None:
            return oid, where, None, None, "missing"
        raw = got[0]
        progress.advance(len(raw))
        what = f"object {oid} from remote {rs.name}"
        try:
            h = unpack_header(raw[:HEADER_SIZE], what)
            if h.type in LINKING_TYPES:
                _, data = decode_stored(oid, raw, what)
                return oid, where, raw, links_of(h.type, data, what), None
            store.put_stored(oid, raw)  # verifies the hash before storing
        except CorruptObject as e:
            return oid, where, None, None, f"corrupt: {e}"
        return oid, where, raw, None, None

    while frontier:
        if not started:
            progress.start(f"fetching from {rs.name}", None, "B")
            started = True
        nxt: list[tuple[str, str]] = []
        for oid, where, raw, links, err in unordered_map(get, frontier, rs.workers):
            if err is not None:
                if on_missing is None:
                    if err == "missing":
                        raise ObjectNotFound(
                            f"object {oid} (reached from {where}) is missing on remote {rs.name} ({rs.url})",
                            hint=f"the remote is incomplete: see `lin verify --remote {rs.name}`; push again "
                                 "from a store that has it")
                    raise CorruptObject(f"{err[len('corrupt: '):]} (reached from {where})",
                                        hint=f"see `lin verify --remote {rs.name} --full`")
                on_missing(oid, where, err)
                failed.add(oid)
                continue
            count += 1
            nbytes += len(raw)
            known.add((oid,))
            if links is not None:
                held[oid] = (raw, links)
                for child in links:
                    if child not in seen:
                        seen.add(child)
                        if not store.has(child):
                            nxt.append((child, where))
        frontier = nxt
    if started:
        progress.finish()
    for oid in _children_first(held):
        if any(c in failed for c in held[oid][1]):
            failed.add(oid)  # never store an object whose closure could not be completed
            continue
        store.put_stored(oid, held[oid][0])
    return count, nbytes, failed


def _children_first(held: dict[str, tuple[bytes, list[str]]]) -> list[str]:
    out: list[str] = []
    done: set[str] = set()
    for root in held:
        if root in done:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(held[root][1]))]
        done.add(root)
        while stack:
            node, children = stack[-1]
            for c in children:
                if c in held and c not in done:
                    done.add(c)
                    stack.append((c, iter(held[c][1])))
                    break
            else:
                stack.pop()
                out.append(node)
    return out
