"""Training settings: defaults, ``[train]`` in config.toml, a config file, then flags (last wins).

:class:`TrainSettings` itself (every setting's default, type and bounds) is declared with the
store's other settings in :mod:`lineagestore.core.settings`, which checks ``[train]`` when a
store is opened; this module reads the config files given with ``--config``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from ..core.errors import MalformedFile, NotFound
from ..core.settings import DEVICES, PRECISIONS, RESULT_KEYS, SCHEDULERS, TrainSettings

__all__ = ["DEVICES", "JOB_KEYS", "PRECISIONS", "RESULT_KEYS", "SCHEDULERS", "TrainSettings", "load_config_file"]

#: keys of a config file that are not training settings
JOB_KEYS = ("base", "data", "output", "name", "run", "allow_overlap", "message")


def load_config_file(path: Path) -> tuple[dict, dict]:
    """A TOML or JSON file -> (training settings, job keys: base/data/output/...).

    Settings may sit at the top level or under ``[train]``.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{path}: no such config file") from None
    try:
        if path.suffix.lower() == ".json":
            doc = json.loads(raw)
        else:
            doc = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedFile(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'} ({e})") from None
    if not isinstance(doc, dict):
        raise MalformedFile(f"{path}: expected a table of settings")
    settings = dict(doc.pop("train", {}) or {})
    job = {}
    for k, v in doc.items():
        key = k.replace("-", "_")
        if key in JOB_KEYS:
            job[key] = v
        else:
            settings[k] = v
    return settings, job
