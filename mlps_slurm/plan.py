"""Request + profile + catalog -> Plan: the jobs of a chain, their options and dependencies. Pure: no I/O.

Every decision about a job (node counts, launcher line, engine command, dependencies) is made here, so templates
only format and the plan can be tested without Slurm.
"""

from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass, field, replace
from typing import Any

from mlps_slurm import __version__
from mlps_slurm.benchmarks.base import PlanError
from mlps_slurm.profile import SiteProfile
from mlps_slurm.profile.schema import SBATCH_TOKEN, SCHEMA, storage_keys
from mlps_slurm.shell import ShellRef

__all__ = ["JobSpec", "Plan", "PlanError", "ShellRef"]


@dataclass(frozen=True)
class JobSpec:
    key: str  # stable id inside the chain: "preflight", "checkpointing", "finalize"
    template: str
    sbatch: tuple[str, ...]  # "#SBATCH" arguments, e.g. "--nodes=4"
    dependencies: tuple[tuple[str, tuple[str, ...]], ...]  # (Slurm dependency type, keys of earlier jobs)
    context: dict[str, Any]
    pin_to_preflight: bool = False  # a benchmark job: runs only on the nodes the preflight validated
    # In a container, bind (and first create) the run's storage directories. The finalize does not: it reads only
    # the run directory, and must report even when a storage directory could not be created.
    binds_storage: bool = True
    sbatch_args: tuple[str, ...] = ()  # extra sbatch command-line arguments (profile slurm.extra_sbatch_args)
    # What the job writes inside its run directory (paths relative to it; "{task}" is the array task, two digits):
    # `resume` sets these aside before a job or task runs again, so its new attempt starts clean and the finalize
    # never mixes a failed attempt's files into the results.
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    run_id: str
    benchmark: str
    # The request as it will run: a benchmark's typed Request with every default settled (or, for the suite and
    # the admins' preflight, their own small request). Written to the manifest; jobs never rewrite it.
    request: Any
    jobs: tuple[JobSpec, ...]
    notes: tuple[str, ...]
    # What planning derived from the request and the profile (paths, expected sizes, the engine's configuration):
    # the manifest's "settings", which the jobs, the finalize and the rules read beside the request.
    settings: dict[str, Any] = field(default_factory=dict)
    # What the preflight verifies on every node (written to the manifest's "preflight" section).
    preflight: dict[str, Any] = field(default_factory=dict)
    # `submit all`: the benchmark runs of the suite, as (directory relative to the suite's, the run's own plan).
    # Their jobs are among `jobs` (keys "<member>.<key>"); each run keeps its own manifest there.
    members: tuple[tuple[str, "Plan"], ...] = ()
    lockfile_source: str | None = None  # a lockfile the nodes are checked against; the run keeps a copy

    def request_record(self) -> dict[str, Any]:
        """The request as the manifest records it."""
        to_dict = getattr(self.request, "to_dict", None)
        return to_dict() if to_dict else dict(self.request)

    def record(self) -> dict[str, Any]:
        """Request and settings as one mapping, as readers of the manifest see them (rundir.run_record)."""
        return {**self.request_record(), **self.settings}

    def job(self, key: str) -> JobSpec:
        return next(j for j in self.jobs if j.key == key)


def _sbatch_value(option: str, value: str, source: str) -> str:
    if not SBATCH_TOKEN.match(value):
        raise PlanError(f"{source} = {value!r} cannot be used in `#SBATCH {option}`: only letters, digits and "
                        "_.,:@%+=/-[]&|!* are allowed there (no spaces or quotes); choose a path or name without them")
    return f"{option}={value}"


def sbatch_directives(profile: SiteProfile, run_dir: str, key: str, kind: str, benchmark_job: bool) -> list[str]:
    """The #SBATCH options of one job. `kind` is the profile's job kind: preflight, datagen, run or finalize."""
    opts = [_sbatch_value("--job-name", f"mlps-{key}", "job name"),
            _sbatch_value("--output", f"{run_dir}/logs/%x-%j.out", "storage.results_dir"),
            _sbatch_value("--time", profile.get(f"slurm.time_limit.{kind}"), f"slurm.time_limit.{kind}")]
    partition_key = f"slurm.partitions.{kind}" if profile.get(f"slurm.partitions.{kind}") else "slurm.partition"
    for opt, pkey in (("--partition", partition_key), ("--account", "slurm.account"), ("--qos", "slurm.qos"),
                      ("--reservation", "slurm.reservation"), ("--constraint", "slurm.constraint")):
        value = profile.get(pkey)
        if value:
            opts.append(_sbatch_value(opt, value, pkey))
    if benchmark_job:
        # A benchmark job pinned to the preflight's nodes would wait forever after a node failure if Slurm
        # requeued it ("Nodes required for job are DOWN"): it fails instead, and the finalize reports NODE_FAIL.
        opts.append("--no-requeue")
        # Only the jobs that drive storage need whole nodes or accelerators; preflight and finalize stay small.
        if profile.get("slurm.gres"):
            opts.append(_sbatch_value("--gres", profile.get("slurm.gres"), "slurm.gres"))
        if profile.get("slurm.exclusive"):
            opts.append("--exclusive")
    opts += list(profile.get("slurm.extra_directives"))
    return opts


