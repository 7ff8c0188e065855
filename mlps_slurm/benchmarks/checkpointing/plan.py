"""Checkpointing request + profile + catalog -> Plan: preflight -> the checkpoint engine under the launcher ->
finalize. Pure, except `probe`, which looks at the jobs' interpreter before anything is submitted."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Mapping

from mlps_slurm.benchmarks.base import EngineProbe, PlanError
from mlps_slurm.benchmarks.checkpointing import catalog as ckpt
from mlps_slurm.benchmarks.checkpointing.engine import ENGINE_MODULE, engine_argv
from mlps_slurm.benchmarks.checkpointing.request import CheckpointingRequest
from mlps_slurm.plan import (JobSpec, Plan, base_context, finalize_job, host_metrics_command, host_metrics_outputs,
                             launcher_argv, preflight_job, preflight_requirements, sbatch_directives, with_site_args)
from mlps_slurm.profile import SiteProfile
from mlps_slurm.rundir import raw_path, raw_relpath


def _nodes(request: CheckpointingRequest, profile: SiteProfile, nprocs: int) -> int:
    max_nodes = profile.get("nodes.count")
    per_node = profile.get("nodes.accelerators_per_node")
    nodes = request.nodes or math.ceil(nprocs / per_node)
    if nodes > max_nodes:
        how = (f"--nodes {nodes}" if request.nodes else
               f"{nprocs} ranks at {per_node} simulated accelerators per node (nodes.accelerators_per_node) "
               f"need {nodes} nodes")
        raise PlanError(f"{how}, but the profile allows {max_nodes} (nodes.count); pass --nodes N (at most "
                        f"{max_nodes}) to put more ranks on each node, or raise nodes.count in the profile")
    if nodes > nprocs:
        raise PlanError(f"--nodes {nodes} is more than the {nprocs} processes; each node needs at least one rank")
    return nodes


def plan(request: CheckpointingRequest, profile: SiteProfile, *, run_id: str, run_dir: str, python: str) -> Plan:
    model = ckpt.LLAMA3_MODELS[request.model]
    nprocs = request.num_processes or model.closed_processes
    problem = ckpt.process_count_problem(model, nprocs)
    if problem:
        raise PlanError(f"--num-processes: {problem}")
    nodes = _nodes(request, profile, nprocs)
    # The request as it will run: every default the profile or the catalog decides is settled here, once.
    request = replace(request, num_processes=nprocs, nodes=nodes,
                      engine=request.engine or profile.get("engines.checkpointing.engine"))

    notes = []
    if request.skip_preflight:
        notes.append("--skip-preflight: the nodes were not validated; the run is recorded as unvalidated")

    run_dir = run_dir.rstrip("/")
    base = base_context(profile, python, run_id, run_dir)
    raw = raw_path(run_dir, "checkpointing", model.name)
    engine_output = f"{raw}/engine.json"
    checkpoint_dir = f"{profile.get('storage.checkpoint_dir').rstrip('/')}/{run_id}"
    expected_bytes = sum(s.total_bytes for s in ckpt.rank_shards(model, nprocs, request.scale))

    bench_sbatch = sbatch_directives(profile, run_dir, "checkpointing", "run", benchmark_job=True) + [
        f"--nodes={nodes}", f"--ntasks={nprocs}"]
    if nprocs % nodes == 0:
        bench_sbatch.append(f"--ntasks-per-node={nprocs // nodes}")
    # One rank that fails (an OSError, the OOM killer) ends the whole step (srun -K) instead of leaving the others
    # spinning in a barrier until the time limit: MPI_Abort alone does not end an srun/PMIx step here.
    # (Not in the preflight: there every node's check must finish and report, whatever the others do.)
    engine_env = {**base["env"], "SLURM_KILL_BAD_EXIT": "1"}
    benchmark = JobSpec(
        key="checkpointing",
        template="checkpointing.sbatch.j2",
        sbatch=tuple(bench_sbatch),
        dependencies=() if request.skip_preflight else (("afterok", ("preflight",)),),
        pin_to_preflight=not request.skip_preflight,
        outputs=(raw_relpath("checkpointing", model.name), *host_metrics_outputs(profile, "checkpointing")),
        context={**base, "env": engine_env,
                 "host_metrics": host_metrics_command(profile, run_dir, python, nodes, "checkpointing"),
                 "raw_dir": raw,
                 "checkpoint_dir": checkpoint_dir,
                 "launch": launcher_argv(profile, nprocs, run_dir),
                 "engine": engine_argv(python, model.name, checkpoint_dir, engine_output,
                                       request.num_checkpoints_write, request.num_checkpoints_read, request.scale,
                                       request.seconds_between_checkpoints, request.keep_files)},
    )
    if request.skip_preflight:
        chain: tuple[JobSpec, ...] = (benchmark, finalize_job(profile, run_dir, python, base, ("checkpointing",)))
    else:
        chain = (preflight_job(profile, run_dir, python, nodes, base), benchmark,
                 finalize_job(profile, run_dir, python, base, ("preflight", "checkpointing")))
    lockfile = f"{run_dir}/lockfile.txt" if request.verify_lockfile else None
    preflight_spec = preflight_requirements(
        profile, run_dir, python,
        storage=[("checkpoint_dir", profile.get("storage.checkpoint_dir"), expected_bytes
                  * request.num_checkpoints_write)],
        engine_modules=[ENGINE_MODULE, "mpi4py"], lockfile=lockfile)
    settings = {"validated": not request.skip_preflight, "checkpoint_dir": checkpoint_dir,
                "engine_output": engine_output, "expected_bytes_per_checkpoint": expected_bytes}
    return Plan(run_id=run_id, benchmark="checkpointing", request=request, settings=settings,
                jobs=with_site_args(chain, profile), preflight=preflight_spec, notes=tuple(notes),
                lockfile_source=request.verify_lockfile)


def probe(plan: Plan, python: str) -> None:
    """Refuse, before anything is written, what the login node can tell is broken (the lockfile)."""
    request = plan.request
    if request.verify_lockfile:
        from mlps_slurm.lockfile import LockfileError, parse

        try:
            parse(request.verify_lockfile)  # a broken lockfile is refused here, not on every node
        except LockfileError as exc:
            raise PlanError(f"--verify-lockfile: {exc}") from exc


def engine_probe(plan: Plan) -> EngineProbe | None:
    """--engine dlio: what the DLIO installed in the jobs' Python can do (the builtin engine needs no probe: the
    preflight imports it on every node)."""
    if plan.request.engine != "dlio":
        return None
    from mlps_slurm.benchmarks.checkpointing.dlio import PROBE_CODE

    return EngineProbe("checkpointing", PROBE_CODE)


def judge_probe(probe: EngineProbe, info: dict[str, Any], python: str) -> list[str]:
    from mlps_slurm.benchmarks.checkpointing.dlio import problems

    return problems(info, python)


def suite_request(model: str, profile: SiteProfile, settings: Mapping[str, Any]) -> CheckpointingRequest:
    """One checkpointing workload of `submit all`."""
    options: dict[str, Any] = {}
    if settings.get("seconds_between_checkpoints") is not None:
        options["seconds_between_checkpoints"] = settings["seconds_between_checkpoints"]
    return CheckpointingRequest(model=model, nodes=settings["nodes"], scale=settings["scale"],
                                accelerator=profile.get("suite.accelerator"), **options)
