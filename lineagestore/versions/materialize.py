"""Stored trees out to folders: checkout (byte-identical, verified, in parallel, never over a
file someone changed) and the status of a folder against a version.

The checkout record (``cache/checkouts/``) remembers what lin wrote where, with size and mtime,
so that a later checkout can tell a file it wrote from one a user changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import blake3

from ..core.content import file_id, tensor_file_of
from ..core.errors import InvalidInput, MalformedFile, Refused
from ..core.fsutil import (
    atomic_write_bytes,
    clean_stale_temp,
    fsync_dir,
    is_nospace,
    kill_point,
    nospace_error,
    pwrite_all,
    temp_name,
)
from ..core.loose import shared_bytes, work_sharing
from ..core.progress import NULL, Progress
from ..core.store import DiskObjectStore, ObjectStore
from .folder import SKIP_DIRS, TMP_PREFIX
from .models import FileInfo, walk_tree

_B = TypeVar("_B", bytes, bytes | memoryview)


def iter_file_bytes(store: ObjectStore, info: FileInfo, prefetch: int = 4) -> Iterator[bytes]:
    """The bytes of a stored file, verified, with a few pieces decompressed ahead on threads."""
    pieces = _file_pieces(store, info)
    head = pieces[0][0] if pieces else None
    if isinstance(head, bytes):  # a tensor-file's header, the one piece held as bytes
        yield head
    yield from _prefetch(store, [oid for oid, _, _ in pieces if isinstance(oid, str)], prefetch)


def _file_pieces(store: ObjectStore, info: FileInfo) -> list[tuple[str | bytes, int, int]]:
    """Where every piece of a stored file goes: (object id, or literal bytes; offset; size)."""
    if info.type == "tensor-file":
        tf = store.get(info.id, "tensor-file")
        header = tf.header.encode("utf-8")
        head = len(header).to_bytes(8, "little") + header
        out: list[tuple[str | bytes, int, int]] = [(head, 0, len(head))]
        offset = len(head)
        for t in tf.entries():
            if t.size:
                for oid, n in _content_parts(store, t.id, t.size):
                    out.append((oid, offset, n))
                    offset += n
        return out
    if info.type in ("blob", "chunks"):
        out, offset = [], 0
        for oid, n in _content_parts(store, info.id, info.size):
            out.append((oid, offset, n))
            offset += n
        return out
    raise MalformedFile(f"object {info.id[:12]} ({info.path}) has unexpected type {info.type}")


def _content_parts(store: ObjectStore, oid: str, size: int) -> list[tuple[str, int]]:
    """The blobs holding ``size`` bytes of file content, with their sizes."""
    h = store.header(oid, bring_back=True)  # a blob dropped here (core.local_versions) comes back
    if h.type == "blob":
        parts = [(oid, h.size)]
    elif h.type == "chunks":
        parts = [(p[0], p[1]) for p in store.get(oid, "chunks").parts]
    else:
        raise MalformedFile(f"object {oid[:12]} is a {h.type}, expected file content")
    if sum(n for _, n in parts) != size:
        raise MalformedFile(f"object {oid[:12]} holds {sum(n for _, n in parts)} bytes, its file entry says {size}")
    return parts


def _prefetch(store: ObjectStore, ids: list[str], depth: int) -> Iterator[bytes]:
    if len(ids) <= 1:
        for i in ids:
            yield _blob(store, i)
        return
    with ThreadPoolExecutor(max(1, min(depth, os.cpu_count() or 2))) as pool:
        pending: list[Future] = []
        it = iter(ids)
        for i in it:
            pending.append(pool.submit(_blob, store, i))
            if len(pending) >= depth:
                break
        while pending:
            data = pending.pop(0).result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(_blob, store, nxt))
            yield data


def _blob(store: ObjectStore, oid: str) -> bytes:
    t, data = store.get_raw(oid)
    return _a_blob(oid, t, data)


def _blob_buffer(store: ObjectStore, oid: str) -> bytes | memoryview:
    """A blob's verified content as a read-only buffer (no copy into ``bytes``)."""
    t, data = store.get_buffer(oid)
    return _a_blob(oid, t, data)


