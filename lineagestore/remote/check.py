"""``lin verify --remote`` and ``lin fsck --repair``: is the remote whole; heal this store from it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from ..core.content import decode_stored
from ..core.errors import CorruptObject, LinError, ObjectNotFound
from ..core.ids import is_object_id
from ..core.objects import HEADER_SIZE, LINKING_TYPES, ObjectHeader, links_of, unpack_header
from ..core.packs import delta_base_of
from ..core.progress import NULL, Progress
from ..core.repo import Repo
from ..core.store import ObjectStore
from .cache import KnownObjects, clear_damage, read_damage, record_damage
from .session import FORMAT_KEY, RemoteSession, object_key, open_session, read_remote_refs, unordered_map
from .transfer import download_closure


@dataclass
class VerifyResult:
    remote: str
    url: str
    full: bool
    refs: int = 0
    objects: int = 0  # objects reachable from the remote's refs
    objects_present: int = 0  # objects stored on the remote (reachable or not)
    bytes_verified: int = 0
    missing: list[dict] = field(default_factory=list)  # id, where
    corrupt: list[dict] = field(default_factory=list)  # id, where, message
    bad_refs: list[dict] = field(default_factory=list)  # ref, message
    not_on_remote: list[str] = field(default_factory=list)  # local versions the remote lacks

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.bad_refs)

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


@dataclass
class RepairResult:
    remote: str
    url: str
    repaired: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)  # id, reason
    objects_received: int = 0
    bytes_received: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


# ------------------------------------------------------------------------------ verify


def verify(repo: Repo, remote: str | None = None, *, full: bool = False, progress: Progress = NULL,
           workers: int | None = None) -> VerifyResult:
    """Check that the remote holds every object of every ref it has (re-hashing with ``full``).

    Without ``full``, objects are checked for presence; the structure (which objects a tree or
    commit names) is read from this store where it has the object, else from the remote. With
    ``full`` every object is downloaded and its hash checked. The remote-known cache is rebuilt
    from what was found (objects missing or corrupt as ``damaged``: the next push checks all it
    sends and sends those again). On the backup remote, damage found is recorded for ``lin
    status`` (no version counts as backed up until a push repairs it), and a clean verify removes
    that record. Local versions the remote lacks are listed in ``not_on_remote``.
    """
    rs = open_session(repo, remote, workers)
    res = VerifyResult(rs.name, rs.url, full)
    rid = rs.identity(create=False)
    if rid is None:
        res.bad_refs.append({"ref": FORMAT_KEY, "message": f"{rs.url} is not a lineage remote (nothing pushed)"})
        res.not_on_remote = list(repo.versions())
        return res
    present = _listed_objects(rs)
    res.objects_present = len(present)
    refs, warnings = read_remote_refs(repo, rs)
    res.bad_refs.extend({"ref": w, "message": w} for w in warnings)
    res.refs = len(refs)
    progress.start(f"verifying {rs.name}", sum(present.values()) if full else None, "B")
    try:
        bad = _walk(res, refs, _ObjectCheck(rs, present, repo.objects, full, progress).check, rs.workers)
    finally:
        progress.finish()
    res.not_on_remote = [n for n, cid in repo.versions().items() if refs.get(f"refs/tags/{n}") != cid]
    _record(repo, rs.name, rid, res, set(present), [] if bad else list(refs.values()))
    return res


def _record(repo: Repo, remote: str, rid: str, res: VerifyResult, present: set[str], ok_refs: list[str]) -> None:
    """What verify found, into the cache and (for the backup remote) the damage record. Only a
    full verify reads objects: corrupt ones found before stay damaged after a quick one."""
    missing = {m["id"] for m in res.missing}
    corrupt = {c["id"] for c in res.corrupt}
    known = KnownObjects(repo, rid)
    before = read_damage(repo, remote)
    if not res.full:
        corrupt |= (known.damaged | set(before["corrupt"] if before else ())) & present
    known.reset(present - missing - corrupt, set(ok_refs), missing | corrupt)
    if repo.path is not None and remote == repo.settings.backup.remote:
        if missing or corrupt:
            record_damage(repo, remote, missing, corrupt)
        else:
            clear_damage(repo, remote)


def _listed_objects(rs: RemoteSession) -> dict[str, int]:
    """Object id -> stored size, for every object the remote lists (reachable or not)."""
    present: dict[str, int] = {}
    for e in rs.backend.list("objects/"):
        oid = e.key[len("objects/"):].replace("/", "")
        if is_object_id(oid):
            present[oid] = e.size
    return present


def _walk(res: VerifyResult, refs: dict[str, str], check: Callable, workers: int) -> set[str]:
    """Check the closure of ``refs`` level by level (``workers`` objects at a time), counting into
    ``res``; the ids found missing or corrupt."""
    seen: set[str] = set()
    frontier = []
    for ref, oid in sorted(refs.items()):
        if oid not in seen:
            seen.add(oid)
            frontier.append((oid, f"{ref}"))
    bad: set[str] = set()
    while frontier:
        nxt = []
        for oid, where, err, links, nbytes in unordered_map(check, frontier, workers):
            res.objects += 1
            res.bytes_verified += nbytes
            if err == "missing":
                res.missing.append({"id": oid, "where": where})
                bad.add(oid)
                continue
            if err is not None:
                res.corrupt.append({"id": oid, "where": where, "message": err})
                bad.add(oid)
                continue
            for c in links or []:
                if c not in seen:
                    seen.add(c)
                    nxt.append((c, where))
        frontier = nxt
    return bad


@dataclass
class _ObjectCheck:
    """One object of the remote: is it there (whole, with ``full``), and which objects does it name?

    Without ``full`` the names come from this store's copy where it has a sound one, else from
    the remote's.
    """

    rs: RemoteSession
    present: dict[str, int]  # what the remote lists: id -> stored size
    store: ObjectStore
    full: bool
    progress: Progress

    def check(self, item: tuple[str, str]):
        """(id, where, error, the ids it names, bytes verified); error is None, "missing" or a message."""
        rs, present, store, full, progress = self.rs, self.present, self.store, self.full, self.progress
        oid, where = item
        if oid not in present:
            return oid, where, "missing", None, 0
        try:
            if full:
                got = rs.backend.read(object_key(oid))
                if got is None:
                    return oid, where, "missing", None, 0
                progress.advance(len(got[0]))
                h, data = decode_stored(oid, got[0], f"object {oid} on {rs.name}", remote_bases(rs))
                return oid, where, None, links_of(h.type, data) if h.type in LINKING_TYPES else [], h.size
            if present[oid] < HEADER_SIZE:
                return oid, where, f"object {oid} on {rs.name} is truncated ({present[oid]} bytes)", None, 0
            local_type = None
            try:
                local_type = store.header(oid).type if store.has(oid) else None
            except LinError:
                local_type = None
            if local_type is not None and local_type not in LINKING_TYPES:
                return oid, where, None, [], 0
            if local_type is not None:
                try:
                    return oid, where, None, store.get(oid).links(), 0
                except LinError:
                    pass  # damaged here: read the remote's copy
            # not here (weights dropped to this remote) or damaged here: the remote's copy. A
            # quick check reads a blob's header only, as for one held here; what names others is
            # decoded (its bases from the remote: a pushed delta travels with its base)
            got = rs.backend.read(object_key(oid))
            if got is None:
                return oid, where, "missing", None, 0
            what = f"object {oid} on {rs.name}"
            if unpack_header(memoryview(got[0])[:HEADER_SIZE], what).type not in LINKING_TYPES:
                return oid, where, None, [], 0
            h, data = decode_stored(oid, got[0], what, remote_bases(rs))
            return oid, where, None, links_of(h.type, data), 0
        except CorruptObject as e:
            return oid, where, str(e), None, 0


def remote_bases(rs: RemoteSession) -> Callable[[str], bytes]:
    """A delta's base read from the remote itself (a pushed delta travels with its base)."""
    def load(base: str) -> bytes:
        got = rs.backend.read(object_key(base))
        if got is None:
            raise ObjectNotFound(f"object {base} is missing on {rs.name}")
        return got[0]
    return load


