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
- ``parent``: the run's previous checkpoint, by id only: it does not keep it alive (gc keeps the
  last ``train.keep_checkpoints`` of a run through its reflog); ``meta``: status, base,
  datasets, settings.

``refs/runs/<run>`` names the newest checkpoint; it moves by compare-and-swap with a reflog line.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.content import ParallelWriter
from ..core.errors import CorruptObject, NotFound
from ..core.objects import Checkpoint
from ..core.repo import Repo
from ..core.store import ObjectStore
from ..versions.models import build_trees, walk_tree
from .tensorio import content_id, join_tensors, load_tensors, split_tensors, store_tensors

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
    return repo.objects.batch(repo.settings.train.checkpoint_compression_level)


def save_state(store: ObjectStore, parts: dict[str, Any], *, workers: int = 0,
               entries: tuple[tuple[str, str, str, int, bool], ...] = ()) -> str:
    """Store named parts of trainer state as a tree: ``<name>.json`` plus ``<name>.safetensors``;
    ``entries`` (name, type, id, size, executable) are added as they are (the run's series)."""
    files = list(entries)
    with ParallelWriter(workers) as writer:
        for name, obj in sorted(parts.items()):
            doc, tensors = split_tensors(obj, "")
            data = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
            files.append((f"{name}.json", "blob", content_id(store.put_bytes_chunked(data)), len(data), False))
            if tensors:
                tf_id, size = store_tensors(store, tensors, writer=writer)
                files.append((f"{name}.safetensors", "tensor-file", tf_id, size, False))
    return build_trees(store, files)


def load_state(store: ObjectStore, tree_id: str) -> dict[str, Any]:
    """The parts of a state tree stored by :func:`save_state` (tensors on the CPU)."""
    files = {f.path: f for f in walk_tree(store, tree_id)}
    out: dict[str, Any] = {}
    for path, f in files.items():
        if not path.endswith(".json") or "/" in path:  # parts are top-level; `series/` is the run's series
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


def load_state_json(store: ObjectStore, tree_id: str, name: str) -> dict | None:
    """Only the JSON of one part of a state tree (``trainer``: the data position), no tensors."""
    f = next((f for f in walk_tree(store, tree_id) if f.path == f"{name}.json"), None)
    if f is None:
        return None
    try:
        doc = json.loads(store.read_content(f.id))
    except ValueError as e:
        raise CorruptObject(f"checkpoint state {name}.json: not valid JSON ({e})") from None
    return join_tensors(doc, {})


# ------------------------------------------------------------------------------ RNG state


def rng_state(device) -> dict:
    """This process's Python, NumPy and torch (CPU, and CUDA on a GPU) generator states."""
    import torch
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict, device) -> None:
    """Restore what :func:`rng_state` took (JSON turned its tuples into lists)."""
    import torch
    random.setstate(_tuplify(st["python"]))
    np.random.set_state(_tuplify(st["numpy"]))
    torch.set_rng_state(st["torch"])
    if device.type == "cuda" and st.get("cuda") is not None:
        torch.cuda.set_rng_state(st["cuda"], device)


def _tuplify(v: Any) -> Any:
    return tuple(_tuplify(x) for x in v) if isinstance(v, (list, tuple)) else v


def rng_to_json(st: dict) -> dict:
    """A rank's RNG state as plain JSON (to send it to rank 0)."""
    doc, tensors = split_tensors(st, "rng")
    return {"doc": doc, "tensors": {k: v.tolist() for k, v in tensors.items()}}


def rng_from_json(d: dict) -> dict:
    """The RNG state :func:`rng_to_json` sent, with its generator states as uint8 tensors again."""
    import torch
    return join_tensors(d["doc"], {k: torch.tensor(v, dtype=torch.uint8) for k, v in d["tensors"].items()})


# ------------------------------------------------------------------------------ checkpoint objects


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
    """A run's checkpoints from ``cid`` back through their parents, newest first, as far as they
    are still in the store (gc collects all but the last few)."""
    out: list[CheckpointInfo] = []
    cur: str | None = cid
    while cur and len(out) < limit:
        try:
            info = read_checkpoint(repo, cur)
        except NotFound:
            break
        out.append(info)
        cur = info.parent
    return out
