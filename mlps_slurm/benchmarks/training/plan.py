"""Training request + profile + catalog -> Plan: preflight -> datagen -> 6 runs (array, one at a time) -> finalize.

Pure: no I/O. Every decision is made here; templates format, and the in-job steps (mlps_slurm.benchmarks.training.job)
carry out what the manifest's request says.

The dataset size is settled when the client memory is known: from the profile's nodes.memory_gb (the preflight
then fails if a node has more memory than that, since the dataset would be too small), or, when the profile does
not declare it, in the datagen job from the memory the preflight measured on the very nodes of the run.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Mapping

from mlps_slurm.benchmarks.base import EngineProbe
from mlps_slurm.benchmarks.training import BENCHMARK
from mlps_slurm.benchmarks.training import catalog as cat
from mlps_slurm.benchmarks.training import engine as eng
from mlps_slurm.benchmarks.training.params import Param, ParamError, params_verdict, parse_params
from mlps_slurm.benchmarks.training.request import TrainingRequest
from mlps_slurm.benchmarks.training.workload import (base_config, config_name, dataset_id, effective_workload,
                                                     engine_problems, needs_tensorflow)
from mlps_slurm.plan import (JobSpec, Plan, PlanError, ShellRef, base_context, batch_host_command, client_nodes,
                             finalize_job, host_metrics_command, host_metrics_outputs,
                             launcher_argv, preflight_job, preflight_requirements, sbatch_directives, with_site_args)
from mlps_slurm.profile import SiteProfile
from mlps_slurm.rundir import raw_path, raw_relpath


def _workload(request: TrainingRequest, to_run: bool = True) -> cat.TrainingWorkload:
    try:
        w = cat.workload(request.model, request.accelerator)
    except cat.CatalogError as exc:
        raise PlanError(f"--model/--accelerator: {exc}") from exc
    if to_run and w.engine_problem:
        raise PlanError(f"--model {w.model}: {w.engine_problem}; mlps-slurm drives PyPI dlio-benchmark 2.0.0, so "
                        f"choose another model ({', '.join(m for m in cat.MODELS if m not in ('dlrm', 'flux'))})")
    return w


def _params(request: TrainingRequest) -> list[Param]:
    try:
        params = parse_params(request.params, request.model)
    except ParamError as exc:
        raise PlanError(str(exc)) from exc
    bad = [p for p in params if p.division == "INVALID"]
    if bad and not request.allow_invalid:
        closed_keys = ", ".join(sorted(cat.CLOSED_PARAMS))
        open_keys = ", ".join(sorted(cat.OPEN_PARAMS - cat.CLOSED_PARAMS))
        raise PlanError(f"--param {', '.join(p.key for p in bad)}: allowed in neither division (CLOSED allows "
                        f"{closed_keys}; OPEN also {open_keys}); remove it, or pass --allow-invalid to run it "
                        "anyway as an INVALID (not submittable) run")
    return params


def _explicit_int(params: list[Param], key: str, minimum: int) -> int | None:
    found = next((p for p in params if p.key == key), None)
    if found is None:
        return None
    if isinstance(found.value, bool) or not isinstance(found.value, int) or found.value < minimum:
        raise PlanError(f"--param {key}={found.text}: expected a whole number >= {minimum}")
    return found.value


def _memory(request: TrainingRequest, profile: SiteProfile) -> tuple[float | None, str]:
    if request.client_memory_gb:
        return request.client_memory_gb, "--client-memory-gb"
    declared = profile.get("nodes.memory_gb")
    if declared:
        return float(declared), "the profile's nodes.memory_gb"
    return None, "the preflight's memory facts (nodes.memory_gb is not set), read in the datagen job"


def _layout(request: TrainingRequest, profile: SiteProfile) -> tuple[int, int]:
    """(nodes, simulated accelerators per node): the same count on every node, as the rules require."""
    nodes = client_nodes(request.nodes, profile)
    per_node = request.accelerators_per_node or profile.get("nodes.accelerators_per_node")
    if per_node < 1:
        raise PlanError(f"--accelerators-per-node must be at least 1, got {per_node}")
    return nodes, per_node


def _size(request: TrainingRequest, w: cat.TrainingWorkload, params: list[Param], config: dict[str, Any],
          accelerators: int, nodes: int, memory: float | None) -> tuple[cat.Datasize, cat.TrainingWorkload]:
    """The rules' dataset size for this request, and the workload as the --param values make it."""
    _explicit_int(params, "dataset.num_samples_per_file", 1)
    _explicit_int(params, "dataset.num_subfolders_train", 0)
    explicit_files = _explicit_int(params, "dataset.num_files_train", 1)
    try:
        w_eff = effective_workload(w, config)  # what the --param values make of the catalog's numbers
    except ValueError as exc:
        raise PlanError(f"--param: {exc}") from exc
    if w_eff.record_length_stdev > w_eff.record_length:
        # DLIO draws each side of a sample from Normal(sqrt(L), stdev / 2 / sqrt(L)): a spread above the length
        # asks it for samples many times the mean (gigabytes for a 256 KiB record) and the nodes run out of memory.
        raise PlanError(f"--param: dataset.record_length_stdev ({w_eff.record_length_stdev:,.0f}) is larger than "
                        f"dataset.record_length ({w_eff.record_length:,.0f}); when you change the record length, "
                        "set dataset.record_length_stdev to match (0 for equal sizes)")
    size = cat.datasize(w, accelerators, nodes, memory, request.scale, explicit_files, w_eff.samples_per_file,
                        w_eff.record_length)
    least = cat.min_files_for_au(w_eff.batch_size, accelerators, w_eff.samples_per_file)
    if size.num_files < least:
        need = least / (size.explicit_files or size.rule_files)
        unknown = ("" if size.final else " (counted without the memory term: the clients' memory is unknown "
                   "until the preflight; set nodes.memory_gb to size the dataset now)")
        raise PlanError(f"--scale {request.scale:g} leaves {size.num_files} file(s), fewer than "
                        f"{cat.MIN_STEPS_PER_EPOCH} batches of {w_eff.batch_size} for each of the {accelerators} "
                        f"accelerators ({least} files){unknown}: DLIO leaves each epoch's first step out of the "
                        "accelerator utilization, so with fewer steps every AU would be 0; use --scale "
                        f"{min(1.0, math.ceil(need * 1e4) / 1e4):g} or more")
    if explicit_files is not None and size.memory_samples is not None and explicit_files < size.rule_files \
            and not request.allow_invalid:
        raise PlanError(f"--param dataset.num_files_train={explicit_files} is below the {size.rule_files} files "
                        f"the rules require ({size.explain()}); remove it, or pass --allow-invalid")
    return size, w_eff


