"""The registry's entries: :class:`DatasetInfo`, read from ``refs/data/`` through a derived cache.

A registered file is a ``dataset`` object named by ``refs/data/<fingerprint>``. Reading 50,000
dataset objects on every command would be slow, so :func:`registry` reads them through
``cache/data/registry.json`` (rows by dataset id; dataset objects are immutable, so a row never
goes stale, it only goes unused) and remembers the answer per :class:`Repo` object while the
data refs stay the same.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..core.fsutil import atomic_write_bytes
from ..core.objects import Dataset
from ..core.repo import Repo

DATA_REF = "refs/data/"
_CACHE_VERSION = 1


@dataclass
class DatasetInfo:
    """A registered data file (what register and lookup return)."""

    id: str  # dataset object id
    fingerprint: str  # content id of the file's bytes
    filename: str
    path: str | None  # where it was registered from (absolute)
    format: str  # jsonl | jsonl.gz | jsonl.zst
    size: int
    examples: int
    tokens: dict  # tokenizer id -> count
    records: str | None  # id of the sorted record-id set (records or chunks object)
    description: str
    first_seen: str
    stored: bool
    skipped_lines: int
    already_registered: bool = False
    distinct_records: int = 0
    kind: str = "text"  # text | chat | mixed
    tokenizers: dict = field(default_factory=dict)  # tokenizer id -> label ("v004_full_stack", a path)
    #: set by register: the tokenizer used this time, or why no tokens were counted
    tokenizer_id: str | None = None
    tokens_note: str | None = None

    @classmethod
    def from_object(cls, did: str, d: Dataset, **kw) -> DatasetInfo:
        ex = d.extra or {}
        return cls(id=did, fingerprint=d.content, filename=d.filename, path=ex.get("path"), format=d.format,
                   size=d.size, examples=d.examples, tokens=dict(d.tokens), records=d.records,
                   description=d.description, first_seen=d.first_seen, stored=d.stored,
                   skipped_lines=d.skipped_lines, distinct_records=int(ex.get("distinct", 0)),
                   kind=ex.get("kind", "text"), tokenizers=dict(ex.get("tokenizers", {})), **kw)

    def to_dict(self) -> dict:
        # not dataclasses.asdict: it deep-copies field by field (3.7 s for 50,000 entries)
        d = {f: getattr(self, f) for f in _INFO_FIELDS}
        d["tokens"] = dict(self.tokens)
        d["tokenizers"] = dict(self.tokenizers)
        return d

    def token_count(self, tokenizer_id: str | None = None) -> int | None:
        """The count for ``tokenizer_id``, else the first one recorded."""
        if tokenizer_id and tokenizer_id in self.tokens:
            return self.tokens[tokenizer_id]
        return next(iter(self.tokens.values()), None)


_INFO_FIELDS = tuple(f.name for f in fields(DatasetInfo))

# ----------------------------------------------------------------------------- the registry

#: per Repo object: (the data refs, the registry read for them). Weak: a Repo that is dropped
#: takes its entry with it.
_MEMO: weakref.WeakKeyDictionary[Repo, tuple[dict[str, str], dict[str, DatasetInfo]]] = weakref.WeakKeyDictionary()


def _cache_path(repo: Repo) -> Path | None:
    return repo.cache_dir / "data" / "registry.json" if repo.path is not None else None


def registry(repo: Repo) -> dict[str, DatasetInfo]:
    """Every registered dataset by fingerprint, read through a derived cache of dataset objects.

    Remembered for this ``repo`` object while the data refs stay the same (a command that lists
    the registry and then derives usage reads it once).
    """
    refs = repo.refs.as_dict(DATA_REF)
    memo = _MEMO.get(repo)
    if memo is not None and memo[0] == refs:
        return dict(memo[1])
    out = _registry(repo, refs)
    _MEMO[repo] = (refs, out)
    return dict(out)


def _registry(repo: Repo, refs: dict[str, str]) -> dict[str, DatasetInfo]:
    cpath = _cache_path(repo)
    rows: dict = {}
    if cpath is not None:
        try:
            doc = json.loads(cpath.read_text())
            if doc.get("version") == _CACHE_VERSION:
                rows = doc["rows"]
        except (OSError, ValueError, KeyError):
            rows = {}
    out: dict[str, DatasetInfo] = {}
    fresh: dict = {}
    for ref, did in refs.items():
        row = rows.get(did)
        if row is None:
            info = DatasetInfo.from_object(did, repo.objects.get(did, "dataset"))
            row = info.to_dict()
        else:
            info = DatasetInfo(**row)
        fresh[did] = row
        out[ref[len(DATA_REF):]] = info
    if cpath is not None and fresh.keys() != rows.keys():
        try:
            cpath.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cpath, json.dumps({"version": _CACHE_VERSION, "rows": fresh}).encode(),
                               repo.tmp_dir, durable=False)
        except OSError:
            pass  # a cache that cannot be written costs only time
    return out


def current(repo: Repo, fingerprint: str) -> DatasetInfo | None:
    did = repo.refs.resolve(DATA_REF + fingerprint)
    if did is None:
        return None
    return DatasetInfo.from_object(did, repo.objects.get(did, "dataset"))


def dataset_object(repo: Repo, did: str, memo: dict | None = None) -> Dataset:
    if memo is not None and did in memo:
        return memo[did]
    d = repo.objects.get(did, "dataset")
    if memo is not None:
        memo[did] = d
    return d