def pyxis_srun_options(profile: SiteProfile, run_dir: str) -> list[str]:
    """The srun options of the profile's container runtime (pyxis's; none for the others)."""
    from mlps_slurm import containers

    return containers.get(profile.get("container.runtime")).srun_options(profile, run_dir)


def apptainer_prefix(profile: SiteProfile, run_dir: str) -> list[str]:
    """The command prefix of the profile's container runtime (apptainer exec ...; none for the others)."""
    from mlps_slurm import containers

    return containers.get(profile.get("container.runtime")).exec_prefix(profile, run_dir)


def batch_host_command(profile: SiteProfile, run_dir: str, argv: list[str]) -> list[str]:
    """A single command on the batch host, inside the container when there is one."""
    from mlps_slurm import containers

    return containers.get(profile.get("container.runtime")).batch_host_command(profile, run_dir, argv)


def per_node_command(profile: SiteProfile, run_dir: str, nodes: int, argv: list[str],
                     step_options: tuple[str, ...] = ()) -> list[str]:
    """One task on each node of the allocation (srun: the scheduler's own tool, whatever the MPI launcher)."""
    from mlps_slurm import containers

    return containers.get(profile.get("container.runtime")).per_node_command(profile, run_dir, nodes, argv,
                                                                            step_options)


HOST_METRICS_DIR = "hostmetrics"


def host_metrics_command(profile: SiteProfile, run_dir: str, python: str, nodes: int, key: str,
                         array: bool = False) -> list[str] | None:
    """The host-metrics sampler of one benchmark job, one task on each of its nodes, writing into
    <run_dir>/hostmetrics/<key>[.NN]/ (NN: the array task); None when the profile turns it off.

    --ntasks: the job's own task count is in the environment srun reads; --overlap: the step shares the CPUs and
    memory of the job's other steps, so it neither waits for nor takes the benchmark's; --mpi=none: it needs no MPI
    set-up whatever the site's default plugin. The job script stops it with SIGUSR1, which srun forwards to the
    tasks (on SIGTERM srun kills them before they can write their end snapshot)."""
    if not profile.get("monitoring.host_metrics"):
        return None
    argv = [python, "-m", "mlps_slurm.steps.hostmetrics", "sample", "--out", f"{run_dir}/{HOST_METRICS_DIR}/{key}",
            "--interval", f"{profile.get('monitoring.interval_s'):g}"]
    if array:
        argv += ["--task", ShellRef("SLURM_ARRAY_TASK_ID")]
    return per_node_command(profile, run_dir, nodes, argv,
                            (f"--ntasks={nodes}", "--overlap", "--mpi=none", "--job-name=hostmetrics"))


def host_metrics_outputs(profile: SiteProfile, key: str, array: bool = False) -> tuple[str, ...]:
    """The job's host-metrics directory among its outputs (set aside when `resume` runs the job again)."""
    if not profile.get("monitoring.host_metrics"):
        return ()
    return (f"{HOST_METRICS_DIR}/{key}" + (".{task}" if array else ""),)


def launcher_argv(profile: SiteProfile, num_tasks: int, run_dir: str) -> list[str]:
    """The parallel launch prefix inside an allocation (scheduler and launcher are separate axes)."""
    from mlps_slurm import containers, launchers

    return launchers.get(profile.get("launcher.kind")).launch_prefix(
        profile, num_tasks, containers.get(profile.get("container.runtime")), run_dir)


def container_setup(profile: SiteProfile, run_dir: str, storage: list[tuple[str, str]]) -> dict[str, Any] | None:
    """What every job script of a container run does before its first containerized command (the header template
    formats it): the binds (the profile's mounts, the results and only the storage directories of this run) and
    the directories to create first, each with the profile key that set it, because apptainer and pyxis refuse a
    bind whose source does not exist. None without a container (the preflight creates the directories then)."""
    if profile.get("container.runtime") == "none":
        return None
    from mlps_slurm import containers

    keys = {SCHEMA[k].storage: k for k in storage_keys()}
    create = []
    for sid, path in storage:
        key = keys.get(sid, sid)
        # A path that is not the profile's value came from the command line (e.g. training's dataset.data_folder).
        create.append({"key": key if profile.get(key) == path else f"the {sid} of this run", "path": path})
    return {"binds": containers.bind_list(profile, run_dir, [path for _, path in storage]),
            "binds_without_storage": containers.bind_list(profile, run_dir, []),
            "create": create,
            # the admin's own mounts (e.g. /etc/slurm) are checked, never created
            "check": [{"key": "container.mounts", "path": m.split(":")[0]} for m in profile.get("container.mounts")],
            # node-local storage: every node of the job needs the directories, not only the batch host
            "every_node": not profile.get("storage.shared")}


