"""``lin doctor``: the risks to a store, in plain words. Reads only.

Each finding is a *risk* (something that can lose work: no backup, versions not backed up, a
nearly full disk, writable objects, store and work folder on one disk, a broken audit chain, a
zero grace period) or
*info* (worth knowing, harmless: leftovers of killed commands, what trash/ holds, checkpoints
holding more than ``train.checkpoint_share_warn`` of the store, whether the work folder shares
blocks with the store or holds a second copy).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..core import audit as _audit
from ..core.errors import LinError
from ..core.loose import work_sharing
from ..core.repo import Repo
from .fsck import leftovers, pack_leftovers
from .gc import plan as gc_plan
from .trash import trash_batches

GIB = 1 << 30


@dataclass
class Finding:
    level: str  # risk | info
    code: str  # a stable identifier for scripts
    message: str
    hint: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DoctorReport:
    store: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def risks(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "risk"]

    @property
    def ok(self) -> bool:
        return not self.risks

    def to_dict(self) -> dict:
        return {"store": self.store, "ok": self.ok, "findings": [f.to_dict() for f in self.findings]}


def _existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return path


def _active_size(repo: Repo) -> int:
    head = repo.head()
    if head is None:
        return 0
    try:
        tree = repo.objects.get(repo.commit(head).tree, "tree")
        return sum(e.size for e in tree.items())
    except LinError:
        return 0


def writable_objects(repo: Repo, limit: int = 5) -> tuple[int, list[str]]:
    """How many object files or folders have a write bit set, and a few of them."""
    assert repo.path is not None
    root = repo.path / "objects"
    count = 0
    examples: list[str] = []
    for d in sorted(os.listdir(root)) if root.is_dir() else []:
        folder = root / d
        if len(d) != 2 or not folder.is_dir():
            continue
        paths = [folder] + [folder / n for n in sorted(os.listdir(folder))]
        for p in paths:
            try:
                if p.lstat().st_mode & 0o222:
                    count += 1
                    if len(examples) < limit:
                        examples.append(str(p.relative_to(repo.path)))
            except FileNotFoundError:
                pass
    return count, examples


def diagnose(repo: Repo, *, min_free_ratio: float = 0.10, backup: dict | None = None) -> DoctorReport:
    """``backup``: the backup state as ``remote.backup.backup_status`` gives it (which versions a
    push or verify confirmed on the backup remote); without it, that is not judged."""
    assert repo.path is not None
    rep = DoctorReport(str(repo.path))
    rep.findings += _backup_findings(repo)
    rep.findings += _backup_state_findings(repo, backup)
    rep.findings += _disk_findings(repo, min_free_ratio)
    rep.findings += _writable_findings(repo)
    rep.findings += _same_disk_findings(repo)
    rep.findings += _sharing_findings(repo)
    rep.findings += _local_findings(repo)
    rep.findings += _settings_findings(repo)
    rep.findings += _audit_findings(repo)
    rep.findings += _pack_findings(repo)
    rep.findings += _leftover_findings(repo)
    rep.findings += _checkpoint_findings(repo)
    return rep


def _backup_findings(repo: Repo) -> list[Finding]:
    """A backup remote is configured, exists, and is not a folder on the store's own disk."""
    out: list[Finding] = []
    add = out.append
    remotes = repo.settings.remotes
    backup = repo.settings.backup.remote
    if not backup:
        add(Finding("risk", "no-backup",
                    "No backup remote is configured: this disk holds the only copy of every version. "
                    "A failed disk, or an `rm -rf` of the store, loses all of them."
                    + (f" (remotes exist: {', '.join(sorted(remotes))}, but none is the backup)" if remotes else ""),
                    "add a remote on S3, MinIO or another disk and make it the backup: "
                    "`lin remote add NAME URL --backup` (or `lin backup --set NAME` for an existing one)"))
    elif backup not in remotes:
        add(Finding("risk", "backup-unknown", f"backup.remote is {backup!r}, but no remote of that name exists",
                    "check [remote] in .lineage/config.toml"))
    elif (folder := _backup_folder_on_store_disk(repo)) is not None:
        add(Finding("risk", "backup-same-disk",
                    f"The backup remote {backup!r} is a folder ({folder}) on the "
                    f"same disk as the store: it survives an `rm -rf` of the store, not a failed disk.",
                    "back up to S3, MinIO or another disk or machine: `lin remote add NAME URL --backup`"))
    return out


