"""VectorDB request + profile -> Plan: preflight -> load (insert, index, ground truth) -> N timed query runs (an
array, one at a time) -> finalize.

Milvus comes from the profile (vectordb.milvus.*). embedded: every benchmark job starts a real Milvus server on its
batch host in the background (`serve`), on the run's data directory on the storage under test, and stops it when
the job ends; the load job builds the collection there, each run job restarts the server on it and loads the index
from storage. external: the jobs connect to the site's server; its token is read by the jobs at run time.
Pure, except `probe`, which checks the jobs' Python has the Milvus client (and server) before anything is written.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Mapping

from mlps_slurm.benchmarks.base import PlanError
from mlps_slurm.benchmarks.vectordb.indexes import INDEX_TYPES, index_spec
from mlps_slurm.benchmarks.vectordb.request import DEFAULT_DURATION_S, VectorDbRequest
from mlps_slurm.benchmarks.vectordb.rules import CLOSED_INDEXES
from mlps_slurm.plan import (JobSpec, Plan, ShellRef, base_context, batch_host_command, client_nodes, finalize_job,
                             host_metrics_command, host_metrics_outputs, launcher_argv, preflight_job,
                             preflight_requirements, sbatch_directives, with_site_args)
from mlps_slurm.profile import SiteProfile
from mlps_slurm.profile.schema import slurm_minutes
from mlps_slurm.rundir import raw_path, raw_relpath

JOB_MODULE = "mlps_slurm.benchmarks.vectordb.job"
TREE = "vector_database"
# Request fields that are CLOSED tunables, by the rules' names (a changed one is recorded in settings.params).
CLOSED_TUNABLES = {"metric": "metric_type", "max_degree": "max_degree", "search_list_size": "search_list_size",
                   "ef_construction": "ef_construction", "search_ef": "search_ef", "inline_pq": "inline_pq",
                   "query_processes": "num_query_processes", "query_batch_size": "query_batch_size",
                   "insert_batch_size": "insert_batch_size", "num_shards": "num_shards", "chunk_size": "chunk_size"}
# Fields that change the workload itself (recorded when changed; not CLOSED tunables).
WORKLOAD_FIELDS = ("num_vectors", "dimension", "distribution", "top_k", "nlist", "nprobe", "recall_queries")
# A run job beside its timed window: server start, loading the index from storage, recall queries, wrap-up.
RUN_OVERHEAD_S = 600.0
EMBEDDED_BIN_BYTES = 400 * 2**20  # the server's binaries, extracted once per data root


def collection_name(run_id: str) -> str:
    """Milvus names: letters, digits and '_', not starting with a digit."""
    return "mlps_" + re.sub(r"[^A-Za-z0-9_]", "_", run_id)


def changed_params(request: VectorDbRequest) -> dict[str, Any]:
    """The CLOSED tunables and workload fields that differ from the CLOSED defaults, by the rules' names."""
    defaults = VectorDbRequest()
    out: dict[str, Any] = {}
    for name in (*CLOSED_TUNABLES, *WORKLOAD_FIELDS):
        if getattr(request, name) != getattr(defaults, name):
            out[CLOSED_TUNABLES.get(name, name)] = getattr(request, name)
    return out


def connection_args(profile: SiteProfile, run_dir: str) -> list[str]:
    """How every job-side command reaches Milvus: the embedded server's state directory of this job, or the external
    URI and where its token is read at run time (the token itself never enters a script)."""
    if profile.get("vectordb.milvus.mode") == "embedded":
        return ["--server-state-root", f"{run_dir}/milvus-server",
                "--wait-timeout", f"{profile.get('vectordb.milvus.start_timeout_s') + 60:g}"]
    argv = ["--uri", profile.get("vectordb.milvus.uri")]
    if profile.get("vectordb.milvus.token_file"):
        argv += ["--token-file", profile.get("vectordb.milvus.token_file")]
    if profile.get("vectordb.milvus.token_env"):
        argv += ["--token-env", profile.get("vectordb.milvus.token_env")]
    if profile.get("vectordb.milvus.db_name"):
        argv += ["--db-name", profile.get("vectordb.milvus.db_name")]
    return argv


