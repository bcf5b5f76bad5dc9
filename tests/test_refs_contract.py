"""One contract, two refs containers (disk and memory): compare-and-swap and the reflog."""

from __future__ import annotations

import re

import pytest

from lineagestore.core.errors import InvalidName, RefConflict
from lineagestore.core.refs import DiskRefsContainer, MemoryRefsContainer, check_ref_name

A, B, C = "a" * 64, "b" * 64, "c" * 64


@pytest.fixture(params=["disk", "memory"])
def refs(request, tmp_path):
    if request.param == "memory":
        return MemoryRefsContainer()
    (tmp_path / "tmp").mkdir()
    return DiskRefsContainer(tmp_path, tmp_path / "tmp", tmp_path / "locks" / "refs.lock")


def test_create_update_delete_with_reflog(refs):
    refs.set_if_equals("refs/heads/main", None, A, "create")
    assert refs.resolve("refs/heads/main") == A
    refs.set_if_equals("refs/heads/main", A, B, "move")
    refs.set_if_equals("refs/heads/main", B, None, "delete")
    assert refs.resolve("refs/heads/main") is None
    log = refs.reflog("refs/heads/main")
    assert [(e.old, e.new, e.message) for e in log] == [(None, A, "create"), (A, B, "move"), (B, None, "delete")]


def test_compare_and_swap_refuses_a_stale_old_value(refs):
    refs.set_if_equals("refs/heads/main", None, A, "create")
    with pytest.raises(RefConflict, match=f"^ref refs/heads/main changed underneath: expected {B[:12]}, found {A[:12]}$"):
        refs.set_if_equals("refs/heads/main", B, C, "stale")
    with pytest.raises(RefConflict, match=f"^ref refs/heads/main changed underneath: expected nothing, found {A[:12]}$"):
        refs.set_if_equals("refs/heads/main", None, C, "create again")
    assert refs.resolve("refs/heads/main") == A
    assert len(refs.reflog("refs/heads/main")) == 1


def test_symbolic_head_updates_its_branch_and_both_logs(refs):
    refs.set_if_equals("refs/heads/main", None, A, "create")
    refs.set_symbolic("HEAD", "refs/heads/main", "attach")
    assert refs.resolve("HEAD") == A
    refs.set_if_equals("HEAD", A, B, "advance")
    assert refs.resolve("refs/heads/main") == B
    assert refs.reflog("HEAD")[-1].new == B
    refs.detach("HEAD", C, "detach")
    assert refs.resolve("HEAD") == C and refs.resolve("refs/heads/main") == B


def test_names_and_as_dict(refs):
    refs.set_if_equals("refs/tags/v001_base", None, A, "t")
    refs.set_if_equals("refs/heads/main", None, B, "b")
    assert refs.names("refs/tags/") == ["refs/tags/v001_base"]
    assert refs.as_dict() == {"refs/heads/main": B, "refs/tags/v001_base": A}


@pytest.mark.parametrize(("bad", "why"), [
    ("refs/heads/../x", "invalid ref name component '..': '..' is not allowed"),
    ("refs/heads/a b", "invalid ref name component 'a b': use letters, digits"),
    ("/etc/passwd", "invalid ref '/etc/passwd': must start with one of refs/heads/"),
    ("refs/tags/x\0y", "invalid ref name component 'x\\x00y': contains control characters"),
    ("refs/heads/" + "x" * 200, "invalid ref name component 'xxxx"),
    ("refs/heads/x.lock", "invalid ref name component 'x.lock': may not end with '.lock' or '.'"),
    ("objects/ab", "invalid ref 'objects/ab': must start with one of refs/heads/"),
    ("refs/heads/", "invalid ref name component: empty")])
def test_bad_ref_names_are_refused(refs, bad, why):
    with pytest.raises(InvalidName, match="^" + re.escape(why)):
        check_ref_name(bad)
    with pytest.raises(InvalidName, match="^" + re.escape(why)):
        refs.set_if_equals(bad, None, A, "x")