def _backup_state_findings(repo: Repo, state: dict | None) -> list[Finding]:
    """Every version is backed up, as a push or ``lin verify`` confirmed, and verify has not
    found the backup remote damaged since."""
    backup = repo.settings.backup.remote
    if not state or not backup or backup not in repo.settings.remotes:
        return []
    damage = state.get("damaged")
    if damage:
        n = len(damage.get("missing", [])) + len(damage.get("corrupt", []))
        return [Finding("risk", "backup-damaged",
                        f"`lin verify` found {n} object(s) missing or corrupt on the backup remote {backup!r} "
                        f"({damage.get('time')}): no version counts as backed up until they are there again.",
                        "`lin backup` checks every object the versions need on the remote and sends those "
                        "missing or corrupt again")]
    waiting = [v for v, ok in (state.get("versions") or {}).items() if not ok]
    if not waiting:
        return []
    shown = ", ".join(waiting[:5]) + (f" and {len(waiting) - 5} more" if len(waiting) > 5 else "")
    return [Finding("risk", "backup-behind",
                    f"{len(waiting)} of {len(state['versions'])} versions are not backed up to {backup!r} "
                    f"(no push has confirmed that the remote holds them): {shown}.",
                    "`lin backup` pushes them now")]


def _backup_folder_on_store_disk(repo: Repo) -> str | None:
    """The backup remote's folder, when it is one on the store's filesystem (else None: S3, or
    a folder on another filesystem, a second disk or a network mount)."""
    spec = repo.settings.remotes.get(repo.settings.backup.remote or "")
    if spec is None or spec.url.startswith("s3://") or repo.path is None:
        return None
    folder = Path(urlsplit(spec.url).path if spec.url.startswith("file://") else spec.url)
    try:  # a folder not made yet is where a push will make it
        same = os.stat(repo.path).st_dev == os.stat(_existing(folder)).st_dev
    except OSError:
        return None
    return spec.url if same else None


def _backup_elsewhere(repo: Repo) -> bool:
    """A backup remote is configured, and it is not on the store's disk."""
    backup = repo.settings.backup.remote
    return bool(backup) and backup in repo.settings.remotes and _backup_folder_on_store_disk(repo) is None


def _disk_findings(repo: Repo, min_free_ratio: float) -> list[Finding]:
    """Enough free disk for another version of the active model's size."""
    out: list[Finding] = []
    add = out.append
    assert repo.path is not None  # doctor runs on a store on disk
    usage = shutil.disk_usage(repo.path)
    need = 2 * _active_size(repo)
    free_ratio = usage.free / usage.total if usage.total else 1.0
    if usage.free < need or free_ratio < min_free_ratio:
        why = (f"less than twice the size of the active version ({_fmt(need // 2)})" if usage.free < need
               else f"{free_ratio:.0%} of the disk")
        add(Finding("risk", "low-disk", f"Little free disk: {_fmt(usage.free)} free, {why}. "
                    "A commit that runs out of space fails cleanly, but training output may not.",
                    "free some space, or empty trash/ (lin gc --confirm --empty-trash)"))
    return out


def _writable_findings(repo: Repo) -> list[Finding]:
    """Object files and folders are read-only."""
    out: list[Finding] = []
    add = out.append
    n, examples = writable_objects(repo)
    if n:
        add(Finding("risk", "writable-objects",
                    f"{n} object file(s) or folder(s) are writable (e.g. {', '.join(examples)}): a script or "
                    "an editor could change a stored version in place.",
                    "make them read-only again: chmod -R a-w .lineage/objects"))
    return out


def _same_disk_findings(repo: Repo) -> list[Finding]:
    """The store and the work folder are not on one disk, or a backup elsewhere holds the versions."""
    out: list[Finding] = []
    add = out.append
    work = repo.work_dir()
    assert repo.path is not None  # doctor runs on a store on disk
    try:
        same = os.stat(repo.path).st_dev == os.stat(_existing(work)).st_dev
    except OSError:
        same = False
    if same and _backup_elsewhere(repo):  # the default layout, made safe by the backup
        add(Finding("info", "same-disk",
                    f"The store ({repo.path}) and the work folder ({work}) are on the same disk; the backup "
                    f"remote {repo.settings.backup.remote!r} keeps every version if that disk fails."))
    elif same:
        add(Finding("risk", "same-disk",
                    f"The store ({repo.path}) and the work folder ({work}) are on the same disk: one disk "
                    "failure loses the model you are working on and every stored version together.",
                    "keep a backup remote on another disk or machine (see no-backup)"))
    return out


def _sharing_findings(repo: Repo) -> list[Finding]:
    """Whether a checkout into the work folder shares blocks with the store or writes a copy."""
    assert repo.path is not None
    work = repo.work_dir()
    share = work_sharing(repo.tmp_dir, work)
    if share.shares:
        return [Finding("info", "work-shares",
                        f"The work folder ({work}) shares blocks with the store ({share.reason}): a checkout "
                        "of a raw version costs no second copy on disk.")]
    return [Finding("info", "work-copies",
                    f"Each checkout writes a full copy of the version into the work folder ({work}): "
                    f"{share.reason}, so the disk holds every checked-out model twice.",
                    "keep the store and the work folder on one filesystem with reflinks (XFS made with "
                    "`mkfs.xfs -m reflink=1`, Btrfs): weights stored there are shared, not copied")]


