"""The ledger of what was trained: is this data, or any part of it, already in a lineage?

What a model has seen is the union of the datasets of every commit in its ancestry (all parents).
A file is checked two ways against the lineage of a base version (default: HEAD):

* as a whole, by content: versions of the lineage that trained this exact content, whatever
  the file's name (and, apart, those that trained only part of its records: a run stopped by
  a limit names a trained part, :mod:`lineagestore.data.parts`);
* per record: how many of its distinct records are in the record-id sets of the lineage's
  datasets, which versions trained them, and the share. Lookups go through the ledger index
  (:mod:`lineagestore.data.ledger`) in bounded memory and every hit is confirmed exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.content import file_content_id
from ..core.errors import LinError
from ..core.names import parse_version
from ..core.progress import NULL, Progress
from ..core.repo import Repo
from .entries import DatasetInfo, current
from .idsets import rechunk
from .ledger import Ledger, iter_record_set
from .registry import register, verify_file
from .scan import check_file, scan_file
from .usage import dataset_key

QUERY_BATCH = 2 << 20  # query ids looked up at a time


@dataclass
class OverlapReport:
    path: str
    fingerprint: str
    registered: bool
    same_file_trained_in: list  # version names that trained this exact content, every record of it
    records: int  # distinct records in the file
    records_seen: int  # of those, records already trained in the lineage
    share: float  # records_seen / records
    seen_in: dict  # version name -> records of this file it trained
    base: str | None = None  # version name the lineage ends at (None: empty store)
    base_id: str | None = None
    registered_as: str | None = None  # file name of the registered entry with this content
    dataset: str | None = None
    examples: int = 0
    bad_lines: int = 0
    changed_since_registration: str | None = None  # a message when the path held other content
    partly_trained_in: list = field(default_factory=list)  # version names that trained part of this content

    @property
    def trained(self) -> bool:
        return bool(self.same_file_trained_in) or self.records_seen > 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Lineage:
    """The datasets trained into a version's ancestry."""

    base: str | None
    name: str | None
    dataset_ids: list = field(default_factory=list)  # oldest first
    by_fingerprint: dict = field(default_factory=dict)  # content id -> [version names that trained it whole]
    by_part: dict = field(default_factory=dict)  # content id -> [version names that trained part of it]
    by_set: dict = field(default_factory=dict)  # record-id set id -> [version names]


def _version_key(name: str):
    p = parse_version(name)
    return (p[0] if p else 10**9, name)


def lineage(repo: Repo, base_id: str | None, memo: dict | None = None) -> Lineage:
    memo = {} if memo is None else memo
    if base_id is None:
        return Lineage(None, None)
    lin = Lineage(base_id, repo.name_of(base_id))
    commits = list(repo.all_ancestors(base_id))
    commits.sort(key=lambda kv: _version_key(kv[1].name))
    # only the lineage's dataset objects are read (not the whole registry: 50,000 files)
    keys: dict = {}
    seen: set[str] = set()
    for _cid, c in commits:
        for did in c.datasets:
            if did not in seen:
                seen.add(did)
                lin.dataset_ids.append(did)
            content, records, part = dataset_key(repo, did, keys, memo)
            files = lin.by_fingerprint if part is None else lin.by_part
            for key, table in ((content, files), (records, lin.by_set)):
                if key is None:
                    continue
                lst = table.setdefault(key, [])
                if c.name not in lst:
                    lst.append(c.name)
    return lin


def trained_dataset_ids(repo: Repo, commit_id: str) -> list[str]:
    """Dataset ids trained into ``commit_id`` and all its ancestors (oldest first, each once)."""
    return lineage(repo, commit_id).dataset_ids


class _Checker:
    def __init__(self, repo: Repo, base: str | None, progress: Progress = NULL):
        self.repo = repo
        self.base_id = repo.resolve(base) if base else repo.head()
        self.lin = lineage(repo, self.base_id)
        self.ledger = Ledger(repo)
        ordmap = self.ledger.ordinals(self.lin.by_set.keys(), progress) if self.lin.by_set else {}
        self.ords = np.array(sorted(ordmap.values()), dtype=np.uint32)
        by_version: dict[str, list[int]] = {}
        for sid, names in self.lin.by_set.items():
            for n in names:
                by_version.setdefault(n, []).append(ordmap[sid])
        self.version_ords: dict[str, np.ndarray] = {
            n: np.array(sorted(v), dtype=np.uint32)
            for n, v in sorted(by_version.items(), key=lambda kv: _version_key(kv[0]))}

    def overlap(self, chunks: Iterable[np.ndarray]) -> tuple[int, int, dict[str, int]]:
        total = seen = 0
        per_version = {n: 0 for n in self.version_ords}
        for batch in rechunk(chunks, QUERY_BATCH):
            total += len(batch)
            if not len(self.ords):
                continue
            qi, oi = self.ledger.candidates(batch, self.ords)
            ok = self.ledger.confirm(batch, qi, oi)
            qi, oi = qi[ok], oi[ok]
            seen += len(np.unique(qi))
            for n, ords in self.version_ords.items():
                m = np.isin(oi, ords)
                if m.any():
                    per_version[n] += len(np.unique(qi[m]))
        return total, seen, {n: c for n, c in per_version.items() if c}

    def report(self, path: str, fingerprint: str, info: DatasetInfo | None,
               chunks: Iterable[np.ndarray], examples: int, bad: int) -> OverlapReport:
        total, seen, per_version = self.overlap(chunks)
        return OverlapReport(
            path=path, fingerprint=fingerprint, registered=info is not None,
            same_file_trained_in=list(self.lin.by_fingerprint.get(fingerprint, [])),
            partly_trained_in=[v for v in self.lin.by_part.get(fingerprint, [])
                               if v not in self.lin.by_fingerprint.get(fingerprint, [])],
            records=total, records_seen=seen, share=(seen / total) if total else 0.0, seen_in=per_version,
            base=self.lin.name, base_id=self.base_id, registered_as=info.filename if info else None,
            dataset=info.id if info else None, examples=examples, bad_lines=bad)


