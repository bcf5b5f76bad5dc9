"""The scan's worker processes, both ends of the pipe.

The scan (:func:`lineagestore.data.scan.scan_file`) runs :func:`lineagestore.data.blocks.parse_block`
in worker processes started as ``python -c "...worker_main()"``. Messages on their stdin/stdout
are ``u32 header length, u32 payload length`` (little-endian), a JSON header, then raw payload
bytes: no pickle, and no re-import of the caller's ``__main__``. The first message to a worker
holds the tokenizer spec; then each job gets one result (or an error), in order.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from ..core import errors
from ..core.environment import read_env
from ..core.errors import InvalidInput, LinError
from .blocks import parse_block
from .tokens import TokenCounter

# ----------------------------------------------------------------------------- the protocol


_MSG = struct.Struct("<II")


def send_message(f, header: dict, payload: bytes | memoryview = b"") -> None:
    h = json.dumps(header, separators=(",", ":")).encode()
    f.write(_MSG.pack(len(h), len(payload)))
    f.write(h)
    if payload:
        f.write(payload)
    f.flush()


def recv_message(f) -> tuple[dict, bytes] | None:
    """The next message, or None at a clean end of stream."""
    head = f.read(_MSG.size)
    if not head:
        return None
    if len(head) != _MSG.size:
        raise EOFError("message cut short")
    hl, pl = _MSG.unpack(head)
    h = f.read(hl)
    payload = f.read(pl) if pl else b""
    if len(h) != hl or len(payload) != pl:
        raise EOFError("message cut short")
    return json.loads(h), payload


# ----------------------------------------------------------------------------- the worker's side


def run_job(header: dict, payload: bytes, counter) -> tuple[dict, bytes]:
    """Parse one block: ``{"kind": "file", "path", "offset", "length"}`` or ``{"kind": "bytes"}`` + data."""
    if header["kind"] == "file":
        with open(header["path"], "rb") as f:
            data = os.pread(f.fileno(), header["length"], header["offset"])
        if len(data) != header["length"]:
            raise InvalidInput(f"{header['path']}: file shrank while being read; was it changed?")
        at_start = header["offset"] == 0
    else:
        data, at_start = payload, bool(header.get("at_start"))
    res = parse_block(data, at_file_start=at_start, counter=counter, skip_bad_lines=header["skip"])
    return ({"lines": res.lines, "examples": res.examples, "text": res.text, "chat": res.chat, "bad": res.bad,
             "bad_first": res.bad_first, "tokens": res.tokens}, res.ids)


def worker_main() -> None:  # pragma: no cover - runs in the worker processes (tested through scans)
    """A scan worker: the first message holds the tokenizer spec; then one result per job, in order."""
    import queue
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    inp = sys.stdin.buffer
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    jobs: queue.Queue = queue.Queue()

    def reader() -> None:  # always drain stdin, so the parent never blocks writing a job
        try:
            while (msg := recv_message(inp)) is not None:
                jobs.put(msg)
        finally:
            jobs.put(None)

    threading.Thread(target=reader, daemon=True).start()
    counter = None
    init_error = None
    first = jobs.get()
    if first is None:
        return
    spec = first[0].get("counter")
    if spec is not None:
        if first[1]:
            spec["backend"] = first[1].decode()
        try:
            counter = TokenCounter(spec)
        except Exception as e:  # noqa: BLE001 - reported with every job
            init_error = e
    while (msg := jobs.get()) is not None:
        try:
            if init_error is not None:
                raise init_error
            header, payload = run_job(msg[0], msg[1], counter)
            send_message(out, header, payload)
        except Exception as e:  # noqa: BLE001 - sent to the parent, which raises it
            send_message(out, {"error": str(e), "type": type(e).__name__, "hint": getattr(e, "hint", None)})


# ----------------------------------------------------------------------------- the parent's side


_WORKER = "from lineagestore.data.workers import worker_main; worker_main()"


class Workers:
    """Worker processes running :func:`worker_main`; results come back in order."""

    def __init__(self, n: int, counter_spec: dict | None):
        import lineagestore
        root = str(Path(lineagestore.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(x for x in (root, read_env("PYTHONPATH")) if x)}
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
                elif p.stdin is not None:  # always a pipe: the workers are started with one
                    p.stdin.close()
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
                    if f is not None:
                        f.close()
                except OSError:
                    pass
        for e in self.errs:
            e.close()
        self.procs = []
