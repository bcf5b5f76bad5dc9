"""The content layer between object encodings (:mod:`.objects`) and the object store (:mod:`.store`).

- **Chunking**: content of at most :data:`CHUNK_SIZE` bytes is one blob; larger content is
  CHUNK_SIZE blobs (the last shorter) listed in order by a ``chunks`` object, and the chunks
  object's id is the content's id (:func:`piece_spans`, :func:`name_content`, :func:`content_id`).
- **Decode and verify**: an object in stored form (header + payload) becomes its decoded bytes
  only after its declared size was checked against its type (before anything is allocated or
  decoded) and its bytes hashed to its id (:func:`decode_stored`); a raw blob on disk is verified
  through mmap and handed out open for an in-kernel copy (:func:`open_raw`, :class:`RawBlob`).
  The store, the trash, remotes and fsck all read objects this one way.
- **Ids without storing**: the id a file would get (:func:`file_content_id`, :func:`file_id`) and
  the ``tensor-file`` object of a safetensors file (:func:`tensor_file`, :func:`tensor_file_of`),
  by hashing alone (no compression, nothing written).
- :class:`ParallelWriter`: the bounded thread pool writers hash and compress pieces on.
- :class:`DecodedCache`: verified decoded content by id, bounded in bytes, for reads that meet
  the same object again (a repack reading a piece, then using it as the base of the next older
  one; :func:`decode_stored` stopping a delta chain at a base already decoded).
"""

from __future__ import annotations

import mmap
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .codecs import BASE_ID_SIZE, DEFAULT_MAX_DEPTH, delta_base, unpack_planes
from .errors import CorruptObject, InvalidInput, MalformedFile, ObjectNotFound
from .fsutil import is_nospace
from .ids import ObjectId, check_object_id, hash_object
from .loose import aligned_content, share_range
from .objects import (
    CHUNK_SIZE,
    CODEC_ALIGNED,
    CODEC_DELTA,
    CODEC_PLANES,
    CODEC_RAW,
    HEADER_SIZE,
    Chunks,
    ObjectHeader,
    TensorEntry,
    TensorFile,
    decompress,
    unpack_header,
)
from .safetensors_io import SafetensorsLayout, read_layout

_HINT = "run `lin fsck` to list every damaged object"
#: the id type of the pieces that content is named from; the content's id has that type too
_IdT = TypeVar("_IdT", bound=str)
_T = TypeVar("_T")

if TYPE_CHECKING:  # numpy is imported where content is decoded: `lin init` never loads it
    import numpy as np

# ------------------------------------------------------------------------------ chunking


def piece_spans(size: int) -> list[tuple[int, int]]:
    """``(offset, length)`` of the blobs ``size`` bytes of content are stored as: one (possibly
    empty) blob up to CHUNK_SIZE, else CHUNK_SIZE pieces, the last shorter."""
    if size <= CHUNK_SIZE:
        return [(0, size)]
    return [(o, min(CHUNK_SIZE, size - o)) for o in range(0, size, CHUNK_SIZE)]


def name_content(parts: Sequence[tuple[_IdT, int]]) -> _IdT | Chunks:
    """What names content stored as ``parts`` (``(blob id, size)`` of its pieces, in order): the
    one blob's id, or the chunks object to store (whose id is then the content's)."""
    if len(parts) == 1:
        return parts[0][0]
    return Chunks(size=sum(n for _, n in parts), parts=[[i, n] for i, n in parts])


def content_id(parts: Sequence[tuple[_IdT, int]]) -> _IdT | ObjectId:
    """The id of content stored as ``parts`` (see :func:`name_content`); ``[]`` is empty content."""
    if not parts:
        return hash_object("blob", b"")
    named = name_content(parts)
    return named if isinstance(named, str) else hash_object("chunks", named.encode())


# ------------------------------------------------------------------------------ decode and verify


def verify(oid: str, type_name: str, data: bytes | memoryview, where: str) -> None:
    """Raise CorruptObject unless ``data`` of type ``type_name`` hashes to ``oid``."""
    actual = hash_object(type_name, data)
    if actual != oid:
        raise CorruptObject(f"{where} is corrupt: its content hashes to {actual[:16]}...", hint=_HINT)


#: reads the stored form (header + payload) of an object by id, for the base of a delta;
#: ObjectNotFound when the source does not hold it
LoadStored = Callable[[str], bytes | memoryview]


