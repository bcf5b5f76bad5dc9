"""Moving objects: the closure of what a ref names here, and fetching a closure from a remote."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import NoReturn

from ..core.content import decode_stored
from ..core.errors import CorruptObject, InvalidInput, InvalidName, ObjectNotFound
from ..core.ids import check_object_id
from ..core.names import check_tree_entries, check_version_name
from ..core.objects import HEADER_SIZE, LINKING_TYPES, decode_object, unpack_header
from ..core.packs import delta_base_of
from ..core.progress import Progress
from ..core.repo import Repo
from ..core.store import ObjectStore
from .cache import KnownObjects
from .session import RemoteSession, object_key, unordered_map, untrusted_hint


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
            if store.absent is not None and store.absent.held_by(oid) is not None:
                order.append(oid)  # weights dropped here (a blob: it names nothing); a remote
                continue  # that lacks it gets it fetched back from the one that holds it
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
                     progress: Progress, *, on_missing: Callable[[str, str, str], None] | None = None,
                     into: ObjectStore | None = None) -> tuple[int, int, set[str]]:
    """Fetch every object under ``roots`` (id -> where named) that this store lacks.

    Each object is verified as it arrives (its hash, and for objects that name others the rules
    for what comes from outside: :func:`check_untrusted`) and written to ``into``, a batch of
    this store whose objects become visible only when it is flushed: leaves as they arrive,
    objects that name others after everything they name (children first). Without ``into`` a
    batch is made here, flushed at the end and discarded on an error, so a failed fetch places
    nothing. With ``on_missing``, objects absent, corrupt or refused on the remote are reported
    (id, where, why) instead of raised, and what does not depend on them is placed.
    Returns (objects, bytes received, ids that failed).
    """
    store = into if into is not None else repo.objects.batch()
    try:
        count, nbytes, failed = _receive(store, rs, roots, known, progress, on_missing)
        if into is None:
            store.flush()
    except BaseException:
        if into is None:
            store.discard()
        raise
    return count, nbytes, failed


def check_untrusted(type_name: str, obj, what: str) -> None:
    """Refuse an object from outside that lin would never write (InvalidName naming ``what``):
    a tree whose entry names break core.names' rules, a commit whose name is no version name."""
    if type_name == "tree":
        check_tree_entries([e.name for e in obj.items()], what)
    elif type_name == "commit":
        try:
            check_version_name(obj.name)
        except InvalidName as e:
            raise InvalidName(f"{what}: {e}") from None


def _receive(store: ObjectStore, rs: RemoteSession, roots: dict[str, str], known: KnownObjects,
             progress: Progress, on_missing: Callable[[str, str, str], None] | None) -> tuple[int, int, set[str]]:
    """download_closure's walk, level by level, into ``store``."""
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
        what = f"object {oid}"
        try:
            h = unpack_header(raw[:HEADER_SIZE], what)
            if h.type in LINKING_TYPES:
                _, data = decode_stored(oid, raw, what)
                obj = decode_object(h.type, data, what)
                check_untrusted(h.type, obj, f"{h.type} {oid} on remote {rs.name} (reached from {where})")
                return oid, where, raw, [check_object_id(x) for x in obj.links()], None
            _put_with_bases(store, rs, oid, raw, progress)  # verifies the hash before storing
        except CorruptObject as e:
            return oid, where, None, None, f"corrupt: {e}"
        except InvalidInput as e:
            return oid, where, None, None, f"refused: {e}"
        except (TypeError, ValueError, AttributeError, KeyError) as e:  # entries that are no entries
            return oid, where, None, None, f"corrupt: {what}: malformed ({type(e).__name__}: {e})"
        return oid, where, raw, None, None

    while frontier:
        if not started:
            progress.start(f"fetching from {rs.name}", None, "B")
            started = True
        nxt: list[tuple[str, str]] = []
        for oid, where, raw, links, err in unordered_map(get, frontier, rs.workers):
            if err is not None:
                if on_missing is None:
                    _raise(rs, oid, where, err)
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


def _put_with_bases(store: ObjectStore, rs: RemoteSession, oid: str, raw: bytes, progress: Progress,
                    depth: int = 0) -> None:
    """``store.put_stored``, first bringing from the remote the delta base (and its own bases) a
    delta object needs when this store lacks it, so it can be verified by decoding it and is
    never stored without its base. Only blobs are taken as deltas or bases."""
    base = delta_base_of(raw)
    if base is not None and not store.has(base):
        what = f"object {oid} on remote {rs.name}"
        if unpack_header(raw[:HEADER_SIZE], what).type != "blob" or depth >= store.delta_max_depth:
            raise CorruptObject(f"{what} is a delta lin does not write (not a blob, or a chain deeper "
                                f"than core.delta_max_depth) on object {base}")
        got = rs.backend.read(object_key(check_object_id(base)))
        if got is None:
            raise CorruptObject(f"{what} is a delta against object {base}, which the remote does not hold")
        if unpack_header(got[0][:HEADER_SIZE], f"object {base} on remote {rs.name}").type != "blob":
            raise CorruptObject(f"{what} is a delta against object {base}, which is no blob")
        progress.advance(len(got[0]))
        _put_with_bases(store, rs, base, got[0], progress, depth + 1)
    if base is None:
        store.put_stored(oid, raw)
        return
    readable_before = False
    for _ in range(600):
        try:
            h, data = store.decode(oid, raw, f"object {oid} on remote {rs.name}")
            break
        except CorruptObject:
            # another thread of this fetch may be writing the base (claimed, not yet readable),
            # or may have finished it since the decode tried: wait, or try once more
            if not store.has(base) or readable_before:
                raise
            readable_before = not _being_written(store, base)
            if not readable_before:
                time.sleep(0.05)
    else:
        h, data = store.decode(oid, raw, f"object {oid} on remote {rs.name}")
    # stored whole (as a commit stores it): only packs keep deltas, since gc keeps or re-encodes
    # the base of a packed delta (guard.repack) but not of a loose one
    store.put(h.type, data)


def _being_written(store: ObjectStore, oid: str) -> bool:
    """Whether ``oid`` is claimed in ``store`` (a batch's waiting object) but cannot be read yet."""
    if not store.has(oid):
        return False
    try:
        store.get_stored(oid)
    except ObjectNotFound:
        return True
    return False


def _raise(rs: RemoteSession, oid: str, where: str, err: str) -> NoReturn:
    """The error for an object that failed (missing, corrupt or refused), with what to do."""
    if err == "missing":
        raise ObjectNotFound(f"object {oid} (reached from {where}) is missing on remote {rs.name} ({rs.url})",
                             hint=f"nothing was stored and no name moved; the remote is incomplete: see "
                                  f"`lin verify --remote {rs.name}`; push again from a store that has it")
    kind, _, msg = err.partition(": ")
    if kind == "refused":
        raise InvalidName(msg, hint=untrusted_hint(rs.name))
    raise CorruptObject(f"{msg} (the copy on remote {rs.name}, reached from {where})",
                        hint=f"nothing was stored and no name moved; see `lin verify --remote {rs.name} --full`")


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
