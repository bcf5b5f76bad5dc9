"""guard/reachability: roots and the object graph, on an in-memory store, against a plain model.

A random store (blobs, trees of blobs and trees, commits with parents, run checkpoints), random
refs and removed refs, runs that move through several checkpoints, a detached or attached HEAD,
random object and reflog-entry ages, a random ``train.keep_checkpoints``: what gc would collect is
never reachable from a root, is exactly what the rules say, goes containers first, and leaves a
store in which every remaining object still has all it links to."""

from __future__ import annotations

import time
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineagestore.core.objects import Checkpoint, Commit, Tree, TreeEntry
from lineagestore.core.refs import ReflogEntry
from lineagestore.core.repo import Repo
from lineagestore.guard import gc
from lineagestore.guard.fsck import check
from lineagestore.guard.reachability import (
    Graph,
    holder_of,
    holders,
    is_run_ref,
    last_named,
    last_removal,
    live_reflog_ids,
    reached_from,
    reflogs,
    root_sources,
    roots,
    run_retention,
)

DAY = 86400.0
EXPIRE = 90 * DAY  # the default gc.reflog_expire_days


@st.composite
def stores(draw):
    """A recipe: objects built bottom-up (each links only to earlier ones), refs, removals, ages."""
    n_blobs = draw(st.integers(1, 5))
    trees = draw(st.lists(st.tuples(st.sets(st.integers(0, n_blobs - 1), max_size=3),
                                    st.sets(st.integers(0, 5), max_size=2)), min_size=1, max_size=5))
    commits = draw(st.lists(st.tuples(st.integers(0, 10), st.sets(st.integers(0, 10), max_size=2)),
                            min_size=1, max_size=5))
    checkpoints = draw(st.lists(st.tuples(st.integers(0, 10), st.booleans()), max_size=3))
    refs = draw(st.lists(st.tuples(st.sampled_from(["refs/tags/v", "refs/heads/b", "refs/runs/r"]),
                                   st.integers(0, 10), st.booleans(), st.lists(st.integers(0, 10), max_size=4)),
                         max_size=5))  # (ns, target, removed, later values: runs only)
    head = draw(st.one_of(st.none(), st.integers(0, 10)))  # None: attached to refs/heads/main
    ages = draw(st.lists(st.sampled_from([0, 3, 20, 200]), min_size=40, max_size=40))  # days
    log_ages = draw(st.lists(st.sampled_from([0, 5, 100]), min_size=20, max_size=20))
    grace = draw(st.sampled_from([0.0, 10 * DAY]))
    keep = draw(st.integers(1, 3))
    return n_blobs, trees, commits, checkpoints, refs, head, ages, log_ages, grace, keep


def build(recipe):
    """The store, ``now``, the grace period, and what the test knows: id -> the ids it links to."""
    n_blobs, trees, commits, checkpoints, refs, head, ages, log_ages, grace, keep = recipe
    repo = Repo.memory()
    repo.config.set("train.keep_checkpoints", keep)
    s = repo.objects
    links: dict[str, list[str]] = {}
    blobs = [s.put("blob", b"blob %d" % i) for i in range(n_blobs)]
    links.update((b, []) for b in blobs)
    tree_ids: list[str] = []
    for bs, ts in trees:
        entries = [TreeEntry(f"f{i}", "blob", blobs[i], len(b"blob %d" % i)) for i in sorted(bs)]
        entries += [TreeEntry(f"d{j}", "tree", tree_ids[j], 0) for j in sorted(ts) if j < len(tree_ids)]
        t = s.put_object(Tree(entries=sorted(entries, key=lambda e: e.name)))
        links[t] = [e.id for e in entries]
        tree_ids.append(t)
    commit_ids: list[str] = []
    for i, (tree, parents) in enumerate(commits):
        ps = sorted({commit_ids[p] for p in parents if p < len(commit_ids)})
        c = s.put_object(Commit(tree=tree_ids[tree % len(tree_ids)], parents=ps, name=f"v{i + 1:03d}_x"))
        links[c] = [tree_ids[tree % len(tree_ids)], *ps]
        commit_ids.append(c)
    ck_ids: list[str] = []
    for step, (tree, chained) in enumerate(checkpoints):
        parent = ck_ids[-1] if chained and ck_ids else None
        ck = s.put_object(Checkpoint(run="r", step=step, model=tree_ids[tree % len(tree_ids)], parent=parent))
        links[ck] = [tree_ids[tree % len(tree_ids)]]  # the parent is a plain id, not a link
        ck_ids.append(ck)

    for i, (ns, target, removed, moves) in enumerate(refs):
        if ns == "refs/runs/r" and not ck_ids:
            ns = "refs/heads/b"
        pool = ck_ids if ns == "refs/runs/r" else commit_ids
        name, oid = f"{ns}{i}", pool[target % len(pool)]
        repo.refs.set_if_equals(name, None, oid, "create")
        for m in moves if ns == "refs/runs/r" else ():
            repo.refs.set_if_equals(name, oid, ck_ids[m % len(ck_ids)], "checkpoint")
            oid = ck_ids[m % len(ck_ids)]
        if removed:
            repo.refs.set_if_equals(name, oid, None, "rm")
    if head is not None:
        repo.refs.detach("HEAD", commit_ids[head % len(commit_ids)], "checkout")

    now = time.time() + 3600
    for n, oid in enumerate(links):  # every object written long enough ago (or not) for its age
        s._mtimes[oid] = now - ages[n % len(ages)] * DAY - 60
    n = 0
    for name, entries in list(repo.refs._logs.items()):
        aged = []
        for e in entries:
            aged.append(replace(e, time=now - log_ages[n % len(log_ages)] * DAY - 60))
            n += 1
        repo.refs._logs[name] = aged
    return repo, now, grace, links