# ------------------------------------------------------------------------------ repair


def repair(repo: Repo, remote_name: str | None, problems: Iterable) -> RepairResult:
    """Fetch corrupt or missing objects named by fsck problems from a remote, verified.

    ``problems`` are fsck's Problem objects (or dicts) with ``kind`` "corrupt" or "missing" and
    the object id as ``subject``; others are ignored. A corrupt local copy is replaced only by
    a remote copy that verifies; objects a restored object names are fetched too when absent.
    Holds the store lock exclusively (no other command reads the object while it is replaced).
    """
    rs = open_session(repo, remote_name)
    res = RepairResult(rs.name, rs.url)
    corrupt: list[str] = []
    missing: dict[str, str] = {}
    for p in problems:
        kind = p.get("kind") if isinstance(p, dict) else getattr(p, "kind", None)
        subject = p.get("subject") if isinstance(p, dict) else getattr(p, "subject", None)
        if kind not in ("corrupt", "missing") or not isinstance(subject, str) or not is_object_id(subject):
            continue
        if kind == "corrupt" and repo.objects.has(subject):
            if subject not in corrupt:
                corrupt.append(subject)
        else:
            missing.setdefault(subject, "fsck")
    if not corrupt and not missing:
        return res
    rid = rs.identity(create=False)
    if rid is None:
        res.failed.extend({"id": i, "reason": f"{rs.url} is empty"} for i in [*corrupt, *missing])
        return res
    known = KnownObjects(repo, rid)
    store = repo.objects
    with repo.exclusive():
        for oid in corrupt:
            try:
                store.verify(oid)
                continue  # not corrupt (any more)
            except LinError:
                pass
            got = rs.backend.read(object_key(oid))
            if got is None:
                res.failed.append({"id": oid, "reason": f"not on {rs.name} either"})
                continue
            try:
                h, data = _decode_received(store, rs, oid, got[0])
            except CorruptObject as e:
                res.failed.append({"id": oid, "reason": f"the copy on {rs.name} is corrupt too ({e})"})
                continue
            # whole and loose, as fetch stores one (only packs hold deltas); a damaged packed
            # copy stays (packs are never changed) and reads take this one instead
            store.put(h.type, data, replace=True)
            res.repaired.append(oid)
            res.objects_received += 1
            res.bytes_received += len(got[0])
            if h.type in LINKING_TYPES:
                for c in links_of(h.type, data):
                    if not store.has(c):
                        missing.setdefault(c, f"object {oid}")

        def on_missing(oid: str, where: str, why: str) -> None:
            res.failed.append({"id": oid, "reason": f"{why} on {rs.name} (reached from {where})"})

        if missing:
            n, b, failed = download_closure(repo, rs, missing, known, NULL, on_missing=on_missing)
            res.objects_received += n
            res.bytes_received += b
            for oid in missing:
                if oid not in failed and store.has(oid):
                    res.repaired.append(oid)
                elif oid in failed and not any(f["id"] == oid for f in res.failed):
                    res.failed.append({"id": oid, "reason": f"objects it names are missing on {rs.name}"})
        known.save()
    return res


def _decode_received(store: ObjectStore, rs: RemoteSession, oid: str, raw: bytes) -> tuple[ObjectHeader, bytes]:
    """A copy of ``oid`` read from the remote, decoded and verified; a delta's bases are read
    from this store, or, where that fails (absent or damaged here), from the remote."""
    where = f"object {oid} on {rs.name}"

    def remote_base(base: str) -> bytes:
        got = rs.backend.read(object_key(base))
        if got is None:
            raise ObjectNotFound(f"object {base} is missing on {rs.name}")
        return got[0]

    def local_base(base: str) -> bytes:
        try:
            return store.get_stored(base) if base != oid else remote_base(base)
        except ObjectNotFound:
            return remote_base(base)

    if delta_base_of(raw) is None:
        return decode_stored(oid, raw, where)
    try:
        return decode_stored(oid, raw, where, local_base, store.delta_max_depth)
    except CorruptObject:
        return decode_stored(oid, raw, where, remote_base, store.delta_max_depth)