def _a_blob(oid: str, t: str, data: _B) -> _B:
    if t != "blob":
        raise MalformedFile(f"object {oid[:12]} is a {t}, expected a blob")
    return data


def _write_piece(store: ObjectStore, piece: str | bytes, fd: int, offset: int, size: int, block: int) -> int:
    """Write one verified piece of a file at ``offset``: a raw blob from its object file in the
    kernel (its whole blocks shared where ``block`` and the object's alignment allow: see
    :meth:`.content.RawBlob.copy_to`), anything else decoded here (called on the checkout's
    threads). Return the bytes shared with the store."""
    shared = 0
    if isinstance(piece, bytes):
        pwrite_all(fd, piece, offset)
    else:
        raw = store.open_raw_blob(piece)
        if raw is not None:
            with raw:
                if raw.size != size:
                    raise MalformedFile(f"object {piece[:12]} holds {raw.size} bytes, expected {size}")
                shared = raw.copy_to(fd, offset, block)
        else:  # decoded here and written from the decoder's buffer (no copy into bytes)
            data = _blob_buffer(store, piece)
            if memoryview(data).nbytes != size:
                raise MalformedFile(f"object {piece[:12]} holds {len(data)} bytes, expected {size}")
            pwrite_all(fd, data, offset)
    if shared < size:
        _start_writeback(fd, offset, size)
    return shared


def _write_file_pieces(store: ObjectStore, info: FileInfo, fd: int, progress: Progress,
                       threads: int, block: int) -> int:
    """Write a stored file into ``fd``, its pieces in parallel at their offsets (at most
    ``2 x threads`` 16 MiB pieces decoded ahead); return the bytes shared with the store."""
    pieces = _file_pieces(store, info)
    shared = 0
    if block and pieces:
        # sized first, so no piece lands past the end: that would make XFS reserve blocks
        # beyond it (speculative preallocation), which the clones never use (+2% of the size)
        os.ftruncate(fd, pieces[-1][1] + pieces[-1][2])
    if len(pieces) <= 1 or threads <= 1:
        for piece, offset, size in pieces:
            shared += _write_piece(store, piece, fd, offset, size, block)
            progress.advance(size)
        return shared
    with ThreadPoolExecutor(threads) as pool:
        pending: list[tuple[Future[int], int]] = []
        try:
            for piece, offset, size in pieces:
                pending.append((pool.submit(_write_piece, store, piece, fd, offset, size, block), size))
                while len(pending) >= 2 * threads:
                    fu, n = pending.pop(0)
                    shared += fu.result()
                    progress.advance(n)
            while pending:
                fu, n = pending.pop(0)
                shared += fu.result()
                progress.advance(n)
        finally:
            for fu, _ in pending:
                fu.cancel()
    return shared


# ------------------------------------------------------------------------------ checkout


def _start_writeback(fd: int, offset: int, size: int) -> None:
    """Ask the kernel to start writing a piece of a checkout to disk now.

    ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` starts writeback of the range and returns without
    waiting for it (no journal commit), so the disk works while later pieces are produced and
    the final fsync of :class:`AtomicFile` finds little left (1.2 GB checkout in-process: 2.4 s
    -> 1.4 s; fdatasync on a helper thread gave 1.9 s). Durability is unchanged: the final
    fsync still runs and reports any write error. Linux only; elsewhere, or if the call fails,
    it does nothing.
    """
    global _SYNC_FILE_RANGE
    if size < (1 << 20):
        return
    if _SYNC_FILE_RANGE is None:
        _SYNC_FILE_RANGE = _load_sync_file_range()
    if _SYNC_FILE_RANGE and _SYNC_FILE_RANGE(fd, offset, size, 2) != 0:  # SYNC_FILE_RANGE_WRITE
        _SYNC_FILE_RANGE = False  # unsupported here: the final fsync does it all


# libc's sync_file_range, looked up on first use; False where there is none
_SYNC_FILE_RANGE: Callable[[int, int, int, int], int] | Literal[False] | None = None


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | Literal[False]:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


