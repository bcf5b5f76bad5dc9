"""Read what the store records into the plain inputs of :mod:`.stats` (and the series of a version).

Only reads: commits, their datasets, the evaluation notes and the evaluation set. The dashboard
(``lineagestore.dashboard``) reads through these functions too.
"""

from __future__ import annotations

from typing import Any

from ..core.objects import Dataset
from ..core.repo import Repo
from ..train.evalnotes import all_notes, note_of
from ..train.evaluate import current_set, method_of
from ..train.series import Series, read_series
from .stats import FileShare, Stats, VersionInput, compute_stats

__all__ = ["eval_loss_of", "eval_summaries", "parked_duplicates", "run_series", "stats", "version_eval", "version_inputs", "version_series"]


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def eval_loss_of(rows: list[dict], set_id: str | None, method: str) -> float | None:
    """The newest noted eval loss of one set and method among a version's rows."""
    for r in reversed(rows):
        if r.get("set") == set_id and r.get("method") == method:
            return _number(r.get("loss"))
    return None


def _device_hours(metrics: dict, extra: dict) -> tuple[float, str | None]:
    raw = extra.get("compute")
    compute: dict = raw if isinstance(raw, dict) else {}
    dh = _number(metrics.get("device_hours")) or _number(compute.get("device_hours")) or 0.0
    kind = compute.get("device_kind") if isinstance(compute.get("device_kind"), str) else None
    return dh, kind


def version_inputs(repo: Repo) -> tuple[list[VersionInput], dict[str, Any] | None]:
    """Every version of the store as a :class:`VersionInput`, and the evaluation set (or None)."""
    es = current_set(repo)
    method = method_of(repo.settings.eval.seq_len)
    notes = all_notes(repo) if es is not None else {}
    datasets: dict[str, Dataset] = {}
    out = []
    for name, cid in repo.versions().items():
        c = repo.commit(cid)
        tokens = _number(c.metrics.get("tokens_trained"))
        extra = c.extra if isinstance(c.extra, dict) else {}
        dh, kind = _device_hours(c.metrics, extra)
        files = []
        for did in c.datasets:
            d = datasets.get(did) or datasets.setdefault(did, repo.objects.get(did, "dataset"))
            files.append(FileShare(d.filename, d.content, int(d.examples)))
        raw = extra.get("duplicates_avoided")
        dups: list[dict] = [d for d in raw if isinstance(d, dict)] if isinstance(raw, list) else []
        out.append(VersionInput(
            id=cid, name=name, parent=c.parents[0] if c.parents else None,
            tokens=int(tokens) if tokens and tokens > 0 else 0, device_hours=dh, device_kind=kind,
            eval_loss=eval_loss_of(notes.get(cid, []), es.dataset, method) if es else None,
            files=tuple(files), created=c.created,
            duplicate_records=sum(int(_number(d.get("records")) or 0) for d in dups),
            duplicate_tokens=sum(int(_number(d.get("tokens_est")) or 0) for d in dups)))
    return out, (dict(es.to_dict(), method=method) if es else None)


#: how the loop (lineagestore.runner) words a file parked by the duplicates check
PARKED_DUPLICATE = "check 3 (no duplicate training)"


def parked_duplicates(repo: Repo) -> list[tuple[int, int]]:
    """(records, tokens) of every file a queue parked because the duplicates check refused it."""
    from .. import queue as q
    out = []
    for branch in q.queue_branches(repo):
        for it in q.load(repo, branch).items:
            if it.status == q.PARKED and (it.reason or "").startswith(PARKED_DUPLICATE):
                out.append((int(it.examples), int(it.tokens)))
    return out


def stats(repo: Repo, rev: str | None = None) -> Stats:
    """``lin stats``: every figure of :func:`.stats.compute_stats` for this store, the lineage of
    ``rev`` (default HEAD) for the curve and the trend."""
    versions, es = version_inputs(repo)
    tip = repo.resolve(rev) if rev else repo.head()
    return compute_stats(versions, tip, repo.settings.goal.tokens, es, parked_duplicates(repo))


def version_series(repo: Repo, rev: str) -> Series:
    """The per-step series of a trained version (empty for a version that has none: imports,
    plain commits, versions trained before series were recorded)."""
    c = repo.commit(repo.resolve(rev))
    sid = c.extra.get("series") if isinstance(c.extra, dict) else None
    if not isinstance(sid, str):
        return Series.empty()
    return read_series(repo.objects, sid)


def eval_summaries(repo: Repo) -> dict[str, dict[str, Any]]:
    """Version id -> ``{"eval_loss", "set", "method", "by", "evals"}`` for every noted version
    (``eval_loss`` on the current set and method, or None), read in one walk of the notes."""
    es = current_set(repo)
    method = method_of(repo.settings.eval.seq_len)
    out = {}
    for vid, rows in all_notes(repo).items():
        loss = eval_loss_of(rows, es.dataset, method) if es else None
        by = next((r.get("by") for r in reversed(rows) if es and r.get("set") == es.dataset
                   and r.get("method") == method), None)
        out[vid] = {"eval_loss": loss, "set": es.filename if es else None, "method": method, "by": by, "evals": rows}
    return out


def run_series(repo: Repo, run: str) -> Series:
    """The series of a run in progress as of its last checkpoint (empty when it has none yet)."""
    from ..core.errors import NotFound
    from ..train.checkpoint import latest
    from ..train.series import series_of_state
    ck = latest(repo, run)
    if ck is None:
        raise NotFound(f"no run named {run!r}", hint="`lin runs` lists the runs in progress")
    sid = series_of_state(repo.objects, ck.state)
    return read_series(repo.objects, sid) if sid else Series.empty()


def version_eval(repo: Repo, rev: str) -> dict[str, Any]:
    """A version's evaluation: its noted rows, and its eval loss on the current set and method."""
    cid = repo.resolve(rev)
    rows = note_of(repo, cid)
    es = current_set(repo)
    method = method_of(repo.settings.eval.seq_len)
    return {"version": cid, "evals": rows, "eval_loss": eval_loss_of(rows, es.dataset, method) if es else None,
            "set": es.filename if es else None, "method": method}
