"""The training loop: fine-tune a causal LM on the planned data, checkpoint into the store, commit.

Exactness. On the CPU a run that is killed and resumed ends bit-identical to one that was not:
the order of the training units depends only on (seed, epoch) (:func:`dataset.epoch_order`),
the position in that order is saved, weights and optimizer state are saved in full precision
(fp32) and restored exactly, and the torch/Python/NumPy RNG states are saved and restored.
Checkpoints are taken only between optimizer steps. On a GPU, kernels may be nondeterministic
unless ``deterministic`` is set (then CUBLAS_WORKSPACE_CONFIG is set too). A run resumed on
another number of processes continues from the units it consumed to the same end
(:mod:`.course`); the version records the records it consumed (:mod:`.trained`).

Order of writes. Every checkpoint stores its objects, then the checkpoint object, then moves
``refs/runs/<run>`` (compare-and-swap). The final version is published through
``core/publish.publish``: the weights, then the commit, its tag and HEAD, with the run ref deleted
under the same lock. HEAD's branch moves only if it is where it was when this session started
(or the version descends from where it is now): a branch another command moved meanwhile stays
where it is (``BranchMoved``, exit 6; the version is kept under its name). A crash at any point
leaves the last checkpoint reachable and resumable.
Checkpoints and the version are announced to the repository's after-publish hooks (the backup).

Signals. SIGTERM and SIGINT set a flag; the loop finishes the current step, writes a checkpoint
marked "interrupted" and raises :class:`TrainingInterrupted`. A second signal stops at once.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.environment import env_int, read_env
from ..core.errors import EXIT_INTERRUPTED, CorruptObject, InvalidInput, LinError, NoSpace, Refused
from ..core.fsutil import kill_point
from ..core.progress import NULL, Progress
from ..core.publish import BranchMoved, announce, code_revision, environment, failure_text, publish
from ..core.repo import PublishEvent, Repo, utc_now
from ..core.store import ObjectStore
from . import distributed as D
from . import evaluate as E
from .checkpoint import (
    FAILED,
    INTERRUPTED,
    RUNNING,
    checkpoint_store,
    load_state,
    read_checkpoint,
    rng_from_json,
    rng_state,
    rng_to_json,
    run_ref,
    save_state,
    set_rng_state,
    write_checkpoint,
)
from .course import Schedule, end_position, limit, resumed_course, steps_left
from .dataset import IGNORE, Blocks, epoch_order, load_data
from .job import Job, load_tokenizer, steps_for, train_cache
from .model import (
    build_model,
    compute_loss,
    device_label,
    param_groups,
    resolve_device,
    resolve_precision,
    save_dtype,
    schedule_lambda,
)
from .modelio import load_weights, store_model, tree_weight_summary
from .plan import Plan
from .runs import StopFlag, hold_run
from .series import SERIES_ENTRY, SeriesWriter, compute_record, device_kind, series_of_state, store_final
from .session import Counters, Session
from .settings import TrainSettings
from .trained import drop_trained, recorded_parts

#: ``LIN_TEST_NAN_AT=N``: the loss of optimizer step N reads as NaN (tests of the failure path)
_NAN_AT = env_int("LIN_TEST_NAN_AT", 0, low=1) if read_env("LIN_TEST_NAN_AT") else None


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
    session_steps: int = 0  # optimizer steps this session (a resumed run: since it resumed)
    session_tokens: int = 0  # tokens this session trained
    session_s: float = 0.0  # this session's training time (seconds)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("losses")
        return d


# ------------------------------------------------------------------------------ the run


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
    r = _set_up(repo, plan, s, device, precision, dist, progress, say)
    # the training code's revision is taken when the run starts and kept across resumes
    r.code = code_revision(code_path)
    if plan.resume:
        _resume(r, plan.resume, keep_code=code_path is None)
    else:
        random.seed(s.seed + dist.rank)
        np.random.seed((s.seed + dist.rank) & 0xFFFFFFFF)
        import torch
        torch.manual_seed(s.seed + dist.rank)
    r.st.sessions += 1
    _start_session(r)
    E.start_session(r)
    _run_steps(r)
    metrics, params = _final_metrics(r)
    return _publish(r, metrics, params, message)


def _set_up(repo: Repo, plan: Plan, s: TrainSettings, device, precision: str, dist: D.Dist, progress: Progress,
            say: Callable[[str], None]) -> Session:
    """The data as training units, the base model, optimizer, LR schedule and loss scaler (nothing restored)."""
    import torch
    base = plan.base
    if base is None:  # not in a plan that passed: check 2 fails without a base
        raise Refused("the plan names no base model", hint="see `lin plan` for the reasons")
    base_tree = repo.commit(base).tree
    job: Job | None = plan._job
    if job is None or job.data is None:
        tok, meta_dir = load_tokenizer(repo, base_tree)
        loaded = load_data([(Path(d.path), d.fingerprint) for d in plan.data], tok, cache_dir=repo.cache_dir,
                           skip_bad_lines=any(d.skipped_lines for d in plan.data), progress=progress,
                           max_record_bytes=repo.settings.data.max_record_bytes)
        # the plan drops what the lineage trained of a file's rest from the data it loads; here too
        data = drop_trained(repo, base, plan.data, loaded)
        job = Job(tok, data, meta_dir)
    else:
        data = job.data
    tok = job.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    blocks = Blocks(data, s.seq_len, s.packing)
    if not len(blocks):
        raise InvalidInput("no training data: the files have no tokens")
    per_epoch, total = steps_for(len(blocks), s, dist.world)
    per_step = s.batch_size * s.grad_accum * dist.world
    schedule = Schedule(total, per_step)

    model = job.model if job.model is not None else build_model(repo, base_tree, job.meta_dir, device, s,
                                                                    version=plan.base_name or base)
    job.model = None
    model.to(device)
    model.train()
    groups, names = param_groups(model, s)
    optimizer = torch.optim.AdamW(groups, lr=s.lr, betas=(s.adam_beta1, s.adam_beta2), eps=s.adam_eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_lambda(s, schedule))
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    return Session(repo=repo, plan=plan, base=base, s=s, device=device, precision=precision, dist=dist, progress=progress,
                say=say, base_tree=base_tree, blocks=blocks, pad_id=pad_id, per_epoch=per_epoch, total=total,
                per_step=per_step, end=end_position(len(blocks), per_step, total), schedule=schedule,
                expect_head=((plan.branch, repo.refs.resolve(plan.branch)) if plan.branch
                             else (repo.head_branch(), repo.head())), model=model, optimizer=optimizer,
                scheduler=scheduler, scaler=scaler, names=names,
                trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
                save_dtype=save_dtype(repo, base_tree))


def _resume(r: Session, resume: dict, *, keep_code: bool) -> None:
    """Continue the run from its checkpoint (the plan's ``resume``): weights, optimizer, schedule,
    scaler, RNG, counters, losses.

    ``keep_code``: no training code was named now, so the revision recorded at the start stands."""
    plan, dist = r.plan, r.dist
    ck = read_checkpoint(r.repo, resume["checkpoint"])
    r.last_ckpt = ck.id
    r.run_id = str(ck.meta.get("run_id", r.run_id))
    if keep_code and ck.meta.get("code") is not None:
        r.code = ck.meta["code"]
    if ck.state is None:
        raise CorruptObject(f"checkpoint {ck.id[:12]} of run {plan.run} has no trainer state; "
                            f"abandon the run (`lin runs abandon {plan.run}`) and start again")
    if ck.model != r.base_tree:  # a step-0 checkpoint names the base itself: already loaded
        load_weights(r.repo.objects, ck.model, r.model)
    parts = load_state(r.repo.objects, ck.state)
    tr = parts["trainer"]
    if tr.get("param_names") != r.names:
        raise CorruptObject(f"checkpoint {ck.id[:12]}: its optimizer state is for other parameters "
                            "(different --freeze or model)")
    if int(tr.get("units", len(r.blocks))) != len(r.blocks):
        raise CorruptObject(f"checkpoint {ck.id[:12]}: run {plan.run} trains {tr['units']} units, its data now "
                            f"makes {len(r.blocks)}", hint=f"abandon the run (`lin runs abandon {plan.run}`)")
    # the run's end and schedule clock; on another number of processes, steps of another size
    r.end, sched = resumed_course(tr, len(r.blocks), r.s.batch_size * r.s.grad_accum, r.per_step, r.total)
    r.schedule.total, r.schedule.per_step, r.schedule.segments = sched.total, sched.per_step, sched.segments
    if "optimizer" in parts:
        r.optimizer.load_state_dict(parts["optimizer"])
    if "scheduler" in parts:
        r.scheduler.load_state_dict(parts["scheduler"])
    if r.scaler is not None and parts.get("scaler"):
        r.scaler.load_state_dict(parts["scaler"])
    ranks = parts["rng"]["ranks"]
    set_rng_state(ranks[dist.rank] if dist.rank < len(ranks) else ranks[0], r.device)
    r.st = Counters(step=int(tr["step"]), epoch=int(tr["epoch"]), position=int(tr["position"]),
                  tokens=int(tr["tokens"]), targets=int(tr["targets"]), wall_time_s=float(tr["wall_time_s"]),
                  sessions=int(tr.get("sessions", 1)), checkpoints=int(tr.get("checkpoints", 0)))
    r.losses = [float(x) for x in parts["losses"]["loss"].tolist()] if "losses" in parts else []
    r.resumed_from = r.st.step
    r.series = SeriesWriter.resume(r.repo.objects, series_of_state(r.repo.objects, ck.state))
    r.total = r.st.step + steps_left(len(r.blocks), r.per_step, r.st.epoch, r.st.position, r.end)
    if int(tr.get("world_size", 1)) != dist.world:
        r.say(f"warning: run {plan.run} was trained on {tr.get('world_size')} process(es), now {dist.world}: it "
              f"continues from the data it consumed ({r.total - r.st.step} steps of {r.per_step} units left); "
              "the result will not be bit-identical")
    r.say(f"resuming run {plan.run} from step {r.st.step} (checkpoint {ck.id[:10]})")


def _start_session(r: Session) -> None:
    """Wrap the model for DDP, open the checkpoint store, start this session's clock."""
    if r.dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        r.ddp_model = DDP(r.model, device_ids=[r.device.index] if r.device.type == "cuda" else None)
    else:
        r.ddp_model = r.model
    r.env = environment()
    r.ckstore = checkpoint_store(r.repo)
    r.frozen_names = {n for n, p in r.model.named_parameters() if not p.requires_grad}
    r.session_start = time.monotonic()
    r.wall_before = r.st.wall_time_s
    r.steps_before, r.tokens_before = r.st.step, r.st.tokens


# ------------------------------------------------------------------------------ the steps


def _run_steps(r: Session) -> None:
    """Train to the last step; a failure is recorded on the run's last checkpoint, then raised."""
    plan = r.plan
    r.progress.start(f"training {plan.output or plan.name}", r.total, "steps")
    try:
        with StopFlag() as stop:
            _loop(r, stop)
    except TrainingInterrupted:
        raise
    except BaseException as e:
        if isinstance(e, (Exception,)):
            _record_failure(r, e)
            if isinstance(e, NoSpace):  # a checkpoint that could not be stored: the previous one stands
                e.hint = (f"the run keeps its last checkpoint; free some disk space (`lin gc` says what keeps it) "
                          f"and resume with `lin train --resume --run {plan.run}`")
            if isinstance(e, LinError):
                raise
            raise TrainingFailed(f"training failed at step {r.st.step}: {type(e).__name__}: {e}",
                                 hint=f"the run is recorded as failed; fix the cause and resume with "
                                      f"`lin train --resume --run {plan.run}`, or `lin runs abandon {plan.run}`") from e
        raise
    finally:
        r.progress.finish()


def _loop(r: Session, stop: StopFlag) -> None:
    """Optimizer steps in the epoch's order; a checkpoint every ``checkpoint_every`` and on a signal."""
    s, dist, blocks, st = r.s, r.dist, r.blocks, r.st
    order_epoch, order = -1, None  # the epoch's order of units, made when the epoch is reached
    trainable = [p for p in r.model.parameters() if p.requires_grad]
    if r.last_ckpt is None:
        _checkpoint(r, RUNNING)  # step 0: the run exists (and shows in `lin runs`) from now on
    r.progress.advance(st.step)
    t_last, tok_last = time.monotonic(), st.tokens
    while st.step < r.total:
        if D.any_flag(dist, stop.signal is not None, r.device):
            _checkpoint(r, INTERRUPTED)
            raise TrainingInterrupted(
                f"interrupted at step {st.step}/{r.total}; checkpoint saved in run {r.plan.run}",
                hint=f"continue with `lin train --resume --run {r.plan.run}` (or the same command again)")
        if order is None or order_epoch != st.epoch:
            order, order_epoch = epoch_order(len(blocks), s.seed, st.epoch), st.epoch
        chunk = order[st.position:min(st.position + r.per_step, limit(len(blocks), st.epoch, r.end))]
        n_tokens, n_targets = blocks.tokens_of(chunk)
        lr, t_step = float(r.optimizer.param_groups[0]["lr"]), time.monotonic()
        step_loss = _step(r, chunk, max(1, n_targets), trainable)
        r.losses.append(step_loss)
        st.tokens += n_tokens
        st.targets += n_targets
        st.position += len(chunk)
        if st.position >= len(blocks):
            st.epoch += 1
            st.position = 0
        st.step += 1
        now = time.monotonic()
        r.series.add(st.step, st.tokens, step_loss, lr, r.grad_norm, n_tokens / max(now - t_step, 1e-9),
                     r.wall_before + (now - r.session_start))
        rate = (st.tokens - tok_last) / max(now - t_last, 1e-9)
        r.progress.advance(1, **{"loss": f"{step_loss:.4f}", "tokens/s": round(rate)})
        kill_point("train-step")
        E.during(r)
        if st.step % s.checkpoint_every == 0 and st.step < r.total:
            _checkpoint(r, RUNNING)
            t_last, tok_last = time.monotonic(), st.tokens


def _step(r: Session, chunk, denom: int, trainable: list) -> float:
    """One optimizer step over ``chunk`` (all ranks' units), gradients accumulated; the step's mean loss."""
    import torch
    s, dist, optimizer, scaler = r.s, r.dist, r.optimizer, r.scaler
    local_sum = 0.0
    for k in range(s.grad_accum):
        a = (k * dist.world + dist.rank) * s.batch_size
        idx = chunk[a:a + s.batch_size]
        batch = r.blocks.batch(idx if len(idx) else chunk[:1], r.pad_id)
        if not len(idx):
            batch["labels"][:] = IGNORE  # keeps this rank in step with the others
        sync = (contextlib.nullcontext() if (not dist.enabled or k == s.grad_accum - 1)
                else r.ddp_model.no_sync())
        with sync:
            loss, ce = compute_loss(r.ddp_model, batch, r.device, r.precision, denom)
            loss = loss * dist.world  # DDP averages gradients over ranks
            (scaler.scale(loss) if scaler is not None else loss).backward()
        local_sum += float(ce.detach())
    if scaler is not None:
        scaler.unscale_(optimizer)
    # the norm is measured on every step for the series; an infinite bound scales by exactly 1
    clip = s.max_grad_norm if s.max_grad_norm and s.max_grad_norm > 0 else math.inf
    r.grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, clip))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    r.scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    step_loss = D.sum_floats(dist, [local_sum], r.device)[0] / denom
    if _NAN_AT is not None and r.st.step + 1 == _NAN_AT:  # the crash lab's injected failure
        step_loss = math.nan
    if not math.isfinite(step_loss):
        raise TrainingFailed(f"the loss became {step_loss} at step {r.st.step + 1}",
                             hint="lower the learning rate (--lr) and resume or start again")
    first = r.losses[0] if r.losses else step_loss
    if r.plan.loss_bound is not None and first > 0 and step_loss > r.plan.loss_bound * first:
        raise TrainingFailed(f"the loss grew to {step_loss:.4g} at step {r.st.step + 1}, over "
                             f"{r.plan.loss_bound:g} x the first step's {first:.4g}",
                             hint="lower the learning rate (--lr) and resume or start again")
    return step_loss


