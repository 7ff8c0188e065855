"""`submit training --skip-preflight`: the chain without its preflight (datagen first, nothing pinned), recorded as
unvalidated; refused when nothing but the preflight could tell the clients' memory that sizes the dataset."""

from __future__ import annotations

import pytest

from mlps_slurm.benchmarks.base import PlanError
from mlps_slurm.benchmarks.training.plan import plan
from mlps_slurm.benchmarks.training.request import TrainingRequest
from mlps_slurm.profile import load_profile


def make(tmp_path, memory: str | None, skip: bool):
    overrides = [f"storage.results_dir={tmp_path}", "nodes.accelerators_per_node=1"]
    if memory:
        overrides.append(f"nodes.memory_gb={memory}")
    profile = load_profile("localhost", overrides)
    request = TrainingRequest(model="unet3d", accelerator="b200", scale=0.01, allow_invalid=True,
                              skip_preflight=skip)
    return plan(request, profile, run_id="training-1", run_dir=str(tmp_path / "training-1"), python="/usr/bin/python3")


def test_skip_preflight_drops_the_preflight_and_the_pins(tmp_path):
    p = make(tmp_path, "4", skip=True)
    assert [j.key for j in p.jobs] == ["datagen", "run", "finalize"]
    datagen, run, finalize = p.jobs
    assert datagen.dependencies == () and not datagen.pin_to_preflight and not run.pin_to_preflight
    assert run.dependencies == (("afterok", ("datagen",)),)
    assert finalize.dependencies[0][1] == ("datagen", "run")
    assert p.settings["validated"] is False and any("--skip-preflight" in n for n in p.notes)
    validated = make(tmp_path, "4", skip=False)
    assert [j.key for j in validated.jobs][0] == "preflight" and validated.settings["validated"] is True


def test_skip_preflight_needs_the_memory_the_preflight_would_measure(tmp_path):
    with pytest.raises(PlanError, match="nodes.memory_gb"):
        make(tmp_path, None, skip=True)
