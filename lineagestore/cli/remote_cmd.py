"""Commands for remotes: remote add/ls/rm, push, fetch, pull, clone, backup, verify."""

from __future__ import annotations

from pathlib import Path

import typer

from ..core.errors import InvalidInput
from .common import JSON_OPT, STATE, out, short
from .output import human_bytes

remote_app = typer.Typer(help="Manage remotes: S3-compatible storage or a folder.", no_args_is_help=False,
                         rich_markup_mode=None)


def register(app: typer.Typer) -> None:
    app.add_typer(remote_app, name="remote")
    for fn in (push, fetch, pull, clone, backup, verify):
        app.command(name=fn.__name__)(fn)


def _rate(nbytes: int, seconds: float) -> str:
    return f"{human_bytes(nbytes / seconds)}/s" if seconds > 0 and nbytes else "-"


# ------------------------------------------------------------------------------ remote add/ls/rm


@remote_app.callback(invoke_without_command=True)
def _remote_main(ctx: typer.Context) -> None:
    """List remotes (same as `lin remote ls`), or manage them."""
    if ctx.invoked_subcommand is None:
        ls(json_out=False)


@remote_app.command("add")
def add(
    name: str = typer.Argument(..., metavar="NAME", help="A short name for the remote (e.g. origin)."),
    url: str = typer.Argument(..., metavar="URL", help="s3://bucket/prefix, or a folder path (a second disk)."),
    endpoint_url: str | None = typer.Option(None, "--endpoint-url",
                                               help="S3-compatible server (MinIO, Ceph, SeaweedFS, R2): http(s)://host:port."),
    region: str | None = typer.Option(None, "--region", help="S3 region (default: from the AWS config)."),
    backup: bool = typer.Option(False, "--backup", help="Also make it the backup remote: every commit is pushed there."),
    json_out: bool = JSON_OPT,
) -> None:
    """Add a remote: S3-compatible storage or a folder.

    Credentials come from the AWS environment or profile and are never stored.
    """
    from ..remote.spec import add_remote
    o = out(json_out)
    repo = STATE.repo()
    spec = add_remote(repo, name, url, endpoint_url=endpoint_url, region=region, backup=backup)
    STATE.mutated = True
    if json_out:
        o.json({**spec.to_dict(), "backup": backup})
        return
    o.line(f"Added remote {spec.name}: {spec.url}" + (f" (endpoint {spec.endpoint_url})" if spec.endpoint_url else ""))
    if backup:
        o.line(f"Backup remote: {spec.name} (every commit is pushed there; `lin backup` pushes now)")
    else:
        o.info(f"Next: lin push {spec.name}")


@remote_app.command("ls")
def ls(json_out: bool = JSON_OPT) -> None:
    """List remotes, and which one is the backup remote.

    Name, URL, endpoint, region.
    """
    from ..remote.spec import list_remotes
    o = out(json_out)
    repo = STATE.repo()
    backup_name = repo.settings.backup.remote
    rs = list_remotes(repo)
    if json_out:
        o.json([{**r.to_dict(), "backup": r.name == backup_name} for r in rs])
        return
    if not rs:
        o.line("No remotes. Add one: lin remote add NAME s3://bucket/prefix  (or a folder path)")
        return
    for r in rs:
        extra = f"  endpoint {r.endpoint_url}" if r.endpoint_url else ""
        extra += f"  region {r.region}" if r.region else ""
        o.line(f"{r.name:<16} {r.url}{extra}" + ("  (backup)" if r.name == backup_name else ""))


@remote_app.command("rm")
def rm(name: str = typer.Argument(...),
       force: bool = typer.Option(False, "--force", help="Remove it even if it holds the only copy of weights dropped here."),
       json_out: bool = JSON_OPT) -> None:
    """Remove a remote (nothing on the remote is deleted).

    Only this store's settings and its tracking refs change. Refused while the remote holds the
    only copy of weights dropped here (core.local_versions), unless --force.
    """
    from ..core.errors import Refused
    from ..guard.dropped import read_dropped
    from ..remote.spec import get_remote, remove_remote
    from ..remote.sync import remove_remote_refs
    o = out(json_out)
    repo = STATE.repo()
    get_remote(repo, name)  # an unknown name says so first
    only_there = {oid: d for oid, d in read_dropped(repo).items() if d.remote == name and not repo.objects.has(oid)}
    if only_there and not force:
        raise Refused(f"remote {name} holds the only copy of {len(only_there)} weight object(s) "
                      f"({human_bytes(sum(d.size for d in only_there.values()))}) dropped here (core.local_versions): "
                      "without it the versions they belong to cannot be read",
                      hint="bring them back first (raise core.local_versions, then `lin checkout` those versions), "
                           "or pass --force if you keep that remote's data elsewhere")
    spec = remove_remote(repo, name)
    n = remove_remote_refs(repo, name)
    STATE.mutated = True
    if json_out:
        o.json({"removed": spec.name, "url": spec.url, "tracking_refs_removed": n})
        return
    o.line(f"Removed remote {spec.name} ({spec.url}); the data on it is untouched")


