"""The store's fixed evaluation: one held-out JSONL file, measured the same way on every version.

**The set.** ``lin eval set FILE`` registers the file as data (its content, record ids and token
count are stored like any data file's) and points ``refs/notes/eval-set`` at its ``dataset``
object. It is refused when any of its records was trained into any version of the store (checked
through the ledger index); afterwards the plan refuses to train any file holding one of its
records (:func:`training_conflicts`, called by the duplicates check).

**The measure** (``method`` ``loss-v1/seq<N>``): every example of the file, in file order, is
tokenized as training tokenizes it (the version's tokenizer, the same target mask), cut at
``eval.seq_len`` tokens (one unit per example, no packing), batched ``eval.batch_size`` at a time
with right padding, and run in fp32 with dropout off. The eval loss is the summed token
cross-entropy of every target token divided by the number of target tokens (a token-weighted
mean, in nats). The same records, tokenization, cut and precision on every version make the
numbers comparable; a row records its ``seq_len`` and is compared only with rows of the same
method and set.

**The results** are evaluation notes (:mod:`.evalnotes`) keyed by version id; a trained version
also records its final eval loss in ``metrics.eval_loss`` and the evaluations made every
``--eval-every`` steps in its series (``evals.json``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import InvalidInput, LinError, NotFound, Refused
from ..core.fsutil import atomic_write_bytes
from ..core.progress import NULL, Progress
from ..core.repo import Repo, utc_now
from ..data.ledger import Ledger, iter_record_set
from ..data.scan import check_file, scan_file
from ..data.usage import dataset_key
from .evalnotes import NOTES_FORMAT, note_of, write_note

__all__ = ["EVAL_SET_REF", "EvalResult", "EvalSet", "Evaluator", "current_set", "eval_loss", "evaluate_versions",
           "method_of", "set_eval_set", "training_conflicts"]

EVAL_SET_REF = "refs/notes/eval-set"
METHOD = "loss-v1"


def method_of(seq_len: int) -> str:
    return f"{METHOD}/seq{seq_len}"


@dataclass
class EvalSet:
    dataset: str  # the dataset object's id
    fingerprint: str
    filename: str
    examples: int
    records: int  # distinct records
    record_set: str | None  # id of the record-id set
    format: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EvalSetResult:
    set: EvalSet
    previous: str | None  # the dataset id of the set it replaced
    unchanged: bool  # the same set was registered already

    def to_dict(self) -> dict:
        return {"set": self.set.to_dict(), "previous": self.previous, "unchanged": self.unchanged}


@dataclass
class EvalResult:
    version: str  # commit id
    name: str
    set: str  # eval set dataset id
    set_name: str
    method: str
    loss: float
    targets: int  # target tokens measured
    examples: int
    seq_len: int
    batch_size: int
    device: str
    time: str
    by: str  # "train" (end of a training run) | "eval run" | "train base" (the base before training)

    def to_row(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("version", "name")}

    def to_dict(self) -> dict:
        return asdict(self)


def current_set(repo: Repo) -> EvalSet | None:
    """The store's evaluation set, or None when ``lin eval set`` was never run."""
    did = repo.refs.resolve(EVAL_SET_REF)
    if did is None:
        return None
    d = repo.objects.get(did, "dataset")
    return EvalSet(dataset=did, fingerprint=d.content, filename=d.filename, examples=d.examples,
                   records=int(d.extra.get("distinct", d.examples)) if isinstance(d.extra, dict) else d.examples,
                   record_set=d.records, format=d.format)


def eval_loss(repo: Repo, version_id: str) -> float | None:
    """A version's noted eval loss on the current evaluation set and method (None: not measured)."""
    es = current_set(repo)
    if es is None:
        return None
    method = method_of(repo.settings.eval.seq_len)
    for row in reversed(note_of(repo, version_id)):
        if row.get("set") == es.dataset and row.get("method") == method:
            loss = row.get("loss")
            return float(loss) if isinstance(loss, (int, float)) and not isinstance(loss, bool) else None
    return None


def _sorted_ids(chunks) -> np.ndarray:
    parts = [np.asarray(c) for c in chunks]
    if not parts:
        return np.zeros(0, dtype="S16")
    return np.unique(np.concatenate(parts))


