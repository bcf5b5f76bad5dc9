"""One remote opened for one command, and what push, fetch and verify share.

:class:`RemoteSession` reads the remote's ``format`` marker (its identity), its refs and claims,
probes conditional writes, and finds which objects it lacks. The helpers below run requests on
threads with bounded memory, compare histories, and keep the
tracking refs ``refs/remotes/<remote>/...`` (what the remote held when we last talked to it).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from ..core.environment import env_int, read_env
from ..core.errors import CorruptObject, InvalidName, LinError, RefConflict, RemoteError, UnsupportedFormat
from ..core.ids import is_object_id
from ..core.names import parse_version
from ..core.objects import HEADER_SIZE
from ..core.refs import check_ref_name
from ..core.repo import Repo
from .backend import Backend, Entry, PreconditionFailed, md5_etag
from .cache import KnownObjects
from .spec import RemoteSpec, default_remote, get_remote, open_backend

#: the remote layout version written into ``format`` (see docs/remotes.md, "Remote format")
REMOTE_FORMAT = 1
FORMAT_KEY = "format"
HEAD_KEY = "HEAD"
#: the local ref namespaces a push sends and a fetch receives
NAMESPACES = ("refs/heads/", "refs/tags/", "refs/runs/", "refs/data/", "refs/queues/", "refs/notes/")
#: the notes refs lin sends, and the type of object each names (others under refs/notes/ are ignored)
NOTE_REFS = {"refs/notes/eval": "tree", "refs/notes/eval-set": "dataset"}
#: conditional-write probe results, per remote URL and endpoint, for this process
_PROBED: dict[str, bool] = {}


def object_key(oid: str) -> str:
    return f"objects/{oid[:2]}/{oid[2:]}"


def claim_key(number: int) -> str:
    return f"versions/{number:03d}"


def tracking_ref(remote: str, ref: str) -> str:
    """``refs/heads/main`` on remote ``origin`` -> ``refs/remotes/origin/heads/main``."""
    return f"refs/remotes/{remote}/{ref[len('refs/'):]}"


def ref_bytes(oid: str) -> bytes:
    return f"{oid}\n".encode()


def default_workers() -> int:
    """Parallel requests per command: ``LIN_REMOTE_WORKERS``, default 8."""
    return env_int("LIN_REMOTE_WORKERS", 8, low=1)


# ------------------------------------------------------------------------------ the session


class RemoteSession:
    """One remote opened for one command: its spec, backend and identity."""

    def __init__(self, repo: Repo, spec: RemoteSpec, workers: int | None = None):
        self.repo = repo
        self.spec = spec
        self.name = spec.name
        self.workers = workers or default_workers()
        self.backend: Backend = open_backend(spec, self.workers)
        self.url = spec.url

    # -- identity (the format marker)

    def identity(self, create: bool) -> str | None:
        got = self.backend.read(FORMAT_KEY)
        if got is None:
            if not create:
                return None
            rid = uuid.uuid4().hex
            body = json.dumps({"format": REMOTE_FORMAT, "kind": "lineagestore-remote", "id": rid},
                              sort_keys=True).encode() + b"\n"
            try:
                self.backend.create(FORMAT_KEY, body)
                return rid
            except PreconditionFailed:
                got = self.backend.read(FORMAT_KEY)
                if got is None:
                    raise RemoteError(f"{self.backend.label}: the format marker vanished while being created") from None
        try:
            d = json.loads(got[0])
            version, kind, rid = int(d["format"]), d["kind"], str(d["id"])
        except (ValueError, KeyError, TypeError):
            raise RemoteError(f"{self.backend.label}: not a lineage remote (unreadable '{FORMAT_KEY}' marker)",
                              hint="point the remote at an empty prefix or folder") from None
        if kind != "lineagestore-remote":
            raise RemoteError(f"{self.backend.label}: not a lineage remote ({FORMAT_KEY} says {kind!r})")
        if version > REMOTE_FORMAT:
            raise UnsupportedFormat(f"{self.backend.label}: remote format {version} is newer than this lin "
                                    f"understands ({REMOTE_FORMAT})", hint="upgrade lineagestore")
        return rid

    # -- refs

    def list_refs(self) -> dict[str, Entry]:
        return {e.key: e for e in self.backend.list("refs/")}

    def read_ref(self, ref: str) -> tuple[str, str] | None:
        got = self.backend.read(ref)
        if got is None:
            return None
        text = got[0].decode("utf-8", "replace").strip()
        if not is_object_id(text):
            raise CorruptObject(f"remote {self.name}: ref {ref} holds {text[:80]!r}, not an object id")
        return text, got[1]

    def read_claim(self, number: int) -> tuple[str, str] | None:
        got = self.backend.read(claim_key(number))
        if got is None:
            return None
        name, _, oid = got[0].decode("utf-8", "replace").strip().partition(" ")
        return name, oid

    def require_conditional_writes(self) -> None:
        key = self.url + "|" + (self.spec.endpoint_url or (read_env("AWS_ENDPOINT_URL") or ""))
        if key not in _PROBED:
            _PROBED[key] = self.backend.probe_conditional_writes()
        if not _PROBED[key]:
            raise RemoteError(
                f"{self.backend.label}: the server ignores conditional writes (If-None-Match / If-Match): a second "
                "create of the same key succeeded. lin cannot move refs there without risking overwriting "
                "another machine's push, so it refuses to update refs on this remote",
                hint="use a server that honours conditional writes (AWS S3, recent MinIO, SeaweedFS, R2, "
                     "Ceph RGW), or a folder remote; fetch and clone still work")

    # -- objects

    def missing_objects(self, ids: Sequence[str], known: KnownObjects) -> set[str]:
        """Which of ``ids`` the remote lacks, asked of the remote now in one batched check (HEAD
        requests, listings of their 2-hex prefixes or one of ``objects/``, whichever costs less;
        an object shorter than a header counts as missing). What it holds is noted in ``known``, whose size only
        estimates how long a listing would be: the cache never answers for the remote."""
        if not ids:
            return set()
        prefixes = {i[:2] for i in ids}
        total = max(len(known.known), len(ids))  # about what objects/ holds
        sizes = self.backend.present([object_key(i) for i in ids], self.workers,
                                     total * len(prefixes) // 256, total)  # ids spread evenly
        present = {i for i in ids if sizes.get(object_key(i), 0) >= HEADER_SIZE}
        known.add(present)
        return {i for i in ids if i not in present}


def open_session(repo: Repo, remote: str | None, workers: int | None = None) -> RemoteSession:
    return RemoteSession(repo, get_remote(repo, remote or default_remote(repo)), workers)


# ------------------------------------------------------------------------------ helpers


def parallel_map(fn: Callable, items: Iterable, workers: int) -> list:
    """``[fn(x) for x in items]`` on threads, in order; the first error cancels the rest."""
    items = list(items)
    if len(items) <= 1 or workers <= 1:
        return [fn(x) for x in items]
    out: list = [None] * len(items)
    for i, r in unordered_map(lambda ix: (ix[0], fn(ix[1])), enumerate(items), workers):
        out[i] = r
    return out


def unordered_map(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """Yield ``fn(x)`` as each finishes, at most ``2 * workers`` in flight (memory stays bounded);
    the first error cancels what has not started and is raised once running tasks end."""
    it = iter(items)
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="lin-remote")
    pending: set = set()
    try:
        for x in it:
            pending.add(pool.submit(fn, x))
            if len(pending) >= 2 * workers:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.add(pool.submit(fn, nxt))
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True)


def describe(repo: Repo, oid: str | None) -> str:
    if oid is None:
        return "nothing"
    try:
        if repo.objects.has(oid):
            name = repo.name_of(oid)
            return f"{oid[:10]} {name}" if name else oid[:10]
    except LinError:
        pass
    return f"{oid[:10]} (not in this store)"


def is_ancestor(repo: Repo, ancestor: str, tip: str, namespace: str, ref: str | None = None) -> bool:
    """Whether ``ancestor`` is ``tip`` or in its history (commits' parents; of a run,
    :func:`run_descends`, with ``ref`` the local run ref whose reflog may vouch). A history this
    store cannot tell is not an ancestry."""
    if namespace == "refs/runs/":
        return run_descends(repo, ancestor, tip, ref) is True
    if ancestor == tip:
        return True
    if not repo.objects.has(ancestor):
        return False
    try:
        return any(cid == ancestor for cid, _ in repo.all_ancestors(tip))
    except LinError:
        return False


def run_descends(repo: Repo, ancestor: str, tip: str, ref: str | None = None) -> bool | None:
    """Whether checkpoint ``tip`` descends from checkpoint ``ancestor``: True, False, or None
    when this store cannot tell.

    gc collects a run's earlier checkpoints (docs/format.md, "Training runs"), so the walk down
    ``parent`` may stop at a collected one. Then the run's own record decides: the reflog of the
    local run ref ``ref``, in its current life (since the entry that created it), names every
    value the ref took, and a run ref moves only forward (to a checkpoint whose parent is its
    value, by compare-and-set, or by a fetch that checked the ancestry), so a value taken before
    ``tip`` is in ``tip``'s history. A walk that ends at the run's first checkpoint without
    meeting ``ancestor`` is False; one cut short by a collected checkpoint, with no reflog entry
    that vouches, is None (unknown: never a reason to overwrite).
    """
    if ancestor == tip:
        return True
    seen: set[str] = set()
    cur: str | None = tip
    complete = True
    while cur and cur not in seen:
        seen.add(cur)
        if cur == ancestor:
            return True
        try:
            cur = repo.objects.get(cur, "checkpoint").parent
        except LinError:  # collected by gc (or never here): the walk cannot go on
            complete = False
            break
    if ref is not None and _taken_before(repo, ref, ancestor, tip):
        return True
    return False if complete else None


def _taken_before(repo: Repo, ref: str, ancestor: str, tip: str) -> bool:
    """Whether the current life of local ref ``ref`` took ``ancestor`` before ``tip`` (its reflog)."""
    life: list[str] = []
    try:
        entries = repo.refs.reflog(ref)
    except LinError:
        return False
    for e in entries:
        if e.new is None or e.old is None:  # removed, or created anew: a new life starts
            life = []
        if e.new is not None:
            life.append(e.new)
    if tip not in life:
        return False
    last_tip = len(life) - 1 - life[::-1].index(tip)
    return ancestor in life[:last_tip]


def namespace_of(ref: str) -> str:
    for ns in NAMESPACES:
        if ref.startswith(ns):
            return ns
    return ""


def version_number(ref: str) -> int | None:
    if not ref.startswith("refs/tags/"):
        return None
    p = parse_version(ref[len("refs/tags/"):])
    return p[0] if p else None


# ------------------------------------------------------------------------------ refs


def read_remote_refs(repo: Repo, rs: RemoteSession, *, strict: bool = False) -> tuple[dict[str, str], list[str]]:
    """The remote's refs (name -> id) and warnings about keys that are not refs.

    A ref of the namespaces has one name component (``refs/tags/a/b`` is nested: push never
    writes one). With ``strict`` (fetch, pull, clone) such a key, or a ref that holds no object
    id, fails the command naming it (InvalidName, CorruptObject), before anything is received;
    without it (verify) it is a warning. Keys outside the namespaces are always warnings."""
    listing = rs.list_refs()
    warnings: list[str] = []
    names = []
    for name in sorted(listing):
        if name.startswith("refs/notes/") and name not in NOTE_REFS:
            warnings.append(f"ignored {name!r} on {rs.name}: not a notes ref lin sends")
            continue
        try:
            if not name.startswith(NAMESPACES):
                raise InvalidName("not a ref lin sends")
            check_ref_name(name)
            if name.count("/") != 2:
                raise InvalidName(f"a nested name (one name after {namespace_of(name)})")
        except InvalidName as e:
            if strict and name.startswith(NAMESPACES):
                raise InvalidName(f"remote {rs.name} holds an invalid ref {name!r}: {e}",
                                  hint=untrusted_hint(rs.name)) from None
            warnings.append(f"ignored {name!r} on {rs.name}: not a valid ref name")
            continue
        names.append(name)
    out: dict[str, str] = {}
    need = []
    for name in names:
        seen = repo.refs.read(tracking_ref(rs.name, name)) if trackable(rs.name, name) else None
        if seen and listing[name].etag == md5_etag(ref_bytes(seen)):
            out[name] = seen
        else:
            need.append(name)

    def read(name: str):
        try:
            return rs.read_ref(name)
        except CorruptObject as e:
            return e

    for name, got in zip(need, parallel_map(read, need, rs.workers), strict=True):
        if isinstance(got, CorruptObject):
            if strict:
                raise CorruptObject(str(got), hint=untrusted_hint(rs.name))
            warnings.append(str(got))
        elif got is not None:
            out[name] = got[0]
    return out, warnings


def untrusted_hint(remote: str) -> str:
    """The hint of an error about what a remote holds and lin never writes."""
    return (f"nothing was stored and no name moved; remote {remote} was damaged or written by something "
            f"other than lin: check it (`lin verify --remote {remote} --full`) or push again from a sound store")


def trackable(remote: str, ref: str) -> bool:
    """Whether ``ref`` of ``remote`` has a tracking ref (refs/remotes/<remote>/...: not too deep)."""
    try:
        check_ref_name(tracking_ref(remote, ref))
        return True
    except InvalidName:
        return False


def set_tracking(repo: Repo, remote: str, values: dict[str, str | None], why: str) -> list[dict]:
    """Point refs/remotes/<remote>/... at what the remote holds (None: remove)."""
    changed = []
    for ref, value in sorted(values.items()):
        tr = tracking_ref(remote, ref)
        try:
            check_ref_name(tr)
        except InvalidName:
            continue  # too deep to track; the ref itself still travels
        if value is not None and not repo.objects.has(value):
            continue
        for _ in range(3):
            cur = repo.refs.read(tr)
            if cur == value:
                break
            try:
                repo.update_ref(tr, cur, value, why)
                changed.append({"ref": tr, "old": cur, "new": value})
                break
            except RefConflict:
                continue  # another command moved it meanwhile: read again
    return changed
