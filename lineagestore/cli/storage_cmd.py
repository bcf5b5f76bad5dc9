"""Storage commands: repack (docs/format.md "Packs"; docs/safety.md).

Exit codes: 0 done; 4 --drop with core.local_versions = 0; 5 an object the repack needs is
missing or corrupt (run `lin fsck`); 8 the store lock (or another repack) stayed busy past the
timeout; 11 --drop refused: the backup remote is unreachable, or lacks an object or holds it
damaged (named), and nothing was dropped.
"""

from __future__ import annotations

import typer

from .common import JSON_OPT, STATE, out
from .output import human_bytes


def register(app: typer.Typer) -> None:
    app.command(name="repack")(repack)


def repack(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be packed and unpacked."),
    if_idle: bool = typer.Option(False, "--if-idle", help="Do nothing if another repack runs or the store has "
                                 "no packs yet (the background repack `lin run` starts after each version)."),
    drop: bool = typer.Option(False, "--drop", help="Instead: drop the weights of versions older than the last "
                              "core.local_versions of each branch, once the backup remote is verified to hold them."),
    json_out: bool = JSON_OPT,
) -> None:
    """Pack cold versions small (deltas, byte planes); hot stay raw.

    Hot: the last core.hot_versions versions of each branch (its tip included), HEAD, user tags and
    the checkpoints of runs that can resume. Everything else reachable goes into objects/pack/ (metadata
    zstd-compressed; tensor pieces as reverse deltas against the newer version, keyframes every
    core.keyframe_interval versions, chains at most core.delta_max_depth deep). Writers may go
    on meanwhile; old packs are removed only once the new ones are durable.

    --drop: weights (tensor pieces, parts of large files) that only versions older than the last
    core.local_versions of each branch hold leave this store, after every one of them was read
    back from the backup remote and verified in this command; any read of them fetches them again.
    """
    from ..guard.repack import repack as run_repack
    if drop:
        _drop(dry_run, json_out)
        return
    o = out(json_out)
    repo = STATE.repo()
    rep = run_repack(repo, dry_run=dry_run, if_idle=if_idle, progress=o.progress())
    if not dry_run and (rep.packs_written or rep.packs_removed or rep.unpacked_objects or rep.loose_removed):
        STATE.mutated = True
        repo.notes.append(f"repack: {rep.packed_objects} objects into {len(rep.packs_written)} pack(s), "
                          f"{rep.unpacked_objects} unpacked, {len(rep.packs_removed)} old pack(s) removed")
    if json_out:
        o.json(rep.to_dict())
        return
    verb = "Would pack" if dry_run else "Packed"
    o.line(f"Hot (loose, raw): {rep.hot_commits} versions, {rep.hot_objects} weight/file objects "
           f"(core.hot_versions = {rep.hot_versions})")
    if rep.packed_objects:
        codecs = ", ".join(f"{n} {c}" for c, n in sorted(rep.codecs.items()))
        sizes = (f": {human_bytes(rep.raw_bytes)} -> {human_bytes(rep.stored_bytes)} ({rep.ratio:.2f}x)"
                 if not dry_run else "")
        o.line(f"{verb} {rep.packed_objects} objects{sizes}" + (f" [{codecs}]" if codecs else ""))
    if rep.unpacked_objects:
        o.line(f"{'Would unpack' if dry_run else 'Unpacked'} {rep.unpacked_objects} objects (hot again, or unreachable)")
    if rep.packs_written:
        o.line(f"New pack(s): {', '.join(rep.packs_written)}")
    if rep.packs_removed:
        merged = f" ({rep.copied_objects} objects copied from merged smaller packs)" if rep.copied_objects else ""
        o.line(f"{'Would remove' if dry_run else 'Removed'} {len(rep.packs_removed)} old pack(s){merged}")
    if rep.loose_removed:
        o.line(f"{'Would remove' if dry_run else 'Removed'} {rep.loose_removed} loose copies of packed objects")
    for note in rep.notes:
        o.line(f"Nothing done: {note}.")
    if not (rep.packed_objects or rep.unpacked_objects or rep.packs_removed or rep.notes):
        o.line("Nothing to do.")
    elif not dry_run:
        o.line(f"Took {rep.seconds:.1f} s.")


def _drop(dry_run: bool, json_out: bool) -> None:
    """lin repack --drop: guard.drop with the remote layer's verification (docs/format.md "Dropped weights")."""
    from ..guard.drop import drop
    from ..remote.held import verify_held
    o = out(json_out)
    repo = STATE.repo()
    n = repo.settings.core.local_versions
    res = drop(repo, n, lambda ids: verify_held(repo, ids, progress=o.progress()), dry_run=dry_run,
               progress=o.progress())
    if res.dropped_objects:
        STATE.mutated = True
        repo.notes.append(f"drop: {res.dropped_objects} weight objects ({res.dropped_bytes} bytes) "
                          f"verified on {res.remote}")
    if json_out:
        o.json(res.to_dict())
        return
    p = res.plan
    o.line(f"Weights kept local: {p.kept_versions} versions (core.local_versions = {n}, hot and tagged "
           f"versions included); {p.cold_versions} older versions")
    if dry_run:
        o.line(f"Would drop {len(p.candidates)} weight objects ({human_bytes(sum(p.candidates.values()))}) "
               "once the backup remote is verified to hold them")
    elif res.dropped_objects:
        o.line(f"Dropped {res.dropped_objects} weight objects ({human_bytes(res.dropped_bytes)}), each verified "
               f"on {res.remote} first; any read of them (checkout, diff, train, eval) fetches them back. Took {res.seconds:.1f} s.")
    else:
        o.line("Nothing to drop.")
