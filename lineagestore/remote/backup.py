"""Automatic backup: with ``backup.remote`` set, every commit and checkpoint is pushed once it lands.

:class:`~lineagestore.remote.hook.BackupHook` is one of every ``lineagestore.Repo``'s
after-publish hooks (``core/publish.py``), so every way of making a version or a checkpoint is
backed up.
A failed backup never fails or undoes the commit: :func:`after_commit` catches every error,
records ``.lineage/backup/pending`` (JSON: remote, the ids waiting, the error, when) and returns
the outcome for the caller to report. ``lin backup`` retries, and so does the next commit's
backup: a push sends everything the remote lacks, so nothing stays behind. A successful
backup removes the marker.

:func:`backup_status` answers from this store alone (no network): a version is backed up when
the tracking ref ``refs/remotes/<backup remote>/tags/<version>`` names the same commit and
``lin verify`` has not found the remote damaged since (``.lineage/backup/damaged``). A push sets
that tracking ref only for a tag it wrote, or found there, after asking the remote about every
object under it in that push (or an earlier push from this store recorded it); the remote holds
only tags whose pushes did the same.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from ..core.errors import LinError, NotFound
from ..core.fsutil import atomic_write_bytes
from ..core.progress import NULL, Progress
from ..core.repo import Repo
from . import sync
from .cache import read_damage
from .spec import get_remote

PENDING_FILE = "backup/pending"


@dataclass
class BackupOutcome:
    remote: str
    ok: bool
    commit: str | None
    error: str | None = None
    hint: str | None = None
    objects_sent: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def backup_remote(repo: Repo) -> str | None:
    return repo.settings.backup.remote or None


def after_commit(repo: Repo, commit_id: str | None = None, *, progress: Progress = NULL) -> BackupOutcome | None:
    """Push to the backup remote after a commit or checkpoint landed; never raises (but Ctrl-C).

    Returns None when no backup remote is set, else the outcome. On failure the pending marker
    records what waits.
    """
    name = backup_remote(repo)
    if not name or repo.path is None:
        return None
    t0 = time.monotonic()
    try:
        res = sync.push(repo, name, progress=progress)
    except KeyboardInterrupt:
        _safe_mark(repo, name, commit_id, "interrupted (Ctrl-C)")
        raise
    except Exception as e:  # noqa: BLE001 - a backup must never fail the commit
        _safe_mark(repo, name, commit_id, str(e))
        out = BackupOutcome(name, False, commit_id, error=str(e), hint=getattr(e, "hint", None),
                            seconds=time.monotonic() - t0)
    else:
        try:
            clear_pending(repo)
        except OSError:
            pass
        out = BackupOutcome(name, True, commit_id, objects_sent=res.objects_sent, bytes_sent=res.bytes_sent,
                            seconds=res.seconds)
    return out


def run_backup(repo: Repo, *, progress: Progress = NULL) -> sync.PushResult:
    """``lin backup``: push everything to the backup remote now; clears the pending marker."""
    name = backup_remote(repo)
    if not name:
        raise NotFound("no backup remote is set",
                       hint="lin remote add NAME URL --backup, or lin backup --set NAME")
    get_remote(repo, name)
    try:
        res = sync.push(repo, name, progress=progress)
    except LinError as e:
        _safe_mark(repo, name, None, str(e))
        raise
    clear_pending(repo)
    return res


def set_backup_remote(repo: Repo, name: str | None) -> None:
    if name:
        get_remote(repo, name)
    repo.config.set("backup.remote", name or None)
    if repo.path is not None:
        repo.save_config()


# ------------------------------------------------------------------------------ pending marker


def read_pending(repo: Repo) -> dict | None:
    if repo.path is None:
        return None
    try:
        d = json.loads((repo.path / PENDING_FILE).read_text())
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def mark_pending(repo: Repo, remote: str, commit_id: str | None, error: str) -> None:
    assert repo.path is not None
    cur = read_pending(repo) or {}
    ids = list(cur.get("commits") or [])
    if commit_id and commit_id not in ids:
        ids.append(commit_id)
    d = {"remote": remote, "commits": ids, "error": error.splitlines()[0][:500] if error else "",
         "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "since": cur.get("since") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (repo.path / "backup").mkdir(exist_ok=True)
    atomic_write_bytes(repo.path / PENDING_FILE, (json.dumps(d, indent=1) + "\n").encode(), repo.tmp_dir)


def _safe_mark(repo: Repo, remote: str, commit_id: str | None, error: str) -> None:
    try:
        mark_pending(repo, remote, commit_id, error)
    except Exception:  # noqa: BLE001 - even a full disk must not fail the commit
        pass


def clear_pending(repo: Repo) -> None:
    if repo.path is not None:
        (repo.path / PENDING_FILE).unlink(missing_ok=True)


# ------------------------------------------------------------------------------ status


def backed_up(repo: Repo) -> dict[str, bool] | None:
    """commit id -> whether the backup remote has it under its version name; None: no backup remote."""
    name = backup_remote(repo)
    if not name:
        return None
    damaged = read_damage(repo, name) is not None
    out: dict[str, bool] = {}
    for vname, cid in repo.versions().items():
        out[cid] = out.get(cid, False) or (
            not damaged and repo.refs.read(sync.tracking_ref(name, f"refs/tags/{vname}")) == cid)
    return out


def backup_status(repo: Repo) -> dict:
    """For ``lin status``: {"remote", "url", "versions": {name: bool}, "runs": {...}, "backed_up",
    "total", "pending", "damaged", "summary"} from this store alone."""
    name = backup_remote(repo)
    versions = repo.versions()
    pend = read_pending(repo)
    damage = read_damage(repo, name) if name else None
    base = {"remote": name, "url": None, "versions": {}, "runs": {}, "backed_up": 0, "total": len(versions),
            "pending": pend, "damaged": damage}
    if not name:
        return {**base, "summary": "off (no backup remote; set one with `lin remote add NAME URL --backup`)"}
    try:
        url = get_remote(repo, name).url
    except NotFound:
        return {**base, "summary": f"backup remote {name!r} is not configured (see `lin remote ls`)"}
    sound = damage is None
    flags = {v: sound and repo.refs.read(sync.tracking_ref(name, f"refs/tags/{v}")) == cid
             for v, cid in versions.items()}
    runs = {r[len("refs/runs/"):]: sound and repo.refs.read(sync.tracking_ref(name, r)) == cid
            for r, cid in repo.refs.as_dict("refs/runs/").items()}
    n = sum(flags.values())
    waiting = [v for v, ok in flags.items() if not ok]
    if damage is not None:
        bad = len(damage["missing"]) + len(damage["corrupt"])
        summary = (f"{name} ({url}) is damaged: `lin verify` found {bad} object(s) missing or corrupt there "
                   f"({damage.get('time')}), so no version counts as backed up; `lin backup` sends them again")
    elif not versions:
        summary = f"to {name} ({url}); no versions yet"
    elif not waiting:
        summary = f"all {n} versions backed up to {name} ({url})"
    else:
        shown = ", ".join(waiting[:5]) + (f" and {len(waiting) - 5} more" if len(waiting) > 5 else "")
        summary = f"{n} of {len(versions)} versions backed up to {name} ({url}); not yet: {shown}"
    if pend:
        summary += f"; last backup failed ({pend.get('time')}): {pend.get('error')} -- run `lin backup`"
    return {**base, "url": url, "versions": flags, "runs": runs, "backed_up": n, "summary": summary}
