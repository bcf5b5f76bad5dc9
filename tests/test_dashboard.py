"""lin report and lin serve: the figures, the self-contained page and the read-only server
(tests/test_dashboard_browser.py loads the page in a real headless Chromium).

Every count a test expects is computed from the store itself (tests/dashboard_stores.py), never
taken from lineagestore.dashboard.
"""

from __future__ import annotations

import http.client
import json
import math
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from dashboard_stores import (
    COMMITTER,
    HOSTILE,
    LIN,
    ROOT,
    SERIES_STEPS,
    build_rich_store,
    build_store,
    expected_points,
    start_serve,
    stop_serve,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from lineagestore import Repo
from lineagestore.core.errors import InvalidInput
from lineagestore.core.objects import Commit, Tree
from lineagestore.dashboard import data as dd
from lineagestore.dashboard.report import UPLOT_VERSION, render, write_report
from lineagestore.dashboard.serve import make_server


@pytest.fixture
def store(tmp_path) -> Repo:
    return build_store(tmp_path / "s")


@pytest.fixture
def rich(tmp_path) -> Repo:
    return build_rich_store(tmp_path / "r")


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


@given(st.lists(st.floats(0, 2e12), min_size=1, max_size=200))
def test_chart_x_values_strictly_increase(xs):
    """Repeated x values (versions created in the same second, an eval at a run's last token) are
    spread, so the chart library draws every point; each moves by at most 1e-9 (relative, per
    repeat before it)."""
    out = dd.strictly_increasing(sorted(xs))
    assert all(b > a for a, b in zip(out, out[1:], strict=False))
    n = len(xs)
    assert all(abs(o - x) <= n * 1e-9 * max(1.0, abs(x)) for o, x in zip(out, sorted(xs), strict=True))


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
    evals = [(round(x), v) for x, v in zip(loss.x, loss.ys[1], strict=True) if v is not None]
    before = 1000 + 2000 + 3000 + 4000  # v007 starts after main's four training versions
    assert evals[-2:] == [(before + 1000, 2.55), (before + 2000, 2.5)]  # the run's evaluation, then the note
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
    # the evaluation set is registered data, but held out: listed as such, not counted as untrained
    status = {Path(f["file"]).name: f["status"] for f in d.data["files"]}
    assert status["eval.jsonl"] == "evaluation set" and d.data["registered"] == 4
    assert d.data["totals"]["files"] == 3 and d.data["totals"]["untrained"] == 3


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
    assert f"/*! https://github.com/leeoniya/uPlot (v{UPLOT_VERSION}) */" in page  # the version named is the one vendored
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


def test_load_50_clients_while_the_store_is_written(store):
    """50 clients x 4 requests against `lin serve` (refreshing every second) while another process
    commits 30 versions: every answer is 200 with whole JSON, and the figures move forward."""
    p, info = start_serve(store, "--refresh", "1")
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
        stop_serve(p)


def test_serve_elsewhere_warns(store):
    p, info = start_serve(store, "--bind", "0.0.0.0")
    try:
        assert info["loopback"] is False
    finally:
        stop_serve(p)
        assert p.stderr is not None
        err = p.stderr.read()
    assert "warning: listening on 0.0.0.0" in err
