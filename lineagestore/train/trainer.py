"""The training loop: fine-tune a causal LM on the planned data, checkpoint into the store, commit.

Exactness. On the CPU a run that is killed and resumed ends bit-identical to one that was not:
the order of the training units depends only on (seed, epoch) (:func:`dataset.epoch_order`),
the position in that order is saved, weights and optimizer state are saved in full precision
(fp32) and restored exactly, and the torch/Python/NumPy RNG states are saved and restored.
Checkpoints are taken only between optimizer steps. On a GPU, kernels may be nondeterministic
unless ``deterministic`` is set (then CUBLAS_WORKSPACE_CONFIG is set too).

Order of writes. Every checkpoint stores its objects, then the checkpoint object, then moves
``refs/runs/<run>`` (compare-and-swap). The final version is published through
``core/publish.publish``: the weights, then the commit, its tag and HEAD, with the run ref deleted
under the same lock. A crash at any point leaves the last checkpoint reachable and resumable.
Checkpoints and the version are announced to the repository's after-publish hooks (the backup).

Signals. SIGTERM and SIGINT set a flag; the loop finishes the current step, writes a checkpoint
marked "interrupted" and raises :class:`TrainingInterrupted`. A second signal stops at once.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import secrets
import shutil
import signal
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.errors import EXIT_INTERRUPTED, CorruptObject, InvalidInput, LinError, Refused
from ..core.fsutil import kill_point
from ..core.progress import NULL, Progress
from ..core.publish import announce, code_revision, environment, publish
from ..core.repo import PublishEvent, Repo, utc_now
from ..core.store import ObjectStore
from . import distributed as D
from .checkpoint import (FAILED, INTERRUPTED, RUNNING, checkpoint_store, load_state,
                         read_checkpoint, run_ref, save_state, write_checkpoint)
from .dataset import IGNORE, Blocks, epoch_order, load_data
from .modelio import load_weights, store_model, tree_weight_summary
from .plan import Job, Plan, _quiet, load_tokenizer, steps_for
from .runs import hold_run
from .settings import TrainSettings


class TrainingInterrupted(LinError):
    """Stopped by SIGTERM/SIGINT after writing a checkpoint; resume with ``lin train --resume``."""

    exit_code = EXIT_INTERRUPTED


class TrainingFailed(LinError):
    exit_code = 1


@dataclass
class TrainResult:
    id: str
    name: str
    base: str
    base_name: str
    run: str
    steps: int
    tokens_trained: int
    final_loss: float | None
    metrics: dict
    params: dict
    datasets: list[str]
    resumed_from: int | None  # step the run continued from (None: a fresh run)
    checkpoints: int  # written by this process
    new_bytes: int  # bytes the final version added to the store
    losses: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("losses")
        return d


# ------------------------------------------------------------------------------ building blocks


def resolve_device(setting: str, dist: D.Dist):
    import torch
    if setting == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device(f"cuda:{dist.local_rank}")
    if setting == "cuda":
        raise InvalidInput("--device cuda: no GPU found", hint="train on the CPU with --device cpu")
    return torch.device("cpu")


def resolve_precision(setting: str, device) -> str:
    """fp32 | bf16 | fp16: ``auto`` is bf16 on a GPU that supports it, fp32 otherwise."""
    import torch
    if setting == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if setting == "fp16" and device.type != "cuda":
        raise InvalidInput("fp16 needs a GPU (its loss scaling is CUDA-only); use bf16 or fp32 on the CPU")
    return setting


def _autocast(device, precision: str):
    import torch
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def compute_loss(model, batch: dict, device, precision: str, denominator: int):
    """(loss to backpropagate = summed token cross-entropy / denominator, the summed cross-entropy)."""
    import torch
    import torch.nn.functional as F
    ids = torch.from_numpy(batch["input_ids"]).to(device)
    att = torch.from_numpy(batch["attention_mask"]).to(device)
    labels = torch.from_numpy(batch["labels"]).to(device)
    with _autocast(device, precision):
        logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits
    logits = logits[:, :-1, :].float()
    target = labels[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                         ignore_index=IGNORE, reduction="sum")
    return ce / denominator, ce


def build_model(repo: Repo, base_tree: str, meta_dir: Path | None, device, s: TrainSettings):
    """The base model in fp32 (master weights), built from its config and filled from the store.

    Weights go from the store into memory without a copy of the model on disk; for architectures
    whose stored names differ from the module names it falls back to ``from_pretrained`` on a
    checked-out folder.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    from .modelio import materialize
    from .plan import train_cache
    if meta_dir is None:
        meta_dir = materialize(repo.objects, base_tree, train_cache(repo) / f"meta-{base_tree[:24]}", weights=False)
    with _quiet():
        config = AutoConfig.from_pretrained(str(meta_dir))
        with torch.random.fork_rng(devices=[]):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        try:
            load_weights(repo.objects, base_tree, model)
        except CorruptObject:
            folder = materialize(repo.objects, base_tree, train_cache(repo) / f"base-{base_tree[:24]}")
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        if (meta_dir / "generation_config.json").is_file():
            try:
                model.generation_config = GenerationConfig.from_pretrained(str(meta_dir))
            except (OSError, ValueError):
                pass
    if s.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model.to(device)


