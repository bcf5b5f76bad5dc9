"""The CLI's one output object: data to stdout, diagnostics to stderr, JSON on request.

Also the one place where errors become messages and exit codes, and where progress bars live.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from ..core.environment import read_env
from ..core.errors import LinError

if TYPE_CHECKING:  # rich is imported when a bar is first shown
    from rich.progress import Progress as RichBar
    from rich.progress import TaskID


def _console(stderr: bool):
    from rich.console import Console  # imported when first needed: a plain run prints without it
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False,
                   soft_wrap=True)


def _plain(stream) -> bool:
    """Whether text for ``stream`` goes out as is: not a terminal, where rich would drop any
    style and print the same line (so a script's ``lin`` does not load rich at all)."""
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return True


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(obj, "to_dict"):
            return to_jsonable(obj.to_dict())
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if hasattr(obj, "__fspath__"):
        return os.fspath(obj)
    return obj


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(obj, "to_dict"):
            return obj.to_dict()
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if hasattr(obj, "__fspath__"):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


class Output:
    def __init__(self, json_mode: bool = False, quiet: bool = False):
        self.json_mode = json_mode
        self.quiet = quiet
        self._out = None
        self._err = None

    @property
    def out(self):
        """The rich console for stdout (made on first use)."""
        if self._out is None:
            self._out = _console(False)
        return self._out

    @property
    def err(self):
        """The rich console for stderr (made on first use)."""
        if self._err is None:
            self._err = _console(True)
        return self._err

    def diag(self, text: str, style: str | None = None) -> None:
        """A line on stderr, whatever --quiet says."""
        if _plain(sys.stderr):
            sys.stderr.write(f"{text}\n")
        else:
            self.err.print(text, style=style)

    # data
    def line(self, text: str = "", style: str | None = None) -> None:
        if self.json_mode:
            return
        if _plain(sys.stdout):
            sys.stdout.write(f"{text}\n")
        else:
            self.out.print(text, style=style)

    def json(self, obj: Any) -> None:
        try:  # the encoder walks plain data itself and asks _json_default only for the rest
            text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False, default=_json_default)
        except (ValueError, TypeError):  # NaN/inf (-> null) or keys json cannot write: the slow way
            text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def table(self, table) -> None:
        if not self.json_mode:
            self.out.print(table)

    # diagnostics
    def info(self, text: str) -> None:
        if not self.quiet:
            self.diag(text)

    def warn(self, text: str) -> None:
        self.diag(f"warning: {text}", style="yellow")

    def error(self, err: BaseException) -> None:
        """``error: ...`` and perhaps ``hint: ...``, each one line whatever the message holds
        (a third-party message may span several)."""
        self.diag(f"error: {one_line(str(err))}", style="bold red")
        hint = getattr(err, "hint", None)
        if hint:
            self.diag(f"hint: {one_line(hint)}")

    def progress(self) -> BarProgress:
        enabled = not self.quiet and not _plain(sys.stderr) and not read_env("LIN_NO_PROGRESS")
        return BarProgress(self.err if enabled else None, enabled)

    def confirm_typed(self, prompt: str, expected: str) -> bool:
        """Ask the user to type ``expected``; refuse (False) when stdin is not a terminal."""
        if not sys.stdin.isatty():
            return False
        self.err.print(prompt, end=" ")
        try:
            answer = input()
        except EOFError:
            return False
        return answer.strip() == expected

    def confirm(self, prompt: str) -> bool:
        if not sys.stdin.isatty():
            return False
        self.err.print(f"{prompt} [yes/no]:", end=" ")
        try:
            return input().strip().lower() in ("y", "yes")
        except EOFError:
            return False


class BarProgress:
    """A rich progress bar implementing :class:`lineagestore.core.progress.Progress`."""

    def __init__(self, console, enabled: bool):
        self.console = console
        self.enabled = enabled
        self._bar: RichBar | None = None  # made (and rich imported) when work starts
        self._task: TaskID | None = None
        self._fields: dict = {}

    def start(self, description: str, total: float | None = None, unit: str = "B") -> None:
        if not self.enabled:
            return
        self.finish()
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichBar
        if unit == "B":
            cols = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TextColumn("{task.fields[extra]}"), TimeRemainingColumn()]
        else:
            cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TaskProgressColumn(), TextColumn("{task.fields[extra]}"), TimeRemainingColumn()]
        self._bar = RichBar(*cols, console=self.console, transient=True)
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, extra="")
        self._t0 = time.monotonic()

    def advance(self, amount: float = 1, **fields: object) -> None:
        """``records=N`` (a running count) is shown with its rate; other fields as ``name value``."""
        if self._bar is None or self._task is None:
            return
        parts = []
        for k, v in fields.items():
            if k == "records" and isinstance(v, int):
                rate = v / max(time.monotonic() - self._t0, 1e-6)
                parts.append(f"{v:,} records  {rate:,.0f} rec/s")
            else:
                parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
        extra = "  ".join(parts)
        if extra:
            self._bar.update(self._task, advance=amount, extra=extra)
        else:
            self._bar.update(self._task, advance=amount)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of blanks folded into single spaces."""
    return " ".join(text.split())


def exit_code_for(err: BaseException) -> int:
    if isinstance(err, LinError):
        return err.exit_code
    return 1


def human_bytes(n: float | int | None) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def human_int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def since(t0: float) -> str:
    return f"{time.monotonic() - t0:.1f}s"
