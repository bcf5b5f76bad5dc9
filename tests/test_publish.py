"""The one publish path (core/publish.py): every way of making a version goes through it, its
after-publish hooks (the automatic backup) run for all of them, and the Python API locks as the
CLI does."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from test_train_support import new_store, train_assets  # noqa: F401 - fixture

from lineagestore import Repo
from lineagestore.core.errors import LockTimeout, RefConflict
from lineagestore.core.publish import publish
from lineagestore.core.repo import HookFailure
from lineagestore.core.repo import Repo as CoreRepo


def _folder_with_file(path, text: str):
    """A minimal model folder: a config and one small safetensors file."""
    import numpy as np
    from safetensors.numpy import save_file
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(text)
    save_file({"w": np.arange(64, dtype=np.float32) + len(text)}, str(path / "model.safetensors"))
    return path


def _backup_to_folder(repo: Repo, where) -> None:
    repo.remote_add("origin", str(where), backup=True)


def _remote_tags(where) -> set[str]:
    """Version names the folder remote holds, read from its files (not from our store)."""
    return {p.name for p in (where / "refs" / "tags").iterdir()} if (where / "refs" / "tags").exists() else set()


def _clone_names(where, dest) -> list[str]:
    return list(Repo.clone(str(where), dest).versions())


def test_commit_model_is_backed_up(tmp_path, train_assets):  # noqa: F811 - fixture
    """Repo.commit_model (the path LineageCallback takes) runs the backup hook."""
    from transformers import AutoModelForCausalLM
    folder = new_store(tmp_path / "w", train_assets)
    repo = Repo.open(folder / ".lineage")
    _backup_to_folder(repo, tmp_path / "remote")
    model = AutoModelForCausalLM.from_pretrained(train_assets / "base")
    res = repo.commit_model(model, name="from_memory")
    assert res.after["backup"].ok, res.after
    assert res.name in _clone_names(tmp_path / "remote", tmp_path / "clone")


def test_lineage_callback_version_is_on_the_backup_remote(tmp_path, train_assets, monkeypatch):  # noqa: F811
    pytest.importorskip("accelerate")
    from test_train_integrations import _trainer

    from lineagestore.integrations import LineageCallback
    folder = new_store(tmp_path / "w", train_assets)
    shutil.copytree(train_assets / "base", folder / "base")
    _backup_to_folder(Repo.open(folder / ".lineage"), tmp_path / "remote")
    monkeypatch.chdir(folder)
    cb = LineageCallback("hf_run", data=[folder / "bible.jsonl"], checkpoint_every=2)
    _trainer(folder, cb, steps=2).train()
    assert cb.result.after["backup"].ok
    names = _clone_names(tmp_path / "remote", tmp_path / "clone")
    assert names == ["v001_base", "v002_hf_run"]


def test_commit_folder_reports_its_backup(tmp_path):
    repo = Repo.init(tmp_path / "p" / ".lineage")
    _backup_to_folder(repo, tmp_path / "remote")
    res = repo.import_model(_folder_with_file(tmp_path / "m", "{}"), "base")
    assert res.after["backup"].ok and res.after["backup"].remote == "origin"
    assert _clone_names(tmp_path / "remote", tmp_path / "clone") == ["v001_base"]


def test_a_failing_hook_never_undoes_the_publish(tmp_path):
    repo = Repo.init(tmp_path / ".lineage")

    class Boom:
        name = "boom"

        def __call__(self, repo, event):
            raise RuntimeError("no network")

    repo.after_publish.append(Boom())
    res = repo.import_model(_folder_with_file(tmp_path / "m", "{}"), "base")
    assert res.after["boom"] == HookFailure("boom", "RuntimeError: no network")
    assert list(Repo.open(tmp_path / ".lineage").versions()) == ["v001_base"]


def test_hooks_see_versions_and_checkpoints_in_order(tmp_path):
    repo = Repo.init(tmp_path / ".lineage")
    seen = []

    class Spy:
        name = "spy"

        def __call__(self, repo, event):
            seen.append((event.what, event.name))
            return {"ok": True}

    repo.after_publish.append(Spy())
    repo.import_model(_folder_with_file(tmp_path / "m", "{}"), "base")
    repo.commit_folder(_folder_with_file(tmp_path / "m", '{"a": 1}'), "second")
    assert seen == [("version", "v001_base"), ("version", "v002_second")]


def test_a_failed_content_write_leaves_no_objects_and_no_version(tmp_path):
    repo = CoreRepo.init(tmp_path / ".lineage")
    before = set(repo.objects.iter_ids())

    def content(batch):
        batch.put("blob", b"x" * 1000)
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        publish(repo, content, name="broken")
    assert set(repo.objects.iter_ids()) == before
    assert repo.versions() == {} and repo.head() is None
    assert not any((tmp_path / ".lineage" / "tmp").iterdir())


def test_publish_retires_a_ref_with_the_version_and_notes_the_journal(tmp_path):
    repo = CoreRepo.init(tmp_path / ".lineage")
    base = publish(repo, lambda b: _empty_tree(b), name="base")
    repo.update_ref("refs/runs/r1", None, base.id, "run")
    pub = publish(repo, lambda b: _empty_tree(b), name="child", retire={"refs/runs/r1": base.id})
    assert repo.refs.read("refs/runs/r1") is None
    assert pub.parents == [base.id] and pub.parent_names == ["v001_base"]
    assert repo.notes[-1].startswith("published v002_child")


def _empty_tree(batch) -> str:
    from lineagestore.core.objects import Tree
    return batch.put_object(Tree([]))


def test_api_tag_and_branch_behave_as_the_cli(tmp_path):
    repo = Repo.init(tmp_path / ".lineage")
    v1 = repo.import_model(_folder_with_file(tmp_path / "m", "{}"), "base")
    t = repo.tag("golden")
    assert (t.kind, t.name, t.id) == ("tag", "golden", v1.id)
    with pytest.raises(RefConflict, match="tags never move"):
        repo.tag("golden")
    b = repo.branch("exp", "golden", switch=True)
    assert b.id == v1.id and repo.head_branch() == "refs/heads/exp"
    assert [e.message for e in repo.refs.reflog("refs/tags/golden")] == ["tag: golden"]
    assert repo.resolve("golden") == v1.id


@pytest.mark.parametrize("op", ["tag", "branch", "checkout"])
def test_api_writes_wait_for_gc(tmp_path, monkeypatch, op):
    """The Python API takes the store lock as the CLI does: while gc holds it, a write waits."""
    repo = Repo.init(tmp_path / ".lineage")
    repo.import_model(_folder_with_file(tmp_path / "m", "{}"), "base")
    monkeypatch.setenv("LIN_LOCK_TIMEOUT", "0.2")
    other = Repo.open(tmp_path / ".lineage")
    gc_holder = Repo.open(tmp_path / ".lineage")
    calls = {"tag": lambda: other.tag("t"), "branch": lambda: other.branch("b"),
             "checkout": lambda: other.checkout("v001", to=tmp_path / "out")}
    with gc_holder.exclusive():
        lock = re.escape(str(repo.path / "locks" / "store.lock"))
        with pytest.raises(LockTimeout, match=f"^timed out after 0s waiting for the store lock {lock}: held by "
                                              f"pid {os.getpid()} .*exclusive, since .*, this process"):
            calls[op]()
        assert "t" not in other.tags() and "b" not in other.branches() and not (tmp_path / "out").exists()
    calls[op]()  # and once gc is done, it goes through


# ------------------------------------------------------------------ a branch never moves sideways


def test_a_branch_that_moved_meanwhile_stays_and_the_version_keeps_its_name(tmp_path):
    from lineagestore.core.publish import BranchMoved
    repo = Repo.init(tmp_path / ".lineage")
    v1 = repo.import_model(_folder_with_file(tmp_path / "m", "{}"), "base")
    seen_at_start = (repo.head_branch(), repo.head())
    v2 = repo.commit_folder(_folder_with_file(tmp_path / "m", '{"a": 1}'), "other")  # main moves to v2
    with pytest.raises(BranchMoved) as e:
        publish(repo, lambda b: _empty_tree(b), name="late", parents=[v1.id], expect_head=seen_at_start)
    assert e.value.exit_code == 6
    assert "v003_late was committed, but main moved to v002_other" in str(e.value)
    assert "lin branch NAME v003_late" in e.value.hint
    assert repo.branches()["main"] == v2.id and repo.head() == v2.id
    assert repo.resolve("v003_late") == e.value.published.id
    assert repo.commit(e.value.published.id).parents == [v1.id]
    from lineagestore.versions.history import off_branch
    assert off_branch(repo) == ["v003_late"]


def test_a_version_that_descends_from_the_moved_tip_still_advances_the_branch(tmp_path):
    repo = Repo.init(tmp_path / ".lineage")
    repo.import_model(_folder_with_file(tmp_path / "m", "{}"), "base")
    seen_at_start = (repo.head_branch(), repo.head())
    v2 = repo.commit_folder(_folder_with_file(tmp_path / "m", '{"a": 1}'), "other")
    pub = publish(repo, lambda b: _empty_tree(b), name="on_top", parents=[v2.id], expect_head=seen_at_start)
    assert repo.branches()["main"] == pub.id and pub.head_moved is None


def test_an_explicit_older_parent_still_moves_the_branch_it_found(tmp_path):
    """`lin commit --parent OLDER` (and `lin train --base OLDER`) start a side line on purpose:
    the branch was where the command found it, so it moves."""
    repo = Repo.init(tmp_path / ".lineage")
    v1 = repo.import_model(_folder_with_file(tmp_path / "m", "{}"), "base")
    repo.commit_folder(_folder_with_file(tmp_path / "m", '{"a": 1}'), "other")
    v3 = repo.commit_folder(_folder_with_file(tmp_path / "m", '{"b": 2}'), "side", parents=[v1.id])
    assert repo.branches()["main"] == v3.id


# ------------------------------------------------------------------ failures say what they left


def test_a_full_disk_while_moving_the_branch_reports_the_version_it_created(tmp_path, monkeypatch):
    import errno

    from lineagestore.core.errors import NoSpace
    repo = Repo.init(tmp_path / ".lineage")
    repo.import_model(_folder_with_file(tmp_path / "m", "{}"), "base")
    real = repo.refs.set_if_equals

    def full_on_branch(name, old, new, message):
        if name.startswith("refs/heads/"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(name, old, new, message)

    monkeypatch.setattr(repo.refs, "set_if_equals", full_on_branch)
    with pytest.raises(NoSpace) as e:
        repo.commit_folder(_folder_with_file(tmp_path / "m", '{"a": 1}'), "second")
    assert e.value.exit_code == 9
    assert str(e.value).startswith("v002_second was created, but the active branch could not be moved")
    assert "lin checkout v002_second" in e.value.hint
    monkeypatch.undo()
    fresh = Repo.open(tmp_path / ".lineage")
    assert list(fresh.versions()) == ["v001_base", "v002_second"] and fresh.head() == fresh.resolve("v001")


def test_a_lock_record_cut_short_by_a_full_disk_is_cleaned_by_the_next_command(tmp_path, monkeypatch):
    import errno
    import subprocess
    import sys
    from pathlib import Path

    from lineagestore.core.fsutil import FileLock
    lock = FileLock(tmp_path / "locks" / "store.lock")
    # a process that died on a full disk left an empty record under its pid
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "locks").mkdir()
    lock.holders_dir.mkdir()
    stale = lock.holders_dir / f"{int(dead.stdout)}-0000.json"
    stale.write_text("")
    # and this one fails to write its own record
    real_write = Path.write_text

    def full(self, *a, **kw):
        if self.parent == lock.holders_dir:
            self.touch()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, *a, **kw)

    monkeypatch.setattr(Path, "write_text", full)
    with lock.held("shared", timeout=1):
        assert list(lock.holders_dir.iterdir()) == []  # neither the stale record nor a half-written one
    monkeypatch.undo()
