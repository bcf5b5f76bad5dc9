"""What each token bought: pure functions over plain inputs (no store, no I/O).

Definitions (docs/dashboard.md, "What each number means"):

- a version's **tokens** are the tokens its run trained (``metrics.tokens_trained``; 0 for imports
  and plain commits); its **device-hours** are devices x wall hours of training
  (``metrics.device_hours``);
- its **eval loss before** is its first parent's eval loss, **after** its own (both on the store's
  evaluation set, same method); **gain** = before - after (positive: better);
- **gain per billion tokens** = gain / (tokens / 10^9); **gain per device-hour** = gain / device-hours;
  undefined (None) when a denominator is 0 or a loss is missing;
- a version trained on several files shares its tokens, device-hours and gain among them in
  proportion to the examples it trained of each (the only per-file count every version records);
- the **lineage curve** follows first parents from the root to the tip: cumulative tokens trained
  against eval loss, at each version that has one;
- **duplicates avoided**: records of a file's rest left out because the lineage had trained them
  (and their estimated tokens, at that version's own device-hours per token), and whole files the
  queue parked for the duplicates check (at the store's device-hours per token);
- the **trend** is a power law ``loss = a * tokens^(-b)`` fitted by least squares to
  ``ln loss = ln a - b ln tokens`` over the curve's points with tokens > 0; its uncertainty is the
  spread of the fit's residuals ``s = sqrt(sum r^2 / (n - 2))``, and a projection is given as the
  fitted value with the range ``exp(ln fit -/+ 2 s)``. With fewer than 3 points nothing is fitted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["FileShare", "FileStats", "Stats", "Trend", "VersionInput", "VersionStats", "compute_stats",
           "fit_power_law", "lineage_curve", "per_billion", "per_device_hour"]

MIN_TREND_POINTS = 3


@dataclass(frozen=True)
class FileShare:
    """One data file a version trained: its name, content fingerprint and examples trained."""

    filename: str
    fingerprint: str
    examples: int


@dataclass(frozen=True)
class VersionInput:
    id: str
    name: str
    parent: str | None  # the first parent's id
    tokens: int = 0
    device_hours: float = 0.0
    device_kind: str | None = None
    eval_loss: float | None = None
    files: tuple[FileShare, ...] = ()
    created: str = ""
    duplicate_records: int = 0  # records the plan left out because the lineage had trained them
    duplicate_tokens: int = 0  # their tokens (estimated from the file's tokens per example)


@dataclass
class VersionStats:
    id: str
    name: str
    parent: str | None
    tokens: int
    cumulative_tokens: int  # along first parents, this version included
    device_hours: float
    device_kind: str | None
    eval_before: float | None
    eval_after: float | None
    gain: float | None
    gain_per_billion_tokens: float | None
    gain_per_device_hour: float | None
    files: list[str]


@dataclass
class FileStats:
    filename: str
    fingerprint: str
    versions: list[str]
    tokens: float  # the file's share of its versions' tokens
    device_hours: float
    gain: float | None  # the file's share of its versions' gains (versions with both losses)
    gain_per_billion_tokens: float | None
    gain_per_device_hour: float | None


@dataclass
class Trend:
    ok: bool
    points: int
    reason: str = ""  # why there is no fit
    a: float | None = None  # loss = a * tokens^(-b)
    b: float | None = None
    residual_sd: float | None = None  # of ln loss
    goal_tokens: int | None = None
    projected_loss: float | None = None
    projected_low: float | None = None  # exp(ln fit - 2 s)
    projected_high: float | None = None
    statement: str = ""

    def predict(self, tokens: float) -> float:
        assert self.a is not None and self.b is not None
        return self.a * tokens ** (-self.b)


@dataclass
class Duplicates:
    records: int  # records left out because their lineage had trained them
    tokens: int  # their tokens (estimated)
    device_hours: float  # what training them again would have cost at each version's own rate
    #: files the queue parked because the duplicates check refused them (lin run): their records
    #: and tokens, and the device-hours they would have cost at the store's tokens per device-hour
    parked_files: int = 0
    parked_records: int = 0
    parked_tokens: int = 0
    parked_device_hours: float | None = None


@dataclass
class Stats:
    tip: str | None
    goal_tokens: int
    versions: list[VersionStats]
    files: list[FileStats]  # best gain per token first (files without a gain last)
    curve: list[dict[str, Any]]  # [{"name", "id", "tokens", "eval_loss"}] root to tip
    trend: Trend
    duplicates: Duplicates
    eval_set: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))


def _finite(x: Any) -> Any:
    """JSON has no NaN or infinity: such numbers become null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def per_billion(gain: float | None, tokens: float) -> float | None:
    """Gain per 10^9 tokens; None without a gain or tokens."""
    if gain is None or not tokens or tokens <= 0:
        return None
    return gain / (tokens / 1e9)


