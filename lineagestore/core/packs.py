"""Pack files: many stored objects in one immutable file, found through a sorted index.

``objects/pack/pack-<hash>.pack`` holds objects exactly as loose files do (16-byte header +
payload, any codec) one after another; ``pack-<hash>.idx`` beside it lists their ids sorted, with
a 256-entry fanout table (the number of ids whose first byte is <= each value, as git's idx v2),
and for each id the offset and length of its stored form in the pack and a CRC-32 of those
bytes. ``<hash>`` is the hex BLAKE3-256 of the pack's bytes before its trailer, which the pack
ends with and the index repeats; the index ends with the BLAKE3-256 of itself. Byte layouts:
docs/format.md "Packs".

A pack may come from elsewhere (a copied store, a remote), so an index is checked whole when it
is opened (size, checksum, sorted unique ids, the fanout, every offset and length inside its
pack and within the largest stored size an object may have) before any lookup trusts it; one
that fails is set aside (:attr:`PackSet.bad`) and its objects read as missing. An object read from
a pack is decoded and verified like any other (:func:`.content.decode_stored`, by the store).

:class:`PackWriter` writes a pack and its index to ``tmp/``, fsyncs both and renames the pack,
then the index, into ``objects/pack/`` (a pack without its index is not read), then fsyncs the
folder. Readers map packs with ``mmap`` and never write them.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import itertools
import mmap
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import blake3

from .codecs import BASE_ID_SIZE, itemsize_of, stored_object
from .errors import CorruptObject, LinError, NoSpace, ObjectNotFound
from .fsutil import fsync_dir, is_nospace, kill_point, nospace_error, temp_name
from .ids import check_object_id, is_id_prefix
from .loose import LooseFolder
from .objects import CODEC_DELTA, CODEC_PLANES, HEADER_SIZE, MAX_SIZE, ObjectHeader

PACK_MAGIC = b"LINP"
IDX_MAGIC = b"LINI"
PACK_VERSION = 1
IDX_VERSION = 1
_HEAD = struct.Struct("<4sIQ")  # magic, version, reserved (pack) / count (index)
PACK_HEADER_SIZE = _HEAD.size  # 16
PACK_TRAILER_SIZE = 8 + 32  # object count (u64 LE), BLAKE3-256 of everything before it
FANOUT_SIZE = 256 * 4
ENTRY = struct.Struct("<QQII")  # offset, length, crc32 of the stored bytes, reserved (0)
ENTRY_SIZE = ENTRY.size  # 24
_ENTRY_FIELDS = [("offset", "<u8"), ("length", "<u8"), ("crc", "<u4"), ("reserved", "<u4")]
#: the largest stored form (header + payload) any object may have: the largest decoded size a
#: type may have plus zstd's worst-case expansion of it (ZSTD_compressBound) and room for a codec
#: header. An index entry claiming more is refused before anything is read.
MAX_STORED = HEADER_SIZE + max(MAX_SIZE.values()) + (max(MAX_SIZE.values()) >> 7) + (1 << 16)
PACK_DIR = "pack"
_HINT = "run `lin fsck` to list every damaged object; `lin repack` rewrites packs from what reads"


def idx_size(count: int) -> int:
    return PACK_HEADER_SIZE + FANOUT_SIZE + count * (32 + ENTRY_SIZE) + 64


class PackEntry(NamedTuple):
    """Where one object lies: its pack, and the offset and length of its stored form there (a
    tuple: one is made per packed read, at a third of the cost of a frozen dataclass)."""

    pack: Pack
    offset: int
    length: int
    crc: int


class Pack:
    """One pack and its index, both mapped read-only; the index checked whole on opening.

    Raises :class:`CorruptObject` naming the file when either is malformed, truncated or does not
    match the other (a hostile pack copied from elsewhere included).
    """

    def __init__(self, idx_path: Path):
        import numpy as np  # lazily: `lin init` and other small commands never need it
        self.idx_path = idx_path
        self.path = idx_path.with_suffix(".pack")
        self.name = self.path.name
        self._idx = _map(idx_path)
        try:
            self._pack = _map(self.path)
        except BaseException:
            self._idx.close()
            raise
        self.mtime = os.stat(self.path).st_mtime
        self.count: int = self._check()
        base = self._ids_at = PACK_HEADER_SIZE + FANOUT_SIZE
        self._fanout = np.frombuffer(self._idx, "<u4", 256, PACK_HEADER_SIZE)
        self._ids = np.frombuffer(self._idx, "S32", self.count, base)
        self._entries = np.frombuffer(self._idx, _ENTRY_FIELDS, self.count, base + 32 * self.count)
        self._entries_at = base + 32 * self.count
        self._keys: list[bytes] | None = None
        self._bounds: list[int] = []

    def _check(self) -> int:
        """The object count, after checking the whole index against itself and its pack."""
        import numpy as np  # lazily: `lin init` and other small commands never need it
        idx, pack = self._idx, self._pack
        where = f"pack index {self.idx_path.name}"
        if len(idx) < idx_size(0):
            raise CorruptObject(f"{where} is truncated ({len(idx)} bytes)", hint=_HINT)
        magic, version, count = _HEAD.unpack_from(idx)
        if magic != IDX_MAGIC or version != IDX_VERSION:
            raise CorruptObject(f"{where}: not a lin pack index of version {IDX_VERSION} "
                                f"(magic {magic!r}, version {version})", hint=_HINT)
        if count > (len(idx) // (32 + ENTRY_SIZE)) or len(idx) != idx_size(count):
            raise CorruptObject(f"{where}: {len(idx)} bytes, but it declares {count} objects", hint=_HINT)
        if blake3.blake3(memoryview(idx)[:-32]).digest() != idx[-32:]:
            raise CorruptObject(f"{where} is corrupt: its checksum does not match", hint=_HINT)
        base = PACK_HEADER_SIZE + FANOUT_SIZE
        fanout = np.frombuffer(idx, "<u4", 256, PACK_HEADER_SIZE)
        ids = np.frombuffer(idx, "S32", count, base)
        raw = np.frombuffer(idx, np.uint8, 32 * count, base).reshape(count, 32)
        expect = np.cumsum(np.bincount(raw[:, 0], minlength=256)) if count else np.zeros(256, np.int64)
        if not np.array_equal(fanout.astype(np.int64), expect):
            raise CorruptObject(f"{where} is corrupt: its fanout table does not count its ids", hint=_HINT)
        if count > 1 and not bool(np.all(ids[1:] > ids[:-1])):
            raise CorruptObject(f"{where} is corrupt: its ids are not sorted and unique", hint=_HINT)
        where_p = f"pack {self.name}"
        if len(pack) < PACK_HEADER_SIZE + PACK_TRAILER_SIZE:
            raise CorruptObject(f"{where_p} is truncated ({len(pack)} bytes)", hint=_HINT)
        pmagic, pversion, _ = _HEAD.unpack_from(pack)
        if pmagic != PACK_MAGIC or pversion != PACK_VERSION:
            raise CorruptObject(f"{where_p}: not a lin pack of version {PACK_VERSION}", hint=_HINT)
        (pcount,) = struct.unpack_from("<Q", pack, len(pack) - PACK_TRAILER_SIZE)
        if pcount != count or pack[-32:] != idx[-64:-32]:
            raise CorruptObject(f"{where} does not belong to {where_p} (object count or checksum differ)",
                                hint=_HINT)
        count = int(count)
        entries = np.frombuffer(idx, _ENTRY_FIELDS, count, base + 32 * count)
        end = len(pack) - PACK_TRAILER_SIZE
        off, length = entries["offset"], entries["length"]
        bad = ((off < PACK_HEADER_SIZE) | (length < HEADER_SIZE) | (length > MAX_STORED)
               | (off > end) | (length > end - np.minimum(off, end)))
        if bool(bad.any()):
            i = int(np.argmax(bad))
            raise CorruptObject(f"{where} is corrupt: object {ids[i].hex()} lies at bytes "
                                f"{int(off[i])}+{int(length[i])}, outside the pack's objects "
                                f"(16 to {end}) or over the largest object", hint=_HINT)
        return count

    def find(self, oid: str) -> PackEntry | None:
        """Binary search in the fanout's range of the id's first byte (the ids as a list of
        bytes, made on the first lookup: C comparisons, no numpy call per lookup)."""
        try:  # (cheaper than check_object_id's regex, on the path of every packed read)
            key = bytes.fromhex(oid)
        except ValueError:
            key = b""
        if len(key) != 32 or len(oid) != 64 or not oid.islower() and not oid.isdigit():
            key = bytes.fromhex(check_object_id(oid))  # raises for what is no id
        if self._keys is None:  # (threads may race here: each builds the same; bounds set first)
            raw = self._idx[self._ids_at:self._ids_at + 32 * self.count]
            self._bounds = [0, *self._fanout.tolist()]
            self._keys = [raw[i:i + 32] for i in range(0, len(raw), 32)]
        lo, hi = self._bounds[key[0]], self._bounds[key[0] + 1]
        i = bisect.bisect_left(self._keys, key, lo, hi)
        if i >= hi or self._keys[i] != key:
            return None
        at = self._entries_at + ENTRY_SIZE * i
        offset, length, crc, _ = ENTRY.unpack_from(self._idx, at)
        return PackEntry(self, offset, length, crc)

    def read(self, entry: PackEntry) -> bytes:
        """The stored bytes (header + payload) of an entry; bounds were checked on opening."""
        return self._pack[entry.offset:entry.offset + entry.length]

    def read_head(self, entry: PackEntry, n: int) -> bytes:
        """The first ``n`` stored bytes of an entry (fewer if it is shorter)."""
        return self._pack[entry.offset:entry.offset + min(n, entry.length)]

    def read_checked(self, oid: str, entry: PackEntry) -> bytes:
        """:meth:`read`, refusing bytes whose CRC-32 is not the index's (for copying stored form
        elsewhere without decoding it)."""
        data = self.read(entry)
        if zlib.crc32(data) != entry.crc:
            raise CorruptObject(f"object {oid} in pack {self.name} is corrupt: its CRC-32 does not match",
                                hint=_HINT)
        return data

    def ids(self) -> Iterator[str]:
        hexed = self._idx[self._ids_at:self._ids_at + 32 * self.count].hex()  # (one call, not one per id)
        return (hexed[i:i + 64] for i in range(0, len(hexed), 64))

    def entries(self) -> Iterator[tuple[str, PackEntry]]:
        for oid, (off, length, crc, _) in zip(self.ids(), self._entries.tolist(), strict=True):
            yield oid, PackEntry(self, off, length, crc)

    def in_pack_order(self) -> tuple[list[str], Any, Any, Any, Any]:
        """Ids, offsets, lengths, CRC-32s and codecs (numpy arrays but the ids) of every entry in the
        order of the pack's bytes (fsck's one pass over :meth:`mapped`); bounds checked on opening."""
        import numpy as np  # lazily: `lin init` and other small commands never need it
        order = np.argsort(self._entries["offset"], kind="stable")
        rows = self._entries[order]
        codecs = np.frombuffer(self._pack, np.uint8)[rows["offset"] + 5]  # the codec's byte in a header
        hexed = self._idx[self._ids_at:self._ids_at + 32 * self.count].hex()
        return ([hexed[64 * i:64 * i + 64] for i in order.tolist()], rows["offset"], rows["length"],
                rows["crc"], codecs)

    def mapped(self) -> memoryview:
        """The pack's bytes, a view of the mapping (no copy; the pack stays mapped while it lives)."""
        return memoryview(self._pack)

    def verify_checksum(self) -> bool:
        """Whether the pack's bytes hash to its trailer (fsck: a flipped byte anywhere in it)."""
        body = memoryview(self._pack)[:-32]
        try:
            return blake3.blake3(body, max_threads=blake3.blake3.AUTO).digest() == self._pack[-32:]
        finally:
            body.release()

    @property
    def size(self) -> int:
        return len(self._pack) + len(self._idx)

    def close(self) -> None:
        for m in (self._idx, self._pack):
            try:
                m.close()
            except BufferError:  # a view is still exported; the mapping goes with it
                pass


