"""Every environment variable lin reads, in one table, and the functions that read them.

Kept apart from :mod:`.settings` (config.toml) and below it, so that the lowest modules (the
crash lab's kill points in :mod:`.fsutil`) read the environment the same way as the rest.
"""

from __future__ import annotations

import math
import os

from .errors import InvalidInput

#: Every environment variable lin reads, with who reads it and what it does. Read them with
#: :func:`read_env` (or :func:`env_number` / :func:`env_int`); tests/test_settings.py checks that the
#: package reads ``os.environ`` nowhere else.
ENVIRONMENT: dict[str, str] = {
    "LIN_STORE": "core.repo: the store to open instead of looking upward for .lineage/",
    "LIN_LOCK_TIMEOUT": "core.repo, cli: seconds to wait for a lock; overrides core.lock_timeout",
    "LIN_NO_PROGRESS": "cli: any non-empty value turns progress bars off",
    "LIN_DEBUG": "cli.main: any non-empty value prints the traceback of an unexpected error (a bug)",
    "LIN_REMOTE_WORKERS": "remote.session: parallel requests to a remote (default 8)",
    "LIN_TRAIN_PLAN": "cli.train_cmd: the accepted plan, for the ranks `lin train --gpus N` starts",
    "LIN_TRAIN_LAUNCHER": "cli.train_cmd: the pid of `lin train --gpus N`, which its ranks end with",
    "LIN_DIST_TIMEOUT_MIN": "train.distributed: minutes the ranks wait for each other (default 120)",
    "LIN_TEST_KILL_AT": "core.fsutil (tests): kill the process at a named point",
    "LIN_TEST_PAUSE_AT": "core.fsutil (tests): pause at a named point",
    "LIN_TEST_PAUSE_FILE": "core.fsutil (tests): the file whose removal ends a pause",
    "LIN_TEST_NAN_AT": "train.trainer (tests): the loss of optimizer step N (1-based) reads as NaN",
    "AWS_ENDPOINT_URL": "remote: the S3 endpoint when a remote names none (botocore reads it too)",
    "AWS_ENDPOINT_URL_S3": "remote.backend: the S3 endpoint, before AWS_ENDPOINT_URL",
    "AWS_MAX_ATTEMPTS": "remote.backend: tries per S3 request (default 4)",
    "CUDA_VISIBLE_DEVICES": "train.plan: which GPUs the memory check looks at",
    "WORLD_SIZE": "train.distributed: set by torchrun/accelerate",
    "RANK": "train.distributed: set by torchrun/accelerate",
    "LOCAL_RANK": "train.distributed: set by torchrun/accelerate",
    "GIT_DIR": "core.repo: a git repository given this way counts as the training code's",
    "PYTHONPATH": "data.workers: passed on to the scan's worker processes",
}

def read_env(name: str) -> str | None:
    """The value of an environment variable listed in :data:`ENVIRONMENT` (None when unset)."""
    if name not in ENVIRONMENT:
        raise KeyError(f"{name} is not listed in lineagestore.core.environment.ENVIRONMENT")
    return os.environ.get(name)


def env_number(name: str, default: float, *, low: float = 0.0) -> float:
    """A finite number ``>= low`` from the environment, else ``default``."""
    raw = read_env(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < low:
        raise InvalidInput(f"environment: {name}={raw!r} must be a finite number >= {low:g}")
    return value


def env_int(name: str, default: int, *, low: int = 0) -> int:
    """A whole number ``>= low`` from the environment, else ``default``."""
    raw = read_env(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"environment: {name}={raw!r} must be a whole number >= {low}") from None
    if value < low:
        raise InvalidInput(f"environment: {name}={raw!r} must be a whole number >= {low}")
    return value
