"""The training queue (lineagestore.queue, `lin queue`): real files, the real registry, real processes."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import make_model_dir
from test_guard_helpers import ROOT, run_lin

from lineagestore import Repo
from lineagestore import queue as Q
from lineagestore.core.errors import CorruptObject, NotFound, Refused
from lineagestore.core.objects import QueueDoc
from lineagestore.guard.fsck import check
from lineagestore.guard.reachability import object_links, reached_from, roots
from tools.samples import bible_records, save_tokenizer, write_jsonl


@pytest.fixture
def qrepo(store_dir, tmp_path):
    """A store whose main branch holds a model with a tokenizer, and a data folder."""
    model = make_model_dir(tmp_path / "m")
    save_tokenizer(model)
    repo = Repo.open(store_dir / ".lineage")
    repo.import_model(model, "base")
    return Repo.open(store_dir / ".lineage")


def data_file(path: Path, start: int, count: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, bible_records(start, count))
    return path


def test_folder_adds_its_data_files_in_relative_path_order_registered_with_the_branch_tokenizer(qrepo, tmp_path):
    from lineagestore import data
    d = tmp_path / "inbox"
    data_file(d / "b.jsonl", 0)
    data_file(d / "a" / "z.jsonl", 20)
    data_file(d / "a.jsonl", 40)
    with gzip.open(d / "c.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in bible_records(60, 20)))
    data_file(d / ".partial.jsonl", 80)  # hidden: a file being written under a temporary name
    (d / "notes.txt").write_text("not data")
    res = Q.add_files(qrepo, "main", [d])
    names = [Path(it.name).relative_to(d).as_posix() for it in res.added]
    assert names == ["a.jsonl", "a/z.jsonl", "b.jsonl", "c.jsonl.gz"]
    assert [it.id for it in res.added] == ["q00001", "q00002", "q00003", "q00004"]
    assert res.skipped == [] and len(res.registered) == 4
    for it in res.added:
        info = data.resolve(qrepo, it.name)
        assert (it.dataset, it.fingerprint, it.examples) == (info.id, info.fingerprint, 20)
        assert it.tokens == info.token_count() > 0 and it.status == "queued"
    q = Q.load(qrepo, "main")
    assert q.items == tuple(res.added) and q.next_item() == res.added[0]
    assert (qrepo.path / "format").read_text() == "2\n"


def test_the_format_is_raised_only_by_the_first_write(qrepo):
    assert Q.load(qrepo, "main").items == ()
    assert Q.listing(qrepo, "main").rows == [] and Q.read_log(qrepo, "main") == []
    assert Q.resume(qrepo, "main").changed is False
    assert (qrepo.path / "format").read_text() == "1\n"


def test_a_renamed_copy_is_not_queued_and_a_trained_file_is_not_either(qrepo, tmp_path):
    from lineagestore import data
    f = data_file(tmp_path / "x.jsonl", 0)
    copy = tmp_path / "renamed.jsonl"
    copy.write_bytes(f.read_bytes())
    res = Q.add_files(qrepo, "main", [f, copy])
    assert [it.name for it in res.added] == [str(f)]
    assert res.skipped == [(str(copy), f"same content as {f}, given earlier in this command")]
    res = Q.add_files(qrepo, "main", [copy])
    assert res.added == [] and res.skipped[0][1].startswith("already in the queue as q00001 (queued, same content as")
    # a file trained into the branch's lineage (a commit with --data) is refused under any name
    trained = data_file(tmp_path / "t.jsonl", 100)
    qrepo.commit_folder(make_model_dir(tmp_path / "m2", seed=3), "next",
                        datasets=[data.register(qrepo, trained).id])
    other = tmp_path / "sub" / "t_again.jsonl"
    other.parent.mkdir()
    other.write_bytes(trained.read_bytes())
    res = Q.add_files(qrepo, "main", [other])
    assert res.added == [] and res.skipped == [(str(other), "already trained in v002_next (same content, any name)")]


def test_a_file_with_a_bad_line_is_skipped_naming_the_line_and_the_rest_is_queued(qrepo, tmp_path):
    good = data_file(tmp_path / "d" / "a.jsonl", 0)
    bad = tmp_path / "d" / "b.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "broken\n')
    res = Q.add_files(qrepo, "main", [tmp_path / "d"])
    assert [it.name for it in res.added] == [str(good)]
    assert len(res.skipped) == 1 and res.skipped[0][0] == str(bad) and "line 2" in res.skipped[0][1]


def test_a_missing_path_is_an_error_before_anything_is_queued(qrepo, tmp_path):
    good = data_file(tmp_path / "a.jsonl", 0)
    with pytest.raises(NotFound, match="nope.jsonl: no such file"):
        Q.add_files(qrepo, "main", [good, tmp_path / "nope.jsonl"])
    assert Q.load(qrepo, "main").items == ()


def test_a_file_that_vanishes_after_it_was_listed_is_skipped_saying_so(qrepo, tmp_path, monkeypatch):
    good = data_file(tmp_path / "d" / "a.jsonl", 0)
    gone = data_file(tmp_path / "d" / "b.jsonl", 20)
    listed = Q.add.expand_paths([str(tmp_path / "d")])
    gone.unlink()  # deleted between the folder's listing and its read (another process)
    monkeypatch.setattr(Q.add, "expand_paths", lambda paths: listed)
    res = Q.add_files(qrepo, "main", [tmp_path / "d"])
    assert [it.name for it in res.added] == [str(good)]
    assert res.skipped == [(str(gone), "cannot be read (No such file or directory)")]


def test_priority_move_park_retry_rm_pause_resume(qrepo, tmp_path):
    files = [data_file(tmp_path / f"f{i}.jsonl", 20 * i) for i in range(4)]
    Q.add_files(qrepo, "main", files)
    urgent = Q.add_files(qrepo, "main", [data_file(tmp_path / "urgent.jsonl", 200)], priority=5).added[0]

    def order() -> list[str]:
        return [it.id for it in Q.load(qrepo, "main").items]

    assert order() == [urgent.id, "q00001", "q00002", "q00003", "q00004"]
    moved = Q.move(qrepo, "main", "q00004", top=True)
    assert (moved.old_position, moved.position, moved.item.priority) == (5, 1, 5)  # priority follows neighbours
    assert order() == ["q00004", urgent.id, "q00001", "q00002", "q00003"]
    assert Q.move(qrepo, "main", "f1.jsonl", to=5).position == 5
    assert order() == ["q00004", urgent.id, "q00001", "q00003", "q00002"]
    parked = Q.park(qrepo, "main", "q00004", "the tokenizer\nsplits it badly")
    assert (parked.item.status, parked.item.reason) == ("parked", "the tokenizer splits it badly")
    assert Q.load(qrepo, "main").next_item().id == urgent.id
    assert Q.retry(qrepo, "main", "4").item.status == "queued"
    with pytest.raises(Refused, match="not parked"):
        Q.retry(qrepo, "main", "q00004")
    Q.remove(qrepo, "main", "q00003")
    assert "q00003" not in order()
    assert Q.pause(qrepo, "main", "disk full").changed
    assert Q.load(qrepo, "main").next_item() is None and not Q.pause(qrepo, "main").changed
    assert Q.resume(qrepo, "main").changed and Q.load(qrepo, "main").next_item().id == "q00004"
    # the loop's own changes: running, then done; a done item stays as history, cannot be moved
    q = Q.load(qrepo, "main")
    Q.update(qrepo, "main", lambda x: x.with_item(replace(x.get("q00004"), status="running", attempts=1)),
             "training q00004", {"kind": "started", "item": "q00004"})
    with pytest.raises(Refused, match="being trained"):
        Q.park(qrepo, "main", "q00004", "no")
    Q.update(qrepo, "main", lambda x: x.with_item(replace(x.get("q00004"), status="done", version="v002_f3")),
             "trained q00004 as v002_f3", {"kind": "trained", "item": "q00004", "version": "v002_f3"})
    with pytest.raises(Refused, match="v002_f3"):
        Q.move(qrepo, "main", "q00004", top=True)
    assert Q.load(qrepo, "main").next_number == q.next_number == 6
    kinds = [e.event["kind"] for e in Q.read_log(qrepo, "main")]
    assert kinds == ["added", "added", "moved", "moved", "parked", "retried", "removed", "paused", "resumed",
                     "started", "trained"]
    assert [e.event.get("item") for e in Q.read_log(qrepo, "main", limit=2)] == ["q00004", "q00004"]
    # ids are never reused: the removed q00003's number stays taken
    assert Q.add_files(qrepo, "main", [files[2]]).added[0].id == "q00006"


def test_every_queue_change_is_an_audit_entry_and_the_log_outlives_many_changes(qrepo, tmp_path, monkeypatch):
    from lineagestore.core import audit
    from lineagestore.queue import storage
    monkeypatch.setattr(storage, "LOG_PART", 4)
    Q.add_files(qrepo, "main", [data_file(tmp_path / "a.jsonl", 0)])
    before = len(audit.entries(qrepo))
    for i in range(10):
        Q.park(qrepo, "main", "q00001", f"reason {i}") if i % 2 == 0 else Q.retry(qrepo, "main", "q00001")
    entries = audit.entries(qrepo)
    assert len(entries) == before + 10 and audit.verify(qrepo).ok
    assert entries[-1]["refs"][0]["ref"] == "refs/queues/main" and "queue main:" in entries[-1]["notes"][0]
    log = Q.read_log(qrepo, "main")
    assert len(log) == 11 and [e.event["kind"] for e in log[1:3]] == ["parked", "retried"]
    assert [e.message for e in Q.read_log(qrepo, "main", limit=3)] == [x.message for x in log[-3:]]
    oid = qrepo.refs.read("refs/queues/main")
    doc = qrepo.objects.get(oid, "queue")
    assert len(doc.log_parts) == 2 and len(doc.log) == 3
    # the current document is a root and reaches its log; the reflog's older documents are not roots
    r = roots(qrepo)
    assert oid in r and not any(x in r for e in qrepo.refs.reflog("refs/queues/main")[:-1] for x in (e.old, e.new))
    reached = reached_from({oid: "queue"}, lambda x: object_links(qrepo.objects, x, qrepo.objects.header(x).type))
    assert set(doc.log_parts) | {doc.items["dataset"][0]} <= set(reached)
    assert check(qrepo).ok


def test_a_hostile_document_is_a_corrupt_object_naming_the_ref(qrepo):
    good = dict(branch="main", next=2, paused=None, log=[], log_parts=[], log_count=0)
    cols = {c: [v] for c, v in zip(Q.model.COLUMNS, ["q00001", "x\x1b[2J.jsonl", "a" * 64, 1, 1, 0, "queued", None,
                                                   None, 0, "2026-01-01T00:00:00Z", "b" * 64], strict=True)}
    for bad_cols, why in ((cols, "control characters"),
                          ({**cols, "name": ["x"], "status": ["eaten"]}, "status"),
                          ({**cols, "name": ["x"], "id": ["../x"]}, "item id"),
                          ({**cols, "name": ["x"], "tokens": []}, "differ in length")):
        oid = qrepo.objects.put_object(QueueDoc(items=bad_cols, **good))
        qrepo.refs.set_if_equals("refs/queues/main", qrepo.refs.read("refs/queues/main"), oid, "test")
        with pytest.raises(CorruptObject, match=f"refs/queues/main .*{why}"):
            Q.load(qrepo, "main")


# ----------------------------------------------------------------------------- processes

_WORKER = textwrap.dedent("""
    import sys
    from dataclasses import replace
    from lineagestore import Repo, queue as Q
    from lineagestore.core.objects import Dataset
    from lineagestore.queue.model import Item, item_id
    repo = Repo.open(sys.argv[1])
    tag, n = sys.argv[2], int(sys.argv[3])
    # a dataset of content not stored (links nothing), so that fsck finds every link present
    ds = repo.objects.put_object(Dataset(content="a" * 64, filename="x.jsonl", format="jsonl", size=1,
                                         examples=1, records=None, stored=False))
    def add(i):
        def change(q):
            it = Item(id=item_id(q.next_number), name=f"{tag}-{i}", dataset=ds, examples=1, tokens=1,
                      priority=0, status="queued", reason=None, version=None, attempts=0, added="t",
                      fingerprint=f"{i:064x}")
            return replace(q.with_items(q.items + (it,)), next_number=q.next_number + 1)
        return change
    for i in range(n):
        Q.update(repo, "main", add(i), f"{tag} {i}", {"kind": "added", "item": f"{tag}-{i}"})
