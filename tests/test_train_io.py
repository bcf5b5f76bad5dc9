"""Tensors, models and training data to and from the store, from memory (lineagestore.train)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save
from test_train_support import TINY

from lineagestore import Repo
from lineagestore.core.errors import Conflict, InvalidInput, MalformedFile
from lineagestore.train import dataset as ds
from lineagestore.train import tensorio
from lineagestore.train.checkpoint import load_state, save_state
from lineagestore.train.modelio import load_weights, store_model
from lineagestore.versions.materialize import iter_file_bytes
from lineagestore.versions.models import FileInfo, walk_tree
from tools import samples

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64, torch.int32, torch.int8,
          torch.uint8, torch.bool, torch.int16]


def _file_bytes(repo, tf_id: str, size: int) -> bytes:
    return b"".join(iter_file_bytes(repo.objects, FileInfo("x", "tensor-file", tf_id, size, False)))


# ------------------------------------------------------------------------------ tensorio


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(
    st.text(alphabet="abcdefgh._0123456789", min_size=1, max_size=12),
    st.tuples(st.sampled_from(range(len(DTYPES))), st.lists(st.integers(0, 4), max_size=3)),
    min_size=1, max_size=6))
def test_store_tensors_is_byte_identical_to_safetensors(spec):
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name, (di, shape) in spec.items():
        t = torch.randn(shape or [], generator=g) * 10
        tensors[name] = t.to(DTYPES[di])
    repo = Repo.memory()
    tf_id, size = tensorio.store_tensors(repo.objects, tensors, metadata={"format": "pt"})
    assert _file_bytes(repo, tf_id, size) == st_save(tensors, metadata={"format": "pt"})
    back = tensorio.load_tensors(repo.objects, tf_id)
    assert set(back) == set(tensors)
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype and back[k].shape == t.shape and torch.equal(back[k], t)


def test_large_tensor_is_chunked_and_unchanged_tensors_cost_nothing(monkeypatch):
    from lineagestore.core import content
    monkeypatch.setattr(content, "CHUNK_SIZE", 1000)  # the chunking rule, shrunk to see chunks
    repo = Repo.memory()
    t = {"w": torch.arange(1000, dtype=torch.float32), "b": torch.ones(3)}
    tf1, _ = tensorio.store_tensors(repo.objects, t)
    entry = next(e for e in repo.objects.get(tf1, "tensor-file").entries() if e.name == "w")
    assert repo.objects.header(entry.id).type == "chunks"
    before = repo.objects.written_objects
    t["b"] = torch.zeros(3)  # one small tensor changes
    tf2, _ = tensorio.store_tensors(repo.objects, t)
    assert tf2 != tf1
    assert repo.objects.written_objects - before == 2  # the new blob of "b" and the new tensor-file
    assert torch.equal(tensorio.load_tensors(repo.objects, tf2)["w"], t["w"])


def test_tagged_json_round_trip_and_refusal():
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
             "param_groups": [{"betas": (0.9, 0.999), "lr": 1e-3, "params": [0], "eps": float("inf")}],
             "rng": np.random.get_state(), "__odd": 1}
    doc, tensors = tensorio.split_tensors(state)
    assert set(tensors) == {"state.0.step", "state.0.exp_avg"}
    text = json.dumps(doc, allow_nan=False)  # JSON proper: no NaN/inf, no pickles
    back = tensorio.join_tensors(json.loads(text), tensors)
    assert back["param_groups"][0]["betas"] == (0.9, 0.999)
    assert math.isinf(back["param_groups"][0]["eps"])
    assert list(back["state"]) == [0]
    assert back["rng"][0] == "MT19937" and np.array_equal(back["rng"][1], state["rng"][1])
    with pytest.raises(InvalidInput, match="never pickles"):
        tensorio.split_tensors({"f": object()})


def test_state_tree_round_trip():
    repo = Repo.memory()
    parts = {"optimizer": {"state": {1: {"m": torch.randn(4, dtype=torch.float64)}}, "param_groups": []},
             "rng": {"torch": torch.get_rng_state()}, "trainer": {"step": 7}}
    tree = save_state(repo.objects, parts)
    back = load_state(repo.objects, tree)
    assert back["trainer"] == {"step": 7}
    assert torch.equal(back["rng"]["torch"], parts["rng"]["torch"])
    assert torch.equal(back["optimizer"]["state"][1]["m"], parts["optimizer"]["state"][1]["m"])


# ------------------------------------------------------------------------------ modelio


def test_store_model_from_memory_matches_save_pretrained(tmp_path):
    model = samples.tiny_model(**TINY)
    tok = samples.gpt2_tokenizer()
    model.save_pretrained(tmp_path / "saved")
    tok.save_pretrained(tmp_path / "saved")
    repo = Repo.init(tmp_path / ".lineage")
    imported = repo.import_model(tmp_path / "saved", "base")
    stored = store_model(repo.objects, model, tokenizer=tok)
    assert stored.tree == imported.tree  # the very same files, byte for byte, without writing a folder
    assert stored.new_objects == 0

    other = samples.tiny_model(**TINY, seed=7)
    load_weights(repo.objects, stored.tree, other)
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_commit_model_bf16_and_shards(tmp_path):
    from transformers import AutoModelForCausalLM
    repo = Repo.init(tmp_path / ".lineage")
    model = samples.tiny_model(**TINY)
    res = repo.commit_model(model, samples.gpt2_tokenizer(), "mem", dtype=torch.bfloat16, metrics={"x": 1})
    assert res.name == "v001_mem" and repo.head() == res.id
    files = {f.path: f for f in walk_tree(repo.objects, res.tree)}
    tf = repo.objects.get(files["model.safetensors"].id, "tensor-file")
    assert {e.dtype for e in tf.entries()} == {"BF16"}
    repo.checkout("v001_mem", to=tmp_path / "out")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert back.dtype == torch.bfloat16
    assert torch.equal(back.model.norm.weight, model.model.norm.weight.to(torch.bfloat16))

    # sharded: several files and an index that transformers loads
    stored = store_model(repo.objects, model, base_tree=res.tree, max_shard_bytes=2_000_000)
    names = sorted(f.path for f in walk_tree(repo.objects, stored.tree))
    assert "model.safetensors.index.json" in names and "model.safetensors" not in names
    assert "tokenizer.json" in names  # kept from the base tree
    from lineagestore.versions.materialize import checkout_tree
    checkout_tree(repo.objects, stored.tree, tmp_path / "sharded", cache_dir=repo.cache_dir)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "sharded")
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


# ------------------------------------------------------------------------------ dataset


@pytest.fixture(scope="module")
def tok():
    return samples.gpt2_tokenizer()


def test_text_and_chat_targets(tmp_path, tok):
    path = tmp_path / "d.jsonl"
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
                         {"role": "assistant", "content": "Goodbye."}]}
    rows = [{"text": "In the beginning"}, chat, {"prompt": "2+2=", "completion": "4"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    data = ds.load_data([(path, None)], tok)
    assert data.examples == 3
    spans = [(int(a), int(b)) for a, b in zip(data.offsets[:-1], data.offsets[1:], strict=True)]
    ids0 = list(data.ids[spans[0][0]:spans[0][1]])
    assert ids0 == tok("In the beginning")["input_ids"] + [tok.eos_token_id]
    assert data.mask[spans[0][0]:spans[0][1]].all()
    a, b = spans[1]
    target_text = tok.decode([int(i) for i, m in zip(data.ids[a:b], data.mask[a:b], strict=True) if m])
    assert target_text == "Hello!<|im_end|>\nGoodbye.<|im_end|>\n"
    everything = tok.decode([int(i) for i in data.ids[a:b]])
    assert everything == tok.apply_chat_template(chat["messages"], tokenize=False)
    a, b = spans[2]
    assert tok.decode([int(i) for i, m in zip(data.ids[a:b], data.mask[a:b], strict=True) if m]) == "4<|endoftext|>"


def test_compressed_files_and_no_final_newline(tmp_path, tok):
    import gzip

    import zstandard
    text = '{"text": "one"}\n{"text": "two"}'  # no newline at the end
    plain = tmp_path / "d.jsonl"
    plain.write_text(text)
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "d.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    from lineagestore.core.content import file_content_id
    got = [ds.load_data([(p, file_content_id(p))], tok) for p in sorted(tmp_path.iterdir())]
    assert all(g.examples == 2 and np.array_equal(g.ids, got[0].ids) for g in got)


def test_bad_lines_and_changed_files(tmp_path, tok):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{"text": \n{"what": 1}\n')
    with pytest.raises(MalformedFile, match=r"d\.jsonl:2: invalid JSON"):  # the registry's words
        ds.load_data([(path, None)], tok)
    ids, _mask, _off, _rids, info = ds.tokenize_file(path, tok, skip_bad_lines=True)
    assert info.examples == 1 and info.skipped_lines == 2
    from lineagestore.core.content import file_content_id
    fp = file_content_id(path)
    path.write_text('{"text": "other"}\n')
    with pytest.raises(Conflict, match="changed since"):
        ds.load_data([(path, fp)], tok)


def test_token_cache_and_blocks(tmp_path, tok, monkeypatch):
    from lineagestore.core.content import file_content_id
    path = tmp_path / "d.jsonl"
    samples.write_jsonl(path, samples.bible_records(0, 30))
    fp = file_content_id(path)
    first = ds.load_data([(path, fp)], tok, cache_dir=tmp_path / "cache")
    monkeypatch.setattr(ds, "tokenize_file", lambda *a, **k: pytest.fail("the cache was not used"))
    again = ds.load_data([(path, fp), (path, fp)], tok, cache_dir=tmp_path / "cache")
    assert np.array_equal(np.asarray(again.ids[:first.tokens]), first.ids)
    assert again.examples == 2 * first.examples and again.tokens == 2 * first.tokens
    assert list(again.offsets) == list(first.offsets) + [int(x) + first.tokens for x in first.offsets[1:]]

    blocks = ds.Blocks(first, 16, packing=True)
    assert len(blocks) == math.ceil(first.tokens / 16)
    b = blocks.batch([0, len(blocks) - 1], pad_id=0)
    assert b["input_ids"].shape == (2, 16)
    last = first.tokens - (len(blocks) - 1) * 16
    assert b["attention_mask"][1].sum() == last and (b["labels"][1, last:] == ds.IGNORE).all()
    unpacked = ds.Blocks(first, 8, packing=False)
    assert len(unpacked) == first.examples and max(b - a for a, b in map(unpacked.span, range(len(unpacked)))) <= 8
    o1, o2 = ds.epoch_order(50, 3, 0), ds.epoch_order(50, 3, 1)
    assert sorted(o1) == list(range(50)) and not np.array_equal(o1, o2)
    assert np.array_equal(o1, ds.epoch_order(50, 3, 0))


def test_checkpoint_batch_is_invisible_until_flushed(tmp_path):
    from lineagestore.core.errors import ObjectNotFound
    from lineagestore.train.checkpoint import checkpoint_store
    repo = Repo.init(tmp_path / ".lineage")
    batch = checkpoint_store(repo)
    t = {"w": torch.randn(300_000), "b": torch.zeros(4)}
    tf_id, _ = tensorio.store_tensors(batch, t)
    assert batch.has(tf_id) and not repo.objects.has(tf_id)  # waiting in tmp/, not in objects/
    with pytest.raises(ObjectNotFound, match=f"^object {tf_id} is missing from the store$"):
        repo.objects.get_raw(tf_id)
    assert batch.flush() == 3
    assert repo.objects.has(tf_id) and not list(repo.tmp_dir.iterdir())
    assert torch.equal(tensorio.load_tensors(repo.objects, tf_id)["w"], t["w"])  # verified read
    assert tensorio.store_tensors(Repo.memory().objects, t)[0] == tf_id  # same ids as any store
    # a batch given up leaves nothing behind
    tf2, _ = tensorio.store_tensors(batch, {"w": torch.ones(10)})
    batch.discard()
    assert not repo.objects.has(tf2) and not list(repo.tmp_dir.iterdir())
    # frozen tensors named as known are not read again
    ids: dict = {}
    tensorio.store_tensors(batch, t, ids_out=ids)
    poisoned = {"w": torch.full((300_000,), float("nan")), "b": t["b"]}
    tf3, _ = tensorio.store_tensors(batch, poisoned, known={"w": ids["w"]})
    batch.flush()
    assert tf3 == tf_id
