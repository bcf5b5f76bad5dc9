"""`lin fsck`: verify the store."""

from __future__ import annotations

import typer

from .common import JSON_OPT, STATE, out
from .output import human_bytes


def register(app: typer.Typer) -> None:
    app.command(name="fsck")(fsck)


def fsck(
    full: bool = typer.Option(True, "--full/--quick",
                              help="--full (default) re-hashes every byte; --quick reads headers and metadata only."),
    json_out: bool = JSON_OPT,
) -> None:
    """Check every object's hash, every ref, and that everything reachable is present. Changes nothing."""
    o = out(json_out)
    repo = STATE.repo()
    rep = repo.fsck(quick=not full, progress=o.progress())
    if json_out:
        o.json(rep)
    else:
        for p in rep.problems:
            o.line(f"{p.kind}: {p.message}")
        verdict = "ok" if rep.ok else f"{len(rep.problems)} problem(s)"
        o.line(f"fsck: {rep.objects} objects ({human_bytes(rep.bytes_verified)} re-hashed), {rep.refs} refs, "
               f"{rep.reachable} reachable objects: {verdict}")
    if not rep.ok:
        raise typer.Exit(1)
