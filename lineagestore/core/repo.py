"""The repository: a store folder (``.lineage/``) with its objects, refs, config and locks.

Finding a store works like git: ``--store PATH`` or ``LIN_STORE`` if given, else walk up from the
current folder looking for ``.lineage/``. Writing a commit follows one order (docs/format.md,
"Write ordering"): every object the commit names is stored first, then the commit object, then
the version tag, then the branch/HEAD. A crash between steps leaves only unreachable objects.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .environment import read_env
from .errors import (
    AmbiguousRevision,
    InvalidInput,
    LinError,
    NoSpace,
    NotAStore,
    RefConflict,
    RevisionNotFound,
    UnsupportedFormat,
)
from .fsutil import FileLock, OnWait, atomic_write_bytes, clean_stale_temp, is_nospace
from .ids import ObjectId, check_object_id, is_id_prefix
from .names import check_name, parse_version, slug_from_user, version_name
from .objects import Commit
from .refs import DiskRefsContainer, MemoryRefsContainer, RefsContainer, who
from .settings import Config, Settings, lock_timeout
from .store import DiskObjectStore, MemoryObjectStore, ObjectStore

# The store's ``format`` file holds the lowest version of lin that reads it. A store is upgraded
# (the number raised) only when it first holds what an older lin would misread; docs/format.md,
# "Changes", says what each number adds. FORMAT_VERSION is the newest this lin reads.
FORMATS: dict[int, str] = {
    1: "loose objects, refs, reflogs, audit log, trash",
    2: "training queues (refs/queues/) and their loop state",
    3: "model-aware codecs (byte planes, deltas) and packs",
    4: "per-step training series and evaluation notes",
}
FORMAT_VERSION = max(FORMATS)
STORE_DIRNAME = ".lineage"
DEFAULT_BRANCH = "main"
_REV_SUFFIX = re.compile(r"^(.*?)((?:~\d*|\^)+)$")


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _ReadSnapshot:
    commits: dict[str, Commit] = field(default_factory=dict)
    tags: dict[str, str] | None = None


@dataclass
class RefChange:
    ref: str
    old: str | None
    new: str | None


@dataclass
class HeadMoved:
    """HEAD's branch (or a detached HEAD) moved to ``tip`` while a commit ran, away from ``expected``."""

    branch: str | None
    tip: str
    expected: str | None


@dataclass
class PublishEvent:
    """Something new landed: a ``version`` (published) or a training run's ``checkpoint``."""

    what: str
    id: str
    name: str
    progress: Any = None  # a Progress, for hooks with long work (a backup's upload)


@dataclass
class HookFailure:
    """An after-publish hook raised; what was published stays."""

    hook: str
    error: str
    ok: bool = False


class AfterPublish(Protocol):
    """Work that follows every publish (``core/publish.py``), registered in ``Repo.after_publish``.

    It returns an outcome for the caller to report (or None when it had nothing to do) and
    should not raise: a raise is reported as a :class:`HookFailure`.
    """

    name: str

    def __call__(self, repo: Repo, event: PublishEvent) -> Any: ...


