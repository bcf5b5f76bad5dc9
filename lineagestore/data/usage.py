"""Which versions trained, and which runs are training, each registered content (derived, never stored).

What a dataset was trained in (``trained_in``) and its ``status`` come from the commits
(``Commit.datasets``) and from the checkpoints of training runs in progress (``refs/runs/*``,
``meta["datasets"]``), remembered in ``cache/data/usage.json`` under a key of the refs they were
derived from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import blake3

from ..core.errors import LinError
from ..core.fsutil import atomic_write_bytes
from ..core.ids import is_object_id
from ..core.repo import Repo
from .entries import DATA_REF, dataset_object, registry


@dataclass
class Usage:
    """Which versions and runs used which content, derived from commits and run checkpoints."""

    trained_in: dict  # fingerprint -> [version names], oldest first
    in_training: dict  # fingerprint -> [run names]

    def status(self, fingerprint: str) -> str:
        if self.trained_in.get(fingerprint):
            return "trained"
        if self.in_training.get(fingerprint):
            return "in training"
        return "untrained"


def dataset_keys(repo: Repo) -> dict[str, tuple[str, str | None]]:
    """Dataset id -> (fingerprint, record-id set id) for every registered dataset (from the cache)."""
    return {i.id: (i.fingerprint, i.records) for i in registry(repo).values()}


def dataset_key(repo: Repo, did: str, keys: dict, memo: dict) -> tuple[str, str | None]:
    """(fingerprint, records) of any dataset object, registered now or an older object of one."""
    k = keys.get(did)
    if k is None:
        d = dataset_object(repo, did, memo)
        k = keys[did] = (d.content, d.records)
    return k


def usage(repo: Repo, memo: dict | None = None) -> Usage:
    """Which versions trained, and which runs are training, each registered content.

    Derived from the commits and the runs' checkpoints; remembered in ``cache/data/usage.json``
    under a key of every version tag and run ref (immutable objects behind them), so with
    50,000 registered files a command does not re-read every commit's dataset list.
    """
    versions = repo.versions()
    runs = repo.refs.as_dict("refs/runs/")
    key = blake3.blake3(json.dumps([sorted(versions.items()), sorted(runs.items())]).encode()).hexdigest()
    cpath = repo.cache_dir / "data" / "usage.json" if repo.path is not None else None
    if cpath is not None:
        try:
            doc = json.loads(cpath.read_text())
            if doc.get("key") == key:
                return Usage(doc["trained_in"], doc["in_training"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    u = _usage(repo, versions, runs, {} if memo is None else memo)
    if cpath is not None:
        try:
            cpath.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cpath, json.dumps({"key": key, "trained_in": u.trained_in,
                                                  "in_training": u.in_training}).encode(),
                               repo.tmp_dir, durable=False)
        except OSError:
            pass  # a cache that cannot be written costs only time
    return u


def _usage(repo: Repo, versions: dict, runs: dict, memo: dict) -> Usage:
    keys = dataset_keys(repo)
    trained: dict[str, list[str]] = {}
    for name, cid in versions.items():
        for did in repo.commit(cid).datasets:
            try:
                fp = dataset_key(repo, did, keys, memo)[0]
            except LinError:
                continue
            lst = trained.setdefault(fp, [])
            if name not in lst:
                lst.append(name)
    running: dict[str, list[str]] = {}
    for ref, oid in runs.items():
        try:
            ck = repo.objects.get(oid, "checkpoint")
        except LinError:
            continue
        for x in (ck.meta or {}).get("datasets", []) or []:
            run_fp = _fingerprint_of(repo, str(x), memo)
            if run_fp:
                running.setdefault(run_fp, []).append(ref[len("refs/runs/"):])
    return Usage(trained, running)


def _fingerprint_of(repo: Repo, x: str, memo: dict) -> str | None:
    """A run's dataset reference (dataset id or fingerprint) -> fingerprint."""
    if not is_object_id(x):
        return None
    if repo.refs.resolve(DATA_REF + x) is not None:
        return x
    try:
        return dataset_object(repo, x, memo).content
    except LinError:
        return None
