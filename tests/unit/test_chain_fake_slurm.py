"""Chain submission logic against FakeSlurmBackend (fast; the real chain is in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlps_slurm.chain import submit_chain

from mlps_slurm.run import create_run
from mlps_slurm.benchmarks.checkpointing.request import CheckpointingRequest
from mlps_slurm.benchmarks.checkpointing.plan import plan as plan_checkpointing
from mlps_slurm.profile import load_profile
from mlps_slurm.rundir import new_run_id
from mlps_slurm.slurm import SlurmError
from tests.unit.fake_slurm import FakeSlurmBackend


def make_run(tmp_path: Path, **request):
    profile = load_profile("localhost", [f"storage.results_dir={tmp_path}", f"storage.checkpoint_dir={tmp_path}/c"])
    run_id = new_run_id("checkpointing")
    plan = plan_checkpointing(CheckpointingRequest(model="llama3-8b", scale=0.001, **request), profile, run_id=run_id,
                              run_dir=str(tmp_path / run_id), python="/usr/bin/python3")
    return create_run(plan, profile, tmp_path)


def test_dependencies_use_the_ids_sbatch_returned(tmp_path):
    run = make_run(tmp_path)
    backend = FakeSlurmBackend()
    ids = submit_chain(run, backend)
    assert list(ids) == ["preflight", "checkpointing", "finalize"]
    deps = [[d.render() for d in deps] for _, deps in backend.submitted]
    assert deps == [[], [f"afterok:{ids['preflight']}"], [f"afterany:{ids['preflight']}:{ids['checkpointing']}"]]
    # The preflight waits held until the benchmark job it must pin is known, then is released.
    assert backend.extra_args[0] == ["--hold"] and backend.released == [ids["preflight"]]
    assert (run.path / "pin-jobs.txt").read_text() == f"{ids['checkpointing']}\n"
    manifest = run.read_manifest()
    assert manifest["state"] == "submitted"
    assert {k: v["job_id"] for k, v in manifest["jobs"].items()} == ids


def test_refuses_to_chain_on_an_unknown_job_id(tmp_path):
    run = make_run(tmp_path)
    backend = FakeSlurmBackend(forget={"101"})
    with pytest.raises(SlurmError, match="refusing to chain"):
        submit_chain(run, backend)
    assert backend.cancelled == ["101"]
    assert not run.path.exists()


def test_failed_sbatch_cancels_submitted_jobs_and_removes_the_run(tmp_path):
    run = make_run(tmp_path)
    backend = FakeSlurmBackend(fail_on_submit=2)
    with pytest.raises(SlurmError, match="Invalid partition"):
        submit_chain(run, backend)
    assert backend.cancelled == ["101", "102"]
    assert not run.path.exists()


def test_run_ids_are_unique_within_one_second():
    ids = {new_run_id("checkpointing") for _ in range(1000)}
    assert len(ids) == 1000


def test_skip_preflight_submits_an_unvalidated_chain(tmp_path):
    run = make_run(tmp_path, skip_preflight=True)
    backend = FakeSlurmBackend()
    ids = submit_chain(run, backend)
    assert list(ids) == ["checkpointing", "finalize"]
    assert backend.released == [] and backend.extra_args[0] == []
    manifest = run.read_manifest()
    assert manifest["settings"]["validated"] is False and manifest["request"]["skip_preflight"] is True
    assert any("unvalidated" in n for n in manifest["plan"]["notes"])
    assert (run.path / "pin-jobs.txt").read_text() == ""