class Repo:
    """A lineage store. Build with :meth:`init`, :meth:`open`, :meth:`discover` or :meth:`memory`."""

    def __init__(self, objects: ObjectStore, refs: RefsContainer, config: Config,
                 path: Path | None = None):
        self.objects = objects
        self.refs = refs
        self.config = config
        self.path = path  # the store folder; None for a memory repo
        self.changes: list[RefChange] = []  # every ref this Repo object moved: the audit entry's refs
        self.notes: list[str] = []  # what it did besides moving refs: the audit entry's notes
        self.after_publish: list[AfterPublish] = []  # hooks run by core/publish.py
        self._lock = FileLock(path / "locks" / "store.lock") if path else None
        self.format_version = FORMAT_VERSION if path is None else 1  # set by ``open``
        self._snapshot: _ReadSnapshot | None = None  # see ``snapshot_reads``
        objects.delta_max_depth = config.settings.core.delta_max_depth
        objects.before_new_codec = lambda: self.require_format(3)  # planes and delta codecs: format 3

    # ------------------------------------------------------------------ construction

    @classmethod
    def init(cls, store: os.PathLike[str] | str) -> Repo:
        """Create a store at ``store`` (the ``.lineage`` folder itself)."""
        path = Path(store).absolute()
        if (path / "format").exists():
            raise RefConflict(f"{path}: a lineage store already exists here")
        if path.exists() and any(path.iterdir()):
            raise InvalidInput(f"{path}: folder exists and is not empty; refusing to create a store in it")
        for sub in ("objects", "refs/heads", "refs/tags", "refs/runs", "logs", "trash", "locks", "tmp", "cache"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path / "config.toml", Config().dumps().encode(), path / "tmp")
        atomic_write_bytes(path / "HEAD", f"ref: refs/heads/{DEFAULT_BRANCH}\n".encode(), path / "tmp")
        # the format file is written last: a half-initialized folder is not a store
        atomic_write_bytes(path / "format", b"1\n", path / "tmp")  # raised by require_format
        return cls.open(path)

    @classmethod
    def open(cls, store: os.PathLike[str] | str) -> Repo:
        path = Path(store).absolute()
        fmt = path / "format"
        try:
            text = fmt.read_text().strip()
        except FileNotFoundError:
            raise NotAStore(f"{path}: not a lineage store (no format file)",
                            hint="run `lin init` to create one") from None
        try:
            version = int(text)
        except ValueError:
            raise NotAStore(f"{fmt}: unreadable format version {text!r}") from None
        if version > FORMAT_VERSION:
            raise UnsupportedFormat(f"{path}: store format version {version} is newer than this lin "
                                    f"understands ({FORMAT_VERSION})", hint="upgrade lineagestore")
        config = Config.load(path / "config.toml")
        core = config.settings.core
        objects = DiskObjectStore(path / "objects", path / "tmp", core.compression_level, core.compression)
        refs = DiskRefsContainer(path, path / "tmp", path / "locks" / "refs.lock", lock_timeout(config.settings))
        repo = cls(objects, refs, config, path)
        repo.format_version = version
        return repo

    @classmethod
    def discover(cls, start: os.PathLike[str] | str | None = None, store: os.PathLike[str] | str | None = None) -> Repo:
        explicit = store or read_env("LIN_STORE")
        if explicit:
            return cls.open(explicit)
        here = Path(start or os.getcwd()).absolute()
        for folder in (here, *here.parents):
            candidate = folder / STORE_DIRNAME
            if (candidate / "format").is_file():
                return cls.open(candidate)
        raise NotAStore(f"not inside a lineage store (no {STORE_DIRNAME}/ in {here} or any parent)",
                        hint="run `lin init` here, or pass --store PATH / set LIN_STORE")

    @classmethod
    def memory(cls) -> Repo:
        refs = MemoryRefsContainer()
        refs._write_raw("HEAD", f"ref: refs/heads/{DEFAULT_BRANCH}")
        config = Config()
        core = config.settings.core
        return cls(MemoryObjectStore(core.compression_level, core.compression), refs, config)

    # ------------------------------------------------------------------ paths, locks, config

    @property
    def root(self) -> Path:
        """The folder that holds the store (relative work folders are resolved against it)."""
        assert self.path is not None
        return self.path.parent

    @property
    def tmp_dir(self) -> Path:
        assert self.path is not None
        return self.path / "tmp"

    @property
    def cache_dir(self) -> Path:
        assert self.path is not None
        d = self.path / "cache"
        d.mkdir(exist_ok=True)
        return d

    def work_dir(self) -> Path:
        wd = Path(self.settings.core.work_dir).expanduser()
        return wd if wd.is_absolute() else self.root / wd

    def save_config(self) -> None:
        assert self.path is not None
        atomic_write_bytes(self.path / "config.toml", self.config.dumps().encode(), self.tmp_dir)

    @property
    def settings(self) -> Settings:
        """config.toml, typed and checked (rebuilt when ``config.set`` changes a key)."""
        return self.config.settings

    @property
    def lock_timeout(self) -> float:
        return lock_timeout(self.settings)

    @contextmanager
    def writing(self, on_wait: OnWait | None = None) -> Iterator[None]:
        """Hold the store lock shared (every writer) for the duration of a write."""
        if self._lock is None:
            yield
            return
        with self._lock.held("shared", self.lock_timeout, on_wait):
            clean_stale_temp(self.tmp_dir)
            yield

    @contextmanager
    def exclusive(self, on_wait: OnWait | None = None) -> Iterator[None]:
        """Hold the store lock exclusively (gc): no writer runs meanwhile."""
        if self._lock is None:
            yield
            return
        with self._lock.held("exclusive", self.lock_timeout, on_wait):
            clean_stale_temp(self.tmp_dir)
            yield

    def store_holding(self, path: os.PathLike[str] | str) -> Path | None:
        """The store ``path`` (symlinks resolved) lies in, or None: this store wherever it is, any
        folder named ``.lineage``, or any folder holding a store's ``format`` and ``objects/``.
        lin never takes its input from a store's files (they change under it: tmp/ is swept,
        objects are repacked) nor writes a version into one."""
        real = Path(path).resolve()
        store = self.path.resolve() if self.path is not None else None
        for p in (real, *real.parents):
            if p == store or p.name.casefold() == STORE_DIRNAME or ((p / "format").is_file() and (p / "objects").is_dir()):
                return p
        return None

    def require_format(self, version: int) -> None:
        """Raise the store's ``format`` to ``version`` before writing what needs it (no-op if there).

        Called before the first object or ref of a newer kind is written, so an older lin refuses
        the store ("format N is newer") instead of misreading it. The number only ever rises;
        concurrent upgrades serialize on ``locks/format.lock`` and keep the larger number.
        """
        if version not in FORMATS or version > FORMAT_VERSION:
            raise ValueError(f"unknown store format {version}")
        if self.path is None or self.format_version >= version:
            return
        with FileLock(self.path / "locks" / "format.lock").held("exclusive", self.lock_timeout):
            fmt = self.path / "format"
            try:
                current = int(fmt.read_text().strip())
            except (OSError, ValueError):
                current = 1
            if current < version:
                atomic_write_bytes(fmt, f"{version}\n".encode(), self.tmp_dir)
                self.notes.append(f"store format {current} -> {version} ({FORMATS[version]})")
                current = version
            self.format_version = current

    # ------------------------------------------------------------------ refs

    def update_ref(self, name: str, old: str | None, new: str | None, message: str) -> None:
        self.refs.set_if_equals(name, old, new, message)
        self.changes.append(RefChange(name, old, new))

    def head(self) -> str | None:
        return self.refs.resolve("HEAD")

    def head_branch(self) -> str | None:
        """``refs/heads/<name>`` HEAD points at, or None when HEAD is detached."""
        return self.refs.symbolic_target("HEAD")

    def set_head(self, rev_ref: str | None, commit_id: str, message: str) -> None:
        """Make a version active: attach HEAD to a branch, or detach it at a commit."""
        old = self.head()
        if rev_ref is not None and rev_ref.startswith("refs/heads/"):
            self.refs.set_symbolic("HEAD", rev_ref, message)
        else:
            self.refs.detach("HEAD", commit_id, message)
        self.changes.append(RefChange("HEAD", old, commit_id))

    def branches(self) -> dict[str, str]:
        return {n[len("refs/heads/"):]: v for n, v in self.refs.as_dict("refs/heads/").items()}

    def tags(self) -> dict[str, str]:
        snap = self._snapshot
        if snap is not None and snap.tags is not None:
            return dict(snap.tags)
        tags = {n[len("refs/tags/"):]: v for n, v in self.refs.as_dict("refs/tags/").items()}
        if snap is not None:
            snap.tags = tags
            return dict(tags)
        return tags

    @contextmanager
    def snapshot_reads(self) -> Iterator[None]:
        """Within the block, each commit is read (and verified) once and the tags are listed once.

        For a reader that walks every commit from several places (the dashboard gathers the
        journey, the ledger, the stats and the backup state): the walks cost one read, and every
        part sees the same tags even while another process writes the store. Commits are
        immutable, so only the tag listing can be stale, by the length of the block.
        """
        if self._snapshot is not None:  # nested: the outer snapshot holds
            yield
            return
        self._snapshot = _ReadSnapshot()
        try:
            yield
        finally:
            self._snapshot = None

    def versions(self) -> dict[str, str]:
        """Version names (``vNNN_slug``) -> commit ids, in version order."""
        numbered = [(p[0], n, v) for n, v in self.tags().items() if (p := parse_version(n))]
        return {n: v for _, n, v in sorted(numbered, key=lambda t: t[0])}

    def name_of(self, commit_id: str) -> str | None:
        """The version name of a commit (from the commit object itself)."""
        try:
            return self.commit(commit_id).name
        except Exception:  # a missing commit has no name
            return None

    def next_version_number(self) -> int:
        """1 + the highest number ever used in this store (removed names included, via reflogs)."""
        used = [0]
        for n in self.tags():
            p = parse_version(n)
            if p:
                used.append(p[0])
        for n in self.refs.reflog_names():
            if n.startswith("refs/tags/"):
                p = parse_version(n[len("refs/tags/"):])
                if p:
                    used.append(p[0])
        return max(used) + 1

    # ------------------------------------------------------------------ objects

    def commit(self, commit_id: str) -> Commit:
        snap = self._snapshot
        if snap is None:
            return self.objects.get(commit_id, "commit")
        c = snap.commits.get(commit_id)
        if c is None:
            c = snap.commits[commit_id] = self.objects.get(commit_id, "commit")
        return c

    def ancestry(self, commit_id: str) -> Iterator[tuple[str, Commit]]:
        """The first-parent line from ``commit_id`` back to its root."""
        seen: set[str] = set()
        cur: str | None = commit_id
        while cur and cur not in seen:
            seen.add(cur)
            c = self.commit(cur)
            yield cur, c
            cur = c.parents[0] if c.parents else None

    def all_ancestors(self, commit_id: str) -> Iterator[tuple[str, Commit]]:
        """Every ancestor (all parents), each once, newest first by traversal."""
        seen: set[str] = set()
        stack = [commit_id]
        while stack:
            cur = stack.pop()
            if cur in seen:
                continue
            seen.add(cur)
            c = self.commit(cur)
            yield cur, c
            stack.extend(reversed(c.parents))

    # ------------------------------------------------------------------ revisions

    def resolve(self, rev: str) -> str:
        """A revision -> commit id. See docs/cli.md "Revisions"."""
        if not isinstance(rev, str) or not rev or "\0" in rev:
            raise RevisionNotFound(f"invalid revision {rev!r}")
        m = _REV_SUFFIX.match(rev)
        if m and m.group(1):
            base, suffix = m.group(1), m.group(2)
            cid = self._resolve_base(base)
            for step in re.findall(r"~\d*|\^", suffix):
                n = 1 if step in ("~", "^") else int(step[1:])
                for _ in range(n):
                    parents = self.commit(cid).parents
                    if not parents:
                        raise RevisionNotFound(f"revision {rev!r}: {self.name_of(cid) or cid[:12]} has no parent")
                    cid = parents[0]
            return cid
        return self._resolve_base(rev)

    def _resolve_base(self, rev: str) -> str:
        if rev in ("HEAD", "@"):
            h = self.head()
            if h is None:
                raise RevisionNotFound("HEAD points at nothing yet: this store has no versions",
                                       hint="import a model with `lin import DIR --name NAME`")
            return h
        if rev.startswith("refs/"):
            v = self.refs.resolve(rev)
            if v:
                return v
            raise RevisionNotFound(f"no such ref {rev!r}")
        try:
            check_name(rev, "revision")
            valid_name = True
        except InvalidInput:
            valid_name = False
        if valid_name:
            for prefix in ("refs/tags/", "refs/heads/"):
                v = self.refs.resolve(prefix + rev)
                if v:
                    return v
        candidates: dict[str, str] = {}
        if valid_name:
            for name, cid in self.tags().items():
                if name.startswith(rev) and (parse_version(name) or name.startswith(rev + "_")):
                    candidates[name] = cid
        if is_id_prefix(rev.lower()) and len(rev) >= 4:
            for oid in self.objects.resolve_prefix(rev.lower()):
                try:
                    if self.objects.header(oid).type == "commit":
                        candidates[oid[:12]] = oid
                except Exception:  # corrupt objects are not candidates
                    continue
        distinct = set(candidates.values())
        if len(distinct) == 1:
            return distinct.pop()
        if len(distinct) > 1:
            raise AmbiguousRevision(rev, sorted(candidates))
        raise RevisionNotFound(f"unknown revision {rev!r}",
                               hint="see `lin log --all` for version names")

    # ------------------------------------------------------------------ writing commits

    def write_commit(self, *, tree: str, parents: list[str], name: str, kind: str = "commit",
                     datasets: list[str] | None = None, metrics: dict[str, Any] | None = None,
                     params: dict[str, Any] | None = None, code: dict[str, Any] | None = None,
                     env: dict[str, Any] | None = None, message: str = "", extra: dict[str, Any] | None = None,
                     move_head: bool = True,
                     expect_head: tuple[str | None, str | None] | None = None,
                     author: str | None = None,
                     branch: str | None = None) -> tuple[ObjectId, Commit, HeadMoved | None]:
        """Name, write and publish a commit whose tree and data objects are already stored.

        Under the refs lock: allocate ``vNNN``, write the commit object, create the immutable
        tag, then advance HEAD (the branch it points at, or HEAD itself when detached).
        ``expect_head`` is (HEAD's branch, its tip) as the caller saw them when its work began.
        HEAD advances only if it is still there, or if the new commit descends from where it is
        now; otherwise the version stays under its name, HEAD does not move, and the third
        value says where HEAD went meanwhile (a branch never moves sideways). ``branch``
        (``refs/heads/<name>``): advance that branch instead of HEAD's, by the same rule (a runner
        of another branch trains beside the active one).
        """
        check_object_id(tree)
        for p in parents:
            check_object_id(p)
        check_name(name, "version name")
        with self.refs.locked():
            number = self.next_version_number()
            slug = slug_from_user(name, number)
            vname = version_name(number, slug)
            commit = Commit(tree=tree, parents=list(parents), name=vname, kind=kind,
                            datasets=list(datasets or []), metrics=dict(metrics or {}),
                            params=dict(params or {}), code=code, env=dict(env or {}),
                            author=author or who(), created=utc_now(), message=message,
                            extra=dict(extra or {}))
            cid = self.objects.put_object(commit)
            self.update_ref(f"refs/tags/{vname}", None, cid, f"{kind}: {vname}")
            try:
                moved = (self._advance_head(cid, commit, expect_head, f"{kind}: {vname}", branch)
                         if move_head else None)
            except (LinError, OSError) as e:  # the version exists: say so, never report a plain failure
                raise _created_but(e, vname) from e
        return cid, commit, moved

    def _advance_head(self, cid: str, commit: Commit, expect: tuple[str | None, str | None] | None,
                      message: str, branch: str | None = None) -> HeadMoved | None:
        if branch is None:
            branch = self.head_branch()
            tip = self.refs.resolve(branch) if branch is not None else self.head()
        else:
            tip = self.refs.resolve(branch)
        if expect is not None and (branch, tip) != expect and tip is not None and not self._descends(commit, tip):
            return HeadMoved(branch, tip, expect[1])
        if branch is not None:
            self.update_ref(branch, tip, cid, message)
        else:
            self.set_head(None, cid, message)
        return None

    def _descends(self, commit: Commit, ancestor: str) -> bool:
        """Whether ``ancestor`` is among the ancestors of ``commit`` (all parents, walked once)."""
        seen: set[str] = set()
        stack = list(commit.parents)
        while stack:
            cur = stack.pop()
            if cur == ancestor:
                return True
            if cur not in seen:
                seen.add(cur)
                stack.extend(self.commit(cur).parents)
        return False


def _created_but(e: BaseException, vname: str) -> LinError:
    """The error of a commit whose version was created but whose branch (or HEAD) did not move."""
    if isinstance(e, LinError) and type(e).__init__ is LinError.__init__:
        cls: type[LinError] = type(e)  # keeps its exit code
    else:
        cls = NoSpace if is_nospace(e) else LinError
    err = cls(f"{vname} was created, but the active branch could not be moved to it: {e}",
              hint=f"free the cause, then make it active with `lin checkout {vname}`")
    return err
