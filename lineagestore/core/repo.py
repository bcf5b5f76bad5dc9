"""The repository: a store folder (``.lineage/``) with its objects, refs, config and locks.

Finding a store works like git: ``--store PATH`` or ``LIN_STORE`` if given, else walk up from the
current folder looking for ``.lineage/``. Writing a commit follows one order (docs/format.md,
"Write ordering"): every object the commit names is stored first, then the commit object, then
the version tag, then the branch/HEAD. A crash between steps leaves only unreachable objects.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .settings import Config
from .errors import (AmbiguousRevision, InvalidInput, NotAStore, RefConflict, RevisionNotFound,
                     UnsupportedFormat)
from .fsutil import FileLock, atomic_write_bytes, clean_stale_temp
from .ids import check_object_id, is_id_prefix
from .names import check_name, parse_version, slug_from_user, version_name
from .objects import COMPRESSION_MODES, Commit
from .refs import DiskRefsContainer, MemoryRefsContainer, RefsContainer, who
from .store import DiskObjectStore, MemoryObjectStore, ObjectStore

FORMAT_VERSION = 1
STORE_DIRNAME = ".lineage"
DEFAULT_BRANCH = "main"
_REV_SUFFIX = re.compile(r"^(.*?)((?:~\d*|\^)+)$")


def compression_mode(config: Config) -> str:
    """``core.compression`` (auto | zstd | none), checked."""
    mode = config.get("core.compression", "auto")
    if mode not in COMPRESSION_MODES:
        where = config.path or "config.toml"
        raise InvalidInput(f"{where}: core.compression = {mode!r} is not one of {', '.join(COMPRESSION_MODES)}")
    return mode


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RefChange:
    ref: str
    old: str | None
    new: str | None


class Repo:
    """A lineage store. Build with :meth:`init`, :meth:`open`, :meth:`discover` or :meth:`memory`."""

    def __init__(self, objects: ObjectStore, refs: RefsContainer, config: Config,
                 path: Path | None = None):
        self.objects = objects
        self.refs = refs
        self.config = config
        self.path = path  # the store folder; None for a memory repo
        self.changes: list[RefChange] = []
        self._lock = FileLock(path / "locks" / "store.lock") if path else None

    # ------------------------------------------------------------------ construction

    @classmethod
    def init(cls, store: os.PathLike | str) -> "Repo":
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
        atomic_write_bytes(path / "format", f"{FORMAT_VERSION}\n".encode(), path / "tmp")
        return cls.open(path)

    @classmethod
    def open(cls, store: os.PathLike | str) -> "Repo":
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
        timeout = float(os.environ.get("LIN_LOCK_TIMEOUT", config.get("core.lock_timeout", 300)))
        objects = DiskObjectStore(path / "objects", path / "tmp", int(config.get("core.compression_level", 1)),
                                  compression_mode(config))
        refs = DiskRefsContainer(path, path / "tmp", path / "locks" / "refs.lock", timeout)
        return cls(objects, refs, config, path)

    @classmethod
    def discover(cls, start: os.PathLike | str | None = None, store: os.PathLike | str | None = None) -> "Repo":
        explicit = store or os.environ.get("LIN_STORE")
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
    def memory(cls) -> "Repo":
        refs = MemoryRefsContainer()
        refs._write_raw("HEAD", f"ref: refs/heads/{DEFAULT_BRANCH}")
        return cls(MemoryObjectStore(), refs, Config())

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
        wd = Path(self.config.get("core.work_dir", "model")).expanduser()
        return wd if wd.is_absolute() else self.root / wd

    def save_config(self) -> None:
        assert self.path is not None
        atomic_write_bytes(self.path / "config.toml", self.config.dumps().encode(), self.tmp_dir)

    @property
    def lock_timeout(self) -> float:
        return float(os.environ.get("LIN_LOCK_TIMEOUT", self.config.get("core.lock_timeout", 300)))

    @contextmanager
    def writing(self, on_wait=None) -> Iterator[None]:
        """Hold the store lock shared (every writer) for the duration of a write."""
        if self._lock is None:
            yield
            return
        with self._lock.held("shared", self.lock_timeout, on_wait):
            clean_stale_temp(self.tmp_dir)
            yield

    @contextmanager
    def exclusive(self, on_wait=None) -> Iterator[None]:
        """Hold the store lock exclusively (gc): no writer runs meanwhile."""
        if self._lock is None:
            yield
            return
        with self._lock.held("exclusive", self.lock_timeout, on_wait):
            clean_stale_temp(self.tmp_dir)
            yield

    def lock_holders(self):
        return self._lock.holders() if self._lock else []

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
        return {n[len("refs/tags/"):]: v for n, v in self.refs.as_dict("refs/tags/").items()}

    def versions(self) -> dict[str, str]:
        """Version names (``vNNN_slug``) -> commit ids, in version order."""
        vs = {n: v for n, v in self.tags().items() if parse_version(n)}
        return dict(sorted(vs.items(), key=lambda kv: parse_version(kv[0])[0]))  # type: ignore[index]

    def name_of(self, commit_id: str) -> str | None:
        """The version name of a commit (from the commit object itself)."""
        try:
            return self.commit(commit_id).name
        except Exception:  # noqa: BLE001 - a missing commit has no name
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
        return self.objects.get(commit_id, "commit")

    def ancestry(self, commit_id: str) -> Iterator[tuple[str, Commit]]:
        """The first-parent line from ``commit_id`` back to its root."""
        seen = set()
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
                except Exception:  # noqa: BLE001 - corrupt objects are not candidates
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
                     datasets: list[str] | None = None, metrics: dict | None = None,
                     params: dict | None = None, code: dict | None = None, env: dict | None = None,
                     message: str = "", extra: dict | None = None, move_head: bool = True,
                     author: str | None = None) -> tuple[str, Commit]:
        """Name, write and publish a commit whose tree and data objects are already stored.

        Under the refs lock: allocate ``vNNN``, write the commit object, create the immutable
        tag, then advance HEAD (the branch it points at, or HEAD itself when detached).
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
            if move_head:
                branch = self.head_branch()
                if branch is not None:
                    old = self.refs.resolve(branch)
                    self.update_ref(branch, old, cid, f"{kind}: {vname}")
                else:
                    self.set_head(None, cid, f"{kind}: {vname}")
        return cid, commit


