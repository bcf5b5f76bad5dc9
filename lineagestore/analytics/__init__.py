"""Analytics: what each token bought (``lin stats``), from what training records in the store.

:mod:`.stats` holds the pure functions (tested against hand-computed figures); :mod:`.collect`
reads the store into their inputs. docs/dashboard.md says what each number means.
"""

from .collect import stats, version_eval, version_inputs, version_series
from .stats import FileStats, Stats, Trend, VersionInput, VersionStats, compute_stats, fit_power_law

__all__ = ["FileStats", "Stats", "Trend", "VersionInput", "VersionStats", "compute_stats", "fit_power_law",
           "stats", "version_eval", "version_inputs", "version_series"]
