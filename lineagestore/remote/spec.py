"""Named remotes in ``config.toml``: ``[remote.NAME]`` with ``url``, ``endpoint_url``, ``region``
(typed and checked with the other settings, ``repo.settings.remotes``).

Only where the remote is gets stored, never how to log in: credentials come from the usual AWS
chain (environment, ``AWS_PROFILE``, instance role) at the moment a command runs. A URL or
endpoint that carries credentials (``https://key:secret@host``) is refused rather than stored.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..core.errors import InvalidInput, NotFound
from ..core.names import check_name
from ..core.repo import Repo
from ..core.settings import check_endpoint
from .backend import Backend, FolderBackend, S3Backend

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$")
DEFAULT_NAME = "origin"


@dataclass(frozen=True)
class RemoteSpec:
    name: str
    url: str  # s3://bucket/prefix or an absolute folder path
    endpoint_url: str | None = None
    region: str | None = None

    @property
    def kind(self) -> str:
        return "s3" if self.url.startswith("s3://") else "folder"

    def to_config(self) -> dict:
        return {k: v for k, v in (("url", self.url), ("endpoint_url", self.endpoint_url),
                                  ("region", self.region)) if v}

    def to_dict(self) -> dict:
        return {**asdict(self), "kind": self.kind}


def normalize_url(url: str, base: Path | None = None) -> str:
    """``s3://bucket/prefix`` (prefix without slashes at the ends) or an absolute folder path."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("remote URL is empty")
    url = url.strip()
    if url.startswith("s3://"):
        parts = urlsplit(url)
        if "@" in parts.netloc or parts.query or parts.fragment:
            raise InvalidInput(f"remote URL {url!r}: credentials, queries and fragments are not allowed",
                               hint="give s3://bucket/prefix; credentials come from the AWS environment or profile")
        bucket = parts.netloc
        if not _BUCKET_RE.match(bucket):
            raise InvalidInput(f"remote URL {url!r}: {bucket!r} is not a valid bucket name")
        segs = [s for s in parts.path.split("/") if s]
        for s in segs:
            if s in (".", "..") or any(ord(c) < 32 for c in s):
                raise InvalidInput(f"remote URL {url!r}: invalid prefix segment {s!r}")
        return f"s3://{bucket}/{'/'.join(segs)}" if segs else f"s3://{bucket}"
    if url.lower().startswith("file://"):
        parts = urlsplit(url)
        if parts.netloc.lower() not in ("", "localhost") or parts.query or parts.fragment or not parts.path:
            raise InvalidInput(f"remote URL {url!r}: a file URL names a folder on this machine",
                               hint="give file:///absolute/path, or the folder path itself")
        url = unquote(parts.path)
    elif "://" in url:
        raise InvalidInput(f"remote URL {url!r}: unsupported scheme",
                           hint="use s3://bucket/prefix (AWS S3, MinIO, Ceph, SeaweedFS, R2) or a folder path")
    p = Path(url).expanduser()
    if not p.is_absolute():
        p = (base or Path(os.getcwd())) / p
    return os.path.normpath(str(p))


def list_remotes(repo: Repo) -> list[RemoteSpec]:
    """The remotes of ``config.toml``, their URLs read as ``lin remote add`` reads them (a
    hand-typed ``file:///path`` or relative folder included)."""
    return [RemoteSpec(name, _configured_url(repo, name, r.url), r.endpoint_url or None, r.region or None)
            for name, r in sorted(repo.settings.remotes.items())]


def _configured_url(repo: Repo, name: str, url: str) -> str:
    """``url`` of ``[remote.NAME]`` normalized; one line naming config.toml if it cannot be."""
    try:
        return normalize_url(url, repo.root if repo.path else None)
    except InvalidInput as e:
        where = repo.path / "config.toml" if repo.path else "config.toml"
        raise InvalidInput(f"{where}: [remote.{name}] {e}", hint=e.hint) from None


def get_remote(repo: Repo, name: str) -> RemoteSpec:
    for r in list_remotes(repo):
        if r.name == name:
            return r
    known = ", ".join(r.name for r in list_remotes(repo)) or "none"
    raise NotFound(f"no remote named {name!r} (remotes: {known})", hint="add one with `lin remote add NAME URL`")


def default_remote(repo: Repo) -> str:
    """The remote a command uses when none is named: the backup remote, the only one, or origin."""
    remotes = list_remotes(repo)
    backup = repo.settings.backup.remote
    if backup and any(r.name == backup for r in remotes):
        return backup
    if len(remotes) == 1:
        return remotes[0].name
    if any(r.name == DEFAULT_NAME for r in remotes):
        return DEFAULT_NAME
    if not remotes:
        raise NotFound("this store has no remotes", hint="add one with `lin remote add NAME URL`")
    raise InvalidInput(f"several remotes ({', '.join(r.name for r in remotes)}): name the one to use")


def add_remote(repo: Repo, name: str, url: str, *, endpoint_url: str | None = None,
               region: str | None = None, backup: bool = False) -> RemoteSpec:
    check_name(name, "remote name")
    if any(r.name == name for r in list_remotes(repo)):
        from ..core.errors import RefConflict
        raise RefConflict(f"remote {name!r} already exists", hint=f"remove it first: lin remote rm {name}")
    url = normalize_url(url, repo.root if repo.path else None)
    if repo.path is not None and not url.startswith("s3://"):
        p = Path(url)
        if p == repo.path or repo.path in p.parents:
            raise InvalidInput(f"{url}: a remote folder cannot be inside the store")
    spec = RemoteSpec(name, url, check_endpoint(endpoint_url), region or None)
    if spec.kind == "folder" and spec.endpoint_url:
        raise InvalidInput("--endpoint-url applies to s3:// remotes only")
    repo.config.set(f"remote.{name}", spec.to_config())
    if backup:
        repo.config.set("backup.remote", name)
    if repo.path is not None:
        repo.save_config()
    return spec


def remove_remote(repo: Repo, name: str) -> RemoteSpec:
    spec = get_remote(repo, name)
    repo.config.set(f"remote.{name}", None)
    if repo.settings.backup.remote == name:
        repo.config.set("backup.remote", None)
    if repo.path is not None:
        repo.save_config()
    return spec


def open_backend(spec: RemoteSpec, workers: int = 8) -> Backend:
    backend: Backend
    if spec.kind == "s3":
        rest = spec.url[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        backend = S3Backend(bucket, prefix, endpoint_url=spec.endpoint_url, region=spec.region, workers=workers)
    else:
        backend = FolderBackend(Path(spec.url), spec.url)
    backend.label = f"remote {spec.name} ({spec.url})"
    return backend
