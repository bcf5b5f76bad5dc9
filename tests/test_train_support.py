"""Shared assets for the training tests (tests/test_train*.py, tests/test_plan*.py): no tests here.

A tiny Qwen3 model (hidden 32, 2 layers; the GPT-2 tokenizer from tools.samples) and two
small data files, built once per session; helpers to start a store with the model imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64)
#: a short CPU run: 16 steps of 4 x 32 tokens, a checkpoint every 5 steps, one loss per step
TRAIN_ARGS = ["--device", "cpu", "--batch-size", "4", "--seq-len", "32", "--max-steps", "16",
              "--checkpoint-every", "5", "--lr", "1e-3", "--log-every", "1"]
SETTINGS = {"device": "cpu", "batch_size": 4, "seq_len": 32, "max_steps": 16, "checkpoint_every": 5,
            "lr": 1e-3, "log_every": 1}


@pytest.fixture(scope="session")
def train_assets(tmp_path_factory) -> Path:
    from tools import samples
    d = tmp_path_factory.getbasetemp() / "train_assets"  # shared by every module that imports this fixture
    if (d / "done").exists():
        return d
    d.mkdir(exist_ok=True)
    samples.tiny_model_folder(d / "base", **TINY)
    samples.write_jsonl(d / "bible.jsonl", samples.bible_records(0, 200))
    samples.write_jsonl(d / "chat.jsonl", samples.chat_records(count=120))
    samples.write_jsonl(d / "bible2.jsonl", samples.bible_records(200, 120))
    (d / "done").write_text("ok")
    return d


def new_store(folder: Path, assets: Path) -> Path:
    """``folder`` with a store, the tiny base imported as v001_base, and copies of the data files."""
    from lineagestore import Repo
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("bible.jsonl", "chat.jsonl", "bible2.jsonl"):
        shutil.copy(assets / name, folder / name)
    repo = Repo.init(folder / ".lineage")
    repo.import_model(assets / "base", "base")
    return folder


def lin_proc(cwd: Path, *args: str, env: dict | None = None, check: bool = False,
             timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``lin`` in a separate process (crash tests need a real process to kill)."""
    e = {**os.environ, "LIN_NO_PROGRESS": "1", **(env or {})}
    e.pop("LIN_STORE", None)
    p = subprocess.run([sys.executable, "-m", "lineagestore.cli.main", *args], cwd=cwd, env=e,
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"lin {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def final_state(store: Path) -> tuple[str, list, dict]:
    """(tree id of HEAD, its loss curve, its metrics)."""
    from lineagestore import Repo
    r = Repo.open(store / ".lineage")
    c = r.commit(r.head())
    return c.tree, c.metrics["loss_per_interval"], c.metrics
