"""`lin queue`: the files a branch will be trained on (add, ls, rm, move, park, retry, pause,
resume, log). The loop that trains them is `lin run` (cli/run_cmd.py)."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from ..core.errors import InvalidInput
from .common import JSON_OPT, STATE, out
from .output import Output, human_int

queue_app = typer.Typer(help="The training queue: files a branch will be trained on, in order.",
                        no_args_is_help=True, rich_markup_mode=None)

BRANCH_OPT = typer.Option(None, "--branch", "-b", help="The queue's branch (default: the branch HEAD is on).")
ITEM_ARG = typer.Argument(..., help="An item id (q00042, or 42) or the file name it was added under.")


def register(app: typer.Typer) -> None:
    app.add_typer(queue_app, name="queue")


def _branch(branch: str | None) -> tuple[Any, str]:
    from ..queue import default_branch
    repo = STATE.repo()
    return repo, default_branch(repo, branch)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


@queue_app.command("add")
def add(
    paths: list[str] = typer.Argument(..., metavar="FILE|DIR|GLOB...",
                                      help="Data files, folders (their *.jsonl, *.jsonl.gz, *.jsonl.zst at any "
                                           "depth, sorted by relative path) or globs."),
    priority: int = typer.Option(0, "--priority", "-p",
                                 help="Higher goes first; equal priorities keep the order they were added in."),
    branch: str | None = BRANCH_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Register and queue data files for the branch's training loop.

    Files are registered (tokens counted under the branch tip's tokenizer) when they are new. A
    file whose content is already trained in the branch's lineage, or already in its queue
    (under any name), is not added and the reason is printed.
    """
    from ..queue import add_files
    o = out(json_out)
    repo, b = _branch(branch)
    res = add_files(repo, b, paths, priority=priority, on_progress=o.progress())
    STATE.mutated = bool(res.registered)
    if json_out:
        o.json({"branch": b, **res.to_dict()})
        return
    if res.added:
        ids = res.added[0].id + (f"..{res.added[-1].id}" if len(res.added) > 1 else "")
        o.line(f"Queued {len(res.added)} file(s) on {b} ({ids}): "
               f"{human_int(sum(i.examples for i in res.added))} examples, "
               f"{human_int(sum(i.tokens for i in res.added))} tokens")
        for it in res.added[:20]:
            o.line(f"  {it.id}  {it.name}  {human_int(it.examples)} examples  {human_int(it.tokens)} tokens")
        if len(res.added) > 20:
            o.line(f"  ... and {len(res.added) - 20} more (lin queue ls)")
    else:
        o.line(f"Nothing queued on {b}.")
    for path, why in res.skipped:
        o.diag(f"not queued: {path}: {why}")


