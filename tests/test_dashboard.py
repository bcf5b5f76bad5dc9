"""lin report and lin serve: the figures, the self-contained page, the read-only server, and the
page itself in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

The browser tests skip when no browser can start, unless LIN_REQUIRE_BROWSER=1 (CI), which turns
the skip into a failure. Every count a test expects is computed here from the store's commits,
never taken from lineagestore.dashboard; the page's counts are read from its DOM.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import make_model_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from lineagestore import Repo
from lineagestore.core.errors import InvalidInput
from lineagestore.core.objects import Commit, Tree
from lineagestore.dashboard import data as dd
from lineagestore.dashboard.report import render, write_report
from lineagestore.dashboard.serve import make_server

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


@pytest.fixture
def store(tmp_path) -> Repo:
    return build_store(tmp_path / "s")


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


@pytest.fixture
def rich(tmp_path) -> Repo:
    return build_rich_store(tmp_path / "r")


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


# ------------------------------------------------------------------------------ the figures


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=3000), st.integers(10, 400))
def test_downsample_keeps_the_extremes_and_the_ends(values, limit):
    keep = dd.downsample(len(values), [list(values)], limit)
    assert keep == sorted(set(keep))
    if len(values) <= limit:
        assert keep == list(range(len(values)))
        return
    assert len(keep) <= limit
    assert keep[0] == 0 and keep[-1] == len(values) - 1
    kept = [values[i] for i in keep]
    assert min(kept) == min(values) and max(kept) == max(values)


def test_gather_follows_the_active_lineage(store):
    d = dd.gather(store)
    exp = expected_points(store)
    pts = {f"chart-{c.key}": c.points for c in d.charts}
    assert pts == {k: v for k, v in exp.items() if k.startswith("chart-")}
    assert d.lineage["shown"] == exp["lineage"] == 6
    assert d.goal["trained"] == 1000 + 2000 + 3000 + 4000  # main's lineage; the side branch is not in it
    nodes = {n["name"]: n for n in d.lineage["nodes"]}
    assert nodes["v006_side_try"]["branches"] == ["side"] and nodes["v005_step3"]["active"]
    assert nodes["v004_step2"]["tags"] == ["best"]
    assert nodes["v006_side_try"]["parents"] == [2]  # v003, by index
    json.loads(json.dumps(d.to_dict(), allow_nan=False))  # strict JSON: what is not a number is dropped


def test_gather_reads_series_notes_and_the_queue(rich):
    d = dd.gather(rich)
    exp = expected_points(rich)
    assert {f"chart-{c.key}": c.points for c in d.charts} == {k: v for k, v in exp.items() if k != "lineage"}
    assert exp["chart-tokens"] == 4 + SERIES_STEPS and exp["chart-scaling"] == 4 + 24
    loss = next(c for c in d.charts if c.key == "loss")
    at = dict(zip(loss.x, loss.ys[1], strict=True))
    before = 1000 + 2000 + 3000 + 4000  # v007 starts after main's four training versions
    assert at[before + 1000] == 2.55 and at[before + 2000] == 2.5  # the run's evaluation, then the note
    assert d.sources == {"per-step series": True, "evaluation set": True, "queue": True}
    (q,) = d.queue["branches"]
    assert q["branch"] == "main" and q["counts"] == {"queued": 2, "parked": 1}
    parked = [(Path(i["file"]).name, i["reason"]) for i in q["items"] if i["status"] == "parked"]
    assert parked == [("parked.jsonl", "loss went up")]
    g = d.gains
    assert g["available"] and g["trend"]["ok"] and g["eval_set"]["filename"] == "eval.jsonl"
    rows = {v["name"]: v for v in g["versions"]}
    assert rows["v004_step2"]["eval_before"] == 2.9 and rows["v004_step2"]["eval_after"] == 2.7
    assert rows["v004_step2"]["gain"] == pytest.approx(0.2)
    assert d.goal["device_hours"] == pytest.approx(5.0 / 3600)


def _checkpoint_with_series(repo: Repo, run: str, steps: int) -> None:
    """A run in progress from HEAD, as the trainer leaves it: a checkpoint whose state tree names
    the run's series so far."""
    from lineagestore.core.objects import TreeEntry
    from lineagestore.train.checkpoint import write_checkpoint
    from lineagestore.train.series import SERIES_ENTRY, SeriesWriter
    w = SeriesWriter()
    for k in range(1, steps + 1):
        w.add(k, 50 * k, 2.0 - 0.01 * k, 1e-3, 0.5, 300.0, 0.1 * k)
    sid = w.store(repo.objects)
    state = repo.objects.put_object(Tree(entries=[TreeEntry(SERIES_ENTRY, "tree", sid, w.tree_size)]))
    head = repo.head()
    with repo.writing():
        write_checkpoint(repo, run, step=steps, model=repo.commit(head).tree, state=state, parent=None,
                         meta={"base": head, "output": "next_file", "status": "running", "total_steps": 40,
                               "tokens_trained": 50 * steps, "created": "2026-01-01T00:00:00Z"},
                         message="test: checkpoint")


