"""A training queue in memory (:class:`Queue`, :class:`Item`) and its stored form (a ``queue`` object).

The stored document (docs/format.md, "Queues") keeps the items as columns: one JSON list per
field, all in queue order, which is ~3x smaller and faster to read than a list of objects at
50,000 items. A document comes from the store or from a remote, so :func:`from_doc` treats it as
hostile: every column is checked (types, lengths, ids, names without control characters) and a
document that breaks a rule is a corrupt object, named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter, itemgetter
from typing import Any

from ..core.errors import CorruptObject, InvalidInput, NotFound
from ..core.objects import QueueDoc

QUEUED, RUNNING, DONE, PARKED = "queued", "running", "done", "parked"
STATUSES = (QUEUED, RUNNING, DONE, PARKED)
#: the columns of a stored queue: the fields of :class:`Item`, in its order
COLUMNS = ("id", "name", "dataset", "examples", "tokens", "priority", "status", "reason", "version",
           "attempts", "added", "fingerprint")
_ID_RE = re.compile(r"^q[0-9]{5,}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_TEXT = 4096  # the longest name, reason or version a queue holds (characters)


@dataclass(frozen=True)
class Item:
    """One file in a branch's queue."""

    id: str  # "q00042": stable, never reused in the branch's queue
    name: str  # the file as it was added (display only; the content is what counts)
    dataset: str  # the registered dataset object id
    examples: int
    tokens: int  # under the branch's tokenizer when the file was added (0: not counted)
    priority: int
    status: str  # queued | running | done | parked
    reason: str | None  # why parked, or the last error
    version: str | None  # the version that trained it, once done
    attempts: int
    added: str  # UTC, ISO 8601
    fingerprint: str = ""  # content id of the file: "already queued" compares it

    def to_dict(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in COLUMNS}


assert COLUMNS == tuple(f.name for f in fields(Item))  # from_doc builds items positionally


def item_number(item_id: str) -> int:
    return int(item_id[1:])


def item_id(number: int) -> str:
    return f"q{number:05d}"


@dataclass(frozen=True)
class Queue:
    """A branch's queue: items in queue order (priority, then position), and why it is paused."""

    branch: str
    items: tuple[Item, ...] = ()
    paused: str | None = None
    next_number: int = 1  # the number of the next item id; ids are never reused
    _index: dict[str, int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {it.id: i for i, it in enumerate(self.items)})

    def next_item(self) -> Item | None:
        """The first queued item; None when the queue is paused or nothing is queued."""
        if self.paused is not None:
            return None
        return next((it for it in self.items if it.status == QUEUED), None)

    def get(self, item_id_or_name: str) -> Item:
        """An item by id (``q00042`` or ``42``) or by the name it was added under (unique)."""
        key = item_id_or_name.strip()
        i = self._index.get(item_id(int(key)) if key.isdigit() else key)
        if i is not None:
            return self.items[i]
        cols = {"id": [it.id for it in self.items], "name": [it.name for it in self.items]}
        return self.items[find(cols, item_id_or_name, self.branch)]

    def with_item(self, item: Item) -> Queue:
        """This queue with ``item`` replacing the item of the same id (NotFound if none)."""
        i = self._index.get(item.id)
        if i is None:
            raise NotFound(f"no item {item.id} in the queue of {self.branch}")
        items = list(self.items)
        items[i] = item
        return replace(self, items=tuple(items))

    def with_items(self, items: tuple[Item, ...] | list[Item]) -> Queue:
        return replace(self, items=tuple(items))

    def position(self, item_id: str) -> int | None:
        """1-based position among the items not done (what ``lin queue move --to`` counts)."""
        n = 0
        for it in self.items:
            if it.status != DONE:
                n += 1
            if it.id == item_id:
                return n if it.status != DONE else None
        return None


def _base(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]


# ----------------------------------------------------------------------------- stored form


def to_columns(items: tuple[Item, ...]) -> dict[str, list[Any]]:
    if not items:
        return {c: [] for c in COLUMNS}
    rows = list(map(attrgetter(*COLUMNS), items))
    return {c: list(col) for c, col in zip(COLUMNS, zip(*rows, strict=True), strict=True)}