def container_header(setup: dict[str, Any] | None, storage: bool = True) -> dict[str, Any] | None:
    """What the header template prints for a container setup: the steps that create (or check) each bind source,
    each with the message naming its profile key, then the value of MLPS_CONTAINER_BINDS. Without `storage`
    (JobSpec.binds_storage), only the profile's mounts and the results directory."""
    if not setup:
        return None
    if not storage:
        setup = {**setup, "binds": setup["binds_without_storage"], "create": []}
    steps = []
    if setup["every_node"] and setup["create"]:
        # one task per node of the job, outside the container (which could not start yet), whatever MPI default
        listed = ", ".join(f"{d['key']}={d['path']}" for d in setup["create"])
        steps.append({"argv": ["srun", "--nodes", ShellRef("SLURM_JOB_NUM_NODES"), "--ntasks",
                               ShellRef("SLURM_JOB_NUM_NODES"), "--ntasks-per-node=1", "--mpi=none",
                               "--job-name=container-binds", "mkdir", "-p", "--",
                               *dict.fromkeys(d["path"] for d in setup["create"])],
                      "error": f"mlps-slurm: cannot create on every node the directories the container binds "
                               f"({listed}); create them there, or set these profile keys to directories the job "
                               "can create"})
    else:
        for d in setup["create"]:
            steps.append({"argv": ["mkdir", "-p", "--", d["path"]],
                          "error": f"mlps-slurm: cannot create {d['key']} = {d['path']}, which the container binds; "
                                   f"create it, or set {d['key']} in the profile to a directory the job can create"})
    for d in setup["check"]:
        steps.append({"argv": ["test", "-e", d["path"]],
                      "error": f"mlps-slurm: {d['path']} (a source of {d['key']}) does not exist on this node, so "
                               f"the container cannot bind it; remove it from {d['key']} or create it on every node"})
    return {"steps": steps, "binds": ",".join(setup["binds"])}


