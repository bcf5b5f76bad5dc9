"""Everything the dashboard shows, read from the store once into a plain JSON-able dataclass.

The page (``report.py``, ``serve.py``) never reads the store itself: it draws what
:func:`gather` returns. The curves follow the lineage of the active version (HEAD: every
ancestor, each once, in order of creation), the line `lin progress` counts toward the goal.

Long series are cut to :data:`POINTS_PER_CHART` points per chart by :func:`downsample`: the
x range is split into equal-count buckets and each bucket keeps, for every series, the point
of its lowest and of its highest value (plus the first and last point), so spikes survive and
the page stays small whatever the store's size. The lineage graph draws the
:data:`LINEAGE_NODES` newest versions; the data table lists :data:`DATA_ROWS` files.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ..analytics import Stats
from ..core.errors import LinError
from ..core.objects import Commit
from ..core.repo import Repo, utc_now
from .gains import eval_losses, gains_panel, read_stats, scaling_rows
from .steps import StepPoints, series_id, step_points

#: most x values one chart draws (each with a value per series); longer series are downsampled
POINTS_PER_CHART = 600
#: versions drawn in the lineage graph (the newest by version number)
LINEAGE_NODES = 200
#: data files listed one by one (the most recently registered); totals count them all
DATA_ROWS = 40
#: queue items listed per branch: the last QUEUE_DONE_ROWS done, then the others in queue order
QUEUE_ROWS = 60
QUEUE_DONE_ROWS = 10
#: training versions whose tokens and wall time make the "recent rate" of the ETA
RECENT_VERSIONS = 5


@dataclass
class Chart:
    """One chart: a shared x column, one y column per series (None where a series has no point)."""

    key: str
    title: str
    x_label: str
    x_kind: str  # "time" (unix seconds) | "tokens"
    labels: list[str]  # one per series
    x: list[float]
    ys: list[list[float | None]]
    names: list[str]  # the version each x belongs to (shown on hover)
    total: int  # points before downsampling
    source: str  # where the figures come from, in words
    log_x: bool = False  # x drawn on a log scale

    @property
    def points(self) -> int:
        """Points drawn: non-empty y values of all series."""
        return sum(v is not None for ys in self.ys for v in ys)


@dataclass
class Dashboard:
    """What the page shows (see docs/dashboard.md for each panel)."""

    generated: str
    store: str
    format_version: int
    head: dict[str, Any]
    goal: dict[str, Any]
    charts: list[Chart]
    lineage: dict[str, Any]
    queue: dict[str, Any]
    runs: list[dict[str, Any]]
    data: dict[str, Any]
    storage: dict[str, Any]
    backup: dict[str, Any]
    gains: dict[str, Any]  # what each token bought (lin stats), see gains.py
    #: whether the store holds per-step series, an evaluation set, a queue (the page says what is missing)
    sources: dict[str, bool] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------ helpers


def num(v: Any) -> float | None:
    """A finite number from a commit's metrics, or None (metrics come from files: never trust them)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def parse_time(ts: str) -> float | None:
    try:
        return _dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC).timestamp()
    except (TypeError, ValueError):
        return None