def _map(path: Path) -> mmap.mmap:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise CorruptObject(f"{path.name} is empty", hint=_HINT)
        return mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


class PackSet:
    """The packs of ``objects/pack/``, rescanned when the folder changes (another process's
    repack); packs that cannot be opened are listed in :attr:`bad` and skipped."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._lock = threading.Lock()
        self._packs: list[Pack] = []
        self._by_name: dict[str, Pack] = {}
        self._stamp: tuple[int, int] | None = None
        self.bad: dict[str, str] = {}  # idx file name -> why it was refused

    def _scan(self) -> list[Pack]:
        try:
            st = os.stat(self.folder)
        except FileNotFoundError:
            self._packs, self._by_name, self._stamp, self.bad = [], {}, None, {}
            return self._packs
        stamp = (st.st_mtime_ns, st.st_ino)
        with self._lock:
            if stamp == self._stamp:
                return self._packs
            names = sorted(n for n in os.listdir(self.folder) if n.startswith("pack-") and n.endswith(".idx"))
            packs: dict[str, Pack] = {}
            bad: dict[str, str] = {}
            for n in names:
                p = self._by_name.get(n)
                if p is None:
                    try:
                        p = Pack(self.folder / n)
                    except FileNotFoundError:
                        continue  # removed meanwhile by a repack
                    except (CorruptObject, OSError, ValueError) as e:
                        bad[n] = str(e)
                        continue
                packs[n] = p
            self._by_name, self.bad, self._stamp = packs, bad, stamp
            # newest first: a repack's new pack holds what the old ones did, re-encoded
            self._packs = sorted(packs.values(), key=lambda p: -p.mtime)
            return self._packs

    def packs(self) -> list[Pack]:
        return self._scan()

    def find_known(self, oid: str) -> PackEntry | None:
        """Where ``oid`` lies in the packs already open (no look at the folder)."""
        for p in self._packs:
            e = p.find(oid)
            if e is not None:
                return e
        return None

    def find(self, oid: str) -> PackEntry | None:
        """Where ``oid`` lies; the packs known are searched first and the folder is looked at
        again only on a miss (a stat per lookup costs as much as the lookup)."""
        for p in self._packs:
            e = p.find(oid)
            if e is not None:
                return e
        known = self._packs
        packs = self._scan()
        for p in packs if packs is not known else ():
            e = p.find(oid)
            if e is not None:
                return e
        return None

    def ids(self) -> list[str]:
        """Every packed id, sorted, each once."""
        packs = self._scan()
        if not packs:
            return []
        if len(packs) == 1:
            return list(packs[0].ids())
        return sorted(set().union(*(set(p.ids()) for p in packs)))

    def ids_with_prefix(self, prefix: str) -> list[str]:
        return sorted({i for p in self._scan() for i in p.ids() if i.startswith(prefix)})


class ObjectFiles:
    """A store's object files read as one: its loose files (:class:`.loose.LooseFolder`) and its
    packs. Packs already open are searched first (no failed ``open()`` per packed object), then
    the loose file, then the packs folder again; a miss there is looked up loose once more, for
    an object a repack or gc moved meanwhile."""

    def __init__(self, loose: LooseFolder, packs: PackSet):
        self.loose = loose
        self.packs = packs

    def is_loose(self, oid: str) -> bool:
        return os.path.isfile(self.loose.file(oid))

    def has(self, oid: str) -> bool:
        return self.is_loose(oid) or self.packs.find(oid) is not None or self.is_loose(oid)

    def read(self, oid: str, n: int = -1) -> bytes:
        """The stored bytes (the first ``n`` only, if given); ObjectNotFound if absent."""
        e = self.packs.find_known(oid)
        if e is None:
            try:
                return self.loose.read(oid, n)
            except ObjectNotFound:
                e = self.packs.find(oid)
                if e is None:
                    return self._read_loose_again(oid, n)
        data = e.pack.read(e)
        return data if n < 0 else data[:n]

    def _read_loose_again(self, oid: str, n: int) -> bytes:
        try:
            return self.loose.read(oid, n)
        except ObjectNotFound as missing:
            if not self.packs.bad:
                raise
            name, why = next(iter(self.packs.bad.items()))
            raise ObjectNotFound(f"{missing} (pack index {name} cannot be read: {why})", hint=missing.hint) from None

    def touch(self, oid: str) -> None:
        """Refresh an object's age: a loose file's mtime, or a packed object's pack's."""
        if self.is_loose(oid):
            self.loose.touch(oid)
            return
        e = self.packs.find(oid)
        if e is not None:
            with contextlib.suppress(OSError):
                os.utime(e.pack.path)

    def ids(self) -> Iterator[str]:
        """Every id, sorted, each once (an object both loose and packed is listed once)."""
        packed = self.packs.ids()
        if not packed:
            return self.loose.ids()
        loose = list(self.loose.ids())
        return (oid for oid, _ in itertools.groupby(heapq.merge(loose, packed))) if loose else iter(packed)

    def ids_with_prefix(self, prefix: str) -> list[str]:
        loose = self.loose.ids_with_prefix(prefix)
        if not is_id_prefix(prefix) or not self.packs.packs():
            return loose
        return sorted(set(loose) | set(self.packs.ids_with_prefix(prefix)))

    def size(self, oid: str) -> int:
        try:
            return self.loose.stat(oid).st_size
        except ObjectNotFound:
            e = self.packs.find(oid)
            if e is None:
                raise
            return e.length

    def mtime(self, oid: str) -> float:
        try:
            return self.loose.stat(oid).st_mtime
        except ObjectNotFound:
            e = self.packs.find(oid)
            if e is None:
                raise
            return e.pack.mtime


# ----------------------------------------------------------------------------- writing


class PackWriter:
    """Write one pack and its index: :meth:`add` stored objects, then :meth:`finish`.

    The pack grows in a temp file in ``tmp_dir`` and is hashed as it is written; ``finish``
    writes the index, fsyncs both, renames the pack and then the index into ``folder`` and
    fsyncs it. Until then nothing in ``folder`` changed; :meth:`abort` removes the temp files.
    """

    def __init__(self, folder: Path, tmp_dir: Path):
        self.folder = folder
        self.tmp_dir = tmp_dir
        self._tmp = temp_name(tmp_dir, ".pack")
        self._f = open(self._tmp, "xb")  # noqa: SIM115 (closed in finish/abort)
        self._hash = blake3.blake3()
        self._pos = 0
        self._index: dict[str, tuple[int, int, int]] = {}
        self._emit(_HEAD.pack(PACK_MAGIC, PACK_VERSION, 0))

    def _emit(self, data: bytes | memoryview) -> None:
        try:
            self._f.write(data)
        except OSError as e:
            if is_nospace(e):
                raise nospace_error(e, self._tmp) from e
            raise
        self._hash.update(data)
        self._pos += len(data)

    def __contains__(self, oid: str) -> bool:
        return oid in self._index

    def __len__(self) -> int:
        return len(self._index)

    @property
    def bytes_written(self) -> int:
        return self._pos

    def add(self, oid: str, stored: bytes | memoryview) -> None:
        """Append one object in stored form (header + payload); a second add of an id is ignored."""
        check_object_id(oid)
        if oid in self._index:
            return
        if not HEADER_SIZE <= len(stored) <= MAX_STORED:
            raise ValueError(f"object {oid}: {len(stored)} stored bytes cannot go into a pack")
        offset = self._pos
        self._emit(stored)
        self._index[oid] = (offset, len(stored), zlib.crc32(stored))

    def finish(self) -> Pack:
        """Make the pack durable and visible; return it opened."""
        count = len(self._index)
        self._emit(struct.pack("<Q", count))
        digest = self._hash.digest()
        self._f.write(digest)
        name = f"pack-{digest.hex()}"
        idx_tmp = temp_name(self.tmp_dir, ".idx")
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            _write_index(idx_tmp, self._index, digest)
            kill_point("pack-written")
            self.folder.mkdir(parents=True, exist_ok=True)
            os.chmod(self._tmp, 0o444)
            os.chmod(idx_tmp, 0o444)
            # the index first: an index whose pack is absent is skipped by readers and removed
            # by the next repack, while a pack is never without its index but by outside damage
            os.replace(idx_tmp, self.folder / f"{name}.idx")
            kill_point("idx-renamed")
            os.replace(self._tmp, self.folder / f"{name}.pack")
            kill_point("pack-renamed")
            fsync_dir(self.folder)
        except OSError as e:
            self.abort()
            idx_tmp.unlink(missing_ok=True)
            if is_nospace(e):
                raise nospace_error(e, self.folder) from e
            raise
        except NoSpace:
            self.abort()
            idx_tmp.unlink(missing_ok=True)
            raise
        return Pack(self.folder / f"{name}.idx")

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
        self._tmp.unlink(missing_ok=True)


def _write_index(path: Path, index: dict[str, tuple[int, int, int]], pack_digest: bytes) -> None:
    import numpy as np  # lazily: `lin init` and other small commands never need it
    ids = sorted(index)
    count = len(ids)
    raw = np.frombuffer(b"".join(bytes.fromhex(i) for i in ids), np.uint8).reshape(count, 32)
    fanout = np.cumsum(np.bincount(raw[:, 0], minlength=256)).astype("<u4") if count else np.zeros(256, "<u4")
    entries = np.zeros(count, _ENTRY_FIELDS)
    if count:
        entries["offset"], entries["length"], entries["crc"] = zip(*(index[i] for i in ids), strict=True)
    body = b"".join([_HEAD.pack(IDX_MAGIC, IDX_VERSION, count), fanout.tobytes(), raw.tobytes(),
                     entries.tobytes(), pack_digest])
    data = body + blake3.blake3(body).digest()
    try:
        with open(path, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        path.unlink(missing_ok=True)
        if is_nospace(e):
            raise nospace_error(e, path) from e
        raise


def remove_pack(pack: Pack) -> None:
    """Delete a pack, then its index (the reverse of :meth:`PackWriter.finish`: a pack is never
    left without its index; an index left alone is skipped and removed by the next repack)."""
    pack.path.unlink(missing_ok=True)
    pack.idx_path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- deltas elsewhere


def delta_base_of(stored: bytes | memoryview) -> str | None:
    """The base id of an object in stored form if it is a delta (codec 3); None otherwise."""
    if len(stored) >= HEADER_SIZE + BASE_ID_SIZE and stored[5] == CODEC_DELTA:
        return bytes(stored[HEADER_SIZE:HEADER_SIZE + BASE_ID_SIZE]).hex()
    return None


def whole_form(type_name: str, data: bytes, delta_stored: bytes | memoryview, mode: str = "auto") -> bytes:
    """The stored form of a delta object's decoded ``data`` without its base: byte planes of the
    delta's element size (raw when they save too little), for a place the base may not reach
    (a remote that does not hold it)."""
    at = HEADER_SIZE + BASE_ID_SIZE  # the planes header of the delta: its element size first
    itemsize = delta_stored[at] if len(delta_stored) > at and 1 <= delta_stored[at] <= 8 else 1
    return stored_object(type_name, data, CODEC_PLANES, itemsize, mode=mode)[1]


class _Objects(Protocol):
    """What :func:`tensor_pieces` reads: an object store (core.store sits above this module)."""

    def get(self, oid: str, expect: str | None = None) -> Any: ...

    def header(self, oid: str) -> ObjectHeader: ...


#: where a tensor piece lies in a version: (file path, tensor name, piece index)
PieceKey = tuple[str, str, int]


def tensor_pieces(store: _Objects, commit_id: str, memo: dict[str, list[Any]]) -> dict[PieceKey, tuple[str, int]]:
    """(file path, tensor name, piece index) -> (blob id, element size) for every tensor piece of
    a version; the same key in two versions pairs a piece with its delta base (repack: the newer
    version's; a small push: the parent's). ``memo`` keeps trees and tensor files read, by id."""
    out: dict[PieceKey, tuple[str, int]] = {}
    try:
        tree_id = store.get(commit_id, "commit").tree
    except LinError:
        return out
    stack = [("", tree_id)]
    while stack:
        prefix, tid = stack.pop()
        for path, etype, eid in _tree_entries(store, tid, memo):
            if etype == "tree":
                stack.append((prefix + path + "/", eid))
            elif etype == "tensor-file":
                for tname, itemsize, pieces in _tensor_entries(store, eid, memo):
                    for k, blob in enumerate(pieces):
                        out[(prefix + path, tname, k)] = (blob, itemsize)
    return out


def _tree_entries(store: _Objects, tid: str, memo: dict[str, list[Any]]) -> list[Any]:
    if tid not in memo:
        try:
            memo[tid] = [(e.name, e.type, e.id) for e in store.get(tid, "tree").items()]
        except LinError:
            memo[tid] = []
    return memo[tid]


def _tensor_entries(store: _Objects, fid: str, memo: dict[str, list[Any]]) -> list[Any]:
    if fid not in memo:
        out = []
        try:
            for t in store.get(fid, "tensor-file").entries():
                pieces = [t.id]
                if store.header(t.id).type == "chunks":
                    pieces = [p for p, _ in store.get(t.id, "chunks").parts]
                out.append((t.name, itemsize_of(t.dtype), pieces))
        except LinError:
            out = []
        memo[fid] = out
    return memo[fid]
