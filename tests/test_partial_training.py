"""A run that trains part of its data records exactly that part (docs/data.md, "Trained parts"):
`--max-steps`, a run resumed on another number of processes, the rest of a file trained later,
and the final commit that must not move a branch another command moved meanwhile."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train_support import TRAIN_ARGS, lin_proc, new_store, train_assets  # noqa: F401 - fixture

from lineagestore import Repo
from lineagestore.core.objects import Tree
from lineagestore.core.publish import publish
from lineagestore.data.ledger import iter_record_set
from lineagestore.train import dataset as ds

SEQ, BATCH = 32, 4  # TRAIN_ARGS: 4 units of 32 tokens a step, one process


def _args(**change: str | None) -> list[str]:
    """TRAIN_ARGS with flags changed (a value) or removed (None), plus --no-measure."""
    out = list(TRAIN_ARGS)
    for flag, value in change.items():
        flag = "--" + flag.replace("_", "-")
        i = out.index(flag)
        if value is None:
            del out[i:i + 2]
        else:
            out[i + 1] = value
    return [*out, "--no-measure"]


def _consumed_by_hand(folder: Path, steps: int) -> set[bytes]:
    """The record ids of bible.jsonl that a 1-process run of ``steps`` steps trained a token of,
    counted token by token from the data order (seed 0, epoch 0) and the packing rule."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(folder / "base"))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    data = ds.load_data([(folder / "bible.jsonl", None)], tok)
    units = -(-data.tokens // SEQ)
    trained = set(ds.epoch_order(units, 0, 0)[:steps * BATCH].tolist())
    out = set()
    for j in range(data.examples):
        a, b = int(data.offsets[j]), int(data.offsets[j + 1])
        if any(t // SEQ in trained for t in range(a, b)):
            out.add(bytes(data.rids[j]))
    return out


def _tokens_of_first_units(folder: Path, count: int) -> int:
    """Tokens of the first ``count`` units of epoch 0's order of bible.jsonl (1 epoch = all of them)."""
    from transformers import AutoTokenizer
    data = ds.load_data([(folder / "bible.jsonl", None)], AutoTokenizer.from_pretrained(str(folder / "base")))
    blocks = ds.Blocks(data, SEQ, packing=True)
    return sum(b - a for a, b in (blocks.span(int(i)) for i in ds.epoch_order(len(blocks), 0, 0)[:count]))


def _records(repo: Repo, dataset_id: str) -> set[bytes]:
    d = repo.objects.get(dataset_id, "dataset")
    return {bytes(x) for chunk in iter_record_set(repo.objects, d.records) for x in chunk}


def test_max_steps_records_what_it_trained_and_the_rest_trains_later(
        tmp_path, train_assets, lin, monkeypatch):  # noqa: F811 - the fixture
    folder = new_store(tmp_path / "w", train_assets)
    (folder / "base").symlink_to(train_assets / "base")
    monkeypatch.chdir(folder)
    code, out, err = lin("train", "--data", "bible.jsonl", "--name", "part", *_args(max_steps="10"), "--yes")
    assert code == 0, err
    assert re.search(r"\n  loss \d+\.\d{4} -> \d+\.\d{4}\n", out), out  # first and last step, with decimals
    repo = Repo.open(folder / ".lineage")
    # the version names a part: exactly the records a token of which was trained
    (part_id,) = repo.commit(repo.head()).datasets
    part = repo.objects.get(part_id, "dataset")
    registered = repo.refs.resolve(f"refs/data/{part.content}")
    everything = _records(repo, registered)
    assert part_id != registered and part.extra["part_of"] == {"dataset": registered, "distinct": 200,
                                                                "examples": 200}
    first = _records(repo, part_id)
    assert first == _consumed_by_hand(folder, 10) and 0 < len(first) < len(everything)
    assert first <= everything and part.extra["distinct"] == len(first) and part.examples == len(first)
    k = len(first)

    # lin data ls/show: partly trained, with the share; data check counts only those records
    code, out, _ = lin("data", "ls", "--json")
    (row,) = json.loads(out)
    assert row["status"] == "partly trained" and row["trained_in"] == ["v002_part"]
    assert row["share"] == k / 200 and row["records_trained"] == k
    code, out, _ = lin("data", "show", "bible.jsonl")
    assert f"partly trained in v002_part ({k} of 200 records, {k / 200:.1%})" in out
    assert "training adds one EOS per text record" in out
    code, out, _ = lin("data", "check", "bible.jsonl", "--json")
    (rep,) = json.loads(out)
    assert rep["same_file_trained_in"] == [] and rep["partly_trained_in"] == ["v002_part"]
    assert rep["records_seen"] == k and rep["seen_in"] == {"v002_part": k}
    code, out, _ = lin("show", "v002", "--json")
    (d,) = json.loads(out)["version"]["datasets"]
    assert d["part"] == {"records": k, "of": 200} and d["tokens"] is None

    # the rest trains without --allow-overlap: only the records not trained yet
    code, out, err = lin("plan", "--data", "bible.jsonl", "--name", "rest", *_args(max_steps=None), "--json")
    p = json.loads(out)
    dup = next(c for c in p["checks"] if c["key"] == "duplicates")
    assert code == 0 and dup["ok"] and not dup["overridden"], dup
    (item,) = p["data"]
    assert item["rest"] and item["examples"] == 200 - k and item["trained_before"] == k
    code, out, err = lin("train", "--data", "bible.jsonl", "--name", "rest", *_args(max_steps=None), "--yes")
    assert code == 0, err
    repo = Repo.open(folder / ".lineage")
    (rest_id,) = repo.commit(repo.head()).datasets
    rest = _records(repo, rest_id)
    assert rest == everything - first  # the rest, and nothing trained twice
    code, out, _ = lin("data", "ls", "--json")
    (row,) = json.loads(out)
    assert row["status"] == "trained" and row["share"] == 1.0 and row["trained_in"] == ["v002_part", "v003_rest"]
    # every record is trained now (in two parts): the file is refused again
    code, out, _ = lin("plan", "--data", "bible.jsonl", "--name", "again", *_args(max_steps=None), "--json")
    dup = next(c for c in json.loads(out)["checks"] if c["key"] == "duplicates")
    assert code == 1 and not dup["ok"] and "every record was already trained in v002_part, v003_rest" in dup["reason"]
    code, out, err = lin("fsck")
    assert code == 0, out + err


def test_a_whole_epoch_names_the_registered_dataset(tmp_path, train_assets, lin, monkeypatch):  # noqa: F811 - the fixture
    """A run that consumed every unit names the registered dataset itself, as before parts existed."""
    folder = new_store(tmp_path / "w", train_assets)
    monkeypatch.chdir(folder)
    code, _, err = lin("train", "--data", "bible.jsonl", "--name", "all", *_args(max_steps=None, batch_size="16"),
                       "--yes")
    assert code == 0, err
    repo = Repo.open(folder / ".lineage")
    (did,) = repo.commit(repo.head()).datasets
    assert repo.refs.resolve(f"refs/data/{repo.objects.get(did, 'dataset').content}") == did
    code, out, _ = lin("data", "ls", "--json")
    (row,) = json.loads(out)
    assert row["status"] == "trained" and row["share"] == 1.0


@pytest.mark.slow
def test_resume_on_more_processes_continues_from_the_data_consumed(tmp_path, train_assets):  # noqa: F811 - the fixture
    """A 1-process run killed at step 13 (checkpoint: step 10) resumed with --gpus 2 trains the
    units an uninterrupted run trains (not step 10 of the 2-process plan) and the whole file."""
    folder = new_store(tmp_path / "w", train_assets)
    args = _args(max_steps=None)
    p = lin_proc(folder, "train", "--data", "bible.jsonl", "--name", "bible", *args, "--yes",
                 env={"LIN_TEST_KILL_AT": "train-step:13"})
    assert p.returncode == -signal.SIGKILL
    p = lin_proc(folder, "train", "--resume", "--gpus", "2", "--device", "cpu", "--yes",
                 env={"OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    (folder / "base").symlink_to(train_assets / "base")
    repo = Repo.open(folder / ".lineage")
    c = repo.commit(repo.head())
    everything = _tokens_of_first_units(folder, 10**9)
    units = -(-everything // SEQ)
    assert c.metrics["world_size"] == 2 and c.metrics["steps"] == 10 + -(-(units - 10 * BATCH) // (2 * BATCH))
    assert c.metrics["tokens_trained"] == everything  # one whole epoch, as uninterrupted
    session = c.metrics["steps"] - 10
    done = _tokens_of_first_units(folder, 10 * BATCH)
    assert f"this session: {session} steps, {everything - done:,} tokens in " in p.stdout, p.stdout
    (did,) = c.datasets
    assert repo.refs.resolve(f"refs/data/{repo.objects.get(did, 'dataset').content}") == did


@pytest.mark.slow
def test_gpus_1_on_resume_of_a_two_process_run_is_taken(tmp_path, train_assets):  # noqa: F811 - the fixture
    folder = new_store(tmp_path / "w", train_assets)
    p = lin_proc(folder, "train", "--data", "bible.jsonl", "--name", "bible", *_args(max_steps="12"),
                 "--gpus", "2", "--yes", env={"OMP_NUM_THREADS": "1", "LIN_TEST_KILL_AT": "train-step:7"})
    assert p.returncode != 0
    p = lin_proc(folder, "runs", "--json")
    (run,) = json.loads(p.stdout)
    assert run["step"] == 5 and run["settings"]["gpus"] == 2
    p = lin_proc(folder, "train", "--resume", "--gpus", "1", "--device", "cpu", "--yes")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "starting 2 processes" not in p.stderr and "trained on 2 process(es), now 1" in p.stderr
    (folder / "base").symlink_to(train_assets / "base")
    repo = Repo.open(folder / ".lineage")
    m = repo.commit(repo.head()).metrics
    # the run's end is 12 steps of 8 units: 96 units; 5 steps (40 units) were done on 2 processes
    assert m["world_size"] == 1 and m["steps"] == 5 + (96 - 40) // BATCH
    assert m["tokens_trained"] == _tokens_of_first_units(folder, 96)


def test_final_commit_does_not_move_a_branch_moved_meanwhile(tmp_path, train_assets):  # noqa: F811 - the fixture
    """A version committed on main while the run trains: the trained version is kept under its
    name, main stays (exit 6, the run committed and gone)."""
    folder = new_store(tmp_path / "w", train_assets)
    pause = tmp_path / "paused"
    env = {**os.environ, "LIN_NO_PROGRESS": "1", "LIN_TEST_PAUSE_AT": "train-step:3",
           "LIN_TEST_PAUSE_FILE": str(pause)}
    env.pop("LIN_STORE", None)
    proc = subprocess.Popen([sys.executable, "-m", "lineagestore.cli.main", "train", "--data", "bible.jsonl",
                             "--name", "bible", *_args(max_steps="5"), "--yes"],
                            cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not pause.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        repo = Repo.open(folder / ".lineage")
        side = publish(repo, lambda b: b.put_object(Tree([])), name="side")  # main moves to v002_side
        pause.unlink()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 6, out + err
    assert "v003_bible was committed, but main moved to v002_side" in err
    repo = Repo.open(folder / ".lineage")
    assert repo.refs.resolve("refs/heads/main") == side.id and repo.head() == side.id
    v3 = repo.commit(repo.resolve("v003_bible"))
    assert v3.parents == [repo.resolve("v001_base")] and repo.refs.names("refs/runs/") == []


def test_final_loss_is_the_last_step_and_rates_scale_by_processes(tmp_path, train_assets):  # noqa: F811 - the fixture
    from test_train_support import SETTINGS

    from lineagestore.cli.versions_cmd import _fmt_metrics
    from lineagestore.train.estimate import earlier_rate
    from lineagestore.train.plan import make_plan
    from lineagestore.train.settings import TrainSettings
    from lineagestore.train.trainer import train
    folder = new_store(tmp_path / "w", train_assets)
    repo = Repo.open(folder / ".lineage")
    settings = TrainSettings.build({**SETTINGS, "max_steps": 7, "log_every": 5})
    res = train(repo, make_plan(repo, data=[folder / "bible.jsonl"], name="seven", settings=settings, measure=False))
    m = res.metrics
    assert len(res.losses) == 7 and m["final_loss"] == res.losses[-1] and m["first_loss"] == res.losses[0]
    # the last interval is the mean of steps 6 and 7: not the last step's loss
    assert m["loss_per_interval"] == pytest.approx([sum(res.losses[:5]) / 5, sum(res.losses[5:]) / 2])
    assert _fmt_metrics({"final_loss": 10.0, "lr": 2.0}) == "final_loss=10.00 lr=2"
    # an earlier run on 2 processes: its rate, halved, estimates a 1-process run (and says so)
    model = {"params": m["model_params"]}
    rate, how = earlier_rate(repo, model, {"type": "cpu"}, world=1)
    assert rate == m["tokens_per_s"] and "scaled" not in how
    publish(repo, lambda b: repo.commit(res.id).tree, name="two", kind="train", parents=[res.id],
            metrics={**m, "tokens_per_s": 1000.0, "world_size": 2})
    rate, how = earlier_rate(repo, model, {"type": "cpu"}, world=1)
    assert rate == 500.0 and "on 2 process(es), scaled to 1" in how
