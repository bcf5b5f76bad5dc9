"""Remotes end to end, each test on a real S3 server (SeaweedFS) and on a folder remote.

push then clone (byte-exact), two clones pushing at the same time (one wins, the other gets a
clear conflict and loses nothing), a push interrupted (server killed / writes failing) that
resumes with nothing partial visible to a clone, automatic backup and its failure, recovery
after ``rm -rf .lineage``, ``fsck --repair``, ``verify --remote``.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import make_model_dir

from lineagestore.api import Repo
from lineagestore.core.errors import RemoteError
from lineagestore.remote.backend import FolderBackend
from lineagestore.remote.sync import PushRejected, object_key, push


@dataclass
class Remote:
    kind: str
    url: str
    endpoint: str | None = None
    root: Path | None = None  # folder remotes
    loc: object = None  # S3Prefix for s3 remotes

    def add_args(self) -> list[str]:
        return [self.url] + (["--endpoint-url", self.endpoint] if self.endpoint else [])

    def keys(self, prefix: str = "") -> list[str]:
        if self.kind == "folder":
            base = self.root
            return sorted(p.relative_to(base).as_posix() for p in base.rglob("*")
                          if p.is_file() and not p.name.startswith(".") and ".tmp" not in p.parts
                          and p.relative_to(base).as_posix().startswith(prefix))
        s3 = self.loc.client()
        out, token = [], None
        while True:
            kw = {"ContinuationToken": token} if token else {}
            r = s3.list_objects_v2(Bucket=self.loc.bucket, Prefix=self.loc.prefix + "/" + prefix, **kw)
            out += [o["Key"][len(self.loc.prefix) + 1:] for o in r.get("Contents", [])]
            token = r.get("NextContinuationToken")
            if not token:
                return sorted(out)

    def delete(self, key: str) -> None:
        if self.kind == "folder":
            (self.root / key).unlink()
        else:
            self.loc.client().delete_object(Bucket=self.loc.bucket, Key=self.loc.key(key))

    def put(self, key: str, data: bytes) -> None:
        if self.kind == "folder":
            (self.root / key).write_bytes(data)
        else:
            self.loc.client().put_object(Bucket=self.loc.bucket, Key=self.loc.key(key), Body=data)

    def get(self, key: str) -> bytes:
        if self.kind == "folder":
            return (self.root / key).read_bytes()
        return self.loc.client().get_object(Bucket=self.loc.bucket, Key=self.loc.key(key))["Body"].read()

    def objects(self) -> set[str]:
        return {k[len("objects/"):].replace("/", "") for k in self.keys("objects/")}

    def break_it(self, monkeypatch) -> None:
        """Make the remote unreachable: the disk 'unmounted', or the credentials wrong."""
        if self.kind == "folder":
            self.root.parent.rename(self.root.parent.with_name("unmounted"))
        else:
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")

    def fix_it(self, monkeypatch) -> None:
        if self.kind == "folder":
            self.root.parent.with_name("unmounted").rename(self.root.parent)
        else:
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", self.loc.secret_key)


@pytest.fixture(params=["s3", "folder"])
def remote(request, tmp_path, monkeypatch) -> Remote:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    if request.param == "s3":
        loc = request.getfixturevalue("s3_bucket_url")
        return Remote("s3", loc.url, loc.endpoint_url, loc=loc)
    disk = tmp_path / "disk"
    disk.mkdir()
    return Remote("folder", str(disk / "remote"), root=disk / "remote")


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def new_store(root: Path, models: list[Path], names: list[str] | None = None, compression: str = "auto") -> Repo:
    repo = Repo.init(root / ".lineage")
    if compression != "auto":  # core.compression: which objects are stored raw (remotes keep them so)
        with open(root / ".lineage" / "config.toml", "a") as f:
            f.write(f'\n[core]\ncompression = "{compression}"\n')
        repo = Repo.open(root / ".lineage")
    for i, m in enumerate(models):
        name = (names or [f"m{j}" for j in range(len(models))])[i]
        if i == 0:
            repo.import_model(m, name)
        else:
            repo.commit_folder(m, name)
    return repo


def add_remote(lin, store: Path, remote: Remote, *extra: str) -> None:
    code, _out, err = lin("--store", store / ".lineage", "remote", "add", "origin", *remote.add_args(), *extra)
    assert code == 0, err


@pytest.fixture
def models(tmp_path) -> list[Path]:
    return [make_model_dir(tmp_path / f"src{i}", seed=i) for i in range(4)]


# ------------------------------------------------------------------------------ push, clone


@pytest.mark.parametrize("compression", ["auto", "zstd", "none"])
def test_push_then_clone_is_byte_exact(remote, models, tmp_path, lin, compression):
    new_store(tmp_path / "a", models[:2], ["base", "tuned"], compression)
    add_remote(lin, tmp_path / "a", remote)
    code, out, err = lin("--store", tmp_path / "a/.lineage", "push")
    assert code == 0, err
    assert "new       refs/tags/v002_tuned" in out and "refs/heads/main" in out
    assert {"format", "HEAD", "refs/heads/main", "refs/tags/v001_base", "refs/tags/v002_tuned",
            "versions/001", "versions/002"} <= set(remote.keys())
    # a second push of unchanged versions sends nothing and asks the remote almost nothing
    code, out, _ = lin("--store", tmp_path / "a/.lineage", "push", "--json")
    again = json.loads(out)
    assert code == 0 and again["objects_sent"] == 0 and {u["status"] for u in again["refs"]} == {"up-to-date"}

    code, out, err = lin("clone", *remote.add_args(), tmp_path / "b")
    assert code == 0, err
    assert "2 versions" in out and "Active version: v002_tuned" in out
    assert files(tmp_path / "b/model") == files(models[1])
    b = Repo.open(tmp_path / "b/.lineage")
    assert b.versions() == Repo.open(tmp_path / "a/.lineage").versions()
    assert b.head_branch() == "refs/heads/main"
    b.checkout("v001_base", to=tmp_path / "old", activate=False)
    assert files(tmp_path / "old") == files(models[0])
    assert b.fsck().ok
    assert "origin" in b.config.get("remote") and "secret" not in (tmp_path / "b/.lineage/config.toml").read_text()
    code, out, _ = lin("--store", tmp_path / "b/.lineage", "verify", "--remote", "origin", "--full")
    assert code == 0 and out.strip().endswith("ok"), out


def test_conflicting_pushes_at_the_same_time(remote, models, tmp_path, lin):
    new_store(tmp_path / "a", models[:1], ["base"])
    add_remote(lin, tmp_path / "a", remote)
    assert lin("--store", tmp_path / "a/.lineage", "push")[0] == 0
    clones = {}
    for who, m in (("x", models[1]), ("y", models[2])):
        assert lin("clone", *remote.add_args(), tmp_path / who)[0] == 0
        r = Repo.open(tmp_path / who / ".lineage")
        r.commit_folder(m, f"by_{who}")  # both become v002, both advance main from v001
        clones[who] = r
    before = {w: r.refs.as_dict("refs/heads/") | r.refs.as_dict("refs/tags/") for w, r in clones.items()}

    barrier, results = threading.Barrier(2), {}

    def run(who: str) -> None:
        barrier.wait()
        try:
            results[who] = push(clones[who], "origin")
        except PushRejected as e:
            results[who] = e

    threads = [threading.Thread(target=run, args=(w,)) for w in clones]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [w for w, r in results.items() if not isinstance(r, Exception)]
    assert len(winners) == 1, results
    win, lose = winners[0], ({"x", "y"} - set(winners)).pop()
    err = results[lose]
    win_id = clones[win].versions()[f"v002_by_{win}"]
    assert win_id[:10] in str(err) and "refs/" in str(err), str(err)
    # the loser lost nothing: same names, same ids, a sound store, its model intact
    loser = Repo.open(tmp_path / lose / ".lineage")
    assert loser.refs.as_dict("refs/heads/") | loser.refs.as_dict("refs/tags/") == before[lose]
    assert loser.fsck().ok
    loser.checkout(f"v002_by_{lose}", to=tmp_path / "mine", activate=False)
    assert files(tmp_path / "mine") == files(models[1 if lose == "x" else 2])

    # pushing again is refused at once, naming the refs and the other machine's version
    code, _out, err_text = lin("--store", tmp_path / lose / ".lineage", "push")
    assert code == 6
    assert "refused" in err_text and f"refs/tags/v002_by_{lose}" in err_text and "refs/heads/main" in err_text
    assert f"v002_by_{win}" in err_text and "lin pull" in err_text
    # a plain pull takes nothing that collides, and says why
    code, _out, err_text = lin("--store", tmp_path / lose / ".lineage", "pull")
    assert code == 6 and f"not taken: refs/tags/v002_by_{win}" in err_text and "--renumber" in err_text
    assert "not taken: refs/heads/main: diverged" in err_text
    # the way out: pull --renumber renames the unpushed version after the remote's, then push
    code, out, err_text = lin("--store", tmp_path / lose / ".lineage", "pull", "--renumber")
    assert code == 0, err_text
    assert f"v002_by_{lose} -> v003_by_{lose}" in out
    code, out, err_text = lin("--store", tmp_path / lose / ".lineage", "push")
    assert code == 0, err_text
    code, _, err_text = lin("clone", *remote.add_args(), tmp_path / "all")
    assert code == 0, err_text
    every = Repo.open(tmp_path / "all/.lineage")
    assert set(every.versions()) == {"v001_base", f"v002_by_{win}", f"v003_by_{lose}"}
    every.checkout(f"v003_by_{lose}", to=tmp_path / "theirs", activate=False)
    assert files(tmp_path / "theirs") == files(models[1 if lose == "x" else 2])
    assert every.commit(every.versions()[f"v003_by_{lose}"]).parents == [every.versions()["v001_base"]]


def test_interrupted_push_resumes_and_nothing_partial_is_visible(remote, models, tmp_path, lin, monkeypatch):
    new_store(tmp_path / "a", models[:1], ["base"])
    add_remote(lin, tmp_path / "a", remote)
    a = Repo.open(tmp_path / "a/.lineage")
    push(a, "origin")
    base_objects = remote.objects()
    a.commit_folder(make_model_dir(tmp_path / "big", seed=9, n_layers=12), "big")

    if remote.kind == "s3":  # kill the server once the first object of the push has arrived
        server = remote.loc.server

        class KillAfterFirst:
            def start(self, *a, **k):
                self.done = False

            def advance(self, n=1, **k):
                if not self.done:
                    self.done = True
                    server.kill()

            def finish(self):
                pass

        with pytest.raises(RemoteError):
            push(a, "origin", progress=KillAfterFirst())
        assert not server.running()
        server.restart()
    else:  # the disk fails after 3 objects
        calls = [0]
        real = FolderBackend.write

        def failing(self, key, data, on_bytes=None):
            if key.startswith("objects/"):
                calls[0] += 1
                if calls[0] > 3:
                    raise RemoteError("simulated: the disk went away")
            return real(self, key, data, on_bytes)

        monkeypatch.setattr(FolderBackend, "write", failing)
        with pytest.raises(RemoteError):
            push(a, "origin")
        monkeypatch.setattr(FolderBackend, "write", real)

    arrived = remote.objects() - base_objects
    assert arrived, "the push should have sent something before it was cut"
    # a clone now sees exactly what was there before: nothing of the cut push
    code, _, err = lin("clone", *remote.add_args(), tmp_path / "early")
    assert code == 0, err
    early = Repo.open(tmp_path / "early/.lineage")
    assert list(early.versions()) == ["v001_base"] and early.fsck().ok
    assert files(tmp_path / "early/model") == files(models[0])

    res = push(a, "origin")  # resumes: only what is still missing travels
    new = remote.objects() - base_objects
    assert res.objects_sent == len(new) - len(arrived) and res.objects_sent > 0
    code, _, err = lin("clone", *remote.add_args(), tmp_path / "late")
    assert code == 0, err
    assert files(tmp_path / "late/model") == files(tmp_path / "big")


# ------------------------------------------------------------------------------ backup, recovery


def test_automatic_backup_failure_and_recovery(remote, models, tmp_path, lin, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proj = tmp_path / "proj"
    new_store(proj, models[:1], ["base"])
    st = ["--store", proj / ".lineage"]
    add_remote(lin, proj, remote, "--backup")
    code, out, err = lin(*st, "commit", models[1], "--name", "second")
    assert code == 0 and "backed up to origin" in out, err
    s = json.loads(lin(*st, "status", "--json")[1])["backup"]
    assert s["versions"] == {"v001_base": True, "v002_second": True} and s["pending"] is None
    assert "all 2 versions backed up" in s["summary"]

    remote.break_it(monkeypatch)
    code, out, err = lin(*st, "commit", models[2], "--name", "third")
    assert code == 0, err  # the commit stands
    assert "Committed v003_third" in out and "backup to origin failed" in err and "lin backup" in err
    pending = json.loads((proj / ".lineage/backup/pending").read_text())
    assert pending["remote"] == "origin" and len(pending["commits"]) == 1
    s = json.loads(lin(*st, "status", "--json")[1])["backup"]
    assert s["versions"]["v003_third"] is False and "not yet: v003_third" in s["summary"]
    assert "last backup failed" in lin(*st, "status")[1]
    log = json.loads(lin(*st, "log", "--json")[1])
    assert [(v["name"], v["backed_up"]) for v in log] == [("v003_third", False), ("v002_second", True),
                                                          ("v001_base", True)]
    assert "not backed up" in lin(*st, "log", "--graph")[1]
    code, _, err = lin(*st, "backup")
    assert code == 11 and "origin" in err  # still broken: a clear remote error

    remote.fix_it(monkeypatch)
    code, out, err = lin(*st, "backup")
    assert code == 0 and "all 3 versions backed up" in out, err
    assert not (proj / ".lineage/backup/pending").exists()

    # recovery: the store is gone; a clone into the same folder brings every version back
    work_before = files(proj / "model") if (proj / "model").exists() else None
    shutil.rmtree(proj / ".lineage", onerror=lambda f, p, e: (os.chmod(os.path.dirname(p), 0o755), f(p)))
    code, out, err = lin("clone", *remote.add_args(), proj, "--backup")
    assert code == 0, err
    back = Repo.open(proj / ".lineage")
    assert list(back.versions()) == ["v001_base", "v002_second", "v003_third"]
    for i, name in enumerate(back.versions()):
        back.checkout(name, to=tmp_path / f"v{i}", activate=False)
        assert files(tmp_path / f"v{i}") == files(models[i])
    assert files(proj / "model") == files(models[2])
    if work_before is not None:
        assert work_before == files(models[2])
    assert back.config.get("backup.remote") == "origin" and back.fsck().ok


# ------------------------------------------------------------------------------ push asks the remote


def _closure(repo: Repo, rev: str) -> set[str]:
    from lineagestore.remote.transfer import local_closure
    return set(local_closure(repo, {repo.resolve(rev): rev}, set())[0])


def _claim_in_cache(store: Path, ids: set[str]) -> None:
    """Make the cache of what the remote holds say it holds ``ids`` (and their closures)."""
    cache = next((store / ".lineage/cache/remotes").iterdir())
    for name in ("known", "complete"):
        with open(cache / name, "a") as f:
            f.write("".join(i + "\n" for i in sorted(ids)))


def _ids_of_next_commit(proj: Path, tmp_path: Path, folder: Path) -> set[str]:
    """The ids a commit of ``folder`` on top of ``proj``'s HEAD stores (its commit id aside, which
    holds a time): learnt on a copy of the store, without hooks, so nothing is pushed."""
    from lineagestore.core.repo import Repo as CoreRepo
    from lineagestore.versions.commit import commit_folder
    shutil.copytree(proj / ".lineage", tmp_path / "scratch/.lineage", symlinks=True)
    scratch = CoreRepo.open(tmp_path / "scratch/.lineage")
    old = _closure(scratch, "HEAD")
    res = commit_folder(scratch, folder, "next")
    return _closure(scratch, res.id) - old - {res.id}  # the real commit is made at another time


@pytest.mark.parametrize("damage", ["deleted-on-remote", "cache-claims"])
@pytest.mark.parametrize("how", ["version", "tag", "backup"])
def test_push_asks_the_remote_before_a_ref_moves(remote, models, tmp_path, lin, damage, how):
    """Objects that vanished from the remote behind the cache's back, or that a wrong cache claims
    are there, are found and sent before a ref that reaches them is written: by `lin push` of a
    new version or a tag, and by the automatic backup of a commit."""
    proj = tmp_path / "a"
    a = new_store(proj, models[:1], ["base"])
    st = ["--store", proj / ".lineage"]
    add_remote(lin, proj, remote, *(["--backup"] if how == "backup" else []))
    assert lin(*st, "push")[0] == 0
    lost = next(f["id"] for f in a.show("v001").files if f["path"] == "config.json")
    if damage == "deleted-on-remote":  # the remote lost an object of v001; the cache still lists it
        remote.delete(object_key(lost))
        want = {lost}
    elif how == "tag":
        want = _closure(a, "v001") - {a.resolve("v001")}
        for oid in want:  # every object of v001 but its commit vanished; the cache lists them all
            remote.delete(object_key(oid))
        _claim_in_cache(proj, want)
    else:
        want = _ids_of_next_commit(proj, tmp_path, models[1])
        _claim_in_cache(proj, want)
    if how == "tag":
        assert lin(*st, "tag", "keep", "v001")[0] == 0
        code, out, err = lin(*st, "push", "origin", "keep")
    elif how == "version":
        assert lin(*st, "commit", models[1], "--name", "next")[0] == 0
        code, out, err = lin(*st, "push")
    else:  # the automatic backup of the commit
        code, out, err = lin(*st, "commit", models[1], "--name", "next")
        assert "backed up to origin" in out
    assert code == 0, err
    assert want <= remote.objects()
    code, out, _ = lin(*st, "verify", "--remote", "origin", "--full")
    assert code == 0 and out.strip().endswith("ok"), out
    code, _, err = lin("clone", *remote.add_args(), tmp_path / "b")
    assert code == 0, err
    b = Repo.open(tmp_path / "b/.lineage")
    for i, name in enumerate(Repo.open(proj / ".lineage").versions()):
        b.checkout(name, to=tmp_path / f"v{i}", activate=False)
        assert files(tmp_path / f"v{i}") == files(models[i])
    if how == "tag":
        assert b.refs.read("refs/tags/keep") == a.resolve("v001")


def test_status_says_backed_up_only_for_what_a_push_or_verify_confirmed(remote, models, tmp_path, lin):
    proj = tmp_path / "proj"
    a = new_store(proj, models[:1], ["base"])
    st = ["--store", proj / ".lineage"]
    add_remote(lin, proj, remote, "--backup")
    code, out, err = lin(*st, "commit", models[1], "--name", "second")
    assert code == 0 and "backed up to origin" in out, err
    assert json.loads(lin(*st, "status", "--json")[1])["backup"]["backed_up"] == 2
    tf = next(f for f in a.show("v002").files if f["path"] == "model.safetensors")
    lost = a.objects.get(tf["id"], "tensor-file").entries()[0].id
    remote.delete(object_key(lost))  # behind this store's back: status cannot know yet

    code, out, _ = lin(*st, "verify")
    assert code == 1 and f"missing: object {lost}" in out
    s = json.loads(lin(*st, "status", "--json")[1])["backup"]
    assert s["backed_up"] == 0 and s["versions"] == {"v001_base": False, "v002_second": False}
    assert s["damaged"]["missing"] == [lost] and "damaged" in s["summary"] and "lin backup" in s["summary"]
    assert "damaged" in lin(*st, "status")[1]
    log = json.loads(lin(*st, "log", "--json")[1])
    assert [v["backed_up"] for v in log] == [False, False]
    code, out, _ = lin(*st, "doctor", "--json")
    risks = {f["code"]: f["message"] for f in json.loads(out)["findings"] if f["level"] == "risk"}
    assert code == 1 and "1 object(s) missing or corrupt" in risks["backup-damaged"]
    # a quick verify (presence only) finds the same and says so again
    assert lin(*st, "verify")[0] == 1 and (proj / ".lineage/backup/damaged").exists()

    shutil.rmtree(proj / ".lineage/cache")  # the record is not a cache: it survives this
    code, out, err = lin(*st, "backup", "--json")
    assert code == 0, err
    assert json.loads(out)["push"]["objects_sent"] == 1 and lost in remote.objects()
    s = json.loads(lin(*st, "status", "--json")[1])["backup"]
    assert s["backed_up"] == 2 and s["damaged"] is None and "all 2 versions backed up" in s["summary"]
    assert not (proj / ".lineage/backup/damaged").exists()
    code, out, _ = lin(*st, "verify", "--full")
    assert code == 0, out
    code, out, _ = lin(*st, "doctor", "--json")
    assert not {f["code"] for f in json.loads(out)["findings"]} & {"backup-damaged", "backup-behind"}


def test_a_push_checks_what_it_is_first_to_record_as_backed_up(remote, models, tmp_path, lin):
    """Versions already on the remote that this store has no record of (its tracking refs were
    dropped with `lin remote rm`) are checked before `lin backup` calls them backed up; a remote
    without HEAD gets it."""
    proj = tmp_path / "proj"
    a = new_store(proj, models[:2])
    st = ["--store", proj / ".lineage"]
    add_remote(lin, proj, remote, "--backup")
    assert lin(*st, "backup")[0] == 0
    lost = next(f["id"] for f in a.show("v001").files if f["path"] == "config.json")
    remote.delete(object_key(lost))
    remote.delete("HEAD")  # as a first push killed between writing main and HEAD leaves it
    assert lin(*st, "remote", "rm", "origin")[0] == 0
    add_remote(lin, proj, remote, "--backup")
    assert json.loads(lin(*st, "status", "--json")[1])["backup"]["backed_up"] == 0
    code, out, err = lin(*st, "backup", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert {u["status"] for u in res["push"]["refs"]} == {"up-to-date"} and res["push"]["objects_sent"] == 1
    assert lost in remote.objects() and res["status"]["backed_up"] == 2
    assert remote.get("HEAD") == b"ref: refs/heads/main\n"
    code, out, _ = lin(*st, "verify", "--full")
    assert code == 0, out
    # once recorded, an unchanged push asks nothing of the objects
    code, out, _ = lin(*st, "push", "--json")
    assert code == 0 and json.loads(out)["objects"] == 0


def test_registered_data_answers_the_same_on_a_clone(remote, models, tmp_path, lin):
    """`lin data check` and `lin data manifest` give the clone's answers byte for byte as the
    original's: datasets, their record sets and what each version trained travel with a push."""
    def jsonl(name: str, texts: list[str]) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        return path

    a = jsonl("a.jsonl", [f"a record {i}" for i in range(300)])
    b = jsonl("b.jsonl", [f"b record {i}" for i in range(200)])
    c = jsonl("c.jsonl", [f"a record {i}" for i in range(100, 400)])  # two thirds of it trained
    new_store(tmp_path / "orig", models[:1], ["base"])
    st = ["--store", tmp_path / "orig/.lineage"]
    assert lin(*st, "data", "add", a, b, "--no-tokens")[0] == 0
    assert lin(*st, "commit", models[1], "--name", "tuned", "--data", a)[0] == 0
    add_remote(lin, tmp_path / "orig", remote)
    assert lin(*st, "push")[0] == 0
    code, _, err = lin("clone", *remote.add_args(), tmp_path / "copy")
    assert code == 0, err
    answers = {}
    for who in ("orig", "copy"):
        s = ["--store", tmp_path / who / ".lineage"]
        code, manifest, err = lin(*s, "data", "manifest", "--json")
        assert code == 0, err
        code, check, err = lin(*s, "data", "check", a, b, c, "--json")
        assert code == 0, err
        answers[who] = (manifest, check)
    assert answers["copy"] == answers["orig"]
    seen = {Path(f["path"]).name: f["records_seen"] for f in json.loads(answers["copy"][1])}
    assert seen == {"a.jsonl": 300, "b.jsonl": 0, "c.jsonl": 200}


