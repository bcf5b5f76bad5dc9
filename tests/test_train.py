"""`lin train`: commits with lineage, checkpoints, kill -9 / SIGTERM / failure and resume (bit-exact)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train_support import TRAIN_ARGS, final_state, lin_proc, new_store, train_assets  # noqa: F401 - fixture

from lineagestore import Repo
from lineagestore.versions.models import walk_tree

BIBLE = ["--data", "bible.jsonl", "--name", "bible"]
FAST = [*TRAIN_ARGS, "--no-measure"]


@pytest.fixture(scope="module")
def reference(train_assets, tmp_path_factory):  # noqa: F811 - the fixture
    """An uninterrupted run in its own process: (tree id, loss curve)."""
    folder = new_store(tmp_path_factory.mktemp("ref") / "w", train_assets)
    lin_proc(folder, "train", *BIBLE, *FAST, "--yes", check=True)
    tree, losses, metrics = final_state(folder)
    assert metrics["steps"] == 16 and len(losses) == 16
    return tree, losses


def _runs(lin, folder, monkeypatch) -> list[dict]:
    monkeypatch.chdir(folder)
    code, out, err = lin("runs", "--json")
    assert code == 0, err
    return json.loads(out)


def test_kill_9_and_resume_equals_uninterrupted(tmp_path, train_assets, reference, lin, monkeypatch):  # noqa: F811 - the fixture
    folder = new_store(tmp_path / "w", train_assets)
    code_repo = Path(__file__).resolve().parent.parent  # this project's git checkout: the "training code"
    p = lin_proc(folder, "train", *BIBLE, *FAST, "--code", str(code_repo), "--yes",
                 env={"LIN_TEST_KILL_AT": "train-step:13"})
    assert p.returncode == -signal.SIGKILL
    runs = _runs(lin, folder, monkeypatch)
    assert [(r["name"], r["status"], r["step"]) for r in runs] == [("bible", "stopped", 10)]
    repo = Repo.open(folder / ".lineage")
    assert list(repo.versions()) == ["v001_base"]  # nothing moved
    # `lin train --resume` alone: base, data, name and settings come from the run
    p = lin_proc(folder, "train", "--resume", "--device", "cpu", "--yes", check=True)
    assert "resumed from step 10" in p.stdout
    tree, losses, metrics = final_state(folder)
    assert (tree, losses) == reference  # bit-exact weights and the same loss at every step
    assert metrics["sessions"] == 2 and metrics["steps"] == 16
    # the resumed run (started again from a folder outside any git repo) keeps the code revision
    # taken when the run started
    repo = Repo.open(folder / ".lineage")
    code = repo.commit(repo.head()).code
    assert code is not None and code["path"] == str(code_repo) and len(code["commit"]) == 40
    assert _runs(lin, folder, monkeypatch) == []
    code, out, err = lin("fsck")
    assert code == 0, out + err


def _wait_delivered(pid: int, sig: int, deadline: float) -> None:
    """Wait until no thread of ``pid`` has ``sig`` pending: its handler ran at the C level, so the
    trainer's Python handler runs before the next step begins (a fixed sleep before releasing the
    pause point can be too short on a loaded machine)."""
    bit = 1 << (sig - 1)
    while True:
        pending = 0
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            try:
                lines = status.read_text().splitlines()
            except OSError:  # a thread that ended
                continue
            for x in lines:
                if x.startswith(("ShdPnd:", "SigPnd:")):
                    pending |= int(x.split()[1], 16)
        if not pending & bit:
            return
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_sigterm_checkpoints_and_same_command_resumes(tmp_path, train_assets, reference, lin, monkeypatch):  # noqa: F811 - the fixture
    folder = new_store(tmp_path / "w", train_assets)
    pause = tmp_path / "paused"
    env = {**os.environ, "LIN_NO_PROGRESS": "1", "LIN_TEST_PAUSE_AT": "train-step:13",
           "LIN_TEST_PAUSE_FILE": str(pause)}
    proc = subprocess.Popen([sys.executable, "-m", "lineagestore.cli.main", "train", *BIBLE, *FAST, "--yes"],
                            cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not pause.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # arrives while step 13 is being finished
        _wait_delivered(proc.pid, signal.SIGTERM, deadline)
        pause.unlink()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted at step 13" in err and "--resume" in err
    runs = _runs(lin, folder, monkeypatch)
    assert [(r["name"], r["status"], r["step"]) for r in runs] == [("bible", "interrupted", 13)]
    code, out, err = lin("train", *BIBLE, *FAST, "--yes")  # the same command again
    assert code == 0, err
    assert "resumes run 'bible' from step 13" in out
    assert final_state(folder)[:2] == reference


def test_failure_is_recorded_then_resumed_or_abandoned(tmp_path, train_assets, reference, lin, monkeypatch):  # noqa: F811 - the fixture
    import lineagestore.train.trainer as T
    folder = new_store(tmp_path / "w", train_assets)
    monkeypatch.chdir(folder)
    real = T.compute_loss
    calls = [0]

    def flaky(*a, **k):
        calls[0] += 1
        if calls[0] == 8:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(*a, **k)
    monkeypatch.setattr(T, "compute_loss", flaky)
    code, out, err = lin("train", *BIBLE, *FAST, "--yes")
    assert code == 1 and "illegal memory access" in err and "lin runs abandon bible" in err
    repo = Repo.open(folder / ".lineage")
    assert list(repo.versions()) == ["v001_base"] and repo.name_of(repo.head()) == "v001_base"
    code, out, _ = lin("runs", "--json")
    (r,) = json.loads(out)
    assert r["status"] == "failed" and r["step"] == 5 and "illegal memory access" in r["error"]
    code, out, _ = lin("runs", "show", "bible")
    assert code == 0 and "failed" in out and "step 5" in out
    monkeypatch.setattr(T, "compute_loss", real)
    code, out, err = lin("train", "--resume", "--run", "bible", "--device", "cpu", "--yes")
    assert code == 0, err
    assert final_state(folder)[:2] == reference
    # abandoning: a second failed run goes away, its checkpoints only in the reflog
    monkeypatch.setattr(T, "compute_loss", flaky)
    calls[0] = 0
    code, _, err = lin("train", "--data", "chat.jsonl", "--name", "chat", *FAST, "--yes")
    assert code == 1 and "illegal memory access" in err and "lin runs abandon chat" in err, err
    code, out, err = lin("runs", "abandon", "chat")  # not a terminal: refused without --yes
    assert code == 7 and "--yes" in err
    code, out, _ = lin("runs", "abandon", "chat", "--yes")
    assert code == 0 and "Abandoned run chat" in out
    assert json.loads(lin("runs", "--json")[1]) == []
    assert Repo.open(folder / ".lineage").refs.reflog("refs/runs/chat")[-1].message.startswith("abandon")


def test_a_model_type_transformers_does_not_know_is_invalid_input_naming_the_version(
        tmp_path, train_assets, lin, monkeypatch):  # noqa: F811 - the fixture
    """A base whose config.json names an architecture transformers does not know: training stops
    with exit 4 (invalid input) and one line naming the version and the cause, before any run."""
    import shutil
    odd = tmp_path / "odd"
    shutil.copytree(train_assets / "base", odd)
    config = json.loads((odd / "config.json").read_text())
    config["model_type"] = "no-such-architecture"
    (odd / "config.json").write_text(json.dumps(config))
    folder = new_store(tmp_path / "w", train_assets)
    Repo.open(folder / ".lineage").import_model(odd, "odd")
    monkeypatch.chdir(folder)
    code, out, err = lin("train", *BIBLE, *FAST, "--yes")
    assert code == 4, err
    assert "Traceback" not in err
    line = next(x for x in err.splitlines() if "cannot build the model" in x)
    assert "v002_odd" in line and "no-such-architecture" in line
    repo = Repo.open(folder / ".lineage")
    assert list(repo.versions()) == ["v001_base", "v002_odd"] and not repo.refs.names("refs/runs/")


def test_train_commits_lineage_data_metrics_code(tmp_path, train_assets, lin, monkeypatch):  # noqa: F811 - the fixture
    import pygit2
    from transformers import AutoModelForCausalLM
    folder = new_store(tmp_path / "w", train_assets)
    gitrepo = pygit2.init_repository(str(folder))
    (folder / "train.toml").write_text('lr = 1e-3\nseq_len = 32\nbatch_size = 4\n[train]\nmax_steps = 12\n')
    gitrepo.index.add("train.toml")
    gitrepo.index.write()
    sig = pygit2.Signature("t", "t@example.com")
    gitrepo.create_commit("HEAD", sig, sig, "code", gitrepo.index.write_tree(), [])
    monkeypatch.chdir(folder)
    code, out, err = lin("train", *BIBLE, "--config", "train.toml", "--device", "cpu", "--checkpoint-every", "5",
                         "--message", "first fine-tune")
    assert code == 7 and "--yes" in err  # no terminal to ask: refused, nothing trained
    code, out, err = lin("train", *BIBLE, "--config", "train.toml", "--device", "cpu", "--checkpoint-every", "5",
                         "--no-measure", "--yes", "--message", "first fine-tune")
    assert code == 0, err
    assert "Trained v002_bible" in out and "Active version: v002_bible" in out
    # chat data on top, only the embeddings frozen: their tensor costs nothing
    code, out, err = lin("train", "--data", "chat.jsonl", "--name", "chat", *FAST, "--max-steps", "6",
                         "--freeze", "model.embed_tokens.*", "--yes", "--json")
    assert code == 0, err
    res = json.loads(out)["result"]
    assert res["name"] == "v003_chat" and res["metrics"]["trainable_params"] < res["metrics"]["model_params"]
    code, out, _ = lin("log", "--json")
    v3, v2, v1 = json.loads(out)
    assert [v3["name"], v2["name"], v1["name"]] == ["v003_chat", "v002_bible", "v001_base"]
    assert v3["active"] and v3["parents"] == [v2["id"]] and v2["parents"] == [v1["id"]]
    assert v2["kind"] == "train" and v2["message"] == "first fine-tune"
    assert [d["file"] for d in v2["datasets"]] == ["bible.jsonl"]
    assert [d["file"] for d in v3["datasets"]] == ["chat.jsonl"]
    m = v2["metrics"]
    assert m["steps"] == 12 and m["tokens_trained"] == 12 * 4 * 32 and m["device"] == "cpu"
    assert m["final_loss"] < m["loss_per_interval"][0] and m["wall_time_s"] > 0
    # the rate is the tokens over the training time (each rounded: to 0.01 tokens/s and 1 ms)
    assert m["tokens_per_s"] == pytest.approx(m["tokens_trained"] / m["wall_time_s"], rel=1e-3, abs=0.01)
    assert v2["params"]["lr"] == 1e-3 and v2["params"]["seq_len"] == 32 and v2["params"]["max_steps"] == 12
    assert v2["code"]["commit"] == str(gitrepo.head.target)
    assert v2["env"]["torch"] and v2["env"]["transformers"]
    repo = Repo.open(folder / ".lineage")

    def embed_id(name):
        tree = repo.commit(repo.resolve(name)).tree
        tf = next(f for f in walk_tree(repo.objects, tree) if f.path == "model.safetensors")
        return {e.name: e.id for e in repo.objects.get(tf.id, "tensor-file").entries()}
    e2, e3 = embed_id("v002"), embed_id("v003")
    assert e2["model.embed_tokens.weight"] == e3["model.embed_tokens.weight"]
    assert e2["model.norm.weight"] != e3["model.norm.weight"]
    # the new version checks out as a loadable model
    code, _, err = lin("checkout", "v002")
    assert code == 0, err
    model = AutoModelForCausalLM.from_pretrained(repo.work_dir())
    assert model.model.norm.weight.dtype == torch.float32
    # progress toward the goal
    repo.config.set("goal.tokens", 100_000)
    repo.save_config()
    code, out, _ = lin("progress", "v003", "--json")
    g = json.loads(out)
    assert g["trained"] == 12 * 4 * 32 + res["tokens_trained"] and g["goal"] == 100_000
    assert g["remaining"] == 100_000 - g["trained"] and g["versions"] == 2
    # the rate is the lineage's tokens over its training time; the time left, what remains at that rate
    assert g["wall_time_s"] == pytest.approx(m["wall_time_s"] + v3["metrics"]["wall_time_s"])
    assert g["rate"] == pytest.approx(g["trained"] / g["wall_time_s"])
    assert g["eta_s"] == pytest.approx(g["remaining"] / g["rate"])
    code, out, _ = lin("progress")
    assert code == 0 and "Remaining" in out and "ETA" in out


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path, train_assets):  # noqa: F811 - the fixture
    folder = new_store(tmp_path / "w", train_assets)
    args = [a for a in FAST]
    args[args.index("--max-steps") + 1] = "4"
    p = lin_proc(folder, "train", *BIBLE, *args, "--gpus", "2", "--yes", env={"OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    repo = Repo.open(folder / ".lineage")
    assert list(repo.versions()) == ["v001_base", "v002_bible"]  # one commit: only rank 0 writes
    m = repo.commit(repo.head()).metrics
    assert m["world_size"] == 2 and m["steps"] == 4 and m["tokens_trained"] == 4 * 2 * 4 * 32
    assert repo.refs.names("refs/runs/") == []


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _running(pid: int) -> bool:
    """Alive and not a zombie (a reparented zombie may wait long for its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:].split()[0] != b"Z"