def check_doc(doc: QueueDoc, where: str, branch: str) -> None:
    """Check every field of a stored document (CorruptObject naming ``where``)."""
    def bad(why: str) -> CorruptObject:
        return CorruptObject(f"{where}: malformed queue ({why})")

    if doc.branch != branch:
        raise bad(f"it is the queue of {doc.branch!r}, not of {branch!r}")
    if not _int(doc.next) or doc.next < 1:
        raise bad("next is not a positive whole number")
    if doc.paused is not None and not _text(doc.paused):
        raise bad("paused is not text")
    cols = doc.items
    if not isinstance(cols, dict) or any(not isinstance(cols.get(c), list) for c in COLUMNS):
        raise bad("items must hold a list for each of " + ", ".join(COLUMNS))
    n = len(cols["id"])
    if any(len(cols[c]) != n for c in COLUMNS):
        raise bad("its item columns differ in length")
    _check_columns(cols, n, doc.next, bad)


def queue_of(doc: QueueDoc) -> Queue:
    """The queue of a document :func:`check_doc` passed."""
    items = tuple(map(Item, *(doc.items[c] for c in COLUMNS)))
    return Queue(branch=doc.branch, items=items, paused=doc.paused, next_number=doc.next)


def from_doc(doc: QueueDoc, where: str, branch: str) -> Queue:
    """The queue of a stored document, every field checked (CorruptObject naming ``where``)."""
    check_doc(doc, where, branch)
    return queue_of(doc)


def item_at(cols: dict[str, list[Any]], i: int) -> Item:
    return Item(*(cols[c][i] for c in COLUMNS))


def find(cols: dict[str, list[Any]], key: str, branch: str) -> int:
    """The index of an item by id (``q00042`` or ``42``) or by the name it was added under
    (unique), as :meth:`Queue.get` finds it, on columns (no Item is made)."""
    k = key.strip()
    if k.isdigit():
        k = item_id(int(k))
    ids = cols["id"]
    try:
        return ids.index(k)
    except ValueError:
        pass
    named = [i for i, name in enumerate(cols["name"]) if name == k or _base(name) == k]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise InvalidInput(f"{key!r} names {len(named)} items of the queue of {branch}: "
                           f"{', '.join(ids[i] for i in named[:8])}", hint="give the item id instead")
    raise NotFound(f"no item {key!r} in the queue of {branch}", hint=f"see `lin queue ls --all --branch {branch}`")


def position_at(cols: dict[str, list[Any]], i: int) -> int | None:
    """1-based position among the items not done (None for a done item)."""
    status = cols["status"]
    if status[i] == DONE:
        return None
    return i + 1 - status[:i].count(DONE)


def _check_columns(cols: dict[str, list[Any]], n: int, next_number: int, bad: Any,
                   known: dict[str, list[Any]] | None = None) -> None:
    """Every column checked whole (types and lengths by ``map``, characters by one
    ``bytes.translate`` of the joined column): 50,000 items take milliseconds, not a second of
    per-item calls. A column
    that is the very list of ``known`` (columns checked before) is not checked again."""
    def new(c: str) -> bool:
        return known is None or cols[c] is not known.get(c)

    ids = cols["id"]
    if new("id"):
        if not _ids_ok(ids):
            raise bad("an item id is not q followed by 5 or more digits")
        if len(set(ids)) != n:
            raise bad("two items have the same id")
    if n and _top_number(ids) >= next_number:
        raise bad("an item id is not below next")
    for c in ("dataset", "fingerprint"):
        if new(c) and not _oids_ok(cols[c]):
            raise bad(f"an item's {c} is not an object id")
    for c in ("examples", "tokens", "attempts"):
        if new(c) and not (_ints(cols[c]) and (not n or min(cols[c]) >= 0)):
            raise bad(f"an item's {c} is not a whole number >= 0")
    if new("priority") and not _ints(cols["priority"]):
        raise bad("an item's priority is not a whole number")
    if new("status") and not set(cols["status"]) <= set(STATUSES):
        raise bad(f"an item's status is not one of {', '.join(STATUSES)}")
    for c in ("name", "added"):
        if new(c) and not _texts(cols[c]):
            raise bad(f"an item's {c} is not text without control characters")
    for c in ("reason", "version"):
        if new(c) and not _texts([x for x in cols[c] if x is not None]):
            raise bad(f"an item's {c} is not text without control characters")


def _top_number(ids: list[str]) -> int:
    """The largest number of ``ids`` (checked ids): by length, then as text."""
    longest = max(map(len, ids))
    same = ids if min(map(len, ids)) == longest else [x for x in ids if len(x) == longest]
    return int(max(same)[1:])


def _types(values: list[Any]) -> set[type]:
    return set(map(type, values))


def _ascii(values: list[str]) -> bytes | None:
    try:
        return "".join(values).encode("ascii")
    except UnicodeEncodeError:
        return None


