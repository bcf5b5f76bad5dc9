"""Progress reporting as a protocol: library code reports, the CLI decides how to show it.

The default :data:`NULL` reporter does nothing, so library calls are silent unless the caller
passes a reporter (the CLI passes a rich progress bar).
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, description: str, total: float | None = None, unit: str = "B") -> None:
        """Begin a task of ``total`` units (bytes by default; ``None`` when unknown)."""

    def advance(self, amount: float = 1, **fields: object) -> None:
        """Report ``amount`` more units done; ``fields`` are extra values to show (loss, ...)."""

    def finish(self) -> None:
        """End the current task."""


class NullProgress:
    def start(self, description: str, total: float | None = None, unit: str = "B") -> None:
        pass

    def advance(self, amount: float = 1, **fields: object) -> None:
        pass

    def finish(self) -> None:
        pass


NULL: Progress = NullProgress()