def test_a_run_in_progress_extends_the_curves(rich):
    before = {c.key: c.points for c in dd.gather(rich).charts}
    _checkpoint_with_series(rich, "live-run", 12)
    d = dd.gather(rich)
    after = {c.key: c.points for c in d.charts}
    assert after["loss"] - before["loss"] == 12 and after["tokens"] - before["tokens"] == 12
    loss = next(c for c in d.charts if c.key == "loss")
    trained = d.goal["trained"]  # the run's steps continue from the lineage's tokens
    assert loss.x[-1] == trained + 50 * 12 and loss.names[-1].startswith("next_file (run live-run")
    assert [r["name"] for r in d.runs] == ["live-run"] and d.runs[0]["step"] == 12


def test_report_is_self_contained_and_script_safe(store, tmp_path):
    out = tmp_path / "r.html"
    r = write_report(store, out)
    page = out.read_text()
    assert r.bytes == len(page.encode())
    assert "<script src" not in page and "<link" not in page and "@import" not in page
    assert "default-src 'none'" in page  # the page may not fetch anything
    assert page.count("</script>") == 3  # the data, uPlot, the page's script: nothing from the store
    assert "Copyright (c) 2022 Leon Sorokin" in page  # uPlot's licence travels with it
    assert HOSTILE not in page


def test_report_of_10000_versions_is_small(tmp_path):
    """A synthetic store of 10,000 training versions (in memory: the figures, not the disk, matter)."""
    repo = Repo.memory()
    tree = repo.objects.put_object(Tree(entries=[]))
    prev: list[str] = []
    lowest = (math.inf, "")
    for i in range(10_000):
        losses = [3.0 + math.sin(i / 50 + k) for k in range(20)]
        if i == 7777:
            losses[3] = -1.0  # one spike down: downsampling must keep it
        name = f"v{i + 1:05d}_s"
        c = Commit(tree=tree, parents=prev, name=name, kind="train",
                   metrics={"tokens_trained": 10**8, "wall_time_s": 100.0, "tokens_per_s": 10**6,
                            "loss_per_interval": losses},
                   created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1.7e9 + 3600 * i)))
        cid = repo.objects.put_object(c)
        repo.refs.set_if_equals(f"refs/tags/{name}", None, cid, "test")
        prev = [cid]
        lowest = min(lowest, (min(losses), name))
    repo.refs.set_if_equals("refs/heads/main", None, prev[0], "test")
    d = dd.gather(repo)
    page = render(d).encode()
    assert len(page) < 2_000_000, len(page)
    loss = next(c for c in d.charts if c.key == "loss")
    assert loss.total == 200_000 and len(loss.x) <= dd.POINTS_PER_CHART
    assert min(v for v in loss.ys[0] if v is not None) == -1.0 and lowest[1] in loss.names
    assert d.lineage["shown"] == dd.LINEAGE_NODES and d.lineage["total"] == 10_000
    assert d.goal["trained"] == 10**12


def test_report_refuses_a_folder_and_a_missing_folder(store, tmp_path):
    with pytest.raises(InvalidInput, match="is a folder"):
        write_report(store, tmp_path)
    with pytest.raises(InvalidInput, match="no such folder"):
        write_report(store, tmp_path / "nope" / "r.html")
    assert not (tmp_path / "nope").exists()


