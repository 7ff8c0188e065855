"""The node checks of the system: OS, kernel, CPUs, memory, Python, importable modules, installed packages
against the lockfile, executables, and the engine probes the login node left to the preflight."""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import sys
from collections.abc import Mapping
from typing import Any

from mlps_slurm import install_hints, lockfile
from mlps_slurm.steps.preflight.common import FAIL, PASS, WARN, Check, gib, make_check, node_name

# Memory: nodes.memory_gb is read as GiB (2^30), as MLPerf's dataset-size formula does. MemTotal is 2-5% below the
# installed memory (kernel, firmware), so a node is "short" only below 90% of the declared size.
MEMORY_LOW_RATIO = 0.90
# Above 110% the benchmark can cache more than the plan assumed (warning); when the plan sized a dataset from the
# declared memory (training's 5x rule), any excess beyond rounding makes the dataset too small (error).
MEMORY_HIGH_RATIO = 1.10
MEMORY_DATASET_RATIO = 1.005
PYTHON_MIN = (3, 10)


def check_os(os_info: dict[str, str]) -> Check:
    if not os_info.get("id"):
        return make_check("os.distribution", WARN, "cannot identify the OS (no os-release): install hints will be "
                          "generic", os=os_info)
    return make_check("os.distribution", PASS, os_info.get("name") or os_info["id"], os=os_info)


def check_kernel(kernel: dict[str, str]) -> Check:
    return make_check("os.kernel", PASS, f"Linux {kernel['release']} {kernel['machine']}", **kernel)


def check_cpu(cpu: dict[str, Any], expected: int | None, node: str) -> Check:
    facts = {"logical": cpu["logical"], "usable": cpu["usable"], "model": cpu["model"], "expected": expected}
    text = f"{cpu['logical']} CPUs ({cpu['model']})"
    if expected and cpu["logical"] < expected:
        # Fewer cores slow the ranks down (lower AU) but do not invalidate the storage measurement.
        return make_check("cpu.count", WARN, f"{node} has {cpu['logical']} CPUs, the profile declares {expected} "
                          f"(nodes.cpus): ranks per node were planned for {expected}; set nodes.cpus to "
                          f"{cpu['logical']} or exclude {node}", **facts)
    return make_check("cpu.count", PASS, text, **facts)


def check_memory(memory: dict[str, Any], expected_gb: float | None, node: str,
                 sizes_dataset: bool = False) -> Check:
    total = memory["total_bytes"]
    facts = {"total_bytes": total, "expected_gb": expected_gb, "cgroup_limit_bytes": memory["cgroup_limit_bytes"]}
    if not expected_gb:
        return make_check("memory.size", PASS, f"{gib(total)} (not compared: nodes.memory_gb is not set)", **facts)
    ratio = total / (expected_gb * (1 << 30))
    facts["ratio"] = round(ratio, 3)
    if ratio < MEMORY_LOW_RATIO:
        return make_check("memory.size", FAIL, f"{node} has {gib(total)} of memory, less than 90% of the "
                          f"{expected_gb:g} GiB the profile declares (nodes.memory_gb): a wrong node type or failed "
                          f"DIMMs; the plan and the system description assume {expected_gb:g} GiB; exclude {node} "
                          f"(sbatch --exclude) or correct nodes.memory_gb", **facts)
    if ratio > (MEMORY_DATASET_RATIO if sizes_dataset else MEMORY_HIGH_RATIO):
        if sizes_dataset:
            return make_check("memory.size", FAIL, f"{node} has {gib(total)} of memory, more than the "
                              f"{expected_gb:g} GiB the dataset was sized for (nodes.memory_gb): MLPerf's dataset-size "
                              f"rule (5 x client memory) would make this run INVALID; set nodes.memory_gb to at least "
                              f"{total / (1 << 30):.1f} and regenerate the dataset plan", **facts)
        return make_check("memory.size", WARN, f"{node} has {gib(total)} of memory, the profile declares "
                          f"{expected_gb:g} GiB (nodes.memory_gb): more page cache than planned; set nodes.memory_gb "
                          f"to {total / (1 << 30):.1f} for dataset sizing and the system description", **facts)
    return make_check("memory.size", PASS, f"{gib(total)} (profile: {expected_gb:g} GiB)", **facts)


def check_python() -> Check:
    version = platform.python_version()
    ok = sys.version_info >= PYTHON_MIN
    message = f"Python {version} at {sys.executable}" if ok else \
        f"Python {version} at {sys.executable} is older than {'.'.join(map(str, PYTHON_MIN))}; set " \
        "environment.python in the profile to a newer interpreter"
    return make_check("python.version", PASS if ok else FAIL, message, version=version, executable=sys.executable)