def training_datasize(request: TrainingRequest, profile: SiteProfile) -> tuple[cat.Datasize, cat.TrainingWorkload]:
    """`mlps-slurm datasize training`: the size a submit with the same options would plan (also for workloads
    this DLIO cannot run: the rules' size does not depend on the engine)."""
    w = _workload(request, to_run=False)
    params = _params(request)
    nodes, per_node = _layout(request, profile)
    config = base_config(w, params, checkpoint_folder="")
    memory, _ = _memory(request, profile)
    return _size(request, w, params, config, nodes * per_node, nodes, memory)


def plan(request: TrainingRequest, profile: SiteProfile, *, run_id: str, run_dir: str, python: str) -> Plan:
    w = _workload(request)
    params = _params(request)
    nodes, per_node = _layout(request, profile)
    accelerators = nodes * per_node

    run_dir = run_dir.rstrip("/")
    raw = raw_path(run_dir, "training", w.model)
    data_root = profile.get("storage.data_dir").rstrip("/")
    user_ckpt = next((p.text for p in params if p.key == "checkpoint.checkpoint_folder"), None)
    # DLIO 2.0.0 creates checkpoint_folder even when it never checkpoints: point it somewhere harmless then.
    checkpoint_folder = user_ckpt or (f"{profile.get('storage.checkpoint_dir').rstrip('/')}/{run_id}/{w.model}"
                                      if w.checkpoint else f"{run_dir}/dlio/checkpoints-unused")
    config = base_config(w, params, checkpoint_folder)
    problems = engine_problems(config, cat.PARQUET_DLIO)
    if problems:
        raise PlanError("--param: " + "; ".join(problems))

    memory, memory_source = _memory(request, profile)
    if request.skip_preflight and memory is None:
        # Without the preflight nothing measures the clients' memory, which sizes the dataset (5 x memory rule).
        raise PlanError("--skip-preflight: the dataset is sized from the clients' memory, which only the preflight "
                        "measures; set nodes.memory_gb in the profile (or -o nodes.memory_gb=GIB)")
    size, w_eff = _size(request, w, params, config, accelerators, nodes, memory)
    user_folder = next((p.text for p in params if p.key == "dataset.data_folder"), None)
    dataset_dir = user_folder or (f"{data_root}/{w.model}/{dataset_id(config, size.num_files)}"
                                  if size.final else None)
    name = config_name(w.model, w.accelerator, run_id)
    config_dir = f"{run_dir}/dlio/config"

    notes = _notes(request, w, params, size, memory_source)
    base = base_context(profile, python, run_id, run_dir)
    overrides = [p.override() for p in params]
    shim = [python, "-m", eng.SHIM_MODULE]
    launch = launcher_argv(profile, accelerators, run_dir)
    bench_sbatch = [f"--nodes={nodes}", f"--ntasks={accelerators}", f"--ntasks-per-node={per_node}"]

    validated = not request.skip_preflight
    preflight = preflight_job(profile, run_dir, python, nodes, base)
    # In the DLIO jobs one failed rank (killed by the OOM killer, say) ends the whole step (srun -K) instead of
    # leaving the others waiting in a collective until the time limit. Not in the preflight: there every node's
    # check must finish and report, whatever the others do.
    engine_env = {**base["env"], "SLURM_KILL_BAD_EXIT": "1"}
    datagen = JobSpec(
        key="datagen",
        template="datagen.sbatch.j2",
        sbatch=tuple(sbatch_directives(profile, run_dir, "datagen", "datagen", benchmark_job=True) + bench_sbatch),
        dependencies=(("afterok", ("preflight",)),) if validated else (),
        pin_to_preflight=validated,
        outputs=(f"{raw_relpath('training', w.model)}/datagen", *host_metrics_outputs(profile, "datagen")),
        context={**base, "env": engine_env, "raw_dir": raw,
                 "host_metrics": host_metrics_command(profile, run_dir, python, nodes, "datagen"),
                 "prepare": batch_host_command(profile, run_dir, [*shim, "prepare", "--run-dir", run_dir]),
                 "launch": launch,
                 "generate": [*shim, "generate", "--run-dir", run_dir, "--config-dir", config_dir,
                              "--workload-base", name, "--output-dir", f"{raw}/datagen", "--", *overrides]},
    )
    run = JobSpec(
        key="run",
        template="training-run.sbatch.j2",
        sbatch=tuple(sbatch_directives(profile, run_dir, "run", "run", benchmark_job=True) + bench_sbatch
                     + [f"--array=0-{cat.RUNS - 1}%1"]),
        dependencies=(("afterok", ("datagen",)),),
        pin_to_preflight=validated,
        outputs=(f"{raw_relpath('training', w.model)}/run/{{task}}", *host_metrics_outputs(profile, "run", True)),
        context={**base, "env": engine_env, "runs": cat.RUNS, "output_root": f"{raw}/run",
                 "host_metrics": host_metrics_command(profile, run_dir, python, nodes, "run", array=True),
                 "launch": launch,
                 "run": [*shim, "run", "--run-dir", run_dir, "--config-dir", config_dir, "--workload-base", name,
                         "--output-root", f"{raw}/run", "--task", ShellRef("SLURM_ARRAY_TASK_ID"), "--",
                         *overrides],
                 # A failed run breaks the 6 consecutive runs the rules need: the runs still pending are moot.
                 "cancel_pending": ["scancel", "--state=PENDING", ShellRef("SLURM_ARRAY_JOB_ID")]},
    )
    if validated:
        chain = (preflight, datagen, run, finalize_job(profile, run_dir, python, base, ("preflight", "datagen", "run")))
    else:
        chain = (datagen, run, finalize_job(profile, run_dir, python, base, ("datagen", "run")))
        notes.append("--skip-preflight: the nodes were not validated; the run is recorded as unvalidated")
    jobs = with_site_args(chain, profile)

    # The preflight checks where the dataset will live (writable from every node, free space, its filesystem).
    storage = [("data_dir", user_folder or data_root, 0 if request.reuse_data else size.total_bytes)]
    if w.checkpoint is not None:
        storage.append(("checkpoint_dir", profile.get("storage.checkpoint_dir"), 2 * w.checkpoint.model_size_bytes))
    modules = ["dlio_benchmark", "dftracer.logger", "mpi4py", "torch", "hydra", eng.SHIM_MODULE]
    if needs_tensorflow(config):
        modules.append("tensorflow")
    # MLPerf Storage: the dataset and the results must live on different filesystems.
    lockfile = f"{run_dir}/lockfile.txt" if request.verify_lockfile else None
    preflight_spec = preflight_requirements(profile, run_dir, python, storage=storage, engine_modules=modules,
                                            separate_from_results=BENCHMARK.separate_from_results, lockfile=lockfile)
    if memory is not None:
        preflight_spec["memory_gb_expected"] = memory
        # The dataset was sized from this memory: a node with more would make it too small (5 x memory rule).
        preflight_spec["memory_sizes_dataset"] = True

    # The request as it will run (every default settled here, once); what planning derived goes to settings.
    request = replace(request, nodes=nodes, accelerators_per_node=per_node, client_memory_gb=memory)
    settings = {
        "validated": validated, "num_accelerators": accelerators, "memory_source": memory_source,
        "num_files_train": size.num_files, "num_subfolders_train": int(config["dataset"]["num_subfolders_train"]),
        "param_values": {p.key: p.text for p in params}, "params_verdict": params_verdict(params),
        "runs": cat.RUNS, "data_dir": user_folder or data_root, "dataset_dir": dataset_dir,
        "dataset_dir_user": user_folder,
        "results_dir": run_dir.rsplit("/", 1)[0], "checkpoint_folder": checkpoint_folder,
        "datasize": size.as_dict(), "dataset_bytes": size.total_bytes, "au_threshold": w.au_threshold,
        "epochs": int(config["train"]["epochs"]), "batch_size": int(config["reader"]["batch_size"]),
        "record_length": w_eff.record_length, "samples_per_file": w_eff.samples_per_file,
        "needs_tensorflow": needs_tensorflow(config),
        "workload_name": name, "config_dir": config_dir, "workload_config": config,
        "raw_dir": raw, "engine": "dlio", "engine_tested_version": eng.TESTED_DLIO_VERSION,
    }
    return Plan(run_id=run_id, benchmark="training", request=request, settings=settings, jobs=jobs,
                notes=tuple(notes), preflight=preflight_spec, lockfile_source=request.verify_lockfile)