# ------------------------------------------------------------------------------ push


def _print_push(o, res) -> None:
    o.line(f"To {res.remote} ({res.url})")
    for u in res.refs:
        if u.status == "up-to-date":
            continue
        if u.status in ("rejected", "behind"):
            o.line(f"  {u.status:<9} {u.ref}: {u.reason}")
        elif u.written:
            move = f"{short(u.old)} -> {short(u.new)}" if u.old else short(u.new)
            o.line(f"  {u.status:<9} {u.ref}  {move}")
    if res.objects_sent:
        o.line(f"Sent {res.objects_sent} objects, {human_bytes(res.bytes_sent)} "
               f"({human_bytes(res.raw_bytes_sent)} of model data) in {res.seconds:.1f}s, "
               f"{_rate(res.raw_bytes_sent, res.seconds)}; {res.objects - res.objects_sent} were there already")
    if not res.changed and not res.rejected:
        o.line(f"{res.remote} is up to date ({len(res.refs)} refs)")


def push(
    args: list[str] | None = typer.Argument(None, metavar="[REMOTE] [REV]...",
                                               help="The remote (default: the backup remote, or the only one), "
                                                    "then branches, versions or tags (default: all). "
                                                    "BRANCH:NAME pushes a branch under another name."),
    recheck: bool = typer.Option(False, "--recheck", help="Check the objects of every pushed ref on the remote, not only of refs that move."),
    json_out: bool = JSON_OPT,
) -> None:
    """Send versions to a remote; only missing objects travel.

    Refs on the remote move only by compare-and-swap.
    """
    from ..remote.spec import list_remotes
    from ..remote.sync import PushRejected
    from ..remote.sync import push as do_push
    o = out(json_out)
    repo = STATE.repo()
    args = list(args or [])
    remote = None
    if args and args[0] in {r.name for r in list_remotes(repo)}:
        remote = args.pop(0)
    try:
        res = do_push(repo, remote, args, progress=o.progress(), recheck=recheck)
    except PushRejected as e:
        if json_out:
            o.json(e.result)
        raise
    if json_out:
        o.json(res)
        return
    _print_push(o, res)


# ------------------------------------------------------------------------------ fetch, pull


def _print_fetch(o, fr) -> None:
    for w in fr.warnings:
        o.warn(w)
    if fr.objects_received:
        o.line(f"Received {fr.objects_received} objects, {human_bytes(fr.bytes_received)} from {fr.remote} "
               f"in {fr.seconds:.1f}s ({_rate(fr.bytes_received, fr.seconds)})")
    for c in fr.changed:
        ref = c["ref"]
        if c["new"] is None:
            o.line(f"  gone      {ref}")
        else:
            o.line(f"  {'new' if c['old'] is None else 'updated':<9} {ref}  "
                   + (f"{short(c['old'])} -> " if c["old"] else "") + short(c["new"]))
    for m in fr.merged:  # evaluation notes: the remote's merged into ours
        o.line(f"  merged    {m['ref']}  " + (f"{short(m['old'])} -> " if m["old"] else "") + short(m["new"]))


def fetch(
    remote: str | None = typer.Argument(None, help="The remote (default: the backup remote, or the only one)."),
    json_out: bool = JSON_OPT,
) -> None:
    """Receive a remote's versions; local names are untouched.

    They arrive as refs/remotes/REMOTE/... ; the remote's evaluation notes are merged into yours.
    """
    from ..remote.sync import fetch as do_fetch
    o = out(json_out)
    repo = STATE.repo()
    fr = do_fetch(repo, remote, progress=o.progress())
    if json_out:
        o.json(fr)
        return
    _print_fetch(o, fr)
    if not fr.changed and not fr.objects_received and not fr.merged:
        o.line(f"Already up to date with {fr.remote}")


def pull(
    remote: str | None = typer.Argument(None, help="The remote (default: the backup remote, or the only one)."),
    renumber: bool = typer.Option(False, "--renumber",
                                  help="Rename your unpushed versions whose numbers the remote used for others "
                                       "(after the remote's highest), keeping a diverged branch as BRANCH-VERSION."),
    json_out: bool = JSON_OPT,
) -> None:
    """Fetch, then move branches forward; never overwrites.

    Takes the remote's new versions and moves branches forward where they only advance.
    """
    from ..remote.sync import pull as do_pull
    o = out(json_out)
    repo = STATE.repo()
    res = do_pull(repo, remote, progress=o.progress(), renumber=renumber)
    if json_out:
        o.json(res)
    else:
        _print_fetch(o, res.fetch)
        for r in res.renamed:
            o.line(f"  renamed   {r['old_name']} -> {r['name']}  ({short(r['old_id'])} -> {short(r['id'])})")
        for u in res.updated:
            o.line(f"  {'new' if u.old is None else 'updated':<9} {u.ref}  "
                   + (f"{short(u.old)} -> " if u.old else "") + short(u.new))
        for n in res.notes:
            o.line(f"  note: {n}")
        if res.checked_out:
            o.line(f"Work folder now holds {res.checked_out}")
        for u in res.conflicts:
            o.warn(f"not taken: {u.ref}: {u.reason}")
        if not (res.updated or res.conflicts or res.renamed or res.fetch.changed):
            o.line(f"Already up to date with {res.fetch.remote}")
    if res.conflicts:
        raise typer.Exit(6)