# ------------------------------------------------------------------------------ checkpoints


def _meta(r: Session, status: str, error: str | None = None) -> dict:
    """The checkpoint's meta: status, run, base, data, settings, where it trains."""
    plan, s, dist = r.plan, r.s, r.dist
    return {
        "status": status, "run_id": r.run_id, "base": plan.base, "base_name": plan.base_name,
        "datasets": list(plan.datasets), "output": plan.name,
        "data_paths": [{"path": d.path, "fingerprint": d.fingerprint, "dataset": d.dataset} for d in plan.data],
        "settings": s.to_dict(), "total_steps": r.total, "tokens_trained": r.st.tokens,
        "created": utc_now(), "pid": os.getpid(), "host": socket.gethostname(), "world_size": dist.world,
        "device": device_label(r.device, dist), "precision": r.precision, "allow_overlap": plan.allow_overlap,
        "code": r.code,
        **({"error": error} if error else {}),
    }


def _trainer_state(r: Session) -> dict:
    st = r.st
    st.wall_time_s = r.wall_before + (time.monotonic() - r.session_start)
    return {**asdict(st), "param_names": r.names, "world_size": r.dist.world, "total_steps": r.total,
            "units": len(r.blocks), "seed": r.s.seed, "end": list(r.end), "schedule": r.schedule.to_json()}