def eval_record_ids(repo: Repo, es: EvalSet) -> np.ndarray:
    """The evaluation set's record ids, sorted (the set is held-out data: small enough for memory)."""
    return _sorted_ids(iter_record_set(repo.objects, es.record_set))


def trained_in_store(repo: Repo, ids: np.ndarray) -> dict[str, int]:
    """Version name -> how many of ``ids`` (sorted, unique) it trained, over every version of the
    store, through the ledger index (exact: candidates are confirmed against the full ids)."""
    if not len(ids):
        return {}
    keys: dict = {}
    memo: dict = {}
    by_set: dict[str, list[str]] = {}
    for name, cid in repo.versions().items():
        for did in repo.commit(cid).datasets:
            _content, records, _part = dataset_key(repo, did, keys, memo)
            if records:
                by_set.setdefault(records, []).append(name)
    if not by_set:
        return {}
    ledger = Ledger(repo)
    ordmap = ledger.ordinals(by_set)
    ords = np.array(sorted(ordmap.values()), dtype=np.uint32)
    qi, oi = ledger.candidates(ids, ords)
    ok = ledger.confirm(ids, qi, oi)
    qi, oi = qi[ok], oi[ok]
    out: dict[str, int] = {}
    for sid, names in by_set.items():
        n = len(np.unique(qi[oi == ordmap[sid]]))
        for name in names:
            if n:
                out[name] = out.get(name, 0) + n
    return out


def set_eval_set(repo: Repo, path: os.PathLike | str, *, progress: Progress = NULL) -> EvalSetResult:
    """Make ``path`` the store's evaluation set. Refused (nothing written) when any of its records
    was trained in any version of the store."""
    from ..data.registry import register
    p = Path(path)
    check_file(p)
    scan = scan_file(p, skip_bad_lines=False, workers=repo.settings.core.workers,
                     max_record_bytes=repo.settings.data.max_record_bytes, progress=progress,
                     tmp_dir=repo.tmp_dir if repo.path is not None else None, description=f"reading {p.name}")
    try:
        if scan.bad:
            line, why = scan.bad_first[0] if scan.bad_first else (0, "not a record")
            raise InvalidInput(f"{p}:{line}: {why} (an evaluation set must be clean JSONL)")
        if not scan.examples:
            raise InvalidInput(f"{p}: no records to evaluate on")
        seen = trained_in_store(repo, _sorted_ids(scan.ids.chunks()))
    finally:
        scan.ids.cleanup()
    if seen:
        where = ", ".join(f"{n} ({c:,})" for n, c in sorted(seen.items())[:5])
        raise Refused(f"{p}: {max(seen.values()):,} of its records were already trained (in {where}); "
                      "an evaluation set must be held out",
                      hint="evaluate on records no version trained")
    info = register(repo, p, description="evaluation set", progress=progress)
    old = repo.refs.resolve(EVAL_SET_REF)
    if old != info.id:
        repo.require_format(NOTES_FORMAT)
        with repo.writing():
            repo.update_ref(EVAL_SET_REF, old, info.id, f"eval set: {p.name}")
    es = current_set(repo)
    assert es is not None
    return EvalSetResult(es, old if old != info.id else None, old == info.id)


def training_conflicts(repo: Repo, datasets: list[tuple[str, str]]) -> list[str]:
    """Why each ``(file name, dataset id)`` may not be trained: it holds records of the evaluation
    set (one line per file; empty when none does or there is no set). ``--allow-overlap`` does not
    override this: a version trained on the evaluation set would make its losses meaningless."""
    es = current_set(repo)
    if es is None or not datasets:
        return []
    held = eval_record_ids(repo, es)
    out = []
    for name, did in datasets:
        if did == es.dataset:
            out.append(f"{name} is the evaluation set ({es.filename}); it is never trained")
            continue
        d = repo.objects.get(did, "dataset")
        n = sum(int(np.isin(c, held).sum()) for c in iter_record_set(repo.objects, d.records))
        if n:
            out.append(f"{name}: {n:,} of its records are in the evaluation set ({es.filename}); "
                       "remove them or set another evaluation set")
    return out


# ------------------------------------------------------------------------------ the measure


