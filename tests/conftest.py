"""Shared fixtures. Heavy assets (torch models) are built lazily, once per session."""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

pytest_plugins = ["conftest_s3"]

os.environ.setdefault("LIN_NO_PROGRESS", "1")
os.environ.setdefault("LIN_LOCK_TIMEOUT", "60")


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], bytes]],
                      metadata: dict | None = None, pad: int = 0) -> bytes:
    """Write a safetensors file by hand: {name: (dtype, shape, raw bytes)}. Returns the file bytes."""
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    hb = json.dumps(header).encode() + b" " * pad
    data = struct.pack("<Q", len(hb)) + hb + b"".join(raw for _, _, raw in tensors.values())
    path.write_bytes(data)
    return data


def make_model_dir(path: Path, seed: int = 0, scale: float = 1.0, n_layers: int = 3) -> Path:
    """A small model folder (safetensors + config) without torch: fast for store tests."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for i in range(n_layers):
        w = (rng.standard_normal((32, 48)) * scale).astype(np.float32)
        tensors[f"layers.{i}.weight"] = ("F32", [32, 48], w.tobytes())
        b = rng.standard_normal(48).astype(np.float16)
        tensors[f"layers.{i}.bias"] = ("F16", [48], b.tobytes())
    write_safetensors(path / "model.safetensors", tensors, {"format": "pt"})
    (path / "config.json").write_text(json.dumps({"model_type": "toy", "layers": n_layers}))
    (path / "tokenizer_config.json").write_text("{}")
    return path


def enospc_at_fsync(k: int):
    """An os.fsync that fails with ENOSPC at its k-th call on a regular file (thread-safe)."""
    import errno
    import stat
    import threading
    real_fsync = os.fsync
    calls = [0]
    lock = threading.Lock()

    def failing_fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            with lock:
                calls[0] += 1
                hit = calls[0] == k
            if hit:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    return failing_fsync


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    """A fresh folder with an initialized store; cwd is that folder."""
    from lineagestore import Repo
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIN_STORE", raising=False)
    Repo.init(tmp_path / ".lineage")
    return tmp_path


@pytest.fixture
def repo(store_dir):
    from lineagestore import Repo
    return Repo.open(store_dir / ".lineage")


@pytest.fixture
def model_dir(tmp_path):
    return make_model_dir(tmp_path / "src_model")


@pytest.fixture
def lin(capsys):
    """Run the CLI in-process: lin("log", "--json") -> (exit code, stdout, stderr)."""
    from lineagestore.cli.main import main

    def run(*args: str):
        capsys.readouterr()
        code = main([str(a) for a in args])
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    return run


@pytest.fixture(scope="session")
def tiny_hf_model(tmp_path_factory):
    """A tiny Qwen3 model folder built from a config with the GPT-2 tokenizer (no downloads)."""
    from tools.samples import tiny_model_folder
    return tiny_model_folder(tmp_path_factory.mktemp("tiny") / "qwen3", arch="qwen3", seed=0)
