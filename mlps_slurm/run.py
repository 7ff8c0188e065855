"""launch(): profile + request -> plan -> render -> (sbatch --test-only | run directory -> submit).

The one path that starts a chain, for the CLI, scheduled runs and resume alike. It never imports click and never
prints: it returns what happened, or raises an error whose message names the option, profile key or file to fix.
Nothing is written before the plan, the engine probe, the templates and Slurm have all said yes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from mlps_slurm import __version__
from mlps_slurm.plan import Plan
from mlps_slurm.profile import SiteProfile, load_profile
from mlps_slurm.render import render_plan, site_template_dirs
from mlps_slurm.rundir import MANIFEST_SCHEMA, RunDirectory, atomic_write_text, new_run_id
from mlps_slurm.slurm import SlurmBackend, SlurmError, get_backend

# (profile, run_id, run_dir, python) -> Plan; raises PlanError for a request that cannot run here.
Planner = Callable[[SiteProfile, str, str, str], Plan]

ACTIONS = ("render", "test-only", "submit")


@dataclass
class Launch:
    """What launch() did: the plan, and the run directory and job ids (submit), or Slurm's answers (test-only)."""

    action: str
    plan: Plan
    profile: SiteProfile
    run: RunDirectory | None = None
    job_ids: dict[str, str] = field(default_factory=dict)
    test_only: list[tuple[str, str, bool]] = field(default_factory=list)  # (job key, Slurm's answer, accepted)


def jobs_python(profile: SiteProfile) -> str:
    """The interpreter jobs run: the profile's, or the one running mlps-slurm (same environment everywhere)."""
    return profile.get("environment.python") or sys.executable


def profile_digest(profile: SiteProfile) -> str:
    return hashlib.sha256(json.dumps(profile.values, sort_keys=True).encode()).hexdigest()


def benchmark_planner(name: str, request: Any) -> Planner:
    """Plan one benchmark's request, then probe its engine in the jobs' environment (inside the image on container
    sites; left to the preflight job when the login node cannot run the image)."""
    from mlps_slurm import benchmarks, probes

    bench = benchmarks.get(name)

    def plan_it(profile: SiteProfile, run_id: str, run_dir: str, python: str) -> Plan:
        plan = bench.plan(request, profile, run_id=run_id, run_dir=run_dir, python=python)
        bench.probe(plan, python)
        return probes.settle(plan, profile, python)

    return plan_it


def suite_planner(request: Any) -> Planner:
    from mlps_slurm.plan_suite import plan_suite

    def plan_it(profile: SiteProfile, run_id: str, run_dir: str, python: str) -> Plan:
        return plan_suite(request, profile, run_id=run_id, run_dir=run_dir, python=python, probe=True)

    return plan_it


def launch(action: str, kind: str, planner: Planner, profile_ref: str, overrides: list[str],
           results_dir: str | None = None, backend: SlurmBackend | None = None) -> Launch:
    """`kind` names the run (its id starts with it): a benchmark, "all" or "preflight"."""
    if action not in ACTIONS:
        raise ValueError(f"action {action!r}; valid: {', '.join(ACTIONS)}")
    if results_dir:
        from mlps_slurm.benchmarks.base import PlanError
        from mlps_slurm.profile.schema import STORAGE_PATH

        resolved = str(Path(results_dir).resolve())
        if not STORAGE_PATH.match(resolved):
            raise PlanError(f"--results-dir {resolved!r}: use a directory without commas, '%', spaces or control "
                            "characters (it becomes a container bind and a #SBATCH --output path)")
        overrides = [*overrides, f"storage.results_dir={resolved}"]
    profile = load_profile(profile_ref, overrides)
    results_root = Path(profile.get("storage.results_dir"))
    run_id = new_run_id(kind)
    plan = planner(profile, run_id, str(results_root / run_id), jobs_python(profile))
    # Render before creating anything: a bad template leaves no directory behind.
    scripts = render_plan(plan, site_template_dirs(profile))
    backend = backend or get_backend()
    if action != "render":
        backend.ping()  # an unreachable Slurm leaves no run behind
    if action == "test-only":
        return Launch(action, plan, profile, test_only=test_only(plan, scripts, backend, profile))
    run = create_run(plan, profile, results_root, scripts)
    result = Launch(action, plan, profile, run=run)
    if action == "submit":
        create_bind_sources(plan)
        from mlps_slurm.chain import submit_chain

        result.job_ids = submit_chain(run, backend)  # on failure: cancels what it submitted, removes the run
    return result


