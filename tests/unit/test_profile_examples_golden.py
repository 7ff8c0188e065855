"""Every packaged template rendered with every example profile, compared with recorded golden scripts."""

from __future__ import annotations


import pytest

from mlps_slurm.benchmarks.checkpointing.request import CheckpointingRequest
from mlps_slurm.benchmarks.checkpointing.plan import plan as plan_checkpointing
from mlps_slurm.benchmarks.kvcache.plan import plan as plan_kvcache
from mlps_slurm.benchmarks.kvcache.request import KvCacheRequest
from mlps_slurm.benchmarks.training.request import TrainingRequest
from mlps_slurm.benchmarks.training.plan import plan as plan_training
from mlps_slurm.benchmarks.vectordb.plan import plan as plan_vectordb
from mlps_slurm.benchmarks.vectordb.request import VectorDbRequest
from mlps_slurm.profile import load_profile
from mlps_slurm.render import render_plan
from mlps_slurm.resources import templates_dir
from tests.unit.test_plan_and_render import check_golden

EXAMPLES = ["localhost", "generic-cpu", "gpu-pyxis", "apptainer-site"]


@pytest.fixture(autouse=True)
def fixed_user(monkeypatch):
    # The example profiles use $USER and ~ in paths; pin them so the recorded scripts do not depend on who runs.
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("HOME", "/home/alice")


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_template_with_every_example_profile(name):
    profile = load_profile(name)
    python = profile.get("environment.python") or "/opt/mlps/venv/bin/python"
    used = set()
    for benchmark, plan_it, request, golden in (
            ("checkpointing", plan_checkpointing, CheckpointingRequest(model="llama3-8b"), f"profiles/{name}"),
            ("training", plan_training, TrainingRequest("unet3d", "b200", scale=0.01), f"training/profiles/{name}"),
            ("kvcache", plan_kvcache, KvCacheRequest(ranks_per_node=2), f"kvcache/profiles/{name}"),
            ("vectordb", plan_vectordb, VectorDbRequest(scale=0.01, query_processes=2),
             f"vectordb/profiles/{name}")):
        run_id = f"{benchmark}-20261128-120000-abcdef"
        run_dir = f"{profile.get('storage.results_dir')}/{run_id}"
        plan = plan_it(request, profile, run_id=run_id, run_dir=run_dir, python=python)
        used |= {job.template for job in plan.jobs}
        check_golden(render_plan(plan), golden)
    packaged = {p.name for p in templates_dir().glob("*.sbatch.j2") if not p.name.startswith("_")}
    assert used == packaged, "a packaged template is not covered by the golden files"


def test_pyxis_steps_enter_the_container_and_apptainer_wraps_the_engine():
    scripts = {}
    for name in ("gpu-pyxis", "apptainer-site"):
        profile = load_profile(name)
        plan = plan_checkpointing(CheckpointingRequest(model="llama3-8b"), profile, run_id="r",
                                  run_dir=f"{profile.get('storage.results_dir')}/r", python="/usr/bin/python3")
        scripts[name] = render_plan(plan)
    pyxis = scripts["gpu-pyxis"]["01-checkpointing.sbatch"]
    assert "--container-image=registry.example.org#mlperf/mlps-slurm:0.1.0" in pyxis
    assert '--container-mounts "${MLPS_CONTAINER_BINDS}"' in pyxis
    # only the storage this benchmark uses is bound, after its directory was created
    binds = "MLPS_CONTAINER_BINDS=/etc/slurm:/etc/slurm:ro,/shared/home/alice/mlps-slurm/runs:/shared/home/alice/" \
            "mlps-slurm/runs,/scratch/mlps/checkpoints:/scratch/mlps/checkpoints\n"
    assert binds in pyxis and pyxis.index("mkdir -p -- /scratch/mlps/checkpoints") < pyxis.index(binds)
    assert "/scratch/mlps/data" not in pyxis and "/scratch/mlps/kvcache" not in pyxis
    assert "test -e /etc/slurm || { echo 'mlps-slurm: /etc/slurm (a source of container.mounts)" in pyxis
    assert "#SBATCH --gres=gpu:8" in pyxis and "#SBATCH --exclusive" in pyxis
    assert "#SBATCH --gres" not in scripts["gpu-pyxis"]["00-preflight.sbatch"]  # only benchmark jobs
    app = scripts["apptainer-site"]["01-checkpointing.sbatch"]
    # --cleanenv: the launcher's PMIx/PMI/Open MPI and Slurm variables reach the ranks as APPTAINERENV_*
    assert "mpirun -np 8 --bind-to none --map-by node bash -c " in app
    assert 'PMIX_*|PMI_*|OMPI_*|SLURM_*|SLURMD_*|MLPS_*) export "APPTAINERENV_$v=${!v}"' in app
    assert ('mlps-keep-env apptainer exec --bind "${MLPS_CONTAINER_BINDS}" --cleanenv /gpfs/images/mlps-slurm-0.1.0.sif '
            '/usr/bin/python3 -m mlps_slurm.benchmarks.checkpointing.job') in app
