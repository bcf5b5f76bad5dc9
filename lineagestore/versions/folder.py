"""What a model folder holds, before anything of it is stored: its files, all of them, or an error.

:func:`check_model_folder` lists every file to store and refuses the folder, naming the path,
when a file or folder cannot be read (a commit never leaves part of a model out silently), when
a folder is a symlink, a file is not a regular file, or a file is a pickle.

Pickles run code when loaded, so lin never stores or opens them. They are recognised by name
(``.bin``, ``.pt``, ...) and by content (:func:`pickle_kind`), whatever the name:

- a pickle stream: protocol 2-5 (``PROTO`` byte, then a well-formed opcode stream), or protocol
  0/1 (no header: a well-formed stream that imports or calls something);
- a zip archive as ``torch.save`` and TorchScript write it (an entry ``data.pkl``, or any
  ``*.pkl``), and NumPy ``.npz`` archives holding an object array;
- a NumPy ``.npy`` file whose dtype holds Python objects (``np.save(..., allow_pickle=True)``).

The opcode stream is walked with :mod:`pickletools` (it parses, never executes), over at most
the first 64 KiB: a complete pickle must end in ``STOP`` with one object on the stack; a longer
one must be well-formed up to the end of those 64 KiB. Text, JSON, protobuf (sentencepiece's
``tokenizer.model``), GGUF and safetensors files fail at their first bytes.
"""

from __future__ import annotations

import io
import os
import pickletools
import stat as stat_mod
import zipfile
from pathlib import Path
from typing import Any

from ..core.errors import InvalidInput, NotFound, PickleRefused
from ..core.names import is_reserved_entry, tree_entry_problem

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib"}
MODEL_SUFFIXES = {".safetensors", ".gguf"}
SKIP_DIRS = {".git", ".lineage", "__pycache__"}
TMP_PREFIX = ".lin-tmp-"

SNIFF = 64 << 10  # bytes of a file read to recognise a pickle
MAX_ZIP_DIRECTORY = 64 << 20  # a zip archive's central directory, read to list its entries

_PICKLE_HINT = ("convert it to safetensors: load the model with transformers and call "
                "save_pretrained(DIR, safe_serialization=True), or skip it with --exclude")
#: opcodes through which a pickle imports or calls something (what makes loading one run code)
_CODE_OPS = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX",
             "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"}
_OPCODES = {op.code.encode("latin-1") for op in pickletools.opcodes}


def check_model_folder(folder: Path, exclude: tuple[str, ...] = ()) -> list[tuple[str, Path, os.stat_result]]:
    """List the files of a model folder, refusing what lin must not store.

    Raises NotFound (no such folder), InvalidInput (no model files; an unreadable file or
    folder; symlink problems) and PickleRefused (pickles, by name or content). A folder or file
    matching an ``exclude`` glob is left out without being read.
    """
    if not folder.exists():
        raise NotFound(f"{folder}: no such folder")
    if not folder.is_dir():
        raise InvalidInput(f"{folder}: not a folder (give the model folder, as written by save_pretrained)")
    files: list[tuple[str, Path, os.stat_result]] = []

    def walk_error(e: OSError) -> None:
        raise _unreadable(Path(e.filename or folder), e)

    for dirpath, dirnames, filenames in os.walk(folder, onerror=walk_error, followlinks=False):
        dpath = Path(dirpath)
        dirnames[:] = _folders_to_walk(folder, dpath, dirnames, exclude)
        for name in sorted(filenames):
            full = dpath / name
            rel = full.relative_to(folder).as_posix()
            if name.startswith(TMP_PREFIX) or is_reserved_entry(name) or _excluded(rel, exclude):
                continue
            _check_name(full, name)
            files.append((rel, full, _check_file(full)))
    if not files:
        raise InvalidInput(f"{folder}: folder is empty")
    if not any(Path(rel).suffix.lower() in MODEL_SUFFIXES for rel, _, _ in files):
        raise InvalidInput(f"{folder}: no model weights found (no *.safetensors or *.gguf file)",
                           hint="save the model with save_pretrained(..., safe_serialization=True)")
    return files


def _check_name(path: Path, name: str) -> None:
    """A name a stored tree may not hold is refused here, not stored to fail every checkout."""
    why = tree_entry_problem(name)
    if why is not None:
        raise InvalidInput(f"{path}: its name {why}; a version must check out anywhere, so lin cannot store it",
                           hint="rename it, or leave it out with --exclude PATTERN")


def _excluded(rel: str, exclude: tuple[str, ...]) -> bool:
    return any(Path(rel).match(p) for p in exclude)


def _folders_to_walk(root: Path, dpath: Path, dirnames: list[str], exclude: tuple[str, ...]) -> list[str]:
    keep = []
    for d in sorted(dirnames):
        full = dpath / d
        if d in SKIP_DIRS or is_reserved_entry(d) or _excluded(full.relative_to(root).as_posix(), exclude):
            continue
        _check_name(full, d)
        if full.is_symlink():
            raise InvalidInput(f"{full}: is a symlink to a folder; lin stores files, not folder links",
                               hint="copy the folder's contents in place of the link")
        keep.append(d)
    return keep


