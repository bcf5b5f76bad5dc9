"""Guardrail commands: rm, gc, reflog, restore, audit, doctor (docs/safety.md).

Exit codes: 0 done; 1 a check failed (audit --verify, doctor found risks, gc refused because the
store has problems); 3 name or object not found; 4 invalid name; 5 objects missing; 6 the name
exists already; 7 refused by a guardrail (protected name, confirmation missing or wrong);
8 the store lock stayed busy past the timeout.
"""

from __future__ import annotations

import time

import typer

from ..core.errors import InvalidInput, Refused
from .common import JSON_OPT, STATE, out, short
from .output import Output, human_bytes


def register(app: typer.Typer) -> None:
    app.command(name="rm")(rm)
    app.command(name="gc")(gc)
    app.command(name="reflog")(reflog)
    app.command(name="restore")(restore)
    app.command(name="audit")(audit)
    app.command(name="doctor")(doctor)


def _when(t: float | None) -> str:
    return "-" if not t else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _days(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:g} days"
    if seconds >= 3600:
        return f"{seconds / 3600:g} hours"
    return f"{seconds:g} seconds"


# ----------------------------------------------------------------------------- rm


def rm(
    name: str = typer.Argument(..., help="The name to remove: a version name (or vNNN), tag, branch or refs/... ."),
    force: bool = typer.Option(False, "--force", help="Remove a protected name (with --confirm-lineage)."),
    confirm_lineage: bool = typer.Option(False, "--confirm-lineage",
                                         help="Acknowledge that descendants lose their named ancestor."),
    confirm_name: str | None = typer.Option(None, "--confirm-name", metavar="NAME",
                                            help="The full name, typed out: needed when not in a terminal."),
    json_out: bool = JSON_OPT,
) -> None:
    """Remove a name; its objects stay (`lin restore NAME` undoes it).

    Objects are never deleted by rm; `lin restore NAME` brings the name back.
    """
    o = out(json_out)
    repo = STATE.repo()
    p = repo.protection(name)
    if p.reasons and not p.refuse and force and confirm_lineage and confirm_name is None:
        o.info(f"{p.name} is protected: {'; '.join(p.reasons)}")
        if p.orphans:
            o.info("Descendants that would lose their named ancestor: " + ", ".join(p.orphans))
        what = (f"This will orphan {', '.join(p.orphans)}." if p.orphans
                else f"This removes the name {p.name} (its objects stay in the store).")
        if o.confirm_typed(f"{what} Type {p.name} to confirm:", p.name):
            confirm_name = p.name
        elif not _interactive():
            raise Refused(f"{p.name} is protected and this is not a terminal: nothing removed",
                          hint=f"pass --confirm-name {p.name} to confirm without a prompt")
        else:
            raise Refused(f"the name typed does not match {p.name}: nothing removed")
    res = repo.rm(name, force=force, confirm_lineage=confirm_lineage, confirm_name=confirm_name)
    if json_out:
        o.json(res)
        return
    o.line(f"Removed the name {res.name} (it named {short(res.id)}). No object was deleted.")
    if res.orphans:
        o.line(f"  descendants without this named ancestor: {', '.join(res.orphans)}")
    o.line(f"  bring it back with: lin restore {res.name}")


def _interactive() -> bool:
    import sys
    return sys.stdin.isatty()


# ----------------------------------------------------------------------------- gc


