"""Request + profile + catalog -> Plan: the jobs of a chain, their options and dependencies. Pure: no I/O.

Every decision about a job (node counts, launcher line, engine command, dependencies) is made here, so templates
only format and the plan can be tested without Slurm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mlps_slurm import __version__
from mlps_slurm.catalog import checkpointing as ckpt
from mlps_slurm.engines.checkpoint import engine_argv
from mlps_slurm.profile import SiteProfile
from mlps_slurm.profile.schema import SBATCH_TOKEN

BENCHMARKS = ("checkpointing",)
CHECKPOINT_ENGINES = ("builtin", "dlio")


class PlanError(ValueError):
    """The request cannot be planned as given; the message says which option to change."""


@dataclass(frozen=True)
class CheckpointingRequest:
    model: str
    num_processes: int | None = None  # None: the CLOSED process count of the model
    scale: float = 1.0
    num_checkpoints_write: int = ckpt.DEFAULT_NUM_CHECKPOINTS_WRITE
    num_checkpoints_read: int = ckpt.DEFAULT_NUM_CHECKPOINTS_READ
    seconds_between_checkpoints: float = ckpt.DEFAULT_SECONDS_BETWEEN_CHECKPOINTS
    nodes: int | None = None  # None: the profile's nodes.count, capped by the process count
    engine: str = "builtin"
    keep_files: bool = False

    benchmark: str = field(default="checkpointing", init=False)


@dataclass(frozen=True)
class JobSpec:
    key: str  # stable id inside the chain: "preflight", "checkpointing", "finalize"
    template: str
    sbatch: tuple[str, ...]  # "#SBATCH" arguments, e.g. "--nodes=4"
    dependencies: tuple[tuple[str, tuple[str, ...]], ...]  # (Slurm dependency type, keys of earlier jobs)
    context: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    run_id: str
    benchmark: str
    request: dict[str, Any]
    jobs: tuple[JobSpec, ...]
    submittable: bool
    notes: tuple[str, ...]

    def job(self, key: str) -> JobSpec:
        return next(j for j in self.jobs if j.key == key)


def _sbatch_value(option: str, value: str, source: str) -> str:
    if not SBATCH_TOKEN.match(value):
        raise PlanError(f"{source} = {value!r} cannot be used in `#SBATCH {option}`: only letters, digits and "
                        "_.,:@%+=/-[] are allowed there (no spaces or quotes); choose a path or name without them")
    return f"{option}={value}"


def _common_sbatch(profile: SiteProfile, run_dir: str, key: str, time_key: str) -> list[str]:
    opts = [_sbatch_value("--job-name", f"mlps-{key}", "job name"),
            _sbatch_value("--output", f"{run_dir}/logs/%x-%j.out", "storage.results_dir"),
            _sbatch_value("--time", profile.get(f"slurm.time_limit.{time_key}"), f"slurm.time_limit.{time_key}")]
    for opt, pkey in (("--partition", "slurm.partition"), ("--account", "slurm.account"), ("--qos", "slurm.qos")):
        value = profile.get(pkey)
        if value:
            opts.append(_sbatch_value(opt, value, pkey))
    return opts


def launcher_argv(profile: SiteProfile, num_tasks: int) -> list[str]:
    """The parallel launch prefix inside an allocation (scheduler and launcher are separate axes)."""
    extra = list(profile.get("launcher.extra_args"))
    if profile.get("launcher.kind") == "srun":
        return ["srun", f"--mpi={profile.get('launcher.mpi')}", f"--ntasks={num_tasks}", *extra]
    return ["mpirun", "-np", str(num_tasks), *extra]


def _base_context(profile: SiteProfile, python: str, run_id: str, run_dir: str) -> dict[str, Any]:
    return {
        "version": __version__,
        "run_id": run_id,
        "run_dir": run_dir,
        "python": python,
        "modules": list(profile.get("environment.modules")),
        "env": dict(profile.get("environment.env")),
        "setup": list(profile.get("environment.setup")),
    }


def plan_checkpointing(request: CheckpointingRequest, profile: SiteProfile, *, run_id: str, run_dir: str,
                       python: str) -> Plan:
    model = ckpt.LLAMA3_MODELS.get(request.model)
    if model is None:
        raise PlanError(f"unknown model {request.model!r}; valid models: {', '.join(ckpt.LLAMA3_MODELS)}")
    if request.engine not in CHECKPOINT_ENGINES:
        raise PlanError(f"unknown engine {request.engine!r}; valid engines: {', '.join(CHECKPOINT_ENGINES)}")
    nprocs = request.num_processes or model.closed_processes
    problem = ckpt.process_count_problem(model, nprocs)
    if problem:
        raise PlanError(f"--num-processes: {problem}")
    if not 0 < request.scale <= 1:
        raise PlanError(f"--scale must be in (0, 1], got {request.scale}")
    if request.num_checkpoints_write < 1:
        raise PlanError("--writes must be at least 1 (the read phase reads what was written)")
    if request.num_checkpoints_read < 0:
        raise PlanError("--reads must not be negative")
    if request.seconds_between_checkpoints < 0:
        raise PlanError("--seconds-between-checkpoints must not be negative")
    max_nodes = profile.get("nodes.count")
    nodes = request.nodes or min(max_nodes, nprocs)
    if nodes > max_nodes:
        raise PlanError(f"--nodes {nodes} exceeds the profile's nodes.count ({max_nodes}); lower --nodes or raise "
                        "nodes.count in the profile (or -o nodes.count=N)")
    if nodes > nprocs:
        raise PlanError(f"--nodes {nodes} is more than the {nprocs} processes; each node needs at least one rank")

    notes = []
    submittable = True
    if request.scale != 1:
        submittable = False
        notes.append(f"scaled run (--scale {request.scale:g}): checkpoints are {request.scale:g} x the model's size; "
                     "not submittable")
    if (request.num_checkpoints_write, request.num_checkpoints_read) != (ckpt.DEFAULT_NUM_CHECKPOINTS_WRITE,
                                                                         ckpt.DEFAULT_NUM_CHECKPOINTS_READ):
        submittable = False
        notes.append(f"{request.num_checkpoints_write} writes and {request.num_checkpoints_read} reads instead of "
                     "the 10 + 10 the rules require; not submittable")

    run_dir = run_dir.rstrip("/")
    base = _base_context(profile, python, run_id, run_dir)
    raw = f"{run_dir}/raw/checkpointing/{model.name}"
    engine_output = f"{raw}/engine.json"
    checkpoint_dir = f"{profile.get('storage.checkpoint_dir').rstrip('/')}/{run_id}"

    preflight = JobSpec(
        key="preflight",
        template="preflight.sbatch.j2",
        sbatch=tuple(_common_sbatch(profile, run_dir, "preflight", "preflight")
                     + [f"--nodes={nodes}", "--ntasks-per-node=1"]),
        dependencies=(),
        context={**base,
                 "node_check": ["srun", "--ntasks-per-node=1", f"--nodes={nodes}", python, "-m",
                                "mlps_slurm.steps.preflight", "node", "--run-dir", run_dir],
                 "gather": [python, "-m", "mlps_slurm.steps.preflight", "gather", "--run-dir", run_dir]},
    )
    ranks_per_node = math.ceil(nprocs / nodes)
    bench_sbatch = _common_sbatch(profile, run_dir, "checkpointing", "run") + [f"--nodes={nodes}",
                                                                                f"--ntasks={nprocs}"]
    if nprocs % nodes == 0:
        bench_sbatch.append(f"--ntasks-per-node={ranks_per_node}")
    benchmark = JobSpec(
        key="checkpointing",
        template="checkpointing.sbatch.j2",
        sbatch=tuple(bench_sbatch),
        dependencies=(("afterok", ("preflight",)),),
        context={**base,
                 "raw_dir": raw,
                 "checkpoint_dir": checkpoint_dir,
                 "launch": launcher_argv(profile, nprocs),
                 "engine": engine_argv(python, model.name, checkpoint_dir, engine_output,
                                       request.num_checkpoints_write, request.num_checkpoints_read, request.scale,
                                       request.seconds_between_checkpoints, request.keep_files)},
    )
    finalize = JobSpec(
        key="finalize",
        template="finalize.sbatch.j2",
        sbatch=tuple(_common_sbatch(profile, run_dir, "finalize", "finalize") + ["--nodes=1", "--ntasks=1"]),
        # afterany on both: finalize runs whatever happened, and reports a failed preflight too.
        dependencies=(("afterany", ("preflight", "checkpointing")),),
        context={**base, "finalize": [python, "-m", "mlps_slurm.steps.finalize", "--run-dir", run_dir]},
    )
    req = {
        "benchmark": "checkpointing", "model": model.name, "num_processes": nprocs, "nodes": nodes,
        "scale": request.scale, "num_checkpoints_write": request.num_checkpoints_write,
        "num_checkpoints_read": request.num_checkpoints_read,
        "seconds_between_checkpoints": request.seconds_between_checkpoints, "engine": request.engine,
        "keep_files": request.keep_files, "checkpoint_dir": checkpoint_dir, "engine_output": engine_output,
        "expected_bytes_per_checkpoint": sum(s.total_bytes for s in ckpt.rank_shards(model, nprocs, request.scale)),
    }
    return Plan(run_id=run_id, benchmark="checkpointing", request=req, jobs=(preflight, benchmark, finalize),
                submittable=submittable, notes=tuple(notes))
