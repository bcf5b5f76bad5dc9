"""Publishing a version: the one path by which every new version enters a store.

``lin import``, ``lin commit``, ``Repo.commit_model`` (and so ``LineageCallback``) and the final
commit of ``lin train`` all call :func:`publish`. It runs the write order of docs/format.md
("Write ordering") under the store lock:

1. the caller's ``content`` writes the version's objects into one batch, which is made durable
   (``flush``) or, if anything fails, removed (``discard``): a failed commit leaves no objects;
2. the commit object, the version tag and the branch (or detached HEAD) move by compare-and-swap,
   each with its reflog line, and ``retire`` refs (a training run's ref) are removed with them;
3. a note for the audit journal (``Repo.notes``) says what was published.

Then, outside the lock, the repository's after-publish hooks run (``Repo.after_publish``: the
automatic backup; later the queue and the dashboard). A hook never undoes or fails the publish:
its outcome, or its error, is a field of the result. Checkpoints of training runs are not versions
but are announced to the same hooks through :func:`announce`.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .environment import read_env
from .errors import Conflict
from .ids import check_object_id
from .progress import NULL, Progress
from .repo import HeadMoved, HookFailure, PublishEvent, Repo
from .store import ObjectStore


@dataclass
class Published:
    """What :func:`publish` did; ``after`` holds each after-publish hook's outcome by its name."""

    id: str
    name: str
    kind: str
    parents: list[str]
    parent_names: list[str]
    tree: str
    datasets: list[str]
    new_objects: int
    new_bytes: int
    after: dict[str, Any] = field(default_factory=dict)
    head_moved: HeadMoved | None = None  # set when HEAD stayed where another command moved it


class BranchMoved(Conflict):
    """A version was published, but HEAD's branch moved meanwhile and does not lead to it."""

    def __init__(self, published: Published, message: str, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.published = published


def publish(repo: Repo, content: Callable[[ObjectStore], str], *, name: str, kind: str = "commit",
            parents: list[str] | None = None, datasets: list[str] | None = None,
            metrics: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
            code: dict[str, Any] | None = None, env: dict[str, Any] | None = None, message: str = "",
            extra: dict[str, Any] | None = None,
            activate: bool = True, retire: dict[str, str] | None = None, compression_level: int | None = None,
            expect_head: tuple[str | None, str | None] | None = None, progress: Progress = NULL,
            branch: str | None = None) -> Published:
    """Store a version's objects with ``content(batch) -> tree id``, then name and announce it.

    ``parents=None`` means the active version (HEAD), or none in an empty store. ``env`` defaults
    to :func:`environment`. ``retire`` maps refs to the value they must still have; they are
    deleted together with the publish (a committed training run). ``activate=False`` leaves HEAD
    and its branch where they are.

    HEAD's branch moves only if it is where it was when this publish began (or where
    ``expect_head`` says the caller's work began: a training run), or if the new version descends
    from where it is now. Otherwise the version is kept under its name, the branch stays, and
    :class:`BranchMoved` (exit 6) is raised after the hooks ran; it carries the result.
    ``branch`` (``refs/heads/<name>``): that branch moves by the same rule instead of HEAD's.
    """
    with repo.writing():
        if expect_head is None:
            expect_head = ((branch, repo.refs.resolve(branch)) if branch is not None
                           else (repo.head_branch(), repo.head()))
        if parents is None:
            head = repo.refs.resolve(branch) if branch is not None else repo.head()
            parents = [head] if head else []
        for p in parents:
            check_object_id(p)
            repo.commit(p)  # the parent must exist and verify
        batch = repo.objects.batch(compression_level)
        before = (batch.written_objects, batch.written_bytes)
        try:
            tree = content(batch)
            batch.flush()
        except BaseException:
            batch.discard()
            raise
        new = (batch.written_objects - before[0], batch.written_bytes - before[1])
        cid, commit, moved = repo.write_commit(
            tree=tree, parents=list(parents), name=name, kind=kind, datasets=datasets,
            metrics=metrics, params=params, code=code, env=environment() if env is None else env,
            message=message, extra=extra, move_head=activate, expect_head=expect_head, branch=branch)
        for ref, old in (retire or {}).items():
            repo.update_ref(ref, old, None, f"{kind}: published as {commit.name}")
        repo.notes.append(f"published {commit.name} ({cid[:12]}), {new[1]} new bytes")
    result = Published(id=cid, name=commit.name, kind=kind, parents=list(parents),
                       parent_names=[repo.name_of(p) or p[:12] for p in parents], tree=tree,
                       datasets=list(commit.datasets), new_objects=new[0], new_bytes=new[1], head_moved=moved)
    result.after = announce(repo, PublishEvent("version", cid, commit.name, progress))
    if moved is not None:
        raise _branch_moved(repo, result, moved)
    return result


def _branch_moved(repo: Repo, result: Published, moved: HeadMoved) -> BranchMoved:
    where = moved.branch.removeprefix("refs/heads/") if moved.branch else "HEAD"
    tip = repo.name_of(moved.tip) or moved.tip[:12]
    return BranchMoved(
        result,
        f"{result.name} was committed, but {where} moved to {tip} while it ran: {where} stays at {tip} "
        f"and {result.name} is kept under its name",
        hint=f"continue its line with `lin branch NAME {result.name}`, or check out {where} and commit again")


def announce(repo: Repo, event: PublishEvent) -> dict[str, Any]:
    """Run the repository's after-publish hooks for ``event``; their outcomes by hook name.

    A hook that raises (other than Ctrl-C) is reported as a :class:`HookFailure`: what was
    published stays published.
    """
    out: dict[str, Any] = {}
    for hook in repo.after_publish:
        try:
            outcome = hook(repo, event)
        except Exception as e:  # a hook never fails what was already published
            outcome = HookFailure(hook.name, f"{type(e).__name__}: {e}")
        if outcome is not None:
            out[hook.name] = outcome
    return out


def failure_text(name: str, outcome: Any) -> str:
    """``backup to origin failed: ...``: what a failed after-publish hook's outcome says
    (a :class:`HookFailure` names no remote)."""
    remote = getattr(outcome, "remote", None)
    return f"{name}{f' to {remote}' if remote else ''} failed: {outcome.error}"


# ---------------------------------------------------------------------- environment, code


def environment() -> dict[str, Any]:
    """Versions of what produced a model, without importing heavy packages."""
    import shutil
    env: dict[str, str | list[str] | None] = {"python": platform.python_version(), "platform": platform.platform(terse=True),
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
    if read_env("GIT_DIR"):
        return True
    p = Path(start)
    for d in (p, *p.parents):
        if os.path.lexists(os.path.join(d, ".git")):
            return True
    return False


def code_revision(path: os.PathLike[str] | str | None = None) -> dict[str, Any] | None:
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
