"""Helpers shared by the guardrail tests (test_guard, test_gc, test_crash, test_concurrency,
test_security). No tests here."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from conftest import make_model_dir

ROOT = Path(__file__).resolve().parents[1]


def lineage(repo, tmp: Path) -> dict[str, str]:
    """v001 (import) -> v002 -> {v003, v004}; v004 active. Returns name -> source folder."""
    src = {}
    for seed, name, parent in ((1, "base", None), (2, "syllo", "v001"), (3, "syllo_reasoning", "v002"),
                               (4, "full_stack", "v002")):
        folder = make_model_dir(tmp / f"src{seed}", seed=seed)
        if parent is None:
            res = repo.import_model(folder, name)
        else:
            res = repo.commit_folder(folder, name, parents=[repo.resolve(parent)])
        src[res.name] = str(folder)
    return src


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def version_bytes(repo, rev: str) -> dict[str, bytes]:
    """The files of a version read back through the store (every read verified)."""
    from lineagestore.versions.materialize import iter_file_bytes
    from lineagestore.versions.models import walk_tree
    tree = repo.commit(repo.resolve(rev)).tree
    return {f.path: b"".join(iter_file_bytes(repo.objects, f)) for f in walk_tree(repo.objects, tree)}


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every path under ``folder`` with its mode, size, mtime and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
            out[str(p.relative_to(folder))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


def spawn_lin(store: Path, *args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """Start `lin ARGS` as a real process on ``store`` (stdin is not a terminal)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("LIN_TEST_")}
    e.update(LIN_STORE=str(store), LIN_NO_PROGRESS="1", LIN_LOCK_TIMEOUT="60",
             PYTHONPATH=str(ROOT) + os.pathsep + e.get("PYTHONPATH", ""))
    e.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "lineagestore.cli.main", *args], cwd=cwd or store.parent,
                            env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def run_lin(store: Path, *args: str, env: dict | None = None, timeout: float = 120,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    p = spawn_lin(store, *args, env=env, cwd=cwd)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)
