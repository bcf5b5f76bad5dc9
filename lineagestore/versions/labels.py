"""Extra names for versions: tags (immutable) and branches (lines of training that move)."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import InvalidName, RefConflict
from ..core.names import check_name, parse_version
from ..core.repo import Repo


@dataclass
class Label:
    kind: str  # "tag" | "branch"
    name: str
    id: str
    active: bool = False  # a branch made the active line (HEAD)


def tag(repo: Repo, name: str, rev: str = "HEAD") -> Label:
    """Name the version ``rev`` as ``name``; a tag never moves, so an existing one is refused."""
    check_name(name, "tag name")
    if parse_version(name):
        raise InvalidName(f"invalid tag name {name!r}: vNNN_ names are given by lin to new versions")
    with repo.writing():
        cid = repo.resolve(rev)
        if repo.refs.read(f"refs/tags/{name}") is not None:
            raise RefConflict(f"tag {name!r} already exists; tags never move")
        repo.update_ref(f"refs/tags/{name}", None, cid, f"tag: {name}")
    return Label("tag", name, cid)


def branch(repo: Repo, name: str, rev: str = "HEAD", *, switch: bool = False) -> Label:
    """Start a branch at ``rev``; with ``switch`` it becomes the active line (HEAD)."""
    check_name(name, "branch name")
    with repo.writing():
        cid = repo.resolve(rev)
        if repo.refs.read(f"refs/heads/{name}") is not None:
            raise RefConflict(f"branch {name!r} already exists")
        repo.update_ref(f"refs/heads/{name}", None, cid, f"branch: created from {rev}")
        if switch:
            repo.set_head(f"refs/heads/{name}", cid, f"branch: switch to {name}")
    return Label("branch", name, cid, switch)
