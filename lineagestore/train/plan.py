"""The pre-flight plan of a training run: seven checks, the output name, tokens, steps, time.

:func:`make_plan` never trains. It registers data files that are not registered yet (unless
``register=False``), because a plan about unknown data could not answer "already trained?".
Every check runs even when an earlier one failed, so one plan shows every problem; a check that
cannot be answered (no base model, say) fails and says why. The plan is ``ok`` only when every
check passes (an overlap check overridden by ``allow_overlap`` passes, marked overridden).

The checks, in order: 1 data files, 2 base model, 3 duplicate training, 4 disk space,
5 device, 6 unfinished runs on the base, 7 store consistency (quick fsck); each is one
function ``_check_*`` returning its :class:`Check`. The estimates are in :mod:`.estimate`, what
the disk and device checks measure in :mod:`.resources`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..core.errors import InvalidInput, LinError, NotFound, RevisionNotFound
from ..core.names import check_name, slug_from_user, version_name
from ..core.progress import NULL, Progress
from ..core.repo import Repo
from ..versions.tokenizer import tree_tokenizer_id
from . import runs as _runs
from .checkpoint import load_state_json, read_checkpoint
from .course import end_position, steps_left
from .dataset import Blocks, load_data
from .estimate import estimate_time, tokens_between
from .job import Job, load_tokenizer, steps_for
from .modelio import tree_weight_summary
from .resources import device_status, disk_needs
from .settings import TrainSettings
from .trained import drop_trained

CHECK_TITLES = {
    "data": "data files exist and match their registered fingerprints",
    "base": "base model exists and verifies",
    "duplicates": "no duplicate training",
    "disk": "enough disk space",
    "device": "device available",
    "runs": "no unfinished run on this base",
    "store": "store is consistent (quick fsck)",
}
CHECK_ORDER = list(CHECK_TITLES)


@dataclass
class Check:
    key: str
    number: int
    title: str
    ok: bool
    reason: str
    details: list[str] = field(default_factory=list)
    hint: str | None = None
    overridden: bool = False
    skipped: bool = False  # could not run because what it checks is missing (an earlier check failed)
    code: int | None = None  # the exit code of the error that failed it (None: a failure of its own)


@dataclass
class DataItem:
    path: str
    exists: bool
    fingerprint: str | None = None
    dataset: str | None = None  # dataset object id
    registered_now: bool = False
    size: int | None = None
    examples: int | None = None
    tokens: int | None = None  # with the base model's tokenizer, as trained (EOS, chat template)
    targets: int | None = None  # tokens that get a loss
    skipped_lines: int = 0
    error: str | None = None  # why it could not be looked up or registered
    registered_tokens: int | None = None  # the registry's count with the base's tokenizer (the text alone)
    #: versions of the base's lineage trained part of this file: only its records not trained yet
    #: are trained (``examples``/``tokens`` count those)
    rest: bool = False
    trained_before: int = 0  # of its distinct records, those the lineage trained
    records: int | None = None  # its distinct records


@dataclass
class Plan:
    ok: bool
    checks: list[Check]
    name: str  # the name asked for (the slug)
    output: str  # the version name it will get (vNNN_slug) if nothing else is committed first
    run: str
    base: str | None
    base_name: str | None
    base_explicit: bool
    base_active: bool
    data: list[DataItem]
    datasets: list[str]
    settings: dict
    resume: dict | None = None  # {"checkpoint", "step", "status"} when continuing a run
    units: int | None = None  # training units (packed blocks or examples) per epoch
    tokens: int | None = None  # tokens per epoch
    tokens_total: int | None = None  # tokens the run will train on
    tokens_left: int | None = None  # of those, what is left to train (less than tokens_total when resuming)
    steps: int | None = None  # optimizer steps
    steps_per_epoch: int | None = None
    estimate_s: float | None = None
    estimate_source: str = "unknown"
    disk: dict = field(default_factory=dict)
    device: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)  # params, tensors, bytes, dtype of the base
    allow_overlap: bool = False
    overlap: list[dict] = field(default_factory=list)
    world_size: int = 1
    #: set by the caller (``lin run``): the branch (``refs/heads/<name>``) the version advances
    #: instead of HEAD's, and the bound of a step's loss as a multiple of the run's first (None: none)
    branch: str | None = None
    loss_bound: float | None = None
    _job: Any = field(default=None, repr=False, compare=False)

    @property
    def failed(self) -> list[Check]:
        """Checks that ran and failed (not those skipped for want of a base model or data)."""
        return [c for c in self.checks if not c.ok and not c.skipped]

    @property
    def skipped(self) -> list[Check]:
        return [c for c in self.checks if c.skipped]

    def check(self, key: str) -> Check:
        return next(c for c in self.checks if c.key == key)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        d = dict(d)
        d["checks"] = [Check(**c) for c in d.get("checks", [])]
        d["data"] = [DataItem(**x) for x in d.get("data", [])]
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names and not k.startswith("_")})


# ------------------------------------------------------------------------------ helpers


def default_run_name(name: str) -> str:
    """The run of ``--output NAME`` is called NAME (so the same command finds it again)."""
    from ..core.names import parse_version
    parsed = parse_version(name)
    return parsed[1] if parsed else name


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


# ------------------------------------------------------------------------------ the plan


def make_plan(repo: Repo, *, data: list[os.PathLike | str], name: str | None, base: str | None = None,
              settings: TrainSettings | None = None, allow_overlap: bool = False, register: bool = True,
              resume: bool = False, run: str | None = None, measure: bool = True, here: dict | None = None,
              progress: Progress = NULL) -> Plan:
    """Run every pre-flight check; return the plan (never raises for a failed check).

    ``here``: where a resumed run trains now, ``{"device": ..., "gpus": ...}`` as given for this
    session (None: those of ``settings`` that are not the defaults)."""
    settings = (settings or TrainSettings()).validate()
    # -- which run: an explicit --resume picks its base, data, name and settings from the run
    resume_run: _runs.RunInfo | None = None
    if resume:
        resume_run = _pick_resume(repo, run, base)
        # the run's own settings; only where it runs may change (a device or GPU count given now)
        if here is None:
            here = {k: v for k, v in (("device", settings.device), ("gpus", settings.gpus))
                    if v != getattr(TrainSettings, k)}
        here = {k: v for k, v in here.items() if k in ("device", "gpus") and v is not None}
        settings = TrainSettings.build({k: v for k, v in resume_run.settings.items() if k in TrainSettings.names()},
                                       here)
        if not data:
            data = [d["path"] for d in resume_run.data_paths]
        name = name or resume_run.output
        base = base or resume_run.base
        run = resume_run.name
        # a run that trains its data whole again goes on doing so (not only the rest of a file)
        allow_overlap = allow_overlap or resume_run.allow_overlap
    if not name:
        raise InvalidInput("give the new version a name: --output NAME")
    check_name(name, "version name")
    run = run or default_run_name(name)
    check_name(run, "run name")
    world = settings.gpus if settings.gpus > 1 else 1

    # the checks run in the order each needs the last: the base's tokenizer counts the data's tokens,
    # the tokens size the disk check; the plan lists them by number
    checks: dict[str, Check] = {}
    head = repo.head()
    checks["base"], b = _check_base(repo, base, head, progress)
    items = [_data_item(repo, p, b, register) for p in data]
    checks["data"] = _check_data(items)
    datasets = [i.dataset for i in items if i.dataset]
    # the duplicate check marks partly trained files, whose rest only is counted and trained
    checks["duplicates"], overlap_rows = _check_duplicates(repo, items, b.id, datasets, allow_overlap, progress)
    checks["runs"], resume_info = _check_runs(repo, b.id, run, datasets, settings, resume_run)
    size = _count_tokens(repo, items, b, settings, world, resume_info, progress)
    if size.problem is not None:
        checks["data"] = size.problem
    checks["disk"], disk = _check_disk(repo, b.model, settings, size.steps, size.tokens, size.job)
    checks["device"], device = _check_device(settings, b.model)
    checks["store"] = _check_store(repo)

    # -- output name, estimate
    number = repo.next_version_number()
    output = version_name(number, slug_from_user(name, number))
    est, source = estimate_time(repo, size.job, settings, base_tree=b.tree, base_name=b.name, model=b.model,
                                device=device, tokens_left=size.tokens_left, measure=measure, world=world)
    ordered = [checks[k] for k in CHECK_ORDER]
    plan = Plan(ok=all(c.ok for c in ordered), checks=ordered, name=name, output=output, run=run, base=b.id,
                base_name=b.name, base_explicit=b.explicit, base_active=(b.id is not None and b.id == head),
                data=items, datasets=datasets, settings=settings.to_dict(), resume=resume_info, units=size.units,
                tokens=size.tokens, tokens_total=size.tokens_total, tokens_left=size.tokens_left, steps=size.steps,
                steps_per_epoch=size.per_epoch, estimate_s=est, estimate_source=source, disk=disk,
                device={k: v for k, v in device.items() if k != "hint"}, model=b.model,
                allow_overlap=allow_overlap, overlap=overlap_rows, world_size=world)
    plan._job = size.job
    return plan


def _check(key: str, ok: bool, reason: str, details: list[str] | None = None, hint: str | None = None,
           overridden: bool = False) -> Check:
    return Check(key, CHECK_ORDER.index(key) + 1, CHECK_TITLES[key], ok, reason, list(details or []), hint,
                 overridden)


def _skipped(key: str, why: str) -> Check:
    """A check that cannot run (not a pass: the plan is not ready; not a failure of its own)."""
    return Check(key, CHECK_ORDER.index(key) + 1, CHECK_TITLES[key], False, f"not checked: {why}", skipped=True)


# ------------------------------------------------------------------------------ the checks


@dataclass
class _Base:
    """The base model as check 2 found it (any part may be missing when it failed)."""

    explicit: bool
    id: str | None = None
    tree: str | None = None
    name: str | None = None
    model: dict = field(default_factory=dict)  # tree_weight_summary
    tokenizer: Any = None
    meta_dir: Path | None = None


def _check_base(repo: Repo, base: str | None, head: str | None, progress: Progress) -> tuple[Check, _Base]:
    """2. The base resolves, every object of it verifies, and its tokenizer loads."""
    b = _Base(explicit=base is not None)
    check: Check
    try:
        b.id = repo.resolve(base or "HEAD")
        c = repo.commit(b.id)
        b.tree, b.name = c.tree, c.name
        bad = _verify_tree(repo, b.tree, progress)
        how = "named explicitly" if b.explicit else "the active version"
        if b.explicit and b.id == head:
            how = "named explicitly; the active version"
        if bad:
            check = _check("base", False, f"{b.name}: {len(bad)} object(s) fail verification", bad[:5],
                           hint="run `lin fsck` to see every damaged object")
        else:
            check = _check("base", True, f"{b.name} ({how}); every object verifies")
    except (RevisionNotFound, NotFound) as e:
        check = _check("base", False, str(e), hint=getattr(e, "hint", None))
    except LinError as e:
        check = _check("base", False, f"base {base or 'HEAD'}: {e}")
    if b.tree:
        b.model = tree_weight_summary(repo.objects, b.tree)
        try:
            b.tokenizer, b.meta_dir = load_tokenizer(repo, b.tree)
        except LinError as e:
            check = _check("base", False, str(e), hint=e.hint)
    return check, b


def _check_data(items: list[DataItem]) -> Check:
    """1. Every data file exists, matches its registered fingerprint and is registered."""
    if not items:
        return _check("data", False, "no data files given", hint="pass --data FILE (repeatable)")
    missing = [i.path for i in items if not i.exists]
    broken = [f"{i.path}: {i.error}" for i in items if i.exists and i.error]
    unregistered = [i.path for i in items if i.exists and not i.dataset and not i.error]
    det = [f"{Path(i.path).name}: fingerprint {i.fingerprint[:12]}"
           + (" (registered now)" if i.registered_now else " (registered)")
           for i in items if i.dataset and i.fingerprint]  # a registered file has both
    if missing:
        return _check("data", False, f"missing: {', '.join(missing)}", det)
    if broken:
        return _check("data", False, "; ".join(broken), det,
                      hint="if the new content is meant to be trained, register it with `lin data add FILE`; "
                           "otherwise restore the file")
    if unregistered:
        return _check("data", False, f"not registered: {', '.join(unregistered)}", det,
                      hint="register with `lin data add FILE`, or plan without --no-register")
    return _check("data", True, f"{len(items)} file(s) verified", det)


@dataclass
class _Size:
    """The data in tokens and steps (None where it could not be counted)."""

    job: Job
    units: int | None = None
    tokens: int | None = None
    steps: int | None = None  # the run's steps (a resumed run: those done plus those left, on this world)
    per_epoch: int | None = None
    tokens_total: int | None = None
    tokens_left: int | None = None  # what is left to train (a fresh run: tokens_total)
    problem: Check | None = None  # a failed data check, when tokenizing fails or finds nothing to train


def _count_tokens(repo: Repo, items: list[DataItem], b: _Base, settings: TrainSettings, world: int,
                  resume: dict | None, progress: Progress) -> _Size:
    """Tokenize the data with the base's tokenizer (kept in the job for training), without what
    the lineage trained of a file's rest; count units, steps and tokens to the run's end."""
    size = _Size(Job(b.tokenizer, None, b.meta_dir))
    job = size.job
    if b.tokenizer is not None and items and all(i.dataset for i in items):
        try:
            data = load_data([(Path(i.path), i.fingerprint) for i in items], b.tokenizer,
                             cache_dir=repo.cache_dir, skip_bad_lines=any(i.skipped_lines for i in items),
                             progress=progress, max_record_bytes=repo.settings.data.max_record_bytes)
            job.data = drop_trained(repo, b.id, items, data)
            for it, tf in zip(items, job.data.files, strict=True):
                it.tokens, it.targets, it.examples = tf.tokens, tf.targets, tf.examples
            size.units = len(Blocks(job.data, settings.seq_len, settings.packing))
            size.tokens = job.data.tokens
            size.per_epoch, size.steps = steps_for(size.units, settings, world)
            if not job.data.targets:
                size.problem = _check("data", False, "the data has no tokens to train on (no targets)")
        except LinError as e:
            size.problem = replace(_check("data", False, str(e), hint=e.hint), code=e.exit_code)
    if job.data is not None and size.units and size.steps is not None:
        per_step = settings.batch_size * settings.grad_accum * world
        end = end_position(size.units, per_step, size.steps)
        start = (0, 0)
        if resume and resume.get("position") is not None:
            end = tuple(resume["end"]) if resume.get("end") else end_position(
                size.units, settings.batch_size * settings.grad_accum * int(resume["world_size"]),
                int(resume["total_steps"]))
            start = (int(resume["epoch"]), int(resume["position"]))
            size.steps = int(resume["step"]) + steps_left(size.units, per_step, *start, end)
        size.tokens_total = tokens_between(job.data, size.units, settings, (0, 0), end)
        size.tokens_left = tokens_between(job.data, size.units, settings, start, end)
    return size


def _pick_resume(repo: Repo, run: str | None, base: str | None) -> _runs.RunInfo:
    if run:
        return _runs.info(repo, run)
    candidates = _runs.list_runs(repo)
    if base:
        bid = repo.resolve(base)
        candidates = [r for r in candidates if r.base == bid]
    candidates = [r for r in candidates if r.status != _runs.LIVE]
    if not candidates:
        raise NotFound("no unfinished run to resume" + (f" on {base}" if base else ""),
                       hint="list runs with `lin runs`")
    if len(candidates) > 1:
        raise InvalidInput("several unfinished runs: " + ", ".join(r.name for r in candidates),
                           hint="pick one with --run NAME")
    return candidates[0]


def _verify_tree(repo: Repo, tree_id: str, progress: Progress) -> list[str]:
    """Re-hash every object of a stored model; return the problems."""
    from ..core.objects import LINKING_TYPES
    store = repo.objects
    bad: list[str] = []
    seen: set[str] = set()
    stack = [tree_id]
    ids: list[str] = []
    while stack:
        oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        try:
            h = store.header(oid, bring_back=True)  # weights dropped here come back, verified
            if h.type in LINKING_TYPES:
                stack.extend(store.get(oid).links())
            ids.append(oid)
        except LinError as e:
            bad.append(f"{oid[:12]}: {e}")
    from concurrent.futures import ThreadPoolExecutor
    total = sum(store.header(i).size for i in ids)
    progress.start("verifying the base model", total, "B")

    def verify(oid: str) -> str | None:
        try:
            store.get_raw(oid)
            progress.advance(store.header(oid).size)
            return None
        except LinError as e:
            return f"{oid[:12]}: {e}"
    try:
        with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 2))) as pool:
            bad.extend(x for x in pool.map(verify, ids) if x)
    finally:
        progress.finish()
    return bad


def _data_item(repo: Repo, path: os.PathLike | str, b: _Base, register: bool) -> DataItem:
    """Verify a file against the data registry (by content and by the path it was registered
    from), registering it when it is new and ``register`` is set (its tokens counted with the
    base's tokenizer)."""
    from .. import data as _data
    tokenizer_rev = b.id if b.tokenizer is not None else None
    p = Path(path).expanduser().absolute()
    if not p.is_file():
        return DataItem(str(p), False)
    item = DataItem(str(p), True, size=p.stat().st_size)
    try:
        reg = _data.registry(repo)
        v = _data.verify_file(repo, p, reg)
        item.fingerprint = v.current
        if v.status == "changed":
            item.error = (f"changed since it was registered (fingerprint {str(v.fingerprint)[:12]}, "
                          f"now {str(v.current)[:12]})")
            return item
        info = reg.get(v.current) if v.current else None
        if info is None and register:
            info = _data.register(repo, p, tokenizer=tokenizer_rev if tokenizer_rev else False)
            item.registered_now = not getattr(info, "already_registered", False)
    except LinError as e:
        item.error = str(e)
        return item
    if info is not None:
        item.fingerprint = info.fingerprint
        item.dataset = info.id
        item.examples = info.examples
        item.skipped_lines = int(getattr(info, "skipped_lines", 0) or 0)
        tid = tree_tokenizer_id(repo.objects, b.tree) if b.tree else None
        item.registered_tokens = info.tokens.get(tid) if tid else None
    return item


def _check_duplicates(repo: Repo, items: list[DataItem], base_id: str | None, datasets: list[str], allow: bool,
                      progress: Progress) -> tuple[Check, list[dict]]:
    """3. No file, and no share of records above the threshold, was trained in the base's lineage.

    A file of which the lineage trained only a part passes: its rest (the records not trained
    yet) is trained, unless ``allow`` (then all of it is, as any overlap)."""
    from .. import data as _data
    if base_id is None:
        return _skipped("duplicates", "no base model"), []
    if not datasets:
        return _skipped("duplicates", "no registered data"), []
    from .evaluate import training_conflicts  # the evaluation set's records: never trained, overlap or not
    held_out = training_conflicts(repo, [(Path(i.path).name, i.dataset) for i in items if i.dataset])
    if held_out:
        return _check("duplicates", False, "; ".join(held_out),
                      hint="the evaluation set (`lin eval show`) is held out from training"), []
    threshold = repo.settings.data.overlap_threshold
    registered = [i for i in items if i.dataset]
    reports = _data.check(repo, [Path(i.path) for i in registered], base=base_id, progress=progress)
    problems: list[str] = []
    rows = []
    details = []
    for item, r in zip(registered, reports, strict=True):
        name = Path(str(r.path)).name
        trained = list(getattr(r, "same_file_trained_in", []) or [])
        share = float(getattr(r, "share", 0.0) or 0.0)
        rows.append({"path": str(r.path), "fingerprint": r.fingerprint, "same_file_trained_in": trained,
                     "partly_trained_in": list(r.partly_trained_in), "records": r.records,
                     "records_seen": r.records_seen, "share": share, "seen_in": dict(getattr(r, "seen_in", {}) or {})})
        item.records, item.trained_before = r.records, r.records_seen
        if r.partly_trained_in and not trained and not allow:
            if r.records_seen >= r.records:
                problems.append(f"{name}: every record was already trained in {', '.join(r.seen_in)} (in parts)")
                continue
            item.rest = True
            details.append(f"{name}: {r.records_seen:,} of {r.records:,} records already trained "
                           f"({', '.join(r.partly_trained_in)} trained part of it); the other "
                           f"{r.records - r.records_seen:,} are trained now")
        elif trained or share > threshold:
            msg = _data.overlap_warning(r, name) or f"{name}: already trained"
            problems.append(msg + ("" if trained else f" (threshold {threshold:.1%})"))
        else:
            details.append(f"{name}: {r.records_seen:,} of {r.records:,} records seen before ({share:.2%})")
    if not problems:
        rest = [Path(i.path).name for i in items if i.rest]
        reason = (f"no file or record was trained in the base's lineage above {threshold:.1%}" if not rest
                  else f"the rest of {', '.join(rest)} (records not trained yet); nothing else above {threshold:.1%}")
        return _check("duplicates", True, reason, details), rows
    if allow:
        return _check("duplicates", True, "overridden with --allow-overlap: " + "; ".join(problems), details,
                      overridden=True), rows
    return _check("duplicates", False, "; ".join(problems), details,
                  hint="train on new data, or pass --allow-overlap to train on it again (recorded in the version)"
                  ), rows


def _check_disk(repo: Repo, model: dict, s: TrainSettings, steps: int | None, tokens: int | None,
                job: Job) -> tuple[Check, dict]:
    """4. Enough free disk for the checkpoints, the new version and the token cache, with a margin."""
    disk = disk_needs(repo, model, s, steps, tokens, job)
    enough = disk["free"] >= disk["need"]
    return _check("disk", enough, f"{_gb(disk['free'])} free, about {_gb(disk['need'])} needed",
                  [f"{k}: {_gb(v)}" for k, v in disk["parts"].items() if v],
                  hint=None if enough else "free disk space, or checkpoint less often (--checkpoint-every)"), disk


def _check_device(s: TrainSettings, model: dict) -> tuple[Check, dict]:
    """5. The device asked for is there, and each GPU has memory for weights, gradients and Adam."""
    device = device_status(s, model)
    return _check("device", device["ok"], device["reason"], device.get("details"), device.get("hint")), device


def _check_runs(repo: Repo, base_id: str | None, run: str, datasets: list[str], s: TrainSettings,
                resume_run: _runs.RunInfo | None) -> tuple[Check, dict | None]:
    """6. No other unfinished run on the base; a run of this name resumes only as it was started.

    Returns the check and, when the run resumes, {"run", "checkpoint", "step", "status"}."""
    if base_id is None:
        return _skipped("runs", "no base model"), None
    others = _runs.on_base(repo, base_id)
    same = next((r for r in others if r.name == run), None)
    if same is None:
        try:
            same = _runs.info(repo, run)  # a run of that name on another base
        except NotFound:
            same = None
        if same is not None:
            return _check("runs", False, f"run {run!r} exists on another base ({same.base_name or same.base})",
                          hint=f"choose another --output or --run, or `lin runs abandon {run}`"), None
    blockers = [r for r in others if r.name != run]
    details = [f"{r.name}: {r.status} at step {r.step}/{r.total_steps or '?'} (output {r.output})" for r in blockers]
    if blockers:
        r = blockers[0]
        return _check("runs", False, f"unfinished run {r.name!r} on this base ({r.status}, step {r.step})", details,
                      f"resume it with `lin train --resume --run {r.name}`, "
                      f"or give it up with `lin runs abandon {r.name}`"), None
    if same is None:
        return _check("runs", True, "no unfinished run on this base"), None
    if same.status == _runs.LIVE:
        owner = _runs.describe_owner({"pid": same.pid, "host": same.host})
        return _check("runs", False, f"run {run!r} is training right now ({owner})",
                      hint="wait for it to finish"), None
    diffs = []
    if sorted(same.datasets) != sorted(datasets):
        diffs.append("data")
    theirs = TrainSettings.build({k: v for k, v in same.settings.items() if k in TrainSettings.names()}).result_dict()
    mine = s.result_dict()
    diffs += [f"{k} ({theirs[k]!r} -> {mine[k]!r})" for k in mine if theirs.get(k) != mine[k]]
    if diffs:
        return _check("runs", False, f"run {run!r} on this base was started with other settings: {', '.join(diffs)}",
                      hint=f"resume it as it was with `lin train --resume --run {run}`, or `lin runs abandon {run}`"
                      ), None
    ck = read_checkpoint(repo, same.checkpoint)
    how = "--resume" if resume_run is not None else "the same command again"
    info = {"run": run, "checkpoint": same.checkpoint, "step": ck.step, "status": same.status,
            **_position(repo, ck)}
    return _check("runs", True, f"resumes run {run!r} from step {ck.step} ({same.status}; {how})"), info


def _position(repo: Repo, ck) -> dict:
    """Where a checkpoint's run stands in its data: epoch, position, its end, the world it ran on."""
    tr = load_state_json(repo.objects, ck.state, "trainer") if ck.state else None
    if not tr:
        return {}
    return {"epoch": int(tr["epoch"]), "position": int(tr["position"]), "end": tr.get("end"),
            "world_size": int(tr.get("world_size", 1)), "total_steps": int(tr.get("total_steps", 0))}


def _check_store(repo: Repo) -> Check:
    """7. A quick fsck finds the store consistent."""
    try:
        from ..guard import fsck
        rep = fsck.check(repo, quick=True)
        if rep.ok:
            return _check("store", True, f"{rep.objects} objects, {rep.refs} refs: consistent")
        return _check("store", False, f"{len(rep.problems)} problem(s) found",
                      [f"{p.kind}: {p.message}" for p in rep.problems[:5]], hint="run `lin fsck` for the full report")
    except LinError as e:
        return _check("store", False, f"fsck failed: {e}")


__all__ = ["Plan", "Check", "DataItem", "make_plan", "default_run_name"]
