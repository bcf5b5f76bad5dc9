"""What users import: ``from lineagestore import Repo``.

:class:`Repo` is the store (``lineagestore.repo.Repo``) plus the operations of every feature
module as methods. Each returns a dataclass; nothing prints.
"""

from __future__ import annotations

import os

from . import diff as _diff
from . import fsck as _fsck
from . import versions as _versions
from .progress import NULL, Progress
from .repo import Repo as _BaseRepo


class Repo(_BaseRepo):
    def import_model(self, folder: os.PathLike | str, name: str, *, message: str = "",
                     progress: Progress = NULL, exclude: tuple[str, ...] = ()) -> _versions.CommitResult:
        """Store an existing model folder as a root version (the first becomes ``v001_<name>``)."""
        return _versions.commit_folder(self, folder, name, message=message, parents=[], kind="import",
                                       progress=progress, exclude=exclude)

    def commit(self, commit_id: str):  # noqa: D401 - keep the base meaning: read a commit object
        return super().commit(commit_id)

    def commit_folder(self, folder: os.PathLike | str, name: str, **kw) -> _versions.CommitResult:
        """Store a model folder as a new version (parent: HEAD unless ``parents`` is given)."""
        return _versions.commit_folder(self, folder, name, **kw)

    def checkout(self, rev: str, **kw) -> _versions.CheckoutInfo:
        return _versions.checkout(self, rev, **kw)

    def status(self, target=None) -> _versions.StatusInfo:
        return _versions.status(self, target)

    def log(self, rev: str | None = None, *, all_versions: bool = False) -> list[_versions.VersionInfo]:
        return _versions.log(self, rev, all_versions=all_versions)

    def show(self, rev: str) -> _versions.ShowInfo:
        return _versions.show(self, rev)

    def registry(self) -> dict:
        return _versions.registry(self)

    def diff(self, rev_a: str, rev_b: str, *, stats: bool = True) -> _diff.DiffResult:
        return _diff.diff_versions(self, rev_a, rev_b, stats=stats)

    def fsck(self, *, quick: bool = False, progress: Progress = NULL) -> _fsck.FsckReport:
        return _fsck.check(self, quick=quick, progress=progress)