def closure(start, links, stop=frozenset()) -> set[str]:
    out: set[str] = set()
    todo = [o for o in start if o not in stop]
    while todo:
        o = todo.pop()
        if o not in out:
            out.add(o)
            todo.extend(c for c in links[o] if c not in stop)
    return out


def run_log(entries, now: float, keep: int) -> tuple[set[str], dict[str, float]]:
    """A run reflog by the documented rule: (the ids it keeps, id -> when it stopped keeping it).
    A run in progress keeps its last ``keep`` values whatever their age; an ended run its last
    one while the removal is younger than the expiry; the rest are released when ``keep`` newer
    ones were written or when the run ended."""
    kept: set[str] = set()
    released: dict[str, float] = {}
    values: list = []  # the entries of the run in progress
    for e in [*entries, None]:
        if e is not None and e.new is not None:
            values.append(e)
            continue
        for i, v in enumerate(values):
            if i + keep < len(values):
                released[v.new] = max(released.get(v.new, 0.0), values[i + keep].time)
            elif e is None:
                kept.add(v.new)
            elif v.new != e.old:
                released[v.new] = max(released.get(v.new, 0.0), e.time)
        if e is not None and now - e.time <= EXPIRE:
            kept.add(e.old)
        values = []
    return kept, {o: t for o, t in released.items() if o not in kept}


def expected(repo: Repo, now: float, grace: float, links: dict[str, list[str]]):
    """(roots, reachable, eligible) by the documented rules, computed on the test's own model."""
    keep = repo.settings.train.keep_checkpoints
    refs = dict(repo.refs._refs)
    named_roots = {v for k, v in refs.items() if k.startswith("refs/")}
    head = repo.refs.resolve("HEAD")
    named_roots |= {head} if head else set()
    logs = {k: list(v) for k, v in repo.refs._logs.items()}
    live = {x for k, es in logs.items() if not k.startswith("refs/runs/")
            for e in es if now - e.time <= EXPIRE for x in (e.old, e.new) if x}
    released: dict[str, float] = {}
    for k, es in logs.items():
        if k.startswith("refs/runs/"):
            kept, rel = run_log(es, now, keep)
            live |= kept
            for o, t in rel.items():
                released[o] = max(released.get(o, 0.0), t)
    root_ids = named_roots | live
    reachable = closure(root_ids, links)
    last_log: dict[str, float] = {}
    for es in logs.values():
        for e in es:
            for x in (e.old, e.new):
                if x:
                    last_log[x] = max(last_log.get(x, 0.0), e.time)
    since = {o: max(repo.objects.mtime(o), last_log.get(o, 0.0), released.get(o, 0.0)) for o in links}
    young = [o for o in links if o not in reachable and now - since[o] <= grace]
    kept = closure(young, links, stop=reachable)
    return root_ids, reachable, set(links) - reachable - kept


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores())
def test_what_gc_collects_is_never_reachable_and_is_exactly_what_the_rules_allow(recipe):
    repo, now, grace, links = build(recipe)
    root_ids, reachable, eligible = expected(repo, now, grace, links)

    assert set(roots(repo, reflog_expire_s=EXPIRE, now=now)) == root_ids
    assert Graph(repo.objects).walk(root_ids) == reachable

    p = gc.plan(repo, grace_s=grace, now=now)
    order = p.order
    assert not p.problems
    assert not set(order) & reachable
    assert set(order) == eligible and len(order) == len(eligible) == p.eligible_objects
    assert p.reachable == len(reachable) and p.unreachable == len(links) - len(reachable)
    position = {o: i for i, o in enumerate(order)}
    for o in order:  # containers first: an object leaves before anything it links to
        assert all(position[c] > position[o] for c in links[o] if c in position)
    for o in set(links) - set(order):  # what stays still has everything it links to
        assert not set(links[o]) & set(order)

    rep = check(repo, quick=True, now=now)  # fsck reads the same roots
    assert rep.ok and rep.reachable == len(reachable)