def _local_findings(repo: Repo) -> list[Finding]:
    """How much of the store is here and how much only on the remote (core.local_versions)."""
    from .drop import local_summary
    n = repo.settings.core.local_versions
    s = local_summary(repo)
    if not s.dropped_objects and not n:
        return []
    store = repo.objects
    local = sum(store.stored_size(o) for o in store.iter_ids())
    if not s.dropped_objects:
        return [Finding("info", "local-all", f"Every object is local ({_fmt(local)}); core.local_versions = {n}: "
                        "`lin repack --drop` drops older weights once the backup remote is verified to hold them.")]
    return [Finding("info", "local-dropped",
                    f"Local: {_fmt(local)} stored here. On the remote only ({', '.join(s.remotes)}): "
                    f"{s.dropped_objects} weight objects, {_fmt(s.dropped_bytes)}, held only once there "
                    f"(dropped here by core.local_versions = {n}); `lin fsck --remote {s.remotes[0]}` checks them.")]


def _settings_findings(repo: Repo) -> list[Finding]:
    """The gc settings are not dangerously short (config.toml is checked when the store opens)."""
    out: list[Finding] = []
    gc = repo.settings.gc
    if gc.grace_s < 86400:
        out.append(Finding("risk", "short-grace", f"gc.grace_days is {gc.grace_days}: "
                           "objects unreachable for less than a day can be moved to trash",
                           "use 14 (the default) unless disk space forces otherwise"))
    if gc.reflog_expire_s < 7 * 86400:
        out.append(Finding("info", "short-reflog", "gc.reflog_expire_days is under a week: removed names "
                           "stop protecting their versions soon after removal"))
    return out


def _audit_findings(repo: Repo) -> list[Finding]:
    """The audit chain verifies."""
    out: list[Finding] = []
    add = out.append
    chk = _audit.verify(repo)
    if not chk.ok:
        add(Finding("risk", "audit", f"the audit log does not verify: {chk.problems[0]}",
                    "someone edited, reordered or truncated .lineage/audit.log; see `lin audit --verify`"))
    return out


def _pack_findings(repo: Repo) -> list[Finding]:
    """Packs lin cannot read (a refused index, a pack without its index): what they hold is
    unreadable until they are whole again (cheap to see; `lin fsck` checks every byte)."""
    from ..core.store import DiskObjectStore
    store = repo.objects
    if not isinstance(store, DiskObjectStore):
        return []
    store.packs.packs()  # (scans the folder: fills .bad)
    out = [Finding("risk", "pack-refused", f"objects/pack/{name}: {why}",
                   "its objects cannot be read; run `lin fsck`, and `lin fsck --repair` to fetch them from a remote")
           for name, why in sorted(store.packs.bad.items())]
    problems, _ = pack_leftovers(repo)
    out += [Finding("risk", "pack-without-index", p.message, "run `lin fsck`") for p in problems]
    return out


def _leftover_findings(repo: Repo) -> list[Finding]:
    """Leftovers of killed commands (recovered automatically), and what trash/ holds."""
    out: list[Finding] = []
    add = out.append
    for note in leftovers(repo):
        add(Finding("info", note.kind, note.message))
    batches = trash_batches(repo)
    if batches:
        total = sum(f.stat().st_size for b in batches for f in b.rglob("*") if f.is_file())
        add(Finding("info", "trash", f"trash/ holds {len(batches)} batch(es), {_fmt(total)}; "
                    "`lin gc` lists them, `lin restore ID` brings objects back"))
    return out


def _checkpoint_findings(repo: Repo) -> list[Finding]:
    """Checkpoints (of runs in progress, the last one of ended runs, and those gc may collect)
    hold at most ``train.checkpoint_share_warn`` of the store's bytes."""
    limit = repo.settings.train.checkpoint_share_warn
    if limit >= 1:
        return []
    p = gc_plan(repo)
    runs = [h for h in p.holders if h.kind == "run"]
    waiting = [g for g in p.groups if g.kind == "checkpoint"]
    held = sum(h.bytes for h in runs) + sum(g.eligible_bytes + g.kept_bytes for g in waiting)
    if not p.bytes or held <= limit * p.bytes:
        return []
    parts = [f"{h.name} {_fmt(h.bytes)}" for h in runs[:3]]
    if waiting:
        parts.append(f"{_fmt(sum(g.eligible_bytes + g.kept_bytes for g in waiting))} unreachable, "
                     f"{_fmt(sum(g.eligible_bytes for g in waiting))} of it collectable now")
    return [Finding("info", "checkpoint-share",
                    f"Checkpoints of training runs hold {held / p.bytes:.0%} of the store ({_fmt(held)} of "
                    f"{_fmt(p.bytes)}; over train.checkpoint_share_warn = {limit:g}): " + "; ".join(parts),
                    "`lin gc` shows what keeps them and `lin gc --confirm` moves collectable ones to trash/; "
                    "`lin runs abandon RUN` ends a run you will not resume; a run in progress keeps its last "
                    "train.keep_checkpoints, an ended one its last checkpoint until gc.reflog_expire_days")]


def _fmt(n: int) -> str:
    x = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if x < 1000 or unit == "TB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1000
    return f"{x:.1f} TB"