def check_milvus(request: VectorDbRequest, profile: SiteProfile) -> None:
    mode = profile.get("vectordb.milvus.mode")
    kind = INDEX_TYPES[request.index]
    if mode == "embedded" and not kind.embedded:
        raise PlanError(f"--index {request.index}: the embedded Milvus server (2.3.5) cannot build it (its build fails "
                        f"and is retried forever); use --index HNSW (CLOSED) or IVF_FLAT/IVF_SQ8/FLAT (OPEN), or "
                        f"{kind.needs}: set vectordb.milvus.mode: external and vectordb.milvus.uri in the profile")
    if mode == "external":
        if not profile.get("vectordb.milvus.uri"):
            raise PlanError("vectordb.milvus.mode is external but vectordb.milvus.uri is not set; set it to the "
                            "server, e.g. http://milvus.example.org:19530")
        if profile.get("vectordb.milvus.token_file") and profile.get("vectordb.milvus.token_env"):
            raise PlanError("vectordb.milvus.token_file and vectordb.milvus.token_env are both set; keep one")


def plan(request: VectorDbRequest, profile: SiteProfile, *, run_id: str, run_dir: str, python: str) -> Plan:
    check_milvus(request, profile)
    nodes = client_nodes(request.nodes, profile)
    if request.queries is None and request.duration is None:
        request = replace(request, duration=DEFAULT_DURATION_S)
    request = replace(request, nodes=nodes)
    mode = profile.get("vectordb.milvus.mode")
    ranks = nodes * request.query_processes
    # --scale never shrinks the collection below one answer of top-k (nor grows it past --num-vectors).
    loaded = max(min(request.top_k, request.num_vectors), round(request.num_vectors * request.scale))

    if request.duration is not None:
        need = request.duration + RUN_OVERHEAD_S + (profile.get("vectordb.milvus.start_timeout_s")
                                                    if mode == "embedded" else 0)
        limit = 60 * slurm_minutes(profile.get("slurm.time_limit.run"))
        if need > limit:
            raise PlanError(f"a query run may take up to {need / 60:.0f} minutes ({request.duration:g} s of queries, "
                            f"server start, index load and recall), more than slurm.time_limit.run "
                            f"({profile.get('slurm.time_limit.run')}); raise it to at least {int(need // 60) + 1} "
                            "minutes or pass a shorter --duration")

    run_dir = run_dir.rstrip("/")
    base = base_context(profile, python, run_id, run_dir)
    raw = raw_path(run_dir, TREE, request.index)
    collection = collection_name(run_id)
    spec = index_spec(request.to_dict())
    data_dir = f"{profile.get('vectordb.milvus.data_dir').rstrip('/')}/{run_id}" if mode == "embedded" else None
    connect = connection_args(profile, run_dir)
    common = ["--collection", collection, "--run-dir", run_dir]
    serve = None
    if mode == "embedded":
        serve = batch_host_command(profile, run_dir, [
            python, "-m", JOB_MODULE, "serve", "--data-dir", data_dir, "--run-id", run_id,
            "--state-root", f"{run_dir}/milvus-server",
            "--port-base", str(profile.get("vectordb.milvus.port_base")),
            "--start-timeout", f"{profile.get('vectordb.milvus.start_timeout_s'):g}"])
    job = [python, "-m", JOB_MODULE]
    bench_sbatch = [f"--nodes={nodes}", f"--ntasks={ranks}", f"--ntasks-per-node={request.query_processes}"]
    engine_env = {**base["env"], "SLURM_KILL_BAD_EXIT": "1"}

    load = JobSpec(
        key="load", template="vectordb-load.sbatch.j2",
        sbatch=tuple(sbatch_directives(profile, run_dir, "load", "datagen", benchmark_job=True) + bench_sbatch),
        dependencies=(("afterok", ("preflight",)),), pin_to_preflight=True,
        outputs=(f"{raw_relpath(TREE, request.index)}/datagen", *host_metrics_outputs(profile, "load")),
        context={**base, "env": engine_env, "serve": serve, "output_dir": f"{raw}/datagen",
                 "host_metrics": host_metrics_command(profile, run_dir, python, nodes, "load"),
                 "load": batch_host_command(profile, run_dir, [
                     *job, "load", *connect, *common, "--output-dir", f"{raw}/datagen",
                     "--index-timeout", f"{profile.get('vectordb.milvus.index_timeout_s'):g}"])})
    run = JobSpec(
        key="run", template="vectordb-run.sbatch.j2",
        sbatch=tuple(sbatch_directives(profile, run_dir, "run", "run", benchmark_job=True) + bench_sbatch
                     + [f"--array=0-{request.runs - 1}%1"]),
        dependencies=(("afterok", ("load",)),), pin_to_preflight=True,
        outputs=(f"{raw_relpath(TREE, request.index)}/run/{{task}}", *host_metrics_outputs(profile, "run", True)),
        context={**base, "env": engine_env, "serve": serve, "runs": request.runs, "output_root": f"{raw}/run",
                 "host_metrics": host_metrics_command(profile, run_dir, python, nodes, "run", array=True),
                 "launch": launcher_argv(profile, ranks, run_dir),
                 "prepare": batch_host_command(profile, run_dir, [
                     *job, "prepare", *connect, *common, "--output-root", f"{raw}/run",
                     "--task", ShellRef("SLURM_ARRAY_TASK_ID"),
                     "--load-timeout", f"{profile.get('vectordb.milvus.index_timeout_s'):g}"]),
                 "query": [*job, "query", *connect, *common, "--output-root", f"{raw}/run",
                           "--task", ShellRef("SLURM_ARRAY_TASK_ID")],
                 "collect": batch_host_command(profile, run_dir, [
                     *job, "collect", *connect, *common, "--output-root", f"{raw}/run",
                     "--task", ShellRef("SLURM_ARRAY_TASK_ID")]),
                 # A failed run breaks the series the rules need: the runs still pending are moot.
                 "cancel_pending": ["scancel", "--state=PENDING", ShellRef("SLURM_ARRAY_JOB_ID")]})
    jobs = with_site_args((preflight_job(profile, run_dir, python, nodes, base), load, run,
                           finalize_job(profile, run_dir, python, base, ("preflight", "load", "run"))), profile)

    modules = ["numpy", "pymilvus", JOB_MODULE] + (["milvus"] if mode == "embedded" else [])
    storage = []
    if data_dir:
        # Raw vectors, the index, Milvus's logs and message queue: about three times the vectors, plus binaries.
        storage.append(("vectordb_dir", profile.get("vectordb.milvus.data_dir"),
                        3 * loaded * request.dimension * 4 + EMBEDDED_BIN_BYTES))
    preflight_spec = preflight_requirements(profile, run_dir, python, storage=storage, engine_modules=modules)
    settings = {
        "index_type": request.index, "backend": "milvus", "milvus_mode": mode, "params": changed_params(request),
        "runtime_s": request.duration, "num_vectors_loaded": loaded, "num_query_processes": ranks,
        "collection": collection, "index_spec": spec, "raw_dir": raw, "data_dir": data_dir,
        "uri": profile.get("vectordb.milvus.uri") if mode == "external" else None,
    }
    notes = []
    if request.index not in CLOSED_INDEXES:
        notes.append(f"index {request.index} is OPEN only (CLOSED: {', '.join(CLOSED_INDEXES)})")
    if request.scale < 1:
        notes.append(f"--scale {request.scale:g}: {loaded} of {request.num_vectors} vectors; not submittable")
    return Plan(run_id=run_id, benchmark="vectordb", request=request, settings=settings, jobs=jobs,
                notes=tuple(notes), preflight=preflight_spec)


def probe(plan: Plan, python: str) -> None:
    """Nothing to look for on the login node: the jobs' Python is checked for pymilvus (and the embedded server's
    `milvus` package) by the preflight on every node, inside the container when there is one."""


def suite_request(model: str, profile: SiteProfile, settings: Mapping[str, Any]) -> VectorDbRequest:
    """The vectordb run of `submit all` for one index type (its "model")."""
    given = {k: settings[k] for k in ("duration", "runs", "scale") if settings.get(k) is not None}
    return VectorDbRequest(index=model, nodes=settings["nodes"], **given)
