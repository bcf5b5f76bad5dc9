"""Reading a data file once, on every core: content id (and storage), records, tokens.

The main process reads the file in CHUNK_SIZE pieces. Each piece goes (a) to threads that hash
and compress it into the store (or only hash it, with ``--no-store``): the pieces become the
file's blob or chunks object, so the fingerprint is the id the store gives the file; and (b)
after decompression (``.gz``, ``.zst``), in blocks of whole lines, to worker processes that parse
the records, compute record ids, sort them, and count tokens. A plain ``.jsonl`` block is sent
as (offset, length) and the worker reads it itself (the page cache has it), so no data crosses a
pipe. At most a few blocks are in flight, so memory stays bounded whatever the file's size.

Record ids come back sorted per block; they are merged in memory, or, for very large files, in
sorted runs spilled to temporary files and merged as a stream (:func:`merge_sorted`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..core import errors
from ..core.errors import InvalidInput, LinError, NotFound
from ..core.ids import hash_object
from ..core.objects import CHUNK_SIZE
from ..core.progress import NULL, Progress
from .records import (ID_BYTES, ID_DTYPE, BlockResult, Decoder, as_ids, content_id, detect_format,
                       merge_sorted, parse_block, recv_message, send_message, sort_unique)

BLOCK = 4 << 20  # bytes of lines per parse job
INLINE_LIMIT = 24 << 20  # smaller (decompressed) inputs are parsed in this process
SPILL_IDS = 8 << 20  # ids kept in memory before a sorted run is written to disk (128 MiB)
READ_IDS = 1 << 18  # ids read at a time from a spilled run


@dataclass
class IdSet:
    """A sorted, unique set of record ids: in memory, or as sorted runs on disk merged lazily."""

    memory: np.ndarray | None = None
    runs: list[Path] = field(default_factory=list)
    _count: int | None = None

    def chunks(self) -> Iterator[np.ndarray]:
        if self.memory is not None:
            if len(self.memory):
                yield self.memory
            return
        yield from merge_sorted([_read_run(p) for p in self.runs])

    def array(self) -> np.ndarray:
        if self.memory is not None:
            return self.memory
        parts = list(self.chunks())
        return np.concatenate(parts) if parts else np.empty(0, ID_DTYPE)

    def count(self) -> int:
        if self._count is None:
            self._count = sum(len(c) for c in self.chunks())
        return self._count

    def cleanup(self) -> None:
        for p in self.runs:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        self.runs = []


def _read_run(path: Path) -> Iterator[np.ndarray]:
    with open(path, "rb") as f:
        while True:
            buf = f.read(READ_IDS * ID_BYTES)
            if not buf:
                return
            yield as_ids(buf)


class _IdCollector:
    def __init__(self, tmp_dir: Path | None):
        self.tmp_dir = tmp_dir
        self.pending: list[np.ndarray] = []
        self.pending_n = 0
        self.runs: list[Path] = []

    def add(self, ids: bytes) -> None:
        if not ids:
            return
        self.pending.append(as_ids(ids))
        self.pending_n += len(ids) // ID_BYTES
        if self.pending_n >= SPILL_IDS:
            self._spill()

    def _merged(self) -> np.ndarray:
        if not self.pending:
            return np.empty(0, ID_DTYPE)
        return sort_unique(np.concatenate(self.pending), presorted_runs=True)

    def _spill(self) -> None:
        arr = self._merged()
        fd, name = tempfile.mkstemp(prefix=f"{os.getpid()}-records-", suffix=".run", dir=self.tmp_dir)
        with os.fdopen(fd, "wb") as f:
            f.write(arr.tobytes())
        self.runs.append(Path(name))
        self.pending, self.pending_n = [], 0

    def cleanup(self) -> None:
        IdSet(runs=self.runs).cleanup()
        self.runs = []

    def result(self) -> IdSet:
        if not self.runs:
            return IdSet(memory=self._merged())
        if self.pending:
            self._spill()
        return IdSet(runs=list(self.runs))


_WORKER = "from lineagestore.data.records import worker_main; worker_main()"


class Workers:
    """Worker processes running :func:`lineagestore.data.records.worker_main`; results come back in order."""

    def __init__(self, n: int, counter_spec: dict | None):
        import lineagestore
        root = str(Path(lineagestore.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(x for x in (root, os.environ.get("PYTHONPATH")) if x)}
        self.procs: list[subprocess.Popen] = []
        self.errs: list = []
        self.next = 0
        try:
            for _ in range(n):
                err = tempfile.TemporaryFile()
                p = subprocess.Popen([sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=err, env=env)
                self.procs.append(p)
                self.errs.append(err)
                spec = dict(counter_spec) if counter_spec else None
                backend = spec.pop("backend", "").encode() if spec else b""
                send_message(p.stdin, {"counter": spec}, backend)
        except BaseException:
            self.close(kill=True)
            raise

    def submit(self, header: dict, payload: bytes = b"") -> int:
        w = self.next % len(self.procs)
        self.next += 1
        try:
            send_message(self.procs[w].stdin, header, payload)
        except BrokenPipeError:
            raise self._died(w) from None
        return w

    def result(self, w: int) -> tuple[dict, bytes]:
        try:
            msg = recv_message(self.procs[w].stdout)
        except EOFError:
            msg = None
        if msg is None:
            raise self._died(w)
        header, payload = msg
        if "error" in header:
            cls = getattr(errors, header.get("type") or "", None)
            err: LinError = LinError(f"reading the data failed: {header['error']}")
            if isinstance(cls, type) and issubclass(cls, LinError):
                try:
                    err = cls(header["error"], hint=header.get("hint"))
                except TypeError:  # an error class with another constructor
                    pass
            raise err
        return header, payload

    def _died(self, w: int) -> LinError:
        p = self.procs[w]
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.errs[w].seek(0)
        tail = self.errs[w].read()[-2000:].decode("utf-8", "replace").strip()
        return LinError(f"a data worker process stopped (exit code {p.returncode})" + (f": {tail}" if tail else ""))

    def close(self, kill: bool = False) -> None:
        for p in self.procs:
            try:
                if kill:
                    p.kill()
                else:
                    p.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            for f in (p.stdout, p.stdin):
                try:
                    f.close()  # type: ignore[union-attr]
                except OSError:
                    pass
        for e in self.errs:
            e.close()
        self.procs = []


@dataclass
class ScanResult:
    path: str
    fingerprint: str  # content id of the file's bytes
    size: int
    format: str
    lines: int
    examples: int
    text: int
    chat: int
    bad: int
    bad_first: list  # [(line number, reason)], the first few
    tokens: int | None
    ids: IdSet

    @property
    def kind(self) -> str:
        if self.chat and self.text:
            return "mixed"
        return "chat" if self.chat else "text"


def check_file(path: Path) -> os.stat_result:
    """The stat of a data file, or a clear error (missing, not a file, empty, bad suffix)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file") from None
    except NotADirectoryError:
        raise NotFound(f"{path}: no such file") from None
    if not path.is_file():
        raise InvalidInput(f"{path}: not a file")
    detect_format(path.name)
    if st.st_size == 0:
        raise InvalidInput(f"{path}: file is empty (0 bytes)")
    return st


