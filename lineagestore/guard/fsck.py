"""Consistency checks of a store. Reads only; never changes anything (not even a cache).

``check(repo)`` verifies:

- objects: every object's header; with ``quick=False`` (``lin fsck``, ``--full``) every byte is
  re-hashed, with ``quick=True`` only metadata objects are (blobs: header only);
- refs and HEAD: each holds a valid id of the right type (versions and branches: commits, runs:
  checkpoints, data: datasets); a version tag names the commit that carries that name;
- reflogs: every line parses, with valid ids;
- commits, trees, tensor files, chunks, datasets, checkpoints: each link names an object of the
  type it must have (a tree entry its declared type, a commit's parents commits, ...) and, for
  file content, the declared size; tree entry names follow core.names' rules (no ``.lineage`` or
  ``.git`` in any case, no control characters or separators, no duplicates: ``unsafe-tree``) and
  commits carry version names (``bad-name``);
- tensor files: the header passes the checks a commit makes (``core.safetensors_io``, as strict
  as the safetensors library) and the tensor list is what it says (``malformed``);
- presence: everything reachable from refs, HEAD and live reflog entries is present; and every
  object present has all the objects it links to (the invariant gc and restore keep);
- packs: an index core.packs refused (hostile or damaged) and, in full, each pack's checksum and
  each packed object's CRC-32 (the problem names the pack and the object);
- the audit chain (``audit.verify``);
- leftovers of killed commands (temp files, lock records, half-deleted trash): reported as
  *notes*, not problems — the next command that writes (or ``gc --confirm``) removes them.

Problems make ``ok`` False (``lin fsck`` exits 1); notes do not.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core import audit as _audit
from ..core.content import decode_buffer
from ..core.errors import InvalidName, LinError, MalformedFile
from ..core.fsutil import pid_alive
from ..core.ids import is_object_id
from ..core.names import check_version_name, parse_version, tree_entry_problems
from ..core.objects import CHUNK_SIZE, CODEC_DELTA, LINKING_TYPES, Commit, decode_object
from ..core.packs import PACK_DIR, Pack, PackEntry
from ..core.progress import NULL, Progress
from ..core.refs import check_ref_name
from ..core.repo import Repo
from ..core.safetensors_io import check_tensor_list
from ..core.store import DiskObjectStore
from .drop import read_dropped
from .reachability import live_reflog_ids, reached_from, ref_values, reflog_problems, reflogs
from .trash import find_in_trash, stale_purges

REF_TYPES = {"refs/heads/": "commit", "refs/tags/": "commit", "refs/runs/": "checkpoint",
             "refs/data/": "dataset", "refs/queues/": "queue"}
#: refs/notes/ holds named refs, not a namespace of names: each one its own type (format 4)
NOTE_REF_TYPES = {"refs/notes/eval": "tree", "refs/notes/eval-set": "dataset"}
FILE_TYPES = {"blob", "chunks", "tensor-file"}


@dataclass
class Problem:
    kind: str  # corrupt | missing | dangling | bad-ref | bad-reflog | bad-link | unsafe-tree | bad-name | audit ...
    subject: str  # the object id, ref or file concerned
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FsckReport:
    objects: int = 0
    bytes_verified: int = 0
    refs: int = 0
    reflogs: int = 0
    reachable: int = 0
    unreachable: int = 0
    full: bool = True
    audit_entries: int = 0
    on_remote: int = 0  # weights dropped here on purpose (core.local_versions): held on the remote
    on_remote_bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)  # how to get back what is missing or damaged

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


@dataclass
class _Link:
    id: str
    types: frozenset | None  # allowed types of the target (None: any)
    what: str  # how the parent names it ("tree", "parent", "entry config.json", ...)
    size: int | None = None  # declared content size, checked for file content


@dataclass
class _Info:
    type: str
    size: int  # content size (for chunks: the joined size; tensor-file: the file size)
    links: list[_Link]
    name: str | None = None  # commits: the version name


def _links(type_name: str, obj) -> list[_Link]:
    """What ``obj`` links to, with the types (and sizes) each link must have; links a newer
    object layout adds beyond these rules are checked for presence only."""
    typed = _typed_links(type_name, obj)
    known = {ln.id for ln in typed}
    return typed + [_Link(x, None, "link") for x in obj.links() if x not in known]


def _typed_links(type_name: str, obj) -> list[_Link]:
    T = frozenset
    if type_name == "commit":
        return ([_Link(obj.tree, T({"tree"}), "tree")] + [_Link(p, T({"commit"}), "parent") for p in obj.parents]
                + [_Link(d, T({"dataset"}), "dataset") for d in obj.datasets])
    if type_name == "tree":
        return [_Link(e.id, T({e.type}) if e.type in FILE_TYPES | {"tree"} else T(), f"entry {e.name!r}",
                      e.size if e.type in FILE_TYPES else None) for e in obj.items()]
    if type_name == "tensor-file":
        return [_Link(t.id, T({"blob", "chunks"}), f"tensor {t.name!r}", t.size) for t in obj.entries()]
    if type_name == "chunks":
        # file content is split into blobs; a large record-id set (data ledger) into records
        return [_Link(pid, T({"blob", "records"}), f"part {i}", n) for i, (pid, n) in enumerate(obj.parts)]
    if type_name == "dataset":
        out = [_Link(obj.content, T(FILE_TYPES), "content", obj.size)] if obj.stored else []
        return out + ([_Link(obj.records, T({"records", "chunks"}), "records")] if obj.records else [])
    if type_name == "checkpoint":  # its parent is a plain id, not a link: gc may have collected it
        return [_Link(obj.model, T({"tree"}), "model")] + ([_Link(obj.state, T({"tree"}), "state")] if obj.state else [])
    return []


def _rule_problem(oid: str, type_name: str, obj) -> Problem | None:
    """What fetch and checkout refuse (core.names): a tree whose entry names break the rules
    (``.lineage``/``.git`` in any case, control characters, separators, duplicates), a commit
    whose name is not a version name. The object itself is sound, so its links are still checked."""
    if type_name == "tree":
        bad = tree_entry_problems(e.name for e in obj.items())
        if bad:
            shown = "; ".join(f"entry {n!r} {why}" for n, why in bad[:3]) + (f"; {len(bad) - 3} more" if len(bad) > 3 else "")
            return Problem("unsafe-tree", oid, f"tree {oid}: {shown} (lin refuses to check it out or fetch it)")
    elif type_name == "commit":
        try:
            check_version_name(obj.name)
        except InvalidName as e:
            return Problem("bad-name", oid, f"commit {oid}: {e}")
    return None


def _tensor_file_problem(oid: str, type_name: str, obj) -> Problem | None:
    """A tensor file whose header the safetensors library would refuse, or whose tensor list is
    not what its header says (checked as a commit checks the file it reads)."""
    if type_name != "tensor-file":
        return None
    try:
        check_tensor_list(obj.header.encode("utf-8"), obj.size,
                          [(t.name, t.dtype, t.shape, t.size) for t in obj.entries()], f"tensor-file {oid}")
    except MalformedFile as e:
        return Problem("malformed", oid, str(e))
    except UnicodeEncodeError:
        return Problem("malformed", oid, f"tensor-file {oid}: its header is not UTF-8 text")
    return None


@dataclass
class _Objects:
    """What the object pass found: each readable object's type, size and links, and the ids of
    the corrupt ones (present, but unreadable)."""

    info: dict[str, _Info]
    corrupt: set[str]

    def present(self, oid: str) -> bool:
        return oid in self.info or oid in self.corrupt

    def links(self, oid: str) -> list[str]:
        inf = self.info.get(oid)
        return [ln.id for ln in inf.links] if inf is not None else []


def check(repo: Repo, *, quick: bool = False, progress: Progress = NULL, now: float | None = None) -> FsckReport:
    now = time.time() if now is None else now
    rep = FsckReport(full=not quick)
    ids = list(repo.objects.iter_ids())
    rep.objects = len(ids)
    objs, rep.bytes_verified, problems = _verify_objects(repo.objects, ids, quick, progress)
    rep.problems.extend(problems)
    rep.refs, problems = _check_refs(repo, objs)
    rep.problems.extend(problems)
    rep.problems.extend(_check_head(repo, objs))
    rep.reflogs, problems = _check_reflogs(repo)
    rep.problems.extend(problems)
    reached, problems, notes = _check_roots(repo, objs, now)
    rep.problems.extend(problems)
    rep.notes.extend(notes)
    rep.reachable = sum(1 for o in reached if objs.present(o))
    rep.unreachable = len(ids) - rep.reachable
    dropped = {o: d for o, d in read_dropped(repo).items() if not objs.present(o)}
    rep.on_remote, rep.on_remote_bytes = len(dropped), sum(d.size for d in dropped.values())
    rep.problems.extend(_check_links(repo, objs, reached, set(dropped)))
    rep.problems.extend(check_packs(repo, full=not quick))
    if repo.path is not None:
        rep.audit_entries, problems = _check_audit(repo)
        rep.problems.extend(problems)
        rep.notes.extend(leftovers(repo))
        rep.notes.extend(pack_leftovers(repo))
        rep.notes.extend(_stray_files(repo))
    rep.problems = _unique(rep.problems)
    rep.notes = _unique(rep.notes)
    rep.advice = _advice(repo, rep)
    return rep


def _advice(repo: Repo, rep: FsckReport) -> list[str]:
    """Where missing or corrupt objects can come back from: a remote, or the trash."""
    lost = {p.subject for p in rep.problems if p.kind in ("missing", "corrupt")}
    if not lost:
        return []
    out = []
    remotes = sorted(repo.settings.remotes)
    backup = repo.settings.backup.remote
    if backup or remotes:
        source = f"the backup remote {backup!r}" if backup else f"remote {remotes[0]!r}"
        out.append(f"{len(lost)} object(s) missing or damaged: `lin fsck --repair` fetches them, verified, "
                   f"from {source} (`--remote NAME` for another)")
    else:
        out.append(f"{len(lost)} object(s) missing or damaged and no remote is configured: restore them from "
                   "trash if fsck says they are there (`lin restore ID`), or add a remote that has them "
                   "(`lin remote add NAME URL`) and run `lin fsck --repair`")
    return out


# ----------------------------------------------------------------------------- objects


_Result = tuple[str, _Info | None, int, Problem | None]  # id, its info, bytes verified, the problem
_Packed = tuple[str, int, int, int]  # id, offset, length, CRC-32 (Pack.in_pack_order)
_ERRORS = (LinError, OSError, ValueError, TypeError, KeyError, AttributeError)


def _verify_one(store, oid: str, quick: bool) -> _Result:
    """One object read through the store (a loose one, or any with ``quick``)."""
    try:
        if quick:  # the header tells whether the object links to others; only those are read
            h = store.header(oid)
            if h.type not in LINKING_TYPES:
                return oid, _Info(h.type, h.size, []), 0, None
        type_name, data = store.get_raw(oid)  # verified: its size is the header's
        return _examine(oid, type_name, data)
    except _ERRORS as e:
        return _broken(oid, e)


def _examine(oid: str, type_name: str, data: bytes | memoryview) -> _Result:
    """What fsck keeps of an object already decoded and verified: its type, size and links."""
    n = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
    if type_name not in LINKING_TYPES:
        return oid, _Info(type_name, n, []), n, None
    obj = decode_object(type_name, bytes(data), f"object {oid}")
    size = getattr(obj, "size", n)
    name = obj.name if isinstance(obj, Commit) else None
    problem = _rule_problem(oid, type_name, obj) or _tensor_file_problem(oid, type_name, obj)
    return oid, _Info(type_name, size, _links(type_name, obj), name), n, problem


def _broken(oid: str, e: Exception, where: str = "") -> _Result:
    msg = str(e) if oid in str(e) else f"object {oid}: {e}"
    return oid, None, 0, Problem("corrupt", oid, msg if " pack " in msg else msg + where)


def _verify_objects(store, ids: list[str], quick: bool, progress: Progress) -> tuple[_Objects, int, list[Problem]]:
    """Every object's header (quick) or every byte (full): what was found, bytes verified, problems.
    In full, packed objects are verified pack by pack in the order of their bytes (:func:`_pack_pass`)
    and only the rest one by one through the store."""
    info: dict[str, _Info] = {}
    problems: list[Problem] = []
    nbytes = 0

    def take(results: list[_Result]) -> None:
        nonlocal nbytes
        for oid, inf, n, prob in results:
            nbytes += n
            if prob:
                problems.append(prob)
            if inf:
                info[oid] = inf
        progress.advance(len(results))

    progress.start("verifying objects" + (" (metadata only)" if quick else ""), len(ids), "objects")
    # quick: small reads and JSON, bound by the GIL (one thread was fastest: 150,000 objects in
    # 8.4 s vs 12.4 s on 6); full: hashing big objects, which releases it
    workers = 1 if quick else min(32, (os.cpu_count() or 1) + 4)
    packs = [] if quick or not isinstance(store, DiskObjectStore) else store.packs.packs()
    with ThreadPoolExecutor(workers) as pool:
        if packs:
            _pack_pass(store, packs, pool, workers, take)
        done = set(info) | {p.subject for p in problems}
        rest = [i for i in ids if i not in done]
        # in batches of 256: one future per object cost more than reading a header (150,000: 12 s)
        for results in pool.map(lambda batch: [_verify_one(store, oid, quick) for oid in batch],
                                [rest[i:i + 256] for i in range(0, len(rest), 256)]):
            take(results)
    progress.finish()
    return _Objects(info, {p.subject for p in problems}), nbytes, problems


#: a pack is verified in runs of consecutive objects of about this many stored bytes, each
#: starting at an object stored whole (so a delta's base was decoded just before it, in its run)
_RUN_BYTES = 32 << 20
#: ... and of at most this many objects (progress moves at least this often)
_RUN_OBJECTS = 8192
#: runs whose objects average fewer stored bytes are verified in this thread: Python per object,
#: under the GIL, where more threads only add switching; larger ones on the pool (hashing,
#: zstd and numpy release the GIL)
_SMALL = 64 << 10


def _pack_pass(store: DiskObjectStore, packs: list[Pack], pool: ThreadPoolExecutor, workers: int,
               take: Callable[[list[_Result]], None]) -> None:
    """Every object of every pack, each pack in one sequential pass over its mapping in offset
    order: the CRC-32 its index declares, then decoded and verified from the mapped bytes by
    :func:`.content.decode_buffer` (no lookup by id, no read through the store), its links kept.
    A delta finds its base in a bounded :class:`.content.DecodedCache` (a repack writes each
    piece right after its base), else reads it from the store."""
    import numpy as np  # lazily, as core.packs
    runs: list[tuple[Pack, list[_Packed], bool]] = []  # (pack, objects, whether they average _SMALL or more)
    deltas = False
    for pack in packs:
        ids, offsets, lengths, crcs, codecs = pack.in_pack_order()
        if not ids:
            continue
        # runs start at objects stored whole, at the first of each _RUN_BYTES / _RUN_OBJECTS
        whole = np.flatnonzero(codecs != CODEC_DELTA)
        deltas = deltas or len(whole) < len(ids)
        before = np.cumsum(lengths) - lengths
        step = (before[whole] // _RUN_BYTES) * (len(ids) // _RUN_OBJECTS + 1) + whole // _RUN_OBJECTS
        starts = sorted({0, *whole[np.flatnonzero(np.diff(step, prepend=-1))].tolist()})
        for a, b in zip(starts, [*starts[1:], len(ids)], strict=True):
            run = list(zip(ids[a:b], offsets[a:b].tolist(), lengths[a:b].tolist(), crcs[a:b].tolist(), strict=True))
            runs.append((pack, run, int(before[b - 1] + lengths[b - 1] - before[a]) >= _SMALL * (b - a)))
    with store.caching((workers + 2) * CHUNK_SIZE) if deltas else _no_cache():
        futures = [pool.submit(_verify_run, store, pack, run) for pack, run, big in runs if big]
        for pack, run, big in runs:
            if not big:
                take(_verify_run(store, pack, run))
        for fu in futures:
            take(fu.result())


def _verify_run(store: DiskObjectStore, pack: Pack, run: list[_Packed]) -> list[_Result]:
    out: list[_Result] = []
    load, depth, cache, mapped, crc32 = store.get_stored, store.delta_max_depth, store.cache, pack.mapped(), zlib.crc32
    for oid, offset, length, crc in run:
        try:
            stored = mapped[offset:offset + length]
            if crc32(stored) != crc:
                pack.read_checked(oid, PackEntry(pack, offset, length, crc))  # raises, naming object and pack
            h, data = decode_buffer(oid, stored, None, load, depth, cache)
            if h.type in LINKING_TYPES:
                out.append(_examine(oid, h.type, data))
            else:  # (most objects: no call for them)
                out.append((oid, _Info(h.type, h.size, []), h.size, None))
        except _ERRORS as err:
            out.append(_broken(oid, err, f" (in pack {pack.name}, offset {offset})"))
    return out


@contextmanager
def _no_cache() -> Iterator[None]:
    yield None


# ----------------------------------------------------------------------------- refs, HEAD, reflogs


def _check_refs(repo: Repo, objs: _Objects) -> tuple[int, list[Problem]]:
    """How many refs there are, and what is wrong with them (name, value, target type)."""
    count = 0
    out: list[Problem] = []
    for name in repo.refs.names("refs/"):
        count += 1
        try:
            check_ref_name(name)
            raw = repo.refs.read(name)
        except LinError as e:
            out.append(Problem("bad-ref", name, f"{name}: invalid ref name ({e})"))
            continue
        if raw is None or not is_object_id(raw):
            out.append(Problem("bad-ref", name, f"ref {name} does not hold an object id: {raw!r}"))
            continue
        if name.startswith(tuple(REF_TYPES)) and name.count("/") > 2:
            out.append(Problem("bad-ref", name, f"{name}: a nested name (lin names versions, branches, runs "
                               "and data with one component)"))
        if not objs.present(raw):
            out.append(Problem("missing", raw, f"object {raw} named by {name} is missing" + _in_trash(repo, raw)))
            continue
        if name.startswith("refs/notes/") and name not in NOTE_REF_TYPES:
            out.append(Problem("bad-ref", name, f"{name}: not a notes ref lin writes "
                               f"({', '.join(sorted(NOTE_REF_TYPES))})"))
        want = NOTE_REF_TYPES.get(name) or next((t for p, t in REF_TYPES.items() if name.startswith(p)), None)
        got = objs.info.get(raw)
        if want and got and got.type != want:
            out.append(Problem("bad-ref", name, f"ref {name} points at a {got.type}, expected a {want}"))
        short = name[len("refs/tags/"):]
        if name.startswith("refs/tags/") and parse_version(short) and got and got.name and got.name != short:
            out.append(Problem("bad-ref", name, f"version name {short} points at the commit of {got.name}"))
    return count, out


def _check_head(repo: Repo, objs: _Objects) -> list[Problem]:
    try:
        raw = repo.refs.read("HEAD")
    except LinError as e:
        return [Problem("bad-ref", "HEAD", f"HEAD cannot be read: {e}")]
    if raw is None:
        return [Problem("bad-ref", "HEAD", "HEAD is missing")]
    if raw.startswith("ref: "):
        target = raw[5:]
        try:
            check_ref_name(target)
            if not target.startswith("refs/heads/"):
                return [Problem("bad-ref", "HEAD", f"HEAD points at {target}, which is not a branch")]
        except LinError as e:
            return [Problem("bad-ref", "HEAD", f"HEAD points at an invalid ref ({e})")]
    elif not is_object_id(raw):
        return [Problem("bad-ref", "HEAD", f"HEAD holds neither a ref nor an id: {raw!r}")]
    elif not objs.present(raw):
        return [Problem("missing", raw, f"the active version {raw} (HEAD) is missing" + _in_trash(repo, raw))]
    elif raw in objs.info and objs.info[raw].type != "commit":
        return [Problem("bad-ref", "HEAD", f"HEAD points at a {objs.info[raw].type}, expected a commit")]
    return []


def _check_reflogs(repo: Repo) -> tuple[int, list[Problem]]:
    """How many reflogs there are, and each unreadable one or malformed line."""
    return (len(repo.refs.reflog_names()),
            [Problem("bad-reflog", subject, msg) for subject, msg in reflog_problems(repo)])


# ----------------------------------------------------------------------------- reachability, links


def _check_roots(repo: Repo, objs: _Objects, now: float) -> tuple[dict[str, str], list[Problem], list[Problem]]:
    """What the roots reach (id -> the root), and the roots that are missing: a missing object
    named only by a live reflog entry is a note when trash/ holds it, else a problem."""
    strong = dict((v, n) for n, v in ref_values(repo).values.items())
    weak: dict[str, str] = {}
    for x, name in live_reflog_ids(reflogs(repo), now=now, expire_s=repo.settings.gc.reflog_expire_s,
                                   keep_checkpoints=repo.settings.train.keep_checkpoints):
        if x not in strong:
            weak.setdefault(x, f"the reflog of {name}")
    reached = reached_from(strong, objs.links)
    problems: list[Problem] = []
    notes: list[Problem] = []
    for oid, where in weak.items():
        if not objs.present(oid) and oid not in reached:
            msg = f"object {oid} (named by {where}) is missing"
            (notes if _in_trash(repo, oid) else problems).append(
                Problem("missing", oid, msg + _in_trash(repo, oid)))
    return reached_from(weak, objs.links, reached), problems, notes


def _check_links(repo: Repo, objs: _Objects, reached: dict[str, str], dropped: set[str]) -> list[Problem]:
    """Each link of each object: present (missing when reached from a root, dangling when not;
    ``dropped`` objects are on the remote, not missing), of the type it must have, and of the
    declared size."""
    out: list[Problem] = []
    for oid, inf in objs.info.items():
        for ln in inf.links:
            if not objs.present(ln.id) and ln.id in dropped:
                continue
            if not objs.present(ln.id):
                where = reached.get(oid)
                if where:
                    out.append(Problem("missing", ln.id, f"object {ln.id} ({ln.what} of {inf.type} "
                                       f"{oid[:12]}, reached from {where}) is missing" + _in_trash(repo, ln.id)))
                else:
                    out.append(Problem("dangling", oid, f"unreachable {inf.type} {oid} links to missing "
                                       f"object {ln.id} ({ln.what})"))
                continue
            child = objs.info.get(ln.id)
            if child is None:
                continue  # corrupt: reported already
            if ln.types is not None and child.type not in ln.types:
                out.append(Problem("bad-link", oid, f"{inf.type} {oid[:12]}: {ln.what} is a {child.type} "
                                   f"({ln.id[:12]}), expected {' or '.join(sorted(ln.types)) or 'a valid type'}"))
            elif ln.size is not None and child.type in FILE_TYPES | {"records"} and child.size != ln.size:
                out.append(Problem("bad-link", oid, f"{inf.type} {oid[:12]}: {ln.what} declares {ln.size} "
                                   f"bytes, object {ln.id[:12]} holds {child.size}"))
    return out


def check_packs(repo: Repo, *, full: bool = True) -> list[Problem]:
    """Packs whose index was refused (core.packs checks it whole), and with ``full`` each pack's
    checksum and each object's CRC-32: a flipped byte is found naming the pack and the object."""
    store = repo.objects
    if not isinstance(store, DiskObjectStore):
        return []
    packs = store.packs.packs()
    out = [Problem("corrupt", f"objects/pack/{name}", msg) for name, msg in sorted(store.packs.bad.items())]
    for p in packs if full else ():
        if p.verify_checksum():
            continue  # (every object in it is also decoded and hashed by the object pass)
        out.append(Problem("corrupt", f"objects/pack/{p.name}", f"pack {p.name} is corrupt: its bytes do "
                           "not hash to its checksum"))
        for oid, e in p.entries():  # which objects: their CRC-32s
            try:
                p.read_checked(oid, e)
            except LinError as err:
                out.append(Problem("corrupt", oid, str(err)))
    return out


