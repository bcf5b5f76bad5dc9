"""Remotes: S3-compatible storage or a folder, push/fetch/pull/clone/verify, automatic backup.

- :mod:`.backend`  the key/value interface a remote is stored through (S3, folder)
- :mod:`.spec`     named remotes in config.toml (url, endpoint, region; never credentials)
- :mod:`.sync`     push, fetch, pull, clone, verify, repair
- :mod:`.backup`   automatic backup after each commit, backup status
"""

from __future__ import annotations

from .backup import after_commit, backup_status, run_backup
from .spec import RemoteSpec, add_remote, get_remote, list_remotes, remove_remote
from .sync import (PushRejected, clone, fetch, pull, push, repair, verify)

__all__ = ["after_commit", "backup_status", "run_backup", "RemoteSpec", "add_remote", "get_remote",
           "list_remotes", "remove_remote", "PushRejected", "clone", "fetch", "pull", "push", "repair",
           "verify"]