def check_module(name: str, pinned: dict[str, str] | None = None, node: str | None = None) -> Check:
    """The module imports (really imports: a broken compiled extension fails here, not an hour into the run)."""
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # any import failure, not only ImportError, makes the node unusable
        dist = install_hints.module_distribution(name)
        version = (pinned or {}).get(lockfile.normalize(dist))
        hint = install_hints.python_package_hint(dist, version, sys.executable)
        return make_check(f"python.import.{name}", FAIL, f"cannot import {name} on {node or node_name()}: "
                          f"{type(exc).__name__}: {exc}; install it into the job interpreter: {hint}", hint=hint)
    version = getattr(module, "__version__", "")
    return make_check(f"python.import.{name}", PASS, f"{name} {version}".strip(), version=version)


def check_lockfile(path: str, node: str, installed: dict[str, str] | None = None) -> tuple[Check, dict[str, str]]:
    """The installed packages against the lockfile; also returns the pins (name -> version) for install hints."""
    try:
        pins = lockfile.parse(path)
    except lockfile.LockfileError as exc:
        return make_check("python.lockfile", FAIL, f"{exc}; fix the path (submit --verify-lockfile) or the file",
                          lockfile=path), {}
    pinned = {p.key: p.version for p in pins if p.version}
    result = lockfile.check(pins, installed)
    facts = {"lockfile": path, "checked": result.checked,
             "problems": [{"name": p.name, "kind": p.kind, "expected": p.expected, "installed": p.installed}
                          for p in result.problems],
             "not_compared": [{"name": p.name, "expected": p.expected, "installed": p.installed}
                              for p in result.not_compared]}
    notes = "; ".join(p.message for p in result.not_compared)
    if result.ok:
        message = f"{result.checked} packages match {path}" + (f"; {notes}" if notes else "")
        return make_check("python.lockfile", PASS, message, **facts), pinned
    wanted = [f"{p.name}{p.expected}" for p in result.problems if p.expected.startswith("==")]
    hint = install_hints.python_packages_hint(wanted, sys.executable) if wanted else ""
    shown = "; ".join(p.message for p in result.problems[:10])
    more = f" and {len(result.problems) - 10} more" if len(result.problems) > 10 else ""
    message = (f"{len(result.problems)} of {result.checked} packages on {node} differ from {path}: {shown}{more}"
               + (f"; fix: {hint}" if hint else ""))
    return make_check("python.lockfile", FAIL, message, hint=hint, **facts), pinned


def check_executable(name: str, node: str, os_info: dict[str, str]) -> Check:
    path = shutil.which(name)
    base = name.rsplit("/", 1)[-1]
    if path is None:
        hint = install_hints.executable_hint(base, os_info.get("id", ""), os_info.get("id_like", ""),
                                             os_info.get("version_id", ""))
        where = f"at {name}" if "/" in name else "on PATH"
        return make_check(f"executable.{base}", FAIL, f"{base} is not {where} on {node}; {hint}", hint=hint,
                          path=None)
    return make_check(f"executable.{base}", PASS, path, path=path)


def without_mpi_identity(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for a child process of an MPI task: without the PMIx/PMI variables that name this task's
    rank (the preflight's node and MPI checks share one step), so a child that initializes MPI (an engine probe
    importing the engine) starts as a singleton instead of claiming the parent's rank from the step's PMIx server.
    Settings (PMIX_MCA_*, OMPI_MCA_*) stay."""
    return {k: v for k, v in environ.items()
            if not (k.startswith(("PMIX_", "PMI_")) and not k.startswith("PMIX_MCA_"))}


def check_engine(record: dict[str, Any], python: str, node: str) -> Check:
    """A benchmark's engine probe that the login node could not run in the image (mlps_slurm.probes): run here,
    inside the container, as the benchmark jobs will run."""
    from mlps_slurm.benchmarks.base import EngineProbe
    from mlps_slurm.probes import run

    probe = EngineProbe.from_record(record)
    cid = f"engine.{probe.benchmark}"
    problems = run(probe, python, env=without_mpi_identity(os.environ))
    if problems:
        return make_check(cid, FAIL, f"{probe.benchmark}: the engine cannot run on {node}: {'; '.join(problems)}",
                          problems=problems)
    return make_check(cid, PASS, f"{probe.benchmark}: the engine's probe passed in {python}")
