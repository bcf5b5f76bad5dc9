"""Evaluation notes: results kept beside the immutable commits, keyed by version id (git notes' model).

``refs/notes/eval`` names a *notes tree*: 256-way fan-out by the first two hex digits of the
version id, then one ``blob`` per version named by the other 62, holding canonical JSON
``{"version": id, "evals": [row, ...]}``. A row is one evaluation of that version on one
evaluation set (``set`` = the set's dataset id, ``method``, ``loss``, ``targets``, ...); a later
evaluation with the same ``set`` and ``method`` replaces the row. Changing a note rewrites one
fan-out tree and the root, then moves the ref by compare-and-swap (retried on a race), so notes
of 10,000 versions cost a few hundred bytes a change. Every ref is a gc root, so the notes and
what they hold stay (docs/format.md, "Evaluation notes").

Notes have no history to fast-forward, so remotes merge them (:func:`merge_notes`): the union of
both trees, and of two rows of one version with the same set and method the later ``time``.
"""

from __future__ import annotations

import json
from typing import Any

from ..core.errors import CorruptObject, RefConflict
from ..core.ids import is_object_id
from ..core.objects import Tree, TreeEntry, canonical_json
from ..core.repo import Repo
from ..core.store import ObjectStore

__all__ = ["NOTES_REF", "all_notes", "merge_notes", "merge_rows", "note_of", "read_notes", "write_note"]

NOTES_REF = "refs/notes/eval"
NOTES_FORMAT = 4  # the store format that introduced notes and series
_TRIES = 20


def _tree(repo: Repo, tid: str | None) -> dict[str, TreeEntry]:
    if tid is None:
        return {}
    return {e.name: e for e in repo.objects.get(tid, "tree").items()}


def _parse(raw: bytes, where: str) -> list[dict]:
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise CorruptObject(f"{where}: not JSON ({e})") from None
    evals = doc.get("evals") if isinstance(doc, dict) else None
    if not isinstance(evals, list) or not all(isinstance(r, dict) for r in evals):
        raise CorruptObject(f"{where}: not an evaluation note")
    return evals


def note_of(repo: Repo, version_id: str) -> list[dict]:
    """The evaluation rows noted for a version (empty when none)."""
    root = repo.refs.resolve(NOTES_REF)
    if root is None or not is_object_id(version_id):
        return []
    fan = _tree(repo, root).get(version_id[:2])
    if fan is None or fan.type != "tree":
        return []
    e = _tree(repo, fan.id).get(version_id[2:])
    if e is None or e.type != "blob":
        return []
    return _parse(repo.objects.read_content(e.id), f"evaluation note of {version_id[:12]}")


def all_notes(repo: Repo) -> dict[str, list[dict]]:
    """Version id -> evaluation rows, for every noted version."""
    root = repo.refs.resolve(NOTES_REF)
    out: dict[str, list[dict]] = {}
    for fan in _tree(repo, root).values():
        if fan.type != "tree" or len(fan.name) != 2:
            continue
        for e in _tree(repo, fan.id).values():
            vid = fan.name + e.name
            if e.type == "blob" and is_object_id(vid):
                out[vid] = _parse(repo.objects.read_content(e.id), f"evaluation note of {vid[:12]}")
    return out


def _same(a: dict, b: dict) -> bool:
    return a.get("set") == b.get("set") and a.get("method") == b.get("method")


def write_note(repo: Repo, version_id: str, row: dict[str, Any]) -> str:
    """Add (or replace, same set and method) one evaluation row of a version; the new notes tree id."""
    if not is_object_id(version_id):
        raise ValueError(f"not a version id: {version_id!r}")
    repo.require_format(NOTES_FORMAT)
    with repo.writing():
        for _ in range(_TRIES):
            old = repo.refs.resolve(NOTES_REF)
            root = _tree(repo, old)
            fan_entry = root.get(version_id[:2])
            fan = _tree(repo, fan_entry.id) if fan_entry is not None and fan_entry.type == "tree" else {}
            prev = fan.get(version_id[2:])
            rows = _parse(repo.objects.read_content(prev.id), "evaluation note") if prev is not None else []
            rows = [r for r in rows if not _same(r, row)] + [dict(row)]
            data = canonical_json({"version": version_id, "evals": rows})
            fan[version_id[2:]] = TreeEntry(version_id[2:], "blob", repo.objects.put("blob", data), len(data))
            fid = repo.objects.put_object(Tree(entries=[fan[k] for k in sorted(fan)]))
            root[version_id[:2]] = TreeEntry(version_id[:2], "tree", fid, sum(e.size for e in fan.values()))
            new = repo.objects.put_object(Tree(entries=[root[k] for k in sorted(root)]))
            try:
                repo.update_ref(NOTES_REF, old, new, f"eval note: {version_id[:12]}")
                return new
            except RefConflict:
                continue  # another process noted meanwhile: read its notes and add ours again
    raise RefConflict(f"{NOTES_REF}: changed by other processes {_TRIES} times in a row; try again")