def pack_leftovers(repo: Repo) -> list[Problem]:
    """A pack whose index never arrived (a repack killed between the two renames): ignored by
    readers, removed by the next repack."""
    assert repo.path is not None
    folder = repo.path / "objects" / PACK_DIR
    try:
        names = set(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [Problem("stale-pack", f"objects/pack/{n}", f"objects/pack/{n}: a pack without its index, left by a "
                    "killed repack (lin ignores it; the next repack removes it)")
            for n in sorted(names) if n.endswith(".pack") and n[:-5] + ".idx" not in names]


def _check_audit(repo: Repo) -> tuple[int, list[Problem]]:
    chk = _audit.verify(repo)
    return chk.entries, [Problem("audit", "audit.log", p) for p in chk.problems]


def _in_trash(repo: Repo, oid: str) -> str:
    if repo.path is None:
        return ""
    try:
        return "; it is in trash/ (lin restore " + oid[:12] + ")" if find_in_trash(repo, oid) else ""
    except OSError:
        return ""


# ----------------------------------------------------------------------------- leftovers


def stale_temp(repo: Repo) -> list[Path]:
    """Files in tmp/ whose writer is gone: what the next write removes (``clean_stale_temp``)."""
    assert repo.path is not None
    out: list[Path] = []
    try:
        entries = sorted((repo.path / "tmp").iterdir())
    except FileNotFoundError:
        return out
    for p in entries:
        try:
            pid = int(p.name.split("-", 1)[0])
        except ValueError:
            pid = -1
        if pid != os.getpid() and not pid_alive(pid):
            out.append(p)
    return out


def stale_lock_records(repo: Repo) -> list[Path]:
    """Lock-holder records of processes that died (the kernel released their locks already)."""
    assert repo.path is not None
    out = []
    for holders in sorted((repo.path / "locks").glob("*.holders")):
        for rec in sorted(holders.glob("*.json")):
            try:
                pid = int(rec.name.split("-", 1)[0])
            except ValueError:
                continue
            if not pid_alive(pid):
                out.append(rec)
    return out


def leftovers(repo: Repo) -> list[Problem]:
    assert repo.path is not None
    notes = [Problem("stale-temp", f"tmp/{p.name}", f"tmp/{p.name}: temporary file of a killed command "
                     "(removed by the next command that writes)") for p in stale_temp(repo)]
    notes += [Problem("stale-lock", str(p.relative_to(repo.path)), f"{p.relative_to(repo.path)}: lock record of "
                      "a process that is gone (its lock was released when it died; the record is removed "
                      "by the next command that takes the lock)") for p in stale_lock_records(repo)]
    notes += [Problem("stale-purge", f"trash/{p.name}", f"trash/{p.name}: a trash batch whose deletion was "
                      "interrupted (the next `lin gc --confirm` finishes it)") for p in stale_purges(repo)]
    return notes


def _stray_files(repo: Repo) -> list[Problem]:
    assert repo.path is not None
    root = repo.path / "objects"
    out: list[Problem] = []
    try:
        dirs = sorted(os.listdir(root))
    except FileNotFoundError:
        return out
    for d in dirs:
        p = root / d
        if d == PACK_DIR and p.is_dir():
            continue  # packs: check_packs
        if len(d) != 2 or not p.is_dir() or any(c not in "0123456789abcdef" for c in d):
            out.append(Problem("stray", f"objects/{d}", f"objects/{d}: not an object folder (lin ignores it)"))
            continue
        for n in sorted(os.listdir(p)):
            if not is_object_id(d + n):
                out.append(Problem("stray", f"objects/{d}/{n}", f"objects/{d}/{n}: not an object file (lin ignores it)"))
    return out


def _unique(items: list[Problem]) -> list[Problem]:
    seen = set()
    out = []
    for p in items:
        key = (p.kind, p.subject, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out