def gc(
    confirm: bool = typer.Option(False, "--confirm", help="Move eligible objects to trash/ (default: only show the plan)."),
    empty_trash: bool = typer.Option(False, "--empty-trash", help="With --confirm: delete trash older than the grace period."),
    grace: str | None = typer.Option(None, "--grace", metavar="DURATION",
                                     help="Grace period: days (14) or 12h, 30m, 2w; default gc.grace_days. 0 must be given explicitly."),
    json_out: bool = JSON_OPT,
) -> None:
    """Plan, or move unreachable objects past the grace period to trash/.

    Without --confirm only the plan is shown; with it, unreachable objects older than the grace
    period move to trash/.
    """
    from ..core.settings import parse_grace
    o = out(json_out)
    repo = STATE.repo()
    try:
        grace_s = None if grace is None else parse_grace(grace)
    except InvalidInput as e:  # name the flag, as a bad gc.grace_days names config.toml
        raise InvalidInput(f"--grace: {e}") from None
    if grace_s == 0:
        o.warn("--grace 0: every unreachable object qualifies now, even one whose name was removed a "
               "minute ago. It goes to trash/ first; `lin restore ID` brings it back until the trash is emptied.")
    if not confirm:
        plan = repo.gc_plan(grace=grace, progress=o.progress())
        if json_out:
            o.json({"confirmed": False, "plan": plan})
            return
        _print_plan(o, plan, empty_trash)
        if plan.eligible_objects or (empty_trash and any(b.expired for b in plan.trash)):
            flags = "--confirm" + (" --empty-trash" if empty_trash else "") + (f" --grace {grace}" if grace else "")
            o.line(f"Nothing was deleted. To go ahead: lin gc {flags}")
        else:
            o.line("Nothing to do.")
        return
    res = repo.gc(grace=grace, empty_trash=empty_trash, progress=o.progress())
    if res.moved_objects or res.purged_batches:
        STATE.mutated = True
    if json_out:
        o.json({"confirmed": True, **res.to_dict()})
        return
    _print_plan(o, res.plan, empty_trash)
    if res.moved_objects:
        o.line(f"Moved {res.moved_objects} objects ({human_bytes(res.moved_bytes)}) to trash/{res.batch}. "
               f"`lin restore ID` brings any back.")
    if res.purged_batches:
        o.line(f"Deleted {len(res.purged_batches)} trash batch(es): {res.purged_objects} objects, "
               f"{human_bytes(res.purged_bytes)}.")
    if not (res.moved_objects or res.purged_batches):
        o.line("Nothing to do.")


def _print_plan(o: Output, plan, empty_trash: bool) -> None:
    o.line(f"{plan.objects} objects: {plan.reachable} reachable, {plan.unreachable} unreachable "
           f"(grace period {_days(plan.grace_s)}, reflogs kept {_days(plan.reflog_expire_s)})")
    for pr in plan.problems:
        o.line(f"  problem: {pr}")
    for g in plan.groups:
        n = g.eligible_objects + g.kept_objects
        size = g.eligible_bytes + g.kept_bytes
        if g.eligible_objects and not g.kept_objects:
            fate = "-> trash"
        elif g.kept_objects and not g.eligible_objects:
            fate = f"kept until {_when(g.keep_until)} (grace period)"
        else:
            fate = f"{g.eligible_objects} -> trash, {g.kept_objects} kept until {_when(g.keep_until)}"
        o.line(f"  {g.label:<28} {n:>6} objects {human_bytes(size):>10}  since {_when(g.since)}  {fate}")
        o.line(f"  {'':<28} why: {g.reason}")
    if plan.eligible_objects:
        o.line(f"Eligible now: {plan.eligible_objects} objects, {human_bytes(plan.eligible_bytes)}")
    _print_holders(o, plan)
    if plan.trash:
        expired = [b for b in plan.trash if b.expired]
        total = sum(b.bytes for b in plan.trash)
        o.line(f"trash/: {len(plan.trash)} batch(es), {human_bytes(total)}; {len(expired)} older than the grace period"
               + ("" if not expired or empty_trash else " (lin gc --confirm --empty-trash deletes them)"))


def _print_holders(o: Output, plan, top: int = 8) -> None:
    """The names that keep the most bytes alive, each with what only it keeps."""
    if not plan.holders:
        return
    o.line("Kept alive by (what only each keeps: removing it frees that once the grace period is over):")
    for h in plan.holders[:top]:
        note = ""
        if all(v.startswith("reflog of ") for v in h.via):
            note = f" (until the reflog entry is {_days(plan.reflog_expire_s)} old: gc.reflog_expire_days)"
        o.line(f"  {h.name:<28} {h.objects:>6} objects {human_bytes(h.bytes):>10}  via {', '.join(h.via)}{note}")
    if len(plan.holders) > top:
        rest = plan.holders[top:]
        o.line(f"  {len(rest)} more names: {sum(h.objects for h in rest)} objects, "
               f"{human_bytes(sum(h.bytes for h in rest))}")
    if plan.shared_objects:
        o.line(f"  {'(shared by several names)':<28} {plan.shared_objects:>6} objects "
               f"{human_bytes(plan.shared_bytes):>10}")


