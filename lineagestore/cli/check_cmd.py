"""`lin fsck`: verify the store. Changes nothing.

Exit codes: 0 no problems (notes about leftovers of killed commands do not count); 1 problems
found (each is named on its own line); 10 not a store.
"""

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
    repair: bool = typer.Option(False, "--repair", help="Fetch corrupt or missing objects from a remote, then check again."),
    remote: str = typer.Option(None, "--remote", help="The remote --repair fetches from (default: the backup remote, or the only one); "
                               "weights dropped here (core.local_versions) are checked there, decoded and hashed."),
) -> None:
    """Verify the store: objects, names, history and the audit log.

    Checks objects, refs, reflogs, commits and trees, that everything referenced is present, the
    audit chain, and leftovers of killed commands.
    """
    o = out(json_out)
    repo = STATE.repo()
    rep = repo.fsck(quick=not full, progress=o.progress())
    # --repair fetches damaged objects from a remote, verified, then re-checks
    if repair and not rep.ok:
        from ..remote.sync import repair as remote_repair
        fixed = remote_repair(repo, remote, rep.problems)
        for oid in fixed.repaired:
            o.info(f"repaired: object {oid} from {fixed.remote}")
        for f in fixed.failed:
            o.warn(f"not repaired: object {f['id']}: {f['reason']}")
        if fixed.repaired:
            STATE.mutated = True
            _rewrite_damaged_packs(repo, fixed.repaired, o)
            rep = repo.fsck(quick=not full, progress=o.progress())
    if remote and rep.on_remote:
        _check_dropped(repo, remote, rep, o)
    if json_out:
        o.json(rep)
    else:
        for p in rep.problems:
            o.line(f"{p.kind}: {p.message}")
        for n in rep.notes:
            o.line(f"note: {n.message}")
        if rep.on_remote:
            o.line(f"on the remote: {rep.on_remote} weight objects ({human_bytes(rep.on_remote_bytes)}) dropped here "
                   "(core.local_versions), not damage" + ("" if remote else "; `lin fsck --remote NAME` checks them there"))
        for a in rep.advice:
            o.line(f"hint: {a}")
        verdict = "ok" if rep.ok else f"{len(rep.problems)} problem(s)"
        o.line(f"fsck: {rep.objects} objects ({human_bytes(rep.bytes_verified)} re-hashed), {rep.refs} refs, "
               f"{rep.reflogs} reflogs, {rep.reachable} reachable objects, audit log {rep.audit_entries} entries: "
               f"{verdict}")
    if not rep.ok:
        raise typer.Exit(1)


def _check_dropped(repo, remote: str, rep, o) -> None:
    """Each dropped weight object read from ``remote``, decoded and hashed; a failure is a problem."""
    from ..guard.dropped import read_dropped
    from ..guard.fsck import Problem
    from ..remote.held import check_dropped
    ids = [oid for oid in read_dropped(repo) if not repo.objects.has(oid)]
    res = check_dropped(repo, ids, remote, progress=o.progress())
    for oid, msg in res.problems:
        rep.problems.append(Problem("remote", oid, msg))
    o.info(f"checked {res.checked} dropped weight objects on {res.remote}: "
           + ("all there, verified" if not res.problems else f"{len(res.problems)} problem(s)"))


def _rewrite_damaged_packs(repo, repaired: list[str], o) -> None:
    """A repaired object that was damaged inside a pack is now loose beside it (packs are never
    changed): a repack rewrites that pack without the damaged copy (guard.repack)."""
    from ..core.store import DiskObjectStore
    from ..guard.repack import repack
    store = repo.objects
    if isinstance(store, DiskObjectStore) and any(store.packs.find(oid) is not None for oid in repaired):
        res = repack(repo, progress=o.progress())
        o.info(f"rewrote {len(res.packs_removed)} pack(s) without the damaged copies")

