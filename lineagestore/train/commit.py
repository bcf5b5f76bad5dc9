"""``Repo.commit_model``: store a model that lives in memory as a new version, no folder first."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.progress import NULL, Progress
from ..core.repo import Repo, code_revision, environment
from ..versions.history import CommitResult
from .modelio import store_model


def commit_model(repo: Repo, model: Any, tokenizer: Any = None, name: str = "", *,
                 parents: list[str] | None = None, datasets: list[str] | None = None,
                 data: list[os.PathLike | str] = (), metrics: dict | None = None, params: dict | None = None,
                 message: str = "", code_path: os.PathLike | str | None = None, dtype: Any = None,
                 extra: dict | None = None, kind: str | None = None, activate: bool = True,
                 progress: Progress = NULL) -> tuple[CommitResult, list[str]]:
    """Store ``model`` (and ``tokenizer``) from memory and publish it as ``vNNN_<name>``.

    ``parents`` defaults to the active version. Files of the parent that the model does not
    replace (tokenizer when none is given, README, ...) are kept. ``data`` files are looked up
    (registered if new) as :func:`lineagestore.data.datasets_for_commit` does; returns the
    result and its warnings.
    """
    warnings: list[str] = []
    with repo.writing():
        if parents is None:
            head = repo.head()
            parents = [head] if head else []
        base_tree = repo.commit(parents[0]).tree if parents else None
        ds = list(datasets or [])
        if data:
            from ..data import datasets_for_commit
            more, warnings = datasets_for_commit(repo, [Path(p) for p in data], base=parents[0] if parents else None,
                                                 progress=progress)
            ds += [d for d in more if d not in ds]
        batch = repo.objects.batch()  # the model's objects made durable together, before the commit
        try:
            stored = store_model(batch, model, tokenizer=tokenizer, base_tree=base_tree, dtype=dtype,
                                 tmp_dir=repo.tmp_dir if repo.path else None,
                                 workers=int(repo.config.get("core.workers", 0)), progress=progress)
            batch.flush()
        except BaseException:
            batch.discard()
            raise
        cid, commit = repo.write_commit(
            tree=stored.tree, parents=list(parents), name=name, kind=kind or ("train" if ds else "commit"),
            datasets=ds, metrics=metrics, params=params, code=code_revision(code_path), env=environment(),
            message=message, extra=extra, move_head=activate)
    res = CommitResult(id=cid, name=commit.name, kind=commit.kind, parents=list(parents),
                       parent_names=[repo.name_of(p) or p[:12] for p in parents], tree=stored.tree,
                       files=sum(1 for _ in _files(repo, stored.tree)), bytes=_size(repo, stored.tree),
                       tensors=stored.tensors, new_bytes=stored.new_bytes, cached_files=0, datasets=ds)
    return res, warnings


def _files(repo: Repo, tree: str):
    from ..versions.models import walk_tree
    return walk_tree(repo.objects, tree)


def _size(repo: Repo, tree: str) -> int:
    return sum(f.size for f in _files(repo, tree))
