"""One error hierarchy for the whole package.

Every error a user can cause or meet derives from :class:`LinError` and carries an ``exit_code``;
the CLI maps errors to exit codes in one place (``lineagestore.cli.output``). Errors inherit a
matching builtin where one exists, so library users can catch ``FileNotFoundError`` or
``ValueError`` as they would anywhere else.

Exit codes (documented in docs/cli.md):

====  =======================================================================
code  meaning
====  =======================================================================
0     success
1     a check failed (fsck found problems, a plan check failed, verify failed)
2     usage error (bad flags; typer's own code)
3     not found: path, revision, object, remote, dataset
4     invalid input: bad name, malformed file, pickle weights, bad data
5     integrity: a corrupt or missing object in the store
6     conflict: a ref changed underneath, a name exists, a remote refused a push
7     refused by a guardrail: protected version, data already trained, confirmation missing
8     lock timeout: another lin process holds the store
9     no space left on device
10    not a store, or a store format this program does not understand
11    remote or network error
12    the training queue is paused (``lin run``: the machine or the store needs a fix first)
130   interrupted (Ctrl-C)
====  =======================================================================
"""

from __future__ import annotations


class LinError(Exception):
    """Base class of every lineagestore error."""

    exit_code = 1
    #: a short hint printed after the message (how to fix it), or ``None``
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class CheckFailed(LinError):
    exit_code = 1


class NotFound(LinError, FileNotFoundError):
    exit_code = 3


class RevisionNotFound(NotFound, LookupError):
    pass


class ObjectNotFound(NotFound):
    exit_code = 5


class AmbiguousRevision(LinError, LookupError):
    exit_code = 3

    def __init__(self, rev: str, candidates: list[str]):
        shown = ", ".join(candidates[:10]) + (" ..." if len(candidates) > 10 else "")
        super().__init__(f"revision {rev!r} is ambiguous: {shown}",
                         hint="give more characters or the full name")
        self.candidates = candidates


class InvalidInput(LinError, ValueError):
    exit_code = 4


class InvalidName(InvalidInput):
    pass


class MalformedFile(InvalidInput):
    pass


class PickleRefused(InvalidInput):
    pass


class CorruptObject(LinError):
    exit_code = 5


class Conflict(LinError):
    exit_code = 6


class RefConflict(Conflict):
    pass


class Refused(LinError, PermissionError):
    exit_code = 7


class NothingToCommit(Refused):
    """A commit whose files are those of its parent (``--allow-empty`` makes it anyway)."""


class LockTimeout(LinError, TimeoutError):
    exit_code = 8


class NoSpace(LinError, OSError):
    exit_code = 9


class NotAStore(LinError):
    exit_code = 10


class UnsupportedFormat(NotAStore):
    pass


class RemoteError(LinError):
    exit_code = 11


class QueuePaused(LinError):
    """``lin run`` stopped because the queue is paused (a disk, device, store or base problem)."""

    exit_code = 12


class UnexpectedError(LinError):
    """An exception that no part of lin turned into a :class:`LinError` (a bug), as the CLI's
    last resort reports it: one line, the traceback only with ``LIN_DEBUG=1``."""

    exit_code = 1
    hint = "this is a bug in lin; LIN_DEBUG=1 shows the traceback (please report it)"


EXIT_INTERRUPTED = 130