# ---------------------------------------------------------------------- environment, code


def environment() -> dict:
    """Versions of what produced a model, without importing heavy packages."""
    import shutil
    env = {"python": platform.python_version(), "platform": platform.platform(terse=True),
           "lineagestore": _version("lineagestore")}
    for pkg in ("torch", "transformers", "tokenizers", "safetensors", "accelerate"):
        v = _version(pkg)
        if v:
            env[pkg] = v
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch, "cuda", None) is not None and torch.cuda.is_available():
        env["gpu"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    elif shutil.which("nvidia-smi"):
        import subprocess
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=5)
            gpus = [x.strip() for x in out.stdout.splitlines() if x.strip()]
            if gpus:
                env["gpu"] = gpus
        except (OSError, subprocess.SubprocessError):
            pass
    return env


def _version(pkg: str) -> str | None:
    """The installed version of ``pkg``, or None.

    Read from the ``<name>-<version>.dist-info`` folder names on ``sys.path`` (one listing per
    folder), which is what ``importlib.metadata.version`` finds too but without parsing every
    METADATA file: every commit records these, and a ``lin`` process should start fast.
    """
    v = _dist_versions().get(_norm_dist(pkg))
    if v is not None:
        return v
    import importlib.metadata
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _norm_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


_DIST_VERSIONS: dict[str, str] | None = None


def _dist_versions() -> dict[str, str]:
    global _DIST_VERSIONS
    if _DIST_VERSIONS is None:
        found: dict[str, str] = {}
        for entry in sys.path:
            try:
                names = os.listdir(entry or ".")
            except OSError:
                continue
            for n in names:
                if n.endswith(".dist-info") and "-" in n:
                    dist, _, ver = n[:-len(".dist-info")].partition("-")
                    found.setdefault(_norm_dist(dist), ver)  # first on sys.path wins, as imports do
        _DIST_VERSIONS = found
    return _DIST_VERSIONS


def _in_git_work_tree(start: str) -> bool:
    """Whether ``start`` or a folder above it has ``.git`` (a folder, or a file in worktrees)."""
    if os.environ.get("GIT_DIR"):
        return True
    p = Path(start)
    for d in (p, *p.parents):
        if os.path.lexists(os.path.join(d, ".git")):
            return True
    return False


def code_revision(path: os.PathLike | str | None = None) -> dict | None:
    """The git revision of the training code's repository (commit, dirty flag), via pygit2."""
    start = str(Path(path or os.getcwd()).absolute())
    if not _in_git_work_tree(start):  # no git repository: no need to load pygit2 (~30 ms)
        return None
    try:
        import pygit2
    except ImportError:  # pragma: no cover - pygit2 is a dependency
        return None
    try:
        found = pygit2.discover_repository(start)
        if not found:
            return None
        r = pygit2.Repository(found)
        if r.head_is_unborn:
            return {"path": r.workdir, "commit": None, "dirty": True, "branch": None}
        status = r.status(untracked_files="no")
        dirty = any(flags != pygit2.GIT_STATUS_CURRENT for flags in status.values())
        branch = None if r.head_is_detached else r.head.shorthand
        return {"path": (r.workdir or found).rstrip("/"), "commit": str(r.head.target),
                "dirty": dirty, "branch": branch}
    except (pygit2.GitError, KeyError, ValueError):
        return None
