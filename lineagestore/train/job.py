"""What planning and training share: the base's tokenizer, the training cache, the step count.

:func:`~lineagestore.train.plan.make_plan` loads the tokenizer and the tokens (and perhaps the
model, to measure its speed) into a :class:`Job`; training reuses them instead of loading again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import InvalidInput
from ..core.progress import NULL, Progress
from ..core.repo import Repo
from ..data.tokens import loader_error
from ..versions.tokenizer import tree_tokenizer_id
from .dataset import TokenizedData
from .modelio import materialize
from .settings import TrainSettings

__all__ = ["Job", "load_tokenizer", "quiet", "steps_for", "train_cache"]


@dataclass
class Job:
    """What a plan loaded that training reuses: the tokenizer, the tokens, a model if measured."""

    tokenizer: Any
    data: TokenizedData | None
    meta_dir: Path | None
    model: Any = None


def train_cache(repo: Repo) -> Path:
    """``cache/train/`` of the store: a base's non-weight files (``meta-<tree>``), rarely its folder."""
    d = repo.cache_dir / "train"
    d.mkdir(parents=True, exist_ok=True)
    return d


#: the last tokenizer loaded, by tokenizer id: `lin run` plans file after file on versions that
#: share their tokenizer files, and loading one costs ~1.5 s
_LOADED: dict[str, Any] = {}


def load_tokenizer(repo: Repo, base_tree: str, progress: Progress = NULL):
    """The base model's tokenizer, from its non-weight files (written once into the cache)."""
    from transformers import AutoTokenizer
    meta = materialize(repo.objects, base_tree, train_cache(repo) / f"meta-{base_tree[:24]}", weights=False,
                       progress=progress)
    tid = tree_tokenizer_id(repo.objects, base_tree)
    if tid is not None and tid in _LOADED:
        return _LOADED[tid], meta
    try:
        with quiet():
            tok = AutoTokenizer.from_pretrained(str(meta))
    except Exception as e:  # noqa: BLE001 - tokenizers raises bare Exception; any failure is one line
        raise InvalidInput(f"the base model has no usable tokenizer: {loader_error(e)}",
                           hint="store the tokenizer files with the model (tokenizer.json, tokenizer_config.json)") from None
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    if tid is not None:
        _LOADED.clear()
        _LOADED[tid] = tok
    return tok, meta


class quiet:
    """Silence transformers' progress bars and advisory logging while loading (library code never prints)."""

    def __enter__(self):
        try:
            from transformers.utils import logging as hf_logging
            self._bars = hf_logging.is_progress_bar_enabled()
            self._level = hf_logging.get_verbosity()
            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
        except ImportError:  # pragma: no cover
            self._bars = None
        return self

    def __exit__(self, *exc):
        if self._bars is not None:
            from transformers.utils import logging as hf_logging
            hf_logging.set_verbosity(self._level)
            if self._bars:
                hf_logging.enable_progress_bar()


def steps_for(units: int, settings: TrainSettings, world: int) -> tuple[int, int]:
    """(steps per epoch, total steps) for ``units`` training units."""
    per_step = settings.batch_size * settings.grad_accum * world
    per_epoch = max(1, math.ceil(units / per_step)) if units else 0
    total = per_epoch * settings.epochs
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    return per_epoch, total