@queue_app.command("ls")
def ls(
    show_all: bool = typer.Option(False, "--all", "-a", help="Show every done item (default: the last 5)."),
    branch: str | None = BRANCH_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """The queue: position, file, tokens, status, estimated start.

    --json prints one line. The estimate uses the tokens per second measured on the branch's recent training versions
    (metrics tokens_trained and wall_time_s); "unknown" when none recorded them. Done items
    beyond the last 5 are hidden unless --all.
    """
    from ..queue import listing
    o = out(json_out)
    repo, b = _branch(branch)
    lst = listing(repo, b, show_all=show_all)
    if json_out:
        # one line: python's indenting encoder is ~10x slower than the compact one, which is what
        # keeps 50,000 rows under a second
        sys.stdout.write(json.dumps(lst.to_dict(), separators=(",", ":"), allow_nan=False) + "\n")
        return
    c = lst.counts
    o.line(f"Queue of {b}: {c['queued']} queued, {c['running']} running, {c['parked']} parked, {c['done']} done"
           + (f"  PAUSED: {lst.paused}" if lst.paused else ""))
    if lst.rate:
        o.line(f"Rate {human_int(int(lst.rate))} tokens/s (last {lst.rate_versions} training version(s)); "
               f"{human_int(lst.tokens_queued)} tokens queued: about {_ago(lst.eta_s)}")
    else:
        o.line("Rate unknown (no training version of this branch records tokens_trained and wall_time_s): "
               "start times unknown")
    if not lst.rows:
        o.line("The queue is empty. Add files: lin queue add FILE|DIR")
        return
    lines = [f"{'POS':>5}  {'ITEM':<7} {'FILE':<36} {'EXAMPLES':>9} {'TOKENS':>12}  {'STATUS':<7} DETAIL"]
    for r in lst.rows:
        st = r["status"]
        if st == "done":
            detail = r["version"] or ""
        elif st == "parked":
            detail = r["reason"] or ""
        elif st == "running":
            detail = f"attempt {r['attempts']}" + (f"; last error: {r['reason']}" if r["reason"] else "")
        else:
            detail = (f"starts {r['estimated_start']} (in {_ago(r['estimated_start_in_s'])})"
                      if r["estimated_start"] else "starts: unknown")
        name = r["name"] if len(r["name"]) <= 36 else "…" + r["name"][-35:]
        pos = r["position"] if r["position"] is not None else "-"
        lines.append(f"{pos:>5}  {r['id']:<7} {name:<36} {human_int(r['examples']):>9} "
                     f"{human_int(r['tokens']):>12}  {st:<7} {detail}")
    o.line("\n".join(lines))
    if lst.hidden_done:
        o.line(f"({lst.hidden_done} older done item(s) hidden; --all shows them)")


def _changed(o: Output, json_out: bool, b: str, res, text: str) -> None:
    if json_out:
        o.json({"branch": b, "item": res.to_dict()})
    else:
        o.line(text)


@queue_app.command("rm")
def rm(item: str = ITEM_ARG, branch: str | None = BRANCH_OPT, json_out: bool = JSON_OPT) -> None:
    """Take an item out of the queue.

    Its registration stays; done items stay as history.
    """
    from ..queue import remove
    o = out(json_out)
    repo, b = _branch(branch)
    res = remove(repo, b, item)
    _changed(o, json_out, b, res, f"Removed {res.item.id} ({res.item.name}) from the queue of {b}")


@queue_app.command("move")
def move(
    item: str = ITEM_ARG,
    to: int | None = typer.Option(None, "--to", help="The new position (1 = trained next)."),
    top: bool = typer.Option(False, "--top", help="Move to position 1."),
    branch: str | None = BRANCH_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Move an item to another position.

    Its priority follows its new neighbours.
    """
    from ..queue import move as do_move
    if top and to is not None:
        raise InvalidInput("give --to N or --top, not both")
    o = out(json_out)
    repo, b = _branch(branch)
    res = do_move(repo, b, item, to=to, top=top)
    _changed(o, json_out, b, res, f"Moved {res.item.id} ({res.item.name}) from position {res.old_position} "
                                  f"to {res.position} (priority {res.item.priority})")


@queue_app.command("park")
def park(
    item: str = ITEM_ARG,
    reason: str = typer.Option(..., "--reason", "-r", help="Why (shown by lin queue ls)."),
    branch: str | None = BRANCH_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Set an item aside: the loop skips it until `lin queue retry`."""
    from ..queue import park as do_park
    o = out(json_out)
    repo, b = _branch(branch)
    res = do_park(repo, b, item, reason)
    _changed(o, json_out, b, res, f"Parked {res.item.id} ({res.item.name}): {res.item.reason}")


@queue_app.command("retry")
def retry(item: str = ITEM_ARG, branch: str | None = BRANCH_OPT, json_out: bool = JSON_OPT) -> None:
    """Queue a parked item again, in its place, attempts from zero."""
    from ..queue import retry as do_retry
    o = out(json_out)
    repo, b = _branch(branch)
    res = do_retry(repo, b, item)
    _changed(o, json_out, b, res, f"Queued {res.item.id} ({res.item.name}) again at position {res.position}")


@queue_app.command("pause")
def pause(
    reason: str | None = typer.Option(None, "--reason", "-r", help="Why (shown by lin queue ls)."),
    branch: str | None = BRANCH_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Pause the queue until `lin queue resume`.

    `lin run` takes no next file while the queue is paused.
    """
    from ..queue import pause as do_pause
    o = out(json_out)
    repo, b = _branch(branch)
    res = do_pause(repo, b, reason)
    if json_out:
        o.json(vars(res))
    else:
        o.line(f"Paused the queue of {b}: {res.paused}" if res.changed
               else f"The queue of {b} was already paused: {res.paused}")


@queue_app.command("resume")
def resume(branch: str | None = BRANCH_OPT, json_out: bool = JSON_OPT) -> None:
    """Resume a paused queue (the next `lin run` also resumes it)."""
    from ..queue import resume as do_resume
    o = out(json_out)
    repo, b = _branch(branch)
    res = do_resume(repo, b)
    if json_out:
        o.json(vars(res))
    else:
        o.line(f"Resumed the queue of {b}" if res.changed else f"The queue of {b} was not paused")


@queue_app.command("log")
def log(
    limit: int = typer.Option(50, "--limit", "-n", help="The newest N entries; 0 for all."),
    branch: str | None = BRANCH_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """The queue's log: added, trained, parked, retried, paused.

    Each entry with its time (UTC).
    """
    from ..queue import read_log
    if limit < 0:
        raise InvalidInput("--limit must be 0 (all) or more")
    o = out(json_out)
    repo, b = _branch(branch)
    entries = read_log(repo, b, None if limit == 0 else limit)
    if json_out:
        o.json({"branch": b, "entries": [e.to_dict() for e in entries]})
        return
    if not entries:
        o.line(f"The queue of {b} has no log yet.")
        return
    o.line("\n".join(f"{e.time}  {e.message}" for e in entries))

