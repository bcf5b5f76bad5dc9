"""A remote prepared by an attacker, or damaged, is refused before it can change anything.

Each attack below is planted on a folder remote (and on S3) that held one clean version: trees with
an entry that would write into a store or a git repository (``.lineage``, ``.git`` in any letter
case, at the root or deeper), names with a newline or another control character, two entries of
one name, a commit whose name breaks the version-name rules, a nested ref, a version tag naming
the commit of another version, a missing object and a corrupt one. ``lin clone``, ``lin fetch``
and ``lin pull`` each fail with one line naming the object or ref and a documented exit code,
write nothing outside the clone's folder and nothing into any store (every folder is compared
byte for byte before and after), leave no half-made ``DIR/.lineage``, and work again once the
remote is fixed. ``lin fsck`` reports such trees in a store that already holds them, and ``lin
checkout`` refuses them before writing anything, and never writes beside or into a store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import make_model_dir
from test_guard_helpers import run_lin, snapshot

from lineagestore.api import Repo
from lineagestore.core.objects import Commit, Tree, TreeEntry
from lineagestore.core.store import MemoryObjectStore
from lineagestore.remote.backend import Backend, FolderBackend, S3Backend

# ------------------------------------------------------------------------------ the attacker's remote


@dataclass
class Hostile:
    """A remote holding ``v001_base`` (pushed by store ``a``), and the attacker's pen."""

    url: list[str]  # what `lin clone` / `lin remote add` take
    backend: Backend
    a: Repo  # the honest store that pushed v001
    v001: str
    saved: dict[str, bytes] = field(default_factory=dict)  # the clean remote, to fix it again

    def keys(self) -> list[str]:
        return sorted(e.key for e in self.backend.list(""))

    def save(self) -> None:
        self.saved = {k: self.backend.read(k)[0] for k in self.keys()}

    def fix(self) -> None:
        """Put the remote back as it was before the attack."""
        for k in self.keys():
            if k not in self.saved:
                self.backend.delete(k)
        for k, v in self.saved.items():
            got = self.backend.read(k)
            if got is None or got[0] != v:
                self.backend.write(k, v)

    def put(self, type_name: str, data: bytes) -> str:
        """Write an object to the remote as lin would store it; its id."""
        ms = MemoryObjectStore()
        oid = ms.put(type_name, data)
        self.backend.write(f"objects/{oid[:2]}/{oid[2:]}", ms.get_stored(oid))
        return oid

    def put_object(self, obj) -> str:
        return self.put(obj.type_name, obj.encode())

    def set_ref(self, ref: str, oid: str) -> None:
        self.backend.write(ref, f"{oid}\n".encode())

    def base_entries(self) -> list[TreeEntry]:
        return self.a.objects.get(self.a.commit(self.v001).tree, "tree").items()

    def publish(self, tree: str, name: str = "v002_evil", *, tag: str | None = None) -> str:
        """A commit of ``tree`` on top of v001, named by a version tag and by main."""
        c = Commit(tree=tree, parents=[self.v001], name=name, author="mallory", created="2026-01-01T00:00:00Z")
        cid = self.put_object(c)
        self.set_ref(f"refs/tags/{tag or name}", cid)
        self.set_ref("refs/heads/main", cid)
        return cid


@pytest.fixture
def hostile(request, tmp_path, lin, monkeypatch) -> Hostile:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIN_STORE", raising=False)
    a = Repo.init(tmp_path / "a" / ".lineage")
    a.import_model(make_model_dir(tmp_path / "src"), "base")
    if getattr(request, "param", "folder") == "s3":
        loc = request.getfixturevalue("s3_bucket_url")
        url = [loc.url, "--endpoint-url", loc.endpoint_url]
        bucket, _, prefix = loc.url[len("s3://"):].partition("/")
        backend: Backend = S3Backend(bucket, prefix, endpoint_url=loc.endpoint_url)
    else:
        root = tmp_path / "disk" / "remote"
        root.parent.mkdir()
        url = [str(root)]
        backend = FolderBackend(root)
    assert lin("--store", a.path, "remote", "add", "origin", *url)[0] == 0
    code, _, err = lin("--store", a.path, "push")
    assert code == 0, err
    a = Repo.open(a.path)  # with its remote
    h = Hostile(url, backend, a, a.resolve("v001"))
    h.save()
    return h


