"""``lin run``: train the branch's queue, file after file (docs/continuous.md)."""

from __future__ import annotations

import inspect
from pathlib import Path

import typer

from ..core.errors import EXIT_INTERRUPTED, LinError, Refused
from .common import JSON_OPT, STATE, out, short
from .output import human_int
from .train_cmd import setting_params, settings_and_job


def register(app: typer.Typer) -> None:
    app.command(name="run")(run)


def _with_setting_options(fn):
    """Add `lin train`'s setting options (train_cmd.setting_params) to ``fn``."""
    P = inspect.Parameter
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind != P.VAR_KEYWORD]
    fn.__signature__ = inspect.signature(fn).replace(parameters=[*params, *setting_params()])
    return fn


@_with_setting_options
def run(
    branch: str | None = typer.Option(None, "--branch", "-b", help="The branch whose queue to train (default: HEAD's)."),
    max_files: int | None = typer.Option(None, "--max-files", min=1, help="Stop after training this many files."),
    until_tokens: int | None = typer.Option(None, "--until-tokens", min=1,
                                            help="Stop once this many tokens were trained by this run."),
    files_per_version: int = typer.Option(1, "--files-per-version", min=1,
                                          help="Train up to N queued files into one version (default 1)."),
    tokens_per_version: int | None = typer.Option(None, "--tokens-per-version", min=1,
                                                  help="Train queued files into one version until it holds T tokens."),
    retries: int | None = typer.Option(None, "--retries", min=0,
                                       help="Tries again from the last checkpoint before a file is parked "
                                            "(default: run.retries, 2)."),
    inbox: Path | None = typer.Option(None, "--inbox", help="Queue complete files dropped into DIR; wait for more."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before training (for scripts and services)."),
    message: str = typer.Option("", "--message", "-m", help="Message of each new version."),
    code: Path | None = typer.Option(None, "--code", help="The training code's git repository (default: here)."),
    json_out: bool = JSON_OPT,
    **opts,
) -> None:
    """Train the queue: check, train, publish, back up, file after file.

    A file that fails a data or duplicate check is parked with its reason and the loop goes on; a
    disk, device, base or store problem pauses the queue (exit 12). Training failures are retried
    from the last checkpoint (--retries), then the file is parked. Ctrl-C / SIGTERM finish the step,
    checkpoint and exit 130; `lin run` again resumes. Exits 0 when the queue is empty.
    """
    from ..runner import RunOptions
    from ..runner import run as run_loop
    from ..train.runs import StopFlag
    o = out(json_out)
    repo = STATE.repo()
    settings = settings_and_job(repo, opts)[0]
    options = RunOptions(settings=settings, branch=branch, files_per_version=files_per_version,
                         tokens_per_version=tokens_per_version, max_files=max_files, until_tokens=until_tokens,
                         retries=retries, inbox=inbox.absolute() if inbox else None, code_path=code, message=message)
    _confirm(o, repo, options, yes)
    STATE.mutated = True
    with StopFlag() as flag:
        try:
            report = run_loop(repo, options, progress=_progress(o), log=o.info,
                              stop=lambda: flag.signal is not None)
        except LinError as e:
            partial = getattr(e, "report", None)
            if partial is None:
                raise
            _print(o, partial, json_out, error=e)
            o.error(e)
            raise typer.Exit(e.exit_code) from None
    if report.stopped == "stopped":
        _print(o, report, json_out)
        o.info("stopped by a signal between files; `lin run` again goes on with the queue")
        raise typer.Exit(EXIT_INTERRUPTED)
    _print(o, report, json_out)


def _confirm(o, repo, options, yes: bool) -> None:
    """Ask once before the loop starts (refused at once without a terminal unless --yes)."""
    import sys
    if yes:
        return
    if not (sys.stdin is not None and sys.stdin.isatty()):
        raise Refused("lin run asks before it trains, and this is not a terminal: nothing was trained",
                      hint="pass --yes to train without asking (a service runs `lin run --yes`)")
    from ..queue import default_branch, load
    b = default_branch(repo, options.branch)
    q = load(repo, b)
    queued = [i for i in q.items if i.status in ("queued", "running")]
    o.line(f"Queue of {b}: {len(queued)} file(s), {human_int(sum(i.tokens for i in queued))} tokens to train"
           + (f"; paused: {q.paused}" if q.paused else ""))
    if not o.confirm("Proceed?"):
        raise Refused("not confirmed; nothing was trained", hint="answer yes, or pass --yes")


def _progress(o):
    """A bar on a terminal, else a line every few seconds (as `lin train`); nothing with -q."""
    from ..core.environment import read_env
    from .train_cmd import LineProgress
    bar = o.progress()
    if bar.enabled or o.quiet or read_env("LIN_NO_PROGRESS"):
        return bar
    return LineProgress(o)


def _print(o, report, json_out: bool, error: LinError | None = None) -> None:
    if json_out:
        doc = report.to_dict()
        if error is not None:
            doc["error"] = {"message": str(error), "hint": error.hint, "exit_code": error.exit_code,
                            "type": type(error).__name__}
        o.json(doc)
        return
    for t in report.trained:
        files = ", ".join(Path(f).name for f in t.files)
        loss = f"  loss {t.final_loss:.4f}" if t.final_loss is not None else ""
        o.line(f"Trained {t.version}  {short(t.id)}  {human_int(t.tokens)} tokens, {t.steps} steps{loss}  ({files})")
    for p in report.parked:
        o.line(f"Parked  {p.item}  {Path(p.file).name}: {p.reason}")
    stopped = {"empty": "the queue is empty", "max-files": "--max-files reached",
               "until-tokens": "--until-tokens reached"}.get(report.stopped, report.stopped)
    o.line(f"{len(report.trained)} version(s) trained, {len(report.parked)} file(s) parked, "
           f"{report.retried} retr{'y' if report.retried == 1 else 'ies'}; {stopped}.")
