"""Consistency checks of a store. Reads only; never changes anything.

``check(repo)`` re-hashes every object (every byte), checks that every ref and reflog names a
valid object of the right type, and that every object reachable from them is present. With
``quick=True`` it skips re-hashing large blobs and only reads headers and metadata objects.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from .errors import CorruptObject, LinError, ObjectNotFound
from .hashing import is_object_id
from .objects import LINKING_TYPES
from .progress import NULL, Progress
from .repo import Repo

REF_TYPES = {"refs/heads/": "commit", "refs/tags/": "commit", "refs/runs/": "checkpoint",
             "refs/data/": "dataset"}


@dataclass
class Problem:
    kind: str  # corrupt | missing | bad-ref | bad-reflog | ...
    subject: str  # the object id, ref or file concerned
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FsckReport:
    objects: int = 0
    bytes_verified: int = 0
    refs: int = 0
    reachable: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def roots(repo: Repo) -> dict[str, str]:
    """Every id a ref, HEAD or reflog entry names -> a description of where it is named."""
    out: dict[str, str] = {}
    for name, oid in repo.refs.as_dict("refs/").items():
        out.setdefault(oid, name)
    head = repo.head()
    if head:
        out.setdefault(head, "HEAD")
    for name in repo.refs.reflog_names():
        for e in repo.refs.reflog(name):
            for x in (e.old, e.new):
                if x:
                    out.setdefault(x, f"reflog of {name}")
    return out


def check(repo: Repo, *, quick: bool = False, progress: Progress = NULL) -> FsckReport:
    rep = FsckReport()
    store = repo.objects
    ids = list(store.iter_ids())
    rep.objects = len(ids)
    bad: set[str] = set()

    def verify(oid: str) -> tuple[str, int, Problem | None]:
        try:
            h = store.header(oid)
            if quick and h.type not in LINKING_TYPES:
                return oid, 0, None
            store.get_raw(oid)
            return oid, h.size, None
        except LinError as e:
            return oid, 0, Problem("corrupt", oid, str(e))

    progress.start("verifying objects", len(ids), "objects")
    with ThreadPoolExecutor() as pool:
        for oid, n, prob in pool.map(verify, ids):
            rep.bytes_verified += n
            if prob:
                rep.problems.append(prob)
                bad.add(oid)
            progress.advance(1)
    progress.finish()

    # refs point at objects of the right type
    for name in repo.refs.names("refs/"):
        rep.refs += 1
        raw = repo.refs.read(name)
        if raw is None or not is_object_id(raw):
            rep.problems.append(Problem("bad-ref", name, f"ref {name} does not hold an object id: {raw!r}"))
            continue
        want = next((t for p, t in REF_TYPES.items() if name.startswith(p)), None)
        if not store.has(raw):
            rep.problems.append(Problem("missing", raw, f"object {raw} named by {name} is missing"))
            continue
        if want and raw not in bad:
            t = store.header(raw).type
            if t != want:
                rep.problems.append(Problem("bad-ref", name, f"ref {name} points at a {t}, expected a {want}"))
    head_raw = repo.refs.read("HEAD")
    if head_raw is None:
        rep.problems.append(Problem("bad-ref", "HEAD", "HEAD is missing"))

    # everything reachable is present
    seen: set[str] = set()
    root_map = roots(repo)
    stack = [(oid, where) for oid, where in root_map.items()]
    while stack:
        oid, where = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        if not store.has(oid):
            rep.problems.append(Problem("missing", oid, f"object {oid} (reached from {where}) is missing"))
            continue
        if oid in bad:
            continue
        try:
            t = store.header(oid).type
            if t in LINKING_TYPES:
                obj = store.get(oid)
                for child in obj.links():
                    stack.append((child, where))
        except (CorruptObject, ObjectNotFound) as e:
            rep.problems.append(Problem("corrupt", oid, str(e)))
    rep.reachable = len(seen)
    seen_problems = set()
    unique = []
    for p in rep.problems:
        key = (p.kind, p.subject)
        if key not in seen_problems:
            seen_problems.add(key)
            unique.append(p)
    rep.problems = unique
    return rep
