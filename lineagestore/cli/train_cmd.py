"""Commands for training: plan, train, runs (list, show, abandon), progress."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer

from ..core.environment import read_env
from ..core.errors import Refused
from .common import JSON_OPT, STATE, out, short
from .output import human_bytes, human_int


def register(app: typer.Typer) -> None:
    app.command(name="plan")(plan)
    app.command(name="train")(train)
    app.add_typer(runs_app, name="runs")
    app.command(name="progress")(progress)


# ------------------------------------------------------------------------------ shared options

#: (setting name, flag, type, help) of the training settings every planning command accepts
SETTING_FLAGS = [
    ("lr", "--lr", float, "Learning rate (default 2e-5)."),
    ("epochs", "--epochs", int, "Passes over the data (default 1)."),
    ("batch_size", "--batch-size", int, "Units per micro-batch per process (default 8)."),
    ("seq_len", "--seq-len", int, "Tokens per unit (default 512)."),
    ("grad_accum", "--grad-accum", int, "Micro-batches per optimizer step (default 1)."),
    ("precision", "--precision", str, "auto | fp32 | bf16 | fp16 (auto: bf16 on a GPU that supports it)."),
    ("seed", "--seed", int, "Seed of the data order and initial RNG state (default 0)."),
    ("max_steps", "--max-steps", int, "Stop after this many optimizer steps."),
    ("checkpoint_every", "--checkpoint-every", int, "Checkpoint into the store every N steps (default 500)."),
    ("warmup_steps", "--warmup-steps", int, "Linear learning-rate warm-up steps (default 0)."),
    ("weight_decay", "--weight-decay", float, "AdamW weight decay of matrices (default 0)."),
    ("scheduler", "--scheduler", str, "linear | cosine | constant (default linear)."),
    ("max_grad_norm", "--max-grad-norm", float, "Gradient clipping norm; 0 disables (default 1)."),
    ("log_every", "--log-every", int, "Steps per recorded loss interval (default 10)."),
    ("eval_every", "--eval-every", int, "Evaluate on the evaluation set every N steps (default 0: at the end only)."),
    ("device", "--device", str, "auto | cpu | cuda (auto needs a GPU; --device cpu trains on the CPU)."),
    ("gpus", "--gpus", int, "Processes (GPUs) to train on with DDP via torchrun (default 1)."),
]


def _with_training_options(fn):
    """Add the job and training-setting options to a command (they arrive in ``**opts``)."""
    P = inspect.Parameter
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind != P.VAR_KEYWORD]
    extra = [
        P("data", P.KEYWORD_ONLY, annotation=list[Path],
          default=typer.Option([], "--data", "-d", metavar="FILE", help="A JSONL data file (repeatable).")),
        P("output", P.KEYWORD_ONLY, annotation=str | None,
          default=typer.Option(None, "--output", "--name", "-n", help="Name of the new version (becomes vNNN_NAME).")),
        P("base", P.KEYWORD_ONLY, annotation=str | None,
          default=typer.Option(None, "--base", "-b", help="Base version (default: the active version, HEAD).")),
        P("allow_overlap", P.KEYWORD_ONLY, annotation=bool,
          default=typer.Option(False, "--allow-overlap", help="Train even on data already trained in this lineage "
                                                              "(recorded in the version).")),
        P("no_register", P.KEYWORD_ONLY, annotation=bool,
          default=typer.Option(False, "--no-register", help="Refuse unregistered data instead of registering it.")),
        P("resume", P.KEYWORD_ONLY, annotation=bool,
          default=typer.Option(False, "--resume", help="Continue an unfinished run from its last checkpoint.")),
        P("run", P.KEYWORD_ONLY, annotation=str | None,
          default=typer.Option(None, "--run", help="Run name (default: the output name).")),
        P("measure", P.KEYWORD_ONLY, annotation=bool,
          default=typer.Option(True, "--measure/--no-measure",
                               help="Time two passes for the estimate when no earlier run tells.")),
    ]
    fn.__signature__ = inspect.signature(fn).replace(parameters=[*params, *extra, *setting_params()])
    return fn


def setting_params() -> list[inspect.Parameter]:
    """The options of the training settings, as `lin train` and `lin run` both take them:
    --config, --freeze, --packing, --deterministic and every flag of SETTING_FLAGS."""
    P = inspect.Parameter
    params = [
        P("config", P.KEYWORD_ONLY, annotation=Path | None,
          default=typer.Option(None, "--config", "-c", help="TOML or JSON file of settings (flags win).")),
        P("freeze", P.KEYWORD_ONLY, annotation=list[str],
          default=typer.Option([], "--freeze", metavar="PATTERN",
                               help="Do not train parameters matching this pattern (repeatable).")),
        P("packing", P.KEYWORD_ONLY, annotation=bool | None,
          default=typer.Option(None, "--packing/--no-packing", help="Pack examples into full blocks (default on).")),
        P("deterministic", P.KEYWORD_ONLY, annotation=bool | None,
          default=typer.Option(None, "--deterministic/--no-deterministic",
                               help="Deterministic kernels (default: on for the CPU, off on a GPU).")),
    ]
    for key, flag, typ, help_ in SETTING_FLAGS:
        params.append(P(key, P.KEYWORD_ONLY, annotation=typ | None, default=typer.Option(None, flag, help=help_)))
    return params


def settings_and_job(repo, opts: dict):
    from ..train.settings import TrainSettings, load_config_file
    file_settings: dict[str, Any] = {}
    job: dict[str, Any] = {}
    if opts.get("config"):
        file_settings, job = load_config_file(Path(opts["config"]))
    store_defaults = repo.settings.train.defaults
    flags = {key: opts.get(key) for key, *_ in SETTING_FLAGS}
    flags["freeze"] = list(opts.get("freeze") or []) or None
    flags["packing"] = opts.get("packing")
    flags["deterministic"] = opts.get("deterministic")
    settings = TrainSettings.build(store_defaults, file_settings, flags)
    data = [Path(p) for p in (opts.get("data") or [])] or [Path(p) for p in _as_list(job.get("data"))]
    name = opts.get("output") or job.get("output") or job.get("name")
    base = opts.get("base") or job.get("base")
    run = opts.get("run") or job.get("run")
    allow = bool(opts.get("allow_overlap") or job.get("allow_overlap"))
    return settings, data, name, base, run, allow, job


#: the settings flags and their reading, shared with `lin run` (cli/run_cmd.py), which takes them as `lin train` does


def _as_list(v) -> list:
    if v is None:
        return []
    return [v] if isinstance(v, str) else list(v)


def _make_plan(o, repo, opts: dict, *, measure: bool | None = None):
    from ..train.plan import make_plan
    settings, data, name, base, run, allow, _job = settings_and_job(repo, opts)
    # a resumed run trains where these flags say now (--gpus 1 included), else where it trained
    here = {k: opts[k] for k in ("device", "gpus") if opts.get(k) is not None}
    return make_plan(repo, data=data, name=name, base=base, settings=settings, allow_overlap=allow,
                     register=not opts.get("no_register"), resume=bool(opts.get("resume")), run=run,
                     measure=opts.get("measure", True) if measure is None else measure, here=here,
                     progress=o.progress())


# ------------------------------------------------------------------------------ printing a plan


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "unknown"
    if s < 90:
        return f"~{s:.0f} s"
    if s < 5400:
        return f"~{s / 60:.0f} min"
    if s < 172800:
        return f"~{s / 3600:.1f} h"
    if s < 2 * 365.25 * 86400:
        return f"~{s / 86400:.1f} days"
    return f"~{s / (365.25 * 86400):,.1f} years"


def _data_counts(d) -> str:
    """Examples and tokens as trained; the registry's count where it differs; the rest of a file."""
    from ..data.tokens import EOS_NOTE
    tok = f", {human_int(d.tokens)} tokens" if d.tokens is not None else ""
    if d.tokens is not None and not d.rest and d.registered_tokens not in (None, d.tokens):
        tok += f" (registered: {human_int(d.registered_tokens)}; {EOS_NOTE})"
    ex = f"{human_int(d.examples)} examples" if d.examples is not None else "? examples"
    rest = "the rest: " if d.rest else ""
    after = (f"  ({human_int(d.trained_before)} of {human_int(d.records)} records trained before)" if d.rest else "")
    return f"{rest}{ex}{tok}{after}" + ("  (registered now)" if d.registered_now else "")