def _blob(h: Hostile, text: bytes = b"planted") -> TreeEntry:
    return TreeEntry("x", "blob", h.put("blob", text), len(text))


def _named(e: TreeEntry, name: str) -> TreeEntry:
    return TreeEntry(name, e.type, e.id, e.size, e.executable)


def _tree_with(h: Hostile, extra: list[TreeEntry]) -> str:
    entries = sorted([*h.base_entries(), *extra], key=lambda e: e.name)
    return h.put_object(Tree(entries=entries))


def _store_at_root(name: str) -> Callable[[Hostile], str]:
    def attack(h: Hostile) -> str:
        inner = h.put_object(Tree(entries=[_named(_blob(h, b"ref: refs/heads/evil\n"), "HEAD")]))
        bad = _tree_with(h, [TreeEntry(name, "tree", inner, 21)])
        h.publish(bad)
        return bad
    return attack


def _store_nested(name: str) -> Callable[[Hostile], str]:
    def attack(h: Hostile) -> str:
        hooks = h.put_object(Tree(entries=[_named(_blob(h, b"#!/bin/sh\necho owned\n"), "post-checkout")]))
        repo_dir = h.put_object(Tree(entries=[TreeEntry("hooks", "tree", hooks, 20)]))
        bad = h.put_object(Tree(entries=[TreeEntry(name, "tree", repo_dir, 20)]))
        sub = h.put_object(Tree(entries=[TreeEntry("deeper", "tree", bad, 20)]))
        h.publish(_tree_with(h, [TreeEntry("sub", "tree", sub, 20)]))
        return bad
    return attack


def _entry_named(name: str) -> Callable[[Hostile], str]:
    def attack(h: Hostile) -> str:
        bad = _tree_with(h, [_named(_blob(h), name)])
        h.publish(bad)
        return bad
    return attack


def _duplicate(h: Hostile) -> str:
    bad = _tree_with(h, [_named(_blob(h, b'{"model_type": "evil"}'), "config.json")])
    h.publish(bad)
    return bad


def _bad_commit_name(h: Hostile) -> str:
    cid = h.put_object(Commit(tree=h.a.commit(h.v001).tree, parents=[h.v001], name="v002_../../../escaped"))
    h.set_ref("refs/heads/main", cid)
    return cid


def _nested_ref(h: Hostile) -> str:
    h.set_ref("refs/tags/a/b", h.v001)
    return "refs/tags/a/b"


def _tag_of_another_version(h: Hostile) -> str:
    cid = h.put_object(Commit(tree=h.a.commit(h.v001).tree, parents=[h.v001], name="v002_y"))
    h.set_ref("refs/tags/v005_x", cid)
    return "refs/tags/v005_x"


def _new_version_blob(h: Hostile) -> str:
    """v002 pushed honestly by ``a``; the id of one of its blobs that v001 lacks."""
    h.a.commit_folder(make_model_dir(Path(h.a.path).parent / "src2", seed=7), "tuned")
    from lineagestore.remote.sync import push
    push(h.a, "origin")
    old = {f for f in h.saved if f.startswith("objects/")}
    new = sorted(k for k in h.keys() if k.startswith("objects/") and k not in old)
    blobs = [k for k in new if h.a.objects.header(k[len("objects/"):].replace("/", "")).type == "blob"]
    return blobs[0]


def _missing(h: Hostile) -> str:
    key = _new_version_blob(h)
    h.backend.delete(key)
    return key[len("objects/"):].replace("/", "")


def _corrupt(h: Hostile) -> str:
    key = _new_version_blob(h)
    raw = bytearray(h.backend.read(key)[0])
    raw[-1] ^= 0xFF
    h.backend.write(key, bytes(raw))
    return key[len("objects/"):].replace("/", "")


