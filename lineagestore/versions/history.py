"""Reading the history of versions: log, show, the registry view.

Every function takes a :class:`~lineagestore.core.repo.Repo` and returns dataclasses; none prints.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

from ..core.errors import NotFound
from ..core.objects import Commit
from ..core.repo import Repo
from .models import FileInfo, walk_tree
from .tokenizer import tree_tokenizer_id


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
        datasets=_summaries(repo, c), metrics=dict(c.metrics),
        params=dict(c.params), message=c.message, author=c.author, code=c.code, env=dict(c.env),
        active=(cid == (head if head is not None else repo.head())),
        branches=(branch_map or {}).get(cid, []),
        name_removed=repo.refs.resolve(f"refs/tags/{c.name}") != cid)


def dataset_summary(repo: Repo, dataset_id: str, tokenizer: str | None = None) -> dict:
    """A version's data file: name, fingerprint, examples, and its token count under ``tokenizer``
    (the version's own tokenizer id; None when that count is unknown). A file the version trained
    only in part (docs/data.md) has ``part``: {"records": trained, "of": the file's records}."""
    try:
        d = repo.objects.get(dataset_id, "dataset")
    except Exception:  # noqa: BLE001 - a history listing must not die on one bad object
        return {"id": dataset_id, "file": None, "hash": None, "tokens": None}
    tokens = d.tokens.get(tokenizer) if tokenizer else None
    out = {"id": dataset_id, "file": d.filename, "hash": d.content, "examples": d.examples, "tokens": tokens}
    part = (d.extra or {}).get("part_of")
    if isinstance(part, dict):
        out["part"] = {"records": int(d.extra.get("distinct", 0)), "of": int(part.get("distinct", 0))}
    return out


def _summaries(repo: Repo, c: Commit) -> list[dict]:
    """The summaries of a commit's data files, counted with the commit's own tokenizer."""
    if not c.datasets:
        return []
    tid = tree_tokenizer_id(repo.objects, c.tree)
    return [dataset_summary(repo, d, tid) for d in c.datasets]


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
        # quadratic: 2,000 versions took 45 s); from every name, so a branch whose versions'
        # names were removed (`lin rm`) still shows
        seen: dict[str, Commit] = {}
        stack = list(repo.tags().values()) + list(repo.branches().values()) + ([head] if head else [])
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


def off_branch(repo: Repo) -> list[str]:
    """Version names on no branch's line (nor HEAD's): side lines, e.g. a commit that found its
    branch moved by another command while it ran."""
    starts = list(repo.branches().values()) + ([repo.head()] if repo.head() else [])
    seen: set[str] = set()
    stack = [c for c in starts if c]
    while stack:
        cur = stack.pop()
        if cur in seen:
            continue
        seen.add(cur)
        stack.extend(p for p in repo.commit(cur).parents if p not in seen)
    return [name for name, cid in repo.versions().items() if cid not in seen]


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
                              for d in _summaries(repo, c)],
            "created": c.created,
            "metrics": c.metrics,
            "active": cid == head,
        }
    return out


def require_versions(repo: Repo) -> None:
    if not repo.versions():
        raise NotFound("this store has no versions yet", hint="import a model with `lin import DIR --name NAME`")
