"""What users import: ``from lineagestore import Repo``.

:class:`Repo` is the store (``lineagestore.core.repo.Repo``) plus the operations of every feature
module as methods. Each returns a dataclass; nothing prints.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Self, cast

from .core.progress import NULL, Progress
from .core.repo import Repo as _BaseRepo
from .versions import checkout as _checkout
from .versions import commit as _commit
from .versions import history as _versions
from .versions import labels as _labels

if TYPE_CHECKING:  # imported by the methods that need them (numpy, for one, only by diff)
    from .core.objects import Commit
    from .guard.fsck import FsckReport
    from .remote.held import DroppedWeights
    from .versions.diff import DiffResult


class _Absent:
    """core.store.AbsentObjects for a store on disk: what was dropped here (core.local_versions)
    comes back from its remote, verified (remote.held.DroppedWeights, made at the first need)."""

    def __init__(self, repo: Repo):
        self.repo = repo

    def __call__(self, oid: str) -> bool:
        return self.repo._dropped_weights()(oid)

    def held_by(self, oid: str) -> str | None:
        return self.repo._dropped_weights().held_by(oid)


class Repo(_BaseRepo):
    """A lineage store with every feature's operations; its after-publish hooks back up each version."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        from .remote.hook import BackupHook
        from .remote.notes import register_merge
        from .train.evalnotes import NOTES_REF, merge_notes
        self.after_publish.append(BackupHook())
        register_merge(NOTES_REF, merge_notes)  # remotes merge notes (they have no history to fast-forward)
        self._dropped: DroppedWeights | None = None
        self._dropped_lock = threading.Lock()
        if self.path is not None:  # every read of weights dropped here fetches them (remote.held)
            self.objects.absent = _Absent(self)

    def _dropped_weights(self) -> DroppedWeights:
        """This store's :class:`~lineagestore.remote.held.DroppedWeights` (made at the first need:
        the remote machinery is not loaded at every start)."""
        with self._dropped_lock:
            if self._dropped is None:
                from .guard.dropped import read_dropped
                from .remote.held import DroppedWeights
                self._dropped = DroppedWeights(self, lambda: {o: d.remote for o, d in read_dropped(self).items()})
            return self._dropped


    def import_model(self, folder: os.PathLike | str, name: str, *, message: str = "",
                     progress: Progress = NULL, exclude: tuple[str, ...] = ()) -> _commit.CommitResult:
        """Store an existing model folder as a root version (the first becomes ``v001_<name>``)."""
        return _commit.commit_folder(self, folder, name, message=message, parents=[], kind="import",
                                       progress=progress, exclude=exclude)

    def commit(self, commit_id: str) -> Commit:
        """Read the commit object ``commit_id`` (tree, parents, metadata); ``commit_folder`` makes one."""
        return super().commit(commit_id)

    def commit_folder(self, folder: os.PathLike | str, name: str, **kw) -> _commit.CommitResult:
        """Store a model folder as a new version (parent: HEAD unless ``parents`` is given)."""
        return _commit.commit_folder(self, folder, name, **kw)

    def checkout(self, rev: str, **kw) -> _checkout.CheckoutInfo:
        """Write ``rev`` into the work folder (or ``to=``) and make it active, under the store lock.

        Weights dropped here (core.local_versions) come back first, verified, the whole version at
        once (remote.held.DroppedWeights: the path every read of them takes)."""
        from .guard.dropped import read_dropped
        if self.path is not None and read_dropped(self):
            if self._dropped_weights().fetch_version(rev, progress=kw.get("progress", NULL)):
                self.notes.append(f"checkout: fetched the dropped weights of {rev} from the remote")
        return _checkout.checkout(self, rev, **kw)

    def status(self, target=None) -> _checkout.StatusInfo:
        """HEAD, and how the work folder (or ``target``) compares with the version it holds."""
        return _checkout.status(self, target)

    def tag(self, name: str, rev: str = "HEAD") -> _labels.Label:
        """Give the version ``rev`` an extra, immutable name."""
        return _labels.tag(self, name, rev)

    def branch(self, name: str, rev: str = "HEAD", *, switch: bool = False) -> _labels.Label:
        """Start a line of training at ``rev`` (``switch``: make it the active line)."""
        return _labels.branch(self, name, rev, switch=switch)

    def log(self, rev: str | None = None, *, all_versions: bool = False) -> list[_versions.VersionInfo]:
        """The lineage of ``rev`` (default HEAD) back to its root, newest first; every version with ``all_versions``."""
        return _versions.log(self, rev, all_versions=all_versions)

    def show(self, rev: str) -> _versions.ShowInfo:
        """One version: its details, its files, and its tensors counted by dtype."""
        return _versions.show(self, rev)

    def registry(self) -> dict:
        """Every version by name, in the shape of the ``registry.json`` people kept by hand."""
        return _versions.registry(self)

    def diff(self, rev_a: str, rev_b: str, *, stats: bool = True) -> DiffResult:
        """The files and tensors that differ from ``rev_a`` to ``rev_b`` (``stats``: how far each tensor moved)."""
        from .versions import diff as _diff  # numpy: imported only by the commands that need it
        return _diff.diff_versions(self, rev_a, rev_b, stats=stats)

    def fsck(self, *, quick: bool = False, progress: Progress = NULL) -> FsckReport:
        """Check every object, ref and reflog of the store (``quick``: blobs by header only); a report of problems."""
        from .guard import fsck as _fsck
        return _fsck.check(self, quick=quick, progress=progress)

    # guardrails: names, reflog, trash, gc, doctor, audit
    def protection(self, name: str):
        """Why a name is protected (``lin rm`` rules); see lineagestore.guard.protect."""
        from .guard import protect
        return protect.protection(self, name)

    def rm(self, name: str, *, force: bool = False, confirm_lineage: bool = False,
           confirm_name: str | None = None):
        """Remove a name (never objects); protected names need force, confirm_lineage and the full name."""
        from .guard import protect
        return protect.remove_name(self, name, force=force, confirm_lineage=confirm_lineage,
                                   confirm_name=confirm_name)

    def reflog(self, name: str | None = None):
        """Every change of the ref ``name`` (current or removed, or HEAD), or of all refs; newest first."""
        from .guard import protect
        return protect.reflog(self, name)

    def restore(self, what: str):
        """Bring back a removed name from the reflog, or objects (by id) from trash."""
        from .guard import protect
        res = protect.restore(self, what)
        if res.objects:
            self.notes.append(f"restored {res.objects} objects from trash")
        return res

    def gc_plan(self, *, grace: str | float | None = None, progress: Progress = NULL):
        """What ``gc`` would move to trash; deletes nothing. ``grace``: days, or "12h", "0"."""
        from .core.settings import parse_grace
        from .guard import gc
        return gc.plan(self, grace_s=None if grace is None else parse_grace(grace), progress=progress)

    def gc(self, *, grace: str | float | None = None, empty_trash: bool = False, progress: Progress = NULL,
           on_wait=None):
        """Move unreachable objects older than the grace period to trash/ (exclusive store lock)."""
        from .core.settings import parse_grace
        from .guard import gc
        res = gc.collect(self, grace_s=None if grace is None else parse_grace(grace),
                         empty_trash=empty_trash, progress=progress, on_wait=on_wait)
        notes = []
        if res.moved_objects:
            notes.append(f"moved {res.moved_objects} objects ({res.moved_bytes} bytes) to trash/{res.batch}")
        if res.purged_batches:
            notes.append(f"deleted trash batches {', '.join(res.purged_batches)} ({res.purged_objects} objects)")
        self.notes.extend(notes)
        return res

    def doctor(self):
        """The risks to this store's data (backups, free disk, writable objects, one disk), as a report."""
        from .guard import doctor
        from .remote.backup import backup_status
        return doctor.diagnose(self, backup=backup_status(self))

    def audit_log(self) -> list[dict]:
        """The entries of the audit log (each command that changed the store), oldest first."""
        from .core import audit
        return audit.entries(self)

    def audit_verify(self):
        """Whether the audit log is intact: detects an edited, reordered, inserted or truncated log."""
        from .core import audit
        return audit.verify(self)

    # training
    def commit_model(self, model, tokenizer=None, name: str = "", **kw):
        """Store a model from memory (no folder written) as ``vNNN_<name>``; see train.commit."""
        from .train.commit import commit_model
        return commit_model(self, model, tokenizer, name, **kw)[0]

    def plan(self, data, name: str, *, base: str | None = None, settings=None, **kw):
        """The pre-flight plan of a training run (``settings``: TrainSettings or a dict)."""
        from .train.plan import make_plan
        from .train.settings import TrainSettings
        if not isinstance(settings, TrainSettings):
            settings = TrainSettings.build(settings or {})
        return make_plan(self, data=list(data), name=name, base=base, settings=settings, **kw)

    def train(self, data, name: str, *, base: str | None = None, settings=None, progress: Progress = NULL,
              log=None, message: str = "", code_path=None, **kw):
        """Plan, then (if every check passes) train and commit; raises Refused with the plan otherwise."""
        from .train.trainer import train
        p = self.plan(data, name, base=base, settings=settings, progress=progress, **kw)
        return train(self, p, progress=progress, log=log, message=message, code_path=code_path)

    def runs(self):
        """The training runs in ``refs/runs/``, each with its status, step and last checkpoint."""
        from .train import runs
        return runs.list_runs(self)

    def abandon_run(self, run: str):
        """Delete the run's ref (its checkpoints but the last become garbage for ``gc``); returns the run as it was."""
        from .train import runs
        return runs.abandon(self, run)

    def training_progress(self, rev: str | None = None):
        """Tokens trained toward ``goal.tokens`` along the lineage of ``rev`` (default HEAD)."""
        from .train.goal import goal_progress
        return goal_progress(self, rev)

    # per-step series, the evaluation set and its notes, analytics
    def series(self, rev: str = "HEAD"):
        """The per-step series of a trained version (``lineagestore.train.series.Series``: numpy
        columns step, tokens, loss, lr, grad_norm, tokens_per_s, wall_s, and ``evals``)."""
        from .analytics.collect import version_series
        return version_series(self, rev)

    def run_series(self, run: str):
        """The per-step series of a run in progress, as of its last checkpoint."""
        from .analytics.collect import run_series
        return run_series(self, run)

    def eval_set(self):
        """The store's evaluation set (``EvalSet``), or None."""
        from .train.evaluate import current_set
        return current_set(self)

    def set_eval_set(self, path: os.PathLike | str, *, progress: Progress = NULL):
        """Make ``path`` the evaluation set (refused if any of its records was trained)."""
        from .train.evaluate import set_eval_set
        return set_eval_set(self, path, progress=progress)

    def evaluate(self, revs, *, device: str = "auto", force: bool = False, progress: Progress = NULL):
        """Evaluate versions on the evaluation set and note the results (``EvalResult`` list)."""
        from .train.evaluate import evaluate_versions
        return evaluate_versions(self, list(revs), device=device, force=force, progress=progress)

    def eval_notes(self, rev: str | None = None) -> dict:
        """Evaluation rows by version id: of ``rev`` only, or of every noted version."""
        from .train.evalnotes import all_notes, note_of
        if rev is None:
            return all_notes(self)
        cid = self.resolve(rev)
        return {cid: note_of(self, cid)}

    def stats(self, rev: str | None = None):
        """``lin stats``: gains per version and per data file, the lineage curve and its trend."""
        from .analytics.collect import stats
        return stats(self, rev)

    # the data registry and ledger
    def data_add(self, path: os.PathLike | str, **kw):
        """Register a JSONL data file (see lineagestore.data.register)."""
        from . import data as _data
        return _data.register(self, path, **kw)

    def data_lookup(self, path_or_id: os.PathLike | str):
        """The registered dataset of a file (by content), fingerprint or id prefix, or file name; None if none."""
        from . import data as _data
        return _data.lookup(self, path_or_id)

    def data_list(self):
        """Every registered dataset with the versions that trained it, oldest first."""
        from . import data as _data
        return _data.list_datasets(self)

    def data_show(self, path_or_id: os.PathLike | str):
        """One registered dataset (by file, fingerprint, id prefix or name) with its use; NotFound if none."""
        from . import data as _data
        return _data.show(self, path_or_id)

    def data_verify(self, paths=None, *, progress: Progress = NULL):
        """Re-hash data files (registered ones at their recorded paths, or ``paths``); a report of changes."""
        from . import data as _data
        return _data.verify(self, paths, progress=progress)

    def data_manifest(self) -> dict:
        """The data registry per fingerprint, in the shape of a hand-kept ``manifest.json``."""
        from . import data as _data
        return _data.manifest(self)

    def data_check(self, paths, *, base: str | None = None, progress: Progress = NULL):
        """Was this data, or any of its records, already trained into base's lineage (default HEAD)?"""
        from . import data as _data
        return _data.check(self, paths, base=base, progress=progress)

    def trained_dataset_ids(self, rev: str = "HEAD") -> list[str]:
        """Ids of the datasets trained into ``rev`` and all its ancestors (oldest first, each once)."""
        from . import data as _data
        return _data.trained_dataset_ids(self, self.resolve(rev))

    # remotes and backup
    def remote_add(self, name: str, url: str, *, endpoint_url: str | None = None, region: str | None = None,
                   backup: bool = False):
        """Add a remote (s3://bucket/prefix or a folder); credentials come from the AWS chain, never stored."""
        from .remote import spec
        return spec.add_remote(self, name, url, endpoint_url=endpoint_url, region=region, backup=backup)

    def remotes(self):
        """The configured remotes (name, url, endpoint, region), sorted by name."""
        from .remote import spec
        return spec.list_remotes(self)

    def push(self, remote: str | None = None, revs=(), *, progress: Progress = NULL, recheck: bool = False):
        """Send versions (default: every branch, tag, run) to a remote; see lineagestore.remote.push."""
        from .remote import sync
        return sync.push(self, remote, revs, progress=progress, recheck=recheck)

    def fetch(self, remote: str | None = None, *, progress: Progress = NULL):
        """Receive the remote's refs and the objects this store lacks, checked; local names do not move."""
        from .remote import sync
        return sync.fetch(self, remote, progress=progress)

    def pull(self, remote: str | None = None, *, renumber: bool = False, progress: Progress = NULL):
        """Fetch, then move local names forward to the remote's (never across a divergence); conflicts reported."""
        from .remote import sync
        return sync.pull(self, remote, renumber=renumber, progress=progress)

    @classmethod
    def clone(cls, url: str, dest: os.PathLike | str, **kw) -> Self:
        """A new store in ``dest/.lineage`` from a remote, HEAD checked out; see lineagestore.remote.clone."""
        from .remote import sync
        repo, _ = sync.clone(url, dest, repo_class=cls, **kw)
        return cast(Self, repo)  # made by repo_class=cls; sync.clone's signature says only core.repo.Repo

    def verify_remote(self, remote: str | None = None, *, full: bool = False, progress: Progress = NULL):
        """Check that the remote holds every object of its refs (``full``: download and re-hash each)."""
        from .remote import sync
        return sync.verify(self, remote, full=full, progress=progress)

    def backup(self, *, progress: Progress = NULL):
        """Push everything to the backup remote now (``backup.remote``)."""
        from .remote import backup
        return backup.run_backup(self, progress=progress)

    def backup_status(self) -> dict:
        """Which versions and runs the backup remote holds, from this store's records alone (no network)."""
        from .remote import backup
        return backup.backup_status(self)
