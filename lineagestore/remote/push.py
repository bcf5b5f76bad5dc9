"""``lin push``: send versions to a remote; objects first, then refs by compare-and-swap.

Plan (reads only): which remote refs would be created, moved or are up to date, and which
would overwrite another machine's work (a tag that exists with another id, a version number
the remote gives to another version, a branch or run that is not an ancestor of ours). Any such
conflict refuses the whole push before anything changes. Then: every object under what moves
is asked of the remote in one batched check (HEAD requests or per-prefix listings; the local
cache of what the remote holds never answers for it), the missing objects are uploaded in
parallel (large ones multipart), and only then are the refs written: version claims and tags
first (by number), then data, runs, branches.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from ..core.codecs import stored_object
from ..core.errors import InvalidInput, InvalidName, NotFound, RefConflict
from ..core.ids import is_object_id
from ..core.names import check_name
from ..core.objects import CODEC_DELTA, CODEC_PLANES, CODEC_RAW, HEADER_SIZE, unpack_header
from ..core.packs import delta_base_of, tensor_pieces, whole_form
from ..core.progress import NULL, Progress
from ..core.refs import SYMREF_PREFIX, check_ref_name
from ..core.repo import Repo
from .backend import Entry, PreconditionFailed, md5_etag
from .cache import KnownObjects, clear_damage, read_damage
from .notesync import merge_remote_notes
from .session import (
    HEAD_KEY,
    NAMESPACES,
    NOTE_REFS,
    RemoteSession,
    claim_key,
    describe,
    is_ancestor,
    namespace_of,
    object_key,
    open_session,
    parallel_map,
    ref_bytes,
    run_descends,
    set_tracking,
    tracking_ref,
    unordered_map,
    version_number,
)
from .transfer import local_closure


@dataclass
class RefUpdate:
    ref: str  # the ref on the remote
    source: str  # the local ref it comes from (or the remote ref, for pull)
    old: str | None  # its value on the remote before (None: absent)
    new: str | None  # None: the ref is deleted (a finished training run)
    status: str  # new | updated | up-to-date | behind (the remote is ahead) | rejected | deleted
    reason: str = ""
    written: bool = False
    etag: str = field(default="", repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("etag")
        return d


@dataclass
class PushResult:
    remote: str
    url: str
    refs: list[RefUpdate] = field(default_factory=list)
    objects: int = 0  # objects of what was pushed that were checked against the remote
    objects_sent: int = 0
    bytes_sent: int = 0  # stored (compressed) bytes sent
    raw_bytes_sent: int = 0  # decoded bytes of the objects sent
    seconds: float = 0.0

    @property
    def rejected(self) -> list[RefUpdate]:
        return [u for u in self.refs if u.status == "rejected"]

    @property
    def changed(self) -> list[RefUpdate]:
        return [u for u in self.refs if u.written]

    def to_dict(self) -> dict:
        return {"remote": self.remote, "url": self.url, "refs": [u.to_dict() for u in self.refs],
                "objects": self.objects, "objects_sent": self.objects_sent, "bytes_sent": self.bytes_sent,
                "raw_bytes_sent": self.raw_bytes_sent, "seconds": round(self.seconds, 3),
                "ok": not self.rejected}


class PushRejected(RefConflict):
    """A push refused because a remote ref holds something this push would overwrite."""

    def __init__(self, result: PushResult, message: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.result = result


# ------------------------------------------------------------------------------ what to push


def refs_to_push(repo: Repo, revs: Iterable[str] = ()) -> dict[str, tuple[str, str]]:
    """{remote ref: (local ref, id)}. No revs: every branch, tag, run and data ref.

    A rev is a branch, tag, run or data name (or a full ``refs/...`` name, or ``HEAD``), with an
    optional ``:DEST`` to push a branch under another name. Pushing a branch or tag also pushes
    the version tags of every version in its history, so the remote can name them.
    """
    local = {n: v for n, v in repo.refs.as_dict("refs/").items()
             if n.startswith(NAMESPACES) and (n in NOTE_REFS or not n.startswith("refs/notes/"))}
    revs = list(revs)
    if not revs:
        return {n: (n, v) for n, v in local.items()}
    by_commit: dict[str, list[str]] = {}
    for n, v in local.items():
        if version_number(n) is not None:
            by_commit.setdefault(v, []).append(n)
    out: dict[str, tuple[str, str]] = {}
    for rev in revs:
        src, sep, dst = rev.partition(":")
        ref = _find_local_ref(repo, src, local)
        ns = namespace_of(ref)
        if sep:
            if not dst.startswith("refs/"):
                dst = ns + check_name(dst, "remote ref name")
            check_ref_name(dst)
            if namespace_of(dst) != ns:
                raise InvalidInput(f"{rev!r}: {ref} and {dst} are different kinds of ref")
        else:
            dst = ref
        out[dst] = (ref, local[ref])
        if ns in ("refs/heads/", "refs/tags/"):
            for cid, _ in repo.all_ancestors(local[ref]):
                for t in by_commit.get(cid, []):
                    out.setdefault(t, (t, cid))
    return out


def _find_local_ref(repo: Repo, rev: str, local: dict[str, str]) -> str:
    if rev == "HEAD":
        b = repo.head_branch()
        if b is None or b not in local:
            raise InvalidInput("HEAD is detached (not on a branch): push a version name or a branch")
        return b
    if rev.startswith("refs/"):
        if rev in local:
            return rev
        raise NotFound(f"no ref {rev!r} to push")
    for ns in NAMESPACES:
        if ns + rev in local:
            return ns + rev
    matches = [n for n in local if n.startswith("refs/tags/" + rev + "_") and version_number(n) is not None]
    if len(matches) == 1:
        return matches[0]
    raise NotFound(f"nothing named {rev!r} to push (not a branch, tag, run or data ref)",
                   hint="see `lin branch`, `lin tag`, `lin log --all`")


# ------------------------------------------------------------------------------ push


def push(repo: Repo, remote: str | None = None, revs: Iterable[str] = (), *, progress: Progress = NULL,
         recheck: bool = False, workers: int | None = None, verify_objects: bool = True) -> PushResult:
    """Send what ``revs`` name (default: every branch, tag, run and data ref) to ``remote``.

    Before a ref is created or moved, every object under it is asked of the remote in this push
    (a batched check) and what is missing is uploaded, in parallel; the local cache of what the
    remote holds never stands in for that check. Refs change after all objects are there, by
    conditional writes. A ref the remote holds with something this push would overwrite refuses
    the whole push before anything changes (:class:`PushRejected`); a race lost while writing
    refs stops at that ref, also with :class:`PushRejected`. With ``recheck``, or while ``lin
    verify`` has found objects missing or corrupt there, every ref pushed is checked, and the
    objects verify named are sent again.
    """
    rs = open_session(repo, remote, workers)
    t0 = time.monotonic()
    result = PushResult(rs.name, rs.url)
    with repo.writing():
        wanted = refs_to_push(repo, revs)
        if not wanted:
            raise NotFound("nothing to push: this store has no versions yet",
                           hint="import a model first: lin import DIR --name NAME")
        rid = rs.identity(create=True)
        assert rid is not None
        known = KnownObjects(repo, rid)
        if recheck:
            known.forget()
        damage = read_damage(repo, rs.name)
        if damage:
            known.damaged.update(damage["missing"], damage["corrupt"])
        heal = recheck or bool(known.damaged)
        listing = rs.list_refs()
        merge_remote_notes(repo, rs, wanted, listing, known, progress)
        result.refs = _plan(repo, rs, wanted, listing)
        if not list(revs):
            result.refs.extend(_finished_runs(repo, rs, listing, wanted))
        if result.rejected:
            result.seconds = time.monotonic() - t0
            raise _rejection(repo, result, before_write=True)
        todo = [u for u in result.refs if u.status in ("new", "updated", "deleted")]
        confirm = _to_confirm(repo, rs.name, result.refs, heal)
        confirmed: set[str] = set()
        try:
            if todo:
                rs.require_conditional_writes()
            if confirm:
                _send_objects(repo, rs, {u.new: u.source for u in confirm if u.new}, known, progress, result,
                              verify_objects)
                confirmed = {u.ref for u in confirm}
                if heal:
                    known.repaired(set(known.damaged))  # the rest is named by nothing pushed
                    clear_damage(repo, rs.name)
            if todo:
                _write_refs(repo, rs, todo, result)
        finally:
            set_tracking(repo, rs.name, _seen_on_remote(repo, rs.name, result.refs, confirmed), f"push: {rs.name}")
            known.save()
        # a branch this push wrote or first recorded: the remote may lack HEAD (its first push was cut short)
        if any(u.ref.startswith("refs/heads/") and u.status == "new" for u in todo) or any(
                u.ref.startswith("refs/heads/") and u.status == "up-to-date" for u in confirm):
            _ensure_remote_head(repo, rs, [u.ref for u in result.refs if u.ref.startswith("refs/heads/")])
    result.seconds = time.monotonic() - t0
    return result


def _to_confirm(repo: Repo, remote: str, refs: list[RefUpdate], heal: bool) -> list[RefUpdate]:
    """The refs whose objects this push checks on the remote: every ref it creates or moves, and
    (so that a tracking ref only says what a push confirmed) each one already up to date there
    that this store has not recorded at that value; with ``heal``, every ref pushed."""
    out = []
    for u in refs:
        if u.new is None or u.status in ("rejected", "behind", "deleted"):
            continue
        if u.status != "up-to-date" or heal or not _recorded(repo, remote, u):
            out.append(u)
    return out


def _recorded(repo: Repo, remote: str, u: RefUpdate) -> bool:
    """Whether this store's tracking ref records ``u.ref`` on the remote at ``u.new`` (a ref too
    deep to have a tracking ref counts as recorded: there is nothing to record)."""
    try:
        return repo.refs.read(tracking_ref(remote, u.ref)) == u.new
    except InvalidName:
        return True


def _seen_on_remote(repo: Repo, remote: str, refs: list[RefUpdate], confirmed: set[str]) -> dict[str, str | None]:
    """What the tracking refs become: refs written, refs up to date that this push checked or this
    store had recorded at that value already, and the tips of branches the remote has ahead."""
    out: dict[str, str | None] = {}
    for u in refs:
        if u.written:
            out[u.ref] = u.new
        elif u.status == "up-to-date" and u.new is not None and (u.ref in confirmed or _recorded(repo, remote, u)):
            out[u.ref] = u.new
        elif u.status == "behind":
            out[u.ref] = u.old
    return out


def _plan(repo: Repo, rs: RemoteSession, wanted: dict[str, tuple[str, str]],
          listing: dict[str, Entry]) -> list[RefUpdate]:
    ups = [RefUpdate(dst, src, None, new, "new") for dst, (src, new) in sorted(wanted.items())]
    # values of remote refs we would change (a listed etag equal to md5("<id>\n") needs no read)
    to_read = [u for u in ups if u.ref in listing and u.new is not None
               and listing[u.ref].etag != md5_etag(ref_bytes(u.new))]
    for u in ups:
        if u.ref in listing and u not in to_read:
            u.old, u.status, u.etag = u.new, "up-to-date", listing[u.ref].etag
    remote_versions: dict[int, list[str]] = {}
    for name in listing:
        n = version_number(name)
        if n is not None:
            remote_versions.setdefault(n, []).append(name)
    others = sorted({o for u in ups if u.status == "new" and u.ref not in listing
                     for o in remote_versions.get(version_number(u.ref) or -1, []) if o != u.ref})
    values = dict(zip([u.ref for u in to_read] + others,
                      parallel_map(rs.read_ref, [u.ref for u in to_read] + others, rs.workers), strict=True))
    claims_listed: set[int] | None = None
    for u in ups:
        if u.status == "up-to-date":
            continue
        ns = namespace_of(u.ref)
        cur = values.get(u.ref) if u.ref in listing else None
        assert u.new is not None  # every update _plan makes names the value to send
        if cur is not None:
            old, u.etag = cur
            u.old = old
            if u.old == u.new:
                u.status = "up-to-date"
            elif ns == "refs/tags/":
                u.status, u.reason = "rejected", (
                    f"the remote tag is {describe(repo, u.old)}, yours is {describe(repo, u.new)}; "
                    "tags never move")
            elif ns in ("refs/heads/", "refs/runs/"):
                run = u.source if ns == "refs/runs/" else None  # its reflog vouches for checkpoints gc took
                if is_ancestor(repo, old, u.new, ns, run):
                    u.status = "updated"
                elif is_ancestor(repo, u.new, old, ns, run):  # the remote is ahead: nothing to send
                    u.status, u.reason = "behind", f"the remote is ahead, at {describe(repo, u.old)} (lin pull)"
                elif run is not None and repo.refs.read(tracking_ref(rs.name, u.ref)) == u.new:
                    # the remote moved on since this store last saw it, and this store's run did not
                    u.status, u.reason = "behind", (f"the remote run moved on, to {describe(repo, u.old)}, since "
                                                    f"this store last saw it (lin pull)")
                elif run is not None and run_descends(repo, old, u.new, run) is None:
                    u.status, u.reason = "rejected", _unknown_run(repo, rs.name, u, old)
                else:
                    what = "branch" if ns == "refs/heads/" else "run"
                    u.status, u.reason = "rejected", (
                        f"the remote {what} is at {describe(repo, u.old)}, which is not in the history of "
                        f"yours, {describe(repo, u.new)}: another machine pushed it, and this push would "
                        "overwrite it")
            else:
                seen = repo.refs.read(tracking_ref(rs.name, u.ref))
                if seen == u.old:
                    u.status = "updated"
                else:
                    u.status, u.reason = "rejected", (
                        f"changed on the remote since you last saw it (now {describe(repo, u.old)})")
            continue
        number = version_number(u.ref)
        if number is None:
            continue
        taken = [o for o in remote_versions.get(number, []) if o != u.ref]
        if taken:
            other = values.get(taken[0])
            u.status, u.reason = "rejected", (
                f"the remote already has version {number:03d}: {taken[0][len('refs/tags/'):]} "
                f"= {other[0][:10] if other else '?'}, pushed from another machine")
            continue
        if claims_listed is None:
            claims_listed = set()
            for e in rs.backend.list("versions/"):
                try:
                    claims_listed.add(int(e.key.rsplit("/", 1)[-1]))
                except ValueError:
                    pass
        if number in claims_listed:
            claim = rs.read_claim(number)
            if claim and claim != (u.ref[len("refs/tags/"):], u.new):
                u.status, u.reason = "rejected", (
                    f"version number {number:03d} is claimed on the remote by {claim[0]} "
                    f"= {claim[1][:10] if is_object_id(claim[1]) else '?'}, "
                    "pushed from another machine (its push may still be running)")
    return ups


def _unknown_run(repo: Repo, remote: str, u: RefUpdate, old: str) -> str:
    """Why a run ref whose remote value this store cannot place is left alone."""
    run = u.ref[len("refs/runs/"):]
    return (f"the remote run is at {describe(repo, old)}, which this store cannot place in the history of "
            f"yours, {describe(repo, u.new)}: the checkpoints between are not all here (gc collects a run's "
            "earlier ones; a clone or fetch brings only the last) and this run's reflog here does not name it "
            "(another machine may have trained the run on). Nothing was "
            f"overwritten; `lin fetch {remote}` brings the remote's checkpoint, or push yours under another "
            f"name: `lin push {remote} {run}:{run}-2`")


def _finished_runs(repo: Repo, rs: RemoteSession, listing: dict[str, Entry],
                   wanted: dict[str, tuple[str, str]]) -> list[RefUpdate]:
    """Runs this store pushed before and has since finished or abandoned (its refs/runs/<run>
    is gone): delete them on the remote too, if the remote still holds what we pushed."""
    out = []
    prefix = f"refs/remotes/{rs.name}/runs/"
    for tr in repo.refs.names(prefix):
        ref = "refs/runs/" + tr[len(prefix):]
        seen = repo.refs.read(tr)
        e = listing.get(ref)
        if ref in wanted or not seen or e is None:
            continue
        if e.etag == md5_etag(ref_bytes(seen)):
            out.append(RefUpdate(ref, tr, seen, None, "deleted", etag=e.etag))
    return out


def _rejection(repo: Repo, result: PushResult, before_write: bool) -> PushRejected:
    lines = [f"  {u.ref}: {u.reason}" for u in result.rejected]
    if before_write:
        head = (f"push to {result.remote} refused: {len(lines)} ref(s) would overwrite what another "
                f"machine pushed; nothing was changed on {result.remote} or here")
    else:
        done = len(result.changed)
        head = (f"push to {result.remote} stopped: another push changed the remote while this one ran"
                + (f" ({done} ref(s) were written before that)" if done else "; no ref was written"))
    hint = (f"run `lin pull {result.remote}` to get the other machine's versions (`lin pull --renumber "
            f"{result.remote}` also renames your unpushed versions after them and keeps your line on a "
            "branch of its own), then push again; your versions are all still here")
    return PushRejected(result, head + ":\n" + "\n".join(lines), hint)


def _small(repo: Repo, rs: RemoteSession) -> bool:
    """Whether pushes to ``rs`` send tensor pieces as deltas (``transfer``; default: S3 only)."""
    spec = repo.settings.remotes.get(rs.name)
    transfer = spec.transfer if spec is not None else ""
    return transfer == "small" or (transfer == "" and rs.url.startswith("s3://"))


def _forward_bases(repo: Repo, rs: RemoteSession, tops: list[str], sending: set[str],
                   known: KnownObjects) -> dict[str, tuple[str, int]]:
    """For a small push: tensor pieces to send as deltas against the same piece of the version's
    first parent (piece id -> (base id, element size)), oldest version first.

    A base qualifies when the remote will hold it in a form whose delta chain (read from the
    remote's object headers, or known from this push) stays within ``core.delta_max_depth``
    with this delta added; a piece stored here as a delta is sent as it is (or whole)."""
    store = repo.objects
    limit = store.delta_max_depth
    commits = []
    for cid in tops:
        if store.header(cid).type == "commit":
            c = store.get(cid, "commit")
            if c.parents:
                commits.append((c.created, cid, c.parents[0]))
    memo: dict[str, list[object]] = {}
    depth: dict[str, int | None] = {}  # the chain length a piece sent in this push will have
    out: dict[str, tuple[str, int]] = {}
    for _, cid, parent in sorted(commits):
        theirs = tensor_pieces(store, parent, memo)
        for key, (blob, itemsize) in tensor_pieces(store, cid, memo).items():
            if blob not in sending or blob in depth:
                continue
            whole = store.header(blob).codec != CODEC_DELTA
            base = theirs.get(key, (None, 0))[0]
            d: int | None = None
            if whole and base is not None and base != blob and base not in known.damaged:
                if base not in sending:
                    d = _remote_depth(rs, base, limit)
                elif base in depth:
                    d = depth[base]
                else:  # a piece of a version with no parent here, sent as stored (and so kept)
                    d = depth[base] = 0 if store.header(base).codec != CODEC_DELTA else None
            if d is not None and base is not None and d + 1 <= limit:
                out[blob] = (base, itemsize)
                depth[blob] = d + 1
            else:
                depth[blob] = 0 if whole else None
    return out


def _remote_depth(rs: RemoteSession, oid: str, limit: int) -> int | None:
    """How many deltas reading the remote's copy of ``oid`` follows; None past ``limit`` or when
    a header cannot be read."""
    n, cur = 0, oid
    while n <= limit:
        head = rs.backend.read_head(object_key(cur), HEADER_SIZE + 32)
        if head is None or len(head) < HEADER_SIZE:
            return None
        base = delta_base_of(head)
        if base is None:
            return n
        cur, n = base, n + 1
    return None


def _forward_delta(store, oid: str, base: str, itemsize: int) -> bytes:
    """``oid`` in stored form as a delta against ``base`` (planes, or raw, when it saves little)."""
    type_name, data = store.get_raw(oid)
    _, base_data = store.get_raw(base)
    codec, stored = CODEC_RAW, b""
    if len(base_data) == len(data):
        codec, stored = stored_object(type_name, data, CODEC_DELTA, itemsize, base=(base, base_data),
                                      mode=store.compression)
    if codec == CODEC_RAW:
        codec, stored = stored_object(type_name, data, CODEC_PLANES, itemsize, mode=store.compression)
    return stored


def _send_objects(repo: Repo, rs: RemoteSession, roots: dict[str, str], known: KnownObjects,
                  progress: Progress, result: PushResult, verify: bool) -> None:
    """Make the remote hold every object under ``roots``: ask it about all of them (one batched
    check), then upload what it lacks and what ``lin verify`` found damaged there."""
    store = repo.objects
    closure, tops = local_closure(repo, roots, set())
    result.objects = len(closure)
    missing = rs.missing_objects(closure, known) | (set(closure) & known.damaged)
    # big objects first: the long transfers start early and the pool stays busy to the end
    # (weights dropped here that this remote lacks come back from their own remote as sent)
    sizes = {i: store.stored_size(i) if store.has(i) else 0 for i in missing}
    order = sorted(missing, key=lambda i: -sizes[i])
    if order:
        progress.start(f"pushing to {rs.name}", sum(sizes.values()), "B")

    in_closure = set(closure)
    forward = _forward_bases(repo, rs, tops, set(order), known) if _small(repo, rs) else {}

    def send(oid: str) -> tuple[int, int]:
        raw = store.get_stored(oid)
        base = delta_base_of(raw)
        if oid in forward:
            raw = _forward_delta(store, oid, *forward[oid])
        elif base is not None and base not in in_closure:
            # a delta goes as it is only with its base (core/packs.py); else whole (byte planes)
            h, data = store.decode(oid, raw, f"object {oid} in this store")
            raw = whole_form(h.type, data, raw, store.compression)
        if verify:
            h, _ = store.decode(oid, raw, f"object {oid} in this store")
        else:
            h = unpack_header(raw[:HEADER_SIZE])
        rs.backend.write(object_key(oid), raw, on_bytes=progress.advance)
        known.add((oid,))
        return len(raw), h.size

    try:
        for n, raw_n in unordered_map(send, order, rs.workers):
            result.objects_sent += 1
            result.bytes_sent += n
            result.raw_bytes_sent += raw_n
    finally:
        if order:
            progress.finish()
        known.save()
    known.repaired(order)
    known.add_complete([*roots, *tops])


def _write_refs(repo: Repo, rs: RemoteSession, todo: list[RefUpdate], result: PushResult) -> None:
    def rank(u: RefUpdate) -> tuple:
        n = version_number(u.ref)
        order = {"refs/tags/": 1, "refs/data/": 2, "refs/runs/": 3, "refs/heads/": 4}
        if u.status == "deleted":
            return (6, 0, u.ref)
        return (0, n, u.ref) if n is not None else (order.get(namespace_of(u.ref), 5), 0, u.ref)

    for u in sorted(todo, key=rank):
        if u.status == "deleted":
            try:
                rs.backend.delete_if_match(u.ref, u.etag)
                u.written = True
            except PreconditionFailed:
                u.status, u.reason = "up-to-date", "changed on the remote meanwhile; left as it is"
                u.new = u.old  # not ours to delete any more
            continue
        assert u.new is not None  # only a deletion sends no value, and it was handled above
        body = ref_bytes(u.new)
        n = version_number(u.ref)
        try:
            if n is not None and u.status == "new":
                _claim(rs, n, u)
            if u.status == "new":
                rs.backend.create(u.ref, body)
            else:
                rs.backend.replace(u.ref, body, u.etag)
            u.written = True
        except PreconditionFailed:
            if u.status == "rejected":  # the claim was lost
                raise _rejection(repo, result, before_write=False) from None
            cur = rs.read_ref(u.ref)
            if cur is not None and cur[0] == u.new:
                u.written = True  # our own write, answered 412 on a retry
                continue
            u.status = "rejected"
            u.reason = (f"changed on the remote while this push ran: now {describe(repo, cur[0] if cur else None)}"
                        f"; yours: {describe(repo, u.new)}")
            raise _rejection(repo, result, before_write=False) from None


def _claim(rs: RemoteSession, number: int, u: RefUpdate) -> None:
    name = u.ref[len("refs/tags/"):]
    try:
        rs.backend.create(claim_key(number), f"{name} {u.new}\n".encode())
    except PreconditionFailed:
        claim = rs.read_claim(number)
        if claim == (name, u.new):
            return
        u.status = "rejected"
        other = (f"{claim[0]} = {claim[1][:10] if is_object_id(claim[1]) else '?'}" if claim else "another push")
        u.reason = f"version number {number:03d} was taken on the remote by {other} while this push ran"
        raise


def _ensure_remote_head(repo: Repo, rs: RemoteSession, heads: list[str]) -> None:
    if rs.backend.read(HEAD_KEY) is not None or not heads:
        return
    mine = repo.head_branch()
    target = mine if mine in heads else ("refs/heads/main" if "refs/heads/main" in heads else sorted(heads)[0])
    try:
        rs.backend.create(HEAD_KEY, f"{SYMREF_PREFIX}{target}\n".encode())
    except PreconditionFailed:
        pass