def print_plan(o, p) -> None:
    s = p.settings
    o.line("Training plan")
    if p.base:
        how = "explicit" if p.base_explicit else "active version"
        act = ", active" if (p.base_active and p.base_explicit) else ""
        o.line(f"  base     {p.base_name}  {short(p.base)}  ({how}{act})")
    else:
        o.line("  base     (none)")
    for d in p.data:
        if not d.exists:
            o.line(f"  data     {d.path}  (missing)")
            continue
        o.line(f"  data     {Path(d.path).name}  fingerprint {short(d.fingerprint, 12)}  {_data_counts(d)}")
    o.line(f"  output   {p.output or p.name}" + (f"   (run {p.run})" if p.run != p.name else ""))
    if p.resume:
        o.line(f"  resume   run {p.resume['run']} from step {p.resume['step']} ({p.resume['status']})")
    if p.steps is not None:
        left = (f", {human_int(p.tokens_left)} left" if p.resume and p.tokens_left is not None
                and p.tokens_left != p.tokens_total else "")
        o.line(f"  tokens   {human_int(p.tokens)} per epoch; {human_int(p.tokens_total)} to train{left} "
               f"({s['epochs']} epoch(s)" + (f", at most {s['max_steps']} steps" if s.get("max_steps") else "") + ")")
        o.line(f"  steps    {human_int(p.steps)}  (batch {s['batch_size']} x {s['seq_len']} tokens"
               f" x accum {s['grad_accum']}" + (f" x {p.world_size} processes" if p.world_size > 1 else "")
               + f"; checkpoint every {s['checkpoint_every']})")
    o.line(f"  time     {_fmt_s(p.estimate_s)}  ({p.estimate_source})")
    o.line("Pre-flight checks")
    for c in p.checks:
        mark = "✓" if c.ok else ("-" if c.skipped else "✗")
        extra = "  [overridden]" if c.overridden else ""
        o.line(f"  {mark} {c.number}. {c.title}: {c.reason}{extra}")
        for d in c.details:
            o.line(f"       {d}")
        if c.hint and not c.ok:
            o.line(f"       hint: {c.hint}")
    if p.ok:
        o.line(f"Ready: all {len(p.checks)} checks passed.")
    else:
        nums = ", ".join(str(c.number) for c in p.failed)
        skipped = ", ".join(str(c.number) for c in p.skipped)
        o.line(f"Not ready: {len(p.failed)} check(s) failed ({nums})"
               + (f"; not checked: {skipped}." if skipped else "."))