# ------------------------------------------------------------------------------ repair, verify


@pytest.mark.parametrize("compression", ["auto", "none"])
def test_fsck_repair_and_verify_remote(remote, models, tmp_path, lin, compression):
    new_store(tmp_path / "a", models[:2], compression=compression)
    st = ["--store", tmp_path / "a/.lineage"]
    add_remote(lin, tmp_path / "a", remote)
    a = Repo.open(tmp_path / "a/.lineage")
    assert lin(*st, "push")[0] == 0
    tf = next(f for f in a.show("HEAD").files if f["path"] == "model.safetensors")
    blob = a.objects.get(tf["id"], "tensor-file").entries()[0].id
    cfg = next(f for f in a.show("HEAD").files if f["path"] == "config.json")["id"]
    # damage this store: flip a byte of one object, delete another
    p = a.objects.path_for(blob)
    os.chmod(p.parent, 0o755)
    os.chmod(p, 0o644)
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    a.objects.remove(cfg)
    code, out, _ = lin(*st, "fsck")
    assert code == 1 and blob in out and cfg in out
    code, out, err = lin(*st, "fsck", "--repair")
    assert code == 0, out + err
    assert f"repaired: object {blob}" in err and f"repaired: object {cfg}" in err
    a.checkout("HEAD", to=tmp_path / "x", activate=False)
    assert files(tmp_path / "x") == files(models[1])

    # the remote: every object present (quick) and intact (--full); damage is named
    assert lin(*st, "verify")[0] == 0
    remote.delete(object_key(cfg))
    key = object_key(blob)
    raw = bytearray(remote.get(key))
    raw[-1] ^= 0xFF
    remote.put(key, bytes(raw))
    code, out, _ = lin(*st, "verify", "--remote", "origin")
    assert code == 1 and f"missing: object {cfg}" in out
    code, out, _ = lin(*st, "verify", "--remote", "origin", "--full", "--json")
    rep = json.loads(out)
    assert code == 1 and [m["id"] for m in rep["missing"]] == [cfg]
    assert [c["id"] for c in rep["corrupt"]] == [blob]
    # a push after verify knows what the remote lost and sends it again
    res = push(a, "origin")
    assert res.objects_sent == 2  # the missing one, and the one verify --full found corrupt
    code, out, _ = lin(*st, "verify", "--full")
    assert code == 0, out