def per_device_hour(gain: float | None, device_hours: float) -> float | None:
    if gain is None or not device_hours or device_hours <= 0:
        return None
    return gain / device_hours


def _first_parent_chain(by_id: dict[str, VersionInput], tip: str) -> list[VersionInput]:
    chain: list[VersionInput] = []
    seen: set[str] = set()
    cur: str | None = tip
    while cur is not None and cur in by_id and cur not in seen:
        seen.add(cur)
        chain.append(by_id[cur])
        cur = by_id[cur].parent
    return chain[::-1]


def lineage_curve(versions: Sequence[VersionInput], tip: str) -> list[dict[str, Any]]:
    """Root to ``tip`` along first parents: cumulative tokens, and the eval loss where known."""
    by_id = {v.id: v for v in versions}
    out, cum = [], 0
    for v in _first_parent_chain(by_id, tip):
        cum += v.tokens
        out.append({"name": v.name, "id": v.id, "tokens": cum, "eval_loss": v.eval_loss})
    return out


def fit_power_law(tokens: Iterable[float], losses: Iterable[float], goal: int | None = None) -> Trend:
    """Least squares of ln loss on ln tokens (points with tokens > 0 and loss > 0); refused below 3."""
    pts = [(float(t), float(loss)) for t, loss in zip(tokens, losses, strict=True)
           if t is not None and loss is not None and t > 0 and loss > 0]
    n = len(pts)
    if n < MIN_TREND_POINTS:
        return Trend(ok=False, points=n, goal_tokens=goal,
                     reason=f"a trend needs {MIN_TREND_POINTS} evaluated versions with tokens trained; "
                            f"there {'is' if n == 1 else 'are'} {n}")
    x = np.log(np.array([p[0] for p in pts]))
    y = np.log(np.array([p[1] for p in pts]))
    if float(np.ptp(x)) == 0.0:
        return Trend(ok=False, points=n, goal_tokens=goal, reason="every point has the same token count")
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    s = float(math.sqrt(float(np.sum(resid ** 2)) / (n - 2)))
    t = Trend(ok=True, points=n, a=float(math.exp(intercept)), b=float(-slope), residual_sd=s, goal_tokens=goal)
    if goal:
        yhat = float(intercept + slope * math.log(goal))
        t.projected_loss = math.exp(yhat)
        t.projected_low, t.projected_high = math.exp(yhat - 2 * s), math.exp(yhat + 2 * s)
        t.statement = (f"fitted on {n} points, loss = {t.a:.4g} x tokens^-{t.b:.4g}; at {goal:.3g} tokens it "
                       f"projects {t.projected_loss:.4g} (range {t.projected_low:.4g} to {t.projected_high:.4g}: "
                       f"twice the residual spread of the fit; a projection far past the data is less "
                       f"certain than this range says)")
    return t


def _version_stats(v: VersionInput, by_id: dict[str, VersionInput], cum: dict[str, int]) -> VersionStats:
    parent = by_id.get(v.parent) if v.parent else None
    before = parent.eval_loss if parent is not None else None
    after = v.eval_loss
    gain = (before - after) if before is not None and after is not None and v.tokens > 0 else None
    return VersionStats(id=v.id, name=v.name, parent=v.parent, tokens=v.tokens, cumulative_tokens=cum.get(v.id, v.tokens),
                        device_hours=v.device_hours, device_kind=v.device_kind, eval_before=before,
                        eval_after=after, gain=gain, gain_per_billion_tokens=per_billion(gain, v.tokens),
                        gain_per_device_hour=per_device_hour(gain, v.device_hours),
                        files=[f.filename for f in v.files])