# ----------------------------------------------------------------------------- reflog


def reflog(
    name: str | None = typer.Argument(None, help="A name (current or removed), HEAD, or refs/...; default: all."),
    limit: int = typer.Option(0, "--limit", "-n", help="Show at most N changes (0: all)."),
    json_out: bool = JSON_OPT,
) -> None:
    """Every change of a name, newest first, with who and why.

    Of NAME, or of all names.
    """
    o = out(json_out)
    repo = STATE.repo()
    lines = repo.reflog(name)
    if limit > 0:
        lines = lines[:limit]
    if json_out:
        o.json(lines)
        return
    if not lines:
        o.line("No changes recorded.")
    for x in lines:
        old = "(none)" if x.old is None else f"{short(x.old)} {x.old_name or ''}".strip()
        new = "(removed)" if x.new is None else f"{short(x.new)} {x.new_name or ''}".strip()
        o.line(f"{_when(x.time)}  {x.ref}  {old} -> {new}  {x.message}  [{x.who}]")


# ----------------------------------------------------------------------------- restore


def restore(
    what: str = typer.Argument(..., help="A removed name (from the reflog), or an object id / prefix (from trash)."),
    json_out: bool = JSON_OPT,
) -> None:
    """Bring back a removed name, or objects that gc moved to trash/."""
    o = out(json_out)
    repo = STATE.repo()
    res = repo.restore(what)
    STATE.mutated = True
    if json_out:
        o.json(res)
        return
    if res.ref:
        o.line(f"Restored the name {res.ref.split('/', 2)[-1]} -> {short(res.id)}")
    if res.objects:
        o.line(f"Brought back {res.objects} objects ({human_bytes(res.bytes)}) from trash/"
               f"{', trash/'.join(res.batches)}")


# ----------------------------------------------------------------------------- audit


def audit(
    verify: bool = typer.Option(False, "--verify", help="Check the hash chain; exit 1 if the log was edited, reordered or truncated."),
    limit: int = typer.Option(0, "--limit", "-n", help="Show the last N entries (0: all)."),
    json_out: bool = JSON_OPT,
) -> None:
    """The audit log: every command that changed the store.

    Who, where, when and what; --verify checks its hash chain.
    """
    o = out(json_out)
    repo = STATE.repo()
    if verify:
        chk = repo.audit_verify()
        if json_out:
            o.json(chk)
        elif chk.ok:
            o.line(f"audit log: {chk.entries} entries, hash chain verified")
        else:
            for p in chk.problems:
                o.line(f"audit log: {p}")
        if not chk.ok:
            raise typer.Exit(1)
        return
    entries = repo.audit_log()
    if limit > 0:
        entries = entries[-limit:]
    if json_out:
        o.json(entries)
        return
    if not entries:
        o.line("The audit log is empty.")
    for e in entries:
        if "malformed" in e:
            o.line(f"(malformed line) {e['malformed'][:80]}")
            continue
        o.line(f"#{e.get('seq')}  {e.get('time')}  {e.get('user')}@{e.get('host')}  {' '.join(e.get('argv', []))}")
        for r in e.get("refs", []):
            o.line(f"    {r.get('ref')}: {short(r.get('old'))} -> {short(r.get('new'))}")
        for n in e.get("notes", []):
            o.line(f"    {n}")


# ----------------------------------------------------------------------------- doctor


def doctor(json_out: bool = JSON_OPT) -> None:
    """Risks to this store, in plain words.

    Backups, free disk, writable objects, one disk for everything. Exit 1 when there is a risk.
    """
    o = out(json_out)
    repo = STATE.repo()
    rep = repo.doctor()
    if json_out:
        o.json(rep)
    else:
        for f in rep.findings:
            o.line(f"{'RISK' if f.level == 'risk' else 'info'}  {f.message}")
            if f.hint:
                o.line(f"      fix: {f.hint}")
        o.line(f"{len(rep.risks)} risk(s) found." if rep.risks else "No risks found.")
    if rep.risks:
        raise typer.Exit(1)
