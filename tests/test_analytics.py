"""Per-step series, the fixed evaluation and its notes, and `lin stats` (issue 14, items 1-3).

The figures of `lin stats` are checked against values computed by hand on a small lineage; the
series and the notes against what a real training run (a separate process) recorded; kill -9 of
a run keeps the series of its last checkpoint, and the resumed run records the same steps as an
uninterrupted one.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_train_support import TRAIN_ARGS, lin_proc, new_store, train_assets  # noqa: F401 - fixture

from lineagestore import Repo
from lineagestore.analytics.stats import FileShare, VersionInput, compute_stats, fit_power_law
from lineagestore.core.errors import CorruptObject
from lineagestore.core.store import MemoryObjectStore
from lineagestore.train import series as S
from lineagestore.train.checkpoint import latest
from lineagestore.train.evalnotes import NOTES_REF

# ------------------------------------------------------------------------------ hand-computed figures


def _lineage() -> list[VersionInput]:
    """v1 (root) -> v2 -> v3, and v5 branching from v2 without an evaluation."""
    return [
        VersionInput("v1", "v001_base", None, eval_loss=3.0),
        VersionInput("v2", "v002_a", "v1", tokens=1_000_000_000, device_hours=2.0, eval_loss=2.5,
                     files=(FileShare("a.jsonl", "fa", 100),)),
        VersionInput("v3", "v003_ab", "v2", tokens=3_000_000_000, device_hours=4.0, eval_loss=2.2,
                     files=(FileShare("a.jsonl", "fa", 100), FileShare("b.jsonl", "fb", 300)),
                     duplicate_records=50, duplicate_tokens=1_500_000_000),
        VersionInput("v5", "v005_c", "v2", tokens=1_000_000_000, device_hours=1.0,
                     files=(FileShare("c.jsonl", "fc", 10),)),
    ]


def test_per_version_gains_by_hand():
    s = compute_stats(_lineage(), "v3", 10**12, {"filename": "held.jsonl"})
    v = {x.name: x for x in s.versions}
    assert v["v001_base"].gain is None and v["v001_base"].eval_before is None
    # v2: 3.0 -> 2.5 over 1e9 tokens and 2 device-hours
    assert (v["v002_a"].eval_before, v["v002_a"].eval_after) == (3.0, 2.5)
    assert v["v002_a"].gain == pytest.approx(0.5)
    assert v["v002_a"].gain_per_billion_tokens == pytest.approx(0.5)
    assert v["v002_a"].gain_per_device_hour == pytest.approx(0.25)
    # v3: 2.5 -> 2.2 over 3e9 tokens and 4 device-hours
    assert v["v003_ab"].gain == pytest.approx(0.3)
    assert v["v003_ab"].gain_per_billion_tokens == pytest.approx(0.1)
    assert v["v003_ab"].gain_per_device_hour == pytest.approx(0.075)
    # v5 has no evaluation: no gain, and no rate (never a division by a missing number)
    assert v["v005_c"].gain is None and v["v005_c"].gain_per_billion_tokens is None
    assert {x.name: x.cumulative_tokens for x in s.versions} == {
        "v001_base": 0, "v002_a": 1_000_000_000, "v003_ab": 4_000_000_000, "v005_c": 2_000_000_000}


def test_per_file_gains_shared_by_examples_by_hand():
    files = {f.filename: f for f in compute_stats(_lineage(), "v3", 10**12).files}
    # a.jsonl: all of v2 (1e9 tokens, gain 0.5, 2 h) + a quarter of v3 (0.75e9, 0.075, 1 h)
    a = files["a.jsonl"]
    assert a.tokens == pytest.approx(1.75e9) and a.gain == pytest.approx(0.575)
    assert a.device_hours == pytest.approx(3.0)
    assert a.gain_per_billion_tokens == pytest.approx(0.575 / 1.75)
    assert a.gain_per_device_hour == pytest.approx(0.575 / 3.0)
    # b.jsonl: three quarters of v3
    b = files["b.jsonl"]
    assert b.tokens == pytest.approx(2.25e9) and b.gain == pytest.approx(0.225)
    assert b.gain_per_billion_tokens == pytest.approx(0.1) and b.gain_per_device_hour == pytest.approx(0.075)
    # best gain per token first; a file without any evaluated version last
    ordered = [f.filename for f in compute_stats(_lineage(), "v3", 10**12).files]
    assert ordered == ["a.jsonl", "b.jsonl", "c.jsonl"] and files["c.jsonl"].gain is None


def test_curve_duplicates_and_a_trend_refused_below_three_points():
    s = compute_stats(_lineage(), "v3", 10**12)
    assert [(c["name"], c["tokens"], c["eval_loss"]) for c in s.curve] == [
        ("v001_base", 0, 3.0), ("v002_a", 1_000_000_000, 2.5), ("v003_ab", 4_000_000_000, 2.2)]
    # two points with tokens > 0 (the root has none): no fit, and the reason says so
    assert not s.trend.ok and s.trend.points == 2 and "needs 3" in s.trend.reason
    assert s.trend.projected_loss is None
    # 50 records, 1.5e9 tokens, at v3's own 4 h per 3e9 tokens: 2 device-hours not spent
    assert (s.duplicates.records, s.duplicates.tokens) == (50, 1_500_000_000)
    assert s.duplicates.device_hours == pytest.approx(2.0)
    # two files the queue parked as duplicates, 30 and 10 records, 1e9 and 2e9 tokens, at the
    # store's 7 device-hours per 5e9 tokens (v2, v3, v5)
    s = compute_stats(_lineage(), "v3", 10**12, parked=[(30, 1_000_000_000), (10, 2_000_000_000)])
    d = s.duplicates
    assert (d.parked_files, d.parked_records, d.parked_tokens) == (2, 40, 3_000_000_000)
    assert d.parked_device_hours == pytest.approx(3e9 * 7 / 5e9)
    json.dumps(s.to_dict(), allow_nan=False)  # plain JSON, no NaN


def test_power_law_exact_and_with_residuals_by_hand():
    # loss halves every 10x tokens: b = log10(2), a = 4 * (1e6)^b = 256; at 1e12: 4 / 2^6
    t = fit_power_law([1e6, 1e7, 1e8], [4.0, 2.0, 1.0], goal=10**12)
    assert t.ok and t.b == pytest.approx(math.log10(2)) and t.a == pytest.approx(256.0)
    assert t.residual_sd == pytest.approx(0.0, abs=1e-12)
    assert t.projected_loss == pytest.approx(0.0625) and t.projected_low == pytest.approx(0.0625)
    # ln T = 0, 1, 2, 3 and ln L = 1, 0, 0, -1: slope -0.6, intercept 0.9, residuals
    # 0.1, -0.3, 0.3, -0.1, s = sqrt(0.2 / 2); at ln T = 5: ln L = -2.1 +- 2s
    t = fit_power_law([math.exp(k) for k in range(4)], [math.e, 1.0, 1.0, 1 / math.e], goal=round(math.exp(5)))
    assert t.b == pytest.approx(0.6) and t.a == pytest.approx(math.exp(0.9))
    s = math.sqrt(0.1)
    assert t.residual_sd == pytest.approx(s)
    g = math.log(round(math.exp(5)))
    assert t.projected_loss == pytest.approx(math.exp(0.9 - 0.6 * g))
    assert t.projected_low == pytest.approx(math.exp(0.9 - 0.6 * g - 2 * s))
    assert t.projected_high == pytest.approx(math.exp(0.9 - 0.6 * g + 2 * s))
    assert "range" in t.statement
    assert not fit_power_law([1e6, 2e6], [3.0, 2.0], goal=10**12).ok


# ------------------------------------------------------------------------------ the series format


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 300), st.integers(0, 2**32))
def test_segment_round_trip(n, seed):
    rng = np.random.default_rng(seed)
    cols = {"step": np.arange(1, n + 1, dtype="<u8"), "tokens": np.cumsum(rng.integers(1, 9999, n)).astype("<u8"),
            "loss": rng.standard_normal(n).astype("<f4"), "lr": rng.random(n).astype("<f4"),
            "grad_norm": np.where(rng.random(n) < 0.1, np.nan, rng.random(n)).astype("<f4"),
            "tokens_per_s": rng.random(n).astype("<f4"), "wall_s": np.cumsum(rng.random(n))}
    data = S.encode_segment(cols)
    back = S.decode_segment(data)
    for name, _d in S.COLUMNS:
        assert back[name].tobytes() == np.asarray(cols[name], dtype=_d).tobytes(), name
    assert S.encode_segment(back) == data  # one encoding per content


def test_hostile_segments_are_refused():
    good = S.encode_segment({n: np.ones(3, dtype=d) for n, d in S.COLUMNS})
    for bad in (b"", b"XSER" + good[4:], good[:4] + b"\x02" + good[5:], good[:-3],
                good[:8] + (10**9).to_bytes(8, "little") + good[16:], good[:8] + (4).to_bytes(8, "little") + good[16:]):
        with pytest.raises(CorruptObject):
            S.decode_segment(bad, "seg")


def test_the_writer_appends_segments_and_never_rewrites_earlier_ones(monkeypatch):
    monkeypatch.setattr(S, "MAX_ROWS", 4)
    store = MemoryObjectStore()
    w = S.SeriesWriter()
    for i in range(1, 11):
        w.add(i, 100 * i, 1.0 / i, 1e-3, 0.5, 1000.0, float(i))
    t1 = w.store(store)  # 10 rows: segments of 4, 4, 2
    first = list(w.segments)
    w.add_eval({"step": 10, "loss": 2.0})
    for i in range(11, 14):
        w.add(i, 100 * i, 1.0 / i, 1e-3, 0.5, 1000.0, float(i))
    t2 = w.store(store)
    assert w.segments[:3] == first and len(w.segments) == 4  # the old ones named again, by id
    s1, s2 = S.read_series(store, t1), S.read_series(store, t2)
    assert s1.step.tolist() == list(range(1, 11)) and s2.step.tolist() == list(range(1, 14))
    assert s2.tokens.tolist() == [100 * i for i in range(1, 14)] and s2.evals == [{"step": 10, "loss": 2.0}]
    assert [e.name for e in store.get(t2, "tree").items()] == [
        "000000000001.seg", "000000000005.seg", "000000000009.seg", "000000000011.seg", "evals.json"]
    resumed = S.SeriesWriter.resume(store, t1)
    assert resumed.last_step == 10
    with pytest.raises(ValueError):
        resumed.add(10, 0, 0.0, 0.0, 0.0, 0.0, 0.0)  # a step recorded twice is a bug, never stored


def test_full_groups_of_segments_become_subtrees_named_again_by_id(monkeypatch):
    monkeypatch.setattr(S, "MAX_ROWS", 4)
    monkeypatch.setattr(S, "GROUP", 2)
    store = MemoryObjectStore()
    w = S.SeriesWriter()
    for i in range(1, 11):
        w.add(i, i, 1.0, 1e-3, 0.5, 1.0, float(i))
    t1 = w.store(store)
    root = {e.name: e for e in store.get(t1, "tree").items()}
    assert sorted(root) == ["000000000001.grp", "000000000009.seg", "evals.json"]
    assert [e.name for e in store.get(root["000000000001.grp"].id, "tree").items()] == [
        "000000000001.seg", "000000000005.seg"]
    # resumed from that checkpoint: the sealed group is named again, never rewritten
    r = S.SeriesWriter.resume(store, t1)
    assert (r.last_step, [g[1] for g in r.groups], [x[0] for x in r.segments]) == (
        10, [root["000000000001.grp"].id], ["000000000009.seg"])
    for i in range(11, 16):
        r.add(i, i, 1.0, 1e-3, 0.5, 1.0, float(i))
    t2 = r.store(store)
    names = sorted(e.name for e in store.get(t2, "tree").items())
    assert names == ["000000000001.grp", "000000000009.grp", "000000000015.seg", "evals.json"]
    assert S.read_series(store, t2).step.tolist() == list(range(1, 16))
    # a group whose first segment is not its name, or a stray entry, is refused
    from lineagestore.core.objects import Tree, TreeEntry
    g = root["000000000001.grp"]
    bad = store.put_object(Tree(entries=[TreeEntry("000000000002.grp", "tree", g.id, g.size), root["evals.json"]]))
    with pytest.raises(CorruptObject, match="does not start with its first segment"):
        S.read_series(store, bad)
    bad = store.put_object(Tree(entries=[root["evals.json"], TreeEntry("x.seg", "blob", root["evals.json"].id, 2)]))
    with pytest.raises(CorruptObject, match="unexpected entry"):
        S.read_series(store, bad)


# ------------------------------------------------------------------------------ a real run

EVAL_ARGS = [*TRAIN_ARGS, "--no-measure", "--eval-every", "5"]
BIBLE = ["--data", "bible.jsonl", "--name", "bible"]


def _store_with_eval_set(folder: Path, assets: Path) -> Path:
    from tools import samples
    new_store(folder, assets)
    samples.write_jsonl(folder / "heldout.jsonl", samples.bible_records(400, 30))  # no line of bible.jsonl
    lin_proc(folder, "eval", "set", "heldout.jsonl", check=True)
    return folder


@pytest.fixture(scope="module")
def trained(train_assets, tmp_path_factory):  # noqa: F811 - the fixture
    """A store with an evaluation set and one version trained on it (16 steps, eval every 5)."""
    folder = _store_with_eval_set(tmp_path_factory.mktemp("an") / "w", train_assets)
    lin_proc(folder, "train", *BIBLE, *EVAL_ARGS, "--yes", check=True)
    return folder


def _copy(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(folder, dst, symlinks=True)
    return dst


def test_the_run_records_its_series_compute_and_evaluations(trained):
    repo = Repo.open(trained / ".lineage")
    assert (trained / ".lineage" / "format").read_text() == "4\n"
    c = repo.commit(repo.head())
    s = repo.series("HEAD")
    assert s.step.tolist() == list(range(1, 17))
    assert int(s.tokens[-1]) == c.metrics["tokens_trained"] and bool(np.all(np.diff(s.tokens.astype(int)) > 0))
    # one loss per step (--log-every 1): the metrics' curve, as float32
    assert s.loss.tobytes() == np.array(c.metrics["loss_per_interval"], dtype="<f4").tobytes()
    assert s.lr[0] == np.float32(1e-3) and bool(np.all(np.isfinite(s.grad_norm)))
    assert bool(np.all(s.tokens_per_s > 0)) and bool(np.all(np.diff(s.wall_s) > 0))
    assert [e["step"] for e in s.evals] == [5, 10, 15, 16]
    assert s.evals[-1]["loss"] == c.metrics["eval_loss"]
    compute = c.extra["compute"]
    assert compute["device_kind"] == "cpu" and compute["devices"] == 1
    assert compute["device_hours"] > 0 and compute["device_hours"] == pytest.approx(compute["wall_s"] / 3600, rel=1e-3)
    # the version links its series: gc keeps it as long as the version
    assert c.extra["series"] in c.links()
    # the base was measured before training (its "before"), the version at its end
    notes = repo.eval_notes()
    base = repo.versions()["v001_base"]
    head = repo.head()
    assert [r["by"] for r in notes[base]] == ["train base"] and [r["by"] for r in notes[head]] == ["train"]
    assert notes[head][0]["loss"] == c.metrics["eval_loss"]


def test_stats_figures_are_those_of_the_notes(trained, lin, monkeypatch):
    monkeypatch.chdir(trained)
    repo = Repo.open(trained / ".lineage")
    notes = repo.eval_notes()
    v = repo.versions()
    before, after = notes[v["v001_base"]][0]["loss"], notes[v["v002_bible"]][0]["loss"]
    code, out, err = lin("stats", "--json")
    assert code == 0, err
    doc = json.loads(out)
    row = next(r for r in doc["versions"] if r["name"] == "v002_bible")
    c = repo.commit(v["v002_bible"])
    tokens, dh = c.metrics["tokens_trained"], c.metrics["device_hours"]
    assert (row["eval_before"], row["eval_after"], row["tokens"]) == (before, after, tokens)
    assert row["gain"] == pytest.approx(before - after)
    assert row["gain_per_billion_tokens"] == pytest.approx((before - after) / (tokens / 1e9))
    assert row["gain_per_device_hour"] == pytest.approx((before - after) / dh)
    assert [f["filename"] for f in doc["files"]] == ["bible.jsonl"]
    assert doc["trend"]["ok"] is False and doc["eval_set"]["filename"] == "heldout.jsonl"
    code, out, _ = lin("stats")
    assert code == 0 and "v002_bible" in out and "gain" in out


def test_notes_are_shown_and_survive_gc_and_a_later_evaluation(trained, tmp_path, lin, monkeypatch):
    folder = _copy(trained, tmp_path)
    monkeypatch.chdir(folder)
    repo = Repo.open(folder / ".lineage")
    vid = repo.versions()["v002_bible"]
    loss = repo.eval_notes("v002")[vid][0]["loss"]
    for args in (["show", "v002"], ["log"]):
        code, out, err = lin(*args)
        assert code == 0 and f"eval     loss {loss:.4f} on heldout.jsonl" in out, out + err
    code, out, _ = lin("registry")
    assert json.loads(out)["v002_bible"]["eval_loss"] == loss
    code, out, err = lin("gc", "--confirm", "--grace", "0")
    assert code == 0, err
    code, out, err = lin("fsck")
    assert code == 0, out + err
    # measured again after the fact: the same number (same records, tokenization, precision)
    code, out, err = lin("eval", "run", "v001", "v002", "--force", "--device", "cpu", "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["v002_bible"]["loss"] == pytest.approx(loss, rel=1e-6) and rows["v002_bible"]["by"] == "eval run"
    repo = Repo.open(folder / ".lineage")
    assert [r["by"] for r in repo.eval_notes("v002")[vid]] == ["eval run"]  # same set and method: replaced
    assert repo.refs.resolve(NOTES_REF) is not None and repo.series("v002").step[-1] == 16


def test_the_eval_set_is_refused_if_trained_and_then_refused_for_training(trained, tmp_path, lin, monkeypatch):
    from tools import samples
    folder = _copy(trained, tmp_path)
    monkeypatch.chdir(folder)
    repo = Repo.open(folder / ".lineage")
    before = (repo.refs.resolve("refs/notes/eval-set"), sorted(repo.refs.as_dict("refs/data/")))
    # records bible.jsonl's run trained: refused, nothing written
    # (the run stopped at --max-steps: it trained 110 of the file's 200 records; the others stay trainable)
    (folder / "mixed.jsonl").write_text(json.dumps({"text": "never seen"}) + "\n" + (folder / "bible.jsonl").read_text())
    for f in ("bible.jsonl", "mixed.jsonl"):
        code, out, err = lin("eval", "set", f)
        assert code == 7 and "110 of its records were already trained (in v002_bible" in err, (f, err)
    repo = Repo.open(folder / ".lineage")
    assert (repo.refs.resolve("refs/notes/eval-set"), sorted(repo.refs.as_dict("refs/data/"))) == before
    # the other way: a file holding records of the evaluation set is refused for training,
    # --allow-overlap or not
    held = (folder / "heldout.jsonl").read_text().splitlines()[:2]
    samples.write_jsonl(folder / "new.jsonl", samples.bible_records(600, 20))
    (folder / "leak.jsonl").write_text((folder / "new.jsonl").read_text() + "\n".join(held) + "\n")
    for extra in ([], ["--allow-overlap"]):
        code, out, err = lin("train", "--data", "leak.jsonl", "--name", "leak", *EVAL_ARGS, *extra, "--yes")
        assert code != 0 and "2 of its records are in the evaluation set" in out + err, out + err
    code, out, err = lin("train", "--data", "heldout.jsonl", "--name", "held", *EVAL_ARGS, "--yes")
    assert code != 0 and "is the evaluation set" in out + err


def test_kill_9_keeps_the_checkpointed_series_and_the_resumed_run_records_the_same(
        trained, train_assets, tmp_path):  # noqa: F811 - the fixture
    reference = Repo.open(trained / ".lineage").series("HEAD")
    folder = _store_with_eval_set(tmp_path / "w", train_assets)
    p = lin_proc(folder, "train", *BIBLE, *EVAL_ARGS, "--yes", env={"LIN_TEST_KILL_AT": "train-step:13"})
    assert p.returncode == -signal.SIGKILL
    repo = Repo.open(folder / ".lineage")
    ck = latest(repo, "bible")
    assert ck is not None and ck.step == 10
    sid = S.series_of_state(repo.objects, ck.state)
    assert sid is not None
    kept = S.read_series(repo.objects, sid)
    assert kept.step.tolist() == list(range(1, 11))
    assert repo.run_series("bible").loss.tobytes() == kept.loss.tobytes()
    for name in ("tokens", "loss", "lr", "grad_norm"):  # bit-exact on the CPU
        assert getattr(kept, name).tobytes() == getattr(reference, name)[:10].tobytes(), name
    assert [e["step"] for e in kept.evals] == [5, 10]
    lin_proc(folder, "train", "--resume", "--device", "cpu", "--yes", check=True)
    s = Repo.open(folder / ".lineage").series("HEAD")
    assert s.step.tolist() == list(range(1, 17))
    for name in ("tokens", "loss", "lr", "grad_norm"):
        assert getattr(s, name).tobytes() == getattr(reference, name).tobytes(), name
    assert [(e["step"], e["loss"]) for e in s.evals] == [(e["step"], e["loss"]) for e in reference.evals]
    assert lin_proc(folder, "fsck").returncode == 0


def test_progress_adds_compute_eval_loss_and_the_queue_and_watch_redraws_until_ctrl_c(trained, lin, monkeypatch):
    import os
    import subprocess
    import sys
    import time
    monkeypatch.chdir(trained)
    repo = Repo.open(trained / ".lineage")
    v = repo.versions()
    before = repo.eval_notes()[v["v001_base"]][0]["loss"]
    c = repo.commit(v["v002_bible"])
    code, out, err = lin("progress", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["trained"] == c.metrics["tokens_trained"] and doc["device_hours"] == c.metrics["device_hours"]
    assert doc["eval_loss"] == c.metrics["eval_loss"] and doc["eval_first_name"] == "v001_base"
    assert doc["gain_per_device_hour"] == pytest.approx((before - c.metrics["eval_loss"]) / c.metrics["device_hours"])
    assert doc["queue"] == {"queued": 0, "running": 0, "parked": 0, "done": 0} and doc["runs"] == []
    env = {**os.environ, "LIN_NO_PROGRESS": "1"}
    env.pop("LIN_STORE", None)
    p = subprocess.Popen([sys.executable, "-m", "lineagestore.cli.main", "progress", "--watch", "--interval", "0.2"],
                         cwd=trained, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # not a timing assertion: only lets a few redraws happen before Ctrl-C
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "Eval loss" in out and "Queue     main: 0 queued" in out


def test_two_processes_record_one_series_and_count_both_devices(train_assets, tmp_path):  # noqa: F811 - the fixture
    folder = _store_with_eval_set(tmp_path / "w", train_assets)
    args = list(EVAL_ARGS)
    args[args.index("--max-steps") + 1] = "4"
    args[args.index("--eval-every") + 1] = "2"
    p = lin_proc(folder, "train", *BIBLE, *args, "--gpus", "2", "--yes", env={"OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    repo = Repo.open(folder / ".lineage")
    c = repo.commit(repo.head())
    s = repo.series("HEAD")
    assert s.step.tolist() == [1, 2, 3, 4] and int(s.tokens[-1]) == c.metrics["tokens_trained"] == 4 * 2 * 4 * 32
    assert [e["step"] for e in s.evals] == [2, 4] and s.evals[-1]["loss"] == c.metrics["eval_loss"]
    compute = c.extra["compute"]
    assert compute["devices"] == 2 and compute["device_hours"] == pytest.approx(2 * compute["wall_s"] / 3600, rel=1e-3)
    assert [r["by"] for r in repo.eval_notes("HEAD")[repo.head()]] == ["train"]
