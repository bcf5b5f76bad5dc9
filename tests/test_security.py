"""Names and paths never escape .lineage/ or the checkout folder."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import make_model_dir
from test_guard_helpers import snapshot

from lineagestore.api import Repo
from lineagestore.core.errors import InvalidInput, InvalidName, NotFound, Refused
from lineagestore.core.objects import Tree, TreeEntry

BAD_NAMES = ["../x", "../../../../tmp/evil", "/etc/passwd", "a/b", "..", ".", "x\0y", "a" * 101, "v" * 5000,
             "name.lock", "refs/tags/../../../x", "refs/heads/a/../../../b", "\n", "x y", "é"]


@pytest.fixture
def sealed(repo, tmp_path):
    """A store with one version; everything outside the store is watched for changes."""
    repo.import_model(make_model_dir(tmp_path / "src"), "base")
    return repo


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n[:20]))
def test_bad_names_are_refused_by_every_command_that_takes_a_name(lin, sealed, tmp_path, name):
    changed = make_model_dir(tmp_path / "changed", seed=9)  # a commit of it would make a version
    before_store = snapshot(sealed.path / "refs"), snapshot(sealed.path / "logs")
    before_out = sorted(p for p in tmp_path.parent.iterdir())
    for args in (["rm", name], ["rm", name, "--force", "--confirm-lineage", "--confirm-name", name],
                 ["restore", name], ["reflog", name], ["tag", name], ["branch", name],
                 ["commit", str(changed), "--name", name]):
        code, out, err = lin(*args)
        assert code in (2, 3, 4), (args, code, err)
        assert "Traceback" not in err
    assert (snapshot(sealed.path / "refs"), snapshot(sealed.path / "logs")) == before_store
    assert sorted(p for p in tmp_path.parent.iterdir()) == before_out
    assert not Path("/tmp/evil").exists() and not (sealed.path.parent.parent / "x").exists()


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ab/" + "c" * 61, "A" * 64, "g" * 64, "", "0" * 63,
                                 "/" + "a" * 63])
def test_object_ids_are_validated_before_any_path_is_built(sealed, bad):
    why = "^" + re.escape(f"invalid object id {bad!r}: expected 64 lowercase hex characters") + "$"
    with pytest.raises(InvalidInput, match=why):
        sealed.objects.path_for(bad)
    with pytest.raises(InvalidInput, match=why):
        sealed.objects.get_raw(bad)
    with pytest.raises((InvalidInput, NotFound)):  # a bad name, or a well-formed id not in trash
        sealed.restore(bad)


def test_trash_files_with_foreign_names_are_ignored(sealed):
    batch = sealed.path / "trash" / "20260101T000000Z-1-abcdef"
    (batch / "ab").mkdir(parents=True)
    (batch / "ab" / "..evil").write_text("x")
    (batch / "zz").mkdir()
    (batch / "zz" / ("0" * 62)).write_text("x")
    from lineagestore.guard.trash import find_in_trash
    assert find_in_trash(sealed, "ab") == {} and find_in_trash(sealed, "zz") == {}


UNSAFE_ENTRIES = [["../escaped.txt"], [".."], ["/abs.txt"], ["a/../../b.txt"], ["x\0y"], ["\\win"], ["n" * 300],
                  [".lineage"], [".LINEAGE"], [".git"], [".gIT"], [".git."], [".g\u200cit"], ["GIT~1"], ["a\nb"],
                  ["x\x1b[2Jy"], ["bell\x07"], ["c1\x85"], ["dup.txt", "dup.txt"]]


@pytest.mark.parametrize("names", UNSAFE_ENTRIES, ids=lambda n: repr(n[0][:12]) + ("x2" if len(n) > 1 else ""))
@pytest.mark.parametrize("depth", [0, 2])
def test_a_tree_with_an_unsafe_entry_is_never_checked_out(sealed, tmp_path, names, depth, lin):
    """A crafted (or copied) tree cannot write outside the checkout folder, into a store or a
    git repository: checkout refuses it before writing anything, and fsck names it."""
    blob = sealed.objects.put("blob", b"payload")
    weights = next(e for e in sealed.objects.get(sealed.commit(sealed.resolve("v001")).tree, "tree").items()
                   if e.name == "model.safetensors")
    evil = inner = sealed.objects.put_object(Tree(entries=[TreeEntry(n, "blob", blob, 7) for n in names]))
    for level in range(depth):
        inner = sealed.objects.put_object(Tree(entries=[TreeEntry(f"level{level}", "tree", inner, 7)]))
    top = sealed.objects.put_object(Tree(entries=[TreeEntry("a", "tree", inner, 7), weights]))
    cid, _, _ = sealed.write_commit(tree=top, parents=[], name="evil", move_head=False)
    target = tmp_path / "deep" / "target"
    target.mkdir(parents=True)
    def state():  # everything but the lock's holder records, which any command that locks rewrites
        return {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(".lineage/locks")}
    before = state()
    with pytest.raises(InvalidName, match=f"stored tree {evil}.*entry"):
        sealed.checkout(cid, to=target)
    code, _, err = lin("checkout", "v002", "--to", target)
    assert code == 4 and err.startswith(f"error: stored tree {evil}") and "Traceback" not in err, err
    assert state() == before
    code, out, _ = lin("fsck", "--json")
    problems = json.loads(out)["problems"]
    assert code == 1 and [(p["kind"], p["subject"]) for p in problems] == [("unsafe-tree", evil)], problems
    assert repr(names[0])[:20] in problems[0]["message"]


def test_symlinks_inside_a_model_folder(sealed, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the model folder")
    m = make_model_dir(tmp_path / "m", seed=5)
    (m / "notes.txt").symlink_to(secret)  # a file link: its content is stored, not the link
    res = sealed.commit_folder(m, "linked")
    out = tmp_path / "out"
    sealed.checkout(res.name, to=out)
    assert not (out / "notes.txt").is_symlink() and (out / "notes.txt").read_text() == "outside the model folder"
    secret.write_text("changed later")
    assert (out / "notes.txt").read_text() == "outside the model folder"

    (m / "sub").symlink_to(tmp_path, target_is_directory=True)  # a folder link is refused
    with pytest.raises(InvalidInput, match="symlink to a folder"):
        sealed.commit_folder(m, "looped")
    (m / "sub").unlink()
    (m / "dangling.txt").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InvalidInput, match="dangling"):
        sealed.commit_folder(m, "dangling")


def test_checkout_never_follows_a_symlink_out_of_its_target(sealed, tmp_path):
    m = make_model_dir(tmp_path / "m", seed=6)
    (m / "sub").mkdir()
    (m / "sub" / "extra.json").write_text("{}")
    res = sealed.commit_folder(m, "nested")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "work"
    target.mkdir()
    (target / "sub").symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    with pytest.raises(Refused, match="symlink"):
        sealed.checkout(res.name, to=target, force=True)
    assert snapshot(outside) == before and not (outside / "extra.json").exists()

    link = tmp_path / "work-link"
    link.symlink_to(outside, target_is_directory=True)
    with pytest.raises(Refused, match="symlink"):
        sealed.checkout(res.name, to=link)
    assert snapshot(outside) == before
    with pytest.raises(InvalidInput, match="inside the store"):
        sealed.checkout(res.name, to=sealed.path / "objects")


def test_store_refs_and_logs_stay_inside_the_store(sealed, tmp_path):
    """Every file a ref or reflog write creates is under .lineage/refs or .lineage/logs."""
    for bad, why in (("refs/tags/../../../outside", "invalid ref name component '..': '..' is not allowed"),
                     ("refs/../HEAD2", "invalid ref 'refs/../HEAD2': must start with one of refs/heads/"),
                     ("logs/x", "invalid ref 'logs/x': must start with one of refs/heads/"),
                     ("refs/tags/a\0b", "invalid ref name component 'a\\x00b': contains control characters")):
        with pytest.raises(InvalidName, match="^" + re.escape(why)):
            sealed.update_ref(bad, None, sealed.resolve("v001"), "x")
    assert not (tmp_path / "outside").exists() and not (sealed.path / "HEAD2").exists()
    names = [p for p in sealed.path.rglob("*") if p.is_file()]
    assert all(sealed.path in p.parents for p in names)
    assert os.path.realpath(sealed.path) == str(sealed.path)


def test_checkout_never_writes_into_a_store_or_beside_one(sealed, tmp_path, lin):
    """`--to` may not be a store, inside one (through a symlink too), or a folder that holds one,
    like the project root (`--to .` there); nor may any folder the version writes into hold one.
    The default work folder (`model/` beside `.lineage/`) is fine."""
    m = make_model_dir(tmp_path / "m", seed=3)
    (m / "sub").mkdir()
    (m / "sub" / "extra.json").write_text("{}")
    sealed.commit_folder(m, "nested")
    other = tmp_path / "other"
    Repo.init(other / ".lineage")
    (tmp_path / "link").symlink_to(sealed.path, target_is_directory=True)
    (tmp_path / "proj" / "sub" / ".lineage").mkdir(parents=True)  # the version writes into proj/sub
    def state():
        return {k: v for k, v in snapshot(tmp_path).items() if "/locks" not in f"/{k}"}
    before = state()
    for to, why in ((".", f"{tmp_path}: holds the store {sealed.path}"),
                    (str(tmp_path), f"{tmp_path}: holds the store {sealed.path}"),
                    (".lineage", "is inside the store"), (".lineage/objects/x", "is inside the store"),
                    ("link/out", "is inside the store"), ("other", f"{other}: holds the store {other / '.lineage'}"),
                    ("other/.lineage/refs", f"is inside the store {other / '.lineage'}"),
                    ("proj", f"{tmp_path / 'proj' / 'sub'}: holds the store")):
        for extra in ([], ["--force"], ["--keep-active"]):
            code, out, err = lin("checkout", "v002", "--to", to, *extra)
            lines = err.splitlines()
            assert code == 4 and why in lines[0] and len(lines) == 2, (to, err)
            assert lines[1] == (f"hint: check out into the work folder ({tmp_path / 'model'}: `lin checkout REV` "
                                "without --to) or into a folder of its own (`--to DIR`, e.g. --to export/REV)")
    assert state() == before and sealed.name_of(sealed.head()) == "v002_nested"
    assert lin("checkout", "v001")[0] == 0 and (tmp_path / "model" / "model.safetensors").exists()
    assert lin("checkout", "v002", "--to", "model")[0] == 0 and (tmp_path / "model" / "sub" / "extra.json").exists()


def test_a_model_folder_entry_a_tree_may_not_hold_is_left_out_or_refused_at_commit(repo, tmp_path):
    """.git and .lineage in any letter case are left out (as .git always was); a name no stored
    tree may hold (a newline) is refused at commit, not stored to fail every later checkout."""
    from conftest import make_model_dir

    from lineagestore.core.errors import InvalidInput
    folder = make_model_dir(tmp_path / "m", seed=11)
    (folder / ".GIT").mkdir()
    (folder / ".GIT" / "config").write_text("[core]\n")
    (folder / ".Lineage").write_text("x")
    res = repo.import_model(folder, "base")
    names = {f["path"] for f in repo.show(res.name).files}
    assert not any(n.lower().startswith((".git", ".lineage")) for n in names)
    repo.checkout(res.name, to=tmp_path / "out")
    (folder / "bad\nname.txt").write_text("x")
    with pytest.raises(InvalidInput, match="holds a control character"):
        repo.commit_folder(folder, "again")
