"""Committing a model folder as a new version (``lin import``, ``lin commit``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..core.progress import NULL, Progress
from ..core.publish import Published, code_revision, publish
from ..core.repo import Repo
from ..core.store import ObjectStore
from .models import StatCache, StoredFolder, store_folder


@dataclass
class CommitResult(Published):
    """A published version (see :class:`~lineagestore.core.publish.Published`) and its files."""

    files: int = 0
    bytes: int = 0
    tensors: int = 0
    cached_files: int = 0  # files whose content the stat cache vouched for (not re-read)

    @classmethod
    def of(cls, pub: Published, *, files: int, bytes: int, tensors: int, cached_files: int = 0) -> "CommitResult":
        return cls(**vars(pub), files=files, bytes=bytes, tensors=tensors, cached_files=cached_files)


def commit_folder(repo: Repo, folder: os.PathLike | str, name: str, *, message: str = "",
                  parents: list[str] | None = None, kind: str = "commit",
                  datasets: list[str] | None = None, metrics: dict | None = None,
                  params: dict | None = None, code_path: os.PathLike | str | None = None,
                  extra: dict | None = None, exclude: tuple[str, ...] = (),
                  progress: Progress = NULL, activate: bool = True) -> CommitResult:
    """Store ``folder`` and publish it as a new named version.

    ``parents=None`` means "the active version (HEAD)", or none for an import into an empty
    store. See :func:`lineagestore.core.publish.publish` for the write order.
    """
    if parents is None and kind == "import":
        parents = []  # an import is a root version
    cache = StatCache(repo.cache_dir / "stat.json" if repo.path else None)
    stored: list[StoredFolder] = []

    def content(batch: ObjectStore) -> str:
        stored.append(store_folder(batch, folder, progress=progress, stat_cache=cache, exclude=exclude,
                                   workers=repo.settings.core.workers))
        return stored[0].tree

    pub = publish(repo, content, name=name, kind=kind, parents=parents, datasets=datasets, metrics=metrics,
                  params=params, code=code_revision(code_path), message=message, extra=extra,
                  activate=activate, progress=progress)
    if repo.path is not None:
        cache.save(repo.tmp_dir)
    s = stored[0]
    return CommitResult.of(pub, files=s.files, bytes=s.bytes, tensors=s.tensors, cached_files=s.cached_files)
