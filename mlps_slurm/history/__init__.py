"""The history of finalized runs: a local SQLite database (store.py) that every finalized run is recorded in
(ingest.py: benchmark, model, request and profile digests, nodes, versions, every metric with its samples, the
rules' verdict), and comparisons between runs with a noise-aware verdict per metric (compare.py documents the
method; baseline.py picks the runs). `mlps-slurm history` is its command line (commands.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlps_slurm.history.baseline import compare_to_baseline
from mlps_slurm.history.ingest import record
from mlps_slurm.history.store import HistoryError

if TYPE_CHECKING:
    from mlps_slurm.profile import SiteProfile

DB_NAME = "history.sqlite"


def default_db(profile: "SiteProfile") -> Path:
    """Where the history lives: the profile's history.db, else <storage.results_dir>/history.sqlite."""
    return Path(profile.get("history.db") or Path(profile.get("storage.results_dir")) / DB_NAME)


__all__ = ["DB_NAME", "HistoryError", "compare_to_baseline", "default_db", "record"]