@dataclass
class CheckoutResult:
    target: str
    written: int
    unchanged: int
    removed: int
    bytes_written: int
    #: of ``bytes_written``, the bytes that share blocks with the store's objects (reflinks)
    bytes_shared: int = 0


def _state_path(cache_dir: Path, target: Path) -> Path:
    key = blake3.blake3(str(target.resolve()).encode()).hexdigest()[:32]
    d = cache_dir / "checkouts"
    d.mkdir(exist_ok=True)
    return d / f"{key}.json"


def load_checkout_state(cache_dir: Path, target: Path) -> dict:
    try:
        return json.loads(_state_path(cache_dir, target).read_text())
    except (OSError, ValueError):
        return {"files": {}}


def save_checkout_state(cache_dir: Path, target: Path, commit_id: str | None, tree_id: str,
                        files: dict[str, list]) -> None:
    """Record that ``target`` holds ``tree_id`` (of ``commit_id``); ``files``: ``{path: [size,
    mtime_ns, id]}`` of the files known to hold those stored bytes. Derived data (not fsynced):
    a lost record costs a re-hash, and a checkout then compares contents."""
    atomic_write_bytes(_state_path(cache_dir, target),
                       json.dumps({"commit": commit_id, "tree": tree_id, "files": files}).encode(),
                       cache_dir, durable=False)


def _safe_target(target: Path, rel: str) -> Path:
    """The path of ``rel`` inside ``target``, refusing any path that leaves it or crosses a symlink."""
    parts = rel.split("/")
    cur = target
    for p in parts:
        if p in ("", ".", "..") or "\0" in p:
            raise MalformedFile(f"unsafe path {rel!r} in the stored tree; refusing to write it")
        cur = cur / p
    for parent in list(cur.parents)[: len(parts) - 1]:
        if parent.is_symlink():
            raise Refused(f"{parent}: is a symlink; lin never writes through a symlink out of {target}")
    return cur


def checkout_tree(store: ObjectStore, tree_id: str, target: os.PathLike | str, *, cache_dir: Path,
                  known: dict[str, str] | None = None, force: bool = False,
                  progress: Progress = NULL, commit_id: str | None = None,
                  workers: int = 0) -> CheckoutResult:
    """Write the files of ``tree_id`` into ``target``, byte-identical to what was stored.

    Every piece is verified against its id as it is read; raw-stored pieces are copied in the
    kernel (copy_file_range), compressed ones decoded, both on ``workers`` threads (0: two per
    core) writing at their offsets. Where ``target`` is on the store's filesystem and it has
    reflinks, the blocks of aligned objects are shared instead of copied (FICLONERANGE): the
    files cost no second copy on disk (:func:`.core.loose.work_sharing`).

    A file already in ``target`` is replaced only if it is unchanged since lin last wrote it
    (or identical to the same path in ``known``, the active version's files); otherwise the
    checkout refuses, naming the files, unless ``force``. Files of the previous checkout that the
    new tree lacks are removed under the same rule. The store is only read.
    """
    target = Path(target)
    if target.is_symlink():
        raise Refused(f"{target}: is a symlink; give the real folder")
    if target.exists() and not target.is_dir():
        raise InvalidInput(f"{target}: exists and is not a folder")
    files = list(walk_tree(store, tree_id))
    old_files: dict = load_checkout_state(cache_dir, target).get("files", {})
    plan = _plan_checkout(target, files, old_files, dict(known or {}), force)
    if plan.conflicts:
        c = plan.conflicts
        shown = ", ".join(c[:8]) + (f" and {len(c) - 8} more" if len(c) > 8 else "")
        raise Refused(f"refusing to overwrite {len(c)} changed file(s) in {target}: {shown}",
                      hint="commit them first (`lin commit`), or pass --force to overwrite")
    made = [d for d in (target, *target.parents) if not d.exists()]  # innermost first
    target.mkdir(parents=True, exist_ok=True)
    for folder in {(target / f.path).parent for f in files}:  # left by a killed checkout
        clean_stale_temp(folder, prefix=TMP_PREFIX)
    block = work_sharing(store.tmp_dir, target).block if isinstance(store, DiskObjectStore) else 0
    try:
        written_bytes, shared = _write_files(store, target, plan, progress, workers or 2 * (os.cpu_count() or 1),
                                             block)
    except BaseException:
        for d in made:  # folders made here that nothing landed in go again
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    new_state = {}
    for f in files:
        st = (target / f.path).stat()
        new_state[f.path] = [st.st_size, st.st_mtime_ns, f.id]
    save_checkout_state(cache_dir, target, commit_id, tree_id, new_state)
    return CheckoutResult(str(target), len(plan.to_write), plan.unchanged, len(plan.to_remove), written_bytes,
                          shared)


