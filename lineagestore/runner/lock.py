"""One runner per branch: ``locks/runner-<branch>.lock``, held for the life of a ``lin run``.

The kernel drops a flock when its process dies, so a killed runner never blocks the next one;
the lock's holder records (:class:`~lineagestore.core.fsutil.FileLock`) name who holds it.
"""

from __future__ import annotations

from ..core.errors import Refused
from ..core.fsutil import FileLock
from ..core.names import check_name
from ..core.repo import Repo


def lock_name(branch: str) -> str:
    """The lock file's name for ``branch`` (a branch name may hold ``/``; a file name may not)."""
    return check_name(f"runner-{branch.replace('/', '--')}", "runner lock name") + ".lock"


def hold_branch(repo: Repo, branch: str) -> FileLock | None:
    """Take the branch's runner lock at once, or refuse naming the runner that holds it."""
    if repo.path is None:  # an in-memory store has one process
        return None
    lock = FileLock(repo.path / "locks" / lock_name(branch))
    who = lock.take_now()
    if who is not None:
        raise Refused(f"a runner already trains branch {branch!r}: {who}",
                      hint="one `lin run` per branch; stop that one first, or run another branch (--branch)")
    return lock
