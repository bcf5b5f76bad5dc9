"""Committing a model folder as a new version (``lin import``, ``lin commit``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import NothingToCommit
from ..core.progress import NULL, Progress
from ..core.publish import Published, code_revision, publish
from ..core.repo import Repo
from ..core.store import ObjectStore
from .materialize import save_checkout_state
from .models import StatCache, StoredFolder, store_folder, walk_tree


@dataclass
class CommitResult(Published):
    """A published version (see :class:`~lineagestore.core.publish.Published`) and its files."""

    files: int = 0
    bytes: int = 0
    tensors: int = 0
    cached_files: int = 0  # files whose content the stat cache vouched for (not re-read)

    @classmethod
    def of(cls, pub: Published, *, files: int, bytes: int, tensors: int, cached_files: int = 0) -> CommitResult:
        return cls(**vars(pub), files=files, bytes=bytes, tensors=tensors, cached_files=cached_files)


def commit_folder(repo: Repo, folder: os.PathLike | str, name: str, *, message: str = "",
                  parents: list[str] | None = None, kind: str = "commit",
                  datasets: list[str] | None = None, metrics: dict | None = None,
                  params: dict | None = None, code_path: os.PathLike | str | None = None,
                  extra: dict | None = None, exclude: tuple[str, ...] = (),
                  progress: Progress = NULL, activate: bool = True, allow_empty: bool = False) -> CommitResult:
    """Store ``folder`` and publish it as a new named version.

    ``parents=None`` means "the active version (HEAD)", or none for an import into an empty
    store. See :func:`lineagestore.core.publish.publish` for the write order. A folder whose
    files are exactly its parent's makes no version (:class:`NothingToCommit`, exit 7) unless
    ``allow_empty``.
    """
    if parents is None and kind == "import":
        parents = []  # an import is a root version
    cache = StatCache(repo.cache_dir / "stat.json" if repo.path else None)
    stored: list[StoredFolder] = []

    def content(batch: ObjectStore) -> str:
        stored.append(store_folder(batch, folder, progress=progress, stat_cache=cache, exclude=exclude,
                                   workers=repo.settings.core.workers))
        if not allow_empty:
            _refuse_empty(repo, folder, stored[0].tree, parents)
        return stored[0].tree

    try:
        pub = publish(repo, content, name=name, kind=kind, parents=parents, datasets=datasets, metrics=metrics,
                      params=params, code=code_revision(code_path), message=message, extra=extra,
                      activate=activate, progress=progress)
    except NothingToCommit:
        if repo.path is not None:  # the files were hashed: the next commit need not read them again
            cache.save(repo.tmp_dir)
        raise
    if repo.path is not None:
        cache.save(repo.tmp_dir)
        _record_folder(repo, Path(folder), pub.id, pub.tree, cache)
    s = stored[0]
    return CommitResult.of(pub, files=s.files, bytes=s.bytes, tensors=s.tensors, cached_files=s.cached_files)


def _record_folder(repo: Repo, folder: Path, commit_id: str, tree: str, cache: StatCache) -> None:
    """The checkout record of ``folder``: it holds the version just made from it.

    So ``lin status`` names the version a committed (or imported) work folder holds after HEAD
    moved on (``lin train``). A file goes into the record only where the stat cache says this
    very stat was hashed to the stored id (never a file changed since); the others are compared
    by content when it matters.
    """
    files: dict[str, list] = {}
    for f in walk_tree(repo.objects, tree):
        p = (folder / f.path).absolute()
        try:
            st = p.stat()
        except OSError:
            continue
        hit = cache.lookup(p, st)
        if hit is not None and hit[1] == f.id:
            files[f.path] = [st.st_size, st.st_mtime_ns, f.id]
    try:
        save_checkout_state(repo.cache_dir, folder, commit_id, tree, files)
    except OSError:
        pass  # derived data: without it, status compares with HEAD


def _refuse_empty(repo: Repo, folder: os.PathLike | str, tree: str, parents: list[str] | None) -> None:
    """NothingToCommit when ``tree`` is the tree of the version's only parent.

    Runs inside :func:`publish`, under the store lock: ``parents=None`` is HEAD as publish read
    it a moment before.
    """
    if parents is None:
        head = repo.head()
        parents = [head] if head else []
    if len(parents) != 1 or repo.commit(parents[0]).tree != tree:
        return
    parent = repo.name_of(parents[0]) or parents[0][:12]
    raise NothingToCommit(f"nothing to commit: {folder} is identical to {parent}, its parent",
                          hint="change the model first, or pass --allow-empty to record a version with the same "
                               "files (e.g. to attach metrics or data)")
