"""Protection rules, removing a name, and recovery (reflog, restore).

What is protected (``lin rm`` refuses without ``--force --confirm-lineage`` and the typed name):

- every version name (``refs/tags/vNNN_slug``): names are never reused, so removing one is rare;
- a base version (a root, or imported), and a version with children (they would lose their
  named ancestor; :attr:`Protection.orphans` lists every such descendant);
- a training run (``refs/runs/``) and a registered data file (``refs/data/``);
- the last name of a commit that nothing else names (it would survive only in the reflog).

Never removable by ``lin rm``: the active version's name and the branch HEAD is on (check out
another version first), and the remote-tracking refs ``refs/remotes/`` and ``refs/backup/``.

Removing a name is one ref update (compare-and-swap, logged in the reflog); it never deletes
objects. :func:`restore` brings a removed name back from its reflog, and objects back from trash.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..core.errors import AmbiguousRevision, Conflict, InvalidInput, NotFound, Refused, RevisionNotFound
from ..core.ids import is_id_prefix, is_object_id
from ..core.names import check_name, parse_version
from ..core.refs import ReflogEntry, check_ref_name
from ..core.repo import Repo
from .reachability import last_removal
from .trash import RestoredObjects, find_in_trash, restore_closure

NAMESPACES = ("refs/tags/", "refs/heads/", "refs/runs/", "refs/data/")
_READ_ONLY = ("refs/remotes/", "refs/backup/")


# ----------------------------------------------------------------------------- names


def short_name(ref: str) -> str:
    for ns in ("refs/tags/", "refs/heads/"):
        if ref.startswith(ns):
            return ref[len(ns):]
    return ref


def _lookup(repo: Repo, name: str, *, exists) -> str:
    """The full ref for a user-given ``name`` among refs for which ``exists(ref)`` holds."""
    if not isinstance(name, str) or "\0" in name:
        raise InvalidInput(f"invalid name {name!r}")
    if name.startswith("refs/"):
        check_ref_name(name)
        if exists(name):
            return name
        raise RevisionNotFound(f"no such name {name!r}")
    check_name(name, "name")
    found = [ns + name for ns in ("refs/tags/", "refs/heads/") if exists(ns + name)]
    if not found and parse_version(name + "_x"):  # a version number alone: v003
        found = sorted(r for r in _known_refs(repo) if r.startswith(f"refs/tags/{name}_") and exists(r)
                       and parse_version(r[len("refs/tags/"):]))
    if len(found) > 1:
        raise AmbiguousRevision(name, found)
    if not found:
        raise RevisionNotFound(f"no such name {name!r}", hint="see `lin log --all`, `lin tag`, `lin branch`")
    return found[0]


def _known_refs(repo: Repo) -> set[str]:
    return set(repo.refs.names("refs/")) | {n for n in repo.refs.reflog_names() if n.startswith("refs/")}


def find_ref(repo: Repo, name: str) -> str:
    """The full ref of an existing name: a version name or its number (``v003``), a tag, a
    branch, or a full ``refs/...`` name."""
    return _lookup(repo, name, exists=lambda r: repo.refs.read(r) is not None)


# ----------------------------------------------------------------------------- protection


@dataclass
class Protection:
    ref: str  # full ref
    name: str  # what the user types to confirm
    kind: str  # version | tag | branch | run | data
    target: str  # the id it names
    reasons: list[str] = field(default_factory=list)  # non-empty: needs --force --confirm-lineage
    refuse: str | None = None  # why even --force cannot remove it
    orphans: list[str] = field(default_factory=list)  # descendants that lose their named ancestor

    @property
    def protected(self) -> bool:
        return bool(self.reasons or self.refuse)

    def to_dict(self) -> dict:
        return {**asdict(self), "protected": self.protected}


def _commit_graph(repo: Repo, tips: list[str]) -> dict[str, list[str]]:
    """commit id -> parent ids, for every commit reachable from ``tips``."""
    parents: dict[str, list[str]] = {}
    stack = list(tips)
    while stack:
        cid = stack.pop()
        if cid in parents:
            continue
        try:
            c = repo.commit(cid)
        except Exception:  # noqa: BLE001 - a missing commit ends its line; fsck reports it
            parents[cid] = []
            continue
        parents[cid] = list(c.parents)
        stack.extend(c.parents)
    return parents


def descendants(repo: Repo, cid: str) -> list[str]:
    """Every commit reachable from a ref or HEAD that has ``cid`` as an ancestor."""
    values = repo.refs.as_dict("refs/")
    head = repo.head()
    tips = [v for n, v in values.items() if n.startswith(("refs/tags/", "refs/heads/"))]
    tips += [head] if head else []
    graph = _commit_graph(repo, [t for t in tips if _is_commit(repo, t)])
    children: dict[str, list[str]] = {}
    for c, ps in graph.items():
        for p in ps:
            children.setdefault(p, []).append(c)
    out: list[str] = []
    seen = {cid}
    stack = list(children.get(cid, []))
    while stack:
        c = stack.pop()
        if c in seen:
            continue
        seen.add(c)
        out.append(c)
        stack.extend(children.get(c, []))
    return out


def _is_commit(repo: Repo, oid: str) -> bool:
    try:
        return repo.objects.header(oid).type == "commit"
    except Exception:  # noqa: BLE001
        return False


def protection(repo: Repo, name: str) -> Protection:
    """Why the name ``name`` may not be removed without confirmation (or at all)."""
    ref = find_ref(repo, name)
    target = repo.refs.resolve(ref) or ""
    short = short_name(ref)
    kind = ("version" if ref.startswith("refs/tags/") and parse_version(short) else
            "tag" if ref.startswith("refs/tags/") else "branch" if ref.startswith("refs/heads/") else
            "run" if ref.startswith("refs/runs/") else "data" if ref.startswith("refs/data/") else "other")
    p = Protection(ref, short, kind, target)
    head = repo.head()
    if ref.startswith(_READ_ONLY) or kind == "other":
        p.refuse = "a remote-tracking name, managed by `lin remote`"
        return p
    if kind == "branch" and repo.head_branch() == ref:
        p.refuse = "the branch the active version is on (HEAD)"
        return p
    is_commit = _is_commit(repo, target)
    if kind == "version":
        if target == head:
            p.refuse = "the active version (HEAD)"
            return p
        p.reasons.append("every version name is protected (names are never reused)")
    if kind == "run":
        p.reasons.append("it names a training run's checkpoints (in progress or resumable)")
    if kind == "data":
        p.reasons.append("it is a registered data file (the ledger of what was trained)")
    if is_commit and kind in ("version", "tag", "branch"):
        c = repo.commit(target)
        if kind == "version":
            if not c.parents or c.kind == "import":
                p.reasons.append("it is a base version (" + ("imported" if c.kind == "import" else "a root") + ")")
            desc = descendants(repo, target)
            named = sorted((repo.name_of(d) or d[:12] for d in desc),
                           key=lambda n: (parse_version(n) or (10**9, n)))
            if desc:
                kids = [d for d in desc if target in _parents(repo, d)]
                p.reasons.append(f"it has {len(kids)} child version(s): "
                                 + ", ".join(repo.name_of(k) or k[:12] for k in kids))
                p.orphans = named
    others = [n for n, v in repo.refs.as_dict("refs/").items() if v == target and n != ref]
    if not others and target != head and not p.reasons:
        p.reasons.append(f"it is the last name of {target[:12]}: without it, only the reflog keeps it "
                         "(and gc removes it once the reflog entry expires)")
    return p


def _parents(repo: Repo, cid: str) -> list[str]:
    try:
        return list(repo.commit(cid).parents)
    except Exception:  # noqa: BLE001
        return []


# ----------------------------------------------------------------------------- rm


@dataclass
class RemoveResult:
    ref: str
    name: str
    id: str
    forced: bool
    orphans: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def remove_name(repo: Repo, name: str, *, force: bool = False, confirm_lineage: bool = False,
                confirm_name: str | None = None) -> RemoveResult:
    """Remove one name (a ref) after the protection rules allow it. Objects are never deleted.

    A protected name needs ``force`` and ``confirm_lineage`` and ``confirm_name`` equal to
    :attr:`Protection.name`; otherwise :class:`Refused` says why. The check and the removal run
    under the refs lock, so the name removed is the one checked.
    """
    with repo.writing(), repo.refs.locked():
        p = protection(repo, name)
        if p.refuse:
            raise Refused(f"{p.name} is {p.refuse}; it cannot be removed",
                          hint=("check out another version first (lin checkout REV)"
                                if "HEAD" in p.refuse else None))
        if p.reasons:
            why = "; ".join(p.reasons)
            if not (force and confirm_lineage):
                raise Refused(f"{p.name} is protected: {why}",
                              hint=f"to remove the name anyway: lin rm {p.name} --force --confirm-lineage "
                                   "(objects are kept; lin restore brings the name back)")
            if confirm_name != p.name:
                shown = "nothing" if confirm_name is None else repr(confirm_name)
                raise Refused(f"removing {p.name} needs its full name typed to confirm; got {shown}",
                              hint=f"pass --confirm-name {p.name} (exactly), or run it in a terminal")
        repo.update_ref(p.ref, p.target, None, f"rm: {p.name}" + (" (forced)" if p.reasons else ""))
    return RemoveResult(p.ref, p.name, p.target, bool(p.reasons), p.orphans)


# ----------------------------------------------------------------------------- reflog


@dataclass
class ReflogLine:
    ref: str
    old: str | None
    new: str | None
    old_name: str | None
    new_name: str | None
    who: str
    time: float
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def reflog(repo: Repo, name: str | None = None) -> list[ReflogLine]:
    """Every change of one ref (``name``: a current or removed name, or HEAD), or of all refs;
    newest first."""
    if name is None:
        refs = repo.refs.reflog_names()
    elif name in ("HEAD", "@"):
        refs = ["HEAD"]
    else:
        refs = [_lookup(repo, name, exists=lambda r: bool(repo.refs.reflog(r)))]
    names: dict[str, str | None] = {}

    def label(oid: str | None) -> str | None:
        if oid is None:
            return None
        if oid not in names:
            names[oid] = repo.name_of(oid) if _is_commit(repo, oid) else None
        return names[oid]

    out = [ReflogLine(r, e.old, e.new, label(e.old), label(e.new), e.who, e.time, e.message)
           for r in refs for e in reversed(repo.refs.reflog(r))]
    out.sort(key=lambda x: x.time, reverse=True)  # stable: within a second, later lines first
    return out


# ----------------------------------------------------------------------------- restore


@dataclass
class RestoreResult:
    what: str  # what the user asked for
    id: str
    ref: str | None  # the name brought back (None when only objects came back)
    objects: int  # objects brought back from trash
    bytes: int
    batches: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def _removed(repo: Repo, what: str) -> tuple[str, ReflogEntry] | None:
    """The ref ``what`` names and the reflog entry that removed it (None if not a removed name)."""
    try:
        ref = _lookup(repo, what, exists=lambda r: bool(repo.refs.reflog(r)))
    except RevisionNotFound:
        return None
    if repo.refs.read(ref) is not None:
        target = repo.refs.resolve(ref)  # None: a symbolic ref to a name that does not exist
        raise Conflict(f"{short_name(ref)} exists" + (f" (it names {target[:12]})" if target else "")
                       + "; nothing to restore")
    entry = last_removal(repo.refs.reflog(ref))
    return None if entry is None else (ref, entry)


def restore(repo: Repo, what: str) -> RestoreResult:
    """Bring back a removed name (from its reflog) or objects (from trash), by name or id.

    A name comes back pointing where it pointed when it was removed, with every object it
    reaches restored from trash first. An id (or unique prefix of 4+ hex digits) brings that
    object and everything it links to back from trash; a commit also gets its version name back.
    """
    if not isinstance(what, str) or not what or "\0" in what:
        raise InvalidInput(f"invalid name or id {what!r}")
    with repo.writing():
        found = _removed(repo, what) if not is_object_id(what) else None
        if found is not None:
            ref, entry = found
            assert entry.old is not None
            got = restore_closure(repo, entry.old)
            repo.update_ref(ref, None, entry.old, f"restore: {short_name(ref)}")
            return RestoreResult(what, entry.old, ref, got.objects, got.bytes, got.batches)
        oid = _restore_id(repo, what)
        got = restore_closure(repo, oid)
        tag_back: str | None = None  # the version name given back to a restored commit
        if _is_commit(repo, oid):
            vname = repo.commit(oid).name
            if parse_version(vname):
                tag = f"refs/tags/{vname}"
                current = repo.refs.read(tag)
                if current is None:
                    repo.update_ref(tag, None, oid, f"restore: {vname}")
                    tag_back = tag
                elif current != oid:
                    raise Conflict(f"version name {vname} names another commit ({current[:12]})")
        if got.objects == 0 and tag_back is None:
            raise NotFound(f"{what} is already in the store and named; nothing to restore")
        return RestoreResult(what, oid, tag_back, got.objects, got.bytes, got.batches)


def _restore_id(repo: Repo, what: str) -> str:
    prefix = what.lower()
    if not is_id_prefix(prefix):
        raise NotFound(f"nothing to restore for {what!r}: no removed name, and not an object id",
                       hint="`lin reflog` lists every change of every name")
    candidates = set(find_in_trash(repo, prefix)) | set(repo.objects.resolve_prefix(prefix))
    if len(candidates) > 1:
        raise AmbiguousRevision(what, sorted(c[:12] for c in candidates))
    if not candidates:
        raise NotFound(f"nothing to restore for {what!r}: no removed name, and no such object in the "
                       "store or in trash/", hint="`lin reflog` lists removed names, `lin gc` what trash/ holds")
    return candidates.pop()


__all__ = ["Protection", "RemoveResult", "ReflogLine", "RestoreResult", "RestoredObjects", "descendants",
           "find_ref", "protection", "reflog", "remove_name", "restore"]
