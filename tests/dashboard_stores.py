"""Stores for the dashboard's tests (tests/test_dashboard*.py), the counts each chart must draw,
computed from the store's commits, series and notes with lin's readers of those objects (never
with lineagestore.dashboard), and `lin serve` started as a real process."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from conftest import make_model_dir

from lineagestore import Repo
from lineagestore.dashboard import data as dd

ROOT = Path(__file__).resolve().parent.parent
LIN = [sys.executable, "-m", "lineagestore.cli.main"]
HOSTILE = "</script><script>document.title='owned'</script>"
HOSTILE_FILE = "next<script>document.title='owned'<!--.jsonl"  # a data file's name is text, never markup


# ------------------------------------------------------------------------------ a small store


def _train_metrics(i: int, n_intervals: int = 4, eval_loss: bool = True) -> dict:
    losses = [3.0 - 0.1 * i - 0.02 * k for k in range(n_intervals)]
    m = {"tokens_trained": 1000 * (i + 1), "wall_time_s": 2.0 + i, "tokens_per_s": 1000 * (i + 1) / (2.0 + i),
         "loss_per_interval": losses, "final_loss": losses[-1], "steps": 10 * n_intervals}
    if eval_loss:
        m["eval_loss"] = losses[-1] + 0.1
    return m


def build_store(root: Path) -> Repo:
    """v001 import; v002-v005 trained on main (v004 without eval loss, v005 with loss
    intervals that are not numbers); v006 on a side branch off v003; a tag; HEAD on main."""
    repo = Repo.init(root / ".lineage")
    base = repo.import_model(make_model_dir(root / "base"), "base")
    tree = repo.commit(base.id).tree
    prev = base.id
    for i in range(4):
        m = _train_metrics(i, eval_loss=(i != 2))
        if i == 3:
            m["loss_per_interval"] = [2.5, "not a number", None, 2.4, True, 2.3]
        prev, _c, _ = repo.write_commit(tree=tree, parents=[prev], name=f"step{i}", kind="train", metrics=m,
                                        message=HOSTILE)
    repo.update_ref("refs/heads/side", None, repo.resolve("v003"), "test: a side branch")
    repo.write_commit(tree=tree, parents=[repo.resolve("v003")], name="side_try", kind="train",
                      metrics=_train_metrics(9), branch="refs/heads/side")
    repo.update_ref("refs/tags/best", None, repo.resolve("v004"), "test: a tag")
    return repo


SERIES_STEPS = 20


def build_rich_store(root: Path) -> Repo:
    """build_store, then: an evaluation set with notes on v003, v004, v005; v007 on main with a
    per-step series (20 steps, an evaluation at step 10) and a note; a queue of three files, one
    parked with a reason."""
    from lineagestore.queue import add_files, park
    from lineagestore.train.evalnotes import write_note
    from lineagestore.train.evaluate import method_of, set_eval_set
    from lineagestore.train.series import SeriesWriter
    repo = build_store(root)
    ev = root / "eval.jsonl"
    ev.write_text("".join(json.dumps({"text": f"held out {i}"}) + "\n" for i in range(5)))
    es = set_eval_set(repo, ev).set
    method = method_of(repo.settings.eval.seq_len)
    for v, loss in (("v003", 2.9), ("v004", 2.7), ("v005", 2.6)):
        write_note(repo, repo.resolve(v), {"set": es.dataset, "method": method, "loss": loss})
    w = SeriesWriter()
    for k in range(1, SERIES_STEPS + 1):
        w.add(k, 100 * k, 2.5 - 0.01 * k, 1e-3, 0.5, 400.0 + k, 0.25 * k)
    w.add_eval({"step": 10, "tokens": 1000, "loss": 2.55})
    sid = w.store(repo.objects)
    vid, _c, _ = repo.write_commit(tree=repo.commit(repo.head()).tree, parents=[repo.head()], name="stepwise",
                                   kind="train", extra={"series": sid},
                                   metrics={"tokens_trained": 100 * SERIES_STEPS, "wall_time_s": 5.0,
                                            "tokens_per_s": 400.0, "device_hours": 5.0 / 3600})
    write_note(repo, vid, {"set": es.dataset, "method": method, "loss": 2.5})
    files = []
    for name in ("done.jsonl", "parked.jsonl", HOSTILE_FILE):
        (root / name).write_text("".join(json.dumps({"text": f"{name} {i}"}) + "\n" for i in range(3)))
        files.append(root / name)
    add_files(repo, "main", files)
    park(repo, "main", "parked.jsonl", "loss went up")
    return repo


def _finite(v) -> bool:
    return type(v) is float and math.isfinite(v)


def _noted(repo: Repo, cid: str) -> float | None:
    """A version's eval loss noted on the store's evaluation set (None: not evaluated)."""
    from lineagestore.train.evalnotes import note_of
    from lineagestore.train.evaluate import current_set
    es = current_set(repo)
    rows = [r for r in note_of(repo, cid) if es and r.get("set") == es.dataset]
    return rows[-1]["loss"] if rows else None


def _eval_of(repo: Repo, cid: str, c) -> float | None:
    """A version's eval loss: its note, else its metric."""
    noted = _noted(repo, cid)
    return noted if noted is not None else c.metrics.get("eval_loss")