class Evaluator:
    """The evaluation set tokenized for one tokenizer, ready to measure models."""

    def __init__(self, repo: Repo, es: EvalSet, tokenizer: Any) -> None:
        from .dataset import Blocks, load_data
        cfg = repo.settings.eval
        self.set, self.seq_len, self.batch_size = es, cfg.seq_len, cfg.batch_size
        path = _materialize(repo, es)
        data = load_data([(path, es.fingerprint)], tokenizer, cache_dir=repo.cache_dir)
        self.blocks = Blocks(data, self.seq_len, packing=False)
        tok = tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    @property
    def method(self) -> str:
        return method_of(self.seq_len)

    def loss(self, model, device) -> tuple[float, int]:
        """(eval loss, target tokens): summed cross-entropy / targets, fp32, dropout off."""
        import torch

        from .model import compute_loss
        was_training = model.training
        model.eval()
        total, targets = 0.0, 0
        try:
            with torch.no_grad():
                for a in range(0, len(self.blocks), self.batch_size):
                    idx = list(range(a, min(a + self.batch_size, len(self.blocks))))
                    _n, t = self.blocks.tokens_of(idx)
                    if not t:
                        continue
                    _loss, ce = compute_loss(model, self.blocks.batch(idx, self.pad_id), device, "fp32", 1)
                    total += float(ce)
                    targets += t
        finally:
            if was_training:
                model.train()
        if not targets:
            raise InvalidInput(f"evaluation set {self.set.filename}: no target tokens to measure")
        return total / targets, targets

    def result(self, model, device, version: str, name: str, by: str) -> EvalResult:
        from .series import device_kind
        loss, targets = self.loss(model, device)
        return EvalResult(version=version, name=name, set=self.set.dataset, set_name=self.set.filename,
                          method=self.method, loss=loss, targets=targets, examples=len(self.blocks),
                          seq_len=self.seq_len, batch_size=self.batch_size, device=device_kind(device),
                          time=utc_now(), by=by)


def _materialize(repo: Repo, es: EvalSet) -> Path:
    """The evaluation file, written once from the store into ``cache/eval/`` (verified on read)."""
    if repo.path is None:
        raise InvalidInput("evaluation needs a store on disk")
    d = repo.objects.get(es.dataset, "dataset")
    if not d.stored:
        raise NotFound(f"evaluation set {es.filename}: its content is not in the store")
    out = repo.cache_dir / "eval" / f"{es.fingerprint[:24]}-{Path(es.filename).name}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, b"".join(repo.objects.iter_content(es.fingerprint)), repo.tmp_dir)
    return out


def _from_row(cid: str, name: str, row: dict) -> EvalResult:
    return EvalResult(version=cid, name=name, set=str(row.get("set")), set_name=str(row.get("set_name")),
                      method=str(row.get("method")), loss=float(row.get("loss") or "nan"),
                      targets=int(row.get("targets") or 0), examples=int(row.get("examples") or 0),
                      seq_len=int(row.get("seq_len") or 0), batch_size=int(row.get("batch_size") or 0),
                      device=str(row.get("device")), time=str(row.get("time")), by=str(row.get("by")))


def evaluate_versions(repo: Repo, revs: list[str], *, device: str = "auto", force: bool = False,
                      progress: Progress = NULL) -> list[EvalResult]:
    """Evaluate stored versions on the evaluation set and note each result (``force``: measure
    again a version that has a note for this set and method)."""
    from . import distributed as D
    from .dataset import tokenizer_id
    from .job import load_tokenizer
    from .model import build_model, resolve_device
    from .settings import TrainSettings
    es = current_set(repo)
    if es is None:
        raise NotFound("no evaluation set", hint="register one with `lin eval set FILE`")
    ids = [repo.resolve(r) for r in revs]
    s = TrainSettings.build({"device": device})
    dev = resolve_device(s.device, D.from_env())
    out: list[EvalResult] = []
    evaluators: dict[str, Evaluator] = {}
    progress.start("evaluating", len(ids), "versions")
    try:
        for cid in ids:
            c = repo.commit(cid)
            method = method_of(repo.settings.eval.seq_len)
            known = [r for r in note_of(repo, cid) if r.get("set") == es.dataset and r.get("method") == method]
            if known and not force:
                out.append(_from_row(cid, c.name, known[-1]))
                progress.advance(1)
                continue
            tok, meta = load_tokenizer(repo, c.tree)
            key = tokenizer_id(tok)
            ev = evaluators.get(key) or evaluators.setdefault(key, Evaluator(repo, es, tok))
            model = build_model(repo, c.tree, meta, dev, s, version=c.name)
            res = ev.result(model, dev, cid, c.name, "eval run")
            del model
            write_note(repo, cid, res.to_row())
            out.append(res)
            progress.advance(1)
    finally:
        progress.finish()
    return out