def _checkpoint(r: Session, status: str) -> None:
    """Every rank sends its RNG state; rank 0 stores weights and state, then moves the run ref."""
    import torch
    repo, plan, st = r.repo, r.plan, r.st
    ranks = D.gather_json(r.dist, rng_to_json(rng_state(r.device)), r.device)
    if r.dist.is_main:
        st.checkpoints += 1
        parts = {
            "optimizer": r.optimizer.state_dict(), "scheduler": r.scheduler.state_dict(),
            "rng": {"ranks": [rng_from_json(x) for x in ranks]}, "trainer": _trainer_state(r),
            "losses": {"loss": torch.tensor(r.losses, dtype=torch.float64)},
        }
        if r.scaler is not None:
            parts["scaler"] = r.scaler.state_dict()
        ckstore = r.ckstore
        assert ckstore is not None  # opened by _start_session
        with repo.writing():
            try:
                if st.step == 0:
                    model_tree = r.base_tree  # nothing trained yet: the weights are the base's
                else:
                    stored = store_model(ckstore, r.model, base_tree=r.base_tree, hf_format=False,
                                         tmp_dir=repo.tmp_dir if repo.path else None, known=r.frozen_ids)
                    model_tree = stored.tree
                    # frozen parameters never change in this process: not read again
                    r.frozen_ids.update({n: i for n, i in stored.tensor_ids.items() if n in r.frozen_names})
                series = r.series.store(ckstore)
                state_tree = save_state(ckstore, parts, entries=((SERIES_ENTRY, "tree", series, r.series.tree_size, False),))
                ckstore.flush()
            except BaseException:
                ckstore.discard()
                raise
            kill_point("train-checkpoint")
            r.last_ckpt = write_checkpoint(repo, plan.run, step=st.step, model=model_tree, state=state_tree,
                                           parent=r.last_ckpt, meta=_meta(r, status),
                                           message=f"checkpoint: step {st.step}/{r.total} ({status})")
        r.written += 1
        r.say(f"checkpoint at step {st.step}/{r.total} ({status}): {r.last_ckpt[:10]}")
        _report(announce(repo, PublishEvent("checkpoint", r.last_ckpt, plan.run)), r.say)
    D.barrier(r.dist)


