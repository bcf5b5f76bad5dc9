"""`lin serve`: the dashboard live over HTTP, read-only.

The standard library's ThreadingHTTPServer is enough here and adds no dependency: there are two
fixed routes (the page and its figures), both built in memory, and no request ever names a file.
A framework would bring routing, static-file serving and templates we must not have (a static
route is how a request path reaches the filesystem). Each open page asks for the figures every
``refresh`` seconds (default :data:`POLL_S`); the store is read at most once per half that,
whatever the number of pages, so 50 open pages cost one store check every few seconds; the
store is read again only when a ref, HEAD or the config changed (or a minute passed).

Only GET and HEAD are answered; every other method gets 405. Bound to a loopback address
(the default), a request whose Host header is not that loopback address is refused (421), so
a web page elsewhere cannot read the dashboard through DNS rebinding.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..core.errors import InvalidInput, LinError
from ..core.repo import Repo
from .data import gather
from .report import render, to_json

DEFAULT_PORT = 8484
#: each open page asks for new figures every this many seconds (``lin serve --refresh``)
POLL_S = 5.0
#: the store is read again after this many seconds even when no ref moved
MAX_STALE_S = 60.0

_SECURITY_HEADERS = {
    "Cache-Control": "no-cache",  # kept, but asked again each time: an unchanged poll is a 304
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "img-src data:; connect-src 'self'; frame-ancestors 'none'",
}


@dataclass
class Snapshot:
    """One reading of the store, rendered: what every request until the next refresh is sent."""

    page: bytes
    data: bytes
    etag: str
    taken: float  # time.monotonic() of the last check against the store
    gathered: float  # time.monotonic() of the reading itself
    key: tuple[Any, ...]  # the store's state it was read at (see state_key)
    error: str | None = None  # why the last refresh failed (the previous figures are kept)


def state_key(store: Path, repo: Repo) -> tuple[Any, ...]:
    """What the figures depend on, cheaply: every ref (versions, branches, runs' checkpoints,
    queues, notes, data), HEAD, config.toml and the format. ~10 us a ref."""
    refs = repo.refs.as_dict("refs/")
    try:
        config = (store / "config.toml").stat().st_mtime_ns
    except OSError:
        config = 0
    return (repo.refs.read("HEAD"), config, repo.format_version, hash(frozenset(refs.items())), len(refs))


class Figures:
    """The cached figures of one store. At most once per ``refresh_s`` the store's state is
    checked (:func:`state_key`); it is read again only when that state changed, or after
    :data:`MAX_STALE_S` (sizes on disk move without a ref moving). A refresh runs in one
    background thread while requests keep getting the previous figures (reading a store of
    10,000 versions takes seconds); only the very first reading is waited for."""

    def __init__(self, store: Path, refresh_s: float = POLL_S / 2, poll_s: float = POLL_S):
        self.store = store
        self.refresh_s = refresh_s
        self.poll_s = poll_s
        self.reads = 0  # store readings done (tests check the cache works)
        self._lock = threading.Lock()  # guards _snap and _busy
        self._reading = threading.Lock()  # one refresh at a time
        self._busy = False
        self._snap: Snapshot | None = None

    def get(self, wait: bool = False) -> Snapshot:
        """The figures; ``wait``: refresh them now if due, rather than in the background."""
        with self._lock:
            snap = self._snap
            due = snap is None or time.monotonic() - snap.taken >= self.refresh_s
            if snap is not None and (not due or self._busy) and not wait:
                return snap
            if snap is not None and not wait:
                self._busy = True
                threading.Thread(target=self._refresh_in_background, daemon=True).start()
                return snap
        return self.refresh()

    def _refresh_in_background(self) -> None:
        try:
            self.refresh()
        except (LinError, OSError):
            pass  # refresh() kept the previous figures and noted why
        finally:
            with self._lock:
                self._busy = False

    def refresh(self) -> Snapshot:
        """Check the store's state and read it again if it changed; the figures."""
        with self._reading:
            snap = self._snap
            now = time.monotonic()
            if snap is not None and now - snap.taken < self.refresh_s:
                return snap  # another thread refreshed while this one waited
            try:
                repo = Repo.open(self.store)  # opened anew: config and format changes show
                key = state_key(self.store, repo)
                if snap is not None and key == snap.key and now - snap.gathered < MAX_STALE_S:
                    snap.taken = now
                    return snap
                self.reads += 1
                d = gather(repo)
            except (LinError, OSError) as e:
                if snap is None:
                    raise
                snap.taken, snap.error = now, f"{type(e).__name__}: {e}"
                return snap
            data = to_json(d).encode("utf-8")
            page = render(d, live_s=self.poll_s).encode("utf-8")
            etag = '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'
            new = Snapshot(page, data, etag, now, now, key)
            with self._lock:
                self._snap = new
            return new


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # 50 pages opening at once must not see refused connections

    def __init__(self, figures: Figures, bind: str, port: int):
        self.figures = figures
        super().__init__((bind, port), Handler)
        self.bind = bind
        self.port = self.server_address[1]
        self.loopback = is_loopback(bind)
        host = f"[{bind}]" if ":" in bind else bind
        self.url = f"http://{host}:{self.port}/"
        names = {host, "localhost", "127.0.0.1", "[::1]"} if self.loopback else set()
        self.allowed_hosts = {f"{n}:{self.port}" for n in names}


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "lin-serve"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle or slow client gives its thread back

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        return  # library code never prints; lin serve reports nothing per request

    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8",
              extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in {**_SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _refuse(self) -> None:
        self._send(405, b"read-only: only GET and HEAD\n", extra={"Allow": "GET, HEAD"})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # every method but GET and HEAD (POST, PUT, DELETE, PROPFIND, ...)
            return self._refuse
        raise AttributeError(name)

    def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        if self.server.loopback and self.headers.get("Host", "") not in self.server.allowed_hosts:
            self._send(421, b"this dashboard answers only to its loopback address\n")
            return
        path = urlsplit(self.path).path  # compared whole: no request path is ever joined to a folder
        if path not in ("/", "/index.html", "/data.json"):
            self._send(404, b"not found\n")
            return
        try:
            snap = self.server.figures.get()
        except (LinError, OSError) as e:
            self._send(503, f"cannot read the store: {e}\n".encode())
            return
        if self.headers.get("If-None-Match") == snap.etag:
            self._send(304, b"", extra={"ETag": snap.etag})
            return
        if path == "/data.json":
            self._send(200, snap.data, "application/json", {"ETag": snap.etag})
        else:
            self._send(200, snap.page, "text/html; charset=utf-8", {"ETag": snap.etag})


def is_loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


def make_server(store: Path, *, bind: str = "127.0.0.1", port: int = DEFAULT_PORT,
                refresh_s: float = POLL_S) -> DashboardServer:
    """A server for the store folder ``store`` (not started: call ``serve_forever``); pages poll
    every ``refresh_s`` seconds and the store is read at most once per half that.

    The first reading happens here, so a store that cannot be read fails before anything listens."""
    if not 0 <= port <= 65535:
        raise InvalidInput(f"--port {port}: not a TCP port (0-65535)")
    if not 1 <= refresh_s <= 3600:
        raise InvalidInput(f"--refresh {refresh_s:g}: give seconds between 1 and 3600")
    figures = Figures(store, refresh_s / 2, refresh_s)
    figures.get(wait=True)
    try:
        return DashboardServer(figures, bind, port)
    except OSError as e:
        raise InvalidInput(f"cannot listen on {bind}:{port}: {e.strerror or e}",
                           hint="choose another --port (0 picks a free one)") from e
