"""The data registry and the ledger of what was trained (docs/data.md).

* :func:`register` a JSONL file: fingerprint (content id), size, examples, exact token counts
  keyed by tokenizer, the sorted set of record ids, description, first seen; content stored
  compressed and deduplicated unless ``store_content=False``.
* :func:`lookup` / :func:`show` / :func:`list_datasets` / :func:`manifest` / :func:`verify`.
* :func:`check`: was this file, or any of its records, already trained into a lineage?
* :func:`trained_dataset_ids`, :func:`datasets_for_commit`, :func:`require_registered`: what the
  commit and training commands use.

Modules, bottom up: ``records`` (what a record is, its id, file formats), ``idsets`` (sorted
record-id sets), ``blocks`` (parsing blocks of lines), ``tokens`` (tokenizers and counting),
``workers`` (the scan's worker processes), ``scan`` (reading a file once on every core),
``ledger`` (record-id sets in the store and the derived index), ``parts`` (what a version names
for a file it trained only in part), ``entries`` (the registry's entries, read through a derived
cache), ``usage`` (what trained each content, derived),
``registry`` (register, look up, list, show, verify), ``check`` (overlap with a lineage).
"""

from __future__ import annotations

from .check import (
    Lineage,
    OverlapReport,
    TrainedRecords,
    check,
    check_dataset,
    datasets_for_commit,
    lineage,
    overlap_warning,
    partly_note,
    trained_dataset_ids,
)
from .entries import DatasetInfo, registry
from .ledger import Ledger
from .parts import Part, make_part, part_of
from .registry import (
    DatasetDetail,
    VerifyEntry,
    VerifyReport,
    list_datasets,
    lookup,
    manifest,
    register,
    require_registered,
    resolve,
    show,
    verify,
    verify_file,
)
from .usage import Usage, usage

__all__ = [
    "DatasetDetail", "DatasetInfo", "Ledger", "Lineage", "OverlapReport", "Part", "TrainedRecords", "Usage",
    "VerifyEntry", "VerifyReport", "check", "check_dataset", "datasets_for_commit", "lineage", "list_datasets",
    "lookup", "make_part", "manifest", "overlap_warning", "part_of", "partly_note", "register", "registry",
    "require_registered", "resolve", "show", "trained_dataset_ids", "usage", "verify", "verify_file",
]