def test_roots_name_where_each_root_comes_from():
    repo = Repo.memory()
    a, b, c = (repo.objects.put("blob", x) for x in (b"a", b"b", b"c"))
    repo.refs.set_if_equals("refs/runs/train1", None, a, "checkpoint")
    repo.refs.set_if_equals("refs/tags/t", None, b, "tag")
    repo.refs.set_if_equals("refs/tags/t", b, None, "rm: t")
    repo.refs.detach("HEAD", c, "checkout")
    now = time.time() + 60
    assert roots(repo, reflog_expire_s=EXPIRE, now=now) == {
        a: "refs/runs/train1", c: "HEAD", b: "reflog of refs/tags/t"}
    assert roots(repo, reflog_expire_s=0, now=now) == {a: "refs/runs/train1", c: "HEAD"}
    logs = reflogs(repo)
    assert list(live_reflog_ids(logs, now=now, expire_s=EXPIRE, keep_checkpoints=2)) == [
        (c, "HEAD"), (a, "refs/runs/train1"), (b, "refs/tags/t"), (b, "refs/tags/t")]
    assert last_named(logs)[b][1] == "refs/tags/t was removed (rm: t)"
    assert last_removal(repo.refs.reflog("refs/tags/t")).message == "rm: t"
    assert last_removal(repo.refs.reflog("refs/runs/train1")) is None


def test_the_graph_reads_headers_and_decodes_only_metadata(monkeypatch):
    repo = Repo.memory()
    blob = repo.objects.put("blob", b"weights" * 1000)
    tree = repo.objects.put_object(Tree(entries=[TreeEntry("w", "blob", blob, 7000)]))
    commit = repo.objects.put_object(Commit(tree=tree, parents=[], name="v001_x"))
    decoded: list[str] = []
    real_get, real_raw = type(repo.objects).get, type(repo.objects).get_raw
    monkeypatch.setattr(type(repo.objects), "get", lambda self, oid, *a: decoded.append(oid) or real_get(self, oid, *a))
    monkeypatch.setattr(type(repo.objects), "get_raw", lambda self, oid: decoded.append(oid) or real_raw(self, oid))
    g = Graph(repo.objects)
    assert g.walk([commit]) == {commit, tree, blob}
    assert g.type == {commit: "commit", tree: "tree", blob: "blob"}
    assert blob not in decoded and set(decoded) == {commit, tree}


def test_missing_and_unreadable_objects_are_reported_not_guessed():
    repo = Repo.memory()
    blob = repo.objects.put("blob", b"x")
    tree = repo.objects.put_object(Tree(entries=[TreeEntry("x", "blob", blob, 1)]))
    broken = repo.objects.put_object(Tree(entries=[TreeEntry("y", "blob", blob, 1)]))
    repo.objects.remove(blob)
    repo.objects.corrupt(broken)  # its payload no longer hashes to its id
    g = Graph(repo.objects)
    assert g.walk([tree, broken]) == {tree, broken, blob}
    assert g.missing == {blob} and set(g.broken) == {broken}


def test_reached_from_keeps_the_first_root_that_reaches_an_object():
    links = {"c1": ["t1"], "c2": ["c1", "t2"], "t1": ["b"], "t2": ["b"], "b": []}
    strong = reached_from({"c2": "refs/heads/main"}, links.__getitem__)
    assert set(strong.values()) == {"refs/heads/main"} and set(strong) == set(links)
    both = reached_from({"c1": "reflog of refs/tags/v1"}, links.__getitem__, strong)
    assert both == strong  # already reached: not claimed again
    only_weak = reached_from({"c1": "reflog of refs/tags/v1"}, links.__getitem__)
    assert only_weak == {"c1": "reflog of refs/tags/v1", "t1": "reflog of refs/tags/v1",
                         "b": "reflog of refs/tags/v1"}


