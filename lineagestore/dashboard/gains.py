"""What each token bought, for the page: `lin stats`' figures (lineagestore.analytics) cut to what
a panel shows, and the scaling chart (eval loss over cumulative tokens with the fitted trend
carried to the goal). docs/dashboard.md, "What each number means", defines every figure.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from ..analytics import Stats, stats
from ..core.errors import LinError
from ..core.repo import Repo

#: versions listed in the gains table (the newest of the active lineage)
GAIN_ROWS = 20
#: data files listed by gain per token
FILE_ROWS = 10
#: points of the fitted trend drawn from the first evaluated version to the goal (log-spaced)
TREND_SAMPLES = 24


def read_stats(repo: Repo) -> tuple[Stats | None, str]:
    """``lin stats`` of the active lineage, or None and why (a damaged note must not take the page down)."""
    try:
        return stats(repo), ""
    except (LinError, ValueError, KeyError) as e:
        return None, f"analytics unavailable: {e}"


def eval_losses(st: Stats | None) -> dict[str, float]:
    """Version id -> eval loss on the store's evaluation set (from the notes)."""
    if st is None:
        return {}
    return {v.id: v.eval_after for v in st.versions if v.eval_after is not None and math.isfinite(v.eval_after)}


def trend_samples(st: Stats) -> list[tuple[float, float]]:
    """(tokens, fitted loss) at :data:`TREND_SAMPLES` log-spaced points from the first evaluated
    version's cumulative tokens to the goal (or the last point, if past the goal)."""
    t = st.trend
    pts = [c["tokens"] for c in st.curve if c["eval_loss"] is not None and c["tokens"] > 0]
    if not t.ok or not pts:
        return []
    lo, hi = math.log(min(pts)), math.log(max(max(pts), st.goal_tokens))
    if hi <= lo:
        return []
    xs = [math.exp(lo + (hi - lo) * i / (TREND_SAMPLES - 1)) for i in range(TREND_SAMPLES)]
    return [(x, t.predict(x)) for x in xs]


def scaling_rows(st: Stats | None) -> list[tuple[float, list[float | None], str]]:
    """Rows of the scaling chart: each evaluated version of the lineage, then the trend."""
    if st is None:
        return []
    rows: list[tuple[float, list[float | None], str]] = [
        (float(c["tokens"]), [float(c["eval_loss"]), None], c["name"])
        for c in st.curve if c["eval_loss"] is not None and c["tokens"] > 0]
    rows += [(x, [None, y], "fitted trend") for x, y in trend_samples(st)]
    return rows


def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def gains_panel(st: Stats | None, why: str, lineage: set[str]) -> dict[str, Any]:
    """The panel: the trend and its projection, the newest versions of the lineage with their
    gains, the files that gave the most per token, duplicates avoided."""
    if st is None:
        return {"available": False, "note": why}
    keep = ("name", "tokens", "device_hours", "device_kind", "eval_before", "eval_after", "gain",
            "gain_per_billion_tokens", "gain_per_device_hour")
    versions = [{k: getattr(v, k) for k in keep} for v in st.versions if v.id in lineage and v.tokens > 0]
    versions.sort(key=lambda v: v["name"])
    files = [{k: getattr(f, k) for k in ("filename", "tokens", "device_hours", "gain", "gain_per_billion_tokens",
                                           "gain_per_device_hour")} for f in st.files[:FILE_ROWS]]
    return _clean({"available": True, "note": "; ".join(st.notes), "eval_set": st.eval_set,
                   "trend": asdict(st.trend), "versions": versions[-GAIN_ROWS:], "versions_total": len(versions),
                   "files": files, "files_total": len(st.files), "duplicates": asdict(st.duplicates)})
