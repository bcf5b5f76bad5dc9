"""``lin fetch``, ``lin pull``, ``lin clone``: receive versions from a remote.

fetch stores every object under the remote's refs that this store lacks (verified, children
before parents) and then sets the tracking refs; pull moves local names forward (never
backwards, never across a divergence); clone builds a new store from a remote and checks out
its active version. None of them writes to the remote.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.errors import InvalidInput, InvalidName, NotFound, RefConflict, Refused
from ..core.fsutil import fsync_dir, kill_point, pid_alive
from ..core.names import parse_version
from ..core.progress import NULL, Progress
from ..core.refs import SYMREF_PREFIX
from ..core.repo import Repo
from ..core.store import ObjectStore
from .cache import KnownObjects
from .notes import MERGES, NOTES_FORMAT, merge_into_local
from .push import RefUpdate
from .session import (
    HEAD_KEY,
    NAMESPACES,
    NOTE_REFS,
    RemoteSession,
    describe,
    is_ancestor,
    namespace_of,
    open_session,
    read_remote_refs,
    set_tracking,
    trackable,
    tracking_ref,
    untrusted_hint,
    version_number,
)
from .spec import RemoteSpec, add_remote
from .transfer import download_closure

#: the type of object each ref namespace names
REF_TYPES = {"refs/heads/": "commit", "refs/tags/": "commit", "refs/runs/": "checkpoint", "refs/data/": "dataset",
             "refs/queues/": "queue"}
#: a clone is built in ``DIR/<this><pid>-<random>`` and renamed to ``DIR/.lineage`` once complete
PARTIAL_PREFIX = ".lineage-clone-"


@dataclass
class FetchResult:
    remote: str
    url: str
    refs: dict[str, str] = field(default_factory=dict)  # the remote's refs
    head: str | None = None  # the branch the remote's HEAD names
    changed: list[dict] = field(default_factory=list)  # tracking refs that moved: ref, old, new
    merged: list[dict] = field(default_factory=list)  # local notes refs the remote's were merged into: ref, old, new
    objects_received: int = 0
    bytes_received: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


@dataclass
class PullResult:
    fetch: FetchResult
    updated: list[RefUpdate] = field(default_factory=list)  # local refs created or moved
    conflicts: list[RefUpdate] = field(default_factory=list)  # remote refs not taken, and why
    renamed: list[dict] = field(default_factory=list)  # with renumber: old name/id -> new name/id
    checked_out: str | None = None  # the version written into the work folder
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"fetch": asdict(self.fetch), "updated": [u.to_dict() for u in self.updated],
                "conflicts": [u.to_dict() for u in self.conflicts], "renamed": self.renamed,
                "checked_out": self.checked_out, "notes": self.notes}


@dataclass
class CloneResult:
    path: str  # the folder holding .lineage
    store: str
    remote: str
    url: str
    versions: int
    refs: int
    head: str | None
    head_name: str | None
    objects_received: int
    bytes_received: int
    work_dir: str | None
    files_written: int
    seconds: float
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ fetch


def fetch(repo: Repo, remote: str | None = None, *, progress: Progress = NULL,
          workers: int | None = None) -> FetchResult:
    """Receive the remote's refs and every object under them that this store lacks.

    The remote is untrusted: its ref names, every object received (hash, tree entry names,
    version names) and what each ref names (a version tag the commit of that version) are checked
    before anything is placed. Objects wait in a batch and become visible together once all
    passed; then the tracking refs ``refs/remotes/<remote>/...`` are set. On any error nothing is
    placed and no ref moves. Local branches and tags are not touched (see pull); the remote's
    evaluation notes, which have no history to move along, are merged into the local ones
    (docs/format.md, "Notes on remotes").
    """
    rs = open_session(repo, remote, workers)
    t0 = time.monotonic()
    res = FetchResult(rs.name, rs.url)
    with repo.writing():
        rid = rs.identity(create=False)
        if rid is None:
            res.warnings.append(f"{rs.url} is empty: nothing was pushed there yet")
            return res
        known = KnownObjects(repo, rid)
        res.refs, res.warnings = read_remote_refs(repo, rs, strict=True)
        head = rs.backend.read(HEAD_KEY)
        if head is not None:
            text = head[0].decode("utf-8", "replace").strip()
            if text.startswith(SYMREF_PREFIX) and text[len(SYMREF_PREFIX):] in res.refs:
                res.head = text[len(SYMREF_PREFIX):]
        roots = {oid: f"{ref} on {rs.name}" for ref, oid in sorted(res.refs.items(), reverse=True)}
        batch = repo.objects.batch()
        moved = {ref: oid for ref, oid in res.refs.items() if ref in MERGES and repo.refs.read(ref) != oid}
        try:
            n, b, _ = download_closure(repo, rs, roots, known, progress, into=batch)
            _check_ref_targets(repo, batch, rs, res.refs)
            for ref, oid in sorted(moved.items()):
                MERGES[ref](batch, None, oid)  # checks the remote's notes whole before anything is placed
            batch.flush()
        except BaseException:
            batch.discard()
            raise
        res.objects_received, res.bytes_received = n, b
        known.add_complete(roots)
        known.save()
        for ref, oid in sorted(moved.items()):  # notes have no history: the union, never one side
            old, new = merge_into_local(repo, ref, oid, f"fetch: merge {rs.name}")
            if new != old:
                res.merged.append({"ref": ref, "old": old, "new": new})
        values: dict[str, str | None] = dict(res.refs)
        prefix = f"refs/remotes/{rs.name}/"
        for tr in repo.refs.names(prefix):
            ref = "refs/" + tr[len(prefix):]
            if ref not in values and ref.startswith(NAMESPACES):
                values[ref] = None
        res.changed = set_tracking(repo, rs.name, values, f"fetch: {rs.name}")
    res.seconds = time.monotonic() - t0
    return res


def _check_ref_targets(repo: Repo, store: ObjectStore, rs: RemoteSession, refs: dict[str, str]) -> None:
    """Each remote ref that moved since the last fetch names an object of its namespace's type,
    and a version tag the commit that carries its name (InvalidName naming the ref otherwise)."""
    for ref, oid in sorted(refs.items()):
        if trackable(rs.name, ref) and repo.refs.read(tracking_ref(rs.name, ref)) == oid:
            continue  # checked when it was fetched
        want = NOTE_REFS.get(ref) or REF_TYPES[namespace_of(ref)]
        got = store.header(oid).type
        problem = f"names a {got}, not a {want}" if got != want else None
        short = ref[len("refs/tags/"):]
        if problem is None and ref.startswith("refs/tags/") and parse_version(short) is not None:
            name = store.get(oid, "commit").name
            if name != short:
                problem = f"names the commit of version {name!r} ({oid})"
        if problem is not None:
            raise InvalidName(f"ref {ref} on remote {rs.name} {problem}", hint=untrusted_hint(rs.name))


# ------------------------------------------------------------------------------ pull


def pull(repo: Repo, remote: str | None = None, *, progress: Progress = NULL, renumber: bool = False,
         workers: int | None = None, update_work: bool = True) -> PullResult:
    """Fetch, then bring the remote's versions into the local names.

    New remote tags become local tags; a local branch moves forward to the remote's when it is
    an ancestor (never backwards, never across a divergence); a run moves forward only if it is
    already here (another machine's runs stay in ``refs/remotes/``); the work folder follows the
    active branch when it has no changes. Conflicts are reported, never forced. With ``renumber``,
    versions that exist only here and whose numbers collide with the remote's are renamed after
    the remote's highest number first (see :func:`renumber_local`).
    """
    from ..versions.checkout import checkout

    fr = fetch(repo, remote, progress=progress, workers=workers)
    res = PullResult(fr)
    with repo.writing():
        if renumber:
            res.renamed, notes = renumber_local(repo, fr.remote, fr.refs)
            res.notes.extend(notes)
        tracked_before = {c["ref"]: c["old"] for c in fr.changed}
        head_branch = repo.head_branch()
        local_numbers: dict[int, str] = {}
        for name in repo.versions():
            local_numbers[parse_version(name)[0]] = name  # type: ignore[index]

        def order(ref: str) -> tuple:
            return ({"refs/tags/": 0, "refs/data/": 1, "refs/runs/": 2, "refs/heads/": 3}.get(namespace_of(ref), 4),
                    ref)

        for ref in sorted(fr.refs, key=order):
            rid = fr.refs[ref]
            if not repo.objects.has(rid):
                continue
            ns = namespace_of(ref)
            cur = repo.refs.read(ref)
            if ref in MERGES:
                continue  # fetch merged it into the local ref
            if cur == rid or (ns == "refs/runs/" and cur is None):
                continue  # another machine's training run stays theirs (clone takes it, for recovery)
            u = RefUpdate(ref, tracking_ref(fr.remote, ref), cur, rid, "new" if cur is None else "updated")
            if ns == "refs/tags/":
                n = version_number(ref)
                if cur is not None:
                    u.status, u.reason = "rejected", (f"your tag is {describe(repo, cur)}, the remote's is "
                                                      f"{describe(repo, rid)}; tags never move")
                elif n is not None and n in local_numbers and f"refs/tags/{local_numbers[n]}" != ref:
                    u.status, u.reason = "rejected", (
                        f"version {n:03d} is {local_numbers[n]} here"
                        f"; the remote's {ref[len('refs/tags/'):]} was not taken "
                        f"(`lin pull --renumber {fr.remote}` renames yours)")
            elif cur is not None and ns in ("refs/heads/", "refs/runs/"):
                if is_ancestor(repo, rid, cur, ns, ref):
                    continue  # local is ahead: push it
                copy = ns == "refs/runs/" and tracked_before.get(tracking_ref(fr.remote, ref)) == cur
                if not copy and not is_ancestor(repo, cur, rid, ns, ref):  # a copy that did not move follows
                    u.status, u.reason = "rejected", (
                        f"diverged: yours is at {describe(repo, cur)}, the remote's at {describe(repo, rid)}"
                        + (f" (`lin pull --renumber {fr.remote}` keeps yours on a branch of its own)"
                           if ns == "refs/heads/" else ""))
            elif cur is not None:
                before = tracked_before.get(tracking_ref(fr.remote, ref), rid)
                if before == rid:
                    continue  # the remote did not move; yours did: push it
                if before != cur:
                    u.status, u.reason = "rejected", f"changed here and on the remote (yours: {describe(repo, cur)})"
            if u.status == "rejected":
                res.conflicts.append(u)
                continue
            if ref == head_branch and update_work and repo.path is not None and repo.work_dir().exists():
                # the work folder first (it refuses to overwrite changed files), then the branch
                try:
                    checkout(repo, rid, progress=progress, activate=False)
                    res.checked_out = repo.name_of(rid)
                except (Refused, InvalidInput) as e:  # changed files, or a work folder lin may not write
                    u.status, u.reason = "rejected", f"{e}; commit your changes, then pull again"
                    res.conflicts.append(u)
                    continue
            if ns == "refs/notes/":
                repo.require_format(NOTES_FORMAT)
            repo.update_ref(ref, cur, rid, f"pull: {fr.remote}")
            u.written = True
            if ref.startswith("refs/tags/") and version_number(ref) is not None:
                local_numbers[version_number(ref)] = ref[len("refs/tags/"):]  # type: ignore[index]
            res.updated.append(u)
    return res


def renumber_local(repo: Repo, remote: str, remote_refs: dict[str, str]) -> tuple[list[dict], list[str]]:
    """Rename versions that exist only here and whose numbers the remote uses for others.

    Each such version (and every local-only version after it) is written again as a new commit
    with the same tree, data, metrics and message, named with the next free number after the
    remote's highest, its parents mapped to the renamed ones; its old name is removed (the
    reflog keeps it, so nothing is lost). A local branch that diverged from the remote's branch
    of the same name is kept under ``<branch>-<version>`` and the local branch is set to the
    remote's; HEAD stays on your line. Returns (renamed, notes).
    """
    from ..core.names import version_name
    from ..core.objects import Commit

    remote_ids: set[str] = set()
    for ref, rid in remote_refs.items():
        if ref.startswith(("refs/heads/", "refs/tags/")) and repo.objects.has(rid):
            remote_ids.update(cid for cid, _ in repo.all_ancestors(rid))
    remote_numbers = {version_number(r) for r in remote_refs} - {None}
    versions = repo.versions()
    local_only = [(n, cid) for n, cid in versions.items() if cid not in remote_ids and f"refs/tags/{n}" not in remote_refs]
    collide = [n for n, _ in local_only if parse_version(n)[0] in remote_numbers]  # type: ignore[index]
    notes: list[str] = []
    if not collide:
        return [], notes
    first = min(parse_version(n)[0] for n in collide)  # type: ignore[index]
    to_rename = [(n, cid) for n, cid in local_only if parse_version(n)[0] >= first]  # type: ignore[index]
    next_n = max([repo.next_version_number(), *(x + 1 for x in remote_numbers if x is not None)])
    mapping: dict[str, str] = {}
    renamed: list[dict] = []
    with repo.refs.locked():
        for old_name, old_id in to_rename:
            c = repo.commit(old_id)
            slug = parse_version(old_name)[1]  # type: ignore[index]
            new_name = version_name(next_n, slug)
            next_n += 1
            d = c.to_dict()
            d.update(name=new_name, parents=[mapping.get(p, p) for p in c.parents])
            d["extra"] = {**(c.extra or {}), "renamed_from": {"name": old_name, "id": old_id}}
            new_id = repo.objects.put_object(Commit.from_dict(d))
            mapping[old_id] = new_id
            repo.update_ref(f"refs/tags/{new_name}", None, new_id, f"renumber: {old_name} -> {new_name}")
            repo.update_ref(f"refs/tags/{old_name}", old_id, None, f"renumber: {old_name} -> {new_name}")
            renamed.append({"old_name": old_name, "old_id": old_id, "name": new_name, "id": new_id})
        # branches and HEAD follow the renamed commits
        for bname, bid in repo.branches().items():
            ref = f"refs/heads/{bname}"
            renamed_to = mapping.get(bid)
            if renamed_to is None:
                continue
            remote_tip = remote_refs.get(ref)
            if remote_tip and repo.objects.has(remote_tip) and not is_ancestor(repo, remote_tip, renamed_to,
                                                                                "refs/heads/"):
                keep = f"{bname}-{repo.name_of(renamed_to)}"
                repo.update_ref(f"refs/heads/{keep}", None, renamed_to, f"renumber: your line of {bname}")
                repo.update_ref(ref, bid, remote_tip, f"renumber: {bname} follows {remote}")
                if repo.head_branch() == ref:
                    repo.set_head(f"refs/heads/{keep}", renamed_to, f"renumber: stay on your line ({keep})")
                notes.append(f"your line of {bname} is now branch {keep}; {bname} follows {remote}")
            else:
                repo.update_ref(ref, bid, renamed_to, "renumber")
        head = repo.head()
        if repo.head_branch() is None and head in mapping:
            repo.set_head(None, mapping[head], "renumber")
    return renamed, notes


# ------------------------------------------------------------------------------ clone


def clone(url: str, dest: os.PathLike | str, *, endpoint_url: str | None = None, region: str | None = None,
          name: str = "origin", backup: bool = False, progress: Progress = NULL, checkout: bool = True,
          workers: int | None = None, repo_class: type[Repo] = Repo) -> tuple[Repo, CloneResult]:
    """Create ``dest/.lineage`` from a remote: every object, every ref, HEAD; then check out HEAD.

    ``dest`` may exist (recovery after ``rm -rf .lineage``) but must not hold a store. The store
    is built in ``dest/.lineage-clone-<pid>-<random>`` and renamed to ``.lineage`` once complete,
    so ``dest/.lineage`` never exists half-made: on an error what was created is removed, and
    what a killed clone left is removed by the next clone into ``dest``.
    """
    t0 = time.monotonic()
    dest = Path(dest).absolute()
    store = dest / ".lineage"
    if os.path.lexists(store):
        raise RefConflict(f"{store} already exists; clone into another folder",
                          hint=f"to update an existing store use `lin pull`; a clone stopped while it wrote the "
                               f"work folder left a complete store: `lin --store {store} checkout HEAD` finishes it")
    created = not dest.exists()
    partial = dest / f"{PARTIAL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        if not created:
            _remove_killed_clones(dest)
        dest.mkdir(parents=True, exist_ok=True)
        spec, fr = _fill_clone(repo_class.init(partial), name, url, endpoint_url, region, backup, progress, workers)
        if os.path.lexists(store):
            raise RefConflict(f"{store} appeared while cloning; clone into another folder")
        kill_point("clone-rename")
        os.rename(partial, store)
        fsync_dir(dest)
    except BaseException:
        _remove_tree(dest if created else partial)
        raise
    repo = repo_class.open(store)
    head = repo.head()
    written = 0
    work: str | None = None
    if checkout and head is not None:
        from ..versions.checkout import checkout as do_checkout
        try:
            info = do_checkout(repo, "HEAD", progress=progress, activate=False)
        except (Refused, InvalidInput) as e:
            vname = repo.name_of(head)
            raise type(e)(f"cloned into {store}, but the work folder was left as it is: {e}",
                          hint=f"the store is complete; to write {vname} over those files: "
                               f"lin --store {store} checkout {vname} --force") from e
        written, work = info.written, info.target
    res = CloneResult(str(dest), str(store), name, spec.url, len(repo.versions()), len(fr.refs), head,
                      repo.name_of(head) if head else None, fr.objects_received, fr.bytes_received, work,
                      written, time.monotonic() - t0, list(fr.warnings))
    return repo, res


def _fill_clone(repo: Repo, name: str, url: str, endpoint_url: str | None, region: str | None, backup: bool,
                progress: Progress, workers: int | None) -> tuple[RemoteSpec, FetchResult]:
    """Fetch everything into the new store ``repo``, then set its refs and HEAD as the remote's."""
    spec = add_remote(repo, name, url, endpoint_url=endpoint_url, region=region, backup=backup)
    fr = fetch(repo, name, progress=progress, workers=workers)
    if not fr.refs:
        raise NotFound(f"{spec.url}: nothing to clone (no versions were pushed there)",
                       hint="check the URL and --endpoint-url; `lin push` fills a remote")
    for ref in sorted(fr.refs):
        if repo.objects.has(fr.refs[ref]) and repo.refs.read(ref) != fr.refs[ref]:  # fetch set merged notes
            if ref.startswith("refs/notes/"):
                repo.require_format(NOTES_FORMAT)
            repo.update_ref(ref, None, fr.refs[ref], f"clone: from {spec.url}")
    target = fr.head
    heads = sorted(r for r in fr.refs if r.startswith("refs/heads/"))
    if target is None and heads:
        target = "refs/heads/main" if "refs/heads/main" in heads else heads[0]
    if target is not None:
        repo.refs.set_symbolic("HEAD", target, f"clone: from {spec.url}")
    elif repo.versions():
        latest = list(repo.versions().values())[-1]
        repo.set_head(None, latest, f"clone: from {spec.url}")
    return spec, fr


