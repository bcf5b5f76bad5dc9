"""`lin data`: register data files, list and verify them, and check what was already trained."""

from __future__ import annotations

from pathlib import Path

import typer

from ..core.errors import CheckFailed
from .common import JSON_OPT, STATE, out, short
from .output import BarProgress, Output, human_bytes, human_int

data_app = typer.Typer(help="Register data files and check what was already trained.", no_args_is_help=True,
                       rich_markup_mode=None)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


def _progress(o: Output) -> BarProgress:
    """Bytes with MB/s, plus records and records/s (the ``records=N`` field)."""
    return o.progress()


def _eos(info) -> str:
    """The registry counts the text alone; training appends EOS to text records: say so."""
    from ..data.tokens import EOS_NOTE
    return f"; {EOS_NOTE}" if info.kind != "chat" else ""


def _tokens_text(info, rep=None) -> str:
    tid = info.tokenizer_id
    if not (tid and tid in info.tokens) and info.tokens:
        tid = next(iter(info.tokens))
    if tid and tid in info.tokens:
        return f"{human_int(info.tokens[tid])} tokens (tokenizer of {info.tokenizers.get(tid, short(tid))}{_eos(info)})"
    return "tokens not counted" + (f" ({info.tokens_note})" if info.tokens_note else "")


def _status_text(detail) -> str:
    if detail.status == "trained":
        return f"trained in {', '.join(detail.trained_in)}"
    if detail.status == "partly trained":
        return (f"partly trained in {', '.join(detail.trained_in)} ({human_int(detail.records_trained)} of "
                f"{human_int(detail.info.distinct_records)} records, {detail.share:.1%})")
    if detail.status == "in training":
        return f"in training ({', '.join(detail.in_training)})"
    return "not yet trained"


def _overlap_text(rep) -> str:
    if rep.base is None:
        return "no active model yet (nothing trained)"
    text = f"overlap with {rep.base}'s lineage: {human_int(rep.records_seen)} records"
    if rep.records_seen:
        text += f" ({rep.share:.1%}; " + ", ".join(f"{v}: {n:,}" for v, n in rep.seen_in.items()) + ")"
    return text


@data_app.command("add")
def add(
    files: list[Path] = typer.Argument(..., help="JSONL files (.jsonl, .jsonl.gz, .jsonl.zst)."),
    description: str = typer.Option("", "--description", "-d", help="What this data is."),
    tokenizer: str | None = typer.Option(None, "--tokenizer",
                                         help="Count tokens with this version's tokenizer, or a folder / "
                                              "tokenizer.json (default: the active model's)."),
    no_tokens: bool = typer.Option(False, "--no-tokens", help="Do not count tokens."),
    no_store: bool = typer.Option(False, "--no-store",
                                  help="Record fingerprint and ledger only; do not store the content."),
    skip_bad_lines: bool = typer.Option(False, "--skip-bad-lines",
                                        help="Register the valid records and record how many lines were skipped."),
    json_out: bool = JSON_OPT,
) -> None:
    """Register data files: fingerprint, examples, tokens, record ids.

    The token count is exact; the content is stored (unless --no-store).
    """
    from .. import data
    from ..data.scan import check_file
    o = out(json_out)
    repo = STATE.repo()
    for f in files:
        check_file(f)  # every file is readable before anything is registered
    results = []
    u = None
    for f in files:
        info = data.register(repo, f, description=description, tokenizer=False if no_tokens else tokenizer,
                             store_content=not no_store, skip_bad_lines=skip_bad_lines, progress=_progress(o))
        u = u or data.usage(repo)  # registering changes no version: derived once
        detail = data.DatasetDetail.of(info, u)
        rep = data.check_dataset(repo, info, progress=_progress(o))
        results.append({**detail.to_dict(), "overlap": rep.to_dict()})
        if json_out:
            continue
        if info.already_registered:
            same = f"{f.name} is {info.filename}" if info.filename != f.name else f.name
            o.line(f"Already registered: {same}  fingerprint {short(info.fingerprint, 12)}  "
                   f"(first seen {info.first_seen})  {_tokens_text(info)}  {_status_text(detail)}")
        else:
            o.line(f"Data registered: {info.filename}  fingerprint {short(info.fingerprint, 12)}  "
                   f"{human_int(info.examples)} examples  {_tokens_text(info)}  {_status_text(detail)}  "
                   f"{_overlap_text(rep)}")
        if info.skipped_lines and not info.already_registered:
            o.warn(f"{info.filename}: {info.skipped_lines:,} bad line(s) skipped")
        if rep.same_file_trained_in or rep.records_seen:
            w = data.overlap_warning(rep, f.name)
            if w and not info.already_registered:
                o.warn(w)
    STATE.mutated = True
    if json_out:
        o.json(results)


@data_app.command("ls")
def ls(json_out: bool = JSON_OPT) -> None:
    """Every registered data file: fingerprint, examples, tokens.

    Name, fingerprint, examples, tokens and status.
    """
    from .. import data
    o = out(json_out)
    repo = STATE.repo()
    items = data.list_datasets(repo)
    if json_out:
        o.json([d.to_dict() for d in items])
        return
    if not items:
        o.line("No data registered. Register a file: lin data add FILE.jsonl")
        return
    o.line(f"{'FILE':<32} {'FINGERPRINT':<12} {'EXAMPLES':>10} {'TOKENS':>14} {'SIZE':>10}  STATUS")
    for d in items:
        i = d.info
        tok = i.token_count()
        o.line(f"{i.filename[:32]:<32} {short(i.fingerprint, 12):<12} {human_int(i.examples):>10} "
               f"{human_int(tok):>14} {human_bytes(i.size):>10}  {_status_text(d)}")


