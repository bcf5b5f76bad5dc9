"""`lin report`: the dashboard as one self-contained HTML file.

Everything the page needs is inside it: the figures as JSON, the vendored uPlot (its MIT licence
notice kept in the file), the page's own script and styles. A Content-Security-Policy meta tag
allows no network source at all, so the file works offline and cannot leak what it shows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from ..core.errors import InvalidInput
from ..core.fsutil import atomic_write_bytes
from ..core.repo import Repo
from .data import Dashboard, gather

#: the vendored charting library (from its npm release; see static/uPlot.LICENSE)
UPLOT_VERSION = "1.6.32"


@cache
def static_text(name: str) -> str:
    """A file of the package's static/ folder (read once per process; installed as package data)."""
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def to_json(d: Dashboard) -> str:
    """The figures as strict JSON (never NaN: data.num drops non-finite metrics)."""
    return json.dumps(d.to_dict(), allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def _script_safe(text: str) -> str:
    """JSON that cannot close the <script> element it sits in, whatever names or messages hold."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def render(d: Dashboard, live_s: float = 0) -> str:
    """The page. ``live_s`` > 0: the page polls ``data.json`` every that many seconds (lin serve)."""
    licence = static_text("uPlot.LICENSE").strip().replace("*/", "* /")
    uplot_js = f"/*! uPlot {UPLOT_VERSION} (https://github.com/leeoniya/uPlot)\n{licence}\n*/\n" + \
        static_text("uPlot.iife.min.js")
    parts = {
        "@@LIVE@@": f"{live_s:g}",
        "@@TITLE@@": _escape(f"lin dashboard: {d.head.get('name') or 'empty store'}"),
        "@@UPLOT_CSS@@": static_text("uPlot.min.css"),
        "@@PAGE_CSS@@": static_text("dashboard.css"),
        "@@DATA@@": _script_safe(to_json(d)),
        "@@UPLOT_JS@@": uplot_js,
        "@@PAGE_JS@@": static_text("dashboard.js"),
    }
    # one pass over the template: what is put in (names, messages) is never searched for markers
    return re.sub(r"@@[A-Z_]+@@", lambda m: parts[m.group(0)], static_text("dashboard.html"))


@dataclass
class ReportResult:
    path: str
    bytes: int
    charts: dict[str, int]  # chart key -> points drawn
    lineage_nodes: int
    versions: int

    def to_dict(self) -> dict:
        return dict(vars(self))


def write_report(repo: Repo, output: Path) -> ReportResult:
    """Gather the figures and write the page to ``output`` atomically (never half a file)."""
    if output.is_dir():
        raise InvalidInput(f"{output}: is a folder; give the report's file name (e.g. report.html)")
    if not output.parent.is_dir():
        raise InvalidInput(f"{output.parent}: no such folder for the report")
    d = gather(repo)
    page = render(d).encode("utf-8")
    atomic_write_bytes(output, page, output.parent)
    return ReportResult(str(output), len(page), {c.key: c.points for c in d.charts},
                        d.lineage["shown"], d.lineage["total"])
