"""The preflight's node checks and MPI check in one srun step: exit status, crash handling, the probe's environment,
and which launchers get one step (srun) or two (mpirun)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlps_slurm.steps.preflight import __main__ as preflight_main
from mlps_slurm.steps.preflight.system import without_mpi_identity


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(preflight_main, "RunDirectory", lambda path: Path(path))
    return seen


def fake(monkeypatch: pytest.MonkeyPatch, calls: list[str], node, mpi: int) -> None:
    def node_main(run):
        calls.append("node")
        return node()

    def mpi_main(run):
        calls.append("mpi")
        return mpi

    monkeypatch.setattr(preflight_main, "node_main", node_main)
    monkeypatch.setattr(preflight_main, "mpi_main", mpi_main)


def test_a_failed_node_check_is_gathers_to_report_so_the_step_succeeds(monkeypatch, calls, tmp_path):
    fake(monkeypatch, calls, lambda: 1, 0)
    assert preflight_main.main(["node", "--then-mpi", "--run-dir", str(tmp_path)]) == 0
    assert calls == ["node", "mpi"]


def test_a_failed_mpi_check_fails_the_step(monkeypatch, calls, tmp_path):
    fake(monkeypatch, calls, lambda: 0, 3)
    assert preflight_main.main(["node", "--then-mpi", "--run-dir", str(tmp_path)]) == 3


def test_a_crashed_node_check_still_reaches_mpi_and_fails_the_step(monkeypatch, calls, tmp_path, capsys):
    def crash():
        raise RuntimeError("boom in a node check")

    fake(monkeypatch, calls, crash, 0)
    assert preflight_main.main(["node", "--then-mpi", "--run-dir", str(tmp_path)]) == 1
    assert calls == ["node", "mpi"]
    assert "boom in a node check" in capsys.readouterr().err


def test_without_then_mpi_the_node_step_reports_its_own_checks(monkeypatch, calls, tmp_path):
    fake(monkeypatch, calls, lambda: 1, 0)
    assert preflight_main.main(["node", "--run-dir", str(tmp_path)]) == 1
    assert calls == ["node"]


def test_an_engine_probe_does_not_inherit_the_tasks_mpi_identity():
    env = {"PMIX_RANK": "2", "PMIX_NAMESPACE": "slurm.pmix.7.0", "PMIX_SERVER_URI41": "x", "PMI_FD": "5",
           "PMIX_MCA_gds": "hash", "OMPI_MCA_pml": "ob1", "SLURM_PROCID": "2", "PATH": "/usr/bin"}
    assert without_mpi_identity(env) == {"PMIX_MCA_gds": "hash", "OMPI_MCA_pml": "ob1", "SLURM_PROCID": "2",
                                         "PATH": "/usr/bin"}


@pytest.mark.parametrize("kind, together", [("srun", True), ("mpirun", False)])
def test_srun_shares_one_step_mpirun_keeps_two(kind, together):
    from mlps_slurm.plan import preflight_job
    from mlps_slurm.profile import load_profile

    profile = load_profile("localhost", [f"launcher.kind={kind}", "storage.checkpoint_dir=/scratch/ckpt"])
    job = preflight_job(profile, "/runs/r1", "/usr/bin/python3", 3, {})
    both = job.context["node_and_mpi_check"]
    if together:
        assert both[:6] == ["srun", "--mpi=pmix", "--nodes=3", "--ntasks=3", "--ntasks-per-node=1",
                            "--kill-on-bad-exit=1"]
        assert both[-6:] == ["-m", "mlps_slurm.steps.preflight", "node", "--then-mpi", "--run-dir", "/runs/r1"]
    else:
        assert both is None
        assert job.context["mpi_check"][:3] == ["mpirun", "-np", "3"]
    assert "--then-mpi" not in job.context["node_check"]
