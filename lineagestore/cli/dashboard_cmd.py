"""Commands for the dashboard: report (one HTML file), serve (the same page, live)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import JSON_OPT, STATE, out
from .output import human_bytes


def register(app: typer.Typer) -> None:
    app.command(name="report")(report)
    app.command(name="serve")(serve)


def report(
    output: Path = typer.Option(Path("lin-report.html"), "--output", "-o", metavar="FILE",
                                help="Where to write the page (default: lin-report.html here)."),
    open_it: bool = typer.Option(False, "--open", help="Open the page in the default web browser."),
    json_out: bool = JSON_OPT,
) -> None:
    """Write the dashboard as one self-contained HTML file.

    Progress to the goal with ETA, tokens, loss and throughput curves, the lineage graph, the
    queue, data coverage, store size and backup state; it needs no network to open.
    """
    from ..dashboard.report import write_report
    o = out(json_out)
    repo = STATE.repo()
    o.info("reading the store ...")
    r = write_report(repo, output.absolute())
    if json_out:
        o.json(r.to_dict())
    else:
        pts = ", ".join(f"{k} {v}" for k, v in r.charts.items())
        o.line(f"Wrote {r.path}  ({human_bytes(r.bytes)}; {r.versions} versions, {r.lineage_nodes} drawn; "
               f"chart points: {pts})")
    if open_it:
        import webbrowser
        if not webbrowser.open(Path(r.path).as_uri()):
            o.warn(f"no web browser found; open {r.path} yourself")


def serve(
    port: int = typer.Option(8484, "--port", "-p", help="TCP port (0: any free port)."),
    bind: str = typer.Option("127.0.0.1", "--bind", metavar="ADDR",
                             help="Address to listen on (default 127.0.0.1, this machine only; "
                                  "another address shows the dashboard to the network)."),
    refresh: float = typer.Option(5.0, "--refresh", metavar="SECONDS",
                                  help="How often open pages ask for new figures (1-3600; default 5)."),
    json_out: bool = typer.Option(False, "--json", help="Print the address as JSON on stdout once listening."),
) -> None:
    """Serve the dashboard live (read-only) until Ctrl-C.

    The page refreshes itself while `lin run` or `lin train` writes new versions. Only GET and
    HEAD are answered; nothing a request sends can change the store.
    """
    from ..dashboard.serve import make_server
    o = out(json_out)
    repo = STATE.repo()
    assert repo.path is not None
    server = make_server(repo.path, bind=bind, port=port, refresh_s=refresh)
    if not server.loopback:
        o.warn(f"listening on {bind}, not on this machine's loopback: anyone who can reach it sees the "
               "dashboard (names, metrics, data file names); there is no password")
    if json_out:
        o.json({"url": server.url, "bind": server.bind, "port": server.port, "loopback": server.loopback})
    else:
        o.line(f"Serving the dashboard of {repo.path} at {server.url}  (read-only; Ctrl-C stops)")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        o.info("stopped")
    finally:
        server.server_close()
