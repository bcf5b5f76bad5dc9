"""Reading a data file once, on every core: content id (and storage), records, tokens.

The main process reads the file in CHUNK_SIZE pieces. Each piece goes (a) to threads that hash
and compress it into the store (or only hash it, with ``--no-store``): the pieces become the
file's blob or chunks object, so the fingerprint is the id the store gives the file; and (b)
after decompression (``.gz``, ``.zst``), in blocks of whole lines, to worker processes that parse
the records, compute record ids, sort them, and count tokens. A plain ``.jsonl`` block is sent
as (offset, length) and the worker reads it itself (the page cache has it), so no data crosses a
pipe. At most a few blocks are in flight, so memory stays bounded whatever the file's size.
A line longer than ``max_record_bytes`` (``data.max_record_bytes``) stops the read as soon as
the bytes read show it, naming its file and line (:class:`LineLimit`); compressed input is
decompressed in bounded pieces. So memory stays bounded whatever the file holds.

Record ids come back sorted per block; they are merged in memory, or, for very large files, in
sorted runs spilled to temporary files and merged as a stream (:func:`merge_sorted`).
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.content import content_id
from ..core.errors import InvalidInput, NotFound
from ..core.ids import hash_object
from ..core.objects import CHUNK_SIZE
from ..core.progress import NULL, Progress
from ..core.settings import DataSettings
from .blocks import MAX_BAD_SHOWN, BlockResult, parse_block
from .idsets import ID_DTYPE, as_ids, merge_sorted, sort_unique
from .records import ID_BYTES, Decoder, LineLimit, detect_format
from .tokens import counter_for
from .workers import Workers

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
              description: str | None = None,
              max_record_bytes: int = DataSettings.max_record_bytes) -> ScanResult:
    """Read ``path`` once: store (``put_blob``) or hash its pieces, parse its records, count tokens.

    ``put_blob(piece) -> id`` stores one piece (called on threads); ``finish_chunks(parts)``
    stores the chunks object of a multi-piece file. Without them the content is only hashed.
    ``counter_spec`` (for worker processes) and ``counter`` (for this process) count tokens.
    Raises InvalidInput for a truncated compressed file and for a line longer than
    ``max_record_bytes`` (naming it); bad lines are counted, not raised.
    """
    path = Path(path)
    st = check_file(path)
    fmt = detect_format(path.name)
    workers = workers or os.cpu_count() or 1
    use_pool = workers > 1 and st.st_size > (INLINE_LIMIT if fmt == "jsonl" else INLINE_LIMIT // 4)
    if counter is None and counter_spec is not None and not use_pool:
        counter = counter_for(counter_spec)
    tokenize = counter_spec is not None or counter is not None
    scan = _Scan(path, fmt, st.st_size, workers, counter, skip_bad_lines, progress, tmp_dir, max_record_bytes)
    progress.start(description or f"reading {path.name}", st.st_size, "B")
    try:
        if use_pool:
            wspec = (counter.worker_spec() if counter is not None
                     else counter_for(counter_spec).worker_spec() if counter_spec is not None else None)
            scan.pool = Workers(workers, wspec)
        if put_blob is not None:
            scan.hasher = ThreadPoolExecutor(max(1, min(2, workers)), thread_name_prefix="lin-data-put")
        scan.read(put_blob)
        scan.drain()
        fingerprint = scan.fingerprint(finish_chunks)
    except BaseException:
        scan.abort()
        raise
    finally:
        progress.finish()
        scan.close()
    st2 = path.stat()
    if (st2.st_size, st2.st_mtime_ns, st2.st_ino) != (st.st_size, st.st_mtime_ns, st.st_ino):
        scan.collector.cleanup()
        raise InvalidInput(f"{path}: changed while being read; run the command again when it is complete")
    return ScanResult(path=str(path), fingerprint=fingerprint, size=st.st_size, format=fmt,
                      lines=scan.totals["lines"], examples=scan.totals["examples"], text=scan.totals["text"],
                      chat=scan.totals["chat"], bad=scan.totals["bad"], bad_first=scan.bad_first,
                      tokens=scan.totals["tokens"] if tokenize else None, ids=scan.collector.result())


class _Scan:
    """One read of a file: its pieces (stored or hashed), its blocks of lines in flight, the totals.

    Blocks are parsed here (``counter`` counts their tokens) or, when ``pool`` is set, by worker
    processes. A plain file's blocks go to the workers as (offset, length) and the progress
    counts parsed bytes; other files' blocks are decompressed lines and the progress counts
    bytes read.
    """

    def __init__(self, path: Path, fmt: str, size: int, workers: int, counter, skip_bad_lines: bool,
                 progress: Progress, tmp_dir: Path | None, max_record_bytes: int):
        self.path = path
        self.size = size
        self.plain = fmt == "jsonl"
        self.decoder = Decoder(fmt, str(path))
        self.counter = counter
        self.skip_bad_lines = skip_bad_lines
        self.progress = progress
        self.pool: Workers | None = None
        self.hasher: ThreadPoolExecutor | None = None
        self.collector = _IdCollector(tmp_dir)
        self.totals = {"lines": 0, "examples": 0, "text": 0, "chat": 0, "bad": 0, "tokens": 0}
        self.bad_first: list = []
        self.pending: deque[tuple[int, int]] = deque()  # (worker, file bytes it covers) of each job in flight
        self.pieces: list[tuple[Future | str, int]] = []  # (id or the store write's future, size)
        # jobs in flight: a plain file's jobs are (offset, length) and hold no memory, so many can wait
        # while this thread is busy storing; a compressed file's jobs carry their 4 MiB of lines
        self.window = (8 if self.plain else 3) * workers
        self.buf = bytearray()  # decompressed bytes not yet sent (all modes but plain + pool)
        self.buf_at_start = True
        self.block_start = 0  # plain + pool: file offset of the first byte not yet sent
        self.limit = LineLimit(path, max_record_bytes)  # refuses an overlong line

    @property
    def by_offset(self) -> bool:
        """Workers read the blocks from the file themselves (a plain file and a pool)."""
        return self.plain and self.pool is not None

    # ---- reading

    def read(self, put_blob: Callable[[bytes], str] | None) -> None:
        """Read the file once: each piece to the store (or hashed), its lines to the parsers."""
        offset = 0
        with open(self.path, "rb") as f:
            while True:
                piece = f.read(CHUNK_SIZE)
                if not piece:
                    break
                if self.hasher is not None and put_blob is not None:  # a hasher is made for put_blob
                    self.pieces.append((self.hasher.submit(put_blob, piece), len(piece)))
                    _bound(self.pieces, 3)
                else:
                    self.pieces.append((hash_object("blob", piece), len(piece)))
                if self.by_offset:
                    self.limit.feed(piece)
                    self._send_file_blocks(piece, offset)
                else:
                    for out in self.decoder.pieces(piece):
                        self.limit.feed(out)
                        self._send_lines(out)
                    self.progress.advance(len(piece))  # compressed files: progress counts bytes read
                offset += len(piece)
        if offset != self.size:
            raise InvalidInput(f"{self.path}: size changed while being read ({self.size} -> {offset} bytes); "
                               "was it being written?")
        if self.by_offset:
            if self.block_start < offset:
                self._submit_file_block(offset)
        else:
            self.buf += self.decoder.finish()
            if self.buf:
                self._submit_lines(bytes(self.buf))

    def _send_file_blocks(self, piece: bytes, offset: int) -> None:
        """Send the whole blocks of lines that end in ``piece`` (at ``offset`` in the file)."""
        while True:
            target = self.block_start + BLOCK - 1
            if target >= offset + len(piece):
                break
            nl = piece.find(b"\n", max(target - offset, 0))
            if nl < 0:
                break
            self._submit_file_block(offset + nl + 1)

    def _submit_file_block(self, end: int) -> None:
        self.submit({"kind": "file", "path": str(self.path.resolve()), "offset": self.block_start,
                     "length": end - self.block_start}, None, False)
        self.block_start = end

    def _send_lines(self, data: bytes) -> None:
        """Buffer decompressed bytes; send each whole block of lines."""
        self.buf += data
        while len(self.buf) >= BLOCK:
            nl = self.buf.find(b"\n", BLOCK - 1)
            if nl < 0:
                break
            block = bytes(self.buf[:nl + 1])
            del self.buf[:nl + 1]
            self._submit_lines(block)

    def _submit_lines(self, block: bytes) -> None:
        self.submit({"kind": "bytes", "at_start": self.buf_at_start}, block, self.buf_at_start)
        self.buf_at_start = False

    # ---- parsing

    def submit(self, header: dict, data: bytes | None, at_start: bool) -> None:
        """Parse a block: on a worker (waiting for older results past the window), or here."""
        if self.pool is not None:
            header["skip"] = self.skip_bad_lines
            self.pending.append((self.pool.submit(header, data or b""), header.get("length", 0)))
            while len(self.pending) > self.window:
                self.collect_one()
        else:
            assert data is not None
            self.collect(parse_block(data, at_file_start=at_start, counter=self.counter,
                                     skip_bad_lines=self.skip_bad_lines))

    def collect_one(self) -> None:
        """Take the oldest worker result."""
        assert self.pool is not None
        w, nbytes = self.pending.popleft()
        header, ids = self.pool.result(w)
        if nbytes:
            self.progress.advance(nbytes)  # plain files: progress counts parsed bytes
        self.collect(BlockResult(ids, header["lines"], header["examples"], header["text"], header["chat"],
                                 header["bad"], [tuple(x) for x in header["bad_first"]], header["tokens"]))

    def collect(self, res: BlockResult) -> None:
        totals = self.totals
        base = totals["lines"]
        for rel, reason in res.bad_first:
            if len(self.bad_first) < MAX_BAD_SHOWN:
                self.bad_first.append((base + rel, reason))
        totals["lines"] += res.lines
        totals["examples"] += res.examples
        totals["text"] += res.text
        totals["chat"] += res.chat
        totals["bad"] += res.bad
        if res.tokens is not None:
            totals["tokens"] += res.tokens
        self.collector.add(res.ids)
        self.progress.advance(0, records=totals["examples"])

    def drain(self) -> None:
        """Wait for every block in flight."""
        while self.pending:
            self.collect_one()

    # ---- the end

    def fingerprint(self, finish_chunks: Callable[[list[tuple[str, int]]], str] | None) -> str:
        """The content id of the file (the chunks object stored with ``finish_chunks``)."""
        piece_ids = [(p.result() if isinstance(p, Future) else p, n) for p, n in self.pieces]
        if len(piece_ids) > 1 and finish_chunks is not None:
            return finish_chunks(piece_ids)
        return content_id(piece_ids)

    def abort(self) -> None:
        """After a failure: drop the spilled ids, kill the workers."""
        self.collector.cleanup()
        if self.pool is not None:
            self.pool.close(kill=True)
            self.pool = None

    def close(self) -> None:
        """Stop the workers (ending their input) and wait for the store writes."""
        if self.pool is not None:
            self.pool.close()
        if self.hasher is not None:
            self.hasher.shutdown(wait=True)


def _bound(pieces: list, depth: int) -> None:
    """Wait for older store writes so that at most ``depth`` pieces are held in memory."""
    unfinished = [f for f, _ in pieces[-(depth + 4):] if isinstance(f, Future) and not f.done()]
    while len(unfinished) > depth:
        unfinished.pop(0).result()