# ------------------------------------------------------------------------------ inside a training run


def start_session(r: Any) -> None:
    """At the start of a training session (:mod:`.trainer`): raise the store's format for the
    series and notes, tokenize the evaluation set, and on a fresh run measure the base version
    first (its "before"), unless it has a note for this set and method already."""
    from . import distributed as D
    from .job import load_tokenizer
    if r.dist.is_main:
        r.repo.require_format(NOTES_FORMAT)
    es = current_set(r.repo)
    r.eval_on = es is not None
    if es is None:
        return
    if r.dist.is_main:
        tok, _meta = load_tokenizer(r.repo, r.base_tree)
        r.evaluator = ev = Evaluator(r.repo, es, tok)
        noted = any(x.get("set") == es.dataset and x.get("method") == ev.method for x in note_of(r.repo, r.base))
        if r.resumed_from is None and not noted:
            res = ev.result(r.model, r.device, r.base, r.plan.base_name or "", "train base")
            write_note(r.repo, r.base, res.to_row())
            r.say(f"evaluated the base {res.name or r.base[:10]}: eval loss {res.loss:.4f} on {es.filename}")
    D.barrier(r.dist)


def during(r: Any) -> None:
    """After an optimizer step: every ``eval_every`` steps (not the last: :func:`final` measures
    it), measure the model and keep the row in the run's series."""
    from . import distributed as D
    every = r.s.eval_every
    if not r.eval_on or not every or r.st.step % every or r.st.step >= r.total:
        return
    if r.dist.is_main:
        ev = r.evaluator
        loss, targets = ev.loss(r.model, r.device)
        r.series.add_eval({"step": r.st.step, "tokens": r.st.tokens, "loss": loss, "targets": targets,
                           "set": ev.set.dataset, "method": ev.method})
    D.barrier(r.dist)


def final(r: Any) -> dict[str, Any]:
    """At the end of the run, before the version is published: its eval loss (metrics to add)."""
    from . import distributed as D
    out: dict[str, Any] = {}
    if r.eval_on and r.dist.is_main:
        ev = r.evaluator
        res = ev.result(r.model, r.device, "", r.plan.name, "train")
        r.final_eval = res
        r.series.add_eval({"step": r.st.step, "tokens": r.st.tokens, "loss": res.loss, "targets": res.targets,
                           "set": ev.set.dataset, "method": ev.method})
        out = {"eval_loss": res.loss, "eval_set": ev.set.filename, "eval_method": ev.method}
    if r.eval_on:
        D.barrier(r.dist)
    return out


def note_published(r: Any, version_id: str, name: str) -> None:
    """Note the final evaluation under the published version's id (rank 0)."""
    res = getattr(r, "final_eval", None)
    if res is None or not r.dist.is_main:
        return
    res.version, res.name = version_id, name
    try:
        write_note(r.repo, version_id, res.to_row())
    except LinError as e:  # the version is published; its eval loss is in its metrics either way
        r.say(f"warning: could not note the evaluation of {name}: {e}; `lin eval run {name}` measures it again")


def duplicates_avoided(plan: Any) -> dict[str, Any]:
    """What the plan's duplicate check left out of this run: per file, the records the lineage had
    trained already (a file's rest only was trained) and an estimate of their tokens (the file's
    tokens per trained example). ``{}`` when none; else ``{"duplicates_avoided": [...]}`` for the
    version's ``extra``."""
    rows = []
    for d in plan.data:
        n = int(getattr(d, "trained_before", 0) or 0)
        if n <= 0:
            continue
        per = (d.tokens / d.examples) if d.tokens and d.examples else None
        rows.append({"file": Path(d.path).name, "fingerprint": d.fingerprint, "records": n,
                     "tokens_est": round(n * per) if per else None})
    return {"duplicates_avoided": rows} if rows else {}