""")


def _worker(store: Path, tag: str, n: int, env: dict | None = None) -> subprocess.Popen:
    e = {k: v for k, v in os.environ.items() if not k.startswith("LIN_TEST_")}
    e.update(PYTHONPATH=str(ROOT), LIN_LOCK_TIMEOUT="60", **(env or {}))
    return subprocess.Popen([sys.executable, "-c", _WORKER, str(store), tag, str(n)], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_changing_one_queue_lose_nothing(repo):
    procs = [_worker(repo.path, tag, 25) for tag in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    q = Q.load(Repo.open(repo.path), "main")
    names = [it.name for it in q.items]
    assert sorted(names) == sorted([f"a-{i}" for i in range(25)] + [f"b-{i}" for i in range(25)])
    assert [n for n in names if n.startswith("a")] == [f"a-{i}" for i in range(25)]  # each in its own order
    assert len({it.id for it in q.items}) == 50 and q.next_number == 51
    assert len(Q.read_log(repo, "main")) == 50


@pytest.mark.parametrize("point", ["queue-object", "queue-ref"])
def test_kill_9_during_an_update_leaves_the_old_queue_or_the_new(repo, point):
    p = _worker(repo.path, "a", 3)
    assert p.wait(timeout=120) == 0
    before = Q.load(Repo.open(repo.path), "main")
    p = _worker(repo.path, "b", 3, env={"LIN_TEST_KILL_AT": f"{point}:2"})
    p.communicate(timeout=120)
    assert p.returncode == -9
    after = Q.load(Repo.open(repo.path), "main")
    names = [it.name for it in after.items]
    want = [it.name for it in before.items] + ["b-0"] + (["b-1"] if point == "queue-ref" else [])
    assert names == want
    assert len(Q.read_log(repo, "main")) == len(want)
    assert check(Repo.open(repo.path)).ok
    p = _worker(repo.path, "c", 1)  # and the next change goes on from there
    assert p.wait(timeout=120) == 0
    assert [it.name for it in Q.load(Repo.open(repo.path), "main").items] == want + ["c-0"]


# ----------------------------------------------------------------------------- the CLI


def test_every_command_reports_json(qrepo, tmp_path, lin):
    d = tmp_path / "data"
    for i in range(3):
        data_file(d / f"f{i}.jsonl", 20 * i)
    (tmp_path / "copy.jsonl").write_bytes((d / "f0.jsonl").read_bytes())
    code, out, _ = lin("queue", "add", str(d), str(tmp_path / "copy.jsonl"), "--json")
    res = json.loads(out)
    assert code == 0 and res["branch"] == "main" and [i["id"] for i in res["added"]] == ["q00001", "q00002", "q00003"]
    assert res["skipped"][0]["path"] == str(tmp_path / "copy.jsonl") and "same content" in res["skipped"][0]["reason"]
    code, out, _ = lin("queue", "park", "q00002", "--reason", "too long", "--json")
    assert code == 0 and json.loads(out)["item"]["status"] == "parked"
    code, out, _ = lin("queue", "ls", "--json")
    ls = json.loads(out)
    assert code == 0 and [(r["position"], r["id"], r["status"], r["reason"]) for r in ls["items"]] == [
        (1, "q00001", "queued", None), (2, "q00002", "parked", "too long"), (3, "q00003", "queued", None)]
    assert ls["rate_tokens_per_s"] is None and ls["items"][0]["estimated_start"] is None
    assert json.loads(lin("queue", "move", "q00003", "--top", "--json")[1])["item"]["position"] == 1
    assert json.loads(lin("queue", "retry", "q00002", "--json")[1])["item"]["status"] == "queued"
    assert json.loads(lin("queue", "rm", "q00001", "--json")[1])["item"]["id"] == "q00001"
    assert json.loads(lin("queue", "pause", "--reason", "disk", "--json")[1]) == {
        "branch": "main", "paused": "disk", "changed": True}
    assert json.loads(lin("queue", "ls", "--json")[1])["paused"] == "disk"
    assert json.loads(lin("queue", "resume", "--json")[1])["changed"] is True
    log = json.loads(lin("queue", "log", "--json")[1])["entries"]
    assert [e["event"]["kind"] for e in log] == ["added", "parked", "moved", "retried", "removed", "paused", "resumed"]
    code, out, err = lin("queue", "rm", "q00042", "--json")
    assert code == 3 and "no item 'q00042'" in err and json.loads(out)["exit_code"] == 3
    code, _, err = lin("queue", "add", str(tmp_path / "missing.jsonl"))
    assert code == 3 and err.startswith(f"error: {tmp_path / 'missing.jsonl'}: no such file or folder")


def test_ls_estimates_starts_from_the_measured_rate_and_hides_old_done_items(qrepo, tmp_path, lin):
    qrepo.commit_folder(make_model_dir(tmp_path / "m2", seed=4), "trained",
                        metrics={"tokens_trained": 1000, "wall_time_s": 10})
    files = [data_file(tmp_path / f"f{i}.jsonl", 20 * i) for i in range(8)]
    added = Q.add_files(qrepo, "main", files).added
    for it in added[:6]:
        Q.update(qrepo, "main", lambda q, it=it: q.with_item(replace(it, status="done", version="v9")), "done")
    lst = Q.listing(qrepo, "main", now=0.0)
    assert lst.rate == 100.0 and lst.hidden_done == 1 and len(lst.rows) == 7
    queued = [r for r in lst.rows if r["status"] == "queued"]
    assert [r["estimated_start_in_s"] for r in queued] == [0.0, added[6].tokens / 100.0]
    assert queued[1]["estimated_start"] == "1970-01-01T00:00:" + f"{int(added[6].tokens / 100):02d}Z"
    code, out, _ = lin("queue", "ls")
    assert code == 0 and "(1 older done item(s) hidden; --all shows them)" in out and "Rate 100 tokens/s" in out
    assert len(Q.listing(qrepo, "main", show_all=True).rows) == 8


def test_the_queue_is_pushed_and_cloned_with_the_rest(qrepo, tmp_path):
    Q.add_files(qrepo, "main", [data_file(tmp_path / "a.jsonl", 0)])
    Q.park(qrepo, "main", "q00001", "wait")
    remote = tmp_path / "remote"
    assert run_lin(qrepo.path, "remote", "add", "origin", str(remote)).returncode == 0
    r = run_lin(qrepo.path, "push")
    assert r.returncode == 0, r.stderr
    assert (remote / "refs" / "queues" / "main").read_text().strip() == qrepo.refs.read("refs/queues/main")
    dest = tmp_path / "clone"
    dest.mkdir()
    r = subprocess.run([sys.executable, "-m", "lineagestore.cli.main", "clone", str(remote), str(dest)],
                       env={**os.environ, "PYTHONPATH": str(ROOT), "LIN_NO_PROGRESS": "1"}, cwd=dest,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cloned = Repo.open(dest / ".lineage")
    assert Q.load(cloned, "main") == Q.load(qrepo, "main")
    assert [e.message for e in Q.read_log(cloned, "main")] == [e.message for e in Q.read_log(qrepo, "main")]


def test_a_reason_with_line_breaks_from_the_loop_is_stored_on_one_line(qrepo, tmp_path):
    Q.add_files(qrepo, "main", [data_file(tmp_path / "a.jsonl", 0)])
    error = "Traceback (most recent call last):\n  File x\nRuntimeError: boom\x1b[0m"
    q = Q.update(qrepo, "main", lambda x: x.with_item(replace(x.get("q00001"), status="parked", reason=error)),
                 "lin run: parked\nq00001", {"kind": "parked", "item": "q00001"})
    want = "Traceback (most recent call last): File x RuntimeError: boom[0m"
    assert q.get("q00001").reason == want
    assert Q.load(Repo.open(qrepo.path), "main").get("q00001").reason == want
    assert Q.read_log(qrepo, "main")[-1].message == "lin run: parked q00001"


def test_queues_are_per_branch_and_a_glob_adds_its_matches_in_order(qrepo, tmp_path, lin):
    for name in ("b.jsonl", "a.jsonl", "c.txt"):
        if name.endswith(".jsonl"):
            data_file(tmp_path / "g" / name, 40 if name == "a.jsonl" else 0)
        else:
            (tmp_path / "g" / name).write_text("x")
    code, _, _ = lin("branch", "other")
    assert code == 0
    code, out, _ = lin("queue", "add", str(tmp_path / "g" / "*"), "--branch", "other", "--json")
    assert code == 0 and [Path(i["name"]).name for i in json.loads(out)["added"]] == ["a.jsonl", "b.jsonl"]
    assert Q.load(qrepo, "main").items == () and len(Q.load(qrepo, "other").items) == 2
    assert Q.queue_branches(qrepo) == ["other"]
    lin("queue", "pause", "--reason", "new disk", "--branch", "other")
    code, out, _ = lin("queue", "ls", "--branch", "other")
    assert code == 0 and "PAUSED: new disk" in out and "a.jsonl" in out
    code, _, err = lin("queue", "add", str(tmp_path / "g" / "*.none"), "--branch", "other")
    assert code == 0 and "no data file matches" in err


def test_gc_collects_earlier_queue_documents_and_keeps_the_current_one_and_its_log(qrepo, tmp_path, monkeypatch):
    import time

    from lineagestore.guard import gc
    from lineagestore.queue import storage
    monkeypatch.setattr(storage, "LOG_PART", 2)
    Q.add_files(qrepo, "main", [data_file(tmp_path / "a.jsonl", 0)])
    Q.park(qrepo, "main", "q00001", "one")
    Q.retry(qrepo, "main", "q00001")
    docs = [e.new for e in qrepo.refs.reflog("refs/queues/main")]
    current = qrepo.refs.read("refs/queues/main")
    assert docs[-1] == current and len(set(docs)) == 3
    p = gc.plan(qrepo, grace_s=0, now=time.time() + 10)
    assert set(docs[:-1]) <= set(p.order) and current not in p.order
    doc = qrepo.objects.get(current, "queue")
    assert doc.log_parts and not set(doc.log_parts) & set(p.order)
    assert not set(doc.items["dataset"]) & set(p.order)


def test_files_inside_the_store_are_neither_queued_registered_nor_an_inbox(qrepo, tmp_path):
    """The store's own files change under lin (tmp/ is swept, objects repacked): never input."""
    from lineagestore import data
    from lineagestore.core.errors import InvalidInput
    from lineagestore.runner import RunOptions, run
    inside = data_file(qrepo.path / "tmp" / "x.jsonl", 0)
    res = Q.add_files(qrepo, "main", [inside])
    assert res.added == [] and res.skipped == [(str(inside), f"inside the store {qrepo.path}; "
                                                             "data files are queued from outside it")]
    with pytest.raises(InvalidInput, match=r"x\.jsonl: is inside the store .*registered from outside it"):
        data.register(qrepo, inside, tokenizer=False)
    with pytest.raises(InvalidInput, match=r"is inside the store .*an inbox is a folder outside it"):
        run(qrepo, RunOptions(inbox=qrepo.path / "tmp"))
    assert Q.load(qrepo, "main").items == () and data.registry(qrepo) == {}