def _plan_exit(p, *, training: bool) -> int:
    if p.ok:
        return 0
    if training and any(c.key == "duplicates" for c in p.failed):
        return Refused.exit_code
    if training:  # data that cannot be read fails as its error does (a line over the limit: 4)
        return next((c.code for c in p.failed if c.code is not None), 1)
    return 1


# ------------------------------------------------------------------------------ plan


@_with_training_options
def plan(json_out: bool = JSON_OPT, **opts) -> None:
    """Pre-flight checks of a training run, each with its reason.

    Each check has a pass/fail mark and its reason; also the output name, tokens, steps and an
    estimated time. Exits 1 unless every check passes.
    """
    o = out(json_out)
    repo = STATE.repo()
    p = _make_plan(o, repo, opts)
    STATE.mutated = STATE.mutated or any(d.registered_now for d in p.data)
    if json_out:
        o.json(p.to_dict())
    else:
        print_plan(o, p)
    code = _plan_exit(p, training=False)
    if code:
        raise typer.Exit(code)


# ------------------------------------------------------------------------------ train


class LineProgress:
    """Training progress as a line on stderr every few seconds (when no bar can be drawn)."""

    def __init__(self, o, every_s: float = 10.0):
        self.o = o
        self.every_s = every_s
        self.desc, self.unit = "", ""
        self.total: float | None = None
        self.done = 0.0
        self.t0 = self.last = 0.0
        self.start_done = 0.0

    def start(self, description: str, total: float | None = None, unit: str = "B") -> None:
        self.desc, self.total, self.unit = description, total, unit
        self.done = self.start_done = 0.0
        self.t0 = time.monotonic()
        self.last = 0.0

    def advance(self, amount: float = 1, **fields) -> None:
        self.done += amount
        if self.unit != "steps":
            return
        if not fields:  # a resumed run jumps to its step
            self.start_done = self.done
            self.t0 = time.monotonic()
            return
        now = time.monotonic()
        if now - self.last < self.every_s and self.done != self.total:
            return
        self.last = now
        rate = (self.done - self.start_done) / max(now - self.t0, 1e-9)
        eta = f"  eta {(self.total - self.done) / rate:.0f}s" if self.total and rate > 0 else ""
        extra = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        self.o.info(f"{self.desc}: step {self.done:.0f}/{self.total or '?'}  {extra}{eta}")

    def finish(self) -> None:
        pass


