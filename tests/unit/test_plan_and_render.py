"""Plan decisions and rendered scripts (golden files) for the checkpointing chain."""

from __future__ import annotations

import difflib
import json
import subprocess
from pathlib import Path

import pytest

from mlps_slurm.benchmarks.checkpointing.catalog import LLAMA3_MODELS, rank_shards
from mlps_slurm.plan import PlanError
from mlps_slurm.benchmarks.checkpointing.request import CheckpointingRequest
from mlps_slurm.benchmarks.checkpointing.plan import plan as plan_checkpointing
from mlps_slurm.profile import load_profile
from mlps_slurm.render import render_plan

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
RUN_DIR = "/scratch/runs/checkpointing-20261128-120000-abcdef"
PY = "/opt/venv/bin/python"


def prerun_ok(plan):
    """Whether the rules let this plan's run be submitted (CLOSED or OPEN), judged before it runs."""
    from mlps_slurm.rules import check_request, combine
    return combine(check_request(plan.benchmark, plan.record())).value != "INVALID"


def make_plan(overrides=(), **request):
    profile = load_profile("localhost", [*overrides, "storage.checkpoint_dir=/scratch/ckpt"])
    req = CheckpointingRequest(**{"model": "llama3-8b", **request})
    return plan_checkpointing(req, profile, run_id=Path(RUN_DIR).name, run_dir=RUN_DIR, python=PY)


def check_golden(scripts: dict[str, str], folder: str) -> None:
    """Compare with recorded scripts; missing records are created (delete one if a change is intended)."""
    problems = []
    for name, text in scripts.items():
        path = GOLDEN / folder / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            problems.append(f"recorded new golden file {path}; rerun the tests")
            continue
        expected = path.read_text()
        if text != expected:
            diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), str(path),
                                                "rendered"))
            problems.append(f"rendered script differs from {path} (delete the record if this change is "
                            f"intended):\n{diff}")
    if problems:
        pytest.fail("\n".join(problems))


def test_chain_shape_and_dependencies():
    plan = make_plan()
    assert [j.key for j in plan.jobs] == ["preflight", "checkpointing", "finalize"]
    assert plan.job("checkpointing").dependencies == (("afterok", ("preflight",)),)
    assert plan.job("finalize").dependencies == (("afterany", ("preflight", "checkpointing")),)


def test_closed_process_count_is_default_and_spread_over_profile_nodes():
    plan = make_plan()
    assert plan.record()["num_processes"] == 8 and plan.record()["nodes"] == 4
    assert "--ntasks=8" in plan.job("checkpointing").sbatch
    assert "--ntasks-per-node=2" in plan.job("checkpointing").sbatch
    assert plan.job("checkpointing").context["launch"][:3] == ["srun", "--mpi=pmix", "--ntasks=8"]
    assert prerun_ok(plan)


def test_expected_bytes_follow_catalog_and_scale():
    plan = make_plan(scale=0.001, num_processes=4)
    expected = sum(s.total_bytes for s in rank_shards(LLAMA3_MODELS["llama3-8b"], 4, 0.001))
    assert plan.record()["expected_bytes_per_checkpoint"] == expected
    assert not prerun_ok(plan)


@pytest.mark.parametrize("request_kw, message", [
    ({"model": "llama3-13b"}, "is not one of llama3-8b, llama3-70b, llama3-405b, llama3-1t"),
    ({"model": "llama3-405b", "num_processes": 8}, "must be a multiple of 256"),
    ({"scale": 0}, "--scale must be > 0 and <= 1"),
    ({"nodes": 5}, "but the profile allows 4 (nodes.count)"),
    ({"model": "llama3-70b"}, "64 ranks at 2 simulated accelerators per node"),
    ({"num_processes": 2, "nodes": 3}, "each node needs at least one rank"),
    ({"engine": "fio"}, "is not one of builtin, dlio"),
])
def test_bad_requests_say_what_to_change(request_kw, message):
    with pytest.raises(PlanError, match=None) as err:
        make_plan(**request_kw)
    assert message in str(err.value)


def test_results_dir_unusable_in_sbatch_directive_is_refused():
    profile = load_profile("localhost")
    with pytest.raises(PlanError, match="storage.results_dir") as err:
        plan_checkpointing(CheckpointingRequest(model="llama3-8b"), profile, run_id="r",
                           run_dir="/scratch/my runs/r", python=PY)
    assert "no spaces" in str(err.value)


def test_golden_scripts_localhost():
    scripts = render_plan(make_plan(scale=0.001, num_checkpoints_write=3, num_checkpoints_read=3,
                                    seconds_between_checkpoints=0))
    assert list(scripts) == ["00-preflight.sbatch", "01-checkpointing.sbatch", "02-finalize.sbatch"]
    check_golden(scripts, "localhost")


@pytest.mark.parametrize("value", ["/a,/etc:/hostetc:rw", "/scratch/x%j", "/scratch/my runs", "/scratch/a\nb"])
def test_storage_paths_refuse_what_would_add_mounts_or_expand_in_sbatch(value):
    from mlps_slurm.profile import ProfileError

    for key in ("storage.results_dir", "storage.checkpoint_dir", "storage.data_dir", "storage.kvcache_dir"):
        with pytest.raises(ProfileError, match="without commas, '%', spaces or control characters"):
            load_profile("localhost", [f"{key}={value}"])


@pytest.mark.parametrize("evil", ["x; rm -rf ~", "$(reboot)", "`touch /tmp/pwned`", "a'b\"c", "$HOME"])
def test_profile_values_render_inert(evil, tmp_path):
    marker = tmp_path / "executed"
    plan = make_plan(overrides=["environment.env=" + json.dumps({"EVIL": evil}),
                                # storage paths refuse spaces (test_storage_paths_refuse_...): the rest stays
                                f"storage.checkpoint_dir=/scratch/{evil.replace(' ', '_')}"])
    for text in render_plan(plan).values():
        script = tmp_path / "s.sh"
        script.write_text(text)
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
        # Run only the environment part of the header, to prove the value is data, not code.
        header = text.split("export MLPS_RUN_DIR")[0].replace("set -euo pipefail", "")
        probe = header + f'\nprintf %s "$EVIL" > {marker}\n'
        script.write_text(probe)
        subprocess.run(["bash", str(script)], check=True, timeout=10)
        assert marker.read_text() == evil