def _record_failure(r: Session, err: BaseException) -> None:
    """Rank 0 marks the run failed: the last checkpoint again, with the error and the failed step."""
    if not r.dist.is_main:
        return
    repo, plan, st = r.repo, r.plan, r.st
    text = f"{type(err).__name__}: {err}"
    try:
        with repo.writing():
            if r.last_ckpt is not None:
                prev = read_checkpoint(repo, r.last_ckpt)
                m = {**prev.meta, **_meta(r, FAILED, text), "tokens_trained": prev.meta.get("tokens_trained", 0),
                     "failed_at_step": st.step}
                write_checkpoint(repo, plan.run, step=prev.step, model=prev.model, state=prev.state,
                                 parent=r.last_ckpt, meta=m, message=f"failed at step {st.step}: {text[:200]}")
    except LinError as e:  # the original error matters more
        r.say(f"warning: could not record the failure: {e}")


# ------------------------------------------------------------------------------ the new version


def _final_metrics(r: Session) -> tuple[dict, dict]:
    """(metrics, params) of the new version."""
    s, st, dist, plan = r.s, r.st, r.dist, r.plan
    st.wall_time_s = r.wall_before + (time.monotonic() - r.session_start)
    losses = r.losses
    intervals = [float(np.mean(losses[i:i + s.log_every])) for i in range(0, len(losses), s.log_every)]
    n = len(r.blocks)
    if len(r.schedule.segments) > 1:  # steps of several sizes: epochs are counted in units
        epochs = round(st.epoch + st.position / n, 4) if n else 0
    else:
        epochs = round(st.step / r.per_epoch, 4) if r.per_epoch else 0
    metrics = {
        "final_loss": losses[-1] if losses else None, "first_loss": losses[0] if losses else None,
        "loss_per_interval": intervals, "loss_interval_steps": s.log_every,
        "steps": st.step, "epochs": epochs,
        "tokens_trained": st.tokens, "target_tokens": st.targets,
        "wall_time_s": round(st.wall_time_s, 3),
        "tokens_per_s": round(st.tokens / st.wall_time_s, 2) if st.wall_time_s > 0 else None,
        "device": device_label(r.device, dist), "precision": r.precision, "world_size": dist.world,
        "model_params": tree_weight_summary(r.repo.objects, r.base_tree)["params"],
        "trainable_params": r.trainable_params, "sessions": st.sessions, "checkpoints": st.checkpoints,
        "device_hours": compute_record(device_kind(r.device), dist.world, st.wall_time_s)["device_hours"],
        **E.final(r),
    }
    params = {**s.to_dict(), "optimizer": "adamw", "allow_overlap": plan.allow_overlap,
              "data": [Path(d.path).name for d in plan.data]}
    params.pop("device", None)
    params.pop("gpus", None)
    params["world_size"] = dist.world
    return metrics, params