def scan_file(path: os.PathLike | str, *, put_blob: Callable[[bytes], str] | None = None,
              finish_chunks: Callable[[list[tuple[str, int]]], str] | None = None,
              counter_spec: dict | None = None, counter=None, skip_bad_lines: bool = False,
              workers: int = 0, progress: Progress = NULL, tmp_dir: Path | None = None,
              description: str | None = None) -> ScanResult:
    """Read ``path`` once: store (``put_blob``) or hash its pieces, parse its records, count tokens.

    ``put_blob(piece) -> id`` stores one piece (called on threads); ``finish_chunks(parts)``
    stores the chunks object of a multi-piece file. Without them the content is only hashed.
    ``counter_spec`` (for worker processes) and ``counter`` (for this process) count tokens.
    Raises InvalidInput for a truncated compressed file; bad lines are counted, not raised.
    """
    path = Path(path)
    st = check_file(path)
    fmt = detect_format(path.name)
    size = st.st_size
    workers = workers or os.cpu_count() or 1
    decoder = Decoder(fmt, str(path))
    plain = fmt == "jsonl"
    use_pool = workers > 1 and size > (INLINE_LIMIT if plain else INLINE_LIMIT // 4)
    if counter is None and counter_spec is not None and not use_pool:
        from .tokens import counter_for
        counter = counter_for(counter_spec)
    tokenize = counter_spec is not None or counter is not None

    collector = _IdCollector(tmp_dir)
    totals = {"lines": 0, "examples": 0, "text": 0, "chat": 0, "bad": 0, "tokens": 0}
    bad_first: list = []
    pending: deque[tuple[int, int]] = deque()  # (worker, file bytes it covers) of each job in flight
    pieces: list[tuple[Future | str, int]] = []

    def collect(res: BlockResult) -> None:
        base = totals["lines"]
        for rel, reason in res.bad_first:
            if len(bad_first) < 10:
                bad_first.append((base + rel, reason))
        totals["lines"] += res.lines
        totals["examples"] += res.examples
        totals["text"] += res.text
        totals["chat"] += res.chat
        totals["bad"] += res.bad
        if res.tokens is not None:
            totals["tokens"] += res.tokens
        collector.add(res.ids)
        progress.advance(0, records=totals["examples"])

    def collect_one() -> None:
        assert pool is not None
        w, nbytes = pending.popleft()
        header, ids = pool.result(w)
        if nbytes:
            progress.advance(nbytes)  # plain files: progress counts parsed bytes
        collect(BlockResult(ids, header["lines"], header["examples"], header["text"], header["chat"],
                            header["bad"], [tuple(x) for x in header["bad_first"]], header["tokens"]))

    pool: Workers | None = None
    hasher: ThreadPoolExecutor | None = None
    # jobs in flight: a plain file's jobs are (offset, length) and hold no memory, so many can wait
    # while this thread is busy storing; a compressed file's jobs carry their 4 MiB of lines
    window = (8 if plain else 3) * workers

    def submit(header: dict, data: bytes | None, at_start: bool) -> None:
        if pool is not None:
            header["skip"] = skip_bad_lines
            pending.append((pool.submit(header, data or b""), header.get("length", 0)))
            while len(pending) > window:
                collect_one()
        else:
            assert data is not None
            collect(parse_block(data, at_file_start=at_start, counter=counter, skip_bad_lines=skip_bad_lines))

    progress.start(description or f"reading {path.name}", size, "B")
    try:
        if use_pool:
            wspec = None
            if tokenize:
                from .tokens import counter_for
                wspec = (counter or counter_for(counter_spec)).worker_spec()  # type: ignore[arg-type]
            pool = Workers(workers, wspec)
        if put_blob is not None:
            hasher = ThreadPoolExecutor(max(1, min(2, workers)), thread_name_prefix="lin-data-put")
        buf = bytearray()  # decompressed bytes not yet sent (all modes but plain + pool)
        buf_at_start = True
        block_start = 0  # plain + pool: file offset of the first byte not yet sent
        offset = 0
        with open(path, "rb") as f:
            while True:
                piece = f.read(CHUNK_SIZE)
                if not piece:
                    break
                if hasher is not None:
                    pieces.append((hasher.submit(put_blob, piece), len(piece)))  # type: ignore[arg-type]
                    _bound(pieces, 3)
                else:
                    pieces.append((hash_object("blob", piece), len(piece)))
                if plain and pool is not None:
                    while True:
                        target = block_start + BLOCK - 1
                        if target >= offset + len(piece):
                            break
                        nl = piece.find(b"\n", max(target - offset, 0))
                        if nl < 0:
                            break
                        end = offset + nl + 1
                        submit({"kind": "file", "path": str(path.resolve()), "offset": block_start,
                                "length": end - block_start}, None, False)
                        block_start = end
                else:
                    buf += decoder.feed(piece)
                    while len(buf) >= BLOCK:
                        nl = buf.find(b"\n", BLOCK - 1)
                        if nl < 0:
                            break
                        data = bytes(buf[:nl + 1])
                        del buf[:nl + 1]
                        submit({"kind": "bytes", "at_start": buf_at_start}, data, buf_at_start)
                        buf_at_start = False
                offset += len(piece)
                if not (plain and pool is not None):
                    progress.advance(len(piece))  # compressed files: progress counts bytes read
        if offset != size:
            raise InvalidInput(f"{path}: size changed while being read ({size} -> {offset} bytes); "
                               "was it being written?")
        if plain and pool is not None:
            if block_start < offset:
                submit({"kind": "file", "path": str(path.resolve()), "offset": block_start,
                        "length": offset - block_start}, None, False)
        else:
            buf += decoder.finish()
            if buf:
                data = bytes(buf)
                submit({"kind": "bytes", "at_start": buf_at_start}, data, buf_at_start)
        while pending:
            collect_one()
        piece_ids = [(p.result() if isinstance(p, Future) else p, n) for p, n in pieces]
        if len(piece_ids) > 1 and finish_chunks is not None:
            fingerprint = finish_chunks(piece_ids)
        else:
            fingerprint = content_id(piece_ids)
    except BaseException:
        collector.cleanup()
        if pool is not None:
            pool.close(kill=True)
            pool = None
        raise
    finally:
        progress.finish()
        if pool is not None:
            pool.close()
        if hasher is not None:
            hasher.shutdown(wait=True)
    st2 = path.stat()
    if (st2.st_size, st2.st_mtime_ns, st2.st_ino) != (st.st_size, st.st_mtime_ns, st.st_ino):
        collector.cleanup()
        raise InvalidInput(f"{path}: changed while being read; run the command again when it is complete")
    return ScanResult(path=str(path), fingerprint=fingerprint, size=size, format=fmt,
                      lines=totals["lines"], examples=totals["examples"], text=totals["text"],
                      chat=totals["chat"], bad=totals["bad"], bad_first=bad_first,
                      tokens=totals["tokens"] if tokenize else None, ids=collector.result())


def _bound(pieces: list, depth: int) -> None:
    """Wait for older store writes so that at most ``depth`` pieces are held in memory."""
    unfinished = [f for f, _ in pieces[-(depth + 4):] if isinstance(f, Future) and not f.done()]
    while len(unfinished) > depth:
        unfinished.pop(0).result()