# ------------------------------------------------------------------------------ merging (remotes)

_HEX = frozenset("0123456789abcdef")


def read_notes(objects: ObjectStore, root: str) -> dict[str, list[dict]]:
    """Version id -> rows of the notes tree ``root``, every part checked (the tree may come from a
    remote): fan-out trees named by 2 hex digits, notes named by the other 62, each a note of that
    version whose rows name a ``set`` and a ``method``. CorruptObject naming the object otherwise."""
    out: dict[str, list[dict]] = {}
    for fan in objects.get(root, "tree").items():
        if fan.type != "tree" or len(fan.name) != 2 or not _HEX.issuperset(fan.name):
            raise CorruptObject(f"notes tree {root}: entry {fan.name!r} is not a fan-out tree of 2 hex digits")
        for e in objects.get(fan.id, "tree").items():
            vid = fan.name + e.name
            if e.type != "blob" or not is_object_id(vid):
                raise CorruptObject(f"notes tree {fan.id}: entry {e.name!r} is not the note of a version id")
            where = f"evaluation note {e.id} (of {vid[:12]})"
            _, raw = objects.get_raw(e.id)
            rows = _parse(raw, where)
            if json.loads(raw).get("version") != vid:
                raise CorruptObject(f"{where}: names another version")
            if not all(isinstance(r.get("set"), str) and isinstance(r.get("method"), str) for r in rows):
                raise CorruptObject(f"{where}: a row without a set or a method")
            out[vid] = rows
    return out


def merge_rows(ours: list[dict], theirs: list[dict]) -> list[dict]:
    """One version's rows of both sides, sorted by set and method (so that two machines merging
    the same rows write the same note): of two rows with the same set and method, the one with
    the later ``time`` (ours when equal)."""
    out: dict[tuple[str, str], dict] = {}
    for row in [*theirs, *ours]:
        key = (str(row.get("set")), str(row.get("method")))
        if key not in out or str(row.get("time", "")) >= str(out[key].get("time", "")):
            out[key] = dict(row)  # ISO-8601 UTC times: later sorts after
    return [out[k] for k in sorted(out)]


def merge_notes(objects: ObjectStore, ours: str | None, theirs: str) -> str:
    """The notes tree holding both ``ours`` (None: no notes) and ``theirs``, written into
    ``objects``; ``theirs`` is checked whole first (:func:`read_notes`), so a remote's malformed
    notes refuse the merge before anything is written. Returns ``ours`` or ``theirs`` when one
    already holds the other."""
    b = read_notes(objects, theirs)
    if ours is None or ours == theirs:
        return theirs
    a = read_notes(objects, ours)
    merged = {vid: merge_rows(a.get(vid, []), b.get(vid, [])) for vid in sorted(a.keys() | b.keys())}
    if merged == {vid: merge_rows(rows, []) for vid, rows in a.items()}:
        return ours  # the same rows (in any order)
    if merged == {vid: merge_rows([], rows) for vid, rows in b.items()}:
        return theirs
    fans: dict[str, list[TreeEntry]] = {}
    for vid, rows in merged.items():
        data = canonical_json({"version": vid, "evals": rows})
        fans.setdefault(vid[:2], []).append(TreeEntry(vid[2:], "blob", objects.put("blob", data), len(data)))
    root = []
    for name, entries in sorted(fans.items()):
        fid = objects.put_object(Tree(entries=entries))
        root.append(TreeEntry(name, "tree", fid, sum(e.size for e in entries)))
    return objects.put_object(Tree(entries=root))