def downsample(n: int, ys: list[list[float | None]], limit: int = POINTS_PER_CHART) -> list[int]:
    """Indices (ascending) of the ``n`` x values to keep, at most ``limit``: all when few enough,
    else per bucket the minimum and maximum of every series, and the first and last x."""
    if n <= limit:
        return list(range(n))
    per_bucket = 2 * max(1, len(ys))
    buckets = max(1, (limit - 2) // per_bucket)
    keep = {0, n - 1}
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        for col in ys:
            vals = [(col[i], i) for i in range(lo, hi) if col[i] is not None]
            if vals:
                keep.add(min(vals)[1])
                keep.add(max(vals)[1])
    return sorted(keep)


def make_chart(key: str, title: str, x_label: str, x_kind: str, labels: list[str],
               rows: list[tuple[float, list[float | None], str]], source: str,
               limit: int = POINTS_PER_CHART, log_x: bool = False) -> Chart:
    """A chart from (x, [y per series], version name) rows, sorted by x and downsampled."""
    rows = sorted(rows, key=lambda r: r[0])
    ys = [[r[1][s] for r in rows] for s in range(len(labels))]
    idx = downsample(len(rows), ys, limit)
    total = sum(v is not None for col in ys for v in col)
    return Chart(key, title, x_label, x_kind, labels, strictly_increasing([rows[i][0] for i in idx]),
                 [[col[i] for i in idx] for col in ys], [rows[i][2] for i in idx], total, source, log_x)


def strictly_increasing(xs: list[float]) -> list[float]:
    """``xs`` (sorted) with each repeated value moved up by a relative 1e-12 (a millisecond on a
    date, a token at 10^12): uPlot does not draw a point whose x repeats the one before it at
    the end of the data, and several versions can share a creation second."""
    out = list(xs)
    for i in range(1, len(out)):
        if out[i] <= out[i - 1]:
            out[i] = out[i - 1] + max(abs(out[i - 1]) * 1e-12, 1e-9)
    return out


# ------------------------------------------------------------------------------ the lineage of HEAD


@dataclass
class Step:
    """A training version on HEAD's lineage, with the tokens trained before it."""

    id: str
    commit: Commit
    created: float | None
    tokens: int
    before: int  # cumulative tokens of the earlier versions in this list


def journey(repo: Repo, head: str | None) -> list[Step]:
    """HEAD's ancestors that report ``tokens_trained``, oldest first (by creation, then name)."""
    if head is None:
        return []
    found = []
    for cid, c in repo.all_ancestors(head):
        t = num(c.metrics.get("tokens_trained"))
        if t is not None and t > 0:
            found.append((c.created, c.name, cid, c, int(t)))
    found.sort(key=lambda r: (r[0], r[1]))
    out, cum = [], 0
    for created, _name, cid, c, t in found:
        out.append(Step(cid, c, parse_time(created), t, cum))
        cum += t
    return out


Row = tuple[float, list[float | None], str]


def _loss_points(s: Step) -> list[tuple[float, float]]:
    """(cumulative tokens, training loss) of a version without a series: its recorded loss
    intervals spread evenly over its tokens, or its final loss at its end."""
    m = s.commit.metrics
    raw = m.get("loss_per_interval")
    vals = [num(v) for v in raw] if isinstance(raw, list) else []
    pts = [v for v in vals if v is not None]
    if pts:
        k = len(pts)
        return [(s.before + s.tokens * (i + 1) / k, v) for i, v in enumerate(pts)]
    final = num(m.get("final_loss"))
    return [(float(s.before + s.tokens), final)] if final is not None else []


def _eval_loss(s: Step, evals: dict[str, float]) -> float | None:
    """The version's eval loss on the store's evaluation set (notes), else its ``eval_loss`` metric."""
    v = evals.get(s.id)
    return v if v is not None else num(s.commit.metrics.get("eval_loss"))


@dataclass
class Rows:
    tokens: list[Row] = field(default_factory=list)
    loss: list[Row] = field(default_factory=list)
    throughput: list[Row] = field(default_factory=list)


def _step_rows(name: str, before: int, ended: float | None, pts: StepPoints, out: Rows) -> dict[float, float]:
    """Rows of a run's steps (x: ``before`` + its tokens; time: the steps' training seconds laid
    back from ``ended``); the evaluations made during the run, by x."""
    wall_end = pts.wall_s[-1]
    for t, loss, tps, wall in zip(pts.tokens, pts.loss, pts.tokens_per_s, pts.wall_s, strict=True):
        x = before + t
        if loss is not None:
            out.loss.append((x, [loss, None], name))
        if ended is not None:
            when = ended - wall_end + wall
            out.tokens.append((when, [x], name))
            if tps is not None and tps > 0:
                out.throughput.append((when, [tps], name))
    return {before + t: v for t, v in pts.evals}


def _version_rows(s: Step, pts: StepPoints | None, evals_of: dict[str, float], out: Rows) -> None:
    """The chart rows of one version: from its per-step series when there is one, else from
    its metrics (one point per version, or its loss intervals)."""
    name, end = s.commit.name, float(s.before + s.tokens)
    evals: dict[float, float] = {}
    if pts is not None and pts.steps:
        evals = _step_rows(name, s.before, s.created, pts, out)
    else:
        out.loss += [(x, [y, None], name) for x, y in _loss_points(s)]
        if s.created is not None:
            out.tokens.append((s.created, [end], name))
            r = num(s.commit.metrics.get("tokens_per_s"))
            if r is not None and r > 0:
                out.throughput.append((s.created, [r], name))
    ev = _eval_loss(s, evals_of)
    if ev is not None:
        evals.setdefault(end, ev)  # the run's own evaluation at its end is the same measurement
    out.loss += [(x, [None, v], name) for x, v in sorted(evals.items())]


def live_runs(repo: Repo, head: str | None) -> list[tuple[str, str, float | None]]:
    """(label, series id, time of its checkpoint) of the unfinished runs training from HEAD: what
    `lin run` or `lin train` has trained since the last version, as of its last checkpoint."""
    from ..train.checkpoint import read_checkpoint
    from ..train.runs import list_runs
    from ..train.series import series_of_state
    out = []
    for r in list_runs(repo):
        if head is None or r.base != head:
            continue
        try:
            sid = series_of_state(repo.objects, read_checkpoint(repo, r.checkpoint).state)
        except (LinError, ValueError, KeyError):
            sid = None
        if sid:
            out.append((f"{r.output or r.name} (run {r.name}, {r.status})", sid, parse_time(r.updated)))
    return out


def curves(repo: Repo, steps: list[Step], evals: dict[str, float], live: list[tuple[str, str, float | None]]
           ) -> list[Chart]:
    """Tokens over time, training and eval loss over cumulative tokens, throughput over time."""
    sids = [series_id(s.commit) for s in steps]
    cap = max(16, 2 * POINTS_PER_CHART // max(1, sum(x is not None for x in sids) + len(live)))
    out = Rows()
    for s, sid in zip(steps, sids, strict=True):
        pts = step_points(repo, sid, cap, downsample) if sid else None
        _version_rows(s, pts, evals, out)
    trained = sum(s.tokens for s in steps)
    for label, sid, when in live:
        pts = step_points(repo, sid, cap, downsample)
        if pts is not None and pts.steps:
            run_evals = _step_rows(label, trained, when, pts, out)
            out.loss += [(x, [None, v], label) for x, v in sorted(run_evals.items())]
    how = ("per optimizer step from each run's series where kept (runs in progress from HEAD up to "
           "their last checkpoint), else per version from its metrics")
    return [
        make_chart("tokens", "Tokens trained over time", "date", "time", ["cumulative tokens"], out.tokens,
                   f"cumulative tokens of the active lineage over time, {how}"),
        make_chart("loss", "Loss over cumulative tokens", "tokens trained", "tokens",
                   ["training loss", "eval loss"], out.loss,
                   f"training loss {how} (loss_per_interval); eval loss of each version and of evaluations "
                   "during its run"),
        make_chart("throughput", "Throughput over time", "date", "time", ["tokens/s"], out.throughput,
                   f"tokens per second, {how} (tokens_per_s)"),
    ]


def goal_figures(repo: Repo, head: str | None, steps: list[Step]) -> dict[str, Any]:
    """Tokens toward ``goal.tokens``, and the ETA at the recent rate and at the calendar pace."""
    goal = repo.settings.goal.tokens
    trained = sum(s.tokens for s in steps)
    remaining = max(0, goal - trained)
    recent = steps[-RECENT_VERSIONS:]
    walls = [num(s.commit.metrics.get("wall_time_s")) for s in recent]
    wall = sum(w for w in walls if w is not None and w > 0)
    rate = sum(s.tokens for s in recent) / wall if wall > 0 else None
    times = [s.created for s in steps if s.created is not None]
    pace = trained / (max(times) - min(times)) if len(times) >= 2 and max(times) > min(times) else None
    now = _dt.datetime.now(_dt.UTC).timestamp()

    def eta(r: float | None) -> dict[str, Any] | None:
        if not r:
            return None
        s = remaining / r
        when = now + s
        return {"seconds": s, "date": _dt.datetime.fromtimestamp(when, _dt.UTC).strftime("%Y-%m-%d")
                if when < 253402300799 else None}

    dh = sum(d for s in steps if (d := num(s.commit.metrics.get("device_hours"))) is not None and d > 0)
    return {"goal": goal, "trained": trained, "remaining": remaining, "fraction": trained / goal if goal else 1.0,
            "device_hours": dh, "tokens_per_device_hour": trained / dh if dh > 0 else None,
            "versions": len(steps), "recent_versions": len(recent), "recent_rate": rate, "calendar_rate": pace,
            "eta_recent": eta(rate), "eta_calendar": eta(pace),
            "first": steps[0].commit.created if steps else None, "last": steps[-1].commit.created if steps else None}


# ------------------------------------------------------------------------------ the other panels


def lineage_graph(repo: Repo, head: str | None) -> dict[str, Any]:
    """The newest :data:`LINEAGE_NODES` versions with their parents (index into the list, or -1
    outside it), branch tips, other tags, and which one is active."""
    versions = repo.versions()
    ids = list(versions.values())[-LINEAGE_NODES:]
    index = {cid: i for i, cid in enumerate(ids)}
    tips: dict[str, list[str]] = {}
    for b, cid in sorted(repo.branches().items()):
        tips.setdefault(cid, []).append(b)
    labels: dict[str, list[str]] = {}
    for t, cid in sorted(repo.tags().items()):
        if t not in versions:
            labels.setdefault(cid, []).append(t)
    nodes = []
    for cid in ids:
        c = repo.commit(cid)
        nodes.append({"id": cid, "name": c.name, "kind": c.kind, "created": c.created,
                      "parents": [index.get(p, -1) for p in c.parents],
                      "branches": tips.get(cid, []), "tags": labels.get(cid, []), "active": cid == head,
                      "tokens": num(c.metrics.get("tokens_trained")), "final_loss": num(c.metrics.get("final_loss"))})
    return {"nodes": nodes, "total": len(versions), "shown": len(nodes), "head": head,
            "head_branch": repo.head_branch()}


def queue_panel(repo: Repo) -> dict[str, Any]:
    """The training queue of each branch that has one (`lin queue`)."""
    from ..queue import load, queue_branches
    out: list[dict[str, Any]] = []
    for branch in sorted(queue_branches(repo)):
        try:
            q = load(repo, branch)
        except (LinError, ValueError) as e:  # one unreadable queue must not hide the others
            out.append({"branch": branch, "error": f"{type(e).__name__}: {e}", "items": [], "counts": {}})
            continue
        items = [_queue_item(it) for it in getattr(q, "items", [])]
        paused = getattr(q, "paused", None)
        if not items and not paused:
            continue
        counts: dict[str, int] = {}
        for it in items:
            counts[it["status"]] = counts.get(it["status"], 0) + 1
        out.append({"branch": branch, "items": _queue_rows(items), "total": len(items), "counts": counts,
                    "paused": str(paused) if paused is not None else None})
    return {"available": True, "note": "" if out else "no queue (lin queue add FILE...; lin run trains it)",
            "branches": out}


def _queue_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most :data:`QUEUE_ROWS` items, in queue order: the last few done, then what is not done."""
    done = [it for it in items if it["status"] == "done"][-QUEUE_DONE_ROWS:]
    rest = [it for it in items if it["status"] != "done"][:QUEUE_ROWS - len(done)]
    keep = {id(it) for it in done + rest}
    return [it for it in items if id(it) in keep]


def _queue_item(it: Any) -> dict[str, Any]:
    g = getattr
    return {"file": str(g(it, "filename", None) or g(it, "path", None) or g(it, "name", "?")),
            "status": str(g(it, "status", "?")), "reason": g(it, "reason", None) or "",
            "version": g(it, "version", None), "tokens": num(g(it, "tokens", None))}


def runs_panel(repo: Repo) -> list[dict[str, Any]]:
    """Unfinished training runs (refs/runs): the one training now shows its step and tokens."""
    from ..train.runs import list_runs
    keep = ("name", "status", "step", "total_steps", "tokens_trained", "base_name", "output", "updated", "error")
    return [{k: getattr(r, k) for k in keep} for r in list_runs(repo)]


def data_panel(repo: Repo, eval_fingerprint: str | None = None) -> dict[str, Any]:
    """Registered data files: how many are trained, partly or not, and their tokens. The
    evaluation set (``eval_fingerprint``) is listed as such and left out of the training totals."""
    from ..data.registry import manifest
    entries = list(manifest(repo).values())
    totals = {"files": len(entries), "trained": 0, "partly trained": 0, "in training": 0, "untrained": 0,
              "tokens": 0, "tokens_trained": 0.0}
    rows = []
    for e in entries:
        if eval_fingerprint is not None and e.get("hash") == eval_fingerprint:
            totals["files"] -= 1
            rows.append({"file": e.get("filename", ""), "status": "evaluation set", "share": 0.0,
                         "tokens": int(num(e.get("tokens")) or 0), "examples": e.get("num_examples"),
                         "first_seen": e.get("first_seen", ""), "trained_in": []})
            continue
        st = str(e.get("status", "untrained"))
        totals[st] = totals.get(st, 0) + 1
        tok = num(e.get("tokens")) or 0.0
        share = num(e.get("share")) or 0.0
        totals["tokens"] += int(tok)
        totals["tokens_trained"] += tok * share
        rows.append({"file": e.get("filename", ""), "status": st, "share": share, "tokens": int(tok),
                     "examples": e.get("num_examples"), "first_seen": e.get("first_seen", ""),
                     "trained_in": list(e.get("trained_in", []))[-3:]})
    totals["tokens_trained"] = int(totals["tokens_trained"])
    return {"totals": totals, "files": rows[-DATA_ROWS:], "listed": min(len(rows), DATA_ROWS), "registered": len(rows)}


def _tree_size(path: str) -> tuple[int, int]:
    """(files, bytes) under ``path``; what vanishes while it is read (gc, a repack) is skipped."""
    files = size = 0
    stack = [path]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        files += 1
                        size += e.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    return files, size


def storage_panel(repo: Repo) -> dict[str, Any]:
    """Bytes of the store on disk: loose objects, packs, trash, derived cache."""
    if repo.path is None:
        return {"objects": 0, "bytes": 0, "pack_files": 0, "pack_bytes": 0, "trash_bytes": 0, "cache_bytes": 0,
                "total_bytes": 0}
    n, obj = _tree_size(str(repo.path / "objects"))
    pn, pb = _tree_size(str(repo.path / "objects" / "pack"))  # packs and their indexes (core/packs.py)
    n, obj = n - pn, obj - pb
    _, trash = _tree_size(str(repo.path / "trash"))
    _, cache = _tree_size(str(repo.path / "cache"))
    _, total = _tree_size(str(repo.path))
    return {"objects": n, "bytes": obj, "pack_files": pn, "pack_bytes": pb, "trash_bytes": trash,
            "cache_bytes": cache, "total_bytes": total}


def backup_panel(repo: Repo) -> dict[str, Any]:
    """The backup state from this store's own records (no network), without the per-version list."""
    from ..remote.backup import backup_status
    st = backup_status(repo)
    pending = st.get("pending")
    return {"remote": st.get("remote"), "url": st.get("url"), "backed_up": st.get("backed_up", 0),
            "total": st.get("total", 0), "damaged": st.get("damaged") is not None,
            "pending": bool(pending), "summary": st.get("summary", "")}


def gather(repo: Repo) -> Dashboard:
    """Read everything the page shows. Read-only: it takes no lock and writes nothing."""
    # the journey, the data ledger, lin stats and the backup state each walk every commit and
    # list every tag: within one snapshot each commit is read once and the tags listed once
    with repo.snapshot_reads():
        return _gather(repo)


def _eval_fingerprint(st: Stats | None) -> str | None:
    fp = st.eval_set.get("fingerprint") if st is not None and isinstance(st.eval_set, dict) else None
    return fp if isinstance(fp, str) else None


def _gather(repo: Repo) -> Dashboard:
    head = repo.head()
    steps = journey(repo, head)
    st, why = read_stats(repo)
    charts = curves(repo, steps, eval_losses(st), live_runs(repo, head))
    charts.append(make_chart("scaling", "Eval loss over cumulative tokens, with the fitted trend to the goal",
                             "tokens trained", "tokens", ["eval loss", "fitted trend"], scaling_rows(st),
                             "eval loss of each evaluated version along first parents (lin stats); the power law "
                             "fitted to them, drawn to goal.tokens", log_x=True))
    queue = queue_panel(repo)
    lineage = {s.id for s in steps}
    return Dashboard(
        generated=utc_now(), store=str(repo.path or "(memory)"), format_version=repo.format_version,
        head={"id": head, "name": repo.name_of(head) if head else None, "branch": repo.head_branch()},
        goal=goal_figures(repo, head, steps), charts=charts, lineage=lineage_graph(repo, head), queue=queue,
        runs=runs_panel(repo), data=data_panel(repo, _eval_fingerprint(st)), storage=storage_panel(repo),
        backup=backup_panel(repo),
        gains=gains_panel(st, why, lineage),
        sources={"per-step series": any(series_id(s.commit) for s in steps),
                 "evaluation set": bool(st is not None and st.eval_set), "queue": bool(queue["branches"])},
        limits={"points_per_chart": POINTS_PER_CHART, "lineage_nodes": LINEAGE_NODES, "data_rows": DATA_ROWS,
                "queue_rows": QUEUE_ROWS, "recent_versions": RECENT_VERSIONS})
