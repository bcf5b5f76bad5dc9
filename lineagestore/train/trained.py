"""What a run trains of its data, and what the version it commits records as trained.

* **The rest of a file.** A file of which versions of the base's lineage trained only a part
  (a run stopped by ``--max-steps``) is trained again only for the records not trained yet
  (the plan marks it ``rest``; ``--allow-overlap`` trains all of it again).
* **What was trained.** The version names, per file, its registered dataset when every record
  was consumed, else a trained part holding exactly the records consumed
  (:mod:`lineagestore.data.parts`; consumption is defined in :mod:`.course`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.objects import Dataset
from ..core.repo import Repo
from ..data import Part, TrainedRecords, make_part
from ..data.idsets import sort_unique
from ..data.ledger import iter_record_set
from ..data.parts import whole_part
from .course import consumed_examples, consumed_units
from .dataset import Blocks, TokenizedData

__all__ = ["drop_trained", "recorded_parts"]


def drop_trained(repo: Repo, base: str | None, items: Sequence[Any], data: TokenizedData) -> TokenizedData:
    """``data`` without the examples of ``rest`` items whose records the base's lineage trained."""
    rest = [i for i, item in enumerate(items) if getattr(item, "rest", False)]
    if not rest or base is None:
        return data
    trained = TrainedRecords(repo, base)
    keep = np.ones(data.examples, dtype=bool)
    for i in rest:
        span = data.file_examples(i)
        keep[span] = ~trained.mask(np.asarray(data.rids[span]))
    return data.select(keep)


def recorded_parts(repo: Repo, base: str | None, items: Sequence[Any], blocks: Blocks, seed: int,
                   epoch: int, position: int) -> list[Part]:
    """What the version of a run at (epoch, position) names for each data file (files of which
    no record was consumed are left out)."""
    data = blocks.data
    finished = epoch >= 1  # every unit consumed at least once
    examples = None if finished else consumed_examples(blocks, consumed_units(len(blocks), seed, epoch, position))
    trained = TrainedRecords(repo, base) if any(getattr(i, "rest", False) for i in items) and base else None
    parts: list[Part] = []
    for i, item in enumerate(items):
        whole: Dataset = repo.objects.get(item.dataset, "dataset")
        span = data.file_examples(i)
        if examples is not None:
            done = examples[span]
            ids = sort_unique(np.asarray(data.rids[span])[done])
            part = make_part(repo.objects, item.dataset, whole, [ids], int(done.sum()))
        elif trained is not None and item.rest:  # the rest, records without tokens included
            part = make_part(repo.objects, item.dataset, whole,
                             trained.untrained(iter_record_set(repo.objects, whole.records)), span.stop - span.start)
        else:
            part = whole_part(repo.objects, item.dataset, whole)
        if part is not None and part.id not in {p.id for p in parts}:
            parts.append(part)
    return parts
