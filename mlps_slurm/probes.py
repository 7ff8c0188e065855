"""Engine probes: a benchmark's EngineProbe run in the jobs' environment, which on a container site is the image.

On the login node (`settle`, before anything is written): directly without a container, through the container
runtime when it can run the image here (ContainerRuntime.login_command: the one place that knows how). When it
cannot (no runtime on the login node, an image only the compute nodes reach, or the runtime itself failing here),
the probe is recorded in the plan's preflight section instead and the preflight job runs it on every node, inside
the same container as the benchmark (check `engine.<benchmark>`): a missing engine then fails the preflight, and
Slurm cancels the benchmark jobs before they start, with the probe's answer and its fix in preflight.txt.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from typing import Callable

from mlps_slurm import benchmarks, containers
from mlps_slurm.benchmarks.base import EngineProbe, PlanError
from mlps_slurm.plan import Plan
from mlps_slurm.profile import SiteProfile

TIMEOUT_S = 300.0  # importing tensorflow on a cold shared filesystem takes minutes


class RuntimeFailed(Exception):
    """The container runtime failed before the probe ran; the message is its error."""


def run(probe: EngineProbe, python: str, wrap: Callable[[list[str]], list[str]] | None = None,
        runtime: containers.ContainerRuntime | None = None, where: str = "",
        timeout: float = TIMEOUT_S, env: dict[str, str] | None = None) -> list[str]:
    """The probe's problems (each with its fix); empty when the engine can run. `wrap` turns the probe's command
    into the one that runs it (inside the image); `where` ends the messages (" in the image X"); `env` replaces
    the environment it runs with."""
    argv = [python, "-c", probe.code, *probe.args]
    try:
        proc = subprocess.run(wrap(argv) if wrap else argv, capture_output=True, text=True, timeout=timeout,
                              env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"cannot run the jobs' Python {python}{where} to probe the {probe.benchmark} engine: {exc}; set "
                "environment.python in the profile to a working interpreter"]
    error = proc.stderr.strip()[-500:]
    if proc.returncode != 0:
        if runtime is not None and runtime.runtime_failed(proc.returncode, proc.stderr):
            if python in proc.stderr:  # e.g. "FATAL: stat /opt/venv/bin/python: no such file or directory"
                return [f"the image cannot start the jobs' Python {python}{where}: {error}; set environment.python "
                        "to the interpreter inside the image"]
            raise RuntimeFailed(error)
        return [f"the jobs' Python {python}{where} failed to probe the {probe.benchmark} engine (exit "
                f"{proc.returncode}): {error}; set environment.python to an interpreter with the engine installed"]
    try:
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return [f"the jobs' Python {python}{where} gave no answer to the {probe.benchmark} engine probe "
                f"(stdout: {proc.stdout.strip()[-200:]!r}); set environment.python to a Python 3 interpreter"]
    return benchmarks.get(probe.benchmark).judge_probe(probe, info, python)


def settle(plan: Plan, profile: SiteProfile, python: str) -> Plan:
    """Run the plan's engine probe where the jobs' environment is: refuse (PlanError) on its problems, or, when
    the login node cannot run the image, return the plan with the probe left to its preflight job."""
    probe = benchmarks.get(plan.benchmark).engine_probe(plan)
    if probe is None:
        return plan
    runtime = containers.get(profile.get("container.runtime"))
    where = "" if runtime.name == "none" else f" in the image {profile.get('container.image')} (container.image)"
    try:
        problems = run(probe, python, lambda argv: runtime.login_command(profile, argv), runtime, where)
    except containers.NotHere as exc:
        return defer(plan, probe, str(exc), runtime)
    except RuntimeFailed as exc:
        return defer(plan, probe, f"{runtime.name} could not start the image on this login node ({exc})", runtime)
    if problems:
        asked = f" (probed{where} through {runtime.name} on this login node)" if where else ""
        raise PlanError("; ".join(problems) + asked)
    return plan


def defer(plan: Plan, probe: EngineProbe, reason: str, runtime: containers.ContainerRuntime) -> Plan:
    """The plan with `probe` added to what its preflight checks on every node, and a note saying why."""
    spec = dict(plan.preflight)
    spec["engine_probes"] = [*spec.get("engine_probes", []), probe.record()]
    where = "on every node" if runtime.name == "none" else "inside the container"
    note = f"the {probe.benchmark} engine is probed by the preflight job {where}, not on this login node: {reason}"
    return replace(plan, preflight=spec, notes=(*plan.notes, note))