def _cumulative(by_id: dict[str, VersionInput]) -> dict[str, int]:
    """Tokens along first parents up to and including each version (memoised walk)."""
    out: dict[str, int] = {}
    for vid in by_id:
        stack: list[str] = []
        cur: str | None = vid
        while cur is not None and cur in by_id and cur not in out and cur not in stack:
            stack.append(cur)
            cur = by_id[cur].parent
        base = out.get(cur, 0) if cur is not None else 0
        for x in reversed(stack):
            base += by_id[x].tokens
            out[x] = base
    return out


def _file_stats(vstats: list[VersionStats], by_id: dict[str, VersionInput]) -> list[FileStats]:
    acc: dict[str, dict[str, Any]] = {}
    for vs in vstats:
        v = by_id[vs.id]
        total = sum(f.examples for f in v.files)
        for f in v.files:
            share = (f.examples / total) if total else 1.0 / len(v.files)
            a = acc.setdefault(f.fingerprint, {"filename": f.filename, "versions": [], "tokens": 0.0,
                                               "device_hours": 0.0, "gain": None, "gain_tokens": 0.0,
                                               "gain_dh": 0.0})
            a["versions"].append(vs.name)
            a["tokens"] += share * vs.tokens
            a["device_hours"] += share * vs.device_hours
            if vs.gain is not None:
                a["gain"] = (a["gain"] or 0.0) + share * vs.gain
                a["gain_tokens"] += share * vs.tokens
                a["gain_dh"] += share * vs.device_hours
    out = [FileStats(filename=a["filename"], fingerprint=fp, versions=a["versions"], tokens=a["tokens"],
                     device_hours=a["device_hours"], gain=a["gain"],
                     gain_per_billion_tokens=per_billion(a["gain"], a["gain_tokens"]),
                     gain_per_device_hour=per_device_hour(a["gain"], a["gain_dh"]))
           for fp, a in acc.items()]
    out.sort(key=lambda f: (f.gain_per_billion_tokens is None, -(f.gain_per_billion_tokens or 0.0), f.filename))
    return out


def _duplicates(versions: Sequence[VersionInput], parked: Sequence[tuple[int, int]]) -> Duplicates:
    records = sum(v.duplicate_records for v in versions)
    tokens = sum(v.duplicate_tokens for v in versions)
    dh = sum(v.duplicate_tokens * v.device_hours / v.tokens for v in versions if v.tokens > 0 and v.duplicate_tokens)
    timed = [v for v in versions if v.tokens > 0 and v.device_hours > 0]
    per_token = sum(v.device_hours for v in timed) / sum(v.tokens for v in timed) if timed else None
    p_tokens = sum(t for _r, t in parked)
    return Duplicates(records=records, tokens=tokens, device_hours=dh, parked_files=len(parked),
                      parked_records=sum(r for r, _t in parked), parked_tokens=p_tokens,
                      parked_device_hours=p_tokens * per_token if per_token is not None else None)


def compute_stats(versions: Sequence[VersionInput], tip: str | None, goal_tokens: int,
                  eval_set: dict[str, Any] | None = None, parked: Sequence[tuple[int, int]] = ()) -> Stats:
    """Every figure of ``lin stats`` from plain inputs (versions in any order; ``tip``: the version
    whose lineage the curve and trend follow; ``parked``: (records, tokens) of each file the queue
    parked as a duplicate)."""
    by_id = {v.id: v for v in versions}
    cum = _cumulative(by_id)
    vstats = [_version_stats(v, by_id, cum) for v in versions]
    curve = lineage_curve(versions, tip) if tip else []
    pts = [c for c in curve if c["eval_loss"] is not None]
    trend = fit_power_law([c["tokens"] for c in pts], [c["eval_loss"] for c in pts], goal_tokens)
    notes = []
    if eval_set is None:
        notes.append("no evaluation set: register one with `lin eval set FILE` to measure gains")
    return Stats(tip=tip, goal_tokens=goal_tokens, versions=vstats, files=_file_stats(vstats, by_id), curve=curve,
                 trend=trend, duplicates=_duplicates(versions, parked), eval_set=eval_set, notes=notes)
