"""Checking out a version into a folder, and the status of that folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InvalidInput, LinError
from ..core.names import check_name
from ..core.progress import NULL, Progress
from ..core.repo import Repo
from .materialize import CheckoutResult, WorkStatus, checkout_tree, load_checkout_state, work_status
from .models import FileInfo, walk_tree


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
    #: of ``bytes_written``, the bytes sharing blocks with the store (reflinks): no second copy
    bytes_shared: int = 0


def checkout(repo: Repo, rev: str, *, to: os.PathLike | str | None = None, force: bool = False,
             progress: Progress = NULL, activate: bool = True) -> CheckoutInfo:
    """Materialize ``rev`` into the work folder (or ``to``) and make it the active version.

    Holds the store lock (shared) throughout, so gc never collects what is being written out.
    """
    with repo.writing():
        return _checkout(repo, rev, to=to, force=force, progress=progress, activate=activate)


def _checkout(repo: Repo, rev: str, *, to: os.PathLike | str | None, force: bool, progress: Progress,
              activate: bool) -> CheckoutInfo:
    cid = repo.resolve(rev)
    commit = repo.commit(cid)
    target = Path(to) if to is not None else repo.work_dir()
    files = list(walk_tree(repo.objects, commit.tree))  # refuses a crafted tree before anything is written
    check_target(repo, target, files)
    known: dict[str, str] = {}
    head = repo.head()
    if head:
        known = {f.path: f.id for f in walk_tree(repo.objects, repo.commit(head).tree)}
    res: CheckoutResult = checkout_tree(repo.objects, commit.tree, target, cache_dir=repo.cache_dir,
                                        known=known, force=force, progress=progress, commit_id=cid,
                                        workers=repo.settings.core.workers)
    if activate:
        branch_ref = f"refs/heads/{rev}"
        if _is_plain_name(rev) and repo.refs.read(branch_ref) is not None:
            repo.set_head(branch_ref, cid, f"checkout: moving to {rev}")
        elif head != cid or repo.head_branch() is not None:
            repo.set_head(None, cid, f"checkout: moving to {commit.name}")
    return CheckoutInfo(cid, commit.name, res.target, res.written, res.unchanged, res.removed,
                        res.bytes_written, activate, res.bytes_shared)


def check_target(repo: Repo, target: Path, files: list[FileInfo]) -> None:
    """Refuse a checkout into a store, or into any folder that holds one.

    ``target`` (symlinks resolved) must not be a store or inside one (this store, wherever it
    is, or any folder named ``.lineage`` or holding a store's ``format`` and ``objects/``); and
    no folder the version writes into (``target`` and its sub-folders) may hold a store (a
    ``.lineage/`` folder, or this store under any name). So ``--to .`` from the folder holding
    ``.lineage/`` is refused, while the default work folder (``model/`` beside it) is fine.
    """
    held_by = repo.store_holding(target)
    if held_by is not None:
        raise InvalidInput(f"{target}: is inside the store {held_by}; lin never writes a version into a store",
                           hint=_where_instead(repo))
    real = target.resolve()
    store = repo.path.resolve() if repo.path is not None else None
    for folder in sorted({real, *((real / f.path).parent for f in files)}):
        held = folder / ".lineage"
        if os.path.lexists(held) or (store is not None and folder == store.parent):
            shown = held if store is None or folder != store.parent else store
            raise InvalidInput(f"{folder}: holds the store {shown}; lin never writes a version beside a store",
                               hint=_where_instead(repo))


def _where_instead(repo: Repo) -> str:
    return (f"check out into the work folder ({repo.work_dir()}: `lin checkout REV` without --to) or "
            "into a folder of its own (`--to DIR`, e.g. --to export/REV)")


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
    """HEAD, and how the work folder (or ``target``) compares with the version it holds.

    The checkout record (``cache/checkouts/``, written by checkout and by a commit of the
    folder) says which version the folder holds. When that is not HEAD (HEAD moved on: ``lin
    train``, a commit of another folder, ``lin checkout REV --to DIR``), the folder is compared
    with the version it holds (``WorkStatus.holds``): unchanged, it is at that version, not
    "modified"; its changes are those made since. Without a record it is compared with HEAD.
    """
    head = repo.head()
    branch = repo.head_branch()
    branch = branch[len("refs/heads/"):] if branch else None
    if head is None:
        return StatusInfo(None, None, branch, None)
    commit = repo.commit(head)
    folder = Path(target) if target else repo.work_dir()
    held = _checked_out(repo, folder)
    if held is None or held == head:
        return StatusInfo(head, commit.name, branch, work_status(repo.objects, commit.tree, folder, repo.cache_dir))
    wt = work_status(repo.objects, repo.commit(held).tree, folder, repo.cache_dir)
    wt.holds, wt.holds_name = held, repo.name_of(held)
    return StatusInfo(head, commit.name, branch, wt)


def _checked_out(repo: Repo, folder: Path) -> str | None:
    """The version lin last checked out into ``folder``, if its record names one still stored."""
    if repo.path is None or not folder.is_dir():
        return None
    cid = load_checkout_state(repo.cache_dir, folder).get("commit")
    if not isinstance(cid, str):
        return None
    try:
        repo.commit(cid)
    except LinError:  # collected, or never in this store: compare with HEAD
        return None
    return cid