@pytest.mark.slow
def test_ranks_end_with_their_killed_launcher_and_the_run_resumes(tmp_path, train_assets):  # noqa: F811 - the fixture
    folder = new_store(tmp_path / "w", train_assets)
    args = [a for a in FAST]
    args[args.index("--max-steps") + 1] = "6"
    pause = tmp_path / "paused"
    env = {**os.environ, "LIN_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "LIN_TEST_PAUSE_AT": "train-step:2",
           "LIN_TEST_PAUSE_FILE": str(pause)}
    env.pop("LIN_STORE", None)
    log = tmp_path / "launcher.log"
    with open(log, "w") as sink:
        launcher = subprocess.Popen([sys.executable, "-m", "lineagestore.cli.main", "train", *BIBLE, *args,
                                     "--gpus", "2", "--yes"], cwd=folder, env=env, stdout=sink, stderr=sink)
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while not pause.exists():  # a rank finished step 2: the run exists (its step-0 checkpoint)
            assert launcher.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        ranks = _descendants(launcher.pid)  # torchrun's agent and the two ranks
        assert len(ranks) >= 3, ranks
        launcher.kill()
        assert launcher.wait() == -signal.SIGKILL
        # release the ranks (the second may pause after the first was released) until all ended
        while any(_running(p) for p in ranks):
            assert time.monotonic() < deadline, log.read_text()
            pause.unlink(missing_ok=True)
            time.sleep(0.05)
    finally:
        for p in ranks:
            if _running(p):
                os.kill(p, signal.SIGKILL)
    repo = Repo.open(folder / ".lineage")
    assert list(repo.versions()) == ["v001_base"], log.read_text()  # no rank committed on its own
    (run,) = json.loads(lin_proc(folder, "runs", "--json", check=True).stdout)
    assert (run["name"], run["status"], run["step"]) == ("bible", "interrupted", 2), log.read_text()
    p = lin_proc(folder, "train", "--resume", "--yes", env={"OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    repo = Repo.open(folder / ".lineage")
    assert list(repo.versions()) == ["v001_base", "v002_bible"] and repo.refs.names("refs/runs/") == []
    m = repo.commit(repo.head()).metrics
    assert m["steps"] == 6 and m["sessions"] == 2
