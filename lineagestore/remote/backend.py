"""Where a remote keeps its bytes: a small key/value interface, an S3 and a folder implementation.

Keys are ``/``-separated relative names (``objects/ab/cdef...``, ``refs/heads/main``). The
contract every backend keeps (tests/test_remote_s3.py::test_backend_contract runs it against both):

- ``read(key)`` returns ``(bytes, etag)`` or None when the key is absent.
- ``write(key, data)`` stores the bytes atomically: a reader sees the old value, the new one or
  nothing, never a part (S3: a PUT or a completed multipart upload; folder: temp file + rename).
- ``create(key, data)`` stores only if the key is absent (S3 ``If-None-Match: *``);
  ``replace(key, data, etag)`` only if the current value has that etag (S3 ``If-Match``).
  Both raise :class:`PreconditionFailed` otherwise and return the new etag.
- ``list(prefix)`` yields :class:`Entry` (key, size, etag) for every key under ``prefix``
  (the folder backend leaves the etag of ``objects/`` keys empty: reading them would cost I/O).
- ``present(keys)`` is one batched existence check: the size of each key that is there, asked of
  the server in this call (HEAD requests in parallel, listings of the folders the keys are in, or
  one listing of their common prefix, whichever costs less; see :meth:`S3Backend.present`).
- An etag is opaque, except that for a value written in one piece it is the quoted MD5 of the
  bytes (S3's rule for single-part uploads, kept by the folder backend), which lets a listing
  answer "does this ref hold X?" without reading it.

Credentials are never handled here: boto3 finds them (environment, profile, instance role).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..core.environment import env_int, read_env
from ..core.errors import InvalidInput, RemoteError
from ..core.fsutil import AtomicFile, fsync_dir

#: objects above this many bytes go to S3 as multipart uploads (parts of this size, in parallel)
MULTIPART_THRESHOLD = 8 << 20
MULTIPART_CHUNK = 8 << 20
#: what an existence check costs on S3, in ms of wall time, measured against SeaweedFS on
#: 127.0.0.1 (2 CPUs; docs/remotes.md): a HEAD request 1.3 (8 in flight), whatever the remote
#: holds; listing folders in parallel (one per thread, 8 in flight) 2 a request plus 0.09 per
#: key returned; one listing read page after page (1,000 keys a page) 10 a page plus 0.09 a key
HEAD_MS = 1.3
FOLDER_LIST_MS = 2.0
PAGE_MS = 10.0
LIST_KEY_MS = 0.09
LIST_PAGE = 1000


class PreconditionFailed(Exception):
    """A conditional write found the key in another state than the one it was conditioned on."""


@dataclass(frozen=True)
class Entry:
    key: str
    size: int
    etag: str


def md5_etag(data: bytes) -> str:
    """The etag S3 gives a value written in one piece: the quoted MD5 of its bytes."""
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise InvalidInput(f"invalid remote key {key!r}")
    return key


class Backend(ABC):
    """One remote location (an S3 prefix or a folder)."""

    url: str
    #: how messages name this remote ("remote origin (s3://bucket/prefix)")
    label: str = ""

    @abstractmethod
    def read(self, key: str) -> tuple[bytes, str] | None: ...

    def read_head(self, key: str, n: int) -> bytes | None:
        """The first ``n`` bytes of ``key`` (fewer if it is shorter); None if absent."""
        got = self.read(key)
        return None if got is None else got[0][:n]

    @abstractmethod
    def write(self, key: str, data: bytes | memoryview, on_bytes: Callable[[int], None] | None = None) -> None: ...

    @abstractmethod
    def create(self, key: str, data: bytes) -> str: ...

    @abstractmethod
    def replace(self, key: str, data: bytes, etag: str) -> str: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def delete_if_match(self, key: str, etag: str) -> None:
        """Delete ``key`` only if it holds the value with ``etag`` (else PreconditionFailed)."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[Entry]: ...

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The size of ``key``, None if absent (one HEAD request)."""

    def present(self, keys: Sequence[str], workers: int = 8, listed_hint: int = 0,
                total_hint: int = 0) -> dict[str, int]:
        """key -> size for each of ``keys`` that exists; absent keys are left out.

        Asked of the remote in this call, never answered from memory. The hints (about how many
        keys the folders of ``keys`` hold in all, and how many their common prefix holds) only
        help choose how to ask.
        """
        return _sizes_by_head(self, keys, workers)

    def probe_conditional_writes(self) -> bool:
        """True if the server honours If-None-Match and If-Match on writes (checked for real)."""
        key = f"probe/{uuid.uuid4().hex}"
        try:
            self.create(key, b"probe 1\n")
            try:
                self.create(key, b"probe 2\n")
                return False
            except PreconditionFailed:
                pass
            try:
                self.replace(key, b"probe 3\n", '"00000000000000000000000000000000"')
                return False
            except PreconditionFailed:
                return True
        finally:
            try:
                self.delete(key)
            except Exception:  # noqa: BLE001 - a probe left behind is harmless
                pass


def _sizes_by_head(backend: Backend, keys: Sequence[str], workers: int) -> dict[str, int]:
    keys = list(dict.fromkeys(keys))
    if len(keys) <= 1 or workers <= 1:
        sizes = [backend.size(k) for k in keys]
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="lin-head") as pool:
            sizes = list(pool.map(backend.size, keys))
    return {k: n for k, n in zip(keys, sizes, strict=True) if n is not None}


def check_plan(n_keys: int, n_folders: int, in_folders: int, under_prefix: int) -> str:
    """How to ask a remote whether ``n_keys`` keys exist, whichever costs least by the measured
    costs above: "head" (one request each), "folders" (list the ``n_folders`` folders they are
    in, holding about ``in_folders`` keys) or "prefix" (list their common prefix, holding about
    ``under_prefix`` keys, in one paginated listing)."""
    in_folders = max(in_folders, n_keys)
    under_prefix = max(under_prefix, in_folders)
    costs = {"head": n_keys * HEAD_MS,
             "folders": (n_folders + in_folders // LIST_PAGE) * FOLDER_LIST_MS + in_folders * LIST_KEY_MS,
             "prefix": (under_prefix // LIST_PAGE + 1) * PAGE_MS + under_prefix * LIST_KEY_MS}
    return min(costs, key=lambda k: costs[k])


# ------------------------------------------------------------------------------------ folder


class FolderBackend(Backend):
    """A remote in a folder (a second disk, a mounted share): one file per key.

    Conditional writes hold ``flock`` on ``<root>/.lock`` while they read, compare and replace;
    temporary files live in ``<root>/.tmp`` (same filesystem, renamed into place).
    """

    def __init__(self, root: Path, url: str | None = None):
        self.root = Path(root)
        self.url = url or str(self.root)
        self._tlock = threading.Lock()

    def _ensure_root(self) -> None:
        if self.root.is_dir():
            (self.root / ".tmp").mkdir(exist_ok=True)
            return
        if not self.root.parent.is_dir():
            raise RemoteError(f"{self.label or self.root}: the folder above it does not exist",
                              hint="is the disk mounted? lin creates the remote folder itself, not its parents")
        try:
            self.root.mkdir(exist_ok=True)
            (self.root / ".tmp").mkdir(exist_ok=True)
        except OSError as e:
            raise RemoteError(f"{self.label or self.root}: cannot create the folder ({e.strerror})") from e

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def read(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise RemoteError(f"{self.label or self.root}: cannot read {key} ({e.strerror})") from e
        return data, md5_etag(data)

    def read_head(self, key: str, n: int) -> bytes | None:
        try:
            with open(self._path(key), "rb") as f:
                return f.read(n)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise RemoteError(f"{self.label or self.root}: cannot read {key} ({e.strerror})") from e

    def write(self, key: str, data: bytes | memoryview, on_bytes: Callable[[int], None] | None = None) -> None:
        self._ensure_root()
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with AtomicFile(path, self.root / ".tmp") as f:
                f.write(data)
        except OSError as e:
            raise RemoteError(f"{self.label or self.root}: cannot write {key} ({e.strerror or e})") from e
        if on_bytes:
            on_bytes(len(data))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure_root()
        with self._tlock:
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def create(self, key: str, data: bytes) -> str:
        with self._locked():
            if self.read(key) is not None:
                raise PreconditionFailed(key)
            self.write(key, data)
        return md5_etag(data)

    def replace(self, key: str, data: bytes, etag: str) -> str:
        with self._locked():
            cur = self.read(key)
            if cur is None or cur[1].strip('"') != etag.strip('"'):
                raise PreconditionFailed(key)
            self.write(key, data)
        return md5_etag(data)

    def delete_if_match(self, key: str, etag: str) -> None:
        with self._locked():
            cur = self.read(key)
            if cur is None or cur[1].strip('"') != etag.strip('"'):
                raise PreconditionFailed(key)
            self.delete(key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
            fsync_dir(path.parent)
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> Iterator[Entry]:
        base = self.root.joinpath(*[p for p in prefix.split("/") if p])
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                p = Path(dirpath) / name
                try:
                    st = p.stat()
                    # refs get their real etag; objects are listed for presence and size only
                    etag = "" if key.startswith("objects/") else md5_etag(p.read_bytes())
                except FileNotFoundError:
                    continue
                yield Entry(key, st.st_size, etag)

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def present(self, keys: Sequence[str], workers: int = 8, listed_hint: int = 0,
                total_hint: int = 0) -> dict[str, int]:
        # one stat each: cheaper than a thread pool or walking the folders
        out = {}
        for k in keys:
            n = self.size(k)
            if n is not None:
                out[k] = n
        return out


# ---------------------------------------------------------------------------------------- S3

_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
           "ExpiredToken", "TokenRefreshRequired", "AuthorizationHeaderMalformed", "403"}
_CRED_HINT = ("check the credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile in "
              "AWS_PROFILE (lin reads them from the usual AWS chain and never stores them)")


class _Absent(Exception):
    """A key that is not there (S3Backend's read and size answer None)."""


def _error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError ("" for anything else)."""
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


class S3Backend(Backend):
    """A remote under ``s3://bucket/prefix`` on AWS S3 or any S3-compatible server."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, workers: int = 8):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.workers = workers
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client = None
        self._lock = threading.Lock()

    # -- plumbing

    @property
    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self):
        # botocore directly (boto3's import costs ~0.1 s more); the same credential chain
        try:
            import botocore.session
            from botocore.config import Config
        except ImportError:
            raise RemoteError("S3 remotes need boto3", hint="pip install 'lineagestore[s3]'") from None
        endpoint = self.endpoint_url or read_env("AWS_ENDPOINT_URL_S3") or read_env("AWS_ENDPOINT_URL")
        attempts = env_int("AWS_MAX_ATTEMPTS", 4, low=1)
        cfg = Config(retries={"mode": "standard", "max_attempts": attempts},
                     max_pool_connections=max(10, self.workers * 3), connect_timeout=10, read_timeout=120,
                     s3={"addressing_style": "path"} if endpoint else {}, user_agent_appid="lineagestore")
        session = botocore.session.get_session()
        return session.create_client("s3", endpoint_url=self.endpoint_url, region_name=self.region, config=cfg)

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _where(self) -> str:
        ep = self.endpoint_url or read_env("AWS_ENDPOINT_URL_S3") or read_env("AWS_ENDPOINT_URL")
        return (self.label or self.url) + (f" at {ep}" if ep else "")

    def _error(self, exc: BaseException, op: str, key: str = "") -> BaseException:
        """A botocore exception as one clear RemoteError (or the PreconditionFailed signal)."""
        from botocore import exceptions as bex
        what = f"{op} {key}".strip()
        if isinstance(exc, bex.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (412, 409):
                return PreconditionFailed(key)
            if code in _DENIED or status == 403:
                return RemoteError(f"{self._where()}: access denied ({code or status}) on {what}",
                                   hint=_CRED_HINT)
            if code == "NoSuchBucket":
                return RemoteError(f"{self._where()}: bucket {self.bucket!r} does not exist",
                                   hint="create the bucket first, or fix the remote URL (`lin remote ls`)")
            msg = err.get("Message") or str(exc)
            return RemoteError(f"{self._where()}: {what} failed: {code or status} {msg}")
        if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError)):
            return RemoteError(f"{self._where()}: no AWS credentials found", hint=_CRED_HINT)
        if isinstance(exc, bex.EndpointConnectionError):
            return RemoteError(f"{self._where()}: cannot connect ({exc})",
                               hint="is the server running and the endpoint right? Run the command again "
                                    "when it is: a push resumes where it stopped")
        if isinstance(exc, (bex.BotoCoreError, ConnectionError, OSError)):
            return RemoteError(f"{self._where()}: {what} failed: {exc}",
                               hint="run the command again: a push resumes where it stopped")
        return exc  # not ours to translate

    @contextmanager
    def _errors(self, op: str, key: str, absent: BaseException | type | None = None) -> Iterator[None]:
        """botocore errors in the block as one clear RemoteError (see :meth:`_error`); with
        ``absent``, a missing key (NoSuchKey, 404) raises that instead."""
        try:
            yield
        except Exception as e:  # noqa: BLE001 - translated below
            if absent is not None and _error_code(e) in ("NoSuchKey", "404", "NotFound"):
                raise absent from e
            err = self._error(e, op, key)
            if err is e:
                raise
            raise err from e

    def _call(self, op: str, key: str, fn, **kw):
        with self._errors(op, key):
            return fn(Bucket=self.bucket, **kw)

    # -- the interface

    def read(self, key: str) -> tuple[bytes, str] | None:
        try:
            with self._errors("read", key, absent=_Absent):
                r = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
                data = r["Body"].read()
        except _Absent:
            return None
        return data, r.get("ETag", "")

    def read_head(self, key: str, n: int) -> bytes | None:
        try:
            with self._errors("read", key, absent=_Absent):
                r = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=f"bytes=0-{max(n, 1) - 1}")
                data: bytes = r["Body"].read()
        except _Absent:
            return None
        return data[:n]

    def write(self, key: str, data: bytes | memoryview, on_bytes: Callable[[int], None] | None = None) -> None:
        full = self._key(key)
        if len(data) <= MULTIPART_THRESHOLD:
            self._call("write", key, self.client.put_object, Key=full, Body=bytes(data))
            if on_bytes:
                on_bytes(len(data))
            return
        from s3transfer.manager import TransferConfig, TransferManager
        from s3transfer.subscribers import BaseSubscriber

        class Progress(BaseSubscriber):
            def on_progress(self, future, bytes_transferred, **kwargs):
                if on_bytes:
                    on_bytes(bytes_transferred)

        cfg = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNK,
                             max_request_concurrency=4)
        with self._errors("write", key):  # s3transfer raises botocore's own errors
            with TransferManager(self.client, cfg) as tm:  # what boto3's upload_fileobj does
                tm.upload(io.BytesIO(data), self.bucket, full, subscribers=[Progress()]).result()

    def create(self, key: str, data: bytes) -> str:
        r = self._call("create", key, self.client.put_object, Key=self._key(key), Body=data, IfNoneMatch="*")
        return r.get("ETag", "")

    def replace(self, key: str, data: bytes, etag: str) -> str:
        # AWS answers If-Match on an absent key with 404: for us, the condition failed
        with self._errors("replace", key, absent=PreconditionFailed(key)):
            r = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfMatch=etag)
        return r.get("ETag", "")

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object, Key=self._key(key))

    def delete_if_match(self, key: str, etag: str) -> None:
        with self._errors("delete", key, absent=PreconditionFailed(key)):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key), IfMatch=etag)

    def list(self, prefix: str) -> Iterator[Entry]:
        full = self._key(prefix.rstrip("/")) + "/" if prefix else (self.prefix + "/" if self.prefix else "")
        cut = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors("list", prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for o in page.get("Contents", []):
                    yield Entry(o["Key"][cut:], int(o["Size"]), o.get("ETag", ""))

    def size(self, key: str) -> int | None:
        try:
            with self._errors("head", key, absent=_Absent):
                r = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except _Absent:
            return None
        return int(r["ContentLength"])

    def present(self, keys: Sequence[str], workers: int = 8, listed_hint: int = 0,
                total_hint: int = 0) -> dict[str, int]:
        """HEAD each key in parallel, list the folders the keys are in (ListObjectsV2, one folder
        per thread), or list their common prefix once, whichever :func:`check_plan` says costs
        least for that many keys in remotes that size."""
        keys = list(dict.fromkeys(keys))
        folders = sorted({k.rpartition("/")[0] for k in keys})
        plan = check_plan(len(keys), len(folders), listed_hint, total_hint) if keys else "head"
        if plan == "head":
            return _sizes_by_head(self, keys, workers)
        wanted = set(keys)

        def listed(folder: str) -> list[tuple[str, int]]:
            return [(e.key, e.size) for e in self.list(folder + "/" if folder else "") if e.key in wanted]

        if plan == "prefix":
            common = os.path.commonprefix([f + "/" for f in folders])
            return dict(listed(common.rpartition("/")[0]))
        out: dict[str, int] = {}
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="lin-list") as pool:
            for pairs in pool.map(listed, folders):
                out.update(pairs)
        return out

