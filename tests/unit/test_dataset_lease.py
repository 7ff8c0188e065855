"""Chains sharing one dataset: the datagen lock and the leases that keep a datagen from deleting files another
chain's runs still read (the datagen job's use of them runs in tests/integration/test_training_chain.py)."""

from __future__ import annotations

import multiprocessing
import time

from mlps_slurm.slurm import JobState
from mlps_slurm.benchmarks.training.dataset_lease import DatasetLock, active_users, drop_lease, lease_dir, take_lease


def slurm(states: dict[str, str]):
    def query(job_ids):
        return {j: [JobState(j, "mlps-run", states.get(j, "UNKNOWN"), "None")] for j in job_ids}
    return query


def test_a_chain_whose_jobs_still_run_or_wait_blocks_regeneration(tmp_path):
    data = tmp_path / "unet3d" / "168f-abc"
    take_lease(data, "training-A", "/runs/training-A", ["11", "12"])
    take_lease(data, "training-B", "/runs/training-B", ["21", "22"])
    busy = active_users(data, "training-C", slurm({"11": "COMPLETED", "12": "PENDING", "21": "COMPLETED",
                                                    "22": "RUNNING"}))
    assert busy == ["training-A (job 12 PENDING; /runs/training-A)", "training-B (job 22 RUNNING; /runs/training-B)"]
    # Its own lease never blocks a chain (a requeued datagen finds it).
    assert active_users(data, "training-A", slurm({"21": "COMPLETED", "22": "COMPLETED"})) == []


def test_stale_and_broken_leases_are_ignored_and_stale_ones_removed(tmp_path):
    data = tmp_path / "ds"
    take_lease(data, "old", "/runs/old", ["5"])
    (lease_dir(data) / "torn.json").write_text('{"run_id": "torn", "jo')
    assert active_users(data, "new", slurm({"5": "FAILED"})) == []
    assert sorted(p.name for p in lease_dir(data).iterdir()) == ["torn.json"]
    # Slurm forgot the job (older than MinJobAge): the chain is long over.
    take_lease(data, "older", "/runs/older", ["6"])
    assert active_users(data, "new", slurm({})) == []


def test_finalize_drops_its_lease_and_the_lease_lives_beside_the_dataset(tmp_path):
    data = tmp_path / "ds"
    path = take_lease(data, "r1", "/runs/r1", ["7"])
    assert path.parent == tmp_path / "ds.users" and not data.exists()
    drop_lease(data, "r1")
    drop_lease(data, "r1")  # twice: a requeued finalize
    assert not path.exists()


def _hold(path, seconds, started):
    lock = DatasetLock(path)
    lock.acquire()
    started.set()
    time.sleep(seconds)
    lock.release()


def test_a_second_datagen_waits_for_the_first(tmp_path):
    started = multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold, args=(tmp_path / "ds", 1.0, started))
    holder.start()
    assert started.wait(10)
    waited = []
    lock = DatasetLock(tmp_path / "ds")
    t0 = time.monotonic()
    lock.acquire(on_wait=lambda: waited.append(True))
    elapsed = time.monotonic() - t0
    lock.release()
    holder.join(10)
    assert waited == [True] and elapsed > 0.3
