"""`lin stats` and `lin eval`: what each token bought, on the store's fixed evaluation set."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import JSON_OPT, STATE, out, short
from .output import Output, human_int

eval_app = typer.Typer(help="The evaluation set: set it, evaluate versions, show results.",
                       no_args_is_help=True, rich_markup_mode=None)


def register(app: typer.Typer) -> None:
    app.command(name="stats")(stats)
    app.add_typer(eval_app, name="eval")


def _f(x: float | None, fmt: str = ".4f") -> str:
    return "-" if x is None else format(x, fmt)


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:+.4g}"


# ------------------------------------------------------------------------------ lin stats


def stats(
    rev: str = typer.Argument(None, help="Version whose lineage the curve and trend follow (default HEAD)."),
    json_out: bool = JSON_OPT,
) -> None:
    """What each token bought: eval-loss gain per version and file.

    Gains on the evaluation set per version and per data file, per billion tokens and per device-hour.

    Also the scaling curve along the lineage (cumulative tokens vs eval loss), a power-law trend
    projected to goal.tokens with its uncertainty, and the duplicates the ledger kept out.
    docs/dashboard.md says what each number means.
    """
    o = out(json_out)
    s = STATE.repo().stats(rev)
    if json_out:
        o.json(s.to_dict())
        return
    for n in s.notes:
        o.info(n)
    if s.eval_set:
        o.line(f"Evaluation set {s.eval_set['filename']} ({human_int(s.eval_set['examples'])} examples, "
               f"{s.eval_set['method']})")
    o.line("Versions (gain = eval loss before - after; + is better)")
    o.line(f"  {'version':<28} {'tokens':>12} {'dev-h':>9} {'before':>8} {'after':>8} {'gain':>9} "
           f"{'per 1e9 tok':>11} {'per dev-h':>10}")
    for v in s.versions:
        o.line(f"  {v.name[:28]:<28} {human_int(v.tokens):>12} {v.device_hours:>9.4f} {_f(v.eval_before):>8} "
               f"{_f(v.eval_after):>8} {_g(v.gain):>9} {_g(v.gain_per_billion_tokens):>11} "
               f"{_g(v.gain_per_device_hour):>10}")
    if s.files:
        o.line("Data files (best gain per token first; a version's figures shared by examples trained)")
        for f in s.files:
            o.line(f"  {f.filename[:40]:<40} {human_int(round(f.tokens)):>12} tokens  gain {_g(f.gain)}  "
                   f"per 1e9 tok {_g(f.gain_per_billion_tokens)}  per dev-h {_g(f.gain_per_device_hour)}")
    pts = [c for c in s.curve if c["eval_loss"] is not None]
    if pts:
        o.line("Lineage curve (cumulative tokens -> eval loss)")
        for c in pts:
            o.line(f"  {c['name'][:28]:<28} {human_int(c['tokens']):>16}  {c['eval_loss']:.4f}")
    t = s.trend
    o.line("Trend: " + (t.statement or f"loss = {t.a:.4g} x tokens^-{t.b:.4g}") if t.ok else f"Trend: none ({t.reason})")
    d = s.duplicates
    o.line(f"Duplicates avoided: {human_int(d.records)} records, ~{human_int(d.tokens)} tokens, "
           f"~{d.device_hours:.4f} device-hours not spent")
    if d.parked_files:
        cost = f", ~{d.parked_device_hours:.4f} device-hours" if d.parked_device_hours is not None else ""
        o.line(f"  and {d.parked_files} file(s) the queue parked as duplicates: {human_int(d.parked_records)} records, "
               f"{human_int(d.parked_tokens)} tokens{cost}")


# ------------------------------------------------------------------------------ lin eval


@eval_app.command("set")
def eval_set(
    file: Path = typer.Argument(..., help="A held-out JSONL file (no record of it may have been trained)."),
    json_out: bool = JSON_OPT,
) -> None:
    """Register FILE as the store's evaluation set.

    Its records are then refused for training.
    """
    o = out(json_out)
    repo = STATE.repo()
    r = repo.set_eval_set(file, progress=o.progress())
    STATE.mutated = True
    if json_out:
        o.json(r.to_dict())
        return
    es = r.set
    what = "is already" if r.unchanged else "is now"
    o.line(f"{es.filename} {what} the evaluation set: {human_int(es.examples)} examples, "
           f"{human_int(es.records)} distinct records (dataset {short(es.dataset)})")
    if not r.unchanged:
        o.line("Its records are refused for training; `lin eval run REV...` measures versions on it.")


@eval_app.command("run")
def eval_run(
    revs: list[str] = typer.Argument(..., help="Versions to evaluate (names, prefixes, HEAD~N)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    force: bool = typer.Option(False, "--force", help="Measure again versions already evaluated on this set."),
    json_out: bool = JSON_OPT,
) -> None:
    """Evaluate versions on the evaluation set.

    The results are kept as notes beside the versions.
    """
    o = out(json_out)
    repo = STATE.repo()
    res = repo.evaluate(revs, device=device, force=force, progress=o.progress())
    STATE.mutated = True
    if json_out:
        o.json([r.to_dict() for r in res])
        return
    for r in res:
        o.line(f"{r.name:<28} eval loss {r.loss:.4f}  ({human_int(r.targets)} target tokens, {r.method}, "
               f"{r.device}, {r.by})")


@eval_app.command("show")
def eval_show(
    rev: str = typer.Argument(None, help="A version (default: every evaluated version)."),
    json_out: bool = JSON_OPT,
) -> None:
    """The evaluation set and the notes of a version (or all)."""
    o = out(json_out)
    repo = STATE.repo()
    es = repo.eval_set()
    notes = repo.eval_notes(rev)
    if json_out:
        o.json({"set": es.to_dict() if es else None, "notes": notes})
        return
    _show_notes(o, repo, es, notes)


def _show_notes(o: Output, repo, es, notes: dict) -> None:
    if es is None:
        o.line("No evaluation set (register one with `lin eval set FILE`).")
    else:
        o.line(f"Evaluation set: {es.filename} ({human_int(es.examples)} examples, dataset {short(es.dataset)})")
    names = {v: n for n, v in repo.versions().items()}
    for vid, rows in sorted(notes.items(), key=lambda kv: names.get(kv[0], kv[0])):
        for r in rows:
            cur = "" if es is not None and r.get("set") == es.dataset else "  (another set)"
            o.line(f"  {names.get(vid, short(vid)):<28} {r.get('loss', float('nan')):.4f}  {r.get('method')}  "
                   f"{r.get('by')}  {r.get('time')}{cur}")
