"""The S3 behaviours lineagestore relies on, checked against the test server (SeaweedFS)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import ClientError
from s3server import S3Server, weed_or_skip

if TYPE_CHECKING:  # importing the plugin module here would defeat pytest's assert rewriting
    from conftest_s3 import S3Prefix

pytest_plugins = ["conftest_s3"]  # harmless if tests/conftest.py lists it too


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    resp = exc.value.response
    return resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"]


def test_conditional_create_refused_when_key_exists(s3_bucket_url: S3Prefix) -> None:
    s3, b, key = s3_bucket_url.client(), s3_bucket_url.bucket, s3_bucket_url.key("ref")
    s3.put_object(Bucket=b, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=b, Key=key, Body=b"second", IfNoneMatch="*")
    assert _error(exc) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=b, Key=key)["Body"].read() == b"first"


def test_conditional_create_is_atomic(s3_bucket_url: S3Prefix) -> None:
    s3, b, key = s3_bucket_url.client(max_pool_connections=8), s3_bucket_url.bucket, s3_bucket_url.key("lock")
    barrier = threading.Barrier(6)
    results: list[str] = [""] * 6

    def create(i: int) -> None:
        barrier.wait()
        try:
            s3.put_object(Bucket=b, Key=key, Body=str(i).encode(), IfNoneMatch="*")
            results[i] = "ok"
        except ClientError as e:
            results[i] = e.response["Error"]["Code"]

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["PreconditionFailed"] * 5 + ["ok"]
    assert s3.get_object(Bucket=b, Key=key)["Body"].read() == str(results.index("ok")).encode()


def test_if_match_compare_and_swap(s3_bucket_url: S3Prefix) -> None:
    s3, b, key = s3_bucket_url.client(), s3_bucket_url.bucket, s3_bucket_url.key("head")
    etag = s3.put_object(Bucket=b, Key=key, Body=b"v1")["ETag"]
    assert s3.head_object(Bucket=b, Key=key)["ETag"] == etag == f'"{hashlib.md5(b"v1").hexdigest()}"'
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=b, Key=key, Body=b"bad", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert _error(exc) == (412, "PreconditionFailed")
    new = s3.put_object(Bucket=b, Key=key, Body=b"v2", IfMatch=etag)["ETag"]
    with pytest.raises(ClientError) as exc:  # stale etag loses
        s3.put_object(Bucket=b, Key=key, Body=b"v3", IfMatch=etag)
    assert _error(exc) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=b, Key=key)["ETag"] == new


def test_wrong_credentials_refused(s3_bucket_url: S3Prefix) -> None:
    srv, b, key = s3_bucket_url.server, s3_bucket_url.bucket, s3_bucket_url.key("x")
    with pytest.raises(ClientError) as exc:
        srv.client(secret_key="wrong-secret").put_object(Bucket=b, Key=key, Body=b"x")
    assert _error(exc) == (403, "SignatureDoesNotMatch")
    with pytest.raises(ClientError) as exc:
        srv.client(access_key="nobody").get_object(Bucket=b, Key=key)
    assert _error(exc) == (403, "InvalidAccessKeyId")


def test_multipart_copy_and_prefix_listing(s3_bucket_url: S3Prefix) -> None:
    s3, b, p = s3_bucket_url.client(), s3_bucket_url.bucket, s3_bucket_url
    parts_data = [b"a" * (5 * 1024 * 1024), b"b" * 10]
    up = s3.create_multipart_upload(Bucket=b, Key=p.key("big"))["UploadId"]
    parts = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=b, Key=p.key("big"), UploadId=up,
                                                      PartNumber=n, Body=d)["ETag"]}
             for n, d in enumerate(parts_data, 1)]
    etag = s3.complete_multipart_upload(Bucket=b, Key=p.key("big"), UploadId=up,
                                        MultipartUpload={"Parts": parts})["ETag"]
    digest = hashlib.md5(b"".join(hashlib.md5(d).digest() for d in parts_data)).hexdigest()
    assert etag == f'"{digest}-2"' == s3.head_object(Bucket=b, Key=p.key("big"))["ETag"]
    s3.copy_object(Bucket=b, Key=p.key("sub/copy"), CopySource={"Bucket": b, "Key": p.key("big")})
    assert s3.head_object(Bucket=b, Key=p.key("sub/copy"))["ContentLength"] == 5 * 1024 * 1024 + 10
    listed = s3.list_objects_v2(Bucket=b, Prefix=p.prefix + "/")
    assert [o["Key"] for o in listed["Contents"]] == [p.key("big"), p.key("sub/copy")]
    top = s3.list_objects_v2(Bucket=b, Prefix=p.prefix + "/", Delimiter="/")
    assert [c["Prefix"] for c in top["CommonPrefixes"]] == [p.key("sub/")]


def test_fixture_env_points_boto3_at_server(s3_bucket_url: S3Prefix) -> None:
    import boto3

    assert s3_bucket_url.url == f"s3://{s3_bucket_url.bucket}/{s3_bucket_url.prefix}"
    s3 = boto3.client("s3")  # endpoint, region and credentials from the AWS_* env only
    s3.put_object(Bucket=s3_bucket_url.bucket, Key=s3_bucket_url.key("env"), Body=b"ok")
    assert s3_bucket_url.client().get_object(Bucket=s3_bucket_url.bucket,
                                             Key=s3_bucket_url.key("env"))["Body"].read() == b"ok"


def test_data_survives_kill_and_restart(tmp_path: Path) -> None:
    with S3Server(weed_or_skip()) as srv:
        srv.start(tmp_path / "data", bucket="crash")
        s3 = srv.client()
        s3.put_object(Bucket="crash", Key="k", Body=b"durable", IfNoneMatch="*")
        url, pid = srv.endpoint_url, srv.pid
        srv.kill()
        srv.restart()
        assert srv.endpoint_url == url and srv.pid != pid
        assert s3.get_object(Bucket="crash", Key="k")["Body"].read() == b"durable"
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket="crash", Key="k", Body=b"again", IfNoneMatch="*")
        assert _error(exc) == (412, "PreconditionFailed")