#: name -> (plant the attack and return the object id or ref the error must name, exit code)
ATTACKS: dict[str, tuple[Callable[[Hostile], str], int]] = {
    ".lineage at the root": (_store_at_root(".lineage"), 4),
    ".LINEAGE at the root": (_store_at_root(".LINEAGE"), 4),
    ".git nested": (_store_nested(".git"), 4),
    ".Git nested": (_store_nested(".Git"), 4),
    ".lineage nested, trailing dot": (_store_nested(".lineage."), 4),
    "newline in a name": (_entry_named("a\nb.txt"), 4),
    "escape character in a name": (_entry_named("x\x1b[2Jy"), 4),
    "dot-dot": (_entry_named(".."), 4),
    "two entries of one name": (_duplicate, 4),
    "commit name breaks the rules": (_bad_commit_name, 4),
    "nested ref": (_nested_ref, 4),
    "tag of another version": (_tag_of_another_version, 4),
    "missing object": (_missing, 5),
    "corrupt object": (_corrupt, 5),
}


def _watched(tmp_path: Path) -> dict[str, tuple]:
    """Everything under tmp_path but the remote itself and the lock-holder records (rewritten by any
    command that takes a lock); of ``existing`` (a clone into it made a store there and removed it)
    and of stores' ``tmp/`` (received objects waited there, and were removed) not the time."""
    out = {k: v for k, v in snapshot(tmp_path).items()
           if not k.startswith("disk") and "/locks/" not in f"/{k}" and not k.endswith("/locks")}
    for k in out:
        if k == "existing" or k.endswith(".lineage/tmp"):
            out[k] = out[k][:2]
    return out


def _one_error_line(err: str, subject: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and subject in errors[0], err
    assert all(ln.startswith(("error:", "hint:")) for ln in lines), err
    assert "Traceback" not in err


#: on S3 (slower) the attacks that differ in how they travel, not only in what a tree holds
ON_S3 = (".Git nested", "nested ref", "tag of another version", "missing object", "corrupt object")


@pytest.mark.parametrize("hostile,attack", [("folder", a) for a in ATTACKS] + [("s3", a) for a in ON_S3],
                         indirect=["hostile"], ids=lambda a: a.replace(" ", "-"))
def test_clone_fetch_and_pull_refuse_a_hostile_remote(hostile, attack, tmp_path, lin):
    h = hostile
    code, _, err = lin("clone", *h.url, tmp_path / "b")  # a clone made while the remote was sound
    assert code == 0, err
    b = Repo.open(tmp_path / "b" / ".lineage")
    heads = (b.refs.read("HEAD"), b.refs.as_dict("refs/heads/"), b.refs.as_dict("refs/tags/"))
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "notes.txt").write_text("mine")
    plant, want_code = ATTACKS[attack]
    subject = plant(h)
    before = _watched(tmp_path)

    for args in (["clone", *h.url, tmp_path / "c"], ["clone", *h.url, tmp_path / "existing"],
                 ["--store", tmp_path / "b/.lineage", "fetch"], ["--store", tmp_path / "b/.lineage", "pull"]):
        code, out, err = lin(*args)
        assert code == want_code, (args, code, out, err)
        _one_error_line(err, subject)
        assert _watched(tmp_path) == before, args  # nothing placed, no ref moved, no clone left
    assert not (tmp_path / "c").exists()
    assert sorted(os.listdir(tmp_path / "existing")) == ["notes.txt"]
    b = Repo.open(tmp_path / "b" / ".lineage")
    assert (b.refs.read("HEAD"), b.refs.as_dict("refs/heads/"), b.refs.as_dict("refs/tags/")) == heads
    assert b.fsck().ok

    h.fix()  # once the remote is sound again, every command works
    for args in (["clone", *h.url, tmp_path / "c"], ["clone", *h.url, tmp_path / "existing"],
                 ["--store", tmp_path / "b/.lineage", "fetch"], ["--store", tmp_path / "b/.lineage", "pull"]):
        code, out, err = lin(*args)
        assert code == 0, (args, out, err)
    assert Repo.open(tmp_path / "c" / ".lineage").fsck().ok
    assert (tmp_path / "existing" / "notes.txt").read_text() == "mine"