def _unreadable(path: Path, e: OSError) -> InvalidInput:
    why = "permission denied" if isinstance(e, PermissionError) else (e.strerror or str(e)).lower()
    return InvalidInput(f"{path}: cannot be read ({why}); lin stores every file of a model folder",
                        hint="make it readable, or leave it out with --exclude PATTERN")


def _check_file(full: Path) -> os.stat_result:
    """The stat of a file to store, after checking it is a readable regular file and no pickle."""
    if full.suffix.lower() in PICKLE_SUFFIXES:  # refused by its name, without opening it
        raise _refuse(full, "")
    try:
        st = full.stat()  # follows a symlink to its file: the content is what we store
    except FileNotFoundError:
        raise InvalidInput(f"{full}: dangling symlink") from None
    except OSError as e:
        raise _unreadable(full, e) from None
    if not stat_mod.S_ISREG(st.st_mode):
        raise InvalidInput(f"{full}: not a regular file")
    try:
        kind = pickle_kind(full)
    except OSError as e:
        raise _unreadable(full, e) from None
    if kind is not None:
        raise _refuse(full, kind)
    return st


def _refuse(path: Path, kind: str) -> PickleRefused:
    what = f"is a pickle file ({kind})" if kind else "is a pickle file"
    return PickleRefused(f"{path}: {what}; pickles run code when loaded, so lin never stores or opens them",
                         hint=_PICKLE_HINT)


# ------------------------------------------------------------------------------ by content


def pickle_kind(path: os.PathLike | str) -> str | None:
    """What kind of pickle the file holds, judged by its content (never unpickled); None if none.
    OSError if it cannot be read."""
    with open(path, "rb") as f:
        head = f.read(8)
        if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            return _zip_kind(f)
        if head[:1] not in _OPCODES and not head.startswith(b"\x93NUMPY"):
            return None  # most files: JSON, text, protobuf, GGUF, safetensors
        head += f.read(SNIFF - len(head))
        more = bool(f.read(1))
    if head.startswith(b"\x93NUMPY"):
        return _npy_kind(head)
    return _stream_kind(head, more)


def _stream_kind(head: bytes, more: bool) -> str | None:
    """The protocol of the pickle stream ``head`` starts (``more``: the file goes on after it)."""
    if not head or head[:1] not in _OPCODES:
        return None
    proto = head[0] == 0x80
    if proto and (len(head) < 2 or not 2 <= head[1] <= 5):
        return None
    names: list[str] = []
    stream = io.BytesIO(head)
    complete = True
    try:
        for op, _arg, _pos in pickletools.genops(stream):
            names.append(op.name)
    except Exception:  # noqa: BLE001 - any failure to parse means: not a well-formed pickle here
        if not (more and stream.tell() >= len(head)):
            return None  # an opcode or argument no pickle has
        complete = False  # well-formed up to the end of what was read
    if len(names) < 2 or (not proto and not _CODE_OPS.intersection(names)):
        return None
    if complete:
        try:
            pickletools.dis(head, out=io.StringIO())  # STOP with exactly one object on the stack
        except Exception:  # noqa: BLE001
            return None
    return f"pickle protocol {head[1]}" if proto else "pickle protocol 0/1"


def _npy_kind(head: bytes) -> str | None:
    """An ``.npy`` file whose dtype holds Python objects (stored as pickles)."""
    import numpy as np
    f = io.BytesIO(head)
    try:
        major, _minor = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        _shape, _fortran, dtype = read(f, max_header_size=SNIFF)
    except Exception:  # noqa: BLE001 - not a header numpy reads: it cannot load it either
        return None
    return "a NumPy array of Python objects" if dtype.hasobject else None


def _zip_kind(f: Any) -> str | None:
    """A zip archive holding a pickle: torch's ``data.pkl`` (or any ``*.pkl``), or an ``.npy``
    of objects (an ``.npz``). Not a readable zip: None."""
    try:
        with zipfile.ZipFile(_BoundedReads(f)) as z:
            infos = z.infolist()
            for info in infos:
                if info.filename.endswith((".pkl", ".pickle")):
                    return f"a zip archive holding {info.filename}, as torch.save writes"
            for info in infos:
                if info.filename.endswith(".npy"):
                    with z.open(info) as e:
                        kind = _npy_kind(e.read(SNIFF))
                    if kind:
                        return f"{kind} in a zip archive ({info.filename})"
    except _TooLarge:
        raise InvalidInput(f"{getattr(f, 'name', 'file')}: a zip archive whose directory is over "
                           f"{MAX_ZIP_DIRECTORY >> 20} MiB; lin cannot check it for pickles",
                           hint="leave it out with --exclude PATTERN") from None
    except OSError:
        raise
    except Exception:  # noqa: BLE001 - zipfile's many ways of saying "not an archive it reads"
        return None
    return None


class _TooLarge(Exception):
    pass


class _BoundedReads:
    """A file for :mod:`zipfile` whose single reads are bounded: its central directory is read
    in one piece of the size the archive declares, which an archive may make huge."""

    def __init__(self, f: Any):
        self.f = f
        self.name = getattr(f, "name", None)
        self.size = os.fstat(f.fileno()).st_size

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.f.tell()
        if n > MAX_ZIP_DIRECTORY:
            raise _TooLarge()
        return self.f.read(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()

    def seekable(self) -> bool:
        return True