def expected_points(repo: Repo) -> dict[str, int]:
    """What each chart must draw, computed from the commits of HEAD's lineage, their series and
    notes (read with lin's readers of those objects, not with the dashboard's code)."""
    from lineagestore.train.series import read_series
    tokens = loss = throughput = scaling = 0
    for cid, c in repo.all_ancestors(repo.head()):
        m = c.metrics
        t = m.get("tokens_trained")
        if not isinstance(t, (int, float)) or t <= 0:
            continue
        ev = _eval_of(repo, cid, c)
        sid = c.extra.get("series")
        if sid:
            s = read_series(repo.objects, sid)
            tokens += len(s)
            loss += sum(1 for v in s.loss.tolist() if math.isfinite(v))
            ev_tokens = {e["tokens"] for e in s.evals}
            loss += len(ev_tokens) + (1 if ev is not None and t not in ev_tokens else 0)
            throughput += sum(1 for v in s.tokens_per_s.tolist() if v > 0)
        else:
            tokens += 1
            loss += sum(1 for v in m.get("loss_per_interval", []) if _finite(v)) + (ev is not None)
            throughput += 1 if m.get("tokens_per_s", 0) > 0 else 0
    chain, cur = [], repo.head()
    while cur:  # the scaling curve follows first parents: noted versions with tokens trained so far
        chain.append(cur)
        c = repo.commit(cur)
        cur = c.parents[0] if c.parents else None
    cum = 0
    for cid in reversed(chain):
        cum += repo.commit(cid).metrics.get("tokens_trained", 0)
        scaling += 1 if cum > 0 and _noted(repo, cid) is not None else 0
    if scaling >= 3:
        scaling += 24  # the fitted trend, drawn at 24 points (docs/dashboard.md)
    return {"chart-tokens": tokens, "chart-loss": loss, "chart-throughput": throughput, "chart-scaling": scaling,
            "lineage": min(len(repo.versions()), dd.LINEAGE_NODES)}


def start_serve(store: Repo, *extra: str) -> tuple[subprocess.Popen, dict]:
    p = subprocess.Popen([*LIN, "--store", str(store.path), "serve", "--port", "0", "--json", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    text = ""
    assert p.stdout is not None
    for line in p.stdout:
        text += line
        if line.startswith("}"):
            return p, json.loads(text)
    p.kill()
    raise AssertionError(f"lin serve printed no address: {text!r} {p.stderr.read() if p.stderr else ''}")


def stop_serve(p: subprocess.Popen) -> None:
    p.terminate()
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


COMMITTER = """
import sys
from lineagestore import Repo
repo = Repo.open(sys.argv[1])
tree = repo.commit(repo.resolve("v001")).tree
for i in range(int(sys.argv[2])):
    repo.write_commit(tree=tree, parents=[repo.head()], name=f"live{i}", kind="train",
                      metrics={"tokens_trained": 500, "wall_time_s": 1.0, "tokens_per_s": 500.0,
                               "loss_per_interval": [2.0, 1.9]})
"""
