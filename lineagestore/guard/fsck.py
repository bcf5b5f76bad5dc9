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
- packs: an index core.packs refused (hostile or damaged: truncated, pointing outside its pack,
  unsorted or duplicate ids) and, in full, each pack's checksum and each packed object's CRC-32
  (the problem names the pack and the object); in full, each pack's objects are read in one
  pass over it (guard/fsck_objects.py);
- the audit chain (``audit.verify``);
- leftovers of killed commands (temp files, lock records, half-deleted trash): reported as
  *notes*, not problems — the next command that writes (or ``gc --confirm``) removes them.

Problems make ``ok`` False (``lin fsck`` exits 1); notes do not.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core import audit as _audit
from ..core.errors import LinError
from ..core.fsutil import pid_alive
from ..core.ids import is_object_id
from ..core.names import parse_version
from ..core.packs import PACK_DIR
from ..core.progress import NULL, Progress
from ..core.refs import check_ref_name
from ..core.repo import Repo
from ..core.store import DiskObjectStore
from .dropped import read_dropped
from .fsck_objects import FILE_TYPES, Found, Problem, verify_objects
from .reachability import live_reflog_ids, reached_from, ref_values, reflog_problems, reflogs
from .trash import find_in_trash, stale_purges

REF_TYPES = {"refs/heads/": "commit", "refs/tags/": "commit", "refs/runs/": "checkpoint",
             "refs/data/": "dataset", "refs/queues/": "queue"}
#: refs/notes/ holds named refs, not a namespace of names: each one its own type (format 4)
NOTE_REF_TYPES = {"refs/notes/eval": "tree", "refs/notes/eval-set": "dataset"}


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



def check(repo: Repo, *, quick: bool = False, progress: Progress = NULL, now: float | None = None) -> FsckReport:
    now = time.time() if now is None else now
    rep = FsckReport(full=not quick)
    ids = list(repo.objects.iter_ids())
    rep.objects = len(ids)
    objs, rep.bytes_verified, problems = verify_objects(repo.objects, ids, quick, progress)
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
        problems, notes = pack_leftovers(repo)
        rep.problems.extend(problems)
        rep.notes.extend(notes)
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


# ----------------------------------------------------------------------------- refs, HEAD, reflogs


def _check_refs(repo: Repo, objs: Found) -> tuple[int, list[Problem]]:
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


def _check_head(repo: Repo, objs: Found) -> list[Problem]:
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


def _check_roots(repo: Repo, objs: Found, now: float) -> tuple[dict[str, str], list[Problem], list[Problem]]:
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


def _check_links(repo: Repo, objs: Found, reached: dict[str, str], dropped: set[str]) -> list[Problem]:
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


def pack_leftovers(repo: Repo) -> tuple[list[Problem], list[Problem]]:
    """(problems, notes) of pack files without their partner. An index without its pack is what a
    repack killed between its two renames (or deletions) leaves: skipped by readers, removed by
    the next repack. A pack without its index only outside damage makes: what it holds cannot
    be read, and it is never removed (it may hold the only copy)."""
    assert repo.path is not None
    folder = repo.path / "objects" / PACK_DIR
    try:
        names = set(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    names = {n for n in names if n.startswith("pack-")}
    problems = [Problem("pack-without-index", f"objects/pack/{n}",
                        f"objects/pack/{n} has no index ({n[:-5]}.idx): lin cannot read the objects it holds and "
                        "never removes it; put the index back from a copy of this store, or remove the pack "
                        "yourself once `lin fsck` finds nothing missing without it")
                for n in sorted(names) if n.endswith(".pack") and n[:-5] + ".idx" not in names]
    notes = [Problem("stale-index", f"objects/pack/{n}", f"objects/pack/{n}: an index without its pack, left by a "
                     "killed repack (lin ignores it; the next repack removes it)")
             for n in sorted(names) if n.endswith(".idx") and n[:-4] + ".pack" not in names]
    return problems, notes


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

