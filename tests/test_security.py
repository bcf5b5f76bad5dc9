"""Names and paths never escape .lineage/ or the checkout folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import make_model_dir
from lineagestore.core.errors import InvalidInput, LinError, MalformedFile, Refused
from lineagestore.core.objects import Tree, TreeEntry
from test_guard_helpers import snapshot

BAD_NAMES = ["../x", "../../../../tmp/evil", "/etc/passwd", "a/b", "..", ".", "x\0y", "a" * 101, "v" * 5000,
             "name.lock", "refs/tags/../../../x", "refs/heads/a/../../../b", "\n", "x y", "é"]


@pytest.fixture
def sealed(repo, tmp_path):
    """A store with one version; everything outside the store is watched for changes."""
    repo.import_model(make_model_dir(tmp_path / "src"), "base")
    return repo


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n[:20]))
def test_bad_names_are_refused_by_every_command_that_takes_a_name(lin, sealed, tmp_path, name):
    before_store = snapshot(sealed.path / "refs"), snapshot(sealed.path / "logs")
    before_out = sorted(p for p in tmp_path.parent.iterdir())
    for args in (["rm", name], ["rm", name, "--force", "--confirm-lineage", "--confirm-name", name],
                 ["restore", name], ["reflog", name], ["tag", name], ["branch", name],
                 ["commit", str(tmp_path / "src"), "--name", name]):
        code, out, err = lin(*args)
        assert code in (2, 3, 4), (args, code, err)
        assert "Traceback" not in err
    assert (snapshot(sealed.path / "refs"), snapshot(sealed.path / "logs")) == before_store
    assert sorted(p for p in tmp_path.parent.iterdir()) == before_out
    assert not Path("/tmp/evil").exists() and not (sealed.path.parent.parent / "x").exists()


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ab/" + "c" * 61, "A" * 64, "g" * 64, "", "0" * 63,
                                 "/" + "a" * 63])
def test_object_ids_are_validated_before_any_path_is_built(sealed, bad):
    with pytest.raises(InvalidInput):
        sealed.objects.path_for(bad)
    with pytest.raises(InvalidInput):
        sealed.objects.get_raw(bad)
    with pytest.raises(LinError):
        sealed.restore(bad)


def test_trash_files_with_foreign_names_are_ignored(sealed):
    batch = sealed.path / "trash" / "20260101T000000Z-1-abcdef"
    (batch / "ab").mkdir(parents=True)
    (batch / "ab" / "..evil").write_text("x")
    (batch / "zz").mkdir()
    (batch / "zz" / ("0" * 62)).write_text("x")
    from lineagestore.guard.trash import find_in_trash
    assert find_in_trash(sealed, "ab") == {} and find_in_trash(sealed, "zz") == {}


@pytest.mark.parametrize("entry", ["../escaped.txt", "..", "/abs.txt", "a/../../b.txt", "x\0y", "\\win", "n" * 300])
def test_a_tree_with_an_escaping_entry_is_never_checked_out(sealed, tmp_path, entry):
    """A crafted (or damaged) tree cannot write outside the checkout folder."""
    blob = sealed.objects.put("blob", b"payload")
    weights = next(e for e in sealed.objects.get(sealed.commit(sealed.resolve("v001")).tree, "tree").items()
                   if e.name == "model.safetensors")
    evil = sealed.objects.put_object(Tree(entries=[TreeEntry(entry, "blob", blob, 7), weights]))
    cid, _, _ = sealed.write_commit(tree=evil, parents=[], name="evil", move_head=False)
    target = tmp_path / "deep" / "target"
    target.mkdir(parents=True)
    def state():  # everything but the lock's holder records, which any command that locks rewrites
        return {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(".lineage/locks")}
    before = state()
    with pytest.raises((MalformedFile, Refused)):
        sealed.checkout(cid, to=target)
    assert state() == before
    from lineagestore.guard.fsck import check
    rep = check(sealed)
    assert not rep.ok and any(evil == p.subject for p in rep.problems)


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
    for bad in ("refs/tags/../../../outside", "refs/../HEAD2", "logs/x", "refs/tags/a\0b"):
        with pytest.raises(LinError):
            sealed.update_ref(bad, None, sealed.resolve("v001"), "x")
    assert not (tmp_path / "outside").exists() and not (sealed.path / "HEAD2").exists()
    names = [p for p in sealed.path.rglob("*") if p.is_file()]
    assert all(sealed.path in p.parents for p in names)
    assert os.path.realpath(sealed.path) == str(sealed.path)
