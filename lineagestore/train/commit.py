"""``Repo.commit_model``: store a model that lives in memory as a new version, no folder first."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.progress import NULL, Progress
from ..core.publish import code_revision, publish
from ..core.repo import Repo
from ..core.store import ObjectStore
from ..data.parts import Part
from ..versions.commit import CommitResult
from ..versions.models import walk_tree
from .modelio import StoredModel, store_model


def commit_model(repo: Repo, model: Any, tokenizer: Any = None, name: str = "", *,
                 parents: list[str] | None = None, datasets: list[str] | None = None,
                 data: Sequence[os.PathLike | str] = (), metrics: dict | None = None, params: dict | None = None,
                 message: str = "", code_path: os.PathLike | str | None = None, dtype: Any = None,
                 extra: dict | None = None, kind: str | None = None, activate: bool = True,
                 progress: Progress = NULL, parts: Sequence[Part] = ()) -> tuple[CommitResult, list[str]]:
    """Store ``model`` (and ``tokenizer``) from memory and publish it as ``vNNN_<name>``.

    ``parents`` defaults to the active version. Files of the parent that the model does not
    replace (tokenizer when none is given, README, ...) are kept. ``data`` files are looked up
    (registered if new) as :func:`lineagestore.data.datasets_for_commit` does; ``parts``
    (:mod:`lineagestore.data.parts`) are stored with the version and named as its data; returns
    the result and its warnings.
    """
    warnings: list[str] = []
    if parents is None:
        head = repo.head()
        parents = [head] if head else []
    ds = list(datasets or [])
    if data:
        from ..data import datasets_for_commit
        more, warnings = datasets_for_commit(repo, [Path(p) for p in data], base=parents[0] if parents else None,
                                             progress=progress)
        ds += [d for d in more if d not in ds]
    ds += [p.id for p in parts if p.id not in ds]
    stored: list[StoredModel] = []

    def content(batch: ObjectStore) -> str:
        for part in parts:
            part.store_into(batch)
        base_tree = repo.commit(parents[0]).tree if parents else None
        stored.append(store_model(batch, model, tokenizer=tokenizer, base_tree=base_tree, dtype=dtype,
                                  tmp_dir=repo.tmp_dir if repo.path else None,
                                  workers=repo.settings.core.workers, progress=progress))
        return stored[0].tree

    pub = publish(repo, content, name=name, kind=kind or ("train" if ds else "commit"), parents=parents,
                  datasets=ds, metrics=metrics, params=params, code=code_revision(code_path), message=message,
                  extra=extra, activate=activate, progress=progress)
    files = list(walk_tree(repo.objects, pub.tree))
    res = CommitResult.of(pub, files=len(files), bytes=sum(f.size for f in files), tensors=stored[0].tensors)
    return res, warnings
