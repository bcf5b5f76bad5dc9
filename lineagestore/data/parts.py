"""Trained parts: what a version records when a run trained only some of a registered file's records.

A run stopped by ``--max-steps`` (or any limit) trains some of its data. The version it commits
names, for such a file, a **part**: a ``dataset`` object with the registered file's ``content``,
``filename``, ``format``, ``size``, ``first_seen``, ``stored``, ``description`` and
``skipped_lines``, whose ``records`` is the record-id set of the records trained, ``examples``
the examples (lines) trained, ``tokens`` empty, and ``extra.part_of`` =
``{"dataset": the registered dataset id, "distinct": its distinct records, "examples": its
examples}`` (docs/format.md, "Data"). A file of which every record was trained is named by its
registered dataset object, exactly as before parts existed.

Older readers see a part as a dataset of the same content: they count the file as trained
(what they always did) and its records exactly (the record-level ledger reads ``records``); gc
and fsck follow its links like any dataset's. A dataset object without ``part_of`` is a whole file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.objects import Dataset
from ..core.store import MemoryObjectStore, ObjectStore
from .ledger import put_record_set
from .records import ID_BYTES

PART_KEY = "part_of"


def part_of(d: Dataset) -> dict | None:
    """``extra.part_of`` of a trained part ({"dataset", "distinct", "examples"}); None for a whole file."""
    p = (d.extra or {}).get(PART_KEY)
    return p if isinstance(p, dict) and isinstance(p.get("distinct"), int) else None


def distinct_records(store: ObjectStore, d: Dataset) -> int:
    """The size of a dataset's record-id set (read from its header: 16 bytes per id)."""
    return store.header(d.records).size // ID_BYTES if d.records else 0


@dataclass
class Part:
    """What a version names for one file: its registered dataset (every record trained) or a part."""

    id: str  # the dataset id the commit names
    records: int  # distinct records trained
    of: int  # distinct records of the file
    examples: int  # examples (lines) trained
    objects: list[tuple[str, bytes]] = field(default_factory=list, repr=False)  # to store, children first

    @property
    def whole(self) -> bool:
        return not self.objects

    def store_into(self, store: ObjectStore) -> None:
        for type_name, data in self.objects:
            store.put(type_name, data)


def whole_part(store: ObjectStore, whole_id: str, whole: Dataset) -> Part:
    """A file every record of which was trained: named by its registered dataset."""
    of = distinct_records(store, whole)
    return Part(whole_id, of, of, whole.examples)


def make_part(store: ObjectStore, whole_id: str, whole: Dataset, trained: Iterable[np.ndarray],
              examples: int) -> Part | None:
    """The dataset a version names for a file of which the records ``trained`` (sorted, unique
    chunks of ids, all in the file's set) were trained; None when none was.

    Nothing is written: the objects of a part are returned, to be stored with the version."""
    of = distinct_records(store, whole)
    staging = MemoryObjectStore(compression="none")
    rs = put_record_set(staging, trained)
    if rs.count == 0:
        return None
    if rs.count >= of:
        return Part(whole_id, of, of, whole.examples)
    extra: dict[str, Any] = {k: whole.extra[k] for k in ("path", "kind") if k in (whole.extra or {})}
    extra.update({"distinct": rs.count, PART_KEY: {"dataset": whole_id, "distinct": of, "examples": whole.examples}})
    part = Dataset(content=whole.content, filename=whole.filename, format=whole.format, size=whole.size,
                   examples=int(examples), records=rs.id, tokens={}, description=whole.description,
                   first_seen=whole.first_seen, stored=whole.stored, skipped_lines=whole.skipped_lines, extra=extra)
    pid = staging.put_object(part)
    objects = [staging.get_raw(oid) for oid in (*[p[0] for p in rs.parts], *([rs.id] if len(rs.parts) > 1 else []))]
    objects.append(("dataset", part.encode()))
    assert staging.has(pid)
    return Part(pid, rs.count, of, int(examples), objects)


__all__ = ["PART_KEY", "Part", "distinct_records", "make_part", "part_of", "whole_part"]
