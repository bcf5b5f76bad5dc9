"""The loop of ``lin run``: plan, train, publish, mark done, next (docs/continuous.md).

State lives in the store only: the queue (each item's status, attempts and reason), the run of
the batch in training (``refs/runs/queue-<branch>-<first item>``, its checkpoints) and the
versions. A runner killed anywhere finds on restart the items it marked ``running``: if their
version was published (the branch's recent history names their run) they are marked done,
otherwise the same batch is planned again and the plan resumes its run from the last checkpoint.
The run's settings and its data decide every step of training, so the versions, their data and
(on the CPU) their weights are those of a runner that was never stopped.

Write order per batch: mark the items ``running`` (queue update), train (checkpoints), publish
(the version, its tag and the branch; the run's ref retired in the same step; then the
after-publish hooks: the backup), mark the items ``done`` (queue update). A batch found
published on restart has its after-publish hooks run again before it is marked done: a runner
killed in the backup left the version unpushed, and nothing else would push it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import queue as Q
from ..core.errors import (
    Conflict,
    InvalidInput,
    LinError,
    LockTimeout,
    NoSpace,
    NotFound,
    QueuePaused,
    Refused,
)
from ..core.fsutil import kill_point
from ..core.progress import NULL, Progress
from ..core.publish import announce, failure_text
from ..core.repo import PublishEvent, Repo
from ..guard.repack import start_background
from ..train import runs as R
from ..train.plan import Plan, make_plan
from ..train.settings import TrainSettings
from ..train.trainer import TrainingInterrupted
from .batch import dataset_of, file_of, pick, run_name, version_slug
from .decide import decide
from .inbox import Inbox
from .lock import hold_branch

#: a pause reason the runner set (a machine or store check failed), which the next `lin run`, or
#: with --inbox the same one after ``run.paused_recheck_s``, tries again; a pause set by
#: `lin queue pause` waits for `lin queue resume`
RUNNER_PAUSE = "lin run: "
#: how far back from the branch's tip a published batch is looked for after a crash
_PUBLISHED_DEPTH = 64


@dataclass(frozen=True)
class RunOptions:
    """What ``lin run`` was asked: the branch, the training settings, batching, limits, inbox."""

    settings: TrainSettings = field(default_factory=TrainSettings)
    branch: str | None = None  # None: HEAD's branch
    files_per_version: int = 1
    tokens_per_version: int | None = None
    max_files: int | None = None  # files trained by this runner, then stop
    until_tokens: int | None = None  # tokens trained by this runner, then stop
    retries: int | None = None  # None: run.retries of the config
    inbox: Path | None = None
    code_path: Path | None = None
    message: str = ""


@dataclass
class Trained:
    version: str
    id: str
    items: list[str]
    files: list[str]
    tokens: int
    steps: int
    final_loss: float | None
    resumed_from: int | None = None


@dataclass
class Parked:
    item: str
    file: str
    reason: str


@dataclass
class RunReport:
    branch: str
    trained: list[Trained] = field(default_factory=list)
    parked: list[Parked] = field(default_factory=list)
    retried: int = 0
    stopped: str = "empty"  # empty | max-files | until-tokens | stopped (a signal between files)

    @property
    def tokens(self) -> int:
        return sum(t.tokens for t in self.trained)

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens": self.tokens}


def run(repo: Repo, opts: RunOptions, *, progress: Progress = NULL, log: Callable[[str], None] | None = None,
        stop: Callable[[], bool] | None = None, sleep: Callable[[float], None] = time.sleep) -> RunReport:
    """Train the branch's queue until it is empty (or a limit is reached); with an inbox, until
    ``stop()``. ``repo`` should be an :class:`lineagestore.api.Repo`, whose after-publish hooks
    back each version up. Raises :class:`QueuePaused` (exit 12) when the queue is paused,
    :class:`TrainingInterrupted` (exit 130) when a signal stopped training."""
    branch = _branch(repo, opts.branch)
    lock = hold_branch(repo, branch)
    runner = _Runner(repo, opts, branch, progress, log or (lambda _m: None), stop or (lambda: False), sleep)
    try:
        return runner.loop()
    except LinError as e:
        e.report = runner.report  # type: ignore[attr-defined]  # what was trained before it stopped
        raise
    finally:
        if lock is not None:
            lock.release()


def _branch(repo: Repo, name: str | None) -> str:
    if name is None:
        ref = repo.head_branch()
        if ref is None:
            raise InvalidInput("HEAD is detached: name the branch whose queue to train with --branch")
        name = ref.removeprefix("refs/heads/")
    if repo.refs.resolve(f"refs/heads/{name}") is None:
        raise NotFound(f"no branch named {name!r}", hint="see `lin branch`; start one with `lin branch NAME REV`")
    return name


class _Runner:
    def __init__(self, repo: Repo, opts: RunOptions, branch: str, progress: Progress, say: Callable[[str], None],
                 stop: Callable[[], bool], sleep: Callable[[float], None]):
        self.repo, self.opts, self.branch = repo, opts, branch
        self.ref = f"refs/heads/{branch}"
        self.progress, self.say, self.stop, self.sleep = progress, say, stop, sleep
        cfg = repo.settings.run
        self.cfg = cfg
        self.retries = cfg.retries if opts.retries is None else opts.retries
        self.report = RunReport(branch)
        self.files_done = 0
        if opts.inbox is not None and (held_by := repo.store_holding(opts.inbox)) is not None:
            raise InvalidInput(f"{opts.inbox}: is inside the store {held_by}; an inbox is a folder outside it",
                               hint="drop data files into a folder of their own, e.g. --inbox inbox/")
        self.inbox = Inbox(opts.inbox, cfg.inbox_settle_s) if opts.inbox is not None else None
        self.paused_at: float | None = None  # when this runner last found the queue paused (--inbox)

    # ------------------------------------------------------------------ the loop

    def loop(self) -> RunReport:
        while True:
            if self.stop():
                self.report.stopped = "stopped"
                break
            if self._limit_reached():
                break
            self._take_inbox()
            q = Q.load(self.repo, self.branch)
            if q.paused is not None:
                if self._paused(q.paused):
                    continue
                self._wait()
                continue
            batch = pick(q.items, files=self.opts.files_per_version, tokens=self.opts.tokens_per_version,
                         max_files=None if self.opts.max_files is None else self.opts.max_files - self.files_done)
            if not batch:
                if self.inbox is None:
                    self.report.stopped = "empty"
                    break
                self._wait()
                continue
            self._batch(batch)
        return self.report

    def _limit_reached(self) -> bool:
        if self.opts.max_files is not None and self.files_done >= self.opts.max_files:
            self.report.stopped = "max-files"
            return True
        if self.opts.until_tokens is not None and self.report.tokens >= self.opts.until_tokens:
            self.report.stopped = "until-tokens"
            return True
        return False

    def _paused(self, reason: str) -> bool:
        """A paused queue: True when this runner resumed it to try again. Without an inbox a pause
        stops the loop (QueuePaused), except one the runner set, which a new `lin run` tries again."""
        mine = reason.startswith(RUNNER_PAUSE)
        if self.inbox is None:
            if mine and self.paused_at is None:
                self.paused_at = time.monotonic()  # once: a new runner tries again, then stops
                self._update(lambda q: dataclasses.replace(q, paused=None), "lin run: trying again after a pause",
                             {"kind": "resumed", "reason": reason})
                return True
            raise QueuePaused(f"the queue of {self.branch} is paused: {reason.removeprefix(RUNNER_PAUSE)}",
                              hint="fix the cause, then `lin queue resume` (or `lin run` again, when lin run paused it)")
        now = time.monotonic()
        if self.paused_at is None:
            self.paused_at = now
            self.say(f"the queue is paused: {reason}; waiting")
        if mine and now - self.paused_at >= self.cfg.paused_recheck_s:
            self.paused_at = None
            self._update(lambda q: dataclasses.replace(q, paused=None), "lin run: re-checking after a pause",
                         {"kind": "resumed", "reason": reason})
            return True
        return False

    def _wait(self) -> None:
        """Nothing to train now (--inbox): look again after the poll interval."""
        self.sleep(self.cfg.inbox_poll_s)

    def _take_inbox(self) -> None:
        if self.inbox is None:
            return
        ready = self.inbox.ready()
        if not ready:
            return
        res = Q.add_files(self.repo, self.branch, [str(p) for p in ready])
        for p in ready:
            self.inbox.taken(p)
        for item in res.added:
            self.say(f"queued {item.name} ({item.id}) from the inbox")
        for path, why in res.skipped:
            self.say(f"not queued: {path}: {why}")

    # ------------------------------------------------------------------ one batch

    def _batch(self, batch: list[Any]) -> None:
        run = run_name(self.branch, batch[0])
        published = self._published(run)
        if published is not None:  # the last runner stopped between publishing and marking done
            # its after-publish hooks may not have run (a kill in the backup): they run again
            for hook, outcome in announce(self.repo, PublishEvent("version", published[1], published[0],
                                                                  self.progress)).items():
                if not getattr(outcome, "ok", True):
                    self.say(f"warning: {failure_text(hook, outcome)}")
            self._done(batch, published[0], published[1], None)
            return
        if any(i.status != "running" for i in batch):
            ids = [i.id for i in batch]
            self._update(lambda q: _replace_items(q, set(ids), status="running", reason=None),
                         f"lin run: training {', '.join(ids)}", {"kind": "started", "item": ids[0], "items": ids})
        paths = [file_of(self.repo, i) for i in batch]
        fingerprints = [i.fingerprint or self._fingerprint(i) for i in batch]
        try:
            plan = make_plan(self.repo, data=list[Any](paths), name=version_slug(batch), base=self.ref,
                             settings=self.opts.settings, register=False, run=run, measure=False,
                             progress=self.progress)
        except (LockTimeout, QueuePaused):
            raise
        except InvalidInput as e:  # the files themselves (a name, a record) cannot be planned
            self._park(batch, f"planning refused the data: {e}", run)
            return
        except LinError as e:  # the store or the machine: every next file would meet it too
            self._pause(batch, f"planning failed: {e}")
            return
        plan.branch, plan.loss_bound = self.ref, self.cfg.max_loss_ratio
        if self.stop():  # a signal while planning: the batch stays running, the next `lin run` takes it
            return
        d = decide(plan, batch, paths, fingerprints)
        if d.pause is not None:
            self._pause(batch, d.pause)
            return
        if d.park or not plan.ok:
            self._park_some(batch, d.park, run)
            return
        self._train(batch, plan, run)

    def _train(self, batch: list[Any], plan: Plan, run: str) -> None:
        self.say(f"training {plan.output} on {len(batch)} file(s) from {self.branch}"
                 + (f" (resuming run {run} at step {plan.resume['step']})" if plan.resume else ""))
        try:
            result = self._train_once(plan)
        except TrainingInterrupted as e:
            ids = {i.id for i in batch}
            self._update(lambda q: _replace_items(q, ids, reason="interrupted; `lin run` resumes it from its checkpoint"),
                         f"lin run: interrupted {batch[0].id}", {"kind": "interrupted", "item": batch[0].id,
                                                                 "reason": str(e)})
            raise TrainingInterrupted(str(e), hint="`lin run` (the same command again) resumes it") from None
        except NoSpace as e:
            self._pause(batch, f"no space left on device while training: {e}")
            return
        except (LockTimeout, QueuePaused):
            raise
        except (Conflict, Refused) as e:  # the branch moved meanwhile, or the run is held elsewhere
            self._pause(batch, f"{type(e).__name__}: {e}")
            return
        except InvalidInput as e:  # the data itself (a record that cannot be tokenized)
            self._park(batch, f"training refused the data: {e}", run)
            return
        except Exception as e:  # noqa: BLE001 - NaN, a loss out of bounds, a crashed step: retried, then parked
            self._failed(batch, e, run)
            return
        self._done(batch, result["name"], result["id"], result)
        start_background(self.repo)  # what became cold goes into packs (stores with packs only)

    def _train_once(self, plan: Plan) -> dict:
        """Train in this process (or on ``gpus`` processes); the new version's name, id and counts."""
        if plan.world_size > 1:
            return self._train_processes(plan)
        from ..train.trainer import train
        res = train(self.repo, plan, progress=self.progress, log=self.say, code_path=self.opts.code_path,
                    message=self._message(plan))
        return {"name": res.name, "id": res.id, "tokens": res.tokens_trained, "steps": res.steps,
                "final_loss": res.final_loss, "resumed_from": res.resumed_from}

    def _train_processes(self, plan: Plan) -> dict:
        from ..train.trainer import TrainingFailed
        from .launch import train_processes
        code = train_processes(self.repo, plan, self._message(plan))
        if code == 130:
            raise TrainingInterrupted(f"interrupted; checkpoint saved in run {plan.run}",
                                      hint="continue with `lin run` (the same command again)")
        found = self._published(plan.run)
        if code == 0 and found is not None:
            c = self.repo.commit(found[1])
            return {"name": found[0], "id": found[1], "tokens": int(c.metrics.get("tokens_trained", 0)),
                    "steps": int(c.metrics.get("steps", 0)), "final_loss": c.metrics.get("final_loss"),
                    "resumed_from": None}
        if code == NoSpace.exit_code:
            raise NoSpace(f"training processes of run {plan.run} ran out of disk space")
        error = None
        try:
            error = R.info(self.repo, plan.run).error
        except NotFound:
            pass
        raise TrainingFailed(error or f"the training processes of run {plan.run} exited with {code}")

    def _message(self, plan: Plan) -> str:
        files = ", ".join(Path(d.path).name for d in plan.data)
        return self.opts.message or f"lin run: queue {self.branch}: {files}"

    # ------------------------------------------------------------------ outcomes

    def _done(self, batch: list[Any], name: str, cid: str, result: dict | None) -> None:
        ids = {i.id for i in batch}
        kill_point("run-queue-done")
        self._update(lambda q: _replace_items(q, ids, status="done", version=name, reason=None),
                     f"lin run: trained {name}", {"kind": "trained", "item": batch[0].id, "items": sorted(ids),
                                                  "version": name})
        if result is None:  # published by the runner that stopped: counted from the commit
            m = self.repo.commit(cid).metrics
            result = {"tokens": int(m.get("tokens_trained", 0)), "steps": int(m.get("steps", 0)),
                      "final_loss": m.get("final_loss"), "resumed_from": None}
        self.files_done += len(batch)
        self.report.trained.append(Trained(name, cid, [i.id for i in batch], [i.name for i in batch],
                                           result["tokens"], result["steps"], result["final_loss"],
                                           result["resumed_from"]))
        self.say(f"trained {name} ({cid[:10]}) from {len(batch)} file(s)")

    def _failed(self, batch: list[Any], err: BaseException, run: str) -> None:
        text = str(err) if isinstance(err, LinError) else f"{type(err).__name__}: {err}"
        attempts = max(int(i.attempts or 0) for i in batch) + 1
        if attempts > self.retries:
            self._park(batch, f"training failed {attempts} time(s): {text}", run)
            return
        ids = {i.id for i in batch}
        self.report.retried += 1
        kill_point("run-queue-retry")
        self._update(lambda q: _replace_items(q, ids, attempts=attempts, reason=f"retrying: {text}"),
                     f"lin run: retrying {batch[0].id} ({attempts}/{self.retries})",
                     {"kind": "retried", "item": batch[0].id, "reason": text, "attempt": attempts})
        self.say(f"training failed ({text}); retry {attempts} of {self.retries} from the last checkpoint")

    def _park_some(self, batch: list[Any], reasons: dict[str, str], run: str) -> None:
        """Park the files the plan blamed; the rest of the batch goes back to the queue."""
        for item in batch:
            if item.id in reasons:
                self._park([item], reasons[item.id], None)
        rest = {i.id for i in batch if i.id not in reasons}
        if rest:
            self._update(lambda q: _replace_items(q, rest, status="queued"), "lin run: back to the queue",
                         {"kind": "requeued", "item": min(rest), "items": sorted(rest)})
        self._abandon(run, "a file of it was parked")

    def _park(self, batch: list[Any], reason: str, run: str | None) -> None:
        ids = {i.id for i in batch}
        kill_point("run-queue-park")
        self._update(lambda q: _replace_items(q, ids, status="parked", reason=reason),
                     f"lin run: parked {', '.join(sorted(ids))}", {"kind": "parked", "item": batch[0].id,
                                                                   "items": sorted(ids), "reason": reason})
        if run is not None:
            self._abandon(run, f"parked: {reason}")
        for item in batch:
            self.report.parked.append(Parked(item.id, item.name, reason))
            self.say(f"parked {item.name} ({item.id}): {reason}")

    def _pause(self, batch: list[Any], reason: str) -> None:
        """A machine or store problem: the items go back to the queue, and the queue pauses."""
        ids = {i.id for i in batch}
        full = RUNNER_PAUSE + reason

        def change(q: Any) -> Any:
            return dataclasses.replace(_replace_items(q, ids, status="queued"), paused=full)
        self._update(change, f"lin run: paused: {reason}", {"kind": "paused", "item": batch[0].id, "reason": reason})
        self.say(f"paused the queue: {reason}")
        if self.inbox is None:
            raise QueuePaused(f"the queue of {self.branch} is paused: {reason}",
                              hint="fix the cause, then `lin run` again (or `lin queue resume`)")
        self.paused_at = time.monotonic()

    def _abandon(self, run: str, reason: str) -> None:
        """Give up the run of a parked batch, so that check 6 does not block the next file."""
        try:
            R.abandon(self.repo, run, reason=reason)
        except NotFound:
            pass

    # ------------------------------------------------------------------ the store

    def _published(self, run: str) -> tuple[str, str] | None:
        """(name, id) of the version of ``run`` among the branch's recent versions, if published."""
        cid = self.repo.refs.resolve(self.ref)
        for _ in range(_PUBLISHED_DEPTH):
            if cid is None:
                return None
            c = self.repo.commit(cid)
            if (c.extra or {}).get("run") == run:
                return c.name, cid
            cid = c.parents[0] if c.parents else None
        return None

    def _fingerprint(self, item: Any) -> str | None:
        try:
            return dataset_of(self.repo, item).content
        except LinError:
            return None

    def _update(self, change: Callable[[Any], Any], message: str, event: dict | None) -> None:
        kill_point("run-queue")
        Q.update(self.repo, self.branch, change, message, event)


def _replace_items(q: Any, ids: set[str], **changes: Any) -> Any:
    for item in q.items:
        if item.id in ids:
            q = q.with_item(dataclasses.replace(item, **changes))
    return q
