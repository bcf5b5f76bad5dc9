"""The ledger index (lineagestore.data.ledger): exact answers against brute force, rebuilds, record sets."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineagestore import Repo
from lineagestore.data import ledger as ledger_mod
from lineagestore.data.idsets import ID_DTYPE, sort_unique
from lineagestore.data.ledger import Ledger, iter_record_set, put_record_set, record_set_parts


def ids(rng, n):
    return sort_unique(rng.integers(0, 256, size=(n, 16), dtype=np.uint8).reshape(-1).view(ID_DTYPE))


def brute(sets: dict[int, np.ndarray], q: np.ndarray) -> set[tuple[int, int]]:
    """(query index, ordinal) for every query id that is in a set."""
    out = set()
    members = {o: set(a.tobytes()[i:i + 16] for i in range(0, len(a) * 16, 16)) for o, a in sets.items()}
    for i in range(len(q)):
        b = q[i:i + 1].tobytes()
        for o, m in members.items():
            if b in m:
                out.add((i, o))
    return out


def lookup(led: Ledger, q: np.ndarray, ords=None) -> set[tuple[int, int]]:
    qi, oi = led.candidates(q, None if ords is None else np.array(ords, dtype=np.uint32))
    ok = led.confirm(q, qi, oi)
    return set(zip(qi[ok].tolist(), oi[ok].tolist(), strict=True))


@pytest.fixture
def small_blocks(monkeypatch):
    """Tiny blocks, parts and batches so that every boundary case happens on small data."""
    monkeypatch.setattr(ledger_mod, "FENCE_EVERY", 4)
    monkeypatch.setattr(ledger_mod, "PART_IDS", 16)
    monkeypatch.setattr(ledger_mod, "READ_ENTRIES", 8)
    monkeypatch.setattr(ledger_mod, "MAX_WINDOW_BLOCKS", 3)
    monkeypatch.setattr(ledger_mod, "GAP_BLOCKS", 1)
    monkeypatch.setattr(ledger_mod, "BATCH_IDS", 40)


def test_record_sets_round_trip_as_one_object_or_chunks_of_records(repo, small_blocks):
    rng = np.random.default_rng(0)
    small = ids(rng, 10)
    big = ids(rng, 50)
    a = put_record_set(repo.objects, [small])
    b = put_record_set(repo.objects, [big[:7], big[7:]])
    assert repo.objects.header(a.id).type == "records"
    assert repo.objects.header(b.id).type == "chunks" and len(record_set_parts(repo.objects, b.id)) == 4
    assert np.concatenate(list(iter_record_set(repo.objects, a.id))).tobytes() == small.tobytes()
    assert np.concatenate(list(iter_record_set(repo.objects, b.id))).tobytes() == big.tobytes()
    assert put_record_set(repo.objects, []).id is None


def test_fsck_accepts_chunked_record_sets(repo, small_blocks):
    from lineagestore.core.objects import Dataset
    rs = put_record_set(repo.objects, [ids(np.random.default_rng(0), 50)])
    d = Dataset(content="0" * 64, filename="x.jsonl", format="jsonl", size=0, examples=50, records=rs.id,
                stored=False)
    repo.update_ref("refs/data/" + "0" * 64, None, repo.objects.put_object(d), "test")
    assert repo.fsck().ok


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), nsets=st.integers(1, 7), shared=st.floats(0, 0.8))
def test_property_lookup_is_exact_against_brute_force(tmp_path_factory, small_blocks, seed, nsets, shared):
    rng = np.random.default_rng(seed)
    repo = Repo.init(tmp_path_factory.mktemp("led") / ".lineage")
    pool = ids(rng, 120)
    stored, order = {}, []
    for _ in range(nsets):
        n = int(rng.integers(0, 60))
        a = sort_unique(pool[rng.integers(0, len(pool), n)]) if rng.random() < shared else ids(rng, n)
        rs = put_record_set(repo.objects, [a])
        if rs.id is not None and rs.id not in stored:
            stored[rs.id] = a
            order.append(rs.id)
    led = Ledger(repo)
    # index the sets one at a time (segments + merges), then look up
    for sid in order:
        led.ordinals([sid])
    ords = led.ordinals(order)
    by_ord = {ords[s]: stored[s] for s in order}
    q = sort_unique(np.concatenate([pool[rng.integers(0, len(pool), 40)], ids(rng, 20)]))
    assert lookup(led, q) == brute(by_ord, q)
    some = sorted(by_ord)[: max(1, len(by_ord) // 2)]
    assert lookup(led, q, some) == brute({o: by_ord[o] for o in some}, q)
    stats = led.stats()
    assert stats["entries"] == sum(len(a) for a in stored.values())
    assert stats["segments"] <= 1 + int(np.log2(max(2, len(stored))) * 2)


def test_prefix_twins_are_candidates_but_never_confirmed(repo, small_blocks):
    rng = np.random.default_rng(3)
    base = ids(rng, 30)
    twins = base.view(np.uint8).reshape(-1, 16).copy()
    twins[:, 15] ^= 0x5A  # same first 96 bits, another id
    twins = sort_unique(twins.reshape(-1).view(ID_DTYPE))
    rs = put_record_set(repo.objects, [base])
    led = Ledger(repo)
    o = led.ordinals([rs.id])[rs.id]
    qi, oi = led.candidates(twins)
    assert len(qi) == len(twins) and set(oi.tolist()) == {o}
    assert not led.confirm(twins, qi, oi).any()
    assert lookup(led, base) == {(i, o) for i in range(len(base))}


def test_one_record_in_many_sets_spans_blocks(repo, small_blocks):
    rng = np.random.default_rng(5)
    common = ids(rng, 3)
    sids = [put_record_set(repo.objects, [sort_unique(np.concatenate([common, ids(rng, 2)]))]).id for _ in range(9)]
    led = Ledger(repo)
    ords = led.ordinals(sids)
    got = lookup(led, common)
    assert got == {(i, ords[s]) for i in range(3) for s in sids}


def test_index_is_derived_deleting_or_damaging_it_loses_nothing(repo, small_blocks):
    rng = np.random.default_rng(7)
    sets = [ids(rng, 40) for _ in range(4)]
    sids = [put_record_set(repo.objects, [a]).id for a in sets]
    led = Ledger(repo)
    led.ordinals(sids)
    q = sort_unique(np.concatenate([sets[1][:10], sets[3][-5:], ids(rng, 10)]))
    assert len(lookup(led, q)) == 15
    shutil.rmtree(led.dir)
    led2 = Ledger(repo)
    ords = led2.ordinals(sids)
    assert lookup(led2, q) == brute({ords[s]: a for s, a in zip(sids, sets, strict=True)}, q)
    # a truncated segment is noticed: the index is thrown away and rebuilt
    seg = json.loads((led2.dir / "manifest.json").read_text())["segments"][0]["name"]
    with open(led2.dir / f"{seg}.ids", "r+b") as f:
        f.truncate(16)
    led3 = Ledger(repo)
    led3.ordinals(sids)
    assert len(lookup(led3, q)) == 15
    (led3.dir / "manifest.json").write_text("not json")
    assert len(lookup(Ledger(repo), q)) == 0  # nothing indexed yet ...
    led4 = Ledger(repo)
    led4.ordinals(sids)
    assert len(lookup(led4, q)) == 15  # ... until the sets are needed again


def test_memory_repo_gets_a_private_index():
    repo = Repo.memory()
    rng = np.random.default_rng(9)
    a = ids(rng, 100)
    rs = put_record_set(repo.objects, [a])
    led = Ledger(repo)
    o = led.ordinals([rs.id])[rs.id]
    assert lookup(led, a[::7]) == {(i, o) for i in range(len(a[::7]))}
