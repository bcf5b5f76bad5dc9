"""Tensors into the store from memory, and back, without writing a file first.

A dict of tensors becomes a ``tensor-file`` object: the safetensors header is built here, byte
for byte as ``safetensors.torch.save`` builds it (tensors ordered by dtype, widest first, then by
name; compact JSON; padded with spaces to a multiple of 8), and each tensor's bytes are stored as
a blob (16 MiB chunks above that) straight from the tensor's memory. Checking the object out
therefore gives a real safetensors file, and a tensor that did not change since an earlier
checkpoint or version is the same blob: storing it again costs one hash and no write.

State that is not a tensor (optimizer hyper-parameters, scheduler counters, RNG states) is kept
as JSON with a few tags (:func:`split_tensors` / :func:`join_tensors`); nothing is ever pickled.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from typing import Any

from ..core.content import ParallelWriter
from ..core.errors import CorruptObject, InvalidInput
from ..core.objects import TensorEntry, TensorFile
from ..core.safetensors_io import DTYPE_SIZES, parse_header
from ..core.store import ObjectStore

#: safetensors dtypes in the order of its Rust ``Dtype`` enum (the file orders widest first)
_ST_ORDER = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16", "F16", "BF16",
             "I32", "U32", "F32", "C64", "F64", "I64", "U64"]
_RANK = {d: i for i, d in enumerate(_ST_ORDER)}

_TORCH_NAMES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn",
    "F8_E8M0": "float8_e8m0fnu", "I16": "int16", "U16": "uint16", "F16": "float16", "BF16": "bfloat16",
    "I32": "int32", "U32": "uint32", "F32": "float32", "C64": "complex64", "F64": "float64",
    "I64": "int64", "U64": "uint64",
}


def _check_host() -> None:
    if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for
        raise InvalidInput("safetensors is little-endian; this host is big-endian")


def st_dtype(t) -> str:
    """The safetensors dtype name of a torch tensor."""
    name = str(t.dtype).removeprefix("torch.")
    for st, tn in _TORCH_NAMES.items():
        if tn == name:
            return st
    raise InvalidInput(f"tensor dtype {name} has no safetensors equivalent")


def torch_dtype(st: str):
    import torch
    try:
        return getattr(torch, _TORCH_NAMES[st])
    except (KeyError, AttributeError):
        raise CorruptObject(f"unsupported tensor dtype {st!r} in a stored tensor file") from None


def _cast_to(t, cast):
    import torch
    return cast if (cast is not None and torch.is_floating_point(t) and t.dtype != cast) else None


def tensor_bytes(t, cast=None) -> memoryview:
    """The raw little-endian bytes of a tensor, on the CPU (no copy when it already is);
    floating-point tensors are converted to ``cast`` on the way (one tensor at a time)."""
    import torch
    t = t.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    to = _cast_to(t, cast)
    if to is not None:
        t = t.to(to)
    if not t.is_contiguous():
        t = t.contiguous()
    if t.numel() == 0:
        return memoryview(b"")
    flat = t.reshape(-1)
    if flat.dtype != torch.uint8:
        flat = flat.view(torch.uint8)
    return memoryview(flat.numpy()).cast("B")


def build_header(specs: list[tuple[str, str, list[int], int]],
                 metadata: Mapping[str, str] | None = None) -> tuple[bytes, list[tuple[str, str, list[int], int]]]:
    """The safetensors header for ``(name, dtype, shape, nbytes)`` specs, and the specs in data order."""
    ordered = sorted(specs, key=lambda s: (-_RANK.get(s[1], -1), s[0]))
    parts = []
    if metadata:
        meta = {str(k): str(v) for k, v in metadata.items()}
        parts.append('"__metadata__":' + json.dumps(meta, separators=(",", ":"), ensure_ascii=False))
    offset = 0
    for name, dtype, shape, n in ordered:
        info = {"dtype": dtype, "shape": [int(x) for x in shape], "data_offsets": [offset, offset + n]}
        parts.append(json.dumps(name, ensure_ascii=False) + ":" + json.dumps(info, separators=(",", ":")))
        offset += n
    header = ("{" + ",".join(parts) + "}").encode("utf-8")
    header += b" " * ((8 - len(header) % 8) % 8)
    return header, ordered


def nbytes(t, cast=None) -> int:
    """The stored size of a tensor (after ``cast``)."""
    import torch
    to = _cast_to(t, cast)
    return t.numel() * (torch.empty((), dtype=to).element_size() if to is not None else t.element_size())


def content_id(put: str | Future[str]) -> str:
    """The id an ``ObjectStore.put_*`` call stored: given at once without a writer, a future of it with one."""
    return put.result() if isinstance(put, Future) else put


def store_tensors(store: ObjectStore, tensors: Mapping[str, Any], *, metadata: Mapping[str, str] | None = None,
                  writer: ParallelWriter | None = None, cast=None, known: Mapping[str, str] | None = None,
                  ids_out: dict | None = None) -> tuple[str, int]:
    """Store ``{name: tensor}`` as a ``tensor-file``; return ``(id, file size)``.

    The tensors are read in place (GPU tensors are copied to the CPU, and cast, one at a time
    as the writer takes them); they must not change until this returns. ``known`` maps names
    of tensors the caller knows to be unchanged (frozen) to their blob ids, which are reused
    without reading the tensor; ``ids_out`` receives every tensor's blob id.
    """
    import torch
    _check_host()
    specs = []
    for name, t in tensors.items():
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"tensor name {name!r}: must be a non-empty string")
        to = _cast_to(t, cast)
        dtype = st_dtype(torch.empty((), dtype=to)) if to is not None else st_dtype(t)
        specs.append((name, dtype, list(t.shape), nbytes(t, cast)))
    header, ordered = build_header(specs, metadata)
    own = writer is None
    w = writer or ParallelWriter()
    try:
        stored: list[tuple[tuple[str, str, list[int], int], str | Future[str]]] = []
        end = 8 + len(header)
        for spec in ordered:
            at, end = end, end + spec[3]  # where its bytes lie in the file: a checkout may share them
            kid = (known or {}).get(spec[0])
            if kid is not None and store.has(kid):
                stored.append((spec, kid))
                continue
            view = tensor_bytes(tensors[spec[0]], cast)
            if len(view) != spec[3]:
                raise InvalidInput(f"tensor {spec[0]}: {len(view)} bytes, expected {spec[3]}")
            stored.append((spec, store.put_bytes_chunked(view, w, at=at)))
        entries = [TensorEntry(name=n, dtype=d, shape=list(s), size=size, id=content_id(f))
                   for (n, d, s, size), f in stored]
        if ids_out is not None:
            ids_out.update({e.name: e.id for e in entries})
    finally:
        if own:
            w.close()
    size = 8 + len(header) + sum(s[3] for s in ordered)
    tf = TensorFile(header=header.decode("utf-8"), tensors=list(entries), size=size)  # a list that may hold dicts
    return store.put_object(tf), size


def tensor_file_entries(store: ObjectStore, tf_id: str) -> list[TensorEntry]:
    tf = store.get(tf_id, "tensor-file")
    header = tf.header.encode("utf-8")
    layout = parse_header(header, tf.size, f"tensor-file {tf_id[:12]}")
    if sorted((s.name, s.size) for s in layout.tensors) != sorted((e.name, e.size) for e in tf.entries()):
        raise CorruptObject(f"tensor-file {tf_id[:12]}: header and tensor list disagree")
    return tf.entries()


def read_tensor(store: ObjectStore, entry: TensorEntry):
    """One stored tensor as a CPU torch tensor that owns its memory (hash verified)."""
    import torch
    dtype = torch_dtype(entry.dtype)
    shape = [int(x) for x in entry.shape]
    if entry.size == 0:
        return torch.empty(shape, dtype=dtype)
    data = bytearray(entry.size)
    pos = 0
    for piece in store.iter_content(entry.id):
        data[pos:pos + len(piece)] = piece
        pos += len(piece)
    if pos != entry.size:
        raise CorruptObject(f"tensor {entry.name}: {pos} bytes stored, {entry.size} expected")
    esize = DTYPE_SIZES.get(entry.dtype)
    if esize is not None and math.prod(shape) * esize != entry.size:
        raise CorruptObject(f"tensor {entry.name}: {entry.size} bytes do not fit {entry.dtype}{shape}")
    return torch.frombuffer(data, dtype=dtype).reshape(shape)


def iter_tensors(store: ObjectStore, tf_id: str) -> Iterator[tuple[str, Any]]:
    """The tensors of a stored tensor-file, one at a time (bounded memory)."""
    for e in tensor_file_entries(store, tf_id):
        yield e.name, read_tensor(store, e)


def load_tensors(store: ObjectStore, tf_id: str) -> dict[str, Any]:
    return dict(iter_tensors(store, tf_id))


# ------------------------------------------------------------------------------ tagged JSON


def split_tensors(obj: Any, prefix: str = "") -> tuple[Any, dict[str, Any]]:
    """Separate the tensors of a nested state (dicts, lists, tuples) from the JSON-able rest.

    Tensors become ``{"__tensor__": name}`` and are returned by name; tuples, dicts with
    non-string keys, non-finite floats, numpy arrays and torch dtypes are tagged so that
    :func:`join_tensors` rebuilds the same Python values. Anything else is refused.
    """
    tensors: dict[str, Any] = {}

    def enc(v: Any, path: str) -> Any:
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            if math.isfinite(v):
                return v
            return {"__float__": repr(v)}
        mod = type(v).__module__
        if mod.startswith("torch"):
            import torch
            if isinstance(v, torch.Tensor):
                name = path or "tensor"
                tensors[name] = v
                return {"__tensor__": name}
            if isinstance(v, torch.dtype):
                return {"__dtype__": str(v).removeprefix("torch.")}
        if mod == "numpy":
            import numpy as np
            if isinstance(v, np.ndarray):
                return {"__ndarray__": {"dtype": v.dtype.str, "shape": list(v.shape), "data": v.ravel().tolist()}}
            if isinstance(v, np.generic):
                return enc(v.item(), path)
        if isinstance(v, tuple):
            return {"__tuple__": [enc(x, f"{path}.{i}") for i, x in enumerate(v)]}
        if isinstance(v, list):
            return [enc(x, f"{path}.{i}") for i, x in enumerate(v)]
        if isinstance(v, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in v):
                return {k: enc(x, f"{path}.{k}" if path else k) for k, x in v.items()}
            return {"__dict__": [[enc(k, path), enc(x, f"{path}.{k}" if path else str(k))] for k, x in v.items()]}
        raise InvalidInput(f"cannot keep a {type(v).__name__} at {path or 'top level'} in a checkpoint "
                           "(only tensors, numbers, strings, lists and dicts; lin never pickles)")

    return enc(obj, prefix), tensors


def join_tensors(obj: Any, tensors: Mapping[str, Any]) -> Any:
    """The inverse of :func:`split_tensors`."""
    def dec(v: Any) -> Any:
        if isinstance(v, list):
            return [dec(x) for x in v]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (tag, body), = v.items()
            if tag == "__tensor__":
                try:
                    return tensors[body]
                except KeyError:
                    raise CorruptObject(f"checkpoint state names a missing tensor {body!r}") from None
            if tag == "__tuple__":
                return tuple(dec(x) for x in body)
            if tag == "__dict__":
                return {_hashable(dec(k)): dec(x) for k, x in body}
            if tag == "__float__":
                return float(body)
            if tag == "__dtype__":
                import torch
                return getattr(torch, body)
            if tag == "__ndarray__":
                import numpy as np
                return np.array(body["data"], dtype=np.dtype(body["dtype"])).reshape(body["shape"])
        return {k: dec(x) for k, x in v.items()}

    return dec(obj)


def _hashable(k: Any) -> Any:
    return tuple(_hashable(x) for x in k) if isinstance(k, list) else k