def _progress_for(o):
    bar = o.progress()
    if bar.enabled or o.quiet or read_env("LIN_NO_PROGRESS"):
        return bar
    return LineProgress(o)


@_with_training_options
def train(
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before training (for scripts)."),
    message: str = typer.Option("", "--message", "-m", help="Message of the new version."),
    code: Path | None = typer.Option(None, "--code", help="The training code's git repository (default: here)."),
    json_out: bool = JSON_OPT,
    **opts,
) -> None:
    """Fine-tune the base on the data and commit the new version.

    Plans, asks, then trains with checkpoints in the store, and commits vNNN_NAME.

    Ctrl-C / SIGTERM stop after the current step with a checkpoint; `lin train --resume` (or the
    same command again) continues from the last checkpoint.
    """
    from ..train import distributed as D
    from ..train.trainer import train as run_training
    o = out(json_out)
    plan_file = read_env(D.PLAN_ENV)
    dist = D.from_env()
    if not plan_file and not yes and (dist.enabled or not _can_ask()):  # before anything is read or measured
        where = "one of several processes (torchrun)" if dist.enabled else "not a terminal"
        raise Refused(f"lin train asks before it trains, and this is {where}: nothing was planned or trained",
                      hint="pass --yes to train without asking (`lin plan` shows the plan first)")
    repo = STATE.repo()
    if plan_file:  # a rank of `lin train --gpus N`: it ends with the command that started it
        D.end_with_launcher(read_env(D.LAUNCHER_ENV))
    if opts.get("deterministic"):  # read by cuBLAS when CUDA starts, so before anything touches it
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    p = _accepted_plan(o, repo, opts, dist, plan_file, yes=yes, json_out=json_out)
    STATE.mutated = True
    try:
        res = run_training(repo, p, progress=_progress_for(o) if dist.is_main else _null(),
                           log=o.info if dist.is_main else None, code_path=code, message=message, dist=dist)
    finally:
        if dist.enabled:
            D.shutdown(dist)
    if not dist.is_main:
        return
    if json_out:
        o.json({"plan": p.to_dict(), "result": res.to_dict()})
        return
    _print_result(o, res)


def _accepted_plan(o, repo, opts: dict, dist, plan_file: str | None, *, yes: bool, json_out: bool):
    """The plan to train: the parent's (a rank of `lin train --gpus N`), rank 0's (started by
    torchrun directly), or one made here, printed and confirmed. A plan for several processes is
    trained by this command again under torchrun, and its exit code ends this one."""
    from ..train.plan import Plan
    if plan_file:  # a rank started by `lin train --gpus N`: the plan was accepted by the parent
        return Plan.from_dict(json.loads(Path(plan_file).read_text()))
    if dist.enabled:  # started by torchrun/accelerate directly: rank 0 plans for everyone
        return _plan_distributed(o, repo, opts, dist, json_out)
    p = _make_plan(o, repo, opts, measure=None)
    STATE.mutated = STATE.mutated or any(d.registered_now for d in p.data)
    if not json_out:
        print_plan(o, p)
    if not p.ok:
        if json_out:
            o.json({"plan": p.to_dict(), "result": None})
        raise typer.Exit(_plan_exit(p, training=True))
    if not yes and not o.confirm("Proceed?"):
        raise Refused("not confirmed; nothing was trained",
                      hint="answer yes, or pass --yes when running from a script")
    if p.world_size > 1:
        raise typer.Exit(_relaunch(o, repo, p))
    return p


def _print_result(o, res) -> None:
    """What a run trained: steps, tokens and speed, the loss from the first step to the last, bytes stored."""
    first = res.losses[0] if res.losses else None  # the first step's loss, then the last step's
    o.line(f"Trained {res.name}  {short(res.id)}  (parent {res.base_name})")
    m = res.metrics
    o.line(f"  run {res.run}: {m['steps']} steps, {human_int(m['tokens_trained'])} tokens in {m['wall_time_s']:.1f}s"
           f" ({m['tokens_per_s'] or 0:,.0f} tokens/s) on {m['device']}"
           + (f"; resumed from step {res.resumed_from}" if res.resumed_from is not None else ""))
    if res.resumed_from is not None and res.session_s > 0:
        o.line(f"  this session: {res.session_steps} steps, {human_int(res.session_tokens)} tokens in "
               f"{res.session_s:.1f}s ({res.session_tokens / res.session_s:,.0f} tokens/s)")
    if res.final_loss is not None:
        o.line(f"  loss {first:.4f} -> {res.final_loss:.4f}" if first is not None else f"  loss {res.final_loss:.4f}")
    o.line(f"  stored {human_bytes(res.new_bytes)} new; {res.checkpoints} checkpoint(s) this session")
    o.line(f"Active version: {res.name}")


