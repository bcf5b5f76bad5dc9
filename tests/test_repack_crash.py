"""lin repack leaves one copy of what packs hold: loose copies a killed repack did not get to
delete, and pieces written back loose while hot that turned cold again, go at the next repack
(found by benchmarks/crash_repack.py: such a repack found nothing else to do and kept both)."""

from __future__ import annotations

import time

from test_guard_helpers import run_lin
from test_packs import _all_versions, _lineage, _set

from lineagestore import Repo
from lineagestore.guard.fsck import check
from lineagestore.guard.repack import repack, temperature


def _doubled_cold(repo: Repo) -> set[str]:
    """Objects held both loose and in a pack though no hot version holds them."""
    store = repo.objects
    hot = temperature(repo, repo.settings.core.hot_versions, time.time()).hot
    packed = {o for p in store.packs.packs() for o, _ in p.entries()}
    return {o for o in store.files.ids() if o in packed and o not in hot}


def test_loose_copies_left_by_a_repack_killed_before_deleting_them_go_next_time(lin, store_dir):
    repo = _set(_lineage(lin, store_dir, 5), "core.hot_versions", 1)
    before = _all_versions(repo)
    r = run_lin(repo.path, "repack", env={"LIN_TEST_KILL_AT": "repack-drop-loose:1"})
    assert r.returncode == -9, r.stderr
    repo = Repo.open(repo.path)
    assert check(repo).ok and _doubled_cold(repo)
    r = run_lin(repo.path, "repack")
    assert r.returncode == 0, r.stderr
    repo = Repo.open(repo.path)
    assert not _doubled_cold(repo)
    assert check(repo).ok and _all_versions(repo) == before


def test_pieces_hot_then_cold_again_keep_one_copy(lin, store_dir):
    repo = _set(_lineage(lin, store_dir, 5), "core.hot_versions", 1)
    before = _all_versions(repo)
    repack(repo)
    repo = _set(repo, "core.hot_versions", 5)
    assert repack(repo).unpacked_objects > 0  # written back loose for checkouts; the pack stays
    repo = _set(repo, "core.hot_versions", 1)
    assert _doubled_cold(repo)
    res = repack(Repo.open(repo.path))
    assert res.loose_removed > 0
    repo = Repo.open(repo.path)
    assert not _doubled_cold(repo)
    assert check(repo).ok and _all_versions(repo) == before