# ------------------------------------------------------------------------------ pull, runs


@pytest.mark.parametrize("compression", ["auto", "none"])
def test_pull_moves_forward_and_updates_the_work_folder(remote, models, tmp_path, lin, compression):
    new_store(tmp_path / "a", models[:1], ["base"], compression)
    add_remote(lin, tmp_path / "a", remote)
    a = Repo.open(tmp_path / "a/.lineage")
    push(a, "origin")
    assert lin("clone", *remote.add_args(), tmp_path / "b")[0] == 0
    a.commit_folder(models[1], "next")
    push(a, "origin")
    # b is behind: once it has seen the remote's main (fetch), its push leaves main alone
    assert lin("--store", tmp_path / "b/.lineage", "fetch")[0] == 0
    code, out, err = lin("--store", tmp_path / "b/.lineage", "push")
    assert code == 0 and "behind    refs/heads/main: the remote is ahead" in out, out + err
    # a changed work file is never overwritten: the branch stays until the change is dealt with
    cfg = tmp_path / "b/model/config.json"
    original = cfg.read_bytes()
    cfg.write_text('{"edited": true}')
    code, out, err = lin("--store", tmp_path / "b/.lineage", "pull")
    assert code == 6 and "not taken: refs/heads/main" in err and "config.json" in err, err
    assert cfg.read_text() == '{"edited": true}'
    assert Repo.open(tmp_path / "b/.lineage").head() == Repo.open(tmp_path / "b/.lineage").versions()["v001_base"]
    cfg.write_bytes(original)
    code, out, err = lin("--store", tmp_path / "b/.lineage", "pull")
    assert code == 0, err
    assert "refs/heads/main" in out and "Work folder now holds v002_next" in out
    assert files(tmp_path / "b/model") == files(models[1])
    code, out, _ = lin("--store", tmp_path / "b/.lineage", "pull")
    assert code == 0 and "Already up to date" in out
    c = Repo.clone(remote.url, tmp_path / "c", endpoint_url=remote.endpoint)  # the Python API
    assert isinstance(c, Repo) and list(c.versions()) == ["v001_base", "v002_next"]
    assert files(tmp_path / "c/model") == files(models[1])


def test_finished_runs_leave_the_remote(remote, models, tmp_path):
    from lineagestore.core.objects import Checkpoint
    from lineagestore.remote.spec import add_remote as add
    a = new_store(tmp_path / "a", models[:1])
    add(a, "origin", remote.url, endpoint_url=remote.endpoint)
    tree = a.commit(a.head()).tree
    c1 = a.objects.put_object(Checkpoint(run="r1", step=1, model=tree))
    c2 = a.objects.put_object(Checkpoint(run="r1", step=2, model=tree, parent=c1))
    a.update_ref("refs/runs/r1", None, c1, "test")
    push(a, "origin")
    a.update_ref("refs/runs/r1", c1, c2, "test")
    res = push(a, "origin")
    assert [(u.ref, u.status) for u in res.changed] == [("refs/runs/r1", "updated")]
    assert remote.get("refs/runs/r1") == f"{c2}\n".encode()
    a.update_ref("refs/runs/r1", c2, None, "run finished")
    res = push(a, "origin")
    assert [(u.ref, u.status) for u in res.changed] == [("refs/runs/r1", "deleted")]
    assert "refs/runs/r1" not in remote.keys("refs/")
    assert a.refs.read("refs/remotes/origin/runs/r1") is None