@data_app.command("show")
def show(target: str = typer.Argument(..., help="A file, a fingerprint or dataset id prefix, "
                                                "or a registered file name."),
         json_out: bool = JSON_OPT) -> None:
    """Everything recorded about one data file, and where it was trained."""
    from .. import data
    o = out(json_out)
    repo = STATE.repo()
    d = data.show(repo, target)
    if json_out:
        o.json(d.to_dict())
        return
    i = d.info
    o.line(f"{i.filename}")
    rows = [("fingerprint", i.fingerprint), ("dataset", i.id), ("path", i.path or "-"),
            ("format", f"{i.format} ({i.kind})"), ("size", f"{human_bytes(i.size)} ({i.size:,} bytes)"),
            ("examples", f"{human_int(i.examples)} ({human_int(i.distinct_records)} distinct records)"),
            ("first seen", i.first_seen), ("stored", "yes" if i.stored else "no (--no-store)"),
            ("records", i.records or "-"), ("status", _status_text(d))]
    if i.skipped_lines:
        rows.append(("skipped", f"{i.skipped_lines:,} bad lines"))
    if i.description:
        rows.append(("description", i.description))
    for k, v in rows:
        o.line(f"    {k:<12} {v}")
    for t, n in i.tokens.items():
        o.line(f"    {'tokens':<12} {human_int(n)}  (tokenizer of {i.tokenizers.get(t, '?')}, {short(t, 12)}{_eos(i)})")
    if not i.tokens:
        o.line(f"    {'tokens':<12} not counted (lin data add {i.filename} --tokenizer REV)")


@data_app.command("verify")
def verify(files: list[Path] = typer.Argument(None, help="Files to check (default: every registered file at "
                                                         "the path it was registered from)."),
           json_out: bool = JSON_OPT) -> None:
    """Re-hash data files: report changed, missing and renamed ones.

    Exit 1 if any changed or is missing.
    """
    from .. import data
    o = out(json_out)
    repo = STATE.repo()
    rep = data.verify(repo, list(files) if files else None, progress=_progress(o))
    if json_out:
        o.json(rep.to_dict())
    else:
        for e in rep.entries:
            o.line(f"{e.status:<13} {e.message}")
        counts: dict[str, int] = {}
        for e in rep.entries:
            counts[e.status] = counts.get(e.status, 0) + 1
        o.line("verify: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no registered files"))
    if not rep.ok:
        raise typer.Exit(1)


@data_app.command("manifest")
def manifest(json_out: bool = typer.Option(True, "--json/--table", help="JSON (default) or a table.")) -> None:
    """All registered data in the shape of a manifest.json.

    Per fingerprint, with trained_in and status.
    """
    from .. import data
    o = out(json_out)
    repo = STATE.repo()
    m = data.manifest(repo)
    if json_out:
        o.json(m)
        return
    for fp, r in m.items():
        o.line(f"{r['filename']:<32} {short(fp, 12)}  {human_int(r['num_examples']):>10} examples  "
               f"{r['status']}" + (f" ({', '.join(r['trained_in'])})" if r["trained_in"] else ""))


@data_app.command("check")
def check(
    files: list[Path] = typer.Argument(..., help="Data files to check."),
    base: str | None = typer.Option(None, "--base",
                                    help="The version whose lineage to check against (default: HEAD)."),
    fail_if_trained: bool = typer.Option(False, "--fail-if-trained",
                                         help="Exit 1 if any file or record was already trained."),
    json_out: bool = JSON_OPT,
) -> None:
    """Was this data, or any part of it, already trained?

    Into the lineage of BASE (default: HEAD).
    """
    from .. import data
    o = out(json_out)
    repo = STATE.repo()
    reps = data.check(repo, list(files), base=base, progress=_progress(o))
    if json_out:
        o.json([r.to_dict() for r in reps])
    else:
        for r, f in zip(reps, files, strict=True):  # one report per file
            o.line(_check_line(r, f))
            if r.changed_since_registration:
                o.warn(r.changed_since_registration)
    if fail_if_trained and any(r.trained for r in reps):
        raise CheckFailed("some of this data was already trained (see above)")


def _check_line(r, f: Path) -> str:
    where = f"{r.base}'s lineage" if r.base else "the lineage (empty store: nothing trained)"
    reg = "registered" + (f" as {r.registered_as}" if r.registered_as and r.registered_as != f.name else "") \
        if r.registered else "not registered"
    head = f"{f}  fingerprint {short(r.fingerprint, 12)}  {reg}"
    if r.same_file_trained_in:
        return f"{head}\n    same file already trained in {', '.join(r.same_file_trained_in)} ({where})"
    if r.records_seen:
        from ..data import partly_note
        by = ", ".join(f"{v}: {n:,}" for v, n in r.seen_in.items())
        return (f"{head}\n    {r.records_seen:,} of {r.records:,} records ({r.share:.1%}) already trained "
                f"in {where}: {by}{partly_note(r)}")
    return f"{head}\n    new: none of its {r.records:,} records was trained in {where}"