def _can_ask() -> bool:
    """Whether a question can be asked and answered (stdin is a terminal), as ``Output.confirm`` asks."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _null():
    from ..core.progress import NULL
    return NULL


def _plan_distributed(o, repo, opts, dist, json_out: bool):
    from ..train import distributed as D
    from ..train.plan import Plan
    settings = settings_and_job(repo, opts)[0]
    device_type = "cuda" if settings.device != "cpu" else "cpu"
    D.init(dist, device_type)
    doc = None
    if dist.is_main:
        p = _make_plan(o, repo, {**opts, "gpus": dist.world}, measure=False)
        if not json_out:
            print_plan(o, p)
        doc = {"ok": p.ok, "plan": p.to_dict()}  # without --yes, train() refused already
    doc = D.broadcast_json(dist, doc, "cpu" if device_type == "cpu" else f"cuda:{dist.local_rank}")
    if not doc["ok"]:
        D.shutdown(dist)
        raise typer.Exit(1)
    return Plan.from_dict(doc["plan"])


def _relaunch(o, repo, p) -> int:
    """Run this command again under torchrun with the accepted plan; return its exit code."""
    from ..core.fsutil import atomic_write_bytes
    from ..train import distributed as D
    assert repo.path is not None
    plan_path = repo.tmp_dir / f"{os.getpid()}-train-plan.json"
    atomic_write_bytes(plan_path, json.dumps(p.to_dict()).encode(), repo.tmp_dir)
    argv = _strip_store(sys.argv[1:])
    cmd = D.relaunch_command(p.world_size, ["--store", str(repo.path), *argv, "--yes"])
    env = {**os.environ, D.PLAN_ENV: str(plan_path), D.LAUNCHER_ENV: str(os.getpid())}
    o.info(f"starting {p.world_size} processes: {' '.join(cmd[:6])} ...")
    try:
        return subprocess.call(cmd, env=env)
    finally:
        plan_path.unlink(missing_ok=True)


def _strip_store(argv: list[str]) -> list[str]:
    out_: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--store":
            skip = True
            continue
        if a.startswith("--store="):
            continue
        out_.append(a)
    return out_


# ------------------------------------------------------------------------------ runs

runs_app = typer.Typer(help="Unfinished training runs and their checkpoints.", no_args_is_help=False,
                       rich_markup_mode=None)


@runs_app.callback(invoke_without_command=True)
def runs(ctx: typer.Context, json_out: bool = JSON_OPT) -> None:
    """List unfinished runs (refs/runs/*): status, step, base, output, last checkpoint."""
    if ctx.invoked_subcommand is not None:
        return
    from ..train import runs as R
    o = out(json_out)
    repo = STATE.repo()
    rs = R.list_runs(repo)
    if json_out:
        o.json([r.to_dict() for r in rs])
        return
    if not rs:
        o.line("No unfinished runs.")
        return
    for r in rs:
        total = r.total_steps if r.total_steps is not None else "?"
        o.line(f"{r.name:<24} {r.status:<12} step {r.step}/{total:<8} base {r.base_name or short(r.base)}"
               f"  -> {r.output}  checkpoint {short(r.checkpoint)}  {r.updated}")
        if r.error:
            o.line(f"    error: {r.error}")
    o.info("Resume with `lin train --resume --run NAME`; give one up with `lin runs abandon NAME`.")


@runs_app.command("show")
def runs_show(run: str = typer.Argument(..., help="Run name."), json_out: bool = JSON_OPT) -> None:
    """A run's checkpoints, newest first."""
    from ..train import runs as R
    from ..train.checkpoint import history
    o = out(json_out)
    repo = STATE.repo()
    r = R.info(repo, run)
    hist = history(repo, r.checkpoint)
    if json_out:
        o.json({"run": r.to_dict(), "checkpoints": [h.__dict__ for h in hist]})
        return
    o.line(f"run {r.name}: {r.status}, step {r.step}/{r.total_steps}, base {r.base_name}, output {r.output}")
    for d in r.data_paths:
        o.line(f"  data {d.get('path')}  fingerprint {short(d.get('fingerprint'), 12)}")
    for h in hist:
        o.line(f"  {short(h.id)}  step {h.step:<8} {h.status:<12} {h.meta.get('created', '')}"
               + (f"  error: {h.meta['error']}" if h.meta.get("error") else ""))


@runs_app.command("abandon")
def runs_abandon(
    run: str = typer.Argument(..., help="Run name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    json_out: bool = JSON_OPT,
) -> None:
    """Give up an unfinished run; gc may later collect its checkpoints.

    Its ref goes (the reflog keeps it).
    """
    from ..train import runs as R
    o = out(json_out)
    repo = STATE.repo()
    r = R.info(repo, run)
    if not yes and not o.confirm(f"Abandon run {run} at step {r.step}/{r.total_steps}?"):
        raise Refused(f"not confirmed; run {run} is kept", hint="pass --yes to abandon without a prompt")
    r = R.abandon(repo, run)
    STATE.mutated = True
    if json_out:
        o.json(r.to_dict())
        return
    o.line(f"Abandoned run {run} (last checkpoint {short(r.checkpoint)} at step {r.step}).")


# ------------------------------------------------------------------------------ progress


def progress(
    rev: str = typer.Argument("HEAD", help="Version whose lineage counts (default: the active one)."),
    watch: bool = typer.Option(False, "--watch", help="Redraw in place every --interval seconds until Ctrl-C."),
    interval: float = typer.Option(2.0, "--interval", min=0.2, help="Seconds between redraws with --watch."),
    json_out: bool = JSON_OPT,
) -> None:
    """Tokens toward the goal, rate, ETA, queue, eval loss and compute.

    The goal is goal.tokens of the store's config. With --watch the figures are redrawn in place
    while `lin train` or `lin run` trains (runs in progress show their last checkpoint).
    """
    from ..analytics.journey import journey
    o = out(json_out)
    repo = STATE.repo()
    if json_out:
        o.json(journey(repo, rev).to_dict())
        return
    if not watch:
        for line in _progress_lines(journey(repo, rev)):
            o.line(line)
        return
    import time

    from rich.live import Live
    from rich.text import Text
    with Live(Text(""), console=o.out, auto_refresh=False, transient=False) as live:
        try:
            while True:
                live.update(Text("\n".join(_progress_lines(journey(repo, rev)))), refresh=True)
                time.sleep(interval)
        except KeyboardInterrupt:
            pass


def _progress_lines(j) -> list[str]:
    """What `lin progress` prints (and `--watch` redraws)."""
    g = j.goal
    lines = [f"Goal      {human_int(g.goal)} tokens",
             f"Trained   {human_int(g.trained)} tokens ({g.fraction:.6%}) in {g.versions} training version(s)"
             f" along {g.name}'s lineage",
             f"Remaining {human_int(g.remaining)} tokens"]
    if g.rate:
        lines.append(f"Rate      {g.rate:,.0f} tokens/s while training ({_fmt_s(g.wall_time_s)[1:]} of training)")
        lines.append(f"ETA       {_fmt_s(g.eta_s)[1:]} of continuous training at that rate")
    else:
        lines.append("Rate      unknown (no training with recorded time yet)")
    if g.calendar_rate:
        lines.append(f"Calendar  {g.calendar_rate * 86400:,.0f} tokens/day since {g.first} "
                     f"-> {_fmt_s(g.calendar_eta_s)[1:]} at that pace")
    if j.device_hours:
        lines.append(f"Compute   {j.device_hours:,.4g} device-hours, {j.tokens_per_device_hour:,.0f} tokens per device-hour")
    if j.eval_loss is not None:
        gain = (f"; {j.gain_per_device_hour:+.4g} per device-hour since {j.eval_first_name} ({j.eval_first:.4f})"
                if j.gain_per_device_hour is not None else "")
        lines.append(f"Eval loss {j.eval_loss:.4f} on {j.eval_set}{gain}")
    if j.queue is not None:
        q = j.queue
        paused = f"; paused: {j.queue_paused}" if j.queue_paused else ""
        lines.append(f"Queue     {j.queue_branch}: {q.get('queued', 0)} queued, {q.get('running', 0)} running, "
                     f"{q.get('parked', 0)} parked, {q.get('done', 0)} done{paused}")
    for r in j.runs:
        total = f"/{r['total_steps']}" if r["total_steps"] else ""
        lines.append(f"Run       {r['name']}: {r['status']} at step {r['step']}{total}, "
                     f"{human_int(r['tokens_trained'])} tokens (last checkpoint)")
    return lines