# ------------------------------------------------------------------------------ clone


def clone(
    url: str = typer.Argument(..., metavar="URL", help="s3://bucket/prefix or a folder path."),
    dest: Path = typer.Argument(..., metavar="DIR", help="Folder to create the store in (may exist, without a .lineage/)."),
    endpoint_url: str | None = typer.Option(None, "--endpoint-url", help="S3-compatible server: http(s)://host:port."),
    region: str | None = typer.Option(None, "--region"),
    name: str = typer.Option("origin", "--name", help="Name of the remote in the new store."),
    backup: bool = typer.Option(False, "--backup", help="Make it the backup remote of the new store."),
    no_checkout: bool = typer.Option(False, "--no-checkout", help="Do not write the active version into the work folder."),
    json_out: bool = JSON_OPT,
) -> None:
    """A new store in DIR from a remote, its active version checked out.

    Creates DIR/.lineage with every version and every name. A folder URL is relative to the
    current folder.
    """
    from ..api import Repo
    from ..remote.spec import normalize_url
    from ..remote.sync import clone as do_clone
    o = out(json_out)
    url = normalize_url(url)  # a relative folder path is relative to here, not to DIR
    repo, res = do_clone(url, dest, endpoint_url=endpoint_url, region=region, name=name, backup=backup,
                         progress=o.progress(), checkout=not no_checkout, repo_class=Repo)
    STATE.repo_obj = repo
    STATE.mutated = True
    if json_out:
        o.json(res)
        return
    for w in res.warnings:
        o.warn(w)
    o.line(f"Cloned {res.url} into {res.store}: {res.versions} versions, {res.refs} refs, "
           f"{res.objects_received} objects ({human_bytes(res.bytes_received)}) in {res.seconds:.1f}s")
    if res.head_name:
        where = f" into {res.work_dir} ({res.files_written} files written)" if res.work_dir else ""
        o.line(f"Active version: {res.head_name}{where}")


# ------------------------------------------------------------------------------ backup


def backup(
    set_: str | None = typer.Option(None, "--set", help="Make this remote the backup remote."),
    off: bool = typer.Option(False, "--off", help="Stop automatic backups."),
    json_out: bool = JSON_OPT,
) -> None:
    """Push what is not yet backed up to the backup remote.

    Retries a failed automatic backup.
    """
    from ..remote import backup as bk
    o = out(json_out)
    repo = STATE.repo()
    if set_ and off:
        raise InvalidInput("--set and --off together make no sense")
    if set_ or off:
        bk.set_backup_remote(repo, None if off else set_)
        STATE.mutated = True
        if json_out:
            o.json(bk.backup_status(repo))
        else:
            o.line("Automatic backup off" if off else f"Backup remote: {set_} (every commit is pushed there)")
        if off:
            return
    res = bk.run_backup(repo, progress=o.progress())
    status = bk.backup_status(repo)
    if json_out:
        o.json({"push": res, "status": status})
        return
    _print_push(o, res)
    o.line(f"Backup: {status['summary']}")


# ------------------------------------------------------------------------------ verify


def verify(
    name: str | None = typer.Argument(None, metavar="[REMOTE]",
                                         help="The remote to check (default: the backup remote, or the only one)."),
    remote: str | None = typer.Option(None, "--remote", help="The same as REMOTE."),
    full: bool = typer.Option(False, "--full", help="Download every object and re-hash it (slow); default: presence."),
    json_out: bool = JSON_OPT,
) -> None:
    """Check that a remote holds every object of every version it names.

    Exit 1 if not.
    """
    from ..remote.sync import verify as do_verify
    if name and remote and name != remote:
        raise typer.BadParameter(f"the remote is given twice: {name} and --remote {remote}")
    remote = name or remote
    o = out(json_out)
    repo = STATE.repo()
    res = do_verify(repo, remote, full=full, progress=o.progress())
    if json_out:
        o.json(res)
    else:
        for b in res.bad_refs:
            o.line(f"bad-ref: {b['ref']}: {b['message']}")
        for m in res.missing:
            o.line(f"missing: object {m['id']} (reached from {m['where']})")
        for c in res.corrupt:
            o.line(f"corrupt: {c['message']} (reached from {c['where']})")
        how = f"{human_bytes(res.bytes_verified)} re-hashed" if full else "presence checked"
        verdict = "ok" if res.ok else f"{len(res.missing) + len(res.corrupt) + len(res.bad_refs)} problem(s)"
        o.line(f"verify {res.remote} ({res.url}): {res.refs} refs, {res.objects} objects ({how}): {verdict}")
        if res.not_on_remote:
            shown = ", ".join(res.not_on_remote[:8]) + (" ..." if len(res.not_on_remote) > 8 else "")
            o.line(f"  not on {res.remote} yet: {shown} (lin push {res.remote})")
    if not res.ok:
        raise typer.Exit(1)
