"""A Hugging Face model in memory <-> a model tree in the store, without writing the weights to disk.

:func:`store_model` builds the same folder ``save_pretrained`` writes (``config.json``,
``generation_config.json``, ``model.safetensors`` or shards with an index, tokenizer files) as a
tree: the small JSON files go through a temporary folder (they are written by transformers' own
code, so they match), the weights go from the tensors straight into the store. Files of a
``base_tree`` that the model does not replace (tokenizer, README, licence, ...) are reused by id.

:func:`load_weights` copies a stored model's tensors into a model built from the same config.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.content import ParallelWriter
from ..core.errors import CorruptObject, InvalidInput
from ..core.progress import NULL, Progress
from ..core.store import ObjectStore
from ..versions.materialize import iter_file_bytes
from ..versions.models import FileInfo, build_trees, walk_tree
from .tensorio import content_id, iter_tensors, nbytes, store_tensors

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
INDEX_NAMES = ("model.safetensors.index.json",)
MODEL_JSON = ("config.json", "generation_config.json")
#: transformers' own default (v5): one file unless the weights pass this size
DEFAULT_SHARD_BYTES = 50 * 10**9


@dataclass
class StoredModel:
    tree: str
    tensors: int
    weight_bytes: int  # bytes of tensor data
    new_objects: int
    new_bytes: int  # bytes written to the store (compressed)
    tensor_ids: dict = field(default_factory=dict)  # tensor name -> blob id


def unwrap(model: Any) -> Any:
    """The model inside DDP / FSDP / torch.compile wrappers."""
    seen = 0
    while hasattr(model, "module") and seen < 5:
        model = model.module
        seen += 1
    return getattr(model, "_orig_mod", model)


def model_state(model: Any, *, hf_format: bool = True) -> dict[str, Any]:
    """The tensors ``save_pretrained`` would write: tied duplicates removed, names as on disk.

    ``hf_format=False`` keeps the module names (no weight-conversion reversal): checkpoints
    use it so that resuming maps names one to one.
    """
    model = unwrap(model)
    sd = model.state_dict()
    try:
        from transformers.modeling_utils import remove_tied_weights_from_state_dict
        sd = remove_tied_weights_from_state_dict(sd, model)
    except (ImportError, AttributeError, TypeError):
        sd = _drop_aliases(sd)
    if hf_format:
        try:
            from transformers.core_model_loading import revert_weight_conversion
            sd = revert_weight_conversion(model, sd)
        except ImportError:
            pass
    sd = _drop_aliases(dict(sd))
    return sd


def _drop_aliases(sd: dict) -> dict:
    """Keep the first of several names for the same tensor memory (safetensors refuses aliases)."""
    seen: dict = {}
    out = {}
    for k, v in sd.items():
        try:
            key = (v.device, v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.dtype)
        except (AttributeError, RuntimeError):
            out[k] = v
            continue
        if v.numel() and key in seen:
            continue
        seen[key] = k
        out[k] = v
    return out


def is_weight_file(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name.endswith(WEIGHT_SUFFIXES) or name in INDEX_NAMES or name.endswith(".safetensors.index.json")


def _shards(state: dict[str, Any], max_bytes: int, cast: Any = None) -> list[dict[str, Any]]:
    shards: list[dict[str, Any]] = [{}]
    size = 0
    for k, v in state.items():
        n = nbytes(v, cast)
        if shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += n
    return shards


def _small_files(model: Any, tokenizer: Any, dtype_name: str, tmp_root: Path | None) -> dict[str, bytes]:
    """config.json, generation_config.json and tokenizer files, written by transformers itself."""
    out: dict[str, bytes] = {}
    tmp = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-lin-model-", dir=tmp_root))
    try:
        cfg = copy.deepcopy(model.config)
        cfg.dtype = dtype_name
        cfg.architectures = [type(model).__name__.removeprefix("FSDP")]
        cfg.save_pretrained(str(tmp))
        can_generate = getattr(model, "can_generate", lambda: False)()
        gen = getattr(model, "generation_config", None)
        if can_generate and gen is not None:
            gen.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                out[p.relative_to(tmp).as_posix()] = p.read_bytes()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def store_model(store: ObjectStore, model: Any, *, tokenizer: Any = None, base_tree: str | None = None,
                dtype: Any = None, hf_format: bool = True, tmp_dir: Path | None = None,
                max_shard_bytes: int = DEFAULT_SHARD_BYTES, workers: int = 0, known: dict | None = None,
                progress: Progress = NULL) -> StoredModel:
    """Store a model from memory as a tree; return its id and counts.

    ``known``: tensor name -> blob id of tensors known to be unchanged since they were stored
    (a run's frozen parameters); they are not read again. ``StoredModel.tensor_ids`` gives
    every tensor's blob id.
    """
    import torch
    model = unwrap(model)
    state = model_state(model, hf_format=hf_format)
    if not state:
        raise InvalidInput("the model has no tensors to store")
    floats = [dtype or v.dtype for v in state.values() if torch.is_floating_point(v)]
    dtype_name = str(max(set(floats), key=floats.count) if floats else torch.float32).removeprefix("torch.")
    before = (store.written_objects, store.written_bytes)

    files: dict[str, tuple[str, str, int, bool]] = {}  # rel -> (type, id, size, executable)
    small = _small_files(model, tokenizer, dtype_name, tmp_dir)
    if base_tree is not None:
        for f in walk_tree(store, base_tree):
            if is_weight_file(f.path) or f.path in MODEL_JSON or f.path in small:
                continue
            files[f.path] = (f.type, f.id, f.size, f.executable)
    for rel, data in small.items():
        files[rel] = ("blob", content_id(store.put_bytes_chunked(data)), len(data), False)

    shards = _shards(state, max_shard_bytes, dtype)
    total = sum(nbytes(v, dtype) for v in state.values())
    tensor_ids: dict = {}
    progress.start("storing weights", total, "B")
    try:
        with ParallelWriter(workers) as writer:
            names = (["model.safetensors"] if len(shards) == 1 else
                     [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
            for name, shard in zip(names, shards, strict=True):
                tf_id, size = store_tensors(store, shard, metadata={"format": "pt"}, writer=writer, cast=dtype,
                                            known=known, ids_out=tensor_ids)
                files[name] = ("tensor-file", tf_id, size, False)
                progress.advance(sum(nbytes(v, dtype) for v in shard.values()))
    finally:
        progress.finish()
    if len(shards) > 1:
        index = {"metadata": {"total_parameters": sum(v.numel() for v in state.values()), "total_size": total},
                 "weight_map": {k: n for n, shard in zip(names, shards, strict=True) for k in shard}}
        data = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
        index_id = content_id(store.put_bytes_chunked(data))
        files["model.safetensors.index.json"] = ("blob", index_id, len(data), False)
    tree = build_trees(store, [(rel, *v) for rel, v in sorted(files.items())])
    return StoredModel(tree=tree, tensors=len(state), weight_bytes=total,
                       new_objects=store.written_objects - before[0], new_bytes=store.written_bytes - before[1],
                       tensor_ids=tensor_ids)


# ------------------------------------------------------------------------------ reading back


def weight_files(store: ObjectStore, tree_id: str) -> list[FileInfo]:
    return [f for f in walk_tree(store, tree_id) if f.type == "tensor-file"]


def tree_weight_summary(store: ObjectStore, tree_id: str) -> dict:
    """Tensor count, parameter count, bytes and the main float dtype of a stored model."""
    import math
    count = params = nbytes = 0
    dtypes: dict[str, int] = {}
    for f in weight_files(store, tree_id):
        for e in store.get(f.id, "tensor-file").entries():
            count += 1
            n = math.prod(int(x) for x in e.shape)
            params += n
            nbytes += e.size
            if e.dtype in ("F32", "BF16", "F16", "F64"):
                dtypes[e.dtype] = dtypes.get(e.dtype, 0) + e.size
    main = max(dtypes, key=lambda d: dtypes[d]) if dtypes else None
    return {"tensors": count, "params": params, "bytes": nbytes, "dtype": main}


def load_weights(store: ObjectStore, tree_id: str, model: Any) -> int:
    """Copy a stored model's tensors into ``model`` (same architecture); return the tensor count.

    Tied weights (one tensor under two names) are filled through the name that was stored.
    Raises CorruptObject if a stored tensor does not fit or a model tensor is left unset.
    """
    import torch
    model = unwrap(model)
    targets = dict(model.state_dict(keep_vars=True))
    filled: set = set()
    n = 0
    with torch.no_grad():
        for f in weight_files(store, tree_id):
            for name, t in iter_tensors(store, f.id):
                dst = targets.get(name)
                if dst is None:
                    raise CorruptObject(f"stored tensor {name!r} ({f.path}) has no place in the model")
                if tuple(dst.shape) != tuple(t.shape):
                    raise CorruptObject(f"stored tensor {name!r} has shape {list(t.shape)}, "
                                        f"the model expects {list(dst.shape)}")
                dst.copy_(t.to(dtype=dst.dtype))
                filled.add(_mem_key(dst))
                n += 1
    missing = [k for k, v in targets.items() if v.numel() and _mem_key(v) not in filled]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise CorruptObject(f"stored model {tree_id[:12]} lacks {len(missing)} tensor(s) the model needs: {shown}")
    return n


def _mem_key(t: Any) -> tuple:
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset())


def materialize(store: ObjectStore, tree_id: str, target: Path, *,
                weights: bool = True, progress: Progress = NULL) -> Path:
    """Write a stored model into ``target`` once (reused while complete); without weights if asked.

    The folder is built under a temporary name and renamed into place, so a folder that exists
    is complete.
    """
    if (target / ".lin-complete").is_file():
        return target
    tmp = target.with_name(f"{target.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = [f for f in walk_tree(store, tree_id) if weights or not is_weight_file(f.path)]
    progress.start(f"preparing {target.name}", sum(f.size for f in files), "B")
    try:
        for f in files:
            p = tmp / f.path
            p.parent.mkdir(parents=True, exist_ok=True)
            with open(p, "wb") as out:
                for piece in iter_file_bytes(store, f):
                    out.write(piece)
                    progress.advance(len(piece))
    finally:
        progress.finish()
    (tmp / ".lin-complete").write_text(tree_id + "\n")
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    return target