def merge_container_setups(setups: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """One setup for the jobs of `submit all`: every workload's binds and directories, each once."""
    present = [s for s in setups if s]
    if not present:
        return None
    merged: dict[str, Any] = {"binds": [], "binds_without_storage": [], "create": [], "check": [],
                              "every_node": present[0]["every_node"]}
    for setup in present:
        for field in ("binds", "binds_without_storage", "create", "check"):
            merged[field] += [item for item in setup[field] if item not in merged[field]]
    return merged


def preflight_requirements(profile: SiteProfile, run_dir: str, python: str,
                           storage: list[tuple[str, str, int]], engine_modules: list[str],
                           separate_from_results: tuple[str, ...] = (),
                           lockfile: str | None = None) -> dict[str, Any]:
    """What every node must provide for this run. `storage` is (id, path, bytes the run will write there);
    `separate_from_results` names the storage ids the rules want on another filesystem than the results."""
    results_root = str(Path(run_dir).parent)
    dirs = [{"id": sid, "path": path, "required_free_bytes": nbytes} for sid, path, nbytes in storage]
    # Result and log files are small; 64 MiB of headroom keeps a nearly full results filesystem from passing.
    dirs.append({"id": "results_dir", "path": results_root, "required_free_bytes": 64 << 20})
    from mlps_slurm import containers, launchers

    # srun for the per-node steps every chain runs, then what the launcher and the container runtime need. Not
    # with a container: the node check runs inside it and sees the image's PATH, not the host's where srun, mpirun
    # and apptainer run; that they work there the preflight shows by starting its own steps through them.
    executables: list[str] = []
    if profile.get("container.runtime") == "none":
        for name in ("srun", *launchers.get(profile.get("launcher.kind")).executables(profile),
                     *containers.get(profile.get("container.runtime")).executables(profile)):
            if name not in executables:
                executables.append(name)
    return {
        "python": python,
        "container": container_setup(profile, run_dir, [(sid, path) for sid, path, _ in storage]),
        "python_modules": ["mlps_slurm", *engine_modules],
        "executables": executables,
        "lockfile": lockfile,
        "storage": dirs,
        "expect_filesystem_type": profile.get("storage.filesystem_type"),
        "storage_shared": profile.get("storage.shared"),
        "separate_filesystems": [[sid, "results_dir"] for sid in separate_from_results],
        "memory_gb_expected": profile.get("nodes.memory_gb"),
        "cpus_expected": profile.get("nodes.cpus"),
    }


def preflight_job(profile: SiteProfile, run_dir: str, python: str, nodes: int,
                  base: dict[str, Any]) -> JobSpec:
    """One task per node checks it, a collective checks MPI, gather decides; on success the benchmark jobs are
    pinned to the validated nodes (the ids come from pin-jobs.txt, written by the submitter). When the launcher
    can start one task per node (srun), the node checks and the collective share one step: MPI starts once."""
    from mlps_slurm import containers, launchers

    def step(action: str, *options: str) -> list[str]:
        return [python, "-m", "mlps_slurm.steps.preflight", action, *options, "--run-dir", run_dir]

    together = launchers.get(profile.get("launcher.kind")).per_node_prefix(
        profile, nodes, containers.get(profile.get("container.runtime")), run_dir)
    return JobSpec(
        key="preflight",
        template="preflight.sbatch.j2",
        sbatch=tuple(sbatch_directives(profile, run_dir, "preflight", "preflight", benchmark_job=False)
                     + [f"--nodes={nodes}", "--ntasks-per-node=1"]),
        dependencies=(),
        outputs=("preflight",),
        context={**base,
                 "node_check": per_node_command(profile, run_dir, nodes, step("node")),
                 "node_and_mpi_check": [*together, *step("node", "--then-mpi")] if together else None,
                 "mpi_check": [*launcher_argv(profile, nodes, run_dir), *step("mpi")],
                 "gather": batch_host_command(profile, run_dir, [
                     python, "-m", "mlps_slurm.steps.preflight", "gather", "--run-dir", run_dir,
                     "--expected-nodes", ShellRef("SLURM_JOB_NODELIST")]),
                 "pin_jobs_file": f"{run_dir}/pin-jobs.txt"},
    )


def plan_preflight(profile: SiteProfile, *, nodes: int | None, run_id: str, run_dir: str, python: str) -> Plan:
    """Only the preflight, for admins checking nodes (`mlps-slurm preflight`)."""
    nodes = nodes or profile.get("nodes.count")
    if nodes > profile.get("nodes.count"):
        raise PlanError(f"--nodes {nodes} exceeds the profile's nodes.count ({profile.get('nodes.count')})")
    run_dir = run_dir.rstrip("/")
    base = base_context(profile, python, run_id, run_dir)
    job = replace(preflight_job(profile, run_dir, python, nodes, base),
                  sbatch_args=tuple(profile.get("slurm.extra_sbatch_args")))
    storage = [(SCHEMA[key].storage, profile.get(key), 0) for key in storage_keys()]
    return Plan(run_id=run_id, benchmark="preflight", request={"benchmark": "preflight", "nodes": nodes},
                jobs=(job,), notes=(),
                preflight=preflight_requirements(profile, run_dir, python, storage=storage,
                                                 engine_modules=["mpi4py"]))


def base_context(profile: SiteProfile, python: str, run_id: str, run_dir: str) -> dict[str, Any]:
    """What the shared header template prints, for every job of every chain."""
    return {
        "version": __version__,
        "run_id": run_id,
        "run_dir": run_dir,
        "python": python,
        "module_init": profile.get("environment.module_init"),
        "modules": list(profile.get("environment.modules")),
        "env": dict(profile.get("environment.env")),
        "setup": list(profile.get("environment.setup")),
    }


def finalize_job(profile: SiteProfile, run_dir: str, python: str, base: dict[str, Any],
                 after: tuple[str, ...]) -> JobSpec:
    """The last job of every chain. afterany on every earlier job: it runs whatever happened and reports a failed
    preflight or engine job too."""
    return JobSpec(
        key="finalize",
        template="finalize.sbatch.j2",
        sbatch=tuple(sbatch_directives(profile, run_dir, "finalize", "finalize", benchmark_job=False)
                     + ["--nodes=1", "--ntasks=1"]),
        dependencies=(("afterany", after),),
        outputs=("results",),
        binds_storage=False,
        context={**base, "finalize": batch_host_command(profile, run_dir, [
            python, "-m", "mlps_slurm.steps.finalize", "--run-dir", run_dir])},
    )


def with_site_args(jobs: tuple[JobSpec, ...], profile: SiteProfile) -> tuple[JobSpec, ...]:
    """Every job gets the profile's extra sbatch command-line arguments."""
    return tuple(replace(j, sbatch_args=tuple(profile.get("slurm.extra_sbatch_args"))) for j in jobs)


def client_nodes(requested: int | None, profile: SiteProfile) -> int:
    """--nodes, or the profile's nodes.count, never more than that."""
    max_nodes = profile.get("nodes.count")
    nodes = requested or max_nodes
    if nodes > max_nodes:
        raise PlanError(f"--nodes {nodes}: the profile allows {max_nodes} (nodes.count); pass --nodes N with N <= "
                        f"{max_nodes}, or raise nodes.count in the profile")
    return int(nodes)