def _publish(r: Session, metrics: dict, params: dict, message: str) -> TrainResult:
    """Rank 0 commits the new version (the others wait); every rank returns the result.

    A branch that moved while the run trained is not moved sideways: the version is kept under
    its name and :class:`BranchMoved` is raised once every rank is past the barrier."""
    repo, plan, st, dist = r.repo, r.plan, r.st, r.dist
    result = TrainResult(id="", name=plan.output or plan.name, base=r.base, base_name=plan.base_name or "",
                         run=plan.run, steps=st.step, tokens_trained=st.tokens, final_loss=metrics["final_loss"],
                         metrics=metrics, params=params, datasets=list(plan.datasets), resumed_from=r.resumed_from,
                         checkpoints=0, new_bytes=0, losses=r.losses, session_steps=st.step - r.steps_before,
                         session_tokens=st.tokens - r.tokens_before,
                         session_s=round(time.monotonic() - r.session_start, 3))
    moved: BranchMoved | None = None
    if dist.is_main:
        try:
            pub = _commit(r, metrics, params, message)
        except BranchMoved as e:
            pub, moved = e.published, e
        r.say(f"committed {pub.name} ({pub.id[:10]})")
        E.note_published(r, pub.id, pub.name)
        _report(pub.after, r.say)
        if repo.path is not None:
            shutil.rmtree(train_cache(repo) / f"base-{r.base_tree[:24]}", ignore_errors=True)
        result.id, result.name, result.datasets = pub.id, pub.name, list(pub.datasets)
        result.checkpoints, result.new_bytes = r.written, pub.new_bytes
    D.barrier(dist)
    if moved is not None:
        raise moved
    return result


