"""A training run pushed, trained on and garbage-collected pushes again: gc collects a live run's
earlier checkpoints (docs/format.md, "Training runs"), so the remote's older checkpoint is no
longer reachable through ``parent``; the run's own reflog vouches for it. A run that another
store trained on from the same checkpoint is never overwritten, whether this store can walk the
histories or not. Real folder remotes, real gc, checkpoints written as the trainer writes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_model_dir
from test_checkpoint_retention import write_run

from lineagestore import Repo
from lineagestore.guard import gc
from lineagestore.remote.session import run_descends
from lineagestore.remote.sync import PushRejected, push

RUN = "refs/runs/r"


def _remote_ref(folder: Path, ref: str) -> str:
    return (folder / ref).read_text().strip()


@pytest.fixture
def setup(store_dir, lin, tmp_path):
    repo = Repo.open(store_dir / ".lineage")
    repo.import_model(make_model_dir(tmp_path / "base", seed=1), "base")
    remote = tmp_path / "remote"
    assert lin("remote", "add", "origin", remote)[0] == 0
    return repo, remote


def test_a_run_pushed_then_trained_on_and_collected_pushes_forward(setup, lin):
    repo, remote = setup
    first = write_run(repo, "r", 3)
    code, out, err = lin("push", "origin")
    assert code == 0, err
    assert _remote_ref(remote, RUN) == first[-1]
    more = write_run(repo, "r", 7, seed=1, parent=first[-1])
    gc.collect(repo, grace_s=0)
    # gc took every checkpoint but the last keep_checkpoints (2) and the one the remote-tracking
    # ref names: the walk down ``parent`` from the tip stops at a collected one
    assert [c for c in [*first, *more] if repo.objects.has(c)] == [first[-1], *more[-2:]]
    assert run_descends(repo, first[-1], more[-1]) is None  # the parents alone cannot tell
    assert run_descends(repo, first[-1], more[-1], RUN) is True  # the run's reflog can
    code, out, err = lin("push", "origin")
    assert code == 0, (out, err)
    assert _remote_ref(remote, RUN) == more[-1]
    assert lin("verify", "origin", "--full")[0] == 0


def test_a_run_trained_on_elsewhere_is_never_overwritten(setup, lin, tmp_path):
    repo, remote = setup
    first = write_run(repo, "r", 3)
    assert lin("push", "origin")[0] == 0
    code, out, err = lin("clone", remote, tmp_path / "other")
    assert code == 0, err
    other = Repo.open(tmp_path / "other" / ".lineage")
    assert other.refs.resolve(RUN) == first[-1]  # the clone took the run, and trains it on
    theirs = write_run(other, "r", 6, seed=2, parent=first[-1])
    mine = write_run(repo, "r", 6, seed=3, parent=first[-1])
    assert lin("push", "origin")[0] == 0  # this store moves the remote run first
    assert _remote_ref(remote, RUN) == mine[-1]
    # here the run's walk is complete down to its first checkpoint: theirs is not in it
    assert run_descends(repo, theirs[-1], mine[-1], RUN) is False
    # the clone has the run from the checkpoint it took, so its walk stops there, and again after
    # gc took its own earlier checkpoints: either way refused, with what to do, the remote untouched
    for collect in (False, True):
        if collect:
            gc.collect(other, grace_s=0)
            assert [c for c in theirs if other.objects.has(c)] == theirs[-2:]
        with pytest.raises(PushRejected) as e:
            push(other, "origin")
        text = str(e.value)
        assert f"{RUN}: the remote run is at {mine[-1][:10]} (not in this store), which this store cannot " \
               f"place in the history of yours, {theirs[-1][:10]}" in text, text
        assert "Nothing was overwritten; `lin fetch origin`" in text and "`lin push origin r:r-2`" in text, text
    assert _remote_ref(remote, RUN) == mine[-1]
    code, out, err = lin("verify", "origin", "--full")
    assert code == 0, (out, err)
    # the hint's way out works: the run under another name, beside the remote's
    res = push(other, "origin", ["r:r-2"])
    assert [(u.ref, u.status) for u in res.refs if u.ref.startswith("refs/runs/")] == [("refs/runs/r-2", "new")]
    assert (_remote_ref(remote, "refs/runs/r-2"), _remote_ref(remote, RUN)) == (theirs[-1], mine[-1])


def test_a_run_copied_here_and_moved_on_there_is_behind_not_refused(setup, lin, tmp_path):
    """A clone takes the runs (for recovery) without training them: when their owner pushes on,
    the clone's next push leaves the run alone ("behind") and pushes the rest."""
    repo, remote = setup
    first = write_run(repo, "r", 3)
    assert lin("push", "origin")[0] == 0
    assert lin("clone", remote, tmp_path / "other")[0] == 0
    other = Repo.open(tmp_path / "other" / ".lineage")
    more = write_run(repo, "r", 4, seed=1, parent=first[-1])
    assert lin("push", "origin")[0] == 0
    other.commit_folder(make_model_dir(tmp_path / "m2", seed=5), "second")
    res = push(other, "origin")
    run = next(u for u in res.refs if u.ref == RUN)
    assert (run.status, run.old, run.new) == ("behind", more[-1], first[-1]), run
    assert "since this store last saw it (lin pull)" in run.reason
    assert _remote_ref(remote, RUN) == more[-1]
    assert _remote_ref(remote, "refs/tags/v002_second") == other.resolve("v002_second")


def test_a_run_copied_here_follows_its_owner_on_pull(setup, lin, tmp_path):
    """The clone's copy of a run that did not move here takes the owner's newer checkpoint on
    pull, though the checkpoints between never came here; one trained on here stays, refused."""
    repo, remote = setup
    first = write_run(repo, "r", 3)
    assert lin("push", "origin")[0] == 0
    assert lin("clone", remote, tmp_path / "other")[0] == 0
    more = write_run(repo, "r", 4, seed=1, parent=first[-1])
    assert lin("push", "origin")[0] == 0
    code, out, err = lin("--store", tmp_path / "other" / ".lineage", "pull")
    assert code == 0, (out, err)
    other = Repo.open(tmp_path / "other" / ".lineage")
    assert other.refs.resolve(RUN) == more[-1]
    assert [e.new for e in other.refs.reflog(RUN)] == [first[-1], more[-1]]
    # trained on here as well: no longer a copy, and the owner's next checkpoints are refused
    mine = write_run(other, "r", 2, seed=2, parent=more[-1])
    theirs = write_run(repo, "r", 2, seed=3, parent=more[-1])
    assert lin("push", "origin")[0] == 0
    code, out, err = lin("--store", other.path, "pull")
    assert code == 6 and f"{RUN}: diverged: yours is at {mine[-1][:10]}" in err, (out, err)
    assert Repo.open(other.path).refs.resolve(RUN) == mine[-1] and _remote_ref(remote, RUN) == theirs[-1]
