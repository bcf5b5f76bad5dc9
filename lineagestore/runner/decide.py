"""What a plan that did not pass means for the loop: park files, or pause the queue.

A check that concerns the file (1 data, 3 duplicates) parks the file it names, and the loop goes
on with the next; a check that concerns the machine or the store (2 base, 4 disk, 5 device,
6 another unfinished run on the base, 7 store) pauses the queue, because every next file would
fail it too. A run of the batch itself is not a failure of check 6: the plan resumes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..train.plan import Plan
from .batch import first_bad_line

FILE_CHECKS = ("data", "duplicates")


@dataclass
class Decision:
    pause: str | None = None  # why the queue pauses (None: it does not)
    park: dict[str, str] = field(default_factory=dict)  # item id -> why it is parked


def check_text(c: Any) -> str:
    """``check 4 (enough disk space): 1.2 GB free, about 3.4 GB needed``."""
    return f"check {c.number} ({c.title}): {c.reason}"


def decide(plan: Plan, items: list[Any], paths: list[Path], fingerprints: list[str | None]) -> Decision:
    """Park or pause for a plan of ``items`` (their files at ``paths``, the fingerprints queued)."""
    d = Decision()
    wrong = _other_content(plan, items, fingerprints)
    machine = [c for c in plan.failed if c.key not in FILE_CHECKS]
    if machine and not wrong:
        d.pause = "; ".join(check_text(c) for c in machine)
        return d
    d.park.update(wrong)
    for c in plan.failed:
        if c.key == "data":
            d.park.update(_data_reasons(plan, items, paths, c))
        elif c.key == "duplicates":
            d.park.update(_duplicate_reasons(plan, items, paths, c))
    if not d.park and plan.failed:  # a file check failed without naming a file: the batch goes
        reason = "; ".join(check_text(c) for c in plan.failed)
        d.park = {i.id: reason for i in items}
    return d


def _other_content(plan: Plan, items: list[Any], fingerprints: list[str | None]) -> dict[str, str]:
    """Files whose path now holds other (registered) content than the one queued."""
    out = {}
    for item, d, want in zip(items, plan.data, fingerprints, strict=True):
        if want and d.fingerprint and d.fingerprint != want and not d.error:
            out[item.id] = (f"{d.path} now holds other content (fingerprint {d.fingerprint[:12]}) than the file "
                            f"queued ({want[:12]})")
    return out


def _data_reasons(plan: Plan, items: list[Any], paths: list[Path], c: Any) -> dict[str, str]:
    out = {}
    for item, d, path in zip(items, plan.data, paths, strict=True):
        if not d.exists:
            out[item.id] = f"check 1 (data files): missing: {path}"
        elif d.error or not d.dataset:
            why = d.error or "not registered"
            bad = first_bad_line(path)
            out[item.id] = f"check 1 (data files): {path}: {why}" + (f"; {bad}" if bad else "")
    if not out and len(items) == 1:  # tokenizing or reading the file failed (the check's own reason)
        bad = first_bad_line(paths[0])
        out[items[0].id] = check_text(c) + (f"; {paths[0].name} {bad}" if bad else "")
    return out


def _duplicate_reasons(plan: Plan, items: list[Any], paths: list[Path], c: Any) -> dict[str, str]:
    out = {}
    by_path = {row["path"]: row for row in plan.overlap}
    for item, d in zip(items, plan.data, strict=True):
        row = by_path.get(d.path)
        if row is None:
            continue
        name = Path(d.path).name
        if row["same_file_trained_in"]:
            out[item.id] = (f"check 3 (no duplicate training): {name}: this exact content was already trained in "
                            + ", ".join(row["same_file_trained_in"]))
        elif not d.rest and name in c.reason:
            out[item.id] = f"check 3 (no duplicate training): {name}: {row['records_seen']:,} of {row['records']:,} " \
                           f"records already trained ({row['share']:.1%})"
    return out
