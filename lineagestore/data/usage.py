"""Which versions trained, and which runs are training, each registered content (derived, never stored).

What a dataset was trained in (``trained_in``) and its ``status`` come from the commits
(``Commit.datasets``) and from the checkpoints of training runs in progress (``refs/runs/*``,
``meta["datasets"]``), remembered in ``cache/data/usage.json`` under a key of the refs they were
derived from. A version that trained only some records of a file names a trained part
(:mod:`lineagestore.data.parts`): a file that no version trained whole, and whose parts together
do not hold every record, is ``partly trained``, with the share of its records they hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import blake3

from ..core.errors import LinError
from ..core.fsutil import atomic_write_bytes
from ..core.ids import is_object_id
from ..core.repo import Repo
from .entries import DATA_REF, dataset_object, registry
from .idsets import merge_sorted
from .ledger import iter_record_set
from .parts import part_of
from .records import ID_BYTES


@dataclass
class Usage:
    """Which versions and runs used which content, derived from commits and run checkpoints."""

    trained_in: dict  # fingerprint -> [version names] that trained all or part of it, oldest first
    in_training: dict  # fingerprint -> [run names]
    #: fingerprint -> {"records": distinct records trained, "of": distinct records} of the files
    #: trained only in part (no version trained them whole, their parts do not cover them)
    partly: dict = field(default_factory=dict)

    def status(self, fingerprint: str) -> str:
        if self.trained_in.get(fingerprint):
            return "partly trained" if fingerprint in self.partly else "trained"
        if self.in_training.get(fingerprint):
            return "in training"
        return "untrained"

    def share(self, fingerprint: str) -> float | None:
        """The share of the file's records trained, for a file trained in part (else None)."""
        p = self.partly.get(fingerprint)
        return p["records"] / p["of"] if p and p["of"] else None


DatasetKey = tuple[str, str | None, dict | None]


def dataset_keys(repo: Repo) -> dict[str, DatasetKey]:
    """Dataset id -> (fingerprint, record-id set id, None) for every registered dataset (from the
    cache; a registered dataset is a whole file)."""
    return {i.id: (i.fingerprint, i.records, None) for i in registry(repo).values()}


def dataset_key(repo: Repo, did: str, keys: dict, memo: dict) -> DatasetKey:
    """(fingerprint, records, ``part_of`` or None) of any dataset object: registered now, an
    older object of one, or a trained part."""
    k = keys.get(did)
    if k is None:
        d = dataset_object(repo, did, memo)
        k = keys[did] = (d.content, d.records, part_of(d))
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
                return Usage(doc["trained_in"], doc["in_training"], doc["partly"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    u = _usage(repo, versions, runs, {} if memo is None else memo)
    if cpath is not None:
        try:
            cpath.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cpath, json.dumps({"key": key, "trained_in": u.trained_in,
                                                  "in_training": u.in_training, "partly": u.partly}).encode(),
                               repo.tmp_dir, durable=False)
        except OSError:
            pass  # a cache that cannot be written costs only time
    return u


def _usage(repo: Repo, versions: dict, runs: dict, memo: dict) -> Usage:
    keys = dataset_keys(repo)
    trained: dict[str, list[str]] = {}
    whole: set[str] = set()
    parts: dict[str, dict[str, int]] = {}  # fingerprint -> {record-id set id: distinct records of the file}
    for name, cid in versions.items():
        for did in repo.commit(cid).datasets:
            try:
                fp, records, part = dataset_key(repo, did, keys, memo)
            except LinError:
                continue
            lst = trained.setdefault(fp, [])
            if name not in lst:
                lst.append(name)
            if part is None:
                whole.add(fp)
            elif records:
                parts.setdefault(fp, {})[records] = int(part["distinct"])
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
    partly = {}
    for fp, sets in parts.items():
        if fp in whole:
            continue
        of = max(sets.values())
        try:
            got = _union_size(repo, list(sets))
        except LinError:  # an unreadable set: fsck names it; the file stays counted as trained in part
            got = 0
        if got < of:
            partly[fp] = {"records": got, "of": of}
    return Usage(trained, running, partly)


def _union_size(repo: Repo, set_ids: list[str]) -> int:
    """How many distinct record ids the record-id sets hold together (streamed, bounded memory)."""
    if len(set_ids) == 1:
        return repo.objects.header(set_ids[0]).size // ID_BYTES
    return sum(len(c) for c in merge_sorted([iter_record_set(repo.objects, s) for s in set_ids]))


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
