"""The store's ``format`` file: new stores start at 1 and rise only when newer content is written."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from lineagestore.core.errors import UnsupportedFormat
from lineagestore.core.repo import FORMAT_VERSION, FORMATS, Repo


def test_new_store_is_format_1_and_require_format_raises_it(tmp_path):
    repo = Repo.init(tmp_path / ".lineage")
    assert (tmp_path / ".lineage" / "format").read_text() == "1\n"
    repo.require_format(2)
    assert (tmp_path / ".lineage" / "format").read_text() == "2\n"
    assert Repo.open(tmp_path / ".lineage").format_version == 2
    repo.require_format(1)  # never lowers
    assert (tmp_path / ".lineage" / "format").read_text() == "2\n"
    assert any("format 1 -> 2" in n for n in repo.notes)


def test_unknown_format_is_refused(tmp_path):
    repo = Repo.init(tmp_path / ".lineage")
    with pytest.raises(ValueError):
        repo.require_format(FORMAT_VERSION + 1)
    (tmp_path / ".lineage" / "format").write_text(f"{FORMAT_VERSION + 1}\n")
    with pytest.raises(UnsupportedFormat, match=f"format version {FORMAT_VERSION + 1} is newer"):
        Repo.open(tmp_path / ".lineage")


def _raise(path: str, version: int) -> None:
    Repo.open(path).require_format(version)


def test_concurrent_upgrades_keep_the_larger(tmp_path):
    store = tmp_path / ".lineage"
    Repo.init(store)
    versions = sorted(FORMATS)[1:] * 3
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_raise, args=(str(store), v)) for v in versions]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert (store / "format").read_text() == f"{max(versions)}\n"
