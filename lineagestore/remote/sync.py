"""push, fetch, pull, clone, verify and repair: objects and refs between a store and a remote.

Remote layout (docs/format.md, "Remotes"), keys under the remote's prefix or folder::

    format              {"format": 1, "kind": "lineagestore-remote", "id": "<32 hex>"}
    objects/ab/cdef...  objects in stored form (header + payload), byte for byte as in a store
    refs/heads/main     one key per ref (heads, tags, runs, data) holding "<id>\\n"
    versions/003        the claim on version number 3: "v003_name <id>\\n", created once
    HEAD                "ref: refs/heads/main\\n": what a clone checks out
    probe/<hex>         short-lived keys of the conditional-write probe

Ordering and safety (MUST):
- Every object a ref names, its whole closure, is on the remote before the ref is created or
  moved. So a reader (a clone) that sees a ref finds everything under it, whenever a push stops.
- A ref is created only with ``If-None-Match: *`` and moved only with ``If-Match: <etag read>``.
  A branch moves only forward (the remote tip must be in the pushed commit's history), a tag
  never moves, and a version number belongs to one version: ``versions/NNN`` is created before
  the tag. Anything else is a conflict: the push is refused, naming the ref and the other id.
- Ref updates are refused on a server that does not honour conditional writes (probed).
- Objects received are verified (hash) before they are stored; refs are set after objects.

Modules: :mod:`.session` (one opened remote, shared helpers), :mod:`.transfer` (closures),
:mod:`.push`, :mod:`.fetch` (fetch, pull, clone), :mod:`.check` (verify, repair). This module
is the public surface.
"""

from __future__ import annotations

from .check import RepairResult, VerifyResult, repair, verify
from .fetch import CloneResult, FetchResult, PullResult, clone, fetch, pull, remove_remote_refs, renumber_local
from .push import PushRejected, PushResult, RefUpdate, push, refs_to_push
from .session import (
                      FORMAT_KEY,
                      HEAD_KEY,
                      NAMESPACES,
                      REMOTE_FORMAT,
                      RemoteSession,
                      claim_key,
                      object_key,
                      open_session,
                      tracking_ref,
)
from .transfer import download_closure, local_closure

__all__ = ["RepairResult", "VerifyResult", "repair", "verify", "CloneResult", "FetchResult", "PullResult", "clone",
           "fetch", "pull", "remove_remote_refs", "renumber_local", "PushRejected", "PushResult", "RefUpdate", "push",
           "refs_to_push", "FORMAT_KEY", "HEAD_KEY", "NAMESPACES", "REMOTE_FORMAT", "RemoteSession", "claim_key",
           "object_key", "open_session", "tracking_ref", "download_closure", "local_closure"]