class DecodedCache:
    """Verified decoded content by object id, at most ``max_bytes`` of it (the least recently
    used leaves first), each entry with its type and the deltas followed to decode it.

    Only content that hashed to its id goes in (:func:`decode_stored` puts each object of a
    chain after verifying it), so a hit needs no second hash; a damaged object is still found
    by every read that does not hit. :meth:`load` runs a loader once per id while threads ask
    for the same id at once (a repack's piece is also the base of the next older piece).
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[str, bytes | memoryview, int]] = OrderedDict()
        self._loading: dict[str, Future[tuple[str, bytes | memoryview, int]]] = {}

    def get(self, oid: str) -> tuple[str, bytes | memoryview, int] | None:
        """(type, content, delta depth) of ``oid`` if held."""
        with self._lock:
            item = self._items.get(oid)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(oid)
            self.hits += 1
            return item

    def put(self, oid: str, type_name: str, data: bytes | memoryview, depth: int = 0) -> None:
        """Hold verified content (more than ``max_bytes`` alone is not held; a writable buffer
        is copied, so that what was verified cannot change)."""
        n = memoryview(data).nbytes
        if n > self.max_bytes:
            return
        if not memoryview(data).readonly:
            data = bytes(data)
        with self._lock:
            old = self._items.pop(oid, None)
            if old is not None:
                self.bytes -= memoryview(old[1]).nbytes
            self._items[oid] = (type_name, data, depth)
            self.bytes += n
            while self.bytes > self.max_bytes:
                _, (_, gone, _) = self._items.popitem(last=False)
                self.bytes -= memoryview(gone).nbytes

    def load(self, oid: str, loader: Callable[[], tuple[str, bytes | memoryview, int]]) -> tuple[str, bytes | memoryview, int]:
        """The entry of ``oid``, from ``loader`` (which must verify) when not held; threads
        asking for the same id meanwhile wait for that one call."""
        with self._lock:
            item = self._items.get(oid)
            if item is not None:
                self._items.move_to_end(oid)
                self.hits += 1
                return item
            fut = self._loading.get(oid)
            mine = fut is None
            if mine:
                fut = self._loading[oid] = Future()
                self.misses += 1
        assert fut is not None
        if not mine:
            return fut.result()
        try:
            item = loader()
        except BaseException as e:
            with self._lock:
                del self._loading[oid]
            fut.set_exception(e)
            raise
        self.put(oid, *item)
        with self._lock:
            del self._loading[oid]
        fut.set_result(item)
        return item

    def __len__(self) -> int:
        return len(self._items)


def decode_stored(oid: str, stored: bytes | memoryview, where: str | None = None,
                  load_base: LoadStored | None = None,
                  max_depth: int = DEFAULT_MAX_DEPTH, cache: DecodedCache | None = None) -> tuple[ObjectHeader, bytes]:
    """:func:`decode_buffer`, the content as ``bytes``."""
    h, data = decode_buffer(oid, stored, where, load_base, max_depth, cache)
    return h, data if isinstance(data, bytes) else bytes(data)


def decode_buffer(oid: str, stored: bytes | memoryview, where: str | None = None,
                  load_base: LoadStored | None = None, max_depth: int = DEFAULT_MAX_DEPTH,
                  cache: DecodedCache | None = None) -> tuple[ObjectHeader, bytes | memoryview]:
    """The header and decoded content of an object in stored form, verified; the content as a
    read-only buffer (a view of ``stored`` for a raw object: no copy).

    A header whose size its type may not have, a payload that does not decode to that size, or
    content that does not hash to ``oid`` raise :class:`CorruptObject` naming ``where`` (default
    ``object <oid>``), before anything larger than the type's limit is allocated.

    A delta (codec 3) is decoded against its base, read with ``load_base`` and itself decoded
    and verified the same way, following at most ``max_depth`` deltas (``core.delta_max_depth``)
    to an object stored whole. A missing, corrupt or differently sized base, a longer chain or
    a loop raises CorruptObject naming the object and the base. With ``cache``, the chain stops
    at a base the cache holds (its depth still counts against ``max_depth``) and every object
    decoded on the way is put in it, verified.
    """
    try:
        return _decode(oid, stored, where or f"object {oid}", load_base, max_depth, cache)
    except BaseException:
        check_object_id(oid)  # what is no id is refused as such (content verified names a valid one)
        raise


def _decode(oid: str, stored: bytes | memoryview, where: str, load_base: LoadStored | None,
            max_depth: int, cache: DecodedCache | None) -> tuple[ObjectHeader, bytes | memoryview]:
    view = memoryview(stored)
    h = unpack_header(view[:HEADER_SIZE], where)
    if h.codec != CODEC_DELTA:
        data = _decode_whole(oid, h, view[HEADER_SIZE:], where)
        if cache is not None and h.codec != CODEC_RAW:
            cache.put(oid, h.type, data)
        return h, data
    chain, start = _delta_chain(oid, h, view[HEADER_SIZE:], where, load_base, max_depth, cache)
    if cache is None:
        # Nothing decoded on the way is kept, so only the end needs its hash checked: content
        # that hashes to ``oid`` is the object whatever its links held (one hash, not one per
        # link). A failure anywhere is diagnosed below, link by link, to name the damaged one.
        try:
            content = _undelta_chain(chain)
            verify(oid, h.type, content, where)
            return h, content
        except CorruptObject:
            pass
    base: bytes | memoryview
    try:
        if start is None:
            base, depth, links = _decode_whole(*chain[-1]), 0, chain[1:-1]
            if cache is not None:
                cache.put(chain[-1][0], chain[-1][1].type, base)
        else:
            base, depth, links = start[0], start[1], chain[1:]
        for link_id, link_h, payload, link_where in reversed(links):
            base = _undelta(payload, link_h.size, base, link_where)
            verify(link_id, link_h.type, base, link_where)
            depth += 1
            if cache is not None:
                cache.put(link_id, link_h.type, base, depth)
    except CorruptObject as e:
        raise CorruptObject(f"{where} cannot be decoded: its delta base: {e}", hint=_HINT) from e
    content = _undelta(view[HEADER_SIZE:], h.size, base, where)
    verify(oid, h.type, content, where)
    if cache is not None:
        cache.put(oid, h.type, content, depth + 1)
    return h, content


def _undelta_chain(chain: list[_Link]) -> bytes | memoryview:
    """The content at the top of a delta chain that ends at an object stored whole, no link's
    hash checked (the caller verifies the result)."""
    base = _decode_whole(*chain[-1], check=False)
    for _, link_h, payload, link_where in reversed(chain[:-1]):
        base = _undelta(payload, link_h.size, base, link_where)
    return base


def _undelta(payload: memoryview, size: int, base: bytes | memoryview, where: str) -> memoryview:
    """A delta's content as a read-only view of a new array (the links of a chain are not
    copied into ``bytes``: only the object asked for is)."""
    import numpy as np
    delta_base(payload, where)
    if memoryview(base).nbytes != size:
        raise CorruptObject(f"{where} is corrupt: its delta base holds {memoryview(base).nbytes:,} bytes, "
                            f"not {size:,}", hint=_HINT)
    out = unpack_planes(payload[BASE_ID_SIZE:], size, where)
    np.bitwise_xor(out, np.frombuffer(base, np.uint8), out=out)
    return _read_only(out)


def _read_only(arr: np.ndarray) -> memoryview:
    arr.flags.writeable = False
    return arr.data


_Link = tuple[str, ObjectHeader, memoryview, str]  # id, header, payload, how errors name it


def _delta_chain(oid: str, h: ObjectHeader, payload: memoryview, where: str, load_base: LoadStored | None,
                 max_depth: int, cache: DecodedCache | None = None,
                 ) -> tuple[list[_Link], tuple[bytes | memoryview, int] | None]:
    """The objects from the delta ``oid`` down to the whole object its chain ends at, their
    headers read and checked (sizes, depth, loops); nothing decoded yet. With a cache, the chain
    may end at a base it holds instead: then also (its content, its depth)."""
    chain: list[_Link] = [(oid, h, payload, where)]
    while chain[-1][1].codec == CODEC_DELTA:
        try:
            base = delta_base(chain[-1][2], chain[-1][3])
        except CorruptObject as e:
            if len(chain) == 1:
                raise
            raise CorruptObject(f"{where} cannot be decoded: its delta base: {e}", hint=_HINT) from e
        if any(base == link[0] for link in chain):
            raise CorruptObject(f"{where} is corrupt: its delta chain loops back to object {base}", hint=_HINT)
        held = cache.get(base) if cache is not None else None
        if len(chain) > max_depth or held is not None and len(chain) + held[2] > max_depth:
            raise CorruptObject(f"{where}: its delta chain is longer than core.delta_max_depth ({max_depth}) "
                                f"at base object {base}", hint=_HINT)
        if held is not None:
            if memoryview(held[1]).nbytes != h.size:
                raise CorruptObject(f"{where} is corrupt: its delta base object {base} holds "
                                    f"{memoryview(held[1]).nbytes:,} bytes, not {h.size:,}", hint=_HINT)
            return chain, (held[1], held[2])
        if load_base is None:
            raise CorruptObject(f"{where} is a delta against object {base}, which cannot be read here",
                                hint=_HINT)
        try:
            stored = memoryview(load_base(base))
            bh = unpack_header(stored[:HEADER_SIZE], f"object {base}")
        except ObjectNotFound:
            raise CorruptObject(f"{where} cannot be decoded: its delta base object {base} is missing",
                                hint=_HINT) from None
        except CorruptObject as e:
            raise CorruptObject(f"{where} cannot be decoded: its delta base: {e}", hint=_HINT) from e
        if bh.size != h.size:
            raise CorruptObject(f"{where} is corrupt: its delta base object {base} holds {bh.size:,} bytes, "
                                f"not {h.size:,}", hint=_HINT)
        chain.append((base, bh, stored[HEADER_SIZE:], f"object {base}"))
    return chain, None


def _decode_whole(oid: str, h: ObjectHeader, payload: memoryview, where: str,
                  check: bool = True) -> bytes | memoryview:
    """The content of an object stored whole (every codec but delta), verified unless not
    ``check`` (a link of a chain whose end is verified instead)."""
    if h.codec == CODEC_RAW:
        if len(payload) != h.size:
            raise CorruptObject(f"{where} is corrupt: {len(payload)} bytes, header says {h.size}", hint=_HINT)
        if check:
            verify(oid, h.type, payload, where)
        return payload
    data: bytes | memoryview
    if h.codec == CODEC_ALIGNED:
        data = aligned_content(payload, h.size, where)
    elif h.codec == CODEC_PLANES:
        data = _read_only(unpack_planes(payload, h.size, where))
    else:
        data = decompress(h.codec, payload, h.size, where)  # zstandard reads the view without a copy
    if len(data) != h.size:
        raise CorruptObject(f"{where} is corrupt: {len(data)} bytes, header says {h.size}", hint=_HINT)
    if check:
        verify(oid, h.type, data, where)
    return data


class RawBlob:
    """A blob stored raw whose bytes hashed to its id, open for copying without decoding.

    Its content is bytes ``[start, start + size)`` of the open object file (``start`` is
    HEADER_SIZE, or later in an aligned object): the same open file the hash was computed from.
    Close it (or use ``with``).
    """

    def __init__(self, oid: str, fd: int, size: int, start: int = HEADER_SIZE):
        self.oid = oid
        self.fd = fd
        self.size = size
        self.start = start

    def copy_to(self, dst_fd: int, offset: int, block: int = 0) -> int:
        """Write the content into ``dst_fd`` at ``offset`` in the kernel (no user-space copy);
        return the bytes shared with the object file instead of copied.

        With ``block`` (the store's reflink block, where ``dst_fd`` is on the store's
        filesystem), the blocks the content covers whole at ``offset`` are shared where the
        object was stored aligned to that offset (:func:`.loose.share_range`); the rest is
        copied (copy_file_range)."""
        try:
            return share_range(self.fd, self.start, self.size, dst_fd, offset, block)
        except OSError as e:
            if is_nospace(e):
                raise
            raise CorruptObject(f"object {self.oid}: could not be read ({e})", hint=_HINT) from e

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RawBlob:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_raw(path: os.PathLike[str] | str, oid: str) -> RawBlob | None:
    """The object file ``path`` of ``oid``, verified by hashing it through mmap (no copy into
    Python) and returned open, if it is a raw-stored blob (codec 0, or aligned: codec 4);
    None for any other object."""
    where = f"object {oid}"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ObjectNotFound(f"{where} is missing from the store",
                             hint="run `lin fsck`; a remote backup can restore it") from None
    try:
        h = unpack_header(os.pread(fd, HEADER_SIZE, 0), where)
        if h.codec not in (CODEC_RAW, CODEC_ALIGNED) or h.type != "blob":
            os.close(fd)
            return None
        file_size = os.fstat(fd).st_size
        if h.codec == CODEC_RAW and file_size - HEADER_SIZE != h.size:
            raise CorruptObject(f"{where} is corrupt: {file_size - HEADER_SIZE} bytes, header says {h.size}",
                                hint=_HINT)
        # object files are never truncated in place (atomic renames only), so the mapping
        # cannot shrink under us
        with mmap.mmap(fd, file_size, prot=mmap.PROT_READ) as mm, memoryview(mm) as whole, \
                whole[HEADER_SIZE:] as payload:
            content = aligned_content(payload, h.size, where) if h.codec == CODEC_ALIGNED else payload
            try:
                verify(oid, "blob", content, where)
            finally:
                content.release()
        return RawBlob(oid, fd, h.size, file_size - h.size)
    except BaseException:
        os.close(fd)
        raise


# ------------------------------------------------------------------------------ ids without storing


def tensor_file(layout: SafetensorsLayout, ids: Sequence[str]) -> TensorFile:
    """The ``tensor-file`` object of a safetensors file whose tensors (in ``layout`` order) have
    content ids ``ids``: what storing the file stores, and what its id is computed from."""
    return TensorFile(header=layout.header.decode("utf-8"), size=layout.file_size,
                      tensors=[TensorEntry(name=s.name, dtype=s.dtype, shape=list(s.shape), size=s.size, id=i)
                               for s, i in zip(layout.tensors, ids, strict=True)])


def _pread_into(fd: int, view: memoryview, offset: int, where: str) -> None:
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if not n:
            raise InvalidInput(f"{where}: file ended early (expected {len(view) - got} more bytes); "
                               "was it changed while being read?")
        got += n


def _hash_range(fd: int, offset: int, size: int, buf: memoryview, where: str) -> ObjectId:
    """The id of ``size`` bytes of an open file from ``offset``, read through ``buf`` (at least
    min(size, CHUNK_SIZE) bytes, reused piece after piece)."""
    parts: list[tuple[ObjectId, int]] = []
    for start, n in piece_spans(size):
        piece = buf[:n]
        _pread_into(fd, piece, offset + start, where)
        parts.append((hash_object("blob", piece), n))
    return content_id(parts)


def file_content_id(path: os.PathLike[str] | str) -> str:
    """The id the store gives a file's bytes (a blob, or chunks above CHUNK_SIZE), storing nothing.

    (A ``str``, not an ObjectId: callers collect these in ``dict[str, str]``s, which are invariant.)"""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return _hash_range(fd, 0, size, memoryview(bytearray(min(size, CHUNK_SIZE))), str(path))
    finally:
        os.close(fd)


def tensor_file_of(path: os.PathLike[str] | str) -> TensorFile:
    """The ``tensor-file`` object storing a safetensors file would make, storing nothing.
    MalformedFile if it is not a valid safetensors file."""
    layout = read_layout(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = memoryview(bytearray(min(max((s.size for s in layout.tensors), default=0), CHUNK_SIZE)))
        ids = [_hash_range(fd, layout.data_start + s.begin, s.size, buf, str(path)) for s in layout.tensors]
    finally:
        os.close(fd)
    return tensor_file(layout, ids)


def file_id(path: Path, type_name: str) -> str | None:
    """The id a file would have in the store as ``type_name`` (``tensor-file``, else its bytes'
    id); None if it cannot be read as that type."""
    try:
        if type_name == "tensor-file":
            return hash_object("tensor-file", tensor_file_of(path).encode())
        return file_content_id(path)
    except (MalformedFile, OSError, InvalidInput):
        return None


# ------------------------------------------------------------------------------ parallel writing


class ParallelWriter:
    """A bounded thread pool: at most ``max_inflight`` submitted chunks are held in memory.

    blake3, zstandard and copy_file_range release the GIL, so threads use every core.
    ``workers=0`` means two threads per core: a put spends part of its time blocked in the
    kernel (copying, or fsync outside a batch), and a second thread per core keeps the core busy
    meanwhile (1.2 GB model on 2 cores, median of 6: 2 threads 1.67 s, 4 threads 1.55 s, all
    zstd; with the kernel copy 4, 8 and 16 threads were within 5% of each other).
    """

    def __init__(self, workers: int = 0, max_inflight: int | None = None):
        self.workers = workers or 2 * (os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="lin-put")
        # at most 32 chunks (512 MiB of input) by default, whatever the core count
        self._sem = threading.BoundedSemaphore(max_inflight or min(self.workers * 2, 32))

    def submit(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        self._sem.acquire()
        try:
            fut = self.pool.submit(fn, *args)
        except BaseException:
            self._sem.release()
            raise
        fut.add_done_callback(lambda _f: self._sem.release())
        return fut

    def submit_after(self, deps: Sequence[Future[Any]], fn: Callable[[], _T]) -> Future[_T]:
        out: Future[_T] = Future()
        remaining = [len(deps)]
        lock = threading.Lock()

        def done(_f: Future[Any]) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                try:
                    out.set_result(fn())
                except BaseException as e:  # propagated through the future
                    out.set_exception(e)

        if not deps:
            try:
                out.set_result(fn())
            except BaseException as e:  # propagated through the future
                out.set_exception(e)
            return out
        for d in deps:
            d.add_done_callback(done)
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def __enter__(self) -> ParallelWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