def _ids_ok(ids: list[Any]) -> bool:
    """Every id is ``q`` and 5 or more digits."""
    if not ids:
        return True
    if not _types(ids) <= {str} or min(map(len, ids)) < 6 or set(map(itemgetter(0), ids)) != {"q"}:
        return False
    raw = _ascii(ids)
    return raw is not None and raw.translate(None, b"0123456789") == b"q" * len(ids)


def _oids_ok(values: list[Any]) -> bool:
    """Every value is an object id: 64 lowercase hex characters."""
    if not values:
        return True
    if not _types(values) <= {str} or set(map(len, values)) != {64}:
        return False
    raw = _ascii(values)
    return raw is not None and not raw.translate(None, b"0123456789abcdef")


def _ints(values: list[Any]) -> bool:
    return _types(values) <= {int}


def _texts(values: list[Any]) -> bool:
    if not values:
        return True
    if not _types(values) <= {str}:
        return False
    lengths = list(map(len, values))
    return 0 < min(lengths) and max(lengths) <= MAX_TEXT and not _CONTROL.search("".join(values))


def _int(x: Any) -> bool:
    return type(x) is int


def _text(x: Any) -> bool:
    return type(x) is str and 0 < len(x) <= MAX_TEXT and not _CONTROL.search(x)


def clean_text(text: str, what: str) -> str:
    """``text`` as a queue may hold it (one line, no control characters, not empty), or InvalidInput."""
    t = " ".join(str(text).split())
    t = _CONTROL.sub("", t)
    if not t:
        raise InvalidInput(f"{what} is empty")
    if len(t) > MAX_TEXT:
        t = t[:MAX_TEXT - 1] + "…"
    return t


def _cleaned(x: Any, column: str) -> str | None:
    if column != "name" and not str(x).strip():
        return None  # an empty reason or version is none
    return clean_text(str(x), f"an item's {column}")


def changed_columns(old: Queue, new: Queue, cols: dict[str, list[Any]],
                    branch: str) -> tuple[dict[str, list[Any]], bool] | None:
    """The columns of ``new`` made from ``cols`` (the stored columns of ``old``) by patching the
    items a change replaced (``with_item``: the others are the very same objects), checking only
    those; None when the change did more (added, removed, reordered items or changed an id),
    for :func:`stored_columns`. What ``lin run`` does to a 50,000-item queue costs little."""
    if new.branch != branch or len(new.items) != len(old.items) or new.next_number != old.next_number:
        return None
    touched = [i for i, (a, b) in enumerate(zip(old.items, new.items, strict=True)) if a is not b]
    if len(touched) > 1000 or any(old.items[i].id != new.items[i].id for i in touched):
        return None
    rows = [new.items[i] for i in touched]
    mini, cleaned = clean_columns(to_columns(tuple(rows)), new.next_number, branch)
    out = dict(cols)
    for c in COLUMNS:
        if any(mini[c][k] != cols[c][i] for k, i in enumerate(touched)):
            out[c] = list(cols[c])
            for k, i in enumerate(touched):
                out[c][i] = mini[c][k]
    return out, cleaned


def stored_columns(q: Queue, branch: str) -> tuple[dict[str, list[Any]], bool]:
    """The columns to store for a queue a change handed back (see :func:`clean_columns`)."""
    if q.branch != branch:
        raise InvalidInput(f"a queue change turned the queue of {branch} into one of {q.branch}")
    return clean_columns(to_columns(q.items), q.next_number, branch)


def clean_columns(cols: dict[str, list[Any]], next_number: int, branch: str,
                  known: dict[str, list[Any]] | None = None) -> tuple[dict[str, list[Any]], bool]:
    """Columns a change made, with texts a reader would refuse cleaned (a multi-line error as a
    reason: made one line), and whether any was. Anything else a reader would refuse is a bug
    of the change: InvalidInput, and nothing is written."""
    cleaned = False
    for c in ("name", "reason", "version"):
        values = cols[c]
        if known is not None and values is known.get(c):
            continue
        if not _texts([x for x in values if x is not None]):
            cols = {**cols, c: [x if x is None or _text(x) else _cleaned(x, c) for x in values]}
            cleaned = True

    def bad(why: str) -> InvalidInput:
        return InvalidInput(f"a change of the queue of {branch} broke it: {why}")

    n = len(cols["id"])
    if any(len(cols[c]) != n for c in COLUMNS):
        raise bad("its item columns differ in length")
    _check_columns(cols, n, next_number, bad, known)
    return cols, cleaned
