"""The automatic backup as an after-publish hook (``Repo.after_publish``, see core/publish.py).

Kept apart from :mod:`.backup` so that registering it costs no import of the push machinery:
that loads only when a backup remote is set and something was published.
"""

from __future__ import annotations

from typing import Any

from ..core.fsutil import kill_point
from ..core.progress import NULL
from ..core.repo import PublishEvent, Repo


class BackupHook:
    """Push what was just published (a version or a checkpoint) to ``backup.remote``."""

    name = "backup"

    def __call__(self, repo: Repo, event: PublishEvent) -> Any:
        if repo.path is None or not repo.settings.backup.remote:
            return None
        from .backup import after_commit
        kill_point("backup")
        return after_commit(repo, event.id, progress=event.progress or NULL)
