"""S3 specifics against the real test server: credentials, servers that ignore conditional
writes, multipart uploads of large objects; and the backend contract for S3 and folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_model_dir, write_safetensors

from lineagestore.api import Repo
from lineagestore.core.errors import InvalidInput, RemoteError
from lineagestore.remote import backend as be
from lineagestore.remote.backend import FolderBackend, PreconditionFailed, S3Backend, md5_etag
from lineagestore.remote.spec import normalize_url
from lineagestore.remote.sync import push


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ backend contract


@pytest.fixture(params=["s3", "folder"])
def backend(request, tmp_path):
    if request.param == "s3":
        loc = request.getfixturevalue("s3_bucket_url")
        return S3Backend(loc.bucket, loc.prefix, endpoint_url=loc.endpoint_url)
    return FolderBackend(tmp_path / "remote")


def test_backend_contract(backend):
    assert backend.read("refs/heads/main") is None and backend.size("objects/ab/cd") is None
    assert list(backend.list("refs/")) == []
    etag = backend.create("refs/heads/main", b"one\n")
    with pytest.raises(PreconditionFailed):
        backend.create("refs/heads/main", b"two\n")
    data, got = backend.read("refs/heads/main")
    assert data == b"one\n" and got.strip('"') == etag.strip('"') == md5_etag(b"one\n").strip('"')
    with pytest.raises(PreconditionFailed):
        backend.replace("refs/heads/main", b"three\n", md5_etag(b"stale\n"))
    with pytest.raises(PreconditionFailed):
        backend.replace("refs/heads/absent", b"x\n", etag)
    new = backend.replace("refs/heads/main", b"two\n", etag)
    assert backend.read("refs/heads/main") == (b"two\n", new)
    with pytest.raises(PreconditionFailed):
        backend.replace("refs/heads/main", b"four\n", etag)  # the etag we started from is stale now
    big = bytes(range(256)) * (be.MULTIPART_THRESHOLD // 256 + 4096)  # multipart on S3
    seen = []
    backend.write("objects/ab/" + "c" * 62, big, on_bytes=seen.append)
    assert sum(seen) == len(big) and backend.read("objects/ab/" + "c" * 62)[0] == big
    assert backend.size("objects/ab/" + "c" * 62) == len(big)
    listed = {e.key: e for e in backend.list("refs/")}
    assert list(listed) == ["refs/heads/main"] and listed["refs/heads/main"].etag == md5_etag(b"two\n")
    assert [e.key for e in backend.list("objects/ab/")] == ["objects/ab/" + "c" * 62]
    with pytest.raises(PreconditionFailed):
        backend.delete_if_match("refs/heads/main", etag)
    backend.delete_if_match("refs/heads/main", new)
    assert backend.read("refs/heads/main") is None
    assert backend.probe_conditional_writes() is True
    assert not [e for e in backend.list("probe/")]
    with pytest.raises(InvalidInput):
        backend.read("../escape")


@pytest.mark.parametrize("way", ["head", "folders", "prefix"])
def test_present_asks_the_remote(backend, monkeypatch, way):
    """One batched existence check: HEAD requests, listings of the keys' folders or one of their
    common prefix (S3, chosen by cost), stat on folders; the same answer every way, and nothing
    remembered between calls."""
    keys = [f"objects/{i:02x}/" + f"{j:x}" * 62 for i in range(0, 256, 37) for j in range(3)]
    there = {k: 20 + n for n, k in enumerate(keys) if n % 3 != 1}
    for k, n in there.items():
        backend.write(k, b"x" * n)
    backend.write("objects/00/" + "e" * 62, b"a neighbour nobody asked about")
    backend.write("refs/heads/main", b"not an object\n")
    monkeypatch.setattr(be, "check_plan", lambda *a: way)
    calls = {"size": 0, "list": 0}
    for name in calls:
        real = getattr(type(backend), name)

        def counted(self, *a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(self, *a, **k)
        monkeypatch.setattr(type(backend), name, counted)
    assert backend.present(keys, workers=4) == there
    if isinstance(backend, S3Backend):
        assert calls == {"head": {"size": len(keys), "list": 0}, "folders": {"size": 0, "list": 7},
                         "prefix": {"size": 0, "list": 1}}[way]
    backend.delete(keys[0])
    assert keys[0] not in backend.present(keys, workers=4)
    assert backend.present(keys[3:4]) == {keys[3]: there[keys[3]]}
    assert backend.present([]) == {}


def test_the_cheapest_check_is_chosen():
    """The choice follows the costs measured on SeaweedFS (docs/remotes.md, the measured times in
    the comments): a few ids on a big remote are HEADed; most of a small remote, or a big part of
    a big one, is listed in one go."""
    def plan(keys: int, folders: int, remote: int) -> str:
        return be.check_plan(keys, folders, remote * folders // 256, remote)
    assert plan(64, 52, 2000) == "head"  # HEAD 0.08 s, folders 0.14 s
    assert plan(256, 156, 2000) == "prefix"  # HEAD 0.33 s, folders 0.32 s, prefix (2,000 keys) 0.19 s
    assert plan(1024, 250, 2000) == "prefix"  # HEAD 1.39 s, folders 0.55 s
    assert plan(256, 171, 20000) == "head"  # HEAD 0.35 s, folders 1.28 s
    assert plan(1024, 254, 20000) == "head"  # HEAD 1.29 s, folders 1.90 s, prefix (20,000 keys) 1.72 s
    assert plan(4096, 256, 20000) == "prefix"  # HEAD 5.43 s, folders 2.28 s
    assert plan(8, 8, 0) == "head"
    assert plan(50_000, 256, 1_000_000) == "head"
    assert plan(200_000, 256, 1_000_000) == "folders"  # pages read in parallel beat one long listing


def test_remote_urls_are_checked():
    assert normalize_url("s3://bucket/a//b/") == "s3://bucket/a/b"
    assert normalize_url("s3://bucket") == "s3://bucket"
    assert normalize_url("file:///mnt/disk2/x") == "/mnt/disk2/x"
    assert normalize_url("rel/dir", Path("/base")) == "/base/rel/dir"
    for bad in ("s3://KEY:SECRET@bucket/x", "s3://Bad_Bucket!/x", "gs://bucket/x", "s3://bucket/../x", ""):
        with pytest.raises(InvalidInput):
            normalize_url(bad)


def test_remote_add_ls_rm_never_store_credentials(store_dir, lin, s3_bucket_url):
    code, out, err = lin("remote", "add", "origin", s3_bucket_url.url, "--endpoint-url",
                         s3_bucket_url.endpoint_url, "--region", "us-east-1", "--backup")
    assert code == 0, err
    for args, code, line in (
            (("origin", "/tmp/x"), 6, "remote 'origin' already exists"),
            (("two", "s3://bucket/p", "--endpoint-url", "http://user:pw@host:9000"), 4,
             "endpoint URL 'http://user:pw@host:9000': credentials are not allowed in it"),
            (("three", "https://example.com/bucket"), 4, "remote URL 'https://example.com/bucket': unsupported scheme")):
        got = lin("remote", "add", *args)
        assert (got[0], got[2].splitlines()[0]) == (code, f"error: {line}"), got
    code, out, _ = lin("remote", "ls", "--json")
    assert json.loads(out) == [{"name": "origin", "url": s3_bucket_url.url, "endpoint_url": s3_bucket_url.endpoint_url,
                                "region": "us-east-1", "kind": "s3", "backup": True}]
    text = (store_dir / ".lineage/config.toml").read_text()
    assert s3_bucket_url.secret_key not in text and s3_bucket_url.access_key not in text
    assert "[remote.origin]" in text and 'remote = "origin"' in text
    make_model_dir(store_dir / "m")
    assert lin("import", store_dir / "m", "--name", "base")[0] == 0
    repo = Repo.open(store_dir / ".lineage")
    assert repo.refs.read("refs/remotes/origin/tags/v001_base") == repo.head()  # backed up on import
    code, out, _ = lin("remote", "rm", "origin")
    assert code == 0 and "untouched" in out
    repo = Repo.open(store_dir / ".lineage")
    assert repo.refs.names("refs/remotes/") == [] and not repo.config.get("backup.remote")
    code, _, err = lin("remote", "rm", "origin")
    assert code == 3 and err.startswith("error: no remote named 'origin' (remotes: none)\n"), err


# ------------------------------------------------------------------------------ S3 behaviour


def test_wrong_credentials_give_a_clear_error(s3_bucket_url, tmp_path, lin, monkeypatch):
    make_model_dir(tmp_path / "m")
    repo = Repo.init(tmp_path / "a/.lineage")
    repo.import_model(tmp_path / "m", "base")
    st = ["--store", tmp_path / "a/.lineage"]
    assert lin(*st, "remote", "add", "origin", s3_bucket_url.url, "--endpoint-url", s3_bucket_url.endpoint_url)[0] == 0
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    code, _, err = lin(*st, "push")
    assert code == 11
    assert "remote origin" in err and "access denied (SignatureDoesNotMatch)" in err and "AWS_ACCESS_KEY_ID" in err
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    code, _, err = lin("clone", s3_bucket_url.url, tmp_path / "b", "--endpoint-url", s3_bucket_url.endpoint_url)
    assert code == 11 and "InvalidAccessKeyId" in err
    assert not (tmp_path / "b").exists()  # a failed clone leaves nothing behind
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, _, err = lin(*st, "push")
    assert code == 11 and ("no AWS credentials" in err or "access denied" in err)


def test_server_ignoring_conditional_writes_is_refused(s3_bucket_url, tmp_path, monkeypatch):
    make_model_dir(tmp_path / "m")
    repo = Repo.init(tmp_path / "a/.lineage")
    repo.import_model(tmp_path / "m", "base")
    from lineagestore.remote import session
    from lineagestore.remote.spec import add_remote
    add_remote(repo, "origin", s3_bucket_url.url + "/careless", endpoint_url=s3_bucket_url.endpoint_url)
    real = S3Backend._make_client

    def careless_client(self):  # a proxy that drops If-None-Match / If-Match before signing
        client = real(self)

        def drop(request, **_):
            for h in ("If-None-Match", "If-Match"):
                if h in request.headers:
                    del request.headers[h]
        client.meta.events.register("before-sign.s3.PutObject", drop)
        return client

    monkeypatch.setattr(S3Backend, "_make_client", careless_client)
    monkeypatch.setattr(session, "_PROBED", {})
    with pytest.raises(RemoteError) as e:
        push(repo, "origin")
    assert "ignores conditional writes" in str(e.value) and "refuses to update refs" in str(e.value)
    keys = [o["Key"] for o in s3_bucket_url.client().list_objects_v2(
        Bucket=s3_bucket_url.bucket, Prefix=s3_bucket_url.prefix + "/careless/").get("Contents", [])]
    assert not [k for k in keys if "/refs/" in k or "/objects/" in k]  # refused before any upload
    monkeypatch.setattr(S3Backend, "_make_client", real)
    monkeypatch.setattr(session, "_PROBED", {})
    res = push(repo, "origin")  # every object of the store travels: none was uploaded before
    assert res.objects_sent == len(list(repo.objects.iter_ids())) and not res.rejected


def test_large_tensors_go_multipart_and_clone_byte_exact(s3_bucket_url, tmp_path, lin):
    src = tmp_path / "m"
    src.mkdir()
    rng = np.random.default_rng(5)
    big = rng.standard_normal(3 * 1024 * 1024).astype(np.float32).tobytes()  # 12 MiB, incompressible
    write_safetensors(src / "model.safetensors", {"w": ("F32", [3 * 1024 * 1024], big)})
    (src / "config.json").write_text("{}")
    repo = Repo.init(tmp_path / "a/.lineage")
    repo.import_model(src, "big")
    from lineagestore.remote.spec import add_remote
    add_remote(repo, "origin", s3_bucket_url.url, endpoint_url=s3_bucket_url.endpoint_url)
    calls = []
    real = S3Backend.write

    def spy(self, key, data, on_bytes=None):
        calls.append(len(data))
        return real(self, key, data, on_bytes)

    S3Backend.write = spy
    try:
        res = push(repo, "origin")
    finally:
        S3Backend.write = real
    assert max(calls) > be.MULTIPART_THRESHOLD and res.raw_bytes_sent >= len(big)
    head = s3_bucket_url.client().head_object(Bucket=s3_bucket_url.bucket,
                                              Key=s3_bucket_url.key(f"objects/{_largest(repo)[:2]}/{_largest(repo)[2:]}"))
    assert head["ETag"].strip('"').endswith("-2")  # two 8 MiB parts
    code, _, err = lin("clone", s3_bucket_url.url, tmp_path / "b", "--endpoint-url", s3_bucket_url.endpoint_url)
    assert code == 0, err
    assert files(tmp_path / "b/model") == files(src)


def _largest(repo: Repo) -> str:
    return max(repo.objects.iter_ids(), key=repo.objects.stored_size)
