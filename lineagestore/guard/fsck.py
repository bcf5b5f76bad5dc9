"""Consistency checks of a store. Reads only; never changes anything (not even a cache).

``check(repo)`` verifies:

- objects: every object's header; with ``quick=False`` (``lin fsck``, ``--full``) every byte is
  re-hashed, with ``quick=True`` only metadata objects are (blobs: header only);
- refs and HEAD: each holds a valid id of the right type (versions and branches: commits, runs:
  checkpoints, data: datasets); a version tag names the commit that carries that name;
- reflogs: every line parses, with valid ids;
- commits, trees, tensor files, chunks, datasets, checkpoints: each link names an object of the
  type it must have (a tree entry its declared type, a commit's parents commits, ...) and, for
  file content, the declared size; entry names are safe;
- presence: everything reachable from refs, HEAD and live reflog entries is present; and every
  object present has all the objects it links to (the invariant gc and restore keep);
- the audit chain (``audit.verify``);
- leftovers of killed commands (temp files, lock records, half-deleted trash): reported as
  *notes*, not problems — the next command that writes (or ``gc --confirm``) removes them.

Problems make ``ok`` False (``lin fsck`` exits 1); notes do not.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core import audit as _audit
from ..core.errors import LinError
from ..core.fsutil import pid_alive
from .gc import ref_values, reflog_expiry, reflog_problems, reflogs
from .trash import find_in_trash, stale_purges
from ..core.ids import is_object_id
from ..core.names import parse_version
from ..core.objects import LINKING_TYPES, decode_object
from ..core.progress import NULL, Progress
from ..core.refs import check_ref_name
from ..core.repo import Repo

REF_TYPES = {"refs/heads/": "commit", "refs/tags/": "commit", "refs/runs/": "checkpoint",
             "refs/data/": "dataset"}
FILE_TYPES = {"blob", "chunks", "tensor-file"}


@dataclass
class Problem:
    kind: str  # corrupt | missing | dangling | bad-ref | bad-reflog | bad-link | audit | stale-temp ...
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
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)

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
    if type_name == "checkpoint":
        return ([_Link(obj.model, T({"tree"}), "model")] + ([_Link(obj.state, T({"tree"}), "state")] if obj.state else [])
                + ([_Link(obj.parent, T({"checkpoint"}), "parent")] if obj.parent else []))
    return []


def _unsafe_names(type_name: str, obj) -> list[str]:
    if type_name != "tree":
        return []
    return [e.name for e in obj.items()
            if not e.name or e.name in (".", "..") or "/" in e.name or "\\" in e.name or "\0" in e.name
            or len(e.name.encode()) > 255]


def check(repo: Repo, *, quick: bool = False, progress: Progress = NULL, now: float | None = None) -> FsckReport:
    now = time.time() if now is None else now
    rep = FsckReport(full=not quick)
    store = repo.objects
    info: dict[str, _Info] = {}

    # ---- objects
    def verify(oid: str) -> tuple[str, _Info | None, int, Problem | None]:
        try:
            if quick:  # the header tells whether the object links to others; only those are read
                h = store.header(oid)
                if h.type not in LINKING_TYPES:
                    return oid, _Info(h.type, h.size, []), 0, None
            type_name, data = store.get_raw(oid)  # verified: its size is the header's
            n = len(data)
            if type_name not in LINKING_TYPES:
                return oid, _Info(type_name, n, []), n, None
            obj = decode_object(type_name, data, f"object {oid}")
            bad = _unsafe_names(type_name, obj)
            if bad:
                return oid, None, n, Problem("corrupt", oid, f"tree {oid} has unsafe entry names: {bad[:3]}")
            size = getattr(obj, "size", n)
            name = obj.name if type_name == "commit" else None
            return oid, _Info(type_name, size, _links(type_name, obj), name), n, None
        except (LinError, OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            msg = str(e) if oid in str(e) else f"object {oid}: {e}"
            return oid, None, 0, Problem("corrupt", oid, msg)

    def verify_batch(batch: list[str]) -> list:
        return [verify(oid) for oid in batch]

    ids = list(store.iter_ids())
    rep.objects = len(ids)
    progress.start("verifying objects" + (" (metadata only)" if quick else ""), len(ids), "objects")
    # in batches: one future per object cost more than reading a header (150,000 objects: 12 s)
    batches = [ids[i:i + 256] for i in range(0, len(ids), 256)]
    # quick: small reads and JSON, bound by the GIL (one thread was fastest: 150,000 objects in
    # 8.4 s vs 12.4 s on 6); full: hashing big objects, which releases it
    with ThreadPoolExecutor(1 if quick else None) as pool:
        for results in pool.map(verify_batch, batches):
            for oid, inf, n, prob in results:
                rep.bytes_verified += n
                if prob:
                    rep.problems.append(prob)
                if inf:
                    info[oid] = inf
            progress.advance(len(results))
    progress.finish()
    corrupt = {p.subject for p in rep.problems}

    def present(oid: str) -> bool:
        return oid in info or oid in corrupt

    # ---- refs and HEAD
    for name in repo.refs.names("refs/"):
        rep.refs += 1
        try:
            check_ref_name(name)
            raw = repo.refs.read(name)
        except LinError as e:
            rep.problems.append(Problem("bad-ref", name, f"{name}: invalid ref name ({e})"))
            continue
        if raw is None or not is_object_id(raw):
            rep.problems.append(Problem("bad-ref", name, f"ref {name} does not hold an object id: {raw!r}"))
            continue
        if not present(raw):
            rep.problems.append(Problem("missing", raw, f"object {raw} named by {name} is missing"
                                        + _in_trash(repo, raw)))
            continue
        want = next((t for p, t in REF_TYPES.items() if name.startswith(p)), None)
        got = info.get(raw)
        if want and got and got.type != want:
            rep.problems.append(Problem("bad-ref", name, f"ref {name} points at a {got.type}, expected a {want}"))
        short = name[len("refs/tags/"):]
        if name.startswith("refs/tags/") and parse_version(short) and got and got.name and got.name != short:
            rep.problems.append(Problem("bad-ref", name, f"version name {short} points at the commit of {got.name}"))
    _check_head(repo, rep, info, present)

    # ---- reflogs
    _check_reflogs(repo, rep)

    # ---- reachability and links
    refs = ref_values(repo)
    strong = dict((v, n) for n, v in refs.values.items())
    expire = reflog_expiry(repo)
    weak: dict[str, str] = {}
    for name, entries in reflogs(repo).items():
        for e in entries:
            if now - e.time <= expire:
                for x in (e.old, e.new):
                    if x and is_object_id(x) and x not in strong:
                        weak.setdefault(x, f"the reflog of {name}")
    reached_from = _walk(info, strong, {})
    for oid, where in weak.items():
        if not present(oid) and oid not in reached_from:
            msg = f"object {oid} (named by {where}) is missing"
            (rep.notes if _in_trash(repo, oid) else rep.problems).append(
                Problem("missing", oid, msg + _in_trash(repo, oid)))
    reached_from = _walk(info, weak, reached_from)
    rep.reachable = sum(1 for o in reached_from if present(o))
    rep.unreachable = len(ids) - rep.reachable
    for oid, inf in info.items():
        for ln in inf.links:
            if not present(ln.id):
                where = reached_from.get(oid)
                if where:
                    rep.problems.append(Problem("missing", ln.id, f"object {ln.id} ({ln.what} of {inf.type} "
                                                f"{oid[:12]}, reached from {where}) is missing" + _in_trash(repo, ln.id)))
                else:
                    rep.problems.append(Problem("dangling", oid, f"unreachable {inf.type} {oid} links to missing "
                                                f"object {ln.id} ({ln.what})"))
                continue
            child = info.get(ln.id)
            if child is None:
                continue  # corrupt: reported already
            if ln.types is not None and child.type not in ln.types:
                rep.problems.append(Problem("bad-link", oid, f"{inf.type} {oid[:12]}: {ln.what} is a {child.type} "
                                            f"({ln.id[:12]}), expected {' or '.join(sorted(ln.types)) or 'a valid type'}"))
            elif ln.size is not None and child.type in FILE_TYPES | {"records"} and child.size != ln.size:
                rep.problems.append(Problem("bad-link", oid, f"{inf.type} {oid[:12]}: {ln.what} declares {ln.size} "
                                            f"bytes, object {ln.id[:12]} holds {child.size}"))

    # ---- audit chain
    if repo.path is not None:
        chk = _audit.verify(repo)
        rep.audit_entries = chk.entries
        rep.problems.extend(Problem("audit", "audit.log", p) for p in chk.problems)
        rep.notes.extend(leftovers(repo))
        rep.notes.extend(_stray_files(repo))

    rep.problems = _unique(rep.problems)
    rep.notes = _unique(rep.notes)
    return rep


def _walk(info: dict[str, _Info], start: dict[str, str], reached: dict[str, str]) -> dict[str, str]:
    """Extend ``reached`` (id -> the root it was reached from) with everything ``start`` reaches."""
    out = dict(reached)
    stack = [(oid, where) for oid, where in start.items()]
    while stack:
        oid, where = stack.pop()
        if oid in out:
            continue
        out[oid] = where
        inf = info.get(oid)
        if inf is not None:
            stack.extend((ln.id, where) for ln in inf.links if ln.id not in out)
    return out


def _check_head(repo: Repo, rep: FsckReport, info: dict[str, _Info], present) -> None:
    try:
        raw = repo.refs.read("HEAD")
    except LinError as e:
        rep.problems.append(Problem("bad-ref", "HEAD", f"HEAD cannot be read: {e}"))
        return
    if raw is None:
        rep.problems.append(Problem("bad-ref", "HEAD", "HEAD is missing"))
    elif raw.startswith("ref: "):
        target = raw[5:]
        try:
            check_ref_name(target)
            if not target.startswith("refs/heads/"):
                rep.problems.append(Problem("bad-ref", "HEAD", f"HEAD points at {target}, which is not a branch"))
        except LinError as e:
            rep.problems.append(Problem("bad-ref", "HEAD", f"HEAD points at an invalid ref ({e})"))
    elif not is_object_id(raw):
        rep.problems.append(Problem("bad-ref", "HEAD", f"HEAD holds neither a ref nor an id: {raw!r}"))
    elif not present(raw):
        rep.problems.append(Problem("missing", raw, f"the active version {raw} (HEAD) is missing" + _in_trash(repo, raw)))
    elif raw in info and info[raw].type != "commit":
        rep.problems.append(Problem("bad-ref", "HEAD", f"HEAD points at a {info[raw].type}, expected a commit"))


def _check_reflogs(repo: Repo, rep: FsckReport) -> None:
    rep.reflogs = len(repo.refs.reflog_names())
    rep.problems.extend(Problem("bad-reflog", subject, msg) for subject, msg in reflog_problems(repo))


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
    out = []
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
    out = []
    try:
        dirs = sorted(os.listdir(root))
    except FileNotFoundError:
        return out
    for d in dirs:
        p = root / d
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