def create_bind_sources(plan: Plan) -> None:
    """The storage directories a container run binds, created here when this login node can (a shared
    filesystem). Where it cannot (node-local storage, a filesystem only the compute nodes mount, no permission),
    each job script creates them before its first containerized step and fails naming the profile key."""
    setup = plan.preflight.get("container")
    if not setup or setup["every_node"]:
        return
    for d in setup["create"]:
        try:
            Path(d["path"]).mkdir(parents=True, exist_ok=True)
        except OSError:
            continue


def test_only(plan: Plan, scripts: dict[str, str], backend: SlurmBackend,
              profile: SiteProfile) -> list[tuple[str, str, bool]]:
    """sbatch --test-only on each rendered script, from a scratch directory that is removed afterwards; a refusal
    names the profile key that set the refused option (the scratch script is gone by the time anyone reads it)."""
    from mlps_slurm.profile.refusals import explain_refusal

    answers = []
    with tempfile.TemporaryDirectory(prefix="mlps-test-only-") as tmp:
        for (name, text), job in zip(scripts.items(), plan.jobs):
            path = Path(tmp) / name
            path.write_text(text)
            try:
                answers.append((job.key, backend.submit(path, [], list(job.sbatch_args), test_only=True), True))
            except SlurmError as exc:
                answers.append((job.key, explain_refusal(exc.stderr or str(exc), job.sbatch, job.sbatch_args,
                                                         profile), False))
    return answers


def create_run(plan: Plan, profile: SiteProfile, results_root: Path,
               scripts: dict[str, str] | None = None) -> RunDirectory:
    """The complete run directory, created under a temporary name and renamed into place."""
    if scripts is None:
        scripts = render_plan(plan, site_template_dirs(profile))
    with RunDirectory.staged(results_root, plan.run_id) as staged:
        write_run(plan, profile, staged, scripts)
    return RunDirectory(results_root / plan.run_id)


def write_run(plan: Plan, profile: SiteProfile, run: RunDirectory, scripts: dict[str, str]) -> dict[str, Any]:
    """Scripts, resolved profile and manifest of a (staged) run directory; for a suite, also each workload's run
    directory (its manifest; its jobs' scripts are the suite's)."""
    from mlps_slurm.plan_suite import member_key

    for name, text in scripts.items():
        atomic_write_text(run.scripts / name, text, mode=0o755)
    manifest = write_manifest(plan, profile, run, list(scripts))
    script_of = {job.key: name for job, name in zip(plan.jobs, scripts)}
    for (rel, member), info in zip(plan.members, plan.request_record().get("members", [])):
        member_run = RunDirectory(run.path / rel)
        for sub in ("logs", "raw", "results"):
            (member_run.path / sub).mkdir(parents=True, exist_ok=True)
        # The suite's preflight checked the nodes for this run too; the finalize replaces the link with a copy,
        # so the finished run directory stands alone.
        (member_run.path / "preflight").symlink_to(Path("..", "..", "preflight"))
        write_manifest(member, profile, member_run,
                       [f"../../scripts/{script_of[member_key(info['name'], job.key)]}" for job in member.jobs],
                       suite={"run_id": plan.run_id, "path": str(run.final_path)})
    return manifest


def write_manifest(plan: Plan, profile: SiteProfile, run: RunDirectory, scripts: list[str],
                   suite: dict[str, str] | None = None) -> dict[str, Any]:
    if plan.lockfile_source:
        # The run keeps the exact lockfile its nodes were checked against.
        atomic_write_text(run.lockfile, Path(plan.lockfile_source).read_text())
    atomic_write_text(run.profile_file, yaml.safe_dump(profile.nested(), sort_keys=False, default_flow_style=False))
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "run_id": plan.run_id,
        "benchmark": plan.benchmark,
        "tool_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(),
        "state": "rendered",
        "request": plan.request_record(),
        "settings": plan.settings,
        "profile": {"name": profile.name, "digest": profile_digest(profile), "values": profile.values},
        "plan": {
            "notes": list(plan.notes),
            "jobs": [{"key": j.key, "script": name, "sbatch": list(j.sbatch), "sbatch_args": list(j.sbatch_args),
                      "pin_to_preflight": j.pin_to_preflight, "outputs": list(j.outputs),
                      "dependencies": [[kind, list(keys)] for kind, keys in j.dependencies]}
                     for j, name in zip(plan.jobs, scripts)],
        },
        "preflight": plan.preflight,
        "jobs": {},
    }
    if suite:
        manifest["suite"] = suite
    run.write_manifest(manifest)
    return manifest
