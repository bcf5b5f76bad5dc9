"""Model folders into the store: store a folder as a tree, and walk a stored tree.

Writing a tree back out (checkout) and comparing a folder with a version (status) are in
:mod:`.materialize`.

Storing streams every file through a bounded pool of threads (hashing and compression release
the GIL): a safetensors file becomes a ``tensor-file`` whose tensors are separate blobs, any
other file a blob, large ones chunked. At most a few 16 MiB chunks are in memory at once.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from ..core.content import ParallelWriter, tensor_file
from ..core.errors import MalformedFile
from ..core.fsutil import atomic_write_bytes
from ..core.names import check_tree_entries
from ..core.objects import Tree, TreeEntry
from ..core.progress import NULL, Progress
from ..core.safetensors_io import read_layout
from ..core.store import ObjectStore
from .folder import check_model_folder

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
                        job.result = store.put_stream(f, job.size, writer, progress.advance, at=0)
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