def test_lin_report_cli(store, tmp_path):
    out = tmp_path / "cli.html"
    p = subprocess.run([*LIN, "--store", str(store.path), "report", "-o", str(out), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["bytes"] == out.stat().st_size and r["versions"] == 6
    exp = expected_points(store)
    assert {f"chart-{k}": v for k, v in r["charts"].items()} == {k: v for k, v in exp.items() if k != "lineage"}


# ------------------------------------------------------------------------------ the server


@pytest.fixture
def server(store):
    srv = make_server(store.path, port=0, refresh_s=60)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _request(port: int, method: str, path: str, host: str | None = None, body: bytes | None = None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        c.putheader("Host", host or f"127.0.0.1:{port}")
        if body is not None:
            c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def test_server_serves_the_page_and_the_figures(server, store):
    status, headers, page = _request(server.port, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b'name="lin-live" content="60"' in page
    status, headers, body = _request(server.port, "GET", "/data.json")
    assert status == 200 and json.loads(body)["lineage"]["total"] == 6
    status, headers, body = _request(server.port, "HEAD", "/data.json")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    assert _request(server.port, "GET", "/data.json", host=None)[0] == 200
    etag = headers["ETag"]
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    c.request("GET", "/data.json", headers={"If-None-Match": etag})
    assert c.getresponse().status == 304
    c.close()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"])
def test_server_refuses_writes(server, store, method):
    before = sorted(p.name for p in (store.path / "refs" / "tags").iterdir())
    status, headers, _ = _request(server.port, method, "/data.json", body=b'{"x": 1}')
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert sorted(p.name for p in (store.path / "refs" / "tags").iterdir()) == before


@pytest.mark.parametrize("path", [
    "/../../etc/passwd", "/..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd",
    "/index.html/../../../etc/passwd", "/data.json/..%5c..%5cconfig.toml", "/config.toml", "/HEAD",
    "/.lineage/config.toml", "/objects", "/static/uPlot.iife.min.js", "/%00", "/etc/passwd",
])
def test_server_refuses_traversal(server, path):
    status, _, body = _request(server.port, "GET", path)
    assert status == 404 and b"root:" not in body and b"[core]" not in body


def test_server_refuses_a_foreign_host(server):
    """DNS rebinding: a page of evil.example resolving to 127.0.0.1 must not read the figures."""
    assert _request(server.port, "GET", "/data.json", host=f"evil.example:{server.port}")[0] == 421


def test_server_reads_the_store_once_per_refresh(server):
    before = server.figures.reads
    with ThreadPoolExecutor(50) as ex:
        codes = list(ex.map(lambda _: _request(server.port, "GET", "/data.json")[0], range(200)))
    assert codes == [200] * 200
    assert server.figures.reads == before  # within one refresh period: all from memory


def test_figures_are_read_again_only_when_the_store_changed(store, monkeypatch):
    from lineagestore.dashboard import serve
    clock = [1000.0]
    monkeypatch.setattr(serve.time, "monotonic", lambda: clock[0])
    figures = serve.Figures(store.path, refresh_s=2, poll_s=4)
    first = figures.get(wait=True)
    assert figures.reads == 1
    clock[0] += 10  # past the refresh period, nothing changed: checked, not read
    assert figures.get(wait=True) is first and figures.reads == 1
    tree = store.commit(store.head()).tree
    store.write_commit(tree=tree, parents=[store.head()], name="later", kind="train",
                       metrics={"tokens_trained": 10})
    clock[0] += 1  # within the refresh period: the change is not looked for yet
    assert figures.get(wait=True) is first
    clock[0] += 1.5
    second = figures.get(wait=True)
    assert figures.reads == 2 and json.loads(second.data)["lineage"]["total"] == 7
    clock[0] += serve.MAX_STALE_S + 1  # a minute on, read again whatever the refs say
    assert figures.get(wait=True) is not second and figures.reads == 3


def test_a_due_refresh_runs_in_the_background(store, monkeypatch):
    """A request that finds the figures due gets the previous ones at once; one thread reads."""
    from lineagestore.dashboard import serve
    clock = [1000.0]
    monkeypatch.setattr(serve.time, "monotonic", lambda: clock[0])
    figures = serve.Figures(store.path, refresh_s=2, poll_s=4)
    first = figures.get(wait=True)
    gate, started = threading.Event(), threading.Event()
    real_gather = serve.gather

    def slow_gather(repo):
        started.set()
        assert gate.wait(60)
        return real_gather(repo)
    monkeypatch.setattr(serve, "gather", slow_gather)
    store.write_commit(tree=store.commit(store.head()).tree, parents=[store.head()], name="later", kind="train",
                       metrics={"tokens_trained": 10})
    clock[0] += 3
    assert figures.get() is first  # due: a background reading starts, this request does not wait
    assert started.wait(60)
    assert all(figures.get() is first for _ in range(20))  # while it reads: the previous figures
    gate.set()
    for _ in range(600):
        if figures.get() is not first:
            break
        time.sleep(0.05)
    assert json.loads(figures.get().data)["lineage"]["total"] == 7 and figures.reads == 2


def _start_serve(store: Repo, *extra: str) -> tuple[subprocess.Popen, dict]:
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


def _stop(p: subprocess.Popen) -> None:
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


def test_load_50_clients_while_the_store_is_written(store):
    """50 clients x 4 requests against `lin serve` (refreshing every second) while another process
    commits 30 versions: every answer is 200 with whole JSON, and the figures move forward."""
    p, info = _start_serve(store, "--refresh", "1")
    writer = subprocess.Popen([sys.executable, "-c", COMMITTER, str(store.path), "30"], cwd=ROOT)
    try:
        def client(k: int) -> list[int]:
            seen = []
            for _ in range(4):
                status, _h, body = _request(info["port"], "GET", "/data.json" if k % 2 else "/")
                assert status == 200, status
                if k % 2:
                    seen.append(json.loads(body)["lineage"]["total"])
            return seen
        with ThreadPoolExecutor(50) as ex:
            results = list(ex.map(client, range(50)))
        assert writer.wait(timeout=300) == 0
        assert all(r == sorted(r) for r in results)  # no client sees the store go backwards
        final = json.loads(_request(info["port"], "GET", "/data.json")[2])
        deadline = time.monotonic() + 60
        while final["lineage"]["total"] != 36 and time.monotonic() < deadline:
            time.sleep(0.5)
            final = json.loads(_request(info["port"], "GET", "/data.json")[2])
        assert final["lineage"]["total"] == 36
    finally:
        writer.kill() if writer.poll() is None else None
        _stop(p)


def test_serve_elsewhere_warns(store):
    p, info = _start_serve(store, "--bind", "0.0.0.0")
    try:
        assert info["loopback"] is False
    finally:
        _stop(p)
        assert p.stderr is not None
        err = p.stderr.read()
    assert "warning: listening on 0.0.0.0" in err


# ------------------------------------------------------------------------------ a real browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    required = os.environ.get("LIN_REQUIRE_BROWSER") == "1"

    def unavailable(why: str):
        if required:
            pytest.fail(f"{why} (LIN_REQUIRE_BROWSER=1)", pytrace=False)
        pytest.skip(f"{why}; `make test` installs Debian's chromium and chromium-driver")

    if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
        unavailable("no /usr/bin/chromium or /usr/bin/chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--no-first-run", "--window-size=1280,1800",
              f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    except Exception as e:  # noqa: BLE001 - any failure to start means: no browser here
        unavailable(f"chromium did not start: {str(e).splitlines()[0]}")
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait_drawn(driver, expected: dict[str, int], timeout: float = 30) -> dict[str, str | None]:
    """The data-points attribute of each chart, once every one is set (the script ran)."""
    from selenium.webdriver.support.ui import WebDriverWait

    def read(d):
        got = {k: d.find_element("id", k).get_attribute("data-points") if k.startswith("chart-")
               else d.find_element("css selector", "#lineage .body").get_attribute("data-points") for k in expected}
        return got if all(v is not None for v in got.values()) else False
    return WebDriverWait(driver, timeout).until(read)


def _png_pixels(png: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, bytes per pixel, unfiltered rows) of an 8-bit non-interlaced PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(png):
        n, kind = struct.unpack(">I4s", png[pos:pos + 8])
        chunk = png[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _c, _f, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and interlace == 0 and ctype in (2, 6)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw, stride, out, prev = zlib.decompress(idat), w * bpp, bytearray(), bytearray(w * bpp)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        prev = line
    return w, h, bpp, bytes(out)


def _check_screenshot(driver, path: Path) -> None:
    """The screenshot is saved, and each chart's plotting area holds more than its background."""
    assert driver.save_screenshot(str(path))
    w, _h, bpp, px = _png_pixels(path.read_bytes())
    ratio = driver.execute_script("return window.devicePixelRatio") or 1
    for canvas in driver.find_elements("css selector", ".chart canvas"):
        r = canvas.rect
        colours = set()
        for y in range(int(r["y"] * ratio) + 2, int((r["y"] + r["height"]) * ratio) - 2, 3):
            for x in range(int(r["x"] * ratio) + 2, int((r["x"] + r["width"]) * ratio) - 2, 3):
                colours.add(px[(y * w + x) * bpp:(y * w + x) * bpp + 3])
        assert len(colours) > 3, f"chart {canvas.find_element('xpath', '../../..').get_attribute('id')} is blank"


def _severe(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def _statuses(driver, suffix: str) -> list[int]:
    """HTTP statuses of the responses to URLs ending in ``suffix`` since the log was last read."""
    out = []
    for e in driver.get_log("performance"):
        msg = json.loads(e["message"])["message"]
        if msg.get("method") == "Network.responseReceived" and msg["params"]["response"]["url"].endswith(suffix):
            out.append(msg["params"]["response"]["status"])
    return out


def _http_requests(driver, log: list | None = None) -> list[str]:
    urls = []
    for e in driver.get_log("performance") if log is None else log:
        msg = json.loads(e["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            url = msg["params"]["request"]["url"]
            if url.startswith(("http:", "https:")):
                urls.append(url)
    return urls


def test_report_in_chromium_offline(browser, rich, tmp_path):
    store = rich
    out = tmp_path / "report.html"
    write_report(store, out)
    assert HOSTILE_FILE not in out.read_text()
    browser.get_log("performance")
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions",
                            {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    try:
        browser.get(out.as_uri())
        exp = expected_points(store)
        got = _wait_drawn(browser, exp)
        assert {k: int(v) for k, v in got.items()} == exp
        assert browser.title != "owned" and _severe(browser) == []
        assert _http_requests(browser) == []
        _check_screenshot(browser, tmp_path / "report.png")
        _hover_names_a_version(browser, store)
        queue_text = browser.find_element("css selector", "#queue .body").text
        assert HOSTILE_FILE in queue_text  # shown as the text it is
    finally:
        browser.execute_cdp_cmd("Network.emulateNetworkConditions",
                                {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})


def _hover_names_a_version(driver, store: Repo) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    over = driver.find_element("css selector", "#chart-loss .u-over")
    ActionChains(driver).move_to_element_with_offset(over, over.rect["width"] // 2 - 2, 0).perform()
    tip = driver.find_element("id", "tip").text
    assert any(tip.startswith(v) for v in store.versions()), tip
    assert "training loss: " in tip or "eval loss: " in tip


def test_report_on_a_phone_and_empty_store(browser, tmp_path):
    """An empty store draws empty states without errors, in a phone-sized window."""
    repo = Repo.init(tmp_path / "e" / ".lineage")
    out = tmp_path / "empty.html"
    write_report(repo, out)
    browser.set_window_size(390, 844)
    try:
        browser.get(out.as_uri())
        got = _wait_drawn(browser, {"chart-tokens": 0, "chart-loss": 0, "chart-throughput": 0, "lineage": 0})
        assert set(got.values()) == {"0"} and _severe(browser) == []
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390 + 1, width  # nothing wider than the phone
    finally:
        browser.set_window_size(1280, 1800)


def test_report_prints(browser, store, tmp_path):
    """In print the panels stack one under the other, and the page prints to a PDF."""
    import base64
    out = tmp_path / "print.html"
    write_report(store, out)
    browser.get(out.as_uri())
    _wait_drawn(browser, expected_points(store))
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        assert browser.execute_script("return getComputedStyle(document.querySelector('main')).display") == "block"
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    pdf = base64.b64decode(browser.print_page())
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    assert _severe(browser) == []


def test_served_page_redraws_while_versions_arrive(browser, store, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait
    p, info = _start_serve(store, "--refresh", "1")
    try:
        browser.get(info["url"])
        exp = expected_points(store)
        assert {k: int(v) for k, v in _wait_drawn(browser, exp).items()} == exp
        subprocess.run([sys.executable, "-c", COMMITTER, str(store.path), "2"], cwd=ROOT, check=True, timeout=120)
        store.refs = Repo.open(store.path).refs
        # v007 and v008 go on main after v005: the page picks them up by itself
        exp = expected_points(Repo.open(store.path))
        WebDriverWait(browser, 60).until(
            lambda d: {k: int(v or -1) for k, v in _wait_drawn(d, exp).items()} == exp)
        assert _severe(browser) == []
        log = browser.get_log("performance")
        assert all(u.startswith(info["url"]) for u in _http_requests(browser, log))
        time.sleep(2.5)  # two more polls of unchanged figures
        statuses = _statuses(browser, "data.json")
        assert 304 in statuses and set(statuses) <= {200, 304}  # an unchanged poll is revalidated, not resent
        _check_screenshot(browser, tmp_path / "served.png")
    finally:
        _stop(p)
