"""Model versions: import, commit, checkout, status, and reading their history.

Every function takes a :class:`~lineagestore.core.repo.Repo` and returns dataclasses; none prints.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.errors import InvalidInput, NotFound
from ..core.names import check_name
from .models import (CheckoutResult, FileInfo, StatCache, WorkStatus, checkout_tree, store_folder,
                     walk_tree, work_status)
from ..core.objects import Commit
from ..core.progress import NULL, Progress
from ..core.repo import Repo, code_revision, environment


@dataclass
class CommitResult:
    id: str
    name: str
    kind: str
    parents: list[str]
    parent_names: list[str]
    tree: str
    files: int
    bytes: int
    tensors: int
    new_bytes: int
    cached_files: int
    datasets: list[str] = field(default_factory=list)


def commit_folder(repo: Repo, folder: os.PathLike | str, name: str, *, message: str = "",
                  parents: list[str] | None = None, kind: str = "commit",
                  datasets: list[str] | None = None, metrics: dict | None = None,
                  params: dict | None = None, code_path: os.PathLike | str | None = None,
                  extra: dict | None = None, exclude: tuple[str, ...] = (),
                  progress: Progress = NULL, activate: bool = True) -> CommitResult:
    """Store ``folder`` and publish it as a new named version.

    ``parents=None`` means "the active version (HEAD)", or none for an import into an empty
    store. Objects are written first, the commit and its refs last (see Repo.write_commit).
    """
    with repo.writing():
        if parents is None:
            head = repo.head()
            parents = [head] if (head and kind != "import") else []
        for p in parents:
            repo.commit(p)  # the parent must exist and verify
        cache = StatCache(repo.cache_dir / "stat.json" if repo.path else None)
        batch = repo.objects.batch()  # one wait for the disk for all the folder's objects
        try:
            stored = store_folder(batch, folder, progress=progress, stat_cache=cache, exclude=exclude,
                                  workers=int(repo.config.get("core.workers", 0)))
            batch.flush()
        except BaseException:
            batch.discard()
            raise
        cache.save(repo.tmp_dir) if repo.path else None
        cid, commit = repo.write_commit(
            tree=stored.tree, parents=parents, name=name, kind=kind, datasets=datasets,
            metrics=metrics, params=params, code=code_revision(code_path), env=environment(),
            message=message, extra=extra, move_head=activate)
    # --- remotes (issue 6): automatic backup once the commit has landed; never raises ---
    if repo.path is not None and repo.config.get("backup.remote"):
        try:
            from ..remote.backup import after_commit
            after_commit(repo, cid, progress=progress)
        except Exception:  # noqa: BLE001 - after_commit reports its own failures; the commit stands
            pass
    # --- end remotes (issue 6) ---
    return CommitResult(id=cid, name=commit.name, kind=kind, parents=list(parents),
                        parent_names=[repo.name_of(p) or p[:12] for p in parents], tree=stored.tree,
                        files=stored.files, bytes=stored.bytes, tensors=stored.tensors,
                        new_bytes=stored.new_bytes, cached_files=stored.cached_files,
                        datasets=list(datasets or []))


# --------------------------------------------------------------------------- checkout, status


@dataclass
class CheckoutInfo:
    id: str
    name: str
    target: str
    written: int
    unchanged: int
    removed: int
    bytes_written: int
    active: bool


def checkout(repo: Repo, rev: str, *, to: os.PathLike | str | None = None, force: bool = False,
             progress: Progress = NULL, activate: bool = True) -> CheckoutInfo:
    """Materialize ``rev`` into the work folder (or ``to``) and make it the active version."""
    cid = repo.resolve(rev)
    commit = repo.commit(cid)
    target = Path(to) if to is not None else repo.work_dir()
    if repo.path is not None:
        tr = target.absolute()
        if tr == repo.path or repo.path in tr.parents:
            raise InvalidInput(f"{target}: is inside the store; check out somewhere else")
    known: dict[str, str] = {}
    head = repo.head()
    if head:
        known = {f.path: f.id for f in walk_tree(repo.objects, repo.commit(head).tree)}
    res: CheckoutResult = checkout_tree(repo.objects, commit.tree, target, cache_dir=repo.cache_dir,
                                        known=known, force=force, progress=progress, commit_id=cid,
                                        workers=int(repo.config.get("core.workers", 0)))
    if activate:
        branch_ref = f"refs/heads/{rev}"
        if _is_plain_name(rev) and repo.refs.read(branch_ref) is not None:
            repo.set_head(branch_ref, cid, f"checkout: moving to {rev}")
        elif head != cid or repo.head_branch() is not None:
            repo.set_head(None, cid, f"checkout: moving to {commit.name}")
    return CheckoutInfo(cid, commit.name, res.target, res.written, res.unchanged, res.removed,
                        res.bytes_written, activate)


def _is_plain_name(rev: str) -> bool:
    try:
        check_name(rev)
        return True
    except InvalidInput:
        return False


@dataclass
class StatusInfo:
    head: str | None
    name: str | None
    branch: str | None
    work: WorkStatus | None


def status(repo: Repo, target: os.PathLike | str | None = None) -> StatusInfo:
    head = repo.head()
    branch = repo.head_branch()
    branch = branch[len("refs/heads/"):] if branch else None
    if head is None:
        return StatusInfo(None, None, branch, None)
    commit = repo.commit(head)
    wt = work_status(repo.objects, commit.tree, Path(target) if target else repo.work_dir(), repo.cache_dir)
    return StatusInfo(head, commit.name, branch, wt)


# --------------------------------------------------------------------------- history


@dataclass
class VersionInfo:
    id: str
    name: str
    kind: str
    created: str
    parents: list[str]
    parent_names: list[str]
    datasets: list[dict]
    metrics: dict
    params: dict
    message: str
    author: str
    code: dict | None
    env: dict
    active: bool
    branches: list[str]
    name_removed: bool = False  # its version name was removed with `lin rm` (the commit stays)

    def to_dict(self) -> dict:
        return asdict(self)


def version_info(repo: Repo, cid: str, commit: Commit | None = None, *, head: str | None = None,
                 branch_map: dict[str, list[str]] | None = None, names: dict[str, str] | None = None) -> VersionInfo:
    c = commit or repo.commit(cid)
    names = names or {}
    return VersionInfo(
        id=cid, name=c.name, kind=c.kind, created=c.created, parents=list(c.parents),
        parent_names=[names.get(p) or repo.name_of(p) or p[:12] for p in c.parents],
        datasets=[dataset_summary(repo, d) for d in c.datasets], metrics=dict(c.metrics),
        params=dict(c.params), message=c.message, author=c.author, code=c.code, env=dict(c.env),
        active=(cid == (head if head is not None else repo.head())),
        branches=(branch_map or {}).get(cid, []),
        name_removed=repo.refs.resolve(f"refs/tags/{c.name}") != cid)


def dataset_summary(repo: Repo, dataset_id: str) -> dict:
    try:
        d = repo.objects.get(dataset_id, "dataset")
    except Exception:  # noqa: BLE001 - a history listing must not die on one bad object
        return {"id": dataset_id, "file": None, "hash": None, "tokens": None}
    tokens = max(d.tokens.values()) if d.tokens else None
    return {"id": dataset_id, "file": d.filename, "hash": d.content, "examples": d.examples, "tokens": tokens}


def _branch_map(repo: Repo) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for b, cid in repo.branches().items():
        out.setdefault(cid, []).append(b)
    return out


def log(repo: Repo, rev: str | None = None, *, all_versions: bool = False) -> list[VersionInfo]:
    """The lineage of ``rev`` (default HEAD) back to its root; or every version with ``all_versions``."""
    head = repo.head()
    bmap = _branch_map(repo)
    if all_versions:
        # one walk over the whole history, each commit read once (a walk per version was
        # quadratic: 2,000 versions took 45 s)
        seen: dict[str, Commit] = {}
        stack = list(repo.versions().values()) + ([head] if head else [])
        while stack:
            cur = stack.pop()
            if cur in seen:
                continue
            c = seen[cur] = repo.commit(cur)
            stack.extend(p for p in c.parents if p not in seen)
        items = sorted(seen.items(), key=lambda kv: (kv[1].created, kv[1].name), reverse=True)
        names = {cid: c.name for cid, c in seen.items()}
        return [version_info(repo, cid, c, head=head or "", branch_map=bmap, names=names) for cid, c in items]
    if rev is None and head is None:
        return []
    start = repo.resolve(rev or "HEAD")
    line = list(repo.ancestry(start))
    names = {cid: c.name for cid, c in line}
    return [version_info(repo, cid, c, head=head or "", branch_map=bmap, names=names) for cid, c in line]


@dataclass
class ShowInfo:
    version: VersionInfo
    tree: str
    files: list[dict]
    tensors: dict  # count, bytes, dtypes {dtype: count}


def show(repo: Repo, rev: str) -> ShowInfo:
    cid = repo.resolve(rev)
    c = repo.commit(cid)
    files: list[FileInfo] = list(walk_tree(repo.objects, c.tree))
    count = 0
    nbytes = 0
    dtypes: Counter = Counter()
    out_files = []
    for f in files:
        entry = {"path": f.path, "type": f.type, "id": f.id, "size": f.size}
        if f.type == "tensor-file":
            tf = repo.objects.get(f.id, "tensor-file")
            ents = tf.entries()
            entry["tensors"] = len(ents)
            count += len(ents)
            for t in ents:
                nbytes += t.size
                dtypes[t.dtype] += 1
        out_files.append(entry)
    return ShowInfo(version_info(repo, cid, c, branch_map=_branch_map(repo)), c.tree, out_files,
                    {"count": count, "bytes": nbytes, "dtypes": dict(sorted(dtypes.items()))})


def registry(repo: Repo) -> dict[str, dict]:
    """All versions in the shape of the ``registry.json`` people kept by hand."""
    head = repo.head()
    out: dict[str, dict] = {}
    for name, cid in repo.versions().items():
        c = repo.commit(cid)
        out[name] = {
            "name": name,
            "id": cid,
            "parent": (repo.name_of(c.parents[0]) if c.parents else None),
            "training_data": [{"file": d["file"], "hash": d["hash"], "tokens": d["tokens"]}
                              for d in (dataset_summary(repo, x) for x in c.datasets)],
            "created": c.created,
            "metrics": c.metrics,
            "active": cid == head,
        }
    return out


def require_versions(repo: Repo) -> None:
    if not repo.versions():
        raise NotFound("this store has no versions yet", hint="import a model with `lin import DIR --name NAME`")