def probe(plan: Plan, python: str) -> None:
    if plan.request.verify_lockfile:
        from mlps_slurm.lockfile import LockfileError, parse

        try:
            parse(plan.request.verify_lockfile)  # a broken lockfile is refused here, not on every node
        except LockfileError as exc:
            raise PlanError(f"--verify-lockfile: {exc}") from exc


def engine_probe(plan: Plan) -> EngineProbe:
    """DLIO and its dependencies importable in the jobs' Python (and tensorflow, when the workload needs it)."""
    return EngineProbe("training", eng.PROBE_CODE, ("--tensorflow",) if plan.settings["needs_tensorflow"] else ())


def judge_probe(probe: EngineProbe, info: dict[str, Any], python: str) -> list[str]:
    return eng.judge_probe(info, python, "--tensorflow" in probe.args)


def suite_request(model: str, profile: SiteProfile, settings: Mapping[str, Any]) -> TrainingRequest:
    """One training workload of `submit all`: the profile's suite.accelerator and suite.training.params."""
    return TrainingRequest(model=model, accelerator=profile.get("suite.accelerator"), nodes=settings["nodes"],
                           scale=settings["scale"], params=tuple(profile.get("suite.training.params")),
                           allow_invalid=bool(settings.get("allow_invalid")))


def _notes(request: TrainingRequest, w: cat.TrainingWorkload, params: list[Param], size: cat.Datasize,
           memory_source: str) -> list[str]:
    """What the user should know before the run; the verdict itself is the rules' (the pre-run rules check)."""
    notes = []
    if request.scale != 1:
        notes.append(f"scaled run (--scale {request.scale:g}): {size.num_files} of the {size.rule_files} files "
                     "the rules require")
    if not size.final:
        notes.append(f"client memory unknown here: the dataset size is settled from {memory_source}; at least "
                     f"{size.num_files} files (the accelerator term: {size.explain()})")
    if request.reuse_data:
        notes.append("--reuse-data: the datagen job keeps an existing dataset only if its file count and sizes "
                     "match what this run needs; otherwise it generates it again")
    return notes
