"""Where an engine probe runs (mlps_slurm.probes + ContainerRuntime.login_command): on the login node directly,
through the container runtime when the image is reachable here (the stand-in runtimes of tests/standin/bin play
apptainer and enroot), or deferred to the preflight job. pyxis is an srun plugin, so for it only the login-node
side (enroot start on a local squashfs) and the rendered scripts are tested; the local Slurm has no pyxis."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mlps_slurm import containers
from mlps_slurm.benchmarks.base import PlanError
from mlps_slurm.benchmarks.training.plan import plan as plan_training
from mlps_slurm.benchmarks.training.request import TrainingRequest
from mlps_slurm.probes import settle
from mlps_slurm.profile import load_profile
from mlps_slurm.render import render_plan

STANDIN = Path(__file__).resolve().parents[1] / "standin" / "bin"


@pytest.fixture
def standin(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{STANDIN}:/usr/bin:/bin")
    monkeypatch.setenv("STANDIN_RUNTIME_LOG", str(tmp_path / "runtime.log"))
    return tmp_path / "runtime.log"


def training(profile_name: str, *overrides: str):
    profile = load_profile(profile_name, ["nodes.memory_gb=64", *overrides])
    python = profile.get("environment.python") or sys.executable
    plan = plan_training(TrainingRequest("unet3d", "b200", nodes=1, accelerators_per_node=1, scale=0.01), profile,
                         run_id="r", run_dir=f"{profile.get('storage.results_dir')}/r", python=python)
    return plan, profile, python


def test_apptainer_image_on_the_login_node_is_probed_through_the_runtime(standin, tmp_path):
    image = tmp_path / "img.sif"
    image.write_text("")
    plan, profile, python = training("apptainer-site", f"container.image={image}",
                                     f"environment.python={sys.executable}")
    assert settle(plan, profile, python) == plan  # this venv has DLIO: nothing deferred, nothing refused
    assert f"apptainer exec --cleanenv {image} {sys.executable} -c" in standin.read_text()


def test_apptainer_probe_refuses_with_the_image_named(standin, tmp_path):
    image = tmp_path / "img.sif"
    image.write_text("")
    plan, profile, python = training("apptainer-site", f"container.image={image}")  # /opt/venv/bin/python
    with pytest.raises(PlanError, match=f"image cannot start the jobs' Python /opt/venv/bin/python in the image {image}"):
        settle(plan, profile, python)


@pytest.mark.parametrize("profile_name, overrides, reason", [
    ("apptainer-site", (), "container.image /gpfs/images/mlps-slurm-0.1.0.sif is not a file on this login node"),
    ("gpu-pyxis", (), "is not a squashfs file on this login node"),
    ("generic-cpu", (), "/opt/mlps-slurm/venv/bin/python (environment.python) is not an executable"),
])
def test_unreachable_images_defer_the_probe_to_the_preflight(standin, profile_name, overrides, reason):
    plan, profile, python = training(profile_name, *overrides)
    settled = settle(plan, profile, python)
    (probe,) = settled.preflight["engine_probes"]
    assert probe["benchmark"] == "training" and "dlio_benchmark" in probe["code"]
    assert any(reason in n for n in settled.notes)
    render_plan(settled)  # renders


def test_no_apptainer_on_the_login_node_defers(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    image = tmp_path / "img.sif"
    image.write_text("")
    plan, profile, python = training("apptainer-site", f"container.image={image}")
    assert any("apptainer (container.apptainer) is not on PATH" in n for n in settle(plan, profile, python).notes)


def test_a_failing_runtime_defers_instead_of_refusing(standin, tmp_path):
    image = tmp_path / "img.sif"
    image.write_text("")
    # the stand-in fails like apptainer on a bind source missing here (FATAL, exit 255)
    plan, profile, python = training("apptainer-site", f"container.image={image}",
                                     f"environment.python={sys.executable}",
                                     f"container.extra_args=[--cleanenv, --bind, {tmp_path / 'only-on-nodes'}]")
    settled = settle(plan, profile, python)
    assert any("apptainer could not start the image on this login node" in n for n in settled.notes)


def test_pyxis_local_squashfs_is_probed_with_enroot(standin, tmp_path):
    image = tmp_path / "img.sqsh"
    image.write_text("")
    plan, profile, python = training("gpu-pyxis", f"container.image={image}", f"environment.python={sys.executable}")
    assert settle(plan, profile, python) == plan
    assert f"enroot start {image} {sys.executable} -c" in standin.read_text()
    assert containers.get("pyxis").login_command(profile, ["x"]) == ["enroot", "start", str(image), "x"]


def test_only_the_storage_a_benchmark_uses_is_bound_and_created_first():
    plan, profile, python = training("gpu-pyxis")
    setup = plan.preflight["container"]
    results = profile.get("storage.results_dir")
    assert setup["binds"] == ["/etc/slurm:/etc/slurm:ro", f"{results}:{results}", "/scratch/mlps/data:/scratch/mlps/data"]
    assert setup["create"] == [{"key": "storage.data_dir", "path": "/scratch/mlps/data"}]
    scripts = render_plan(plan)
    datagen = scripts["01-datagen.sbatch"]
    assert datagen.index("mkdir -p -- /scratch/mlps/data") < datagen.index("--container-image")
    assert "/scratch/mlps/data" not in scripts["03-finalize.sbatch"]  # the finalize binds only the run directory


def test_node_local_storage_is_created_on_every_node_before_binding():
    plan, _, _ = training("gpu-pyxis", "storage.shared=false")
    text = render_plan(plan)["01-datagen.sbatch"]
    step = ('srun --nodes "${SLURM_JOB_NUM_NODES}" --ntasks "${SLURM_JOB_NUM_NODES}" --ntasks-per-node=1 --mpi=none '
            '--job-name=container-binds mkdir -p -- /scratch/mlps/data || { echo ')
    assert step in text and "storage.data_dir=/scratch/mlps/data" in text
    assert text.index(step) < text.index("--container-image")


def test_cleanenv_keeps_what_pmix_and_the_steps_need():
    profile = load_profile("apptainer-site", ["launcher.kind=srun", "launcher.mpi=pmix", "environment.env={A_B: x}"])
    prefix = containers.get("apptainer").exec_prefix(profile, "/r/x")
    assert prefix[:2] == ["bash", "-c"] and prefix[3:5] == ["mlps-keep-env", "apptainer"]
    assert "PMIX_*|PMI_*|OMPI_*|SLURM_*|SLURMD_*|MLPS_*|A_B)" in prefix[2]
    without = load_profile("apptainer-site", ["container.extra_args=[]"])
    assert containers.get("apptainer").exec_prefix(without, "/r/x")[0] == "apptainer"


@pytest.mark.parametrize("name", ["localhost", "generic-cpu", "gpu-pyxis", "apptainer-site"])
def test_every_example_profile_plans_and_renders_training_and_the_suite(name, monkeypatch):
    from mlps_slurm.plan_suite import SuiteRequest
    from mlps_slurm.run import benchmark_planner, jobs_python, suite_planner

    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a login node without apptainer or enroot
    profile = load_profile(name)
    for planner in (benchmark_planner("training", TrainingRequest("unet3d", "b200", scale=0.01)),
                    suite_planner(SuiteRequest(scale=0.01))):
        plan = planner(profile, "r", f"{profile.get('storage.results_dir')}/r", jobs_python(profile))
        assert render_plan(plan)
        deferred = plan.preflight.get("engine_probes", [])
        assert bool(deferred) == (name != "localhost")  # localhost's Python is this one: probed here