def test_reflog_entry_helpers_are_about_removal_only():
    a = "a" * 64
    assert last_removal([ReflogEntry(None, a, "me", 1.0, "create"), ReflogEntry(a, None, "me", 2.0, "rm"),
                         ReflogEntry(None, a, "me", 3.0, "restore")]).time == 2.0
    assert last_removal([ReflogEntry(None, a, "me", 1.0, "create")]) is None


def test_a_run_reflog_keeps_the_last_checkpoints_of_a_live_run_and_the_last_of_an_ended_one():
    a, b, c, d, e = (ch * 64 for ch in "abcde")
    E = ReflogEntry
    live = [E(None, a, "me", 1.0, "checkpoint"), E(a, b, "me", 2.0, "checkpoint"), E(b, c, "me", 3.0, "checkpoint")]
    r = run_retention("refs/runs/x", live, now=1000 * DAY, expire_s=EXPIRE, keep=2)
    assert r.kept == {b: "reflog of refs/runs/x", c: "reflog of refs/runs/x"}  # whatever their age
    assert r.released == {a: (3.0, "refs/runs/x: not among the last 2 checkpoints of the run")}
    ended = [*live, E(c, None, "me", 4.0, "train: published as v002_x"), E(None, d, "me", 5.0, "checkpoint"),
             E(d, e, "me", 6.0, "checkpoint")]
    r = run_retention("refs/runs/x", ended, now=10.0, expire_s=EXPIRE, keep=2)
    assert set(r.kept) == {c, d, e}  # the last of the ended run; the live one's last two
    assert r.released[b] == (4.0, "refs/runs/x ended (train: published as v002_x): only its last checkpoint is kept")
    r = run_retention("refs/runs/x", ended, now=4.0 + EXPIRE + 1, expire_s=EXPIRE, keep=1)
    assert set(r.kept) == {e} and r.released[d] == (6.0, "refs/runs/x: not among the last 1 checkpoints of the run")
    assert c not in r.released  # its removal entry expired: the normal expiry, not a release
    assert is_run_ref("refs/runs/x") and is_run_ref("refs/remotes/origin/runs/x")
    assert not is_run_ref("refs/heads/runs") and not is_run_ref("refs/remotes/origin/heads/x")


def test_holders_say_what_only_each_name_keeps_alive():
    repo = Repo.memory()
    s = repo.objects
    blob = [s.put("blob", b"%d" % i * (i + 1) * 100) for i in range(4)]
    shared_tree = s.put_object(Tree(entries=[TreeEntry("s", "blob", blob[0], 100)]))
    t1 = s.put_object(Tree(entries=[TreeEntry("a", "blob", blob[1], 200), TreeEntry("d", "tree", shared_tree, 100)]))
    t2 = s.put_object(Tree(entries=[TreeEntry("b", "blob", blob[2], 300)]))
    ck = s.put_object(Checkpoint(run="r", step=1, model=t2, state=shared_tree))
    v1 = s.put_object(Commit(tree=t1, parents=[], name="v001_x"))
    repo.refs.set_if_equals("refs/tags/v001_x", None, v1, "tag")
    repo.refs.set_if_equals("refs/runs/r", None, ck, "checkpoint")
    repo.refs.set_if_equals("refs/remotes/origin/runs/r", None, ck, "fetch")
    sources = root_sources(repo)
    assert set(sources[ck]) == {"refs/remotes/origin/runs/r", "refs/runs/r",
                                "reflog of refs/remotes/origin/runs/r", "reflog of refs/runs/r"}
    assert roots(repo)[ck] == sources[ck][0]
    hs, n_shared, b_shared = holders(Graph(s), sources, s.stored_size)
    by = {h.name: h for h in hs}
    assert set(by) == {"run r", "version v001_x"}
    assert by["run r"].kind == "run" and by["run r"].objects == 3  # ck, t2, blob 2 (shared_tree is not its own)
    assert by["run r"].bytes == sum(s.stored_size(o) for o in (ck, t2, blob[2]))
    assert by["version v001_x"].objects == 3  # v1, t1, blob 1
    assert (n_shared, b_shared) == (2, s.stored_size(shared_tree) + s.stored_size(blob[0]))
    assert hs[0].bytes >= hs[1].bytes
    assert holder_of("reflog of refs/heads/main") == ("branch main", "branch")
    assert holder_of("refs/remotes/origin/tags/v001_x") == ("version v001_x", "version")
    assert holder_of("HEAD") == ("HEAD", "head") and holder_of("refs/data/f.jsonl") == ("data f.jsonl", "data")