def test_a_killed_clone_leaves_nothing_that_blocks_a_retry(hostile, tmp_path):
    """kill -9 at points through a clone: no DIR/.lineage is left half-made; the next clone into
    DIR completes and removes what the killed one left."""
    dest = tmp_path / "c"
    for point in ("rename:1", "rename:3", "clone-rename:1"):  # making the store, just before it appears
        r = run_lin(tmp_path / "nowhere", "clone", *hostile.url, str(dest), env={"LIN_TEST_KILL_AT": point})
        assert r.returncode == -9, (point, r.stderr)
        assert not (dest / ".lineage").exists() and [p.name for p in dest.iterdir()][0].startswith(".lineage-clone-")
    r = run_lin(tmp_path / "nowhere", "clone", *hostile.url, str(dest))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in dest.iterdir()) == [".lineage", "model"]
    assert Repo.open(dest / ".lineage").fsck().ok


# ------------------------------------------------------------------------------ a store that already holds them


def test_fsck_and_checkout_on_a_store_copied_from_an_attacker(tmp_path, lin, monkeypatch):
    """What fetch refuses, a copied store may already hold: fsck names each, checkout refuses
    them before writing anything."""
    monkeypatch.chdir(tmp_path)
    repo = Repo.init(tmp_path / ".lineage")
    repo.import_model(make_model_dir(tmp_path / "src"), "base")
    v001 = repo.resolve("v001")
    base = repo.objects.get(repo.commit(v001).tree, "tree").items()
    blob = repo.objects.put("blob", b"[core]\n\thooksPath = /tmp/evil\n")
    git = repo.objects.put_object(Tree(entries=[TreeEntry("config", "blob", blob, 30)]))
    bad_tree = repo.objects.put_object(Tree(entries=[TreeEntry(".GIT", "tree", git, 30)]))
    top = repo.objects.put_object(Tree(entries=sorted([*base, TreeEntry("sub", "tree", bad_tree, 30)],
                                                      key=lambda e: e.name)))
    evil, _, _ = repo.write_commit(tree=top, parents=[v001], name="evil", move_head=False)
    badly_named = repo.objects.put_object(Commit(tree=repo.commit(v001).tree, parents=[v001], name="v003_a\nb"))
    repo.update_ref("refs/heads/odd", None, badly_named, "planted")
    repo.update_ref("refs/tags/a/b", None, v001, "planted")
    code, out, _ = lin("fsck", "--json")
    got = {(p["kind"], p["subject"]) for p in json.loads(out)["problems"]}
    assert code == 1 and got == {("unsafe-tree", bad_tree), ("bad-name", badly_named), ("bad-ref", "refs/tags/a/b")}

    work = tmp_path / "model"
    before = snapshot(tmp_path)
    for args in (["checkout", "v002"], ["checkout", "v002", "--to", "export", "--force"], ["diff", "v001", "v002"]):
        code, _, err = lin(*args)
        assert code == 4 and err.startswith(f"error: stored tree {bad_tree} (folder sub): entry '.GIT' would "
                                            "write into a store or a git repository"), err
    assert {k: v for k, v in snapshot(tmp_path).items() if "/locks" not in f"/{k}"} == \
        {k: v for k, v in before.items() if "/locks" not in f"/{k}"}
    assert not work.exists() and repo.head() == v001


def test_verify_reports_what_fetch_refuses(hostile, tmp_path, lin):
    """`lin verify` reads the same refs, but lists an invalid one instead of stopping."""
    _nested_ref(hostile)
    code, out, err = lin("--store", hostile.a.path, "verify", "--remote", "origin", "--json")
    assert code == 1 and "refs/tags/a/b" in out, out + err
    code, _, err = lin("--store", hostile.a.path, "fetch")
    assert code == 4 and "invalid ref 'refs/tags/a/b': a nested name" in err


def test_an_object_that_is_a_pack_file_is_corrupt_not_a_newer_format():
    from lineagestore.core.errors import CorruptObject, UnsupportedFormat
    from lineagestore.core.objects import unpack_header
    with pytest.raises(CorruptObject, match="bad magic bytes b'LINP'"):
        unpack_header(b"LINP" + bytes(12), "object x on origin")
    with pytest.raises(UnsupportedFormat, match="object format version 2 is newer"):
        unpack_header(b"LIN\x02" + bytes(12), "object x")
