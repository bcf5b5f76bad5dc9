"""``lin run``: the loop that trains a branch's queue, file after file, unattended (docs/continuous.md).

For each next queued file (or batch of files) it runs the seven pre-flight checks of ``lin plan``,
trains from the branch tip through :mod:`lineagestore.train.trainer`, publishes the version through
the one publish path (whose after-publish hooks back it up), marks the file done and goes on. A
check about the file parks it; a check about the machine or the store pauses the queue. Failures of
training are retried from the last checkpoint, then the file is parked. One runner per branch.

Modules: ``lock`` (one runner per branch), ``batch`` (which files go into the next version, its
name, where each file is), ``decide`` (a plan's failed checks: park or pause), ``inbox`` (files
dropped into a folder, taken once complete), ``launch`` (training on several processes),
``loop`` (the loop).
"""

from __future__ import annotations

from .loop import Parked, RunOptions, RunReport, Trained, run

__all__ = ["Parked", "RunOptions", "RunReport", "Trained", "run"]