def _param_groups(model, s: TrainSettings) -> tuple[list[dict], list[str]]:
    """Trainable parameters (not frozen by pattern) in two groups: with and without weight decay."""
    decay, no_decay, names = [], [], []
    for name, p in model.named_parameters():
        if any(fnmatch(name, pat) for pat in s.freeze):
            p.requires_grad_(False)
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
        names.append(name)
    if not names:
        raise InvalidInput("every parameter is frozen: nothing to train", hint="check the --freeze patterns")
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]], names


def _lr_lambda(s: TrainSettings, total: int) -> Callable[[int], float]:
    warm = s.warmup_steps
    floor = s.min_lr_ratio

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if s.scheduler == "constant" or total <= warm:
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        if s.scheduler == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return floor + (1 - floor) * (1 - progress)
    return f


def rng_state(device) -> dict:
    import torch
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict, device) -> None:
    import torch
    random.setstate(_tuplify(st["python"]))
    np.random.set_state(_tuplify(st["numpy"]))
    torch.set_rng_state(st["torch"])
    if device.type == "cuda" and st.get("cuda") is not None:
        torch.cuda.set_rng_state(st["cuda"], device)


def _tuplify(v: Any) -> Any:
    return tuple(_tuplify(x) for x in v) if isinstance(v, (list, tuple)) else v


def _rng_to_json(st: dict) -> dict:
    """A rank's RNG state as plain JSON (to send it to rank 0)."""
    from .tensorio import split_tensors
    doc, tensors = split_tensors(st, "rng")
    return {"doc": doc, "tensors": {k: v.tolist() for k, v in tensors.items()}}


def _rng_from_json(d: dict) -> dict:
    import torch
    from .tensorio import join_tensors
    return join_tensors(d["doc"], {k: torch.tensor(v, dtype=torch.uint8) for k, v in d["tensors"].items()})


