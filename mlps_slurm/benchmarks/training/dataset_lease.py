"""Sharing one training dataset between chains, inside jobs.

Two chains of the same workload and size use the same dataset directory (its name is derived from the DLIO
config), e.g. a nightly scrontab run and a manual one. Without care, the second datagen would delete the files the
first chain's runs are reading, or two datagens would write the same files at once. So:

- the datagen job holds an exclusive lock (`<dataset>.lock`, fcntl) while it checks, clears, generates and
  verifies: a second datagen waits, then finds the dataset ready (and reuses it with --reuse-data);
- each chain that uses a dataset leaves a lease (`<dataset>.users/<run id>.json`) naming its Slurm jobs; a datagen
  that would regenerate the dataset refuses while another chain's lease names a job Slurm still runs or queues;
- the finalize job removes its chain's lease; a lease whose jobs all ended is stale and ignored (and removed).

The lock and the leases live beside the dataset, not in it: clearing the dataset leaves them alone.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Callable

from mlps_slurm.rundir import atomic_write_json

LEASE_SCHEMA = "mlps-slurm/dataset-lease/1"


def lease_dir(dataset: str | Path) -> Path:
    return Path(f"{str(dataset).rstrip('/')}.users")


class DatasetLock:
    """Exclusive lock on a dataset directory for the length of a datagen (released when the process ends, too)."""

    def __init__(self, dataset: str | Path) -> None:
        self.path = Path(f"{str(dataset).rstrip('/')}.lock")
        self._fd: int | None = None

    def acquire(self, on_wait: Callable[[], None] | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def take_lease(dataset: str | Path, run_id: str, run_dir: str, job_ids: list[str]) -> Path:
    path = lease_dir(dataset) / f"{run_id}.json"
    atomic_write_json(path, {"schema": LEASE_SCHEMA, "run_id": run_id, "run_dir": run_dir, "jobs": job_ids})
    return path


def drop_lease(dataset: str | Path, run_id: str) -> None:
    (lease_dir(dataset) / f"{run_id}.json").unlink(missing_ok=True)


def active_users(dataset: str | Path, own_run_id: str,
                 states: Callable[[list[str]], dict[str, list[Any]]]) -> list[str]:
    """Other chains that still use the dataset: "<run id> (job N RUNNING)". `states` is a Slurm backend's
    `states`; leases whose jobs all ended are removed."""
    busy = []
    directory = lease_dir(dataset)
    if not directory.is_dir():
        return []
    for path in sorted(directory.glob("*.json")):
        try:
            lease = json.loads(path.read_text())
            run_id, jobs = str(lease["run_id"]), [str(j) for j in lease["jobs"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half-written by a crash: it names no job we could wait for
        if run_id == own_run_id:
            continue
        known = states(jobs) if jobs else {}
        live = [(jid, s) for jid in jobs for s in known.get(jid, []) if not s.terminal and s.state != "UNKNOWN"]
        if live:
            jid, s = live[0]
            busy.append(f"{run_id} (job {jid} {s.state}; {lease.get('run_dir', '?')})")
        else:
            path.unlink(missing_ok=True)
    return busy
