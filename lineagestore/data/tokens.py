"""Tokenizers for counting the tokens of data files exactly as training will see them.

Where a tokenizer comes from (``--tokenizer REV|PATH``, default: the active model, HEAD):

* a version (any revision): its top-level tokenizer files are copied out of the store into a
  temporary folder and loaded from there;
* a folder holding tokenizer files, or a ``tokenizer.json`` file.

The **tokenizer id** (:mod:`lineagestore.versions.tokenizer`) is the id of the canonical JSON
object ``{file name: content id}`` over the tokenizer files present (a content id is the id the
store gives the file's bytes), hashed as if it were a blob: the same files give the same id
whether they come from a version or from a folder, and a changed chat template gives a new id.

Counting rules (what :class:`TokenCounter` does, per record):

* ``{"text": ...}``: the number of ids of ``tokenizer(text)`` (special tokens added the way the
  tokenizer adds them by default);
* ``{"messages": [...]}`` with a chat template: the number of ids of
  ``tokenizer.apply_chat_template(messages, tokenize=True)`` (no generation prompt);
* ``{"messages": [...]}`` without a chat template: the contents joined with ``"\\n"``, counted
  as text.
* ``{"conversations": [...]}`` (ShareGPT ``from``/``value``): as the same ``messages``, roles
  mapped by :data:`lineagestore.data.records.SHAREGPT_ROLES`;
* ``{"prompt": ..., "completion": ...}``, ``{"instruction": ..., "input": ..., "output": ...}``:
  the prompt (:func:`lineagestore.data.records.pair_parts`) counted as text, plus the ids of the
  completion encoded without special tokens: the segments training tokenizes.

Texts are encoded in batches by the Rust ``tokenizers`` library (``encode_batch_fast``), which
releases the GIL and uses every core.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import InvalidInput, NotFound, RevisionNotFound
from ..versions.tokenizer import CORE_FILES, TOKENIZER_FILES, tokenizer_id, tree_tokenizer_files

if TYPE_CHECKING:  # pragma: no cover
    from ..core.repo import Repo

#: what people are told where the registry's count (the text alone) and training's differ
EOS_NOTE = "training adds one EOS per text record"

__all__ = ["CORE_FILES", "EOS_NOTE", "TOKENIZER_FILES", "TokenCounter", "TokenizerSource", "counter_for",
           "open_tokenizer", "tokenizer_id"]


@dataclass
class TokenizerSource:
    """A resolved tokenizer: its id, a label for people, and a folder it can be loaded from."""

    id: str
    label: str  # "v004_full_stack" or a path
    files: dict  # file name -> content id
    folder: str  # a folder holding the files (temporary for versions), or the tokenizer.json file
    kind: str  # "transformers" (AutoTokenizer on a folder) | "tokenizers" (a bare tokenizer.json)
    revision: str | None = None  # the commit id, when it came from a version

    def spec(self) -> dict:
        """What a worker process needs to load the same tokenizer."""
        return {"folder": self.folder, "kind": self.kind, "id": self.id, "label": self.label}

    def counter(self) -> TokenCounter:
        return counter_for(self.spec())


@contextmanager
def open_tokenizer(repo: Repo, spec: str | os.PathLike | None, tmp_root: Path | None = None,
                   ) -> Iterator[tuple[TokenizerSource | None, str | None]]:
    """Resolve ``spec`` (None: the active model) to ``(source, None)`` or ``(None, why not)``.

    An explicit ``spec`` that cannot be used raises; the default (HEAD) without tokenizer files
    yields ``(None, reason)`` so that data can still be registered (without a token count).
    Temporary files live until the ``with`` block ends.
    """
    with contextlib.ExitStack() as stack:
        if spec is None:
            head = repo.head()
            if head is None:
                yield None, "the store has no active model to take a tokenizer from"
                return
            src = _from_revision(repo, head, stack, tmp_root)
            if src is None:
                name = repo.name_of(head) or head[:12]
                yield None, f"the active model {name} has no tokenizer files"
                return
            yield src, None
            return
        path = Path(spec)
        if path.exists():
            yield _from_path(path), None
            return
        try:
            cid = repo.resolve(str(spec))
        except RevisionNotFound:
            raise NotFound(f"--tokenizer {spec}: no such file, folder or version",
                           hint="give a version (v004), a folder with tokenizer.json, or a tokenizer.json file",
                           ) from None
        src = _from_revision(repo, cid, stack, tmp_root)
        if src is None:
            raise InvalidInput(f"--tokenizer {spec}: version {repo.name_of(cid) or cid[:12]} has no tokenizer files "
                               f"({', '.join(CORE_FILES)})")
        yield src, None


def _from_revision(repo: Repo, commit_id: str, stack: contextlib.ExitStack,
                   tmp_root: Path | None) -> TokenizerSource | None:
    files = tree_tokenizer_files(repo.objects, repo.commit(commit_id).tree)
    if not files:
        return None
    if tmp_root is not None:
        tmp_root.mkdir(parents=True, exist_ok=True)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lin-tokenizer-", dir=tmp_root)))
    for name, oid in files.items():
        with open(folder / name, "wb") as f:
            for piece in repo.objects.iter_content(oid):
                f.write(piece)
    label = repo.name_of(commit_id) or commit_id[:12]
    return TokenizerSource(tokenizer_id(files), label, files, str(folder), "transformers", commit_id)


def _from_path(path: Path) -> TokenizerSource:
    from ..core.content import file_content_id
    if path.is_file():
        if not path.name.endswith(".json"):
            raise InvalidInput(f"--tokenizer {path}: give a folder with tokenizer files or a tokenizer.json file")
        files = {"tokenizer.json": file_content_id(path)}
        return TokenizerSource(tokenizer_id(files), str(path), files, str(path), "tokenizers")
    names = [n for n in TOKENIZER_FILES if (path / n).is_file()]
    if not any(n in names for n in CORE_FILES):
        raise InvalidInput(f"--tokenizer {path}: no tokenizer files in this folder ({', '.join(CORE_FILES)})")
    files = {n: file_content_id(path / n) for n in names}
    return TokenizerSource(tokenizer_id(files), str(path), files, str(path), "transformers")


# ----------------------------------------------------------------------------- counting


@contextmanager
def _quiet() -> Iterator[None]:
    """Keep transformers' warnings and progress bars off the terminal (library code never prints)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is optional
        yield
        return
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


