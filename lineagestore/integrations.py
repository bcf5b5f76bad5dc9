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

**What was trained, exactly.** The version records the records the Trainer consumed, as
``lin train`` does (docs/data.md, "Trained parts"): a run that went through at least one whole
epoch names each file's registered dataset; a run stopped earlier (``max_steps``, an early-stopping
callback) names, per file, a trained part holding exactly the records of the rows it trained.
Which rows those were is read from the Trainer's own sampler (the order it drew, recorded as it
was drawn) and the steps done. A row is mapped to its record by ``row_records`` (for each row
of the training dataset, the index of its record among the records of ``data``: the non-blank
lines of the files, in order) or, by default, one to one when the dataset has exactly as many
rows as the files have records (``load_dataset("json", data_files=...)`` then ``map``). When
neither holds, a run stopped before a whole epoch records none of its files as trained (never
more than it trained) and says so in ``extra.data_not_recorded`` and in ``warnings``.

The Trainer does not tell callbacks about a crash: a run that died stays in ``lin runs`` as
"stopped" with its last checkpoint; resuming is the Trainer's own ``resume_from_checkpoint``.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from array import array
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

from .core.errors import InvalidInput, LinError, Refused
from .core.repo import utc_now

if TYPE_CHECKING:
    from .core.repo import Repo


