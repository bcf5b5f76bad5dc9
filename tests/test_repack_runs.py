"""Which training checkpoints lin repack keeps hot: a run that can still resume reads its
checkpoint soon, so its weights stay loose and raw; the checkpoints of ended runs stay kept
(their reflog) but are packed like any old version, so a lineage made by `lin train` shrinks."""

from __future__ import annotations

import signal
import time

from test_train_support import TRAIN_ARGS, lin_proc, new_store, train_assets  # noqa: F401 - fixture

from lineagestore import Repo
from lineagestore.guard.fsck import check
from lineagestore.guard.repack import files_of, repack, temperature
from lineagestore.versions.materialize import iter_file_bytes
from lineagestore.versions.models import walk_tree


def _pieces(repo: Repo, roots: set[str]) -> set[str]:
    t = temperature(repo, 1, time.time())
    return {o for o in files_of(repo, t.graph, roots) if t.graph.type.get(o) == "blob"}


def test_ended_runs_checkpoints_are_cold_and_a_resumable_runs_is_hot(train_assets, tmp_path):  # noqa: F811
    folder = new_store(tmp_path / "w", train_assets)
    lin_proc(folder, "train", "--data", "bible.jsonl", "--name", "one", *TRAIN_ARGS, "--yes", check=True)
    lin_proc(folder, "train", "--data", "bible2.jsonl", "--name", "two", *TRAIN_ARGS, "--yes", check=True)
    p = lin_proc(folder, "train", "--data", "chat.jsonl", "--name", "three", *TRAIN_ARGS, "--yes",
                 env={"LIN_TEST_KILL_AT": "train-step:13"})
    assert p.returncode == -signal.SIGKILL
    repo = Repo.open(folder / ".lineage")
    repo.config.set("core.hot_versions", 1)
    repo.save_config()
    repo = Repo.open(folder / ".lineage")
    before = {name: {f.path: b"".join(iter_file_bytes(repo.objects, f))
                     for f in walk_tree(repo.objects, repo.commit(repo.resolve(name)).tree)}
              for name in repo.versions()}
    t = temperature(repo, 1, time.time())
    resumable = repo.refs.resolve("refs/runs/three")
    assert resumable in t.hot_roots and resumable in t.kept_checkpoints
    ended = t.kept_checkpoints - {resumable}
    assert ended and not ended & t.hot_roots  # the two finished runs' checkpoints: kept, cold

    repack(repo)
    repo = Repo.open(folder / ".lineage")
    store = repo.objects
    first = repo.resolve("v002_one")
    cold = _pieces(repo, {first}) - _pieces(repo, t.hot_roots)
    assert cold and not any(store.is_loose(o) for o in cold)  # v002's weights are packed
    assert all(store.is_loose(o) for o in _pieces(repo, {resumable}))  # the resumable run's: raw
    assert check(repo).ok
    for name, files in before.items():  # every version reads back byte-exact
        tree = repo.commit(repo.resolve(name)).tree
        assert {f.path: b"".join(iter_file_bytes(store, f)) for f in walk_tree(store, tree)} == files
    lin_proc(folder, "train", "--resume", "--device", "cpu", "--yes", check=True)  # the run resumes
