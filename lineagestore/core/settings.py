"""The store's settings in ``.lineage/config.toml``, with defaults for every key."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from .errors import InvalidInput

DEFAULTS: dict[str, Any] = {
    "core": {
        "work_dir": "model",  # relative to the folder that holds .lineage/
        "compression": "auto",  # auto | zstd | none: which objects are zstd-compressed (objects.py)
        "compression_level": 1,  # zstd; 1 compresses weights as well as 3, faster
        "lock_timeout": 300,
        "workers": 0,  # 0 = two threads per CPU core
    },
    "gc": {"grace_days": 14, "reflog_expire_days": 90},
    "data": {"overlap_threshold": 0.01},
    "goal": {"tokens": 1_000_000_000_000},
    "backup": {"remote": ""},
    "remote": {},
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


class Config:
    """Settings with defaults. ``get("gc.grace_days")``; ``set`` then ``save``."""

    def __init__(self, data: dict | None = None, path: Path | None = None):
        self.path = path
        self.user = data or {}
        self.data = _merge(DEFAULTS, self.user)

    @classmethod
    def load(cls, path: Path) -> "Config":
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            data = {}
        except tomllib.TOMLDecodeError as e:
            raise InvalidInput(f"{path}: invalid TOML ({e})") from e
        return cls(data, path)

    def get(self, key: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def set(self, key: str, value: Any) -> None:
        parts = key.split(".")
        node = self.user
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
        self.data = _merge(DEFAULTS, self.user)

    def dumps(self) -> str:
        return tomli_w.dumps(self.user)
