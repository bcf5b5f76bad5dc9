"""Model folders in and out of the store: store a folder as a tree, check a tree out, status.

Storing streams every file through a bounded pool of threads (hashing and compression release
the GIL): a safetensors file becomes a ``tensor-file`` whose tensors are separate blobs, any
other file a blob, large ones chunked. At most a few 16 MiB chunks are in memory at once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import blake3

from ..core.content import ParallelWriter, file_id, tensor_file, tensor_file_of
from ..core.errors import InvalidInput, MalformedFile, Refused
from ..core.fsutil import AtomicFile, atomic_write_bytes, clean_stale_temp, pwrite_all
from ..core.names import check_tree_entries
from ..core.objects import Tree, TreeEntry
from ..core.progress import NULL, Progress
from ..core.safetensors_io import read_layout
from ..core.store import ObjectStore
from .folder import SKIP_DIRS, TMP_PREFIX, check_model_folder

# ------------------------------------------------------------------------------ stat cache


class StatCache:
    """path -> (size, mtime_ns, inode, ctime_ns) -> (type, id): skips re-hashing unchanged files.

    Derived data in ``.lineage/cache/stat.json``: deleting it only costs a re-hash. An entry is
    trusted only if the file's mtime is older than the moment it was recorded (git's "racy"
    rule), so a file rewritten within the same clock tick is never mistaken for unchanged.
    """

    VERSION = 1

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, list] = {}
        self.dirty = False
        if path is not None:
            try:
                doc = json.loads(path.read_text())
                if doc.get("version") == self.VERSION:
                    self.entries = doc["entries"]
            except (OSError, ValueError, KeyError):
                self.entries = {}

    @staticmethod
    def _key(st: os.stat_result) -> list:
        return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]

    def lookup(self, path: Path, st: os.stat_result) -> tuple[str, str] | None:
        e = self.entries.get(str(path))
        if not e or e[0] != self._key(st):
            return None
        recorded_ns = e[3]
        if st.st_mtime_ns >= recorded_ns - 1_000_000_000:
            return None
        return e[1], e[2]

    def record(self, path: Path, st: os.stat_result, type_name: str, oid: str) -> None:
        if self.lookup(path, st) == (type_name, oid):
            return  # a trusted entry already says so: keep it, so an unchanged folder rewrites nothing
        self.entries[str(path)] = [self._key(st), type_name, oid, time.time_ns()]
        self.dirty = True

    def save(self, tmp_dir: Path) -> None:
        if self.path is None or not self.dirty:
            return
        try:
            atomic_write_bytes(self.path, json.dumps({"version": self.VERSION, "entries": self.entries}).encode(),
                               tmp_dir, durable=False)
        except OSError:
            pass  # a cache that cannot be written costs only time


# ------------------------------------------------------------------------------ storing


@dataclass
class StoredFolder:
    tree: str
    files: int
    bytes: int  # total size of the files
    tensors: int
    cached_files: int  # files recognised unchanged by the stat cache (not re-read)
    new_objects: int
    new_bytes: int  # bytes written to the store (compressed)


@dataclass
class _FileJob:
    rel: str
    path: Path
    size: int
    executable: bool
    st: os.stat_result
    type: str = "blob"
    result: str | Future[str] | None = None


def store_folder(store: ObjectStore, folder: os.PathLike | str, *, progress: Progress = NULL,
                 stat_cache: StatCache | None = None, exclude: tuple[str, ...] = (),
                 workers: int = 0) -> StoredFolder:
    """Store a model folder; return its tree id and counts. Never holds the model in memory."""
    folder = Path(folder)
    listing = check_model_folder(folder, exclude)
    cache = stat_cache or StatCache(None)
    before_objs, before_bytes = store.written_objects, store.written_bytes
    jobs: list[_FileJob] = []
    cached = 0
    to_read = 0
    for rel, full, st in listing:
        job = _FileJob(rel, full, st.st_size, bool(st.st_mode & 0o111), st)
        job.type = "tensor-file" if full.suffix.lower() == ".safetensors" else "blob"
        hit = cache.lookup(full.absolute(), st)
        if hit and hit[0] in ("tensor-file", "blob", "chunks") and store.has(hit[1]):
            job.type, job.result = hit
            cached += 1
        else:
            to_read += st.st_size
        jobs.append(job)

    tensors = 0
    progress.start(f"storing {folder.name}", to_read, "B")
    try:
        with ParallelWriter(workers) as writer:
            for job in jobs:
                if job.result is not None:
                    continue
                if job.type == "tensor-file":
                    job.result, n = _store_safetensors(store, job.path, writer, progress)
                    tensors += n
                else:
                    with open(job.path, "rb") as f:
                        job.result = store.put_stream(f, job.size, writer, progress.advance)
            ids = {}
            for job in jobs:
                oid = job.result.result() if isinstance(job.result, Future) else job.result
                assert isinstance(oid, str)
                if job.type == "blob" and job.size > 0 and store.header(oid).type == "chunks":
                    job.type = "chunks"
                ids[job.rel] = oid
                cache.record(job.path.absolute(), job.st, job.type, oid)
    finally:
        progress.finish()
    tree = build_trees(store, [(j.rel, j.type, ids[j.rel], j.size, j.executable) for j in jobs])
    if tensors == 0:
        tensors = sum(len(store.get(ids[j.rel], "tensor-file").tensors) for j in jobs if j.type == "tensor-file")
    return StoredFolder(tree=tree, files=len(jobs), bytes=sum(j.size for j in jobs), tensors=tensors,
                        cached_files=cached, new_objects=store.written_objects - before_objs,
                        new_bytes=store.written_bytes - before_bytes)


def _store_safetensors(store: ObjectStore, path: Path, writer: ParallelWriter,
                       progress: Progress) -> tuple[Future, int]:
    """Store a safetensors file tensor by tensor on ``writer``'s threads: each tensor's bytes
    go to the store as pieces of the open file (:meth:`ObjectStore.put_range`: on disk, copied
    in the kernel); the tensor-file object follows when every piece is stored."""
    layout = read_layout(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        before = os.fstat(fd)
        futures: list[tuple] = []
        progress.advance(layout.data_start)
        where = str(path)
        for span in layout.tensors:
            futures.append((span, store.put_range(fd, layout.data_start + span.begin, span.size, writer,
                                                  progress.advance, where)))
    except BaseException:
        # pieces already submitted still read the file: close it after them, never under them
        pending = [fu for _, fu in futures]
        if pending:
            writer.submit_after(pending, lambda: os.close(fd))
        else:
            os.close(fd)
        raise

    def finish() -> str:
        try:
            after = os.fstat(fd)
        finally:
            os.close(fd)
        ids = [fu.result() for _, fu in futures]
        # the file may have been rewritten while we read it (a training job saving over it)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) \
                or after.st_size != layout.file_size:
            raise MalformedFile(f"{path}: changed while being stored; run the command again")
        return store.put_object(tensor_file(layout, ids))

    return writer.submit_after([fu for _, fu in futures], finish), len(layout.tensors)


def build_trees(store: ObjectStore, files: list[tuple[str, str, str, int, bool]]) -> str:
    """Write the tree objects of a folder whose file objects are already stored; return the root id.

    ``files`` holds (relative path with ``/``, entry type, object id, size, executable) per file;
    the folders in between are made from the paths, each tree's entries sorted by name and its
    size the sum of its entries' sizes (as :func:`store_folder` writes them).
    """
    root: dict = {}
    for rel, type_name, oid, size, exe in files:
        node = root
        parts = rel.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = (type_name, oid, size, exe)

    def write(node: dict) -> tuple[str, int]:
        entries = []
        total = 0
        for name in sorted(node):
            v = node[name]
            if isinstance(v, dict):
                tid, size = write(v)
                entries.append(TreeEntry(name, "tree", tid, size, False))
            else:
                type_name, oid, size, exe = v
                entries.append(TreeEntry(name, type_name, oid, size, exe))
            total += entries[-1].size
        return store.put_object(Tree(entries=entries)), total

    return write(root)[0]


# ------------------------------------------------------------------------------ reading trees


@dataclass(frozen=True)
class FileInfo:
    path: str  # relative, posix
    type: str
    id: str
    size: int
    executable: bool


def walk_tree(store: ObjectStore, tree_id: str, prefix: str = "") -> Iterator[FileInfo]:
    """Every file of a stored tree, depth first. Each tree's entry names are checked before any
    of its entries is yielded (core.names: no ``.lineage`` or ``.git``, no control characters,
    no separators, no duplicates), so a checkout refuses a crafted tree before writing anything."""
    items = store.get(tree_id, "tree").items()
    where = f"stored tree {tree_id}" + (f" (folder {prefix.rstrip('/')})" if prefix else "")
    check_tree_entries([e.name for e in items], where,
                       hint="lin never writes such a tree; `lin fsck` lists every one in this store")
    for e in items:
        rel = f"{prefix}{e.name}"
        if e.type == "tree":
            yield from walk_tree(store, e.id, rel + "/")
        else:
            yield FileInfo(rel, e.type, e.id, e.size, e.executable)


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
    h = store.header(oid)
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
    if t != "blob":
        raise MalformedFile(f"object {oid[:12]} is a {t}, expected a blob")
    return data


def _write_piece(store: ObjectStore, piece: str | bytes, fd: int, offset: int, size: int) -> int:
    """Write one verified piece of a file at ``offset``: a raw blob by an in-kernel copy from
    its object file, anything else decoded here (called on the checkout's threads)."""
    if isinstance(piece, bytes):
        pwrite_all(fd, piece, offset)
    else:
        raw = store.open_raw_blob(piece)
        if raw is not None:
            with raw:
                if raw.size != size:
                    raise MalformedFile(f"object {piece[:12]} holds {raw.size} bytes, expected {size}")
                raw.copy_to(fd, offset)
        else:
            data = _blob(store, piece)
            if len(data) != size:
                raise MalformedFile(f"object {piece[:12]} holds {len(data)} bytes, expected {size}")
            pwrite_all(fd, data, offset)
    _start_writeback(fd, offset, size)
    return size


def _write_file_pieces(store: ObjectStore, info: FileInfo, fd: int, progress: Progress,
                       threads: int) -> int:
    """Write a stored file into ``fd``, its pieces in parallel at their offsets (at most
    ``2 x threads`` 16 MiB pieces decoded ahead)."""
    pieces = _file_pieces(store, info)
    if len(pieces) <= 1 or threads <= 1:
        for piece, offset, size in pieces:
            progress.advance(_write_piece(store, piece, fd, offset, size))
        return info.size
    with ThreadPoolExecutor(threads) as pool:
        pending: list[Future] = []
        try:
            for piece, offset, size in pieces:
                pending.append(pool.submit(_write_piece, store, piece, fd, offset, size))
                while len(pending) >= 2 * threads:
                    progress.advance(pending.pop(0).result())
            while pending:
                progress.advance(pending.pop(0).result())
        finally:
            for fu in pending:
                fu.cancel()
    return info.size


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
    core) writing at their offsets.

    A file already in ``target`` is replaced only if it is unchanged since lin last wrote it
    (or identical to the same path in ``known``, the active version's files); otherwise the checkout refuses, naming the
    files, unless ``force``. Files of the previous checkout that the new tree lacks are removed
    under the same rule. The store is only read.
    """
    target = Path(target)
    if target.is_symlink():
        raise Refused(f"{target}: is a symlink; give the real folder")
    if target.exists() and not target.is_dir():
        raise InvalidInput(f"{target}: exists and is not a folder")
    files = list(walk_tree(store, tree_id))
    state = load_checkout_state(cache_dir, target)
    old_files: dict = state.get("files", {})
    known = dict(known or {})
    new_by_path = {f.path: f for f in files}

    def unchanged_since_checkout(rel: str, p: Path, st: os.stat_result) -> str | None:
        rec = old_files.get(rel)
        if rec and rec[0] == st.st_size and rec[1] == st.st_mtime_ns:
            return rec[2]
        return None

    conflicts: list[str] = []
    to_write: list[FileInfo] = []
    unchanged = 0
    for f in files:
        p = _safe_target(target, f.path)
        if p.is_symlink():
            if not force:
                conflicts.append(f.path + " (symlink)")
                continue
            to_write.append(f)
            continue
        if not p.exists():
            to_write.append(f)
            continue
        if p.is_dir():
            conflicts.append(f.path + " (a folder)")
            continue
        st = p.stat()
        rec_id = unchanged_since_checkout(f.path, p, st)
        if rec_id == f.id and st.st_size == f.size:
            unchanged += 1
            continue
        if rec_id is not None:
            to_write.append(f)  # lin wrote it and nobody changed it since: safe to replace
            continue
        current = file_id(p, f.type) if st.st_size == f.size or f.type != "tensor-file" else None
        if current == f.id:
            unchanged += 1
            continue
        if force or (current is not None and known.get(f.path) == current):
            to_write.append(f)
        else:
            conflicts.append(f.path)
    to_remove: list[Path] = []
    for rel, rec in old_files.items():
        if rel in new_by_path:
            continue
        p = target / rel
        if not p.exists() or p.is_symlink():
            continue
        st = p.stat()
        if (rec[0] == st.st_size and rec[1] == st.st_mtime_ns) or force:
            to_remove.append(p)
        else:
            conflicts.append(rel + " (changed, and not in the version being checked out)")
    if conflicts:
        shown = ", ".join(conflicts[:8]) + (f" and {len(conflicts) - 8} more" if len(conflicts) > 8 else "")
        raise Refused(f"refusing to overwrite {len(conflicts)} changed file(s) in {target}: {shown}",
                      hint="commit them first (`lin commit`), or pass --force to overwrite")

    target.mkdir(parents=True, exist_ok=True)
    for folder in {(target / f.path).parent for f in files}:  # left by a killed checkout
        clean_stale_temp(folder, prefix=TMP_PREFIX)
    total = sum(f.size for f in to_write)
    threads = workers or 2 * (os.cpu_count() or 1)
    progress.start(f"checking out into {target}", total, "B")
    new_state: dict = {}
    written_bytes = 0
    try:
        for f in to_write:
            p = _safe_target(target, f.path)
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.is_symlink():
                p.unlink()
            with AtomicFile(p, p.parent, prefix=TMP_PREFIX) as out:
                # written through the descriptor (nothing is buffered in `out`)
                written_bytes += _write_file_pieces(store, f, out.fileno(), progress, threads)
                if os.fstat(out.fileno()).st_size != f.size:
                    raise MalformedFile(f"{f.path}: wrote {os.fstat(out.fileno()).st_size} bytes, "
                                        f"the stored file has {f.size}")
            os.chmod(p, 0o755 if f.executable else 0o644)
        for p in to_remove:
            p.unlink(missing_ok=True)
    finally:
        progress.finish()
    for f in files:
        p = target / f.path
        st = p.stat()
        new_state[f.path] = [st.st_size, st.st_mtime_ns, f.id]
    save_checkout_state(cache_dir, target, commit_id, tree_id, new_state)
    return CheckoutResult(str(target), len(to_write), unchanged, len(to_remove), written_bytes)


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


def work_status(store: ObjectStore, tree_id: str, target: os.PathLike | str, cache_dir: Path) -> WorkStatus:
    """Compare a work folder with a stored tree: which files and tensors differ."""
    target = Path(target)
    if not target.is_dir():
        return WorkStatus(str(target), False, False, [])
    state = load_checkout_state(cache_dir, target).get("files", {})
    stored = {f.path: f for f in walk_tree(store, tree_id)}
    changes: list[FileChange] = []
    present: set[str] = set()
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
    return WorkStatus(str(target), True, not changes, changes)


def _changed_tensors(store: ObjectStore, tf_id: str, path: Path) -> list[str]:
    try:
        new = {t.name: t.id for t in tensor_file_of(path).entries()}
    except (MalformedFile, OSError, InvalidInput):
        return ["(unreadable safetensors file)"]
    old = {t.name: t.id for t in store.get(tf_id, "tensor-file").entries()}
    names = sorted(set(old) | set(new))
    return [n for n in names if old.get(n) != new.get(n)]
