"""A training run's checkpoints in the store.

A checkpoint is a ``checkpoint`` object (see docs/format.md) naming:

- ``model``: a model tree as ``save_pretrained`` would write it, weights in full precision
  (fp32 master weights), built from memory; files the base model has (tokenizer, ...) are
  reused by id and unchanged tensors are the same blobs, so they cost nothing;
- ``state``: a tree of ``<part>.json`` (tagged JSON) and ``<part>.safetensors`` (the part's
  tensors) for each part of the trainer state: ``optimizer``, ``scheduler``, ``scaler``,
  ``rng`` (torch CPU/CUDA generator states as uint8 tensors, Python and NumPy states as JSON,
  one entry per rank), ``trainer`` (step, epoch, data position, tokens, wall time) and
  ``losses`` (the loss of every optimizer step, float64);
- ``parent``: the run's previous checkpoint; ``meta``: status, base, datasets, settings.

``refs/runs/<run>`` names the newest checkpoint; it moves by compare-and-swap with a reflog line.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import CorruptObject, NotFound
from ..fsutil import fsync_dir, is_nospace, nospace_error, temp_name
from ..models import _build_trees, walk_tree
from ..objects import Checkpoint
from ..repo import Repo
from ..store import DiskObjectStore, ObjectStore, ParallelWriter, in_object_folder
from .tensorio import join_tensors, load_tensors, split_tensors, store_tensors

RUNS_PREFIX = "refs/runs/"
#: checkpoint meta "status" values
RUNNING, INTERRUPTED, FAILED = "running", "interrupted", "failed"


def run_ref(run: str) -> str:
    return RUNS_PREFIX + run


def checkpoint_store(repo: Repo) -> ObjectStore:
    """The store to write a checkpoint with: the same objects, written as one batch.

    zstd runs at its fastest level (``train.checkpoint_compression_level``, default -5): float
    tensors gain only ~7% at levels 1-3 and cost 1-2 s per GB while training waits; with
    ``core.compression = "auto"`` samples of each large tensor are tried and those without
    repeats are stored raw (objects.encode_payload). Ids do not depend on the level; the final
    version is written with the store's own level. On disk, objects are made durable together
    (:class:`BatchObjectStore`) instead of one fsync each. Call ``flush()`` before writing the
    checkpoint object and moving the ref.
    """
    level = int(repo.config.get("train.checkpoint_compression_level", -5))
    objs = repo.objects
    if isinstance(objs, DiskObjectStore):
        return BatchObjectStore(objs.root, objs.tmp_dir, level, objs.compression)
    return objs


class BatchObjectStore(DiskObjectStore):
    """A disk store whose new objects wait in ``tmp/`` until :meth:`flush`.

    ``flush`` fsyncs every waiting file (many at once, on threads), renames each into
    ``objects/`` and fsyncs the folders, so an object file that exists is always complete (as
    with one-at-a-time writes) but the disk is waited for once per batch, not once per tensor.
    Until then the batch's objects are only known to this instance (``has`` sees them, nothing
    can read them): write the objects that name them (trees, the checkpoint) after ``flush``.
    A crash before ``flush`` leaves only temp files, which the next writer removes.
    """

    def __init__(self, root, tmp_dir, compression_level: int = 3, compression: str = "auto"):
        super().__init__(root, tmp_dir, compression_level, compression)
        self._pending: dict[str, Any] = {}
        self._syncs: list = []
        self._plock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def has(self, oid: str) -> bool:
        return oid in self._pending or super().has(oid)

    def _write_file(self, oid: str, data) -> None:
        with self._plock:
            if oid in self._pending:
                return
            self._pending[oid] = None
        tmp = temp_name(self.tmp_dir)  # "<pid>-...": other writers' clean-up leaves it alone
        try:
            with open(tmp, "xb") as f:
                for piece in data:
                    f.write(piece)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            with self._plock:
                self._pending.pop(oid, None)
            if is_nospace(e):
                raise nospace_error(e, tmp) from e
            raise
        with self._plock:
            self._pending[oid] = tmp
            if self._pool is None:
                self._pool = ThreadPoolExecutor(8, thread_name_prefix="lin-fsync")
            self._syncs.append(self._pool.submit(_fsync_file, tmp))  # the disk works while we hash on

    def flush(self) -> int:
        """Make every waiting object durable and visible; return how many there were."""
        with self._plock:
            pending = {k: v for k, v in self._pending.items() if v is not None}
            syncs, self._syncs = self._syncs, []
            self._pending = {}
            pool, self._pool = self._pool, None
        if not pending:
            if pool is not None:
                pool.shutdown()
            return 0
        try:
            for f in syncs:
                f.result()
            folders = set()
            # insertion order is link order (an object is put only after the objects it names),
            # so objects/ never holds an object without what it links to, even if we die here
            for oid, tmp in pending.items():
                os.chmod(tmp, 0o444)
                folders.add(self._place(tmp, self.path_for(oid)))
            assert pool is not None
            list(pool.map(fsync_dir, folders))
        finally:
            if pool is not None:
                pool.shutdown()
        return len(pending)

    @staticmethod
    def _place(tmp, path):
        """Rename into its read-only object folder; returns the folder (to fsync)."""
        in_object_folder(path.parent, lambda: os.replace(tmp, path))
        return path.parent

    def discard(self) -> None:
        """Drop the waiting objects (after an error)."""
        with self._plock:
            pending, self._pending = self._pending, {}
            syncs, self._syncs = self._syncs, []
            pool, self._pool = self._pool, None
        for f in syncs:
            f.exception()  # wait: the file must not be synced after it is removed
        if pool is not None:
            pool.shutdown()
        for tmp in pending.values():
            if tmp is not None:
                tmp.unlink(missing_ok=True)


def _fsync_file(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def flush_checkpoint(store: ObjectStore) -> None:
    flush = getattr(store, "flush", None)
    if flush is not None:
        flush()


def discard_checkpoint(store: ObjectStore) -> None:
    discard = getattr(store, "discard", None)
    if discard is not None:
        discard()


def save_state(store: ObjectStore, parts: dict[str, Any], *, workers: int = 0) -> str:
    """Store named parts of trainer state as a tree: ``<name>.json`` plus ``<name>.safetensors``."""
    files = []
    with ParallelWriter(workers) as writer:
        for name, obj in sorted(parts.items()):
            doc, tensors = split_tensors(obj, "")
            data = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
            files.append((f"{name}.json", "blob", store.put_bytes_chunked(data), len(data), False))
            if tensors:
                tf_id, size = store_tensors(store, tensors, writer=writer)
                files.append((f"{name}.safetensors", "tensor-file", tf_id, size, False))
    return _build_trees(store, files)


def load_state(store: ObjectStore, tree_id: str) -> dict[str, Any]:
    """The parts of a state tree stored by :func:`save_state` (tensors on the CPU)."""
    files = {f.path: f for f in walk_tree(store, tree_id)}
    out: dict[str, Any] = {}
    for path, f in files.items():
        if not path.endswith(".json"):
            continue
        name = path[:-5]
        try:
            doc = json.loads(store.read_content(f.id))
        except ValueError as e:
            raise CorruptObject(f"checkpoint state {path}: not valid JSON ({e})") from None
        st = files.get(f"{name}.safetensors")
        tensors = load_tensors(store, st.id) if st is not None else {}
        out[name] = join_tensors(doc, tensors)
    return out


@dataclass
class CheckpointInfo:
    id: str
    run: str
    step: int
    model: str
    state: str | None
    parent: str | None
    meta: dict

    @property
    def status(self) -> str:
        return str(self.meta.get("status", RUNNING))


def read_checkpoint(repo: Repo, cid: str) -> CheckpointInfo:
    c: Checkpoint = repo.objects.get(cid, "checkpoint")
    return CheckpointInfo(cid, c.run, c.step, c.model, c.state, c.parent, dict(c.meta))


def latest(repo: Repo, run: str) -> CheckpointInfo | None:
    cid = repo.refs.resolve(run_ref(run))
    return read_checkpoint(repo, cid) if cid else None


def write_checkpoint(repo: Repo, run: str, *, step: int, model: str, state: str | None,
                     parent: str | None, meta: dict, message: str) -> str:
    """Write the checkpoint object, then move ``refs/runs/<run>`` from ``parent`` to it."""
    ck = Checkpoint(run=run, step=int(step), model=model, state=state, parent=parent, meta=dict(meta))
    cid = repo.objects.put_object(ck)
    repo.update_ref(run_ref(run), parent, cid, message)
    return cid


def history(repo: Repo, cid: str, limit: int = 1000) -> list[CheckpointInfo]:
    """A run's checkpoints from ``cid`` back through their parents, newest first."""
    out = []
    cur: str | None = cid
    while cur and len(out) < limit:
        try:
            info = read_checkpoint(repo, cur)
        except NotFound:
            break
        out.append(info)
        cur = info.parent
    return out
