"""Which queued files go into the next version, the version's name, and where each file is."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..core.errors import LinError
from ..core.names import MAX_NAME, parse_version
from ..core.repo import Repo
from ..data.records import Decoder, RecordParser, detect_format

_SUFFIXES = (".jsonl.gz", ".jsonl.zst", ".jsonl", ".gz", ".zst", ".json")


def pick(items: tuple[Any, ...], *, files: int, tokens: int | None, max_files: int | None) -> list[Any]:
    """The next batch: the files already marked running (an interrupted batch, whole), else the
    first queued files in queue order, up to ``files`` of them and, with ``tokens``, while the
    batch holds fewer tokens than that (always at least one file)."""
    running = [i for i in items if i.status == "running"]
    if running:
        return running
    limit = files if max_files is None else max(0, min(files, max_files))
    out: list[Any] = []
    total = 0
    for item in items:
        if len(out) >= limit or (tokens is not None and out and total >= tokens):
            break
        if item.status != "queued":
            continue
        if tokens is not None and out and total + int(item.tokens or 0) > tokens:
            break
        out.append(item)
        total += int(item.tokens or 0)
    return out


def file_slug(name: str) -> str:
    """A version slug from a file name: ``data/syllo_20k.jsonl`` -> ``syllo_20k``."""
    base = Path(name).name
    for suffix in _SUFFIXES:
        if base.lower().endswith(suffix):
            base = base[:-len(suffix)]
            break
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._-") or "data"
    if not slug[0].isalnum():
        slug = "f" + slug
    if parse_version(slug) is not None or re.fullmatch(r"v\d+", slug):
        slug = "f_" + slug  # lin adds the vNNN_ prefix itself; a file named like a version keeps its name after it
    return slug


def version_slug(items: list[Any]) -> str:
    """``syllo_20k`` for one file, ``syllo_20k_and_3_more`` for a batch (named after the first)."""
    first = file_slug(items[0].name)
    tail = f"_and_{len(items) - 1}_more" if len(items) > 1 else ""
    return first[:MAX_NAME - 8 - len(tail)] + tail


def run_name(branch: str, item: Any) -> str:
    """The training run of a batch: one per branch and first item (item ids are never reused)."""
    return f"queue-{branch.replace('/', '--')}-{item.id}"


def dataset_of(repo: Repo, item: Any) -> Any:
    """The registered dataset object the item names (its fingerprint and where it was registered from)."""
    return repo.objects.get(item.dataset, "dataset")


def file_of(repo: Repo, item: Any) -> Path:
    """Where the item's file is: the path it was queued as, else where its content was registered
    from (the plan says "missing" when neither exists)."""
    candidates = [Path(item.name).expanduser()]
    try:
        registered = (dataset_of(repo, item).extra or {}).get("path")
    except LinError:
        registered = None
    if registered:
        candidates.append(Path(registered))
    for c in candidates:
        if c.is_file():
            return c.absolute()
    return candidates[0].absolute()


def first_bad_line(path: Path, limit_lines: int = 10_000_000) -> str | None:
    """``line N: why`` of the first line of a JSONL file that is not a JSON object, or None.

    Used only to say why a file that fails the data check fails (a file corrupted after it was
    queued): the parked file's reason names its line."""
    try:
        fmt = detect_format(path.name)
    except LinError as e:
        return str(e)
    parser = RecordParser()
    dec = Decoder(fmt, path.name)
    n = 0
    rest = b""
    try:
        with open(path, "rb") as f:
            for piece in _pieces(f, dec):
                lines = (rest + piece).split(b"\n")
                rest = lines.pop()
                for raw in lines:
                    n += 1
                    why = _line_problem(parser, raw)
                    if why:
                        return f"line {n}: {why}"
                    if n >= limit_lines:
                        return None
    except (OSError, LinError, EOFError, ValueError) as e:
        return f"after line {n}: {e}"
    if rest.strip():
        why = _line_problem(parser, rest)
        if why:
            return f"line {n + 1}: {why}"
    return None


def _pieces(f: Any, dec: Decoder) -> Any:
    while chunk := f.read(1 << 20):
        yield from dec.pieces(chunk)
    tail = dec.finish()
    if tail:
        yield tail


def _line_problem(parser: RecordParser, raw: bytes) -> str | None:
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not UTF-8 ({e.reason} at byte {e.start})"
    return parser.parse(text.rstrip("\r"))[1]