@dataclass
class _CheckoutPlan:
    to_write: list[FileInfo] = field(default_factory=list)
    to_remove: list[Path] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    unchanged: int = 0


def _plan_checkout(target: Path, files: list[FileInfo], old_files: dict, known: dict[str, str],
                   force: bool) -> _CheckoutPlan:
    """Which files to write, which to leave, which to remove, and which a user changed."""
    plan = _CheckoutPlan()
    for f in files:
        verdict = _compare_file(_safe_target(target, f.path), f, old_files.get(f.path), known, force)
        if verdict == "write":
            plan.to_write.append(f)
        elif verdict == "same":
            plan.unchanged += 1
        else:
            plan.conflicts.append(f.path + verdict)
    new_paths = {f.path for f in files}
    for rel, rec in old_files.items():
        if rel in new_paths:
            continue
        p = target / rel
        if not p.exists() or p.is_symlink():
            continue
        st = p.stat()
        if (rec[0] == st.st_size and rec[1] == st.st_mtime_ns) or force:
            plan.to_remove.append(p)
        else:
            plan.conflicts.append(rel + " (changed, and not in the version being checked out)")
    return plan


def _compare_file(p: Path, f: FileInfo, rec: list | None, known: dict[str, str], force: bool) -> str:
    """"write", "same", or the suffix of a conflict ("" for a file someone changed)."""
    if p.is_symlink():
        return "write" if force else " (symlink)"
    if not p.exists():
        return "write"
    if p.is_dir():
        return " (a folder)"
    st = p.stat()
    written_by_us = rec[2] if rec and rec[0] == st.st_size and rec[1] == st.st_mtime_ns else None
    if written_by_us == f.id and st.st_size == f.size:
        return "same"
    if written_by_us is not None:
        return "write"  # lin wrote it and nobody changed it since: safe to replace
    current = file_id(p, f.type) if st.st_size == f.size or f.type != "tensor-file" else None
    if current == f.id:
        return "same"
    if force or (current is not None and known.get(f.path) == current):
        return "write"
    return ""


def _write_files(store: ObjectStore, target: Path, plan: _CheckoutPlan, progress: Progress, threads: int,
                 block: int) -> tuple[int, int]:
    """Write the planned files and remove the planned ones; return the bytes written and, of
    those, shared with the store. All or nothing: every file is written to a temp file beside
    its place and made durable first, and only when all of them are (every piece read back
    verified) are they renamed into place; a damaged or missing object, a full disk or an
    interrupt before then leaves the folder as it was."""
    written_bytes = shared = 0
    staged: list[tuple[Path, Path]] = []  # (temp file, its place)
    made: list[Path] = []  # folders made for new files, removed again if nothing lands
    progress.start(f"checking out into {target}", sum(f.size for f in plan.to_write), "B")
    try:
        for f in plan.to_write:
            p = _safe_target(target, f.path)
            made += _make_parents(p.parent, target)
            tmp = temp_name(p.parent, "", prefix=TMP_PREFIX)
            staged.append((tmp, p))
            with open(tmp, "xb") as out:
                shared += _write_file_pieces(store, f, out.fileno(), progress, threads, block)
                written_bytes += f.size
                if os.fstat(out.fileno()).st_size != f.size:
                    raise MalformedFile(f"{f.path}: wrote {os.fstat(out.fileno()).st_size} bytes, "
                                        f"the stored file has {f.size}")
                os.fsync(out.fileno())
            os.chmod(tmp, 0o755 if f.executable else 0o644)
            kill_point("write")
    except BaseException as e:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()
        if isinstance(e, OSError) and is_nospace(e):
            raise nospace_error(e, target) from e
        raise
    finally:
        progress.finish()
    for tmp, p in staged:
        if p.is_symlink():
            p.unlink()
        os.replace(tmp, p)
        kill_point("rename")
    for folder in {p.parent for _, p in staged}:
        fsync_dir(folder)
    for p in plan.to_remove:
        p.unlink(missing_ok=True)
    return written_bytes, shared