class LineageCallback(TrainerCallback):
    """A ``transformers.TrainerCallback`` that stores checkpoints and commits the trained model as ``vNNN_<name>``.

    ``store``: a Repo or a store folder (default: found like ``lin`` finds it); ``base``: the parent
    version (default: the active one); ``data``: the training files, registered and checked for
    overlap with the base's lineage; ``run``: the name under ``refs/runs/`` (default: ``name``);
    ``row_records``: for each row of the training dataset, the index of its record among the
    records of ``data`` (default: rows and records one to one, when their counts match).
    After training, ``result`` is the CommitResult (None with ``commit=False``).
    """

    def __init__(self, name: str, *, store: Any = None, base: str | None = None,
                 data: Sequence[os.PathLike | str] = (), tokenizer: Any = None, checkpoint_every: int | None = None,
                 checkpoint_on_save: bool = True, commit: bool = True, allow_overlap: bool = False,
                 message: str = "", code_path: os.PathLike | str | None = None, run: str | None = None,
                 row_records: Sequence[int] | None = None):
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
        self.row_records = None if row_records is None else [int(i) for i in row_records]
        self._files: list[tuple[str, Any]] = []  # (registered dataset id, record ids of its records in order)
        self._order: _OrderRecorder | None = None  # the rows the Trainer's sampler drew, epoch by epoch
        self._rows = 0  # rows of the training dataset
        self._batches = 0  # batches of one process in an epoch

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
        if self.data:
            self._prepare_consumption(kw.get("train_dataloader"))
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
            parts, unrecorded = self._trained_parts(args, state)
            extra: dict[str, Any] = {"run": self.run, "run_id": self._run_id, "checkpoint": self.last_checkpoint,
                                     "source": "transformers.Trainer"}
            if self.warnings:
                extra.update({"allow_overlap": True, "overlap_warnings": self.warnings})
            if unrecorded:
                extra["data_not_recorded"] = unrecorded
                self.warnings.append(unrecorded)
            self.result, warnings = commit_model(
                self.repo, model, tok, self.name, parents=[self.base] if self.base else [],
                parts=parts, metrics=metrics, params=params, message=self.message,
                code_path=self.code_path, kind="train", extra=extra)
            if self.last_checkpoint is not None:
                with self.repo.writing():
                    self.repo.update_ref(run_ref(self.run), self.last_checkpoint, None,
                                         f"committed as {self.result.name}")
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None


    # ---------------------------------------------------------------- what was trained

    def _prepare_consumption(self, loader: Any) -> None:
        """Read the record ids of the data files, in order, and start recording the rows the
        Trainer's sampler draws (its innermost batch sampler's ``sampler`` is wrapped)."""
        from .data.registry import lookup
        from .train.dataset import parse_record, read_verified_lines
        assert self.repo is not None
        limit = self.repo.settings.data.max_record_bytes
        for path in self.data:
            info = lookup(self.repo, path)
            assert info is not None  # datasets_for_commit registered it
            rids = []
            for lineno, line in read_verified_lines(path, info.fingerprint, limit):
                if line.strip():
                    try:
                        rids.append(parse_record(line, lineno, f"{path}:{lineno}")[0])
                    except LinError:  # a bad line is no record (as the registry skips it)
                        continue
            self._files.append((info.id, rids))
        self._order = _OrderRecorder.attach(loader)
        self._rows = len(getattr(loader, "dataset", ()) or ()) if loader is not None else 0
        self._batches = len(loader) if loader is not None and hasattr(loader, "__len__") else 0
        records = sum(len(r) for _, r in self._files)
        if self.row_records is not None and len(self.row_records) != self._rows:
            raise InvalidInput(f"row_records has {len(self.row_records)} entries, the training dataset "
                               f"{self._rows} rows: give one record index per row")
        if self.row_records is not None and any(not 0 <= i < records for i in self.row_records):
            raise InvalidInput(f"row_records: every entry must be a record index in 0..{records - 1} "
                               "(the records of data, in order)")

    def _trained_parts(self, args, state) -> tuple[list, str | None]:
        """What the version names for each data file, and why nothing is recorded where that is so."""
        import numpy as np

        from .data.idsets import sort_unique
        from .data.parts import Part, make_part, whole_part
        assert self.repo is not None
        store = self.repo.objects
        if not self._files:
            return [], None
        accum = max(int(args.gradient_accumulation_steps), 1)
        per_epoch = max(-(-self._batches // accum), 1)
        whole = self._batches > 0 and state.global_step >= per_epoch  # every row drawn at least once
        records = sum(len(r) for _, r in self._files)
        mapping = self.row_records if self.row_records is not None else (
            list(range(records)) if self._rows == records else None)
        if whole and (mapping is None or len(set(mapping)) == records):
            return [whole_part(store, did, store.get(did, "dataset")) for did, _ in self._files], None
        order = self._order.last() if self._order is not None else None
        if mapping is None or order is None:
            why = ("its rows are not the records of its data one to one (give row_records=)" if mapping is None
                   else "the Trainer's sampler could not be followed")
            return [], (f"the run trained part of its data, and which records cannot be told: {why}; "
                        "no record of " + ", ".join(p.name for p in self.data) + " is recorded as trained")
        samples = min(state.global_step * accum, self._batches) * int(args.per_device_train_batch_size) \
            * max(int(args.world_size), 1)
        if whole:
            samples = len(order)
        consumed = np.zeros(records, dtype=bool)
        rows = np.frombuffer(order, dtype=np.int64)[:samples]
        consumed[np.asarray(mapping, dtype=np.int64)[rows[(rows >= 0) & (rows < len(mapping))]]] = True
        parts: list[Part] = []
        start = 0
        for did, rids in self._files:
            done = consumed[start:start + len(rids)]
            ids = sort_unique(np.asarray(rids, dtype=np.dtype("S16"))[done]) if done.any() else None
            start += len(rids)
            part = make_part(store, did, store.get(did, "dataset"), [ids], int(done.sum())) if ids is not None else None
            if part is not None and part.id not in {p.id for p in parts}:
                parts.append(part)
        return parts, None


class _OrderRecorder:
    """Stands in for a sampler: yields what it yields and keeps the order of its latest pass (an
    epoch), 8 bytes a row."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.order: array | None = None

    @classmethod
    def attach(cls, loader: Any) -> _OrderRecorder | None:
        """Wrap the ``sampler`` of the innermost batch sampler of ``loader`` (None if it has none)."""
        from torch.utils.data import BatchSampler
        node, batch = loader, None
        for _ in range(8):
            nxt = getattr(node, "batch_sampler", None)
            if nxt is None or nxt is node:
                break
            if isinstance(nxt, BatchSampler) and hasattr(nxt, "sampler"):
                batch = nxt
            node = nxt
        if batch is None:
            return None
        if isinstance(batch.sampler, cls):
            return batch.sampler
        rec = cls(batch.sampler)
        batch.sampler = rec
        return rec

    def __iter__(self):
        self.order = order = array("q")
        for i in self.inner:
            order.append(int(i))
            yield i

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name: str) -> Any:  # set_epoch and the rest of the sampler's own
        if name == "inner":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def last(self) -> array | None:
        return self.order


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
