"""The training chain's plan (jobs, dependencies, preflight needs, the request the rules read) and its rendered
scripts for the localhost profile (golden files)."""

from __future__ import annotations

import subprocess

import pytest


from mlps_slurm.benchmarks.training.request import TrainingRequest


from mlps_slurm.benchmarks.training.plan import plan as plan_training
from mlps_slurm.profile import load_profile
from mlps_slurm.render import render_plan
from mlps_slurm.rules import check_request
from mlps_slurm.rules.core import combine
from tests.unit.test_plan_and_render import check_golden

RUN_ID = "training-20261128-120000-abcdef"
RUN_DIR = f"/scratch/runs/{RUN_ID}"
PY = "/opt/venv/bin/python"


def prerun_ok(plan):
    """Whether the rules let this plan's run be submitted (CLOSED or OPEN), judged before it runs."""
    from mlps_slurm.rules import check_request, combine
    return combine(check_request(plan.benchmark, plan.record())).value != "INVALID"


def make_plan(overrides=(), **kw):
    profile = load_profile("localhost", ["storage.data_dir=/data/mlps", "storage.checkpoint_dir=/scratch/ckpt",
                                         *overrides])
    request = TrainingRequest(**{"model": "unet3d", "accelerator": "b200", "accelerators_per_node": 1, "nodes": 2,
                                 **kw})
    return plan_training(request, profile, run_id=RUN_ID, run_dir=RUN_DIR, python=PY)


def test_chain_shape_dependencies_and_array():
    plan = make_plan()
    assert [j.key for j in plan.jobs] == ["preflight", "datagen", "run", "finalize"]
    assert plan.job("datagen").dependencies == (("afterok", ("preflight",)),)
    assert plan.job("run").dependencies == (("afterok", ("datagen",)),)
    assert plan.job("finalize").dependencies == (("afterany", ("preflight", "datagen", "run")),)
    assert plan.job("datagen").pin_to_preflight and plan.job("run").pin_to_preflight
    run = plan.job("run").sbatch
    assert "--array=0-5%1" in run and "--nodes=2" in run and "--ntasks=2" in run and "--ntasks-per-node=1" in run
    assert "--nodes=2" in plan.job("preflight").sbatch
    assert plan.job("run").context["launch"][:3] == ["srun", "--mpi=pmix", "--ntasks=2"]
    assert plan.job("run").context["env"]["SLURM_KILL_BAD_EXIT"] == "1"
    assert "SLURM_KILL_BAD_EXIT" not in plan.job("preflight").context["env"]  # every node check must report


def test_memory_from_profile_settles_the_dataset_at_plan_time():
    plan = make_plan(["nodes.memory_gb=64"])
    r = plan.record()
    # 500 x 7 x 2 = 7,000 samples vs 2 x 64 x 5 x 2^30 / 146,600,628 = 4,687.6 -> 4,688: 7,000 files
    assert r["num_files_train"] == 7000 and r["datasize"]["final"] and r["datasize"]["decided_by"] == "accelerators"
    assert r["dataset_dir"].startswith("/data/mlps/unet3d/7000f-")
    assert r["client_memory_gb"] == 64 and r["memory_source"] == "the profile's nodes.memory_gb"
    pre = plan.preflight
    assert pre["memory_gb_expected"] == 64 and pre["memory_sizes_dataset"] is True
    assert {"id": "data_dir", "path": "/data/mlps", "required_free_bytes": 7000 * 146_600_628} in pre["storage"]
    assert pre["separate_filesystems"] == [["data_dir", "results_dir"]]
    assert {"dlio_benchmark", "dftracer.logger", "mpi4py", "mlps_slurm.benchmarks.training.job"} <= \
        set(pre["python_modules"])
    assert prerun_ok(plan) and plan.notes == ()


def test_unknown_memory_is_settled_in_the_datagen_job():
    plan = make_plan(scale=0.024)
    r = plan.record()
    assert not r["datasize"]["final"] and r["dataset_dir"] is None and r["num_files_train"] == 168
    assert "memory_sizes_dataset" not in plan.preflight
    assert any("settled from the preflight's memory facts" in n for n in plan.notes)
    assert not prerun_ok(plan) and any("scaled run" in n for n in plan.notes)
    # Before submission the size rule is not judged on unknown memory: the datagen job applies it; once the chain
    # has run without the memory ever being settled, the same rule makes the run INVALID.
    size = next(f for f in check_request("training", r) if f.rule_id == "train.dataset_size")
    assert size.verdict.value == "CLOSED" and "the datagen job settles the size" in size.message
    from mlps_slurm.benchmarks.training import rules as rules

    chain = rules.TrainingChain(run_id=RUN_ID, plan=rules.plan_from_request(r), datagen=None, runs=())
    assert next(f for f in rules.run_rules([rules.check_dataset_size], chain)).verdict.value == "INVALID"


def test_request_carries_what_the_rules_and_the_steps_read():
    plan = make_plan(["nodes.memory_gb=64"], params=("reader.read_threads=2",))
    r = plan.record()
    for key in ("benchmark", "model", "accelerator", "num_accelerators", "nodes", "client_memory_gb",
                "num_files_train", "num_subfolders_train", "params", "scale", "data_dir", "runs", "results_dir",
                "workload_config", "workload_name", "config_dir", "au_threshold", "record_length", "batch_size"):
        assert key in r, key
    assert r["runs"] == 6 and r["results_dir"] == "/scratch/runs"
    findings = check_request("training", r)
    # The same rules the finalize job applies: CLOSED apart from the filesystems nobody has checked yet.
    assert combine(findings).value == "CLOSED", [f.message for f in findings if f.verdict.value != "CLOSED"]


def test_checkpointing_workload_needs_the_checkpoint_dir():
    plan = make_plan(["nodes.memory_gb=64"], accelerator="h100")
    assert plan.record()["checkpoint_folder"] == f"/scratch/ckpt/{RUN_ID}/unet3d"
    assert {"id": "checkpoint_dir", "path": "/scratch/ckpt", "required_free_bytes": 2 * 499_153_191} in \
        plan.preflight["storage"]
    b200 = make_plan(["nodes.memory_gb=64"])
    assert b200.record()["checkpoint_folder"] == f"{RUN_DIR}/dlio/checkpoints-unused"


def test_golden_scripts_localhost():
    plan = make_plan(scale=0.024, params=("reader.read_threads=2",))
    scripts = render_plan(plan)
    assert list(scripts) == ["00-preflight.sbatch", "01-datagen.sbatch", "02-run.sbatch", "03-finalize.sbatch"]
    check_golden(scripts, "training")


def test_rendered_scripts_are_valid_bash(tmp_path):
    for name, text in render_plan(make_plan(params=("dataset.data_folder=/data/my ds; rm -rf ~",))).items():
        path = tmp_path / name
        path.write_text(text)
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0, name
        assert "'++workload.dataset.data_folder=/data/my ds; rm -rf ~'" in text or name != "02-run.sbatch"


def test_verify_lockfile_has_every_node_checked_against_it(tmp_path):
    lock = tmp_path / "pins.lock"
    lock.write_text("click==8.1.7\n")
    plan = make_plan(verify_lockfile=str(lock))
    assert plan.preflight["lockfile"] == f"{RUN_DIR}/lockfile.txt" and plan.lockfile_source == str(lock)
    from mlps_slurm.benchmarks.base import PlanError
    from mlps_slurm.benchmarks.training.plan import probe

    lock.write_bytes(b"click==8\xff\n")
    with pytest.raises(PlanError, match="--verify-lockfile: .*not UTF-8"):
        probe(plan, PY)
