"""``lin queue add``: register what is new, refuse what was trained or is queued, append the rest.

A folder gives its data files (``*.jsonl``, ``*.jsonl.gz``, ``*.jsonl.zst``) at any depth, sorted
by their path relative to the folder (code point order of the ``/``-separated path), leaving
out names that start with ``.`` (a file being written under a temporary name, ``.lineage/``).
A glob gives its matches in the same order. Files are compared by content: a file already
trained in the branch's lineage (the whole file, under any name) or already in the queue (any
status, under any name) is skipped with the reason, and so is a file that cannot be registered
(a bad line: the registry's one-line error).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..core.content import file_content_id
from ..core.errors import InvalidInput, LinError, NotFound
from ..core.objects import QueueDoc
from ..core.progress import NULL, Progress
from ..core.repo import Repo, utc_now
from ..data import lineage, register
from ..data.entries import DatasetInfo, current
from ..data.records import detect_format
from ..data.scan import check_file
from ..versions.tokenizer import tree_tokenizer_id
from .model import DONE, QUEUED, Item, clean_text, item_id
from .storage import read_doc, update_doc


@dataclass
class AddResult:
    added: list[Item]
    skipped: list[tuple[str, str]]  # (path, why it was not added)
    registered: list[str] = field(default_factory=list)  # paths registered by this add

    def to_dict(self) -> dict[str, Any]:
        return {"added": [it.to_dict() for it in self.added],
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
                "registered": self.registered}


def expand_paths(args: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files ``args`` name, in order (folders and globs expanded as the module says), and
    (arg, why) for a folder or glob that gives none. A missing path raises NotFound."""
    files: list[Path] = []
    empty: list[tuple[str, str]] = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            found = folder_files(p)
            if not found:
                empty.append((arg, "the folder holds no *.jsonl, *.jsonl.gz or *.jsonl.zst file"))
            files.extend(found)
        elif p.exists():
            check_file(p)
            files.append(p)
        elif glob.has_magic(arg):
            matches = sorted(glob.glob(arg, recursive=True), key=lambda m: Path(m).as_posix())
            got = [Path(m) for m in matches if Path(m).is_file() and _is_data(Path(m).name)]
            if not got:
                empty.append((arg, "no data file matches"))
            files.extend(got)
        else:
            raise NotFound(f"{arg}: no such file or folder")
    return files, empty


def folder_files(folder: Path) -> list[Path]:
    """The data files under ``folder``, sorted by relative path; hidden names left out."""
    out: list[tuple[str, Path]] = []
    for dirpath, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for n in names:
            if not n.startswith(".") and _is_data(n):
                full = Path(dirpath) / n
                if full.is_file():
                    out.append((full.relative_to(folder).as_posix(), full))
    return [p for _, p in sorted(out)]


def _is_data(name: str) -> bool:
    try:
        detect_format(name)
    except InvalidInput:
        return False
    return True


def add_files(repo: Repo, branch: str, paths: list[str] | list[os.PathLike[str]], priority: int = 0,
              on_progress: Progress | None = None) -> AddResult:
    """Register (under the branch tip's tokenizer) and queue the data files ``paths`` name."""
    progress = on_progress or NULL
    tip = repo.refs.resolve(f"refs/heads/{branch}")
    if tip is None:
        raise NotFound(f"no branch {branch!r}: a queue trains from a branch's tip",
                       hint="see `lin branch`; import a model first with `lin import`")
    files, skipped = expand_paths([os.fspath(p) for p in paths])
    tok_id = tree_tokenizer_id(repo.objects, repo.commit(tip).tree)
    trained = lineage(repo, tip).by_fingerprint
    cols = read_doc(repo, branch).items
    queued = {fp: i for i, fp in enumerate(cols["fingerprint"])}
    accepted: dict[str, tuple[str, DatasetInfo]] = {}
    registered: list[str] = []
    for p in files:
        name = clean_text(os.fspath(p), "a file name")
        held_by = repo.store_holding(p)
        if held_by is not None:
            skipped.append((name, f"inside the store {held_by}; data files are queued from outside it"))
            continue
        try:
            fp = file_content_id(p)
        except OSError as e:  # gone or unreadable since it was listed; not a store failure
            if isinstance(e, LinError):
                raise
            skipped.append((name, f"cannot be read ({e.strerror or e})"))
            continue
        why = _why_not(fp, name, queued, cols, trained, accepted)
        if why is not None:
            skipped.append((name, why))
            continue
        info = current(repo, fp)
        if info is None or (tok_id is not None and tok_id not in info.tokens):
            try:
                info = register(repo, p, tokenizer=tip if tok_id else False, progress=progress)
            except (InvalidInput, NotFound) as e:  # a bad line, a truncated stream, a file gone
                skipped.append((name, str(e)))
                continue
            if not info.already_registered:
                registered.append(name)
        accepted[fp] = (name, info)
    added: list[Item] = []
    if accepted:
        def change(d: QueueDoc) -> QueueDoc:
            added.clear()
            have = set(d.items["fingerprint"])
            n = d.next
            for fp, (name, info) in accepted.items():
                if fp in have:  # queued by another process meanwhile
                    continue
                added.append(Item(id=item_id(n), name=name, dataset=info.id, examples=info.examples,
                                  tokens=int(info.token_count(tok_id) or 0), priority=priority, status=QUEUED,
                                  reason=None, version=None, attempts=0, added=utc_now(), fingerprint=fp))
                n += 1
            return replace(d, items=_insert(d.items, added, priority), next=n)

        first = f"{len(accepted)} file(s)" if len(accepted) > 1 else next(iter(accepted.values()))[0]
        update_doc(repo, branch, change, f"added {first}", {"kind": "added", "count": len(accepted)})
        late = {it.fingerprint for it in added}
        skipped.extend((name, "queued by another command meanwhile") for fp, (name, _) in accepted.items()
                       if fp not in late)
    return AddResult(added=added, skipped=skipped, registered=registered)


def _why_not(fp: str, name: str, queued: dict[str, int], cols: dict[str, list[Any]],
             trained: dict[str, list[str]], accepted: dict[str, tuple[str, DatasetInfo]]) -> str | None:
    if fp in queued:
        i = queued[fp]
        status = cols["status"][i]
        state = f"done: {cols['version'][i]}" if status == DONE else status
        same = "" if cols["name"][i] == name else f", same content as {cols['name'][i]}"
        return f"already in the queue as {cols['id'][i]} ({state}{same})"
    if fp in trained:
        return f"already trained in {', '.join(trained[fp])} (same content, any name)"
    if fp in accepted:
        return f"same content as {accepted[fp][0]}, given earlier in this command"
    return None


def _insert(cols: dict[str, list[Any]], new: list[Item], priority: int) -> dict[str, list[Any]]:
    """``new`` after every item not done whose priority is >= ``priority``."""
    status, prio = cols["status"], cols["priority"]
    at = next((i for i in range(len(status)) if status[i] != DONE and prio[i] < priority), len(status))
    return {c: v[:at] + [getattr(it, c) for it in new] + v[at:] for c, v in cols.items()}
