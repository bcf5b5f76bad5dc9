"""The dashboard on a large store: reading it, its page, and `lin serve` under 50 polling pages.

    nice python benchmarks/bench_dashboard.py                    # 2,000 versions (~1 min)
    nice python benchmarks/bench_dashboard.py --versions 10000   # the size the report must fit in 2 MB

A synthetic store on disk: N training versions in a line, each with 20 loss intervals, written as
objects and tag files directly (no reflogs: only the reading is measured). Timed, each
``--repeat`` times (median):

- ``gather``: everything the page shows, read from the store (what `lin report` and each real
  refresh of `lin serve` cost) -- the baseline;
- ``state check``: what `lin serve` does every refresh period before deciding to read again (every
  ref, HEAD, config), as a ratio to ``gather``;
- ``render``: the page from the gathered figures; its size against the 2 MB bound;
- ``serve``: 50 threads x 20 requests of /data.json against an in-process `lin serve` whose
  figures are due at every request (refresh 1 s, so the state is checked, not read): requests per
  second and the slowest answer, next to the same 50 x 20 against figures never due.

The store is removed at the end (``--keep DIR`` keeps it, and reuses it when it exists).
"""

from __future__ import annotations

import argparse
import http.client
import math
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lineagestore import Repo
from lineagestore.core.objects import Commit, Tree
from lineagestore.dashboard.data import gather
from lineagestore.dashboard.report import render
from lineagestore.dashboard.serve import make_server, state_key


def build(root: Path, n: int) -> None:
    repo = Repo.init(root / ".lineage")
    tree = repo.objects.put_object(Tree(entries=[]))
    prev: list[str] = []
    for i in range(n):
        c = Commit(tree=tree, parents=prev, name=f"v{i + 1:05d}_s", kind="train",
                   metrics={"tokens_trained": 10**8, "wall_time_s": 100.0, "tokens_per_s": 10**6,
                            "loss_per_interval": [3.0 + math.sin(i / 50 + k) for k in range(20)]},
                   created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1.7e9 + 3600 * i)))
        cid = repo.objects.put_object(c)
        (root / ".lineage" / "refs" / "tags" / c.name).write_text(cid + "\n")
        prev = [cid]
    (root / ".lineage" / "refs" / "heads" / "main").write_text(prev[0] + "\n")


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def hammer(port: int, clients: int = 50, each: int = 20) -> tuple[float, float]:
    """(requests per second, slowest answer in seconds) of ``clients`` x ``each`` GETs."""
    def one(_: int) -> float:
        worst = 0.0
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for _ in range(each):
            t = time.perf_counter()
            c.request("GET", "/data.json")
            r = c.getresponse()
            r.read()
            assert r.status == 200, r.status
            worst = max(worst, time.perf_counter() - t)
        c.close()
        return worst
    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        worst = max(ex.map(one, range(clients)))
    return clients * each / (time.perf_counter() - t), worst


def serve_round(store: Path, refresh_s: float) -> tuple[float, float]:
    srv = make_server(store, port=0, refresh_s=refresh_s)
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    th.start()
    try:
        if refresh_s < 60:
            time.sleep(refresh_s)  # the figures are due from here on
        return hammer(srv.port)
    finally:
        srv.shutdown()
        srv.server_close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--versions", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="keep (and reuse) the synthetic store in this folder")
    a = ap.parse_args()
    root = a.keep or Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    try:
        if not (root / ".lineage" / "format").exists():
            t = time.perf_counter()
            build(root, a.versions)
            print(f"built {a.versions} versions in {time.perf_counter() - t:.1f} s")
        repo = Repo.open(root / ".lineage")
        store = root / ".lineage"
        g, d = timed(lambda: gather(Repo.open(store)), a.repeat)
        k, _ = timed(lambda: state_key(store, Repo.open(store)), a.repeat)
        r, page = timed(lambda: render(d), a.repeat)  # type: ignore[arg-type]
        size = len(page.encode())  # type: ignore[union-attr]
        print(f"{'step':<34}{'seconds':>10}{'ratio':>10}")
        print(f"{'gather (baseline)':<34}{g:>10.3f}{1.0:>10.2f}")
        print(f"{'state check':<34}{k:>10.3f}{k / g:>10.3f}")
        print(f"{'render':<34}{r:>10.3f}{r / g:>10.3f}")
        print(f"page: {size:,} bytes ({size / 2_000_000:.1%} of 2 MB); {len(repo.versions())} versions")
        never_rps, never_worst = serve_round(store, 3600)
        due_rps, due_worst = serve_round(store, 1)
        print(f"serve, 50 x 20 GET /data.json, figures never due: {never_rps:,.0f} req/s, slowest {never_worst:.3f} s")
        print(f"serve, 50 x 20 GET /data.json, due every second:  {due_rps:,.0f} req/s, slowest {due_worst:.3f} s "
              f"({due_rps / never_rps:.2f} of the rate)")
    finally:
        if a.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
