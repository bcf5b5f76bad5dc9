"""For people with their own training scripts: a ``transformers`` callback that keeps the lineage.

    from lineagestore.integrations import LineageCallback
    cb = LineageCallback("syllo_batch5", data=["data/syllo.jsonl"], checkpoint_every=500)
    Trainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[cb]).train()

At the start of training (rank 0 only) it opens the store (found like ``lin`` finds it, or
``store=``), resolves the base (default: the active version), registers the data files and
refuses data already trained in the base's lineage (unless ``allow_overlap=True``). Each time
the Trainer saves, and every ``checkpoint_every`` steps if given, it stores a checkpoint under
``refs/runs/<run>``: the weights from memory (unchanged tensors cost nothing) plus the
optimizer and scheduler state (tensors as safetensors, the rest as JSON). When training ends it
commits ``vNNN_<name>`` with parent = base, the datasets, metrics (final loss, loss per logging
step, steps, tokens, wall time), the Trainer's arguments as params, the code revision and the
environment, moves HEAD to it and closes the run.

The Trainer does not tell callbacks about a crash: a run that died stays in ``lin runs`` as
"stopped" with its last checkpoint; resuming is the Trainer's own ``resume_from_checkpoint``.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # checked against transformers (the ``train`` extra)
    from transformers import TrainerCallback
else:
    try:
        from transformers import TrainerCallback
    except ImportError:  # pragma: no cover - transformers is an optional dependency
        TrainerCallback = object  # only a Trainer calls the callback, and there is none without transformers

from .core.errors import Refused
from .core.repo import utc_now

if TYPE_CHECKING:
    from .core.repo import Repo


class LineageCallback(TrainerCallback):
    """A ``transformers.TrainerCallback`` that stores checkpoints and commits the trained model as ``vNNN_<name>``.

    ``store``: a Repo or a store folder (default: found like ``lin`` finds it); ``base``: the parent
    version (default: the active one); ``data``: the training files, registered and checked for
    overlap with the base's lineage; ``run``: the name under ``refs/runs/`` (default: ``name``).
    After training, ``result`` is the CommitResult (None with ``commit=False``).
    """

    def __init__(self, name: str, *, store: Any = None, base: str | None = None,
                 data: Sequence[os.PathLike | str] = (), tokenizer: Any = None, checkpoint_every: int | None = None,
                 checkpoint_on_save: bool = True, commit: bool = True, allow_overlap: bool = False,
                 message: str = "", code_path: os.PathLike | str | None = None, run: str | None = None):
        from .core.names import check_name
        check_name(name, "version name")
        self.name = name
        self.store = store
        self.base_rev = base
        self.data = [Path(p) for p in data]
        self.tokenizer = tokenizer
        self.checkpoint_every = checkpoint_every
        self.checkpoint_on_save = checkpoint_on_save
        self.do_commit = commit
        self.allow_overlap = allow_overlap
        self.message = message
        self.code_path = code_path
        self.run = run or name
        check_name(self.run, "run name")
        self.repo: Repo | None = None  # opened at the start of training (rank 0 only)
        self.base: str | None = None
        self.datasets: list[str] = []
        self.warnings: list[str] = []
        self.last_checkpoint: str | None = None
        self.result = None  # the CommitResult once committed
        self._lock = None
        self._t0 = 0.0
        self._run_id = secrets.token_hex(8)

    # ---------------------------------------------------------------- helpers

    def _open(self) -> Repo:
        from .api import Repo
        s = self.store
        if isinstance(s, Repo):
            return s
        if s is None:
            return Repo.discover()
        p = Path(s)
        return Repo.open(p if (p / "format").exists() or p.name == ".lineage" else p / ".lineage")

    def _meta(self, repo: Repo, status: str, args, state) -> dict:
        return {"status": status, "run_id": self._run_id, "base": self.base,
                "base_name": repo.name_of(self.base) if self.base else None, "datasets": list(self.datasets),
                "output": self.name, "data_paths": [{"path": str(p.absolute())} for p in self.data],
                "total_steps": getattr(state, "max_steps", None), "created": utc_now(), "pid": os.getpid(),
                "host": socket.gethostname(), "source": "transformers.Trainer",
                "settings": {"lr": args.learning_rate, "epochs": args.num_train_epochs,
                             "batch_size": args.per_device_train_batch_size, "seed": args.seed}}

    def _checkpoint(self, repo: Repo, args, state, model, optimizer=None, lr_scheduler=None) -> None:
        from .train.checkpoint import save_state, write_checkpoint
        from .train.modelio import store_model
        base_tree = repo.commit(self.base).tree if self.base else None
        parts: dict = {"trainer": {"step": state.global_step, "epoch": state.epoch,
                                   "log_history": list(state.log_history)}}
        if optimizer is not None:
            parts["optimizer"] = getattr(optimizer, "optimizer", optimizer).state_dict()
        if lr_scheduler is not None:
            parts["scheduler"] = lr_scheduler.state_dict()
        with repo.writing():
            tree = store_model(repo.objects, model, tokenizer=self.tokenizer, base_tree=base_tree, hf_format=False,
                               tmp_dir=repo.tmp_dir if repo.path else None).tree
            st = save_state(repo.objects, _jsonable_parts(parts))
            self.last_checkpoint = write_checkpoint(
                repo, self.run, step=state.global_step, model=tree, state=st, parent=self.last_checkpoint,
                meta=self._meta(repo, "running", args, state), message=f"checkpoint: step {state.global_step}")

    # ---------------------------------------------------------------- events

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kw):
        """Open the store, resolve the base, register the data (refused if base's lineage trained it), hold the run."""
        if not state.is_world_process_zero:
            return
        from . import data as _data
        from .train.checkpoint import run_ref
        from .train.runs import hold_run
        self.repo = self._open()
        self.tokenizer = self.tokenizer if self.tokenizer is not None else processing_class
        self.base = self.repo.resolve(self.base_rev or "HEAD") if (self.base_rev or self.repo.head()) else None
        if self.data:
            self.datasets, self.warnings = _data.datasets_for_commit(self.repo, list(self.data), base=self.base)
            if self.warnings and not self.allow_overlap:
                raise Refused("refusing to train on data already trained in this lineage: "
                              + "; ".join(self.warnings), hint="pass allow_overlap=True to train on it again")
        if self.repo.refs.resolve(run_ref(self.run)) is not None:
            raise Refused(f"run {self.run!r} already exists in the store",
                          hint=f"give another run= name, or `lin runs abandon {self.run}`")
        self._lock = hold_run(self.repo, self.run)
        self._t0 = time.monotonic()

    def on_step_end(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kw):
        """Store a checkpoint every ``checkpoint_every`` steps (if given)."""
        if self.repo is None or not self.checkpoint_every or state.global_step % self.checkpoint_every:
            return
        self._checkpoint(self.repo, args, state, model, optimizer, lr_scheduler)

    def on_save(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kw):
        """Store a checkpoint when the Trainer saves one (unless ``checkpoint_on_save=False``)."""
        if self.repo is None or not self.checkpoint_on_save:
            return
        if self.checkpoint_every and state.global_step % self.checkpoint_every == 0:
            return  # on_step_end just stored this step
        self._checkpoint(self.repo, args, state, model, optimizer, lr_scheduler)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kw):
        """Commit the model as ``vNNN_<name>`` with data, metrics, arguments (unless ``commit=False``); end the run."""
        if self.repo is None:
            return
        from .train.checkpoint import run_ref
        from .train.commit import commit_model
        try:
            if not self.do_commit:
                return
            wall = time.monotonic() - self._t0
            losses = [h["loss"] for h in state.log_history if isinstance(h.get("loss"), (int, float))]
            final = next((h.get("train_loss") for h in reversed(state.log_history) if "train_loss" in h), None)
            tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
            metrics = {"final_loss": losses[-1] if losses else final, "train_loss": final,
                       "loss_per_interval": losses, "loss_interval_steps": args.logging_steps,
                       "steps": state.global_step, "epochs": state.epoch, "wall_time_s": round(wall, 3)}
            if tokens:
                metrics["tokens_trained"] = tokens
                metrics["tokens_per_s"] = round(tokens / wall, 2) if wall > 0 else None
            params = {k: _plain(v) for k, v in args.to_dict().items()
                      if k in _ARG_KEYS}
            tok = self.tokenizer if self.tokenizer is not None else processing_class
            self.result, warnings = commit_model(
                self.repo, model, tok, self.name, parents=[self.base] if self.base else [],
                datasets=self.datasets, metrics=metrics, params=params, message=self.message,
                code_path=self.code_path, kind="train",
                extra={"run": self.run, "run_id": self._run_id, "checkpoint": self.last_checkpoint,
                       "source": "transformers.Trainer",
                       **({"allow_overlap": True, "overlap_warnings": self.warnings} if self.warnings else {})})
            if self.last_checkpoint is not None:
                with self.repo.writing():
                    self.repo.update_ref(run_ref(self.run), self.last_checkpoint, None,
                                         f"committed as {self.result.name}")
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None


_ARG_KEYS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
             "gradient_accumulation_steps", "weight_decay", "warmup_steps", "lr_scheduler_type", "seed",
             "bf16", "fp16", "max_grad_norm", "optim", "adam_beta1", "adam_beta2", "adam_epsilon")


def _plain(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return v.item()
    return str(v)


def _jsonable_parts(parts: dict) -> dict:
    """Trainer log entries may hold numpy scalars or other objects: keep what JSON can say."""
    trainer = parts.get("trainer")
    if trainer is not None:
        trainer["log_history"] = [{str(k): _plain(v) for k, v in h.items()} for h in trainer.get("log_history", [])]
        trainer["epoch"] = _plain(trainer.get("epoch"))
    return parts
