"""The list of weights this store lacks on purpose (``.lineage/dropped``; docs/format.md
"Dropped weights"): read by fsck, gc, repack and push, which treat a listed object as held by
its remote, not as lost; written only by guard.drop."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import CorruptObject, InvalidInput
from ..core.fsutil import atomic_write_bytes, fsync_dir
from ..core.ids import check_object_id
from ..core.repo import Repo

#: no object lin stores is larger: a listed size above it is damage, not a size
MAX_SIZE = 1 << 50

DROPPED_FILE = "dropped"
DROPPED_MAGIC = "lin-dropped 1"


@dataclass(frozen=True)
class Dropped:
    """One object this store lacks on purpose: its decoded size and the remote verified to hold it."""

    size: int
    remote: str


def read_dropped(repo: Repo) -> dict[str, Dropped]:
    """The dropped list (empty when the file is absent). A malformed line is a CorruptObject
    naming the file and the line: the list decides what fsck and gc accept as absent."""
    if repo.path is None:
        return {}
    path = repo.path / DROPPED_FILE
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        raise CorruptObject(f"{path}: not UTF-8 text") from None
    lines = text.split("\n")
    if lines[0] != DROPPED_MAGIC:
        raise CorruptObject(f"{path}:1: expected {DROPPED_MAGIC!r}")
    out: dict[str, Dropped] = {}
    for n, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        parts = line.split(" ")
        try:
            if len(parts) != 3 or not parts[1].isdigit() or not parts[2] or int(parts[1]) > MAX_SIZE:
                raise InvalidInput("expected '<id> <size> <remote>'")
            out[check_object_id(parts[0])] = Dropped(int(parts[1]), parts[2])
        except InvalidInput as e:
            raise CorruptObject(f"{path}:{n}: {e}") from None
    return out


def write_dropped(repo: Repo, entries: dict[str, Dropped]) -> None:
    """Replace the list atomically and durably (sorted by id; no file when empty)."""
    assert repo.path is not None
    path = repo.path / DROPPED_FILE
    if not entries:
        path.unlink(missing_ok=True)
        fsync_dir(repo.path)
        return
    body = "".join(f"{oid} {d.size} {d.remote}\n" for oid, d in sorted(entries.items()))
    atomic_write_bytes(path, (DROPPED_MAGIC + "\n" + body).encode(), repo.tmp_dir)
