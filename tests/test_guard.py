"""Guardrails: protection and `lin rm`, recovery (reflog, restore), the audit log, doctor, fsck,
and the on-disk rules (read-only objects, disposable work folder)."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_guard_helpers import ROOT, folder_bytes, lineage, snapshot, version_bytes

from lineagestore import Repo
from lineagestore.core.errors import Conflict, NotFound, Refused


@pytest.fixture
def four(repo, tmp_path):
    """v001_base -> v002_syllo -> {v003_syllo_reasoning, v004_full_stack (active)}."""
    return lineage(repo, tmp_path)


def object_ids(repo) -> set[str]:
    return set(repo.objects.iter_ids())


# ----------------------------------------------------------------------------- protection


def test_every_protected_kind_is_refused_and_says_why(repo, four):
    before = object_ids(repo)
    cases = {
        "v003_syllo_reasoning": ["every version name is protected"],
        "v002_syllo": ["every version name is protected", "2 child version(s): v003_syllo_reasoning, v004_full_stack"],
        "v001_base": ["base version (imported)", "1 child version(s): v002_syllo"],
    }
    for name, reasons in cases.items():
        with pytest.raises(Refused) as e:
            repo.rm(name)
        for r in reasons:
            assert r in str(e.value), (name, str(e.value))
        assert "--force --confirm-lineage" in e.value.hint
    # the active version and the branch HEAD is on: not even with --force
    repo.refs.set_symbolic("HEAD", "refs/heads/main", "test")
    repo.update_ref("refs/heads/main", repo.refs.resolve("refs/heads/main"), repo.resolve("v004"), "test")
    for name in ("v004_full_stack", "main"):
        with pytest.raises(Refused, match="cannot be removed"):
            repo.rm(name, force=True, confirm_lineage=True, confirm_name=name)
    assert set(repo.versions()) == set(four) and repo.branches() == {"main": repo.resolve("v004")}
    assert object_ids(repo) == before


def test_force_confirm_lineage_lists_orphans_and_needs_the_exact_name(lin, repo, four):
    before = object_ids(repo)
    code, out, err = lin("rm", "v002", "--force", "--confirm-lineage")
    assert code == 7
    assert "Descendants that would lose their named ancestor: v003_syllo_reasoning, v004_full_stack" in err
    assert "not a terminal" in err and "--confirm-name v002_syllo" in err
    for wrong in ("v002", "v002_syllo ", "V002_SYLLO", "v002_syll"):
        code, _, err = lin("rm", "v002", "--force", "--confirm-lineage", "--confirm-name", wrong)
        assert code == 7 and "full name typed" in err
    code, _, err = lin("rm", "v002", "--force", "--confirm-name", "v002_syllo")  # --confirm-lineage missing
    assert code == 7 and "v003_syllo_reasoning, v004_full_stack" in err and "--confirm-lineage" in err, err
    assert "v002_syllo" in Repo.open(repo.path).versions()

    code, out, _ = lin("rm", "v002", "--force", "--confirm-lineage", "--confirm-name", "v002_syllo", "--json")
    assert code == 0
    res = json.loads(out)
    assert res["orphans"] == ["v003_syllo_reasoning", "v004_full_stack"] and res["forced"]
    repo = Repo.open(repo.path)
    assert "v002_syllo" not in repo.versions()
    assert object_ids(repo) == before  # removing a name never deletes objects
    assert version_bytes(repo, four_id(repo, "v003")) == folder_bytes(Path(four["v003_syllo_reasoning"]))


def four_id(repo, rev):
    return repo.resolve(rev)


def test_typed_confirmation_in_a_terminal(store_dir, repo, four):
    """Interactive `lin rm --force --confirm-lineage` prompts; only the exact full name removes."""
    def rm_in_pty(answer: str) -> tuple[int, str]:
        master, slave = pty.openpty()
        env = {**os.environ, "LIN_STORE": str(repo.path), "PYTHONPATH": str(ROOT)}
        p = subprocess.Popen([sys.executable, "-m", "lineagestore.cli.main", "rm", "v002", "--force",
                              "--confirm-lineage"], stdin=slave, stdout=slave, stderr=slave, env=env,
                             cwd=store_dir)
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 60
        while b"to confirm:" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 4096)
        os.write(master, answer.encode() + b"\n")
        while p.poll() is None or select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        p.wait(30)
        os.close(master)
        return p.returncode, seen.decode(errors="replace").replace("\r", "")

    code, text = rm_in_pty("v002")
    assert "This will orphan v003_syllo_reasoning, v004_full_stack. Type v002_syllo to confirm:" in " ".join(text.split())
    assert code == 7 and "does not match" in text
    assert "v002_syllo" in Repo.open(repo.path).versions()
    code, text = rm_in_pty("v002_syllo")
    assert code == 0, text
    assert "v002_syllo" not in Repo.open(repo.path).versions()


def test_aliases_and_other_branches_go_freely_but_not_a_last_name(repo, four):
    v3 = repo.resolve("v003")
    repo.update_ref("refs/tags/best", None, v3, "tag")
    repo.update_ref("refs/heads/exp", None, v3, "branch")
    assert repo.rm("best").forced is False
    assert repo.rm("exp").forced is False
    repo.rm("v003_syllo_reasoning", force=True, confirm_lineage=True, confirm_name="v003_syllo_reasoning")
    repo.update_ref("refs/heads/exp", None, v3, "branch")
    with pytest.raises(Refused, match="last name"):  # the only name left for v003's commit
        repo.rm("exp")


def test_runs_and_data_names_are_protected(repo, four):
    from lineagestore.core.objects import Checkpoint, Dataset
    ck = repo.objects.put_object(Checkpoint(run="r1", step=10, model=repo.commit(repo.resolve("v004")).tree))
    blob = repo.objects.put("blob", b'{"text": "x"}\n')
    ds = repo.objects.put_object(Dataset(content=blob, filename="d.jsonl", format="jsonl", size=14,
                                         examples=1, records=None))
    repo.update_ref("refs/runs/r1", None, ck, "run")
    repo.update_ref(f"refs/data/{blob[:16]}", None, ds, "data")
    with pytest.raises(Refused, match="training run"):
        repo.rm("refs/runs/r1")
    with pytest.raises(Refused, match="registered data"):
        repo.rm(f"refs/data/{blob[:16]}")
    repo.rm("refs/runs/r1", force=True, confirm_lineage=True, confirm_name="refs/runs/r1")
    assert repo.refs.read("refs/runs/r1") is None


# ----------------------------------------------------------------------------- recovery


def test_reflog_shows_every_change_and_restore_brings_a_name_back(lin, repo, four):
    v2 = repo.resolve("v002")
    lin("rm", "v002", "--force", "--confirm-lineage", "--confirm-name", "v002_syllo")
    code, out, _ = lin("reflog", "v002", "--json")
    assert code == 0
    lines = json.loads(out)
    assert [(x["old"], x["new"]) for x in lines] == [(v2, None), (None, v2)]
    assert lines[0]["message"].startswith("rm: v002_syllo") and lines[0]["old_name"] == "v002_syllo"
    code, out, _ = lin("reflog")
    assert code == 0 and "refs/tags/v002_syllo" in out and "(removed)" in out

    code, out, _ = lin("restore", "v002_syllo")
    assert code == 0 and "Restored the name v002_syllo" in out
    repo = Repo.open(repo.path)
    assert repo.resolve("v002_syllo") == v2
    code, _, err = lin("restore", "v002_syllo")
    assert code == 6 and "exists" in err
    code, _, err = lin("restore", "never_existed")
    assert code == 3 and err.startswith("error: nothing to restore for 'never_existed': no removed name, "
                                        "and not an object id\n"), err
    # numbers are never reused, even for a removed name
    repo.rm("v003_syllo_reasoning", force=True, confirm_lineage=True, confirm_name="v003_syllo_reasoning")
    assert repo.next_version_number() == 5


def test_restore_by_id_of_a_present_commit_gives_back_its_name(repo, four):
    v3 = repo.resolve("v003")
    repo.rm("v003", force=True, confirm_lineage=True, confirm_name="v003_syllo_reasoning")
    res = repo.restore(v3[:10])
    assert res.ref == "refs/tags/v003_syllo_reasoning" and res.objects == 0
    with pytest.raises(NotFound, match=f"^{v3[:10]} is already in the store and named; nothing to restore$"):
        repo.restore(v3[:10])
    with pytest.raises(Conflict, match=f"^v003_syllo_reasoning exists \\(it names {v3[:12]}\\); nothing to restore$"):
        repo.restore("v003_syllo_reasoning")


# ----------------------------------------------------------------------------- audit


def test_every_changing_command_is_audited_and_read_only_ones_are_not(lin, store_dir, model_dir):
    lin("import", str(model_dir), "--name", "base")
    lin("tag", "first")
    lin("log")
    lin("fsck")
    lin("gc")
    lin("rm", "first")
    lin("restore", "first")
    lin("gc", "--confirm")
    code, out, _ = lin("audit", "--json")
    entries = json.loads(out)
    assert [e["argv"][1] for e in entries] == ["import", "tag", "rm", "restore"]
    imp = entries[0]
    assert {"time", "user", "host", "pid", "argv", "refs", "prev", "hash", "seq"} <= set(imp)
    assert imp["argv"] == ["lin", "import", str(model_dir), "--name", "base"]
    assert {(r["ref"], r["old"]) for r in imp["refs"]} == {("refs/tags/v001_base", None), ("refs/heads/main", None)}
    rm = entries[2]["refs"][0]
    assert rm["ref"] == "refs/tags/first" and rm["new"] is None and rm["old"] == imp["refs"][0]["new"]
    code, out, _ = lin("audit", "--verify")
    assert code == 0 and "4 entries, hash chain verified" in out


def _tamper_cases():
    def edit(lines):
        d = json.loads(lines[1])
        d["user"] = "mallory"
        lines[1] = json.dumps(d, sort_keys=True)

    def edit_and_rehash(lines):
        from lineagestore.core.audit import _hash
        d = json.loads(lines[1])
        d["argv"] = ["lin", "innocent"]
        d["hash"] = _hash(d)
        lines[1] = json.dumps(d, sort_keys=True)

    def reorder(lines):
        lines[1], lines[2] = lines[2], lines[1]

    def truncate(lines):
        del lines[-1]

    def drop_middle(lines):
        del lines[1]

    def garbage(lines):
        lines[2] = lines[2][:-5]

    return [edit, edit_and_rehash, reorder, truncate, drop_middle, garbage]


@pytest.mark.parametrize("tamper", _tamper_cases(), ids=lambda f: f.__name__)
def test_audit_verify_detects_edited_reordered_truncated_logs(lin, store_dir, model_dir, tamper):
    lin("import", str(model_dir), "--name", "base")
    for t in ("a", "b", "c"):
        lin("tag", t)
    log = store_dir / ".lineage" / "audit.log"
    lines = log.read_text().splitlines()
    tamper(lines)
    log.write_text("\n".join(lines) + "\n")
    code, out, _ = lin("audit", "--verify")
    assert code == 1 and "audit log:" in out
    code, out, _ = lin("fsck", "--json")
    assert code == 1 and any(p["kind"] == "audit" for p in json.loads(out)["problems"])


# ----------------------------------------------------------------------------- doctor


def test_doctor_names_each_risk_in_plain_words(lin, repo, four, monkeypatch):
    code, out, _ = lin("doctor", "--json")
    rep = json.loads(out)
    codes = {f["code"] for f in rep["findings"] if f["level"] == "risk"}
    assert code == 1 and codes == {"no-backup", "same-disk"}
    obj = next(repo.objects.iter_ids())
    os.chmod(repo.objects.path_for(obj), 0o644)
    real = shutil.disk_usage
    with monkeypatch.context() as m:
        m.setattr("lineagestore.guard.doctor.shutil.disk_usage", lambda p: real(p)._replace(free=10_000, total=10**12))
        code, out, _ = lin("doctor")
    assert code == 1
    assert "writable" in out and obj[:2] in out
    assert "Little free disk" in out
    assert "No backup remote is configured" in out
    assert "same disk" in out

    os.chmod(repo.objects.path_for(obj), 0o444)
    nas = Path("/dev/shm") / f"lin-doctor-nas-{os.getpid()}-{repo.path.parent.name}"  # another filesystem
    repo.config.set("remote", {"nas": {"url": str(nas)}})
    repo.config.set("backup.remote", "nas")
    repo.config.set("core.work_dir", "/dev/shm/lin-doctor-work")  # another filesystem
    repo.save_config()
    code, out, _ = lin("doctor", "--json")  # a backup remote that holds nothing yet
    risks = {f["code"]: f["message"] for f in json.loads(out)["findings"] if f["level"] == "risk"}
    assert code == 1 and set(risks) == {"backup-behind"} and "4 of 4 versions" in risks["backup-behind"]
    try:
        code, out, err = lin("backup")
        assert code == 0, err
        code, out, _ = lin("doctor")
        assert code == 0 and "No risks found" in out
    finally:
        shutil.rmtree(nas, ignore_errors=True)


# ----------------------------------------------------------------------------- fsck


def _damage_cases():
    def flip_blob(repo):
        oid = next(o for o in repo.objects.iter_ids() if repo.objects.header(o).type == "blob"
                   and repo.objects.header(o).size > 100)
        p = repo.objects.path_for(oid)
        os.chmod(p, 0o644)
        b = bytearray(p.read_bytes())
        b[-1] ^= 1
        p.write_bytes(bytes(b))
        os.chmod(p, 0o444)
        return "corrupt", oid

    def missing_blob(repo):
        oid = next(o for o in repo.objects.iter_ids() if repo.objects.header(o).type == "blob")
        repo.objects.remove(oid)
        return "missing", oid

    def bad_ref(repo):
        (repo.path / "refs/tags/v002_syllo").write_text("not-an-id\n")
        return "bad-ref", "refs/tags/v002_syllo"

    def swapped_tag(repo):
        (repo.path / "refs/tags/v002_syllo").write_text(repo.resolve("v003") + "\n")
        return "bad-ref", "refs/tags/v002_syllo"

    def bad_reflog(repo):
        with open(repo.path / "logs/refs/tags/v002_syllo", "a") as f:
            f.write("garbage line without tab\n")
        return "bad-reflog", "logs/refs/tags/v002_syllo:2"

    def wrong_entry_type(repo):
        from lineagestore.core.objects import Tree, TreeEntry
        tree = repo.commit(repo.resolve("v003")).tree
        items = repo.objects.get(tree, "tree").items()
        blob = next(e for e in items if e.type == "blob")
        bad = [TreeEntry(e.name, "tree" if e is blob else e.type, e.id, e.size, e.executable) for e in items]
        tid = repo.objects.put_object(Tree(entries=bad))
        cid, _, _ = repo.write_commit(tree=tid, parents=[], name="bad", move_head=False)
        return "bad-link", tid

    def dangling(repo):
        from lineagestore.core.objects import Tree, TreeEntry
        blob = repo.objects.put("blob", b"only here")
        tid = repo.objects.put_object(Tree(entries=[TreeEntry("x", "blob", blob, 9)]))
        repo.objects.remove(blob)
        return "dangling", tid

    def head_at_nothing(repo):
        (repo.path / "HEAD").write_text("ref: refs/tags/../../x\n")
        return "bad-ref", "HEAD"

    return [flip_blob, missing_blob, bad_ref, swapped_tag, bad_reflog, wrong_entry_type, dangling, head_at_nothing]


@pytest.mark.parametrize("damage", _damage_cases(), ids=lambda f: f.__name__)
def test_fsck_names_each_problem_exits_1_and_modifies_nothing(lin, repo, four, damage):
    code, out, _ = lin("fsck")
    assert code == 0, out
    kind, subject = damage(repo)
    before = snapshot(repo.path)
    code, out, _ = lin("fsck", "--json")
    rep = json.loads(out)
    assert code == 1
    assert (kind, subject) in {(p["kind"], p["subject"]) for p in rep["problems"]}, rep["problems"]
    assert snapshot(repo.path) == before
    code, out, _ = lin("fsck")
    assert code == 1 and f"{kind}: " in out
    if damage.__name__ == "flip_blob":  # --quick does not re-hash blobs; --full (the default) does
        assert lin("fsck", "--quick")[0] == 0


def test_leftovers_of_killed_commands_are_notes_not_problems(lin, repo, four):
    (repo.path / "tmp" / "999999999-deadbeef.tmp").write_bytes(b"half")
    holders = repo.path / "locks" / "store.lock.holders"
    holders.mkdir(exist_ok=True)
    (holders / "999999999-abcd.json").write_text(json.dumps(
        {"pid": 999999999, "mode": "shared", "command": "lin commit", "host": socket.gethostname(), "since": 0}))
    code, out, _ = lin("fsck")
    assert code == 0 and out.count("note:") == 2
    with repo.writing():  # any writer recovers them
        pass
    assert not any((repo.path / "tmp").iterdir()) and not any(holders.iterdir())


# ----------------------------------------------------------------------------- on disk


def test_objects_and_their_folders_are_read_only_after_every_command(lin, repo, four):
    v3 = repo.resolve("v003")
    repo.rm("v003", force=True, confirm_lineage=True, confirm_name="v003_syllo_reasoning")
    repo.config.set("gc.reflog_expire_days", 0)
    repo.save_config()
    assert lin("gc", "--confirm", "--grace", "0")[0] == 0
    assert lin("restore", "v003_syllo_reasoning")[0] == 0
    assert Repo.open(repo.path).resolve("v003_syllo_reasoning") == v3  # the name, on the same version
    root = repo.path / "objects"
    for d in root.iterdir():
        assert d.stat().st_mode & 0o777 == 0o555, d
        for f in d.iterdir():
            assert f.stat().st_mode & 0o777 == 0o444, f


def test_the_work_folder_and_cache_are_disposable(lin, repo, four, store_dir):
    assert lin("checkout", "v003")[0] == 0
    shutil.rmtree(store_dir / "model")
    shutil.rmtree(repo.path / "cache")
    assert lin("fsck")[0] == 0
    for name, src in four.items():
        assert lin("checkout", name, "--to", str(store_dir / "out" / name))[0] == 0
        assert folder_bytes(store_dir / "out" / name) == folder_bytes(Path(src))


def test_fsck_accepts_every_object_layout_the_project_writes(repo, four):
    """No false alarms: a dataset whose record-id set is split into a chunks of records objects,
    a training checkpoint, a tag alias and a detached HEAD."""
    from lineagestore.core.objects import Checkpoint, Chunks, Dataset
    from lineagestore.guard.fsck import check
    parts = [repo.objects.put("records", bytes([i]) * 32) for i in (1, 2)]
    rid = repo.objects.put_object(Chunks(size=64, parts=[[p, 32] for p in parts]))
    content = repo.objects.put("blob", b'{"a": 1}\n')
    ds = repo.objects.put_object(Dataset(content=content, filename="d.jsonl", format="jsonl", size=9,
                                         examples=1, records=rid))
    repo.update_ref(f"refs/data/{content[:16]}", None, ds, "data add")
    tree = repo.commit(repo.resolve("v003")).tree
    ck1 = repo.objects.put_object(Checkpoint(run="r", step=1, model=tree))
    ck2 = repo.objects.put_object(Checkpoint(run="r", step=2, model=tree, state=tree, parent=ck1))
    repo.update_ref("refs/runs/r", None, ck1, "checkpoint")
    repo.update_ref("refs/runs/r", ck1, ck2, "checkpoint")  # the run's reflog keeps its last 2
    repo.update_ref("refs/tags/best", None, repo.resolve("v002"), "tag")
    repo.refs.detach("HEAD", repo.resolve("v003"), "checkout")
    rep = check(repo)
    assert rep.ok, [p.message for p in rep.problems]
    assert rep.unreachable == 0 and rep.reachable == rep.objects