class TrainedRecords:
    """Which record ids were trained in the lineage of ``base`` (default HEAD): exact, through the
    ledger index, in memory bounded by the ids asked about."""

    def __init__(self, repo: Repo, base: str | None, progress: Progress = NULL):
        self._c = _Checker(repo, base, progress)

    def mask(self, ids: np.ndarray) -> np.ndarray:
        """For each id of ``ids`` (``S16``, any order, repeats allowed): was it trained?"""
        if not len(ids) or not len(self._c.ords):
            return np.zeros(len(ids), dtype=bool)
        uniq, inverse = np.unique(ids, return_inverse=True)
        seen = np.zeros(len(uniq), dtype=bool)
        ledger = self._c.ledger
        for start in range(0, len(uniq), QUERY_BATCH):
            batch = uniq[start:start + QUERY_BATCH]
            qi, oi = ledger.candidates(batch, self._c.ords)
            ok = ledger.confirm(batch, qi, oi)
            seen[start + qi[ok]] = True
        return seen[inverse.reshape(-1)]

    def untrained(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The ids of sorted chunks that were not trained (still sorted)."""
        for batch in rechunk(chunks, QUERY_BATCH):
            rest = batch[~self.mask(batch)]
            if len(rest):
                yield rest


def check(repo: Repo, paths: list[os.PathLike | str], *, base: str | None = None,
          progress: Progress = NULL) -> list[OverlapReport]:
    """Per file: was it (or any of its records) already trained into ``base``'s lineage (default HEAD)?"""
    checker = _Checker(repo, base, progress)
    out = []
    for x in paths:
        p = Path(x)
        check_file(p)
        fp = file_content_id(p)
        info = current(repo, fp)
        if info is not None:
            rep = checker.report(str(p), fp, info, iter_record_set(repo.objects, info.records),
                                 info.examples, info.skipped_lines)
        else:
            scan = scan_file(p, skip_bad_lines=True, workers=repo.settings.core.workers,
                             max_record_bytes=repo.settings.data.max_record_bytes,
                             progress=progress, tmp_dir=repo.tmp_dir if repo.path is not None else None,
                             description=f"reading {p.name}")
            try:
                rep = checker.report(str(p), scan.fingerprint, None, scan.ids.chunks(), scan.examples, scan.bad)
            finally:
                scan.ids.cleanup()
            e = verify_file(repo, p)
            if e.status == "changed":
                rep.changed_since_registration = e.message
        out.append(rep)
    return out


def check_dataset(repo: Repo, info: DatasetInfo, *, base: str | None = None,
                  progress: Progress = NULL) -> OverlapReport:
    """The overlap report of a registered dataset (no file needed)."""
    checker = _Checker(repo, base, progress)
    return checker.report(info.path or info.filename, info.fingerprint, info,
                          iter_record_set(repo.objects, info.records), info.examples, info.skipped_lines)


def overlap_warning(rep: OverlapReport, name: str) -> str | None:
    """One line for people when a file overlaps the lineage, else None."""
    where = f"the lineage of {rep.base}" if rep.base else "the lineage"
    if rep.same_file_trained_in:
        also = f" (registered as {rep.registered_as})" if rep.registered_as and rep.registered_as != name else ""
        return f"{name}: this exact content{also} was already trained in {', '.join(rep.same_file_trained_in)}"
    if rep.records_seen:
        by = ", ".join(f"{v}: {n:,}" for v, n in rep.seen_in.items())
        return (f"{name}: {rep.records_seen:,} of {rep.records:,} records ({rep.share:.1%}) were already "
                f"trained in {where} ({by}){partly_note(rep)}")
    return None


def partly_note(rep: OverlapReport) -> str:
    """``; v002 trained part of this file`` when versions of the lineage trained part of it."""
    if not rep.partly_trained_in:
        return ""
    return f"; {', '.join(rep.partly_trained_in)} trained part of this file"


def datasets_for_commit(repo: Repo, paths: list[os.PathLike | str], *, base: str | None,
                        progress: Progress = NULL) -> tuple[list[str], list[str]]:
    """Register (if needed) the data files of a commit; (dataset ids, warnings about overlap with base)."""
    ids: list[str] = []
    infos: list[tuple[Path, DatasetInfo]] = []
    for x in paths:
        p = Path(x)
        info = register(repo, p, progress=progress)
        if info.id not in ids:
            ids.append(info.id)
        infos.append((p, info))
    warnings: list[str] = []
    if base is None:
        return ids, warnings
    checker = _Checker(repo, base, progress)
    for p, info in infos:
        try:
            rep = checker.report(str(p), info.fingerprint, info, iter_record_set(repo.objects, info.records),
                                 info.examples, info.skipped_lines)
        except LinError as e:  # the commit itself must not fail on a ledger problem
            warnings.append(f"{p.name}: could not check overlap with the lineage: {e}")
            continue
        w = overlap_warning(rep, p.name)
        if w:
            warnings.append(w)
    return ids, warnings