class _StopFlag:
    """SIGTERM/SIGINT -> finish the step, checkpoint, stop; a second signal stops at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum
        for sig, old in self._old.items():  # a second signal: the default behaviour
            signal.signal(sig, old)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ------------------------------------------------------------------------------ the run


@dataclass
class _State:
    step: int = 0
    epoch: int = 0
    position: int = 0  # units of the epoch's order already trained
    tokens: int = 0
    targets: int = 0
    wall_time_s: float = 0.0
    sessions: int = 0
    checkpoints: int = 0


def train(repo: Repo, plan: Plan, *, progress: Progress = NULL, log: Callable[[str], None] | None = None,
          code_path: os.PathLike | str | None = None, message: str = "", dist: D.Dist | None = None) -> TrainResult:
    """Train as planned and commit the new version. The plan must be ``ok``."""
    if not plan.ok:
        failed = ", ".join(f"{c.number} {c.title}" for c in plan.failed)
        raise Refused(f"the plan did not pass: {failed}", hint="see `lin plan` for the reasons")
    dist = dist or D.from_env()
    say = log or (lambda _m: None)
    s = TrainSettings.build(plan.settings)
    import torch

    if s.deterministic or (s.deterministic is None and s.device == "cpu"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = resolve_device(s.device, dist)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    D.init(dist, device.type)
    precision = resolve_precision(s.precision, device)
    lock = hold_run(repo, plan.run) if dist.is_main else None
    try:
        return _train(repo, plan, s, device, precision, dist, progress, say, code_path, message)
    finally:
        if lock is not None:
            lock.release()


def _train(repo: Repo, plan: Plan, s: TrainSettings, device, precision: str, dist: D.Dist, progress: Progress,
           say: Callable[[str], None], code_path, message: str) -> TrainResult:
    import torch
    base_commit = repo.commit(plan.base)
    base_tree = base_commit.tree
    job: Job | None = plan._job
    if job is None or job.data is None:
        tok, meta_dir = load_tokenizer(repo, base_tree)
        data = load_data([(Path(d.path), d.fingerprint) for d in plan.data], tok, cache_dir=repo.cache_dir,
                         skip_bad_lines=any(d.skipped_lines for d in plan.data), progress=progress)
        job = Job(tok, data, meta_dir)
    tok = job.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    blocks = Blocks(job.data, s.seq_len, s.packing)
    if not len(blocks):
        raise InvalidInput("no training data: the files have no tokens")
    per_epoch, total = steps_for(len(blocks), s, dist.world)
    per_step = s.batch_size * s.grad_accum * dist.world

    model = job.model if job.model is not None else build_model(repo, base_tree, job.meta_dir, device, s)
    job.model = None
    model.to(device)
    model.train()
    groups, names = _param_groups(model, s)
    optimizer = torch.optim.AdamW(groups, lr=s.lr, betas=(s.adam_beta1, s.adam_beta2), eps=s.adam_eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(s, total))
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    save_dtype = _save_dtype(repo, base_tree)

    st = _State()
    losses: list[float] = []
    last_ckpt: str | None = None
    run_id = secrets.token_hex(8)
    resumed_from = None
    # the training code's revision is taken when the run starts and kept across resumes
    code = code_revision(code_path)
    if plan.resume:
        ck = read_checkpoint(repo, plan.resume["checkpoint"])
        last_ckpt = ck.id
        run_id = str(ck.meta.get("run_id", run_id))
        if code_path is None and ck.meta.get("code") is not None:
            code = ck.meta["code"]
        if ck.state is None:
            raise CorruptObject(f"checkpoint {ck.id[:12]} of run {plan.run} has no trainer state; "
                                f"abandon the run (`lin runs abandon {plan.run}`) and start again")
        if ck.model != base_tree:  # a step-0 checkpoint names the base itself: already loaded
            load_weights(repo.objects, ck.model, model)
        parts = load_state(repo.objects, ck.state)
        tr = parts["trainer"]
        if tr.get("param_names") != names:
            raise CorruptObject(f"checkpoint {ck.id[:12]}: its optimizer state is for other parameters "
                                "(different --freeze or model)")
        if int(tr.get("world_size", 1)) != dist.world:
            say(f"warning: run {plan.run} was trained on {tr.get('world_size')} process(es), now {dist.world}: "
                "the data order continues, the result will not be bit-identical")
        if "optimizer" in parts:
            optimizer.load_state_dict(parts["optimizer"])
        if "scheduler" in parts:
            scheduler.load_state_dict(parts["scheduler"])
        if scaler is not None and parts.get("scaler"):
            scaler.load_state_dict(parts["scaler"])
        ranks = parts["rng"]["ranks"]
        set_rng_state(ranks[dist.rank] if dist.rank < len(ranks) else ranks[0], device)
        st = _State(step=int(tr["step"]), epoch=int(tr["epoch"]), position=int(tr["position"]),
                    tokens=int(tr["tokens"]), targets=int(tr["targets"]), wall_time_s=float(tr["wall_time_s"]),
                    sessions=int(tr.get("sessions", 1)), checkpoints=int(tr.get("checkpoints", 0)))
        losses = [float(x) for x in parts["losses"]["loss"].tolist()] if "losses" in parts else []
        resumed_from = st.step
        say(f"resuming run {plan.run} from step {st.step} (checkpoint {ck.id[:10]})")
    else:
        random.seed(s.seed + dist.rank)
        np.random.seed((s.seed + dist.rank) & 0xFFFFFFFF)
        torch.manual_seed(s.seed + dist.rank)
    st.sessions += 1

    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        ddp_model = model

    env = environment()
    ckstore = checkpoint_store(repo)
    frozen_names = {n for n, p in model.named_parameters() if not p.requires_grad}
    frozen_ids: dict[str, str] = {}
    written = [0]
    session_start = time.monotonic()
    wall_before = st.wall_time_s

    def meta(status: str, error: str | None = None) -> dict:
        return {
            "status": status, "run_id": run_id, "base": plan.base, "base_name": plan.base_name,
            "datasets": list(plan.datasets), "output": plan.name,
            "data_paths": [{"path": d.path, "fingerprint": d.fingerprint, "dataset": d.dataset} for d in plan.data],
            "settings": s.to_dict(), "total_steps": total, "tokens_trained": st.tokens,
            "created": utc_now(), "pid": os.getpid(), "host": socket.gethostname(), "world_size": dist.world,
            "device": _device_label(device, dist), "precision": precision, "allow_overlap": plan.allow_overlap,
            "code": code,
            **({"error": error} if error else {}),
        }

    def trainer_state() -> dict:
        st.wall_time_s = wall_before + (time.monotonic() - session_start)
        return {**asdict(st), "param_names": names, "world_size": dist.world, "total_steps": total,
                "units": len(blocks), "seed": s.seed}

    def checkpoint(status: str) -> None:
        nonlocal last_ckpt
        ranks = D.gather_json(dist, _rng_to_json(rng_state(device)), device)
        if dist.is_main:
            st.checkpoints += 1
            parts = {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": {"ranks": [_rng_from_json(r) for r in ranks]}, "trainer": trainer_state(),
                "losses": {"loss": torch.tensor(losses, dtype=torch.float64)},
            }
            if scaler is not None:
                parts["scaler"] = scaler.state_dict()
            with repo.writing():
                try:
                    if st.step == 0:
                        model_tree = base_tree  # nothing trained yet: the weights are the base's
                    else:
                        stored = store_model(ckstore, model, base_tree=base_tree, hf_format=False,
                                             tmp_dir=repo.tmp_dir if repo.path else None, known=frozen_ids)
                        model_tree = stored.tree
                        # frozen parameters never change in this process: not read again
                        frozen_ids.update({n: i for n, i in stored.tensor_ids.items() if n in frozen_names})
                    state_tree = save_state(ckstore, parts)
                    ckstore.flush()
                except BaseException:
                    ckstore.discard()
                    raise
                last_ckpt = write_checkpoint(repo, plan.run, step=st.step, model=model_tree, state=state_tree,
                                             parent=last_ckpt, meta=meta(status),
                                             message=f"checkpoint: step {st.step}/{total} ({status})")
            written[0] += 1
            say(f"checkpoint at step {st.step}/{total} ({status}): {last_ckpt[:10]}")
            _report(announce(repo, PublishEvent("checkpoint", last_ckpt, plan.run)), say)
        D.barrier(dist)

    def record_failure(err: BaseException) -> None:
        if not dist.is_main:
            return
        text = f"{type(err).__name__}: {err}"
        try:
            with repo.writing():
                if last_ckpt is not None:
                    prev = read_checkpoint(repo, last_ckpt)
                    m = {**prev.meta, **meta(FAILED, text), "tokens_trained": prev.meta.get("tokens_trained", 0),
                         "failed_at_step": st.step}
                    write_checkpoint(repo, plan.run, step=prev.step, model=prev.model, state=prev.state,
                                     parent=last_ckpt, meta=m, message=f"failed at step {st.step}: {text[:200]}")
        except LinError as e:  # the original error matters more
            say(f"warning: could not record the failure: {e}")

    order_epoch, order = -1, None
    trainable = [p for p in model.parameters() if p.requires_grad]
    progress.start(f"training {plan.output or plan.name}", total, "steps")
    try:
        with _StopFlag() as stop:
            if last_ckpt is None:
                checkpoint(RUNNING)  # step 0: the run exists (and shows in `lin runs`) from now on
            progress.advance(st.step)
            t_last, tok_last = time.monotonic(), st.tokens
            while st.step < total:
                if D.any_flag(dist, stop.signal is not None, device):
                    checkpoint(INTERRUPTED)
                    raise TrainingInterrupted(
                        f"interrupted at step {st.step}/{total}; checkpoint saved in run {plan.run}",
                        hint=f"continue with `lin train --resume --run {plan.run}` (or the same command again)")
                if order_epoch != st.epoch:
                    order, order_epoch = epoch_order(len(blocks), s.seed, st.epoch), st.epoch
                chunk = order[st.position:st.position + per_step]
                n_tokens, n_targets = blocks.tokens_of(chunk)
                denom = max(1, n_targets)
                local_sum = 0.0
                for k in range(s.grad_accum):
                    a = (k * dist.world + dist.rank) * s.batch_size
                    idx = chunk[a:a + s.batch_size]
                    batch = blocks.batch(idx if len(idx) else chunk[:1], pad_id)
                    if not len(idx):
                        batch["labels"][:] = IGNORE  # keeps this rank in step with the others
                    sync = (contextlib.nullcontext() if (not dist.enabled or k == s.grad_accum - 1)
                            else ddp_model.no_sync())
                    with sync:
                        loss, ce = compute_loss(ddp_model, batch, device, precision, denom)
                        loss = loss * dist.world  # DDP averages gradients over ranks
                        (scaler.scale(loss) if scaler is not None else loss).backward()
                    local_sum += float(ce.detach())
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if s.max_grad_norm and s.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(trainable, s.max_grad_norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step_loss = D.sum_floats(dist, [local_sum], device)[0] / denom
                if not math.isfinite(step_loss):
                    raise TrainingFailed(f"the loss became {step_loss} at step {st.step + 1}",
                                         hint="lower the learning rate (--lr) and resume or start again")
                losses.append(step_loss)
                st.tokens += n_tokens
                st.targets += n_targets
                st.position += len(chunk)
                if st.position >= len(blocks):
                    st.epoch += 1
                    st.position = 0
                st.step += 1
                now = time.monotonic()
                rate = (st.tokens - tok_last) / max(now - t_last, 1e-9)
                progress.advance(1, **{"loss": step_loss, "tokens/s": round(rate)})
                kill_point("train-step")
                if st.step % s.checkpoint_every == 0 and st.step < total:
                    checkpoint(RUNNING)
                    t_last, tok_last = time.monotonic(), st.tokens
    except TrainingInterrupted:
        raise
    except BaseException as e:
        if isinstance(e, (Exception,)):
            record_failure(e)
            if isinstance(e, LinError):
                raise
            raise TrainingFailed(f"training failed at step {st.step}: {type(e).__name__}: {e}",
                                 hint=f"the run is recorded as failed; fix the cause and resume with "
                                      f"`lin train --resume --run {plan.run}`, or `lin runs abandon {plan.run}`") from e
        raise
    finally:
        progress.finish()

    # -- commit the new version (rank 0), the others wait
    st.wall_time_s = wall_before + (time.monotonic() - session_start)
    intervals = [float(np.mean(losses[i:i + s.log_every])) for i in range(0, len(losses), s.log_every)]
    metrics = {
        "final_loss": intervals[-1] if intervals else None,
        "loss_per_interval": intervals, "loss_interval_steps": s.log_every,
        "steps": st.step, "epochs": round(st.step / per_epoch, 4) if per_epoch else 0,
        "tokens_trained": st.tokens, "target_tokens": st.targets,
        "wall_time_s": round(st.wall_time_s, 3),
        "tokens_per_s": round(st.tokens / st.wall_time_s, 2) if st.wall_time_s > 0 else None,
        "device": _device_label(device, dist), "precision": precision, "world_size": dist.world,
        "model_params": tree_weight_summary(repo.objects, base_tree)["params"],
        "trainable_params": trainable_params, "sessions": st.sessions, "checkpoints": st.checkpoints,
    }
    params = {**s.to_dict(), "optimizer": "adamw", "allow_overlap": plan.allow_overlap,
              "data": [Path(d.path).name for d in plan.data]}
    params.pop("device", None)
    params.pop("gpus", None)
    params["world_size"] = dist.world
    result: TrainResult | None = None
    if dist.is_main:
        def content(batch: ObjectStore) -> str:
            stored = store_model(batch, model, base_tree=base_tree, dtype=save_dtype,
                                 tmp_dir=repo.tmp_dir if repo.path else None)
            kill_point("train-commit")
            return stored.tree

        pub = publish(repo, content, name=plan.name, kind="train", parents=[plan.base], datasets=plan.datasets,
                      metrics=metrics, params=params, code=code, env=env, message=message,
                      extra={"run": plan.run, "run_id": run_id, "checkpoint": last_ckpt,
                             **({"allow_overlap": True, "overlap": plan.overlap} if plan.allow_overlap else {})},
                      retire={run_ref(plan.run): last_ckpt} if last_ckpt is not None else None)
        cid, new_bytes = pub.id, pub.new_bytes
        say(f"committed {pub.name} ({cid[:10]})")
        _report(pub.after, say)
        if repo.path is not None:
            from .plan import train_cache
            shutil.rmtree(train_cache(repo) / f"base-{base_tree[:24]}", ignore_errors=True)
        result = TrainResult(id=cid, name=pub.name, base=plan.base, base_name=plan.base_name or "",
                             run=plan.run, steps=st.step, tokens_trained=st.tokens, final_loss=metrics["final_loss"],
                             metrics=metrics, params=params, datasets=list(plan.datasets), resumed_from=resumed_from,
                             checkpoints=written[0], new_bytes=new_bytes, losses=losses)
    D.barrier(dist)
    if result is None:  # other ranks: the same result, read back
        result = TrainResult(id="", name=plan.output or plan.name, base=plan.base, base_name=plan.base_name or "",
                             run=plan.run, steps=st.step, tokens_trained=st.tokens,
                             final_loss=metrics["final_loss"], metrics=metrics, params=params,
                             datasets=list(plan.datasets), resumed_from=resumed_from, checkpoints=0, new_bytes=0,
                             losses=losses)
    return result


def _report(outcomes: dict, say: Callable[[str], None]) -> None:
    """Warn of after-publish hooks that failed (a failed backup never stops training)."""
    for name, out in outcomes.items():
        if not out.ok:
            where = f" to {out.remote}" if hasattr(out, "remote") else ""
            say(f"warning: {name}{where} failed: {out.error}; `lin {name}` retries" if name == "backup"
                else f"warning: {name} failed: {out.error}")


def _device_label(device, dist: D.Dist) -> str:
    if device.type == "cuda":
        import torch
        name = torch.cuda.get_device_name(device)
        return f"cuda: {name}" + (f" x{dist.world}" if dist.world > 1 else "")
    return "cpu" + (f" x{dist.world} processes" if dist.world > 1 else "")


def _save_dtype(repo: Repo, base_tree: str):
    """The dtype the base stores its weights in (the new version keeps it)."""
    import torch
    main = tree_weight_summary(repo.objects, base_tree)["dtype"]
    return {"BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}.get(main, torch.float32)

