"""The data registry: register, look up, list, show, verify, manifest.

A registered file is a ``dataset`` object named by ``refs/data/<fingerprint>``, where the
fingerprint is the content id of the file's bytes. Renaming or moving a file changes nothing;
registering the same content again adds nothing (it says under which name it is registered).
A later registration with another tokenizer adds a token count: a new dataset object with the
same content, records and first-seen date replaces the old one (compare-and-swap on the ref).

The entries are read by :mod:`lineagestore.data.entries` (through a derived cache); what each
content was trained in is derived by :mod:`lineagestore.data.usage`, never stored.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ..core.content import file_content_id
from ..core.errors import InvalidInput, LinError, NotFound, RefConflict, Refused
from ..core.ids import is_id_prefix, short
from ..core.objects import Chunks, Dataset
from ..core.progress import NULL, Progress
from ..core.repo import Repo, utc_now
from ..versions.tokenizer import tree_tokenizer_id
from .entries import DATA_REF, DatasetInfo, current, registry
from .ledger import put_record_set
from .records import detect_format
from .scan import ScanResult, check_file, scan_file
from .tokens import open_tokenizer
from .usage import Usage, usage


def lookup(repo: Repo, path_or_id: os.PathLike | str) -> DatasetInfo | None:
    """A registered dataset by file content (hashing the file), fingerprint/id prefix, or file name."""
    p = Path(path_or_id)
    if p.is_file():
        return current(repo, file_content_id(p))
    text = str(path_or_id)
    reg = registry(repo)
    low = text.lower()
    if is_id_prefix(low):
        found = {fp: info for fp, info in reg.items() if fp.startswith(low) or info.id.startswith(low)}
        if not found:
            for oid in repo.objects.resolve_prefix(low):  # an older object of a dataset (before a token count)
                try:
                    if repo.objects.header(oid).type == "dataset":
                        fp = repo.objects.get(oid, "dataset").content
                        if fp in reg:
                            found[fp] = reg[fp]
                except LinError:
                    continue
        if len(found) == 1:
            return next(iter(found.values()))
        if len(found) > 1:
            raise InvalidInput(f"{text!r} matches {len(found)} datasets: "
                               + ", ".join(f"{i.filename} ({short(fp)})" for fp, i in list(found.items())[:8]),
                               hint="give more characters of the fingerprint")
    by_name = [i for i in reg.values() if i.filename == p.name or i.path == text]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        raise InvalidInput(f"{text!r} names {len(by_name)} registered datasets: "
                           + ", ".join(f"{short(i.fingerprint)} ({i.first_seen})" for i in by_name[:8]),
                           hint="give the fingerprint (or a prefix) instead")
    return None


def resolve(repo: Repo, path_or_id: os.PathLike | str) -> DatasetInfo:
    info = lookup(repo, path_or_id)
    if info is None:
        if Path(path_or_id).is_file():
            raise NotFound(f"{path_or_id}: this content is not registered", hint=f"lin data add {path_or_id}")
        raise NotFound(f"no registered dataset matches {str(path_or_id)!r}",
                       hint="see `lin data ls`; give a file, a fingerprint prefix or a registered file name")
    return info


# ----------------------------------------------------------------------------- registering


def register(repo: Repo, path: os.PathLike | str, *, description: str = "",
             tokenizer: str | os.PathLike | Literal[False] | None = None, store_content: bool = True,
             skip_bad_lines: bool = False, progress: Progress = NULL) -> DatasetInfo:
    """Register a JSONL data file (see docs/data.md). Nothing is registered half-way.

    ``tokenizer``: None for the active model's tokenizer, a revision or path, or False for no
    token count. Registering content that is already registered adds nothing but a missing
    token count (or the stored content after an earlier ``store_content=False``) and returns the
    existing entry with ``already_registered=True``.
    """
    p = Path(path)
    check_file(p)
    held_by = repo.store_holding(p)
    if held_by is not None:
        raise InvalidInput(f"{p}: is inside the store {held_by}; data files are registered from outside it",
                           hint="copy the file out of the store first")
    with repo.writing():
        fp0 = file_content_id(p)
        existing = current(repo, fp0)
        tmp_root = repo.tmp_dir if repo.path is not None else None
        tok_ctx: Any
        if tokenizer is False:
            tok_ctx = _no_tokenizer("token counting was turned off")
        else:
            tok_ctx = open_tokenizer(repo, tokenizer)
        with tok_ctx as (tok, why):
            if existing is not None:
                return _update_existing(repo, p, existing, tok, why, description, store_content,
                                        skip_bad_lines, progress)
            put_blob, finish, batch = _writers(repo, store_content)
            try:
                scan = scan_file(p, put_blob=put_blob, finish_chunks=finish,
                                 counter_spec=tok.spec() if tok else None, skip_bad_lines=skip_bad_lines,
                                 workers=repo.settings.core.workers, progress=progress,
                                 max_record_bytes=repo.settings.data.max_record_bytes,
                                 tmp_dir=tmp_root, description=f"registering {p.name}")
            except BaseException:
                _discard(batch)
                raise
            try:
                if scan.fingerprint != fp0:
                    raise InvalidInput(f"{p}: changed while being registered; run the command again")
                _validate(p, scan, skip_bad_lines)
                # the record set and the entry join the content's batch: all durable at once (the
                # content first) before the ref names them, and a full disk leaves none of them
                batch = batch or repo.objects.batch()
                rs = put_record_set(batch, scan.ids.chunks())
                extra = {"path": str(p.resolve()), "kind": scan.kind, "distinct": rs.count, "lines": scan.lines}
                tokens: dict[str, int] = {}
                if tok is not None and scan.tokens is not None:  # a scan with a counter counts
                    tokens[tok.id] = scan.tokens
                    extra["tokenizers"] = {tok.id: tok.label}
                ds = Dataset(content=scan.fingerprint, filename=p.name, format=scan.format, size=scan.size,
                             examples=scan.examples, records=rs.id, tokens=tokens, description=description,
                             first_seen=utc_now(), stored=store_content, skipped_lines=scan.bad, extra=extra)
                did = batch.put_object(ds)
                _flush(batch)
                try:
                    repo.update_ref(DATA_REF + scan.fingerprint, None, did, f"data add: {p.name}")
                except RefConflict:
                    # registered by another process meanwhile: that entry stands
                    other = current(repo, scan.fingerprint)
                    assert other is not None
                    return replace(other, already_registered=True)
            except BaseException:
                _discard(batch)
                raise
            finally:
                scan.ids.cleanup()
            return DatasetInfo.from_object(did, ds, tokenizer_id=tok.id if tok else None, tokens_note=why)


class _no_tokenizer:
    def __init__(self, why: str):
        self.why = why

    def __enter__(self):
        return None, self.why

    def __exit__(self, *exc):
        return False


def _writers(repo: Repo, store_content: bool):
    """(put_blob, finish_chunks, batch) for storing a file's content, or Nones.

    The content goes into one batch (:meth:`ObjectStore.batch`): the disk is waited for once,
    at ``flush`` after the file proved valid; a refused file's content is discarded, not left
    for gc.
    """
    if not store_content:
        return None, None, None
    store = repo.objects.batch()

    def put_blob(piece: bytes) -> str:
        return store.put("blob", piece)

    def finish(parts: list[tuple[str, int]]) -> str:
        return store.put_object(Chunks(size=sum(n for _, n in parts), parts=[[i, n] for i, n in parts]))

    return put_blob, finish, store


def _discard(batch) -> None:
    if batch is not None:
        batch.discard()


def _flush(batch) -> None:
    if batch is not None:
        batch.flush()


def _validate(p: Path, scan: ScanResult, skip_bad_lines: bool) -> None:
    if scan.bad and not skip_bad_lines:
        shown = "; ".join(f"line {n}: {why}" for n, why in scan.bad_first[:5])
        more = f" (first {min(5, len(scan.bad_first))} shown)" if scan.bad > 5 else ""
        raise InvalidInput(f"{p}: {scan.bad:,} bad line(s) of {scan.lines:,}, nothing registered{more}: {shown}",
                           hint="fix those lines, or pass --skip-bad-lines to register the valid records "
                                "(the number skipped is recorded)")
    if scan.examples == 0:
        why = "every line is blank" if not scan.bad else "no line is a valid record"
        raise InvalidInput(f"{p}: no records ({why}); nothing registered",
                           hint='each line must be a JSON object with "text", "messages", "conversations", '
                                '"prompt" and "completion", or "instruction" and "output"')


def _update_existing(repo: Repo, p: Path, existing: DatasetInfo, tok, why, description: str,
                     store_content: bool, skip_bad_lines: bool, progress: Progress) -> DatasetInfo:
    need_tokens = tok is not None and tok.id not in existing.tokens
    need_store = store_content and not existing.stored
    need_desc = bool(description) and not existing.description
    note = why if tok is None else None
    if not (need_tokens or need_store or need_desc):
        return replace(existing, already_registered=True, tokenizer_id=tok.id if tok else None, tokens_note=note)
    ds: Dataset = repo.objects.get(existing.id, "dataset")
    tokens = dict(ds.tokens)
    extra = dict(ds.extra)
    if need_tokens or need_store:
        put_blob, finish, batch = _writers(repo, need_store)
        try:
            scan = scan_file(p, put_blob=put_blob, finish_chunks=finish,
                             counter_spec=tok.spec() if need_tokens else None,
                             skip_bad_lines=True, workers=repo.settings.core.workers,
                             max_record_bytes=repo.settings.data.max_record_bytes,
                             progress=progress, tmp_dir=repo.tmp_dir if repo.path is not None else None,
                             description=f"{'counting tokens of' if need_tokens else 'storing'} {p.name}")
            scan.ids.cleanup()
            if scan.fingerprint != existing.fingerprint:
                raise InvalidInput(f"{p}: changed while being read; run the command again")
            _flush(batch)
        except BaseException:
            _discard(batch)
            raise
        if need_tokens and scan.tokens is not None:  # a scan with a counter counts
            tokens[tok.id] = scan.tokens
            extra["tokenizers"] = {**extra.get("tokenizers", {}), tok.id: tok.label}
    new = replace(ds, tokens=tokens, extra=extra, stored=ds.stored or need_store,
                  description=ds.description or description)
    did = repo.objects.put_object(new)
    what = ", ".join(x for x, n in (("token count", need_tokens), ("content", need_store),
                                    ("description", need_desc)) if n)
    try:
        repo.update_ref(DATA_REF + existing.fingerprint, existing.id, did, f"data add: {what} for {ds.filename}")
    except RefConflict:
        raise RefConflict(f"{p}: its registry entry changed while adding the {what}",
                          hint="run the command again") from None
    return DatasetInfo.from_object(did, new, already_registered=True, tokenizer_id=tok.id if tok else None,
                                   tokens_note=note)


# ----------------------------------------------------------------------------- show, ls, manifest


@dataclass
class DatasetDetail:
    info: DatasetInfo
    status: str  # trained | partly trained | in training | untrained
    trained_in: list  # versions that trained all or part of it
    in_training: list
    share: float = 0.0  # of its records trained: 1.0 when trained whole (or by parts covering it)
    records_trained: int = 0  # distinct records trained

    @classmethod
    def of(cls, info: DatasetInfo, u: Usage) -> DatasetDetail:
        fp = info.fingerprint
        status = u.status(fp)
        share = u.share(fp)
        if share is None:
            share = 1.0 if status == "trained" else 0.0
        done = u.partly[fp]["records"] if fp in u.partly else (info.distinct_records if share else 0)
        return cls(info, status, u.trained_in.get(fp, []), u.in_training.get(fp, []), share, done)

    def to_dict(self) -> dict:
        return {**self.info.to_dict(), "status": self.status, "trained_in": self.trained_in,
                "in_training": self.in_training, "share": self.share, "records_trained": self.records_trained}


def list_datasets(repo: Repo) -> list[DatasetDetail]:
    u = usage(repo)
    out = [DatasetDetail.of(i, u) for i in registry(repo).values()]
    return sorted(out, key=lambda d: (d.info.first_seen, d.info.filename))


def show(repo: Repo, path_or_id: os.PathLike | str) -> DatasetDetail:
    return DatasetDetail.of(resolve(repo, path_or_id), usage(repo))


def manifest(repo: Repo) -> dict:
    """The registry in the shape of a hand-kept ``manifest.json``: per fingerprint."""
    u = usage(repo)
    head_tok = _head_tokenizer_id(repo)
    out = {}
    for d in sorted(registry(repo).values(), key=lambda i: (i.first_seen, i.filename)):
        fp = d.fingerprint
        out[fp] = {
            "filename": d.filename,
            "hash": fp,
            "size_bytes": d.size,
            "num_examples": d.examples,
            "tokens": d.token_count(head_tok),
            "tokens_by_tokenizer": {d.tokenizers.get(t, t): n for t, n in d.tokens.items()},
            "first_seen": d.first_seen,
            "trained_in": u.trained_in.get(fp, []),
            "status": u.status(fp),
            "share": DatasetDetail.of(d, u).share,
            "description": d.description,
            "path": d.path,
            "stored": d.stored,
            "format": d.format,
            "skipped_lines": d.skipped_lines,
            "dataset": d.id,
        }
    return out


def _head_tokenizer_id(repo: Repo) -> str | None:
    head = repo.head()
    if head is None:
        return None
    try:
        return tree_tokenizer_id(repo.objects, repo.commit(head).tree)
    except LinError:
        return None


# ----------------------------------------------------------------------------- verify


@dataclass
class VerifyEntry:
    status: str  # ok | changed | missing | renamed | unregistered
    path: str
    filename: str | None = None
    fingerprint: str | None = None  # as registered
    current: str | None = None  # content id now (None when missing)
    new_path: str | None = None  # renamed: where the content is now
    dataset: str | None = None
    message: str = ""


@dataclass
class VerifyReport:
    entries: list

    @property
    def ok(self) -> bool:
        return all(e.status in ("ok", "renamed") for e in self.entries)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "entries": [asdict(e) for e in self.entries]}


def verify(repo: Repo, paths: list[os.PathLike | str] | None = None, *,
           progress: Progress = NULL) -> VerifyReport:
    """Re-hash data files: registered ones at their recorded paths, or the given files."""
    reg = registry(repo)
    entries: list[VerifyEntry] = []
    if paths:
        progress.start("verifying data files", len(paths), "files")
        for x in paths:
            entries.append(verify_file(repo, x, reg))
            progress.advance(1)
        progress.finish()
        return VerifyReport(entries)
    infos = sorted(reg.values(), key=lambda i: (i.first_seen, i.filename))
    progress.start("verifying registered files", sum(i.size for i in infos), "B")
    try:
        for info in infos:
            entries.append(_verify_registered(info, reg))
            progress.advance(info.size)
    finally:
        progress.finish()
    return VerifyReport(entries)


def verify_file(repo: Repo, path: os.PathLike | str, reg: dict | None = None) -> VerifyEntry:
    """Is this file registered, and is it what was registered from its path?"""
    reg = registry(repo) if reg is None else reg
    p = Path(path)
    ap = str(p.resolve())
    if not p.is_file():
        was = [i for i in reg.values() if i.path == ap]
        if was:
            i = was[0]
            return VerifyEntry("missing", str(p), i.filename, i.fingerprint, None, None, i.id,
                               f"{p}: missing (registered as {i.filename}, fingerprint {short(i.fingerprint)})")
        raise NotFound(f"{p}: no such file")
    fp = file_content_id(p)
    info = reg.get(fp)
    if info is not None:
        if info.path and info.path != ap and not Path(info.path).exists():
            return VerifyEntry("renamed", info.path, info.filename, fp, fp, ap, info.id,
                               f"{info.path} was renamed or moved to {p}")
        msg = f"{p}: ok" + (f" (registered as {info.filename})" if info.filename != p.name else "")
        return VerifyEntry("ok", str(p), info.filename, fp, fp, None, info.id, msg)
    was = [i for i in reg.values() if i.path == ap]
    if was:
        i = was[0]
        return VerifyEntry("changed", str(p), i.filename, i.fingerprint, fp, None, i.id,
                           f"{p}: changed since it was registered on {i.first_seen} "
                           f"(fingerprint {short(i.fingerprint)}, now {short(fp)})")
    return VerifyEntry("unregistered", str(p), None, None, fp, None, None, f"{p}: not registered")


def _verify_registered(info: DatasetInfo, reg: dict) -> VerifyEntry:
    if not info.path:
        return VerifyEntry("missing", "", info.filename, info.fingerprint, None, None, info.id,
                           f"{info.filename}: no recorded path")
    p = Path(info.path)
    if p.is_file():
        st = p.stat()
        fp = file_content_id(p) if st.st_size == info.size else None
        if fp == info.fingerprint:
            return VerifyEntry("ok", str(p), info.filename, info.fingerprint, fp, None, info.id, f"{p}: ok")
        fp = fp or file_content_id(p)
        return VerifyEntry("changed", str(p), info.filename, info.fingerprint, fp, None, info.id,
                           f"{p}: changed since it was registered on {info.first_seen} "
                           f"(fingerprint {short(info.fingerprint)}, now {short(fp)})")
    moved = _find_moved(p, info)
    if moved is not None:
        return VerifyEntry("renamed", str(p), info.filename, info.fingerprint, info.fingerprint, str(moved),
                           info.id, f"{p} was renamed or moved to {moved}")
    return VerifyEntry("missing", str(p), info.filename, info.fingerprint, None, None, info.id,
                       f"{p}: missing (registered {info.first_seen}, fingerprint {short(info.fingerprint)})")


def _find_moved(p: Path, info: DatasetInfo) -> Path | None:
    """A file of the same size and content in the folder the file was registered from."""
    folder = p.parent
    if not folder.is_dir():
        return None
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return None
    for n in names:
        c = folder / n
        try:
            detect_format(n)
            if c.is_file() and c.stat().st_size == info.size and file_content_id(c) == info.fingerprint:
                return c
        except (InvalidInput, OSError):
            continue
    return None


def require_registered(repo: Repo, path: os.PathLike | str) -> DatasetInfo:
    """The dataset a training run may use: registered, and unchanged since (else Refused)."""
    e = verify_file(repo, path)
    if e.status == "changed":
        raise Refused(f"{e.message}; refusing to train on it",
                      hint=f"register the new content (lin data add {path}) if the change is intended")
    if e.status == "unregistered":
        raise Refused(f"{path}: not registered; refusing to train on unregistered data",
                      hint=f"lin data add {path}")
    if e.status == "missing":
        raise NotFound(e.message)
    assert e.fingerprint is not None
    info = current(repo, e.fingerprint)
    assert info is not None
    return info
