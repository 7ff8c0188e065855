"""Property: whatever string lands in a profile field, the rendered scripts parse and never run it.

A value is either refused by validation (with a message) or rendered; a rendered script must pass `bash -n`
and, when executed with stub srun/mpirun/apptainer/python, must not execute any part of the value.
"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlps_slurm.plan import PlanError
from mlps_slurm.benchmarks.checkpointing.request import CheckpointingRequest
from mlps_slurm.benchmarks.checkpointing.plan import plan as plan_checkpointing
from mlps_slurm.profile import load_profile
from mlps_slurm.profile.schema import SCHEMA, check_value, cross_field_problems
from mlps_slurm.render import TemplateError, render_plan

# environment.setup is admin-owned shell, rendered verbatim by design; name/extends/templates.dir select files.
TEXT_FIELDS = sorted(k for k, f in SCHEMA.items()
                     if f.kind in ("str", "list[str]", "dict[str,str]")
                     and k not in ("environment.setup", "name", "extends", "templates.dir"))
STUBS = ("srun", "mpirun", "apptainer", "module", "scontrol", "sbatch")


def payloads(marker: Path) -> list[str]:
    touch = f"/usr/bin/touch {marker}"
    return [f"$({touch})", f"`{touch}`", f"; {touch}", f"' ; {touch}; '", f'" ; {touch}; "', f"\n{touch}\n",
            f"&& {touch}", f"| {touch}", f"$(<{marker})", f"${{IFS}}{touch}", f"\\'$({touch})"]


def stub_dir(tmp: Path) -> Path:
    d = tmp / "stubs"
    if not d.exists():
        d.mkdir()
        for name in STUBS + ("python-stub",):
            p = d / name
            p.write_text("#!/bin/sh\nexit 0\n")
            p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return d


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_value_in_any_field_renders_inert(tmp_path, data):
    marker = tmp_path / "EXECUTED"
    key = data.draw(st.sampled_from(TEXT_FIELDS), label="field")
    word = st.one_of(st.text(max_size=12), st.sampled_from(payloads(marker)))
    text = st.builds(lambda a, b, c: a + b + c, st.text(max_size=6), word, st.text(max_size=6))
    kind = SCHEMA[key].kind
    if kind == "list[str]":
        raw = data.draw(st.lists(text, min_size=1, max_size=3), label="value")
    elif kind == "dict[str,str]":
        raw = {"MLPS_PROBE": data.draw(text, label="value")}
    else:
        raw = data.draw(text, label="value")
    render_and_run(tmp_path, marker, key, raw)


@pytest.mark.parametrize("key", TEXT_FIELDS)
def test_every_field_with_each_injection(tmp_path, key):
    """The deterministic half: every field meets the classic injections, whatever hypothesis happens to draw."""
    marker = tmp_path / "EXECUTED"
    for payload in payloads(marker)[:4]:
        kind = SCHEMA[key].kind
        raw = [payload] if kind == "list[str]" else {"MLPS_PROBE": payload} if kind.startswith("dict") else payload
        render_and_run(tmp_path, marker, key, raw)


def render_and_run(tmp_path: Path, marker: Path, key: str, raw: object) -> None:
    profile = load_profile("localhost", [f"storage.results_dir={tmp_path}/runs",
                                         f"storage.checkpoint_dir={tmp_path}/ckpt"])
    value, problem = check_value(key, raw)
    if problem:
        return  # refused with a message: nothing rendered
    profile.values[key] = value
    if cross_field_problems(profile.values):
        return
    if key.startswith("container.") and profile.values["container.runtime"] != "none" \
            and not profile.values["container.image"]:
        return
    run_dir = f"{tmp_path}/runs/r"
    try:
        plan = plan_checkpointing(CheckpointingRequest(model="llama3-8b", scale=0.001), profile, run_id="r",
                                  run_dir=run_dir, python=str(stub_dir(tmp_path) / "python-stub"))
        scripts = render_plan(plan)
    except (PlanError, TemplateError):
        return
    env = {"PATH": f"{stub_dir(tmp_path)}:/usr/bin:/bin", "HOME": str(tmp_path), "SLURM_JOB_NODELIST": "n1"}
    for name, script in scripts.items():
        path = tmp_path / name
        path.write_text(script)
        assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0, script
        subprocess.run(["bash", str(path)], capture_output=True, env=env, cwd=tmp_path, timeout=20)
        assert not marker.exists(), f"{key}={raw!r} was executed by {name}:\n{script}"