def _commit(r: Session, metrics: dict, params: dict, message: str):
    """Store the final weights and the parts of the data consumed; publish the version."""
    repo, plan, st = r.repo, r.plan, r.st
    model, base_tree, save_dtype = r.model, r.base_tree, r.save_dtype
    parts = recorded_parts(repo, plan.base, plan.data, r.blocks, r.s.seed, st.epoch, st.position)

    def content(batch: ObjectStore) -> str:
        for part in parts:
            part.store_into(batch)
        stored = store_model(batch, model, base_tree=base_tree, dtype=save_dtype,
                             tmp_dir=repo.tmp_dir if repo.path else None)
        kill_point("train-commit")
        return stored.tree

    last = r.last_ckpt
    series = store_final(repo, r.series)
    compute = compute_record(device_kind(r.device), r.dist.world, st.wall_time_s)
    return publish(repo, content, name=plan.name, kind="train", parents=[r.base], datasets=[p.id for p in parts],
                   metrics=metrics, params=params, code=r.code, env=r.env, message=message,
                   extra={"run": plan.run, "run_id": r.run_id, "checkpoint": last, "series": series, "compute": compute,
                          **E.duplicates_avoided(plan),
                          **({"allow_overlap": True, "overlap": plan.overlap} if plan.allow_overlap else {})},
                   retire={run_ref(plan.run): last} if last is not None else None, expect_head=r.expect_head,
                   branch=plan.branch)


def _report(outcomes: dict, say: Callable[[str], None]) -> None:
    """Warn of after-publish hooks that failed (a failed backup never stops training)."""
    for name, out in outcomes.items():
        if not out.ok:
            say(f"warning: {failure_text(name, out)}" + ("; `lin backup` retries" if name == "backup" else ""))