class TokenCounter:
    """Counts tokens of text and chat records (see the module docstring for the rules).

    ``spec`` is :meth:`TokenizerSource.spec`, or :meth:`worker_spec` of a loaded counter: the
    latter carries the Rust tokenizer as JSON, so a worker process starts without importing
    transformers; it loads the transformers tokenizer only if it meets a chat record to render.
    """

    def __init__(self, spec: dict):
        self.id = spec.get("id")
        self.folder = spec["folder"]
        self._tok = None  # the transformers tokenizer, when one is loaded
        self.chat_template = None
        backend: Any  # a tokenizers.Tokenizer
        try:
            if spec.get("backend"):
                from tokenizers import Tokenizer
                backend = Tokenizer.from_str(spec["backend"])
                self.chat_template = spec.get("chat_template")
            elif spec["kind"] == "tokenizers":
                from tokenizers import Tokenizer
                backend = Tokenizer.from_file(spec["folder"])
            else:
                tok = self._load_transformers()
                backend = getattr(tok, "backend_tokenizer", None)
                if backend is None:
                    raise InvalidInput(f"tokenizer in {spec['folder']} has no fast (Rust) implementation; "
                                       "lin counts tokens with the tokenizers library",
                                       hint="save the tokenizer with a tokenizer.json file")
                self.chat_template = getattr(tok, "chat_template", None) or None
        except InvalidInput:
            raise
        except Exception as e:  # noqa: BLE001 - any loader failure is one clear message
            raise InvalidInput(f"cannot load the tokenizer of {spec.get('label') or spec['folder']}: "
                               f"{loader_error(e)}",
                               hint="check its tokenizer files (tokenizer.json, tokenizer_config.json), "
                                    "or name another with --tokenizer") from None
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        self._encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch

    def _load_transformers(self):
        if self._tok is None:
            with _quiet():
                from transformers import AutoTokenizer
                self._tok = AutoTokenizer.from_pretrained(self.folder)
        return self._tok

    def worker_spec(self) -> dict:
        """A spec for worker processes: the tokenizer as JSON (see the class docstring)."""
        return {"folder": self.folder, "kind": "backend", "id": self.id, "backend": self.backend.to_str(),
                "chat_template": self.chat_template}

    def count_texts(self, texts: list[str], add_special_tokens: bool = True) -> int:
        if not texts:
            return 0
        return sum(map(len, self._encode(texts, add_special_tokens=add_special_tokens)))

    def render_chats(self, chats: list[list]) -> list[str]:
        if self.chat_template:
            try:
                tok = self._load_transformers()
                with _quiet():
                    return list(tok.apply_chat_template(chats, tokenize=False))
            except Exception as e:  # noqa: BLE001 - a template error names the template, not lin
                raise InvalidInput(f"the chat template of the tokenizer fails on a record: "
                                   f"{loader_error(e)}") from None
        return ["\n".join(_content_text(m.get("content")) for m in conv) for conv in chats]

    def count(self, texts: list[str], chats: list[list], plain: Sequence[str] = ()) -> int:
        """Tokens of ``texts`` (special tokens added as the tokenizer adds them), ``chats``
        (rendered) and ``plain`` texts (no special tokens: completions after their prompt)."""
        n = self.count_texts(texts) + self.count_texts(list(plain), add_special_tokens=False)
        if chats:
            rendered = self.render_chats(chats)
            n += self.count_texts(rendered, add_special_tokens=not self.chat_template)
        return n


def loader_error(e: BaseException) -> str:
    """A third-party loader's exception as one line: its type and its message's lines joined."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


_COUNTERS: dict[str, TokenCounter] = {}


def counter_for(spec: dict) -> TokenCounter:
    """A counter for ``spec``, reused while the same tokenizer (same id) is asked for again."""
    key = spec.get("id") or spec["folder"]
    c = _COUNTERS.get(key)
    if c is None:
        c = TokenCounter(spec)
        _COUNTERS.clear()  # keep one: a tokenizer can be large
        _COUNTERS[key] = c
    return c


def _content_text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)

