"""The audit log: a hash-chained journal of every command that changed the store.

``.lineage/audit.log`` holds one JSON object per line. Each entry has ``seq`` (1, 2, ...),
``prev`` (the ``hash`` of the entry before it, 64 zeros for the first) and ``hash`` = BLAKE3 of
the canonical JSON of the entry without its ``hash`` field. ``.lineage/audit.head`` holds the
last ``seq`` and ``hash``, so a truncated log is detected too. Appends hold ``locks/audit.lock``.

An entry records ``time`` (UTC), ``user``, ``host``, ``pid``, ``argv`` (the command line, with
credentials redacted: :func:`redact`),
``refs`` (each ref the command changed, with its value before and after) and, for commands that
change the store without moving a ref (``gc``, ``restore`` from trash), ``notes`` saying what
they did. The append is one ``write(2)`` of one line, then ``audit.head`` is replaced
atomically: a command killed between the two leaves the log ahead of the head, which ``verify``
accepts (the chain vouches for those entries, and the next complete append moves the head).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import blake3

from .fsutil import FileLock, append_line, atomic_write_bytes
from .objects import canonical_json
from .repo import RefChange, Repo

ZERO = "0" * 64


@dataclass
class AuditEntry:
    seq: int
    time: str
    user: str
    host: str
    pid: int
    argv: list[str]
    refs: list[dict[str, str | None]]  # [{"ref", "old", "new"}]
    prev: str
    hash: str = ""
    notes: list[str] = field(default_factory=list)  # what a command did besides moving refs

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["notes"]:
            del d["notes"]  # entries without notes hash as they always did
        return d


@dataclass
class AuditCheck:
    ok: bool
    entries: int
    problems: list[str] = field(default_factory=list)


def _hash(d: dict[str, Any]) -> str:
    body = {k: v for k, v in d.items() if k != "hash"}
    digest: str = blake3.blake3(canonical_json(body)).hexdigest()
    return digest


def _paths(repo: Repo) -> tuple[Path, Path, Path]:
    assert repo.path is not None
    return repo.path / "audit.log", repo.path / "audit.head", repo.path / "locks" / "audit.lock"


def _last_entry(log: Path) -> dict[str, Any] | None:
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            f.seek(max(0, end - 65536))
            tail = f.read().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(tail):
        line = line.strip()
        if line:
            try:
                entry: dict[str, Any] = json.loads(line)  # a line of ours: one JSON object
            except ValueError:
                return None
            return entry
    return None


#: Option and KEY=VALUE names whose values are credentials (matched in any case, as a part of the name).
SECRET_NAMES = re.compile(r"secret|token|passw|pwd|api[-_]?key|access[-_]?key|credential|auth|signature",
                          re.IGNORECASE)
_URL_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@?#]*@)")
REDACTED = "***"


def redact(argv: list[str]) -> list[str]:
    """The command line as the journal keeps it: credentials replaced by ``***``.

    Redacted: the user-info of a URL (``s3://KEY:SECRET@host`` -> ``s3://***@host``), a URL's query
    string (pre-signed URLs carry their signature there), the value of an option whose name says
    it is a credential (``--token X``, ``--token=X``), and of ``KEY=VALUE`` pairs whose key does
    (``--param api_key=X``). The journal is hashed after this, so nothing secret is ever written.
    """
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        if arg.startswith("-") and not arg.startswith("---"):
            name, eq, _value = arg.partition("=")
            if SECRET_NAMES.search(name):
                if eq:
                    out.append(f"{name}={REDACTED}")
                else:
                    out.append(arg)
                    hide_next = True
                continue
        out.append(_redact_value(arg))
    return out


def _redact_value(arg: str) -> str:
    key, eq, value = arg.partition("=")
    if eq and key and "/" not in key and SECRET_NAMES.search(key):
        return f"{key}={REDACTED}"
    m = _URL_USERINFO.match(arg)
    if m:
        arg = m.group("scheme") + REDACTED + "@" + arg[m.end():]
    if "://" in arg and "?" in arg:
        arg = arg.split("?", 1)[0] + "?" + REDACTED
    return arg


def record(repo: Repo, argv: list[str], changes: list[RefChange],
           notes: list[str] | None = None) -> AuditEntry | None:
    """Append one entry for a command that changed the store (no-op for a memory repo).

    ``notes`` default to ``repo.notes`` (what the command did besides moving refs: a publish,
    gc's moves to trash, a restore from trash).
    """
    if repo.path is None:
        return None
    if notes is None:
        notes = list(repo.notes)
    log, head, lock_path = _paths(repo)
    with FileLock(lock_path).held("exclusive", repo.lock_timeout):
        last = _last_entry(log)
        try:
            user = getpass.getuser()
        except Exception:  # no user name in some containers
            user = str(os.getuid())
        e = AuditEntry(seq=(last["seq"] + 1) if last else 1,
                       time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), user=user,
                       host=socket.gethostname(), pid=os.getpid(), argv=redact(list(argv)[:64]),
                       refs=[{"ref": c.ref, "old": c.old, "new": c.new} for c in changes],
                       prev=last["hash"] if last else ZERO, notes=[str(n) for n in notes][:20])
        d = e.to_dict()
        e.hash = _hash(d)
        append_line(log, json.dumps({**d, "hash": e.hash}, sort_keys=True))
        atomic_write_bytes(head, f"{e.seq} {e.hash}\n".encode(), repo.tmp_dir)
    return e


def entries(repo: Repo) -> list[dict[str, Any]]:
    log, _, _ = _paths(repo)
    try:
        lines = log.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"malformed": line})
    return out


def verify(repo: Repo) -> AuditCheck:
    """Detect an edited, reordered, inserted or truncated audit log."""
    log, head, _ = _paths(repo)
    items = entries(repo)
    problems = []
    prev = ZERO
    for i, d in enumerate(items, 1):
        if "malformed" in d:
            problems.append(f"audit.log line {i}: not valid JSON")
            break
        if d.get("seq") != i:
            problems.append(f"audit.log line {i}: sequence number {d.get('seq')} (expected {i}): reordered or removed entries")
            break
        if d.get("prev") != prev:
            problems.append(f"audit.log line {i}: does not chain to the entry before it")
            break
        if _hash(d) != d.get("hash"):
            problems.append(f"audit.log line {i}: content does not match its hash (edited)")
            break
        prev = d["hash"]
    if not problems:
        try:
            seq_s, h = head.read_text().split()
            seq = int(seq_s)
        except FileNotFoundError:
            seq, h = 0, ZERO
        except ValueError:
            problems.append("audit.head is malformed")
            seq, h = -1, ""
        # entries past the head are commands killed between their two writes (the chain above
        # vouches for them); a head past the end of the log means entries were cut off
        if seq > len(items):
            problems.append(f"audit.log is truncated: {len(items)} entries, audit.head records {seq}")
        elif seq > 0 and items[seq - 1].get("hash") != h:
            problems.append(f"audit.head does not match entry {seq} of audit.log")
    return AuditCheck(not problems, len(items), problems)