def _make_parents(folder: Path, target: Path) -> list[Path]:
    """Make ``folder`` (inside ``target``) and its missing parents; the ones made, outermost first."""
    missing = []
    while not folder.exists() and folder != target and target in folder.parents:
        missing.append(folder)
        folder = folder.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
    return list(reversed(missing))


# ------------------------------------------------------------------------------ status


@dataclass
class FileChange:
    path: str
    change: str  # added | removed | modified
    tensors: list[str] = field(default_factory=list)  # changed tensor names, for safetensors


@dataclass
class WorkStatus:
    target: str
    exists: bool
    clean: bool
    changes: list[FileChange]
    #: the version the folder holds (its checkout record), when that is not HEAD: the changes
    #: are relative to it (HEAD moved on since: ``lin train``, ``lin checkout REV --to DIR``)
    holds: str | None = None
    holds_name: str | None = None
    #: whether a checkout into the folder shares blocks with the store (reflinks) or copies
    #: (None: not a store on disk), and why
    shares: bool | None = None
    sharing: str = ""
    #: bytes of the folder's files that lie in shared blocks, where the filesystem can tell
    shared_bytes: int | None = None
    #: bytes of the folder's files that are in the stored tree (what could share)
    stored_bytes: int = 0


def work_status(store: ObjectStore, tree_id: str, target: os.PathLike | str, cache_dir: Path) -> WorkStatus:
    """Compare a work folder with a stored tree: which files and tensors differ, and whether
    the folder shares blocks with the store (and how many of its bytes do)."""
    target = Path(target)
    share = work_sharing(store.tmp_dir, target) if isinstance(store, DiskObjectStore) else None
    shares, why = (share.shares, share.reason) if share else (None, "")
    if not target.is_dir():
        return WorkStatus(str(target), False, False, [], shares=shares, sharing=why)
    state = load_checkout_state(cache_dir, target).get("files", {})
    stored = {f.path: f for f in walk_tree(store, tree_id)}
    changes: list[FileChange] = []
    present: set[str] = set()
    in_blocks: list[int | None] = []
    for dirpath, dirnames, filenames in os.walk(target):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if name.startswith(TMP_PREFIX):
                continue
            p = Path(dirpath) / name
            rel = p.relative_to(target).as_posix()
            present.add(rel)
            f = stored.get(rel)
            if f is None:
                changes.append(FileChange(rel, "added"))
                continue
            st = p.stat()
            if shares:
                in_blocks.append(shared_bytes(p))
            rec = state.get(rel)
            if rec and rec[0] == st.st_size and rec[1] == st.st_mtime_ns and rec[2] == f.id:
                continue
            current = file_id(p, f.type)
            if current == f.id:
                continue
            fc = FileChange(rel, "modified")
            if f.type == "tensor-file":
                fc.tensors = _changed_tensors(store, f.id, p)
            changes.append(fc)
    for rel in sorted(set(stored) - present):
        changes.append(FileChange(rel, "removed"))
    in_shared = None if not in_blocks or None in in_blocks else sum(n or 0 for n in in_blocks)
    return WorkStatus(str(target), True, not changes, changes, shares=shares, sharing=why,
                      shared_bytes=in_shared, stored_bytes=sum(stored[r].size for r in present if r in stored))


def _changed_tensors(store: ObjectStore, tf_id: str, path: Path) -> list[str]:
    try:
        new = {t.name: t.id for t in tensor_file_of(path).entries()}
    except (MalformedFile, OSError, InvalidInput):
        return ["(unreadable safetensors file)"]
    old = {t.name: t.id for t in store.get(tf_id, "tensor-file").entries()}
    names = sorted(set(old) | set(new))
    return [n for n in names if old.get(n) != new.get(n)]