def _remove_killed_clones(dest: Path) -> None:
    """Remove what clones into ``dest`` that were killed left (their process is gone)."""
    for p in dest.iterdir():
        if p.name.startswith(PARTIAL_PREFIX) and p.is_dir() and not p.is_symlink():
            try:
                pid = int(p.name[len(PARTIAL_PREFIX):].split("-", 1)[0])
            except ValueError:
                continue
            if not pid_alive(pid):
                _remove_tree(p)


def _remove_tree(path: Path) -> None:
    """rm -rf that also removes read-only object folders."""
    def onerror(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o755)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o755)
            func(p)
        except OSError:
            pass
    if path.exists():
        for root, dirs, _files in os.walk(path):
            for d in dirs:
                try:
                    os.chmod(os.path.join(root, d), stat.S_IRWXU)
                except OSError:
                    pass
        shutil.rmtree(path, onerror=onerror)


def remove_remote_refs(repo: Repo, name: str) -> int:
    """Delete the tracking refs ``refs/remotes/<name>/...`` (after ``lin remote rm``)."""
    n = 0
    with repo.writing():
        for tr in repo.refs.names(f"refs/remotes/{name}/"):
            cur = repo.refs.read(tr)
            repo.update_ref(tr, cur, None, f"remote rm: {name}")
            n += 1
    return n
