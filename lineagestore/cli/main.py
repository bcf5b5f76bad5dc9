"""The ``lin`` command: global options, command registration, errors -> exit codes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:  # checked against the typer this project is developed with
    from typer._click.exceptions import ClickException
else:
    try:  # typer >= 0.20 ships its own copy of click; catch the exceptions it really raises
        from typer._click.exceptions import ClickException
    except ImportError:  # pragma: no cover - older typer uses click itself
        from click.exceptions import ClickException

from ..core.errors import EXIT_INTERRUPTED, LinError, UnexpectedError
from . import common
from .output import Output, exit_code_for

app = typer.Typer(
    name="lin",
    help="lineagestore: version control for fine-tuned models and their training data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback(invoke_without_command=True)
def _global(
    ctx: typer.Context,
    store: Path = typer.Option(None, "--store", envvar="LIN_STORE",
                               help="The store folder (.lineage); default: found by walking up from here."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or status messages."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from .. import __version__
        typer.echo(f"lin {__version__}")
        raise typer.Exit()
    common.STATE.store = store
    common.STATE.quiet = quiet
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)


#: the modules that define commands, each with ``register(app)``
MODULES = (
    "versions_cmd",
    "check_cmd",
    "data_cmd",
    "guard_cmd",
    "train_cmd",
    "remote_cmd",
    "queue_cmd",
    "run_cmd",
    "dashboard_cmd",
    "storage_cmd",
    "analytics_cmd",
)

#: which module defines each top-level command. ``main()`` imports only the module of the command
#: it runs (a ``lin`` process should start fast: a re-commit of an unchanged model is mostly
#: start-up); anything else (``--help``, a mistyped command) registers all of them.
#: tests/test_cli_start.py checks this table against what the modules register.
COMMANDS = {
    **dict.fromkeys(("init", "import", "commit", "log", "show", "checkout", "status", "diff",
                     "registry", "tag", "branch"), "versions_cmd"),
    "fsck": "check_cmd",
    **dict.fromkeys(("stats", "eval"), "analytics_cmd"),
    "run": "run_cmd",
    "data": "data_cmd",
    **dict.fromkeys(("rm", "gc", "reflog", "restore", "audit", "doctor"), "guard_cmd"),
    **dict.fromkeys(("plan", "train", "runs", "progress"), "train_cmd"),
    **dict.fromkeys(("remote", "push", "fetch", "pull", "clone", "backup", "verify"), "remote_cmd"),
    "queue": "queue_cmd",
    **dict.fromkeys(("report", "serve"), "dashboard_cmd"),
    "repack": "storage_cmd",
}

_registered: set[str] = set()


def register(modules: tuple[str, ...] = MODULES) -> typer.Typer:
    """Add the commands of ``modules`` (default: all) to :data:`app`, once each."""
    import importlib
    for mod in modules:
        if mod not in _registered:
            importlib.import_module(f"lineagestore.cli.{mod}").register(app)
            _registered.add(mod)
    return app


def _command_module(argv: list[str]) -> str | None:
    """The module of the command ``argv`` runs, or None when it names none (then: all)."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--store":
            i += 2
        elif a.startswith("--store=") or a in ("-q", "--quiet"):
            i += 1
        elif a.startswith("-"):
            return None
        else:
            return COMMANDS.get(a)
    return None


def _whole_summaries(cmd) -> None:
    """Give every command its help's first paragraph as its summary in ``--help`` lists: click
    would otherwise cut it at the terminal's width with "..." (each command's docstring starts
    with one short line, so the lists stay one line a command on an 80-column terminal)."""
    for sub in getattr(cmd, "commands", {}).values():
        if not sub.short_help and sub.help:
            sub.short_help = " ".join(sub.help.split("\n\n")[0].split())
        _whole_summaries(sub)


def _report_lock_wait(lock_path, holders) -> None:
    """Say who holds the store lock a command waits for (library code never prints)."""
    from ..core.settings import lock_timeout
    who = "; ".join(h.describe() for h in holders) or "another lin process"
    repo = common.STATE.repo_obj
    limit = getattr(repo, "lock_timeout", None) or lock_timeout()
    what = lock_path.name.removesuffix(".lock")
    Output().diag(f"waiting for the {what} lock, held by {who}; giving up after {limit:.0f}s "
                       "(LIN_LOCK_TIMEOUT)")


def _record_audit(argv: list[str]) -> None:
    st = common.STATE
    repo = st.repo_obj
    if repo is None or getattr(repo, "path", None) is None:
        return
    if not (repo.changes or st.mutated):
        return
    from ..core import audit
    try:
        audit.record(repo, ["lin", *argv], repo.changes)
    except LinError as e:
        Output().warn(f"could not write the audit log: {e}")


def _unexpected(e: Exception) -> LinError:
    """The one-line error for an exception that escaped every command."""
    import errno

    from ..core.environment import read_env
    from ..core.errors import NoSpace
    if read_env("LIN_DEBUG"):
        import traceback
        traceback.print_exception(e, file=sys.stderr)
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        err: LinError = NoSpace(f"no space left on device: {e.filename or e}",
                                hint="free some disk space and run the command again")
    else:
        err = UnexpectedError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
    err.__cause__ = e
    return err


def _report_error(e: LinError, argv: list[str]) -> int:
    """Print ``e`` (one line, and its hint); with --json also as JSON on stdout. Its exit code."""
    Output().error(e)
    code = exit_code_for(e)
    if "--json" in argv:  # scripts get the error as JSON on stdout too
        cause = e.__cause__ if isinstance(e, UnexpectedError) and e.__cause__ is not None else e
        Output(json_mode=True).json({"error": str(e), "hint": e.hint, "exit_code": code,
                                     "type": type(cause).__name__})
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    common.STATE.reset()  # fresh state per invocation (tests call main() repeatedly)
    from ..core import fsutil
    fsutil.set_lock_wait_reporter(_report_lock_wait)
    mod = _command_module(argv)
    register((mod,) if mod else MODULES)
    cmd = typer.main.get_command(app)
    _whole_summaries(cmd)
    code = 0
    try:
        rv = cmd.main(args=argv, prog_name="lin", standalone_mode=False)
        if isinstance(rv, int):
            code = rv
    except LinError as e:
        code = _report_error(e, argv)
    except typer.Exit as e:  # typer's own class; click's in older typer
        code = e.exit_code
    except typer.Abort:
        Output().error(KeyboardInterrupt("aborted"))
        code = EXIT_INTERRUPTED
    except ClickException as e:
        e.show()
        code = e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        code = 0
    except Exception as e:  # noqa: BLE001 - the last resort: one line, never a bare traceback
        code = _report_error(_unexpected(e), argv)
    finally:
        try:
            _record_audit(argv)
        except Exception as e:  # noqa: BLE001 - the command's own result matters more
            sys.stderr.write(f"warning: audit log: {e}\n")
    if isinstance(code, int) and code:
        return code
    return 0


def run() -> None:  # pragma: no cover - console entry point
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
