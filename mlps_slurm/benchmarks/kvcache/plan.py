"""KV-cache request + profile + catalog -> Plan: preflight -> option 1 -> option 2 -> option 3 -> finalize.

Each option is one job that runs its trials one after another; every trial is one srun step with one task per
client (rank), `ranks_per_node` on each node. An option starts when the previous one ended, however it ended
(afterany; the next option is a measurement of its own), and only on the nodes the preflight validated.
Pure; the official engine's checkout is looked for by its engine probe (mlps_slurm.probes), in the jobs' environment.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from mlps_slurm.benchmarks.base import EngineProbe, PlanError
from mlps_slurm.benchmarks.kvcache import BENCHMARK
from mlps_slurm.benchmarks.kvcache import catalog as cat
from mlps_slurm.benchmarks.kvcache.request import KvCacheRequest
from mlps_slurm.plan import (JobSpec, Plan, base_context, client_nodes, finalize_job, host_metrics_command,
                             host_metrics_outputs, launcher_argv, preflight_job, preflight_requirements,
                             sbatch_directives, with_site_args)
from mlps_slurm.profile import SiteProfile
from mlps_slurm.profile.schema import slurm_minutes
from mlps_slurm.rundir import raw_path, raw_relpath

JOB_MODULE = "mlps_slurm.benchmarks.kvcache.job"
MAX_CONTEXT_TOKENS = max(t.context_range[1] for t in cat.USER_TEMPLATES.values())


def option_params(request: KvCacheRequest) -> dict[int, cat.KvOptionParams]:
    """The parameters each option runs with: Table KVCache-1, with --duration and --users applied."""
    out = {}
    for number in sorted(int(o) for o in request.options):
        params = cat.OPTIONS[number]
        if request.duration is not None:
            params = replace(params, duration_s=request.duration)
        if request.users is not None:
            params = replace(params, num_users=request.users)
        out[number] = params
    return out


# Start-up of a rank (interpreter, the 256 MiB noise buffer, users) and its final write, generously.
RANK_OVERHEAD_S = 60.0


def option_seconds(params: cat.KvOptionParams, trials: int, delay: float) -> float:
    """The longest an option's job can take: per trial the window, then the reference's drain (each worker thread
    joined for up to 2 s, one after another), then the rank's start-up and wrap-up; plus the delay before it."""
    workers = min(params.num_users, cat.MAX_WORKERS)
    return delay + trials * (params.duration_s + cat.JOIN_TIMEOUT_S * workers + RANK_OVERHEAD_S)


def largest_entry_bytes(params: cat.KvOptionParams) -> int:
    return MAX_CONTEXT_TOKENS * cat.MODELS[params.model].bytes_per_token


def plan(request: KvCacheRequest, profile: SiteProfile, *, run_id: str, run_dir: str, python: str) -> Plan:
    nodes = client_nodes(request.nodes, profile)
    engine = request.engine or profile.get("engines.kvcache.engine")
    engine_path = profile.get("engines.kvcache.path")
    if engine == "official" and not engine_path:
        raise PlanError("--engine official: set engines.kvcache.path in the profile to a checkout of MLPerf "
                        "Storage's kv_cache_benchmark/ (github.com/mlcommons/storage; it is not on PyPI)")
    request = replace(request, nodes=nodes, engine=engine)
    ranks = nodes * request.ranks_per_node
    options = option_params(request)

    run_dir = run_dir.rstrip("/")
    base = base_context(profile, python, run_id, run_dir)
    raw = raw_path(run_dir, "kv_cache", "").rstrip("/")
    cache_dir = f"{profile.get('storage.kvcache_dir').rstrip('/')}/{run_id}"
    # Ranks that share the cache filesystem split its free space (each would otherwise claim 95 % of it).
    sharing = ranks if profile.get("storage.shared") else request.ranks_per_node
    launch = launcher_argv(profile, ranks, run_dir)
    bench_sbatch = [f"--nodes={nodes}", f"--ntasks={ranks}", f"--ntasks-per-node={request.ranks_per_node}"]
    # One failed rank ends the step (srun -K) instead of leaving the others running to the end of the window.
    engine_env = {**base["env"], "SLURM_KILL_BAD_EXIT": "1"}

    limit = 60 * slurm_minutes(profile.get("slurm.time_limit.run"))
    for number, params in options.items():
        need = option_seconds(params, request.trials, request.inter_option_delay if number != min(options) else 0)
        if need > limit:
            raise PlanError(f"option {number} may take up to {need / 60:.0f} minutes ({request.trials} trial(s) of "
                            f"{params.duration_s:g} s, the drain of {min(params.num_users, cat.MAX_WORKERS)} workers "
                            f"and start-up), more than slurm.time_limit.run ({profile.get('slurm.time_limit.run')}); "
                            f"raise slurm.time_limit.run to at least {int(need // 60) + 1} minutes")

    jobs: list[JobSpec] = [preflight_job(profile, run_dir, python, nodes, base)]
    previous = None
    for number, params in options.items():
        key = f"option{number}"
        trials = [{"output_base": f"{raw}/option_{number}/trial_{t}",
                   "engine": engine_argv(python, params, f"{raw}/option_{number}/trial_{t}", cache_dir,
                                         request.seed, engine, engine_path, sharing, request.keep_cache)}
                  for t in range(request.trials)]
        deps: tuple[tuple[str, tuple[str, ...]], ...] = (("afterok", ("preflight",)),)
        if previous:
            deps += (("afterany", (previous,)),)
        jobs.append(JobSpec(
            key=key, template="kvcache-option.sbatch.j2",
            sbatch=tuple(sbatch_directives(profile, run_dir, key, "run", benchmark_job=True) + bench_sbatch),
            dependencies=deps, pin_to_preflight=True,
            outputs=(f"{raw_relpath('kv_cache', '')}/option_{number}", *host_metrics_outputs(profile, key)),
            context={**base, "env": engine_env, "option": number, "option_name": cat.OPTION_NAMES[number],
                     "host_metrics": host_metrics_command(profile, run_dir, python, nodes, key),
                     "delay_s": request.inter_option_delay if previous else 0, "trials": trials,
                     "launch": launch}))
        previous = key
    jobs.append(finalize_job(profile, run_dir, python, base, tuple(j.key for j in jobs)))

    # Every rank must be able to hold at least the largest entry its option can write.
    per_rank = max(largest_entry_bytes(p) for p in options.values())
    preflight_spec = preflight_requirements(
        profile, run_dir, python, storage=[("kvcache_dir", profile.get("storage.kvcache_dir"), per_rank * sharing)],
        engine_modules=["numpy", JOB_MODULE], separate_from_results=BENCHMARK.separate_from_results)
    settings = {
        "num_processes": ranks, "ranks_per_node": request.ranks_per_node,
        "options": {str(n): p.as_dict() for n, p in options.items()},
        "inter_option_delay_s": request.inter_option_delay, "cache_dir": cache_dir, "raw_dir": raw,
        "engine_path": engine_path if engine == "official" else None, "ranks_sharing_cache_fs": sharing,
    }
    notes = []
    if engine == "builtin":
        notes.append("builtin engine: its results are OPEN at best (MLPerf accepts the reference kv-cache.py for "
                     "CLOSED); use --engine official with engines.kvcache.path for a CLOSED submission")
    return Plan(run_id=run_id, benchmark="kvcache", request=request, settings=settings,
                jobs=with_site_args(tuple(jobs), profile), notes=tuple(notes), preflight=preflight_spec)


def engine_argv(python: str, params: cat.KvOptionParams, output_base: str, cache_base: str, seed: int,
                engine: str, engine_path: str | None, sharing: int, keep_cache: bool = False) -> list[str]:
    """One rank's command: the job entry point finds its rank in Slurm's environment (seed + rank, rank_<N>/)."""
    argv = [python, "-m", JOB_MODULE, "--output-base", output_base, "--cache-base", cache_base,
            "--seed-base", str(seed), "--model", params.model, "--num-users", str(params.num_users),
            "--duration", f"{params.duration_s:g}", "--gpu-mem-gb", f"{params.gpu_mem_gb:g}",
            "--cpu-mem-gb", f"{params.cpu_mem_gb:g}", "--max-concurrent-allocs", str(params.max_concurrent_allocs),
            "--generation-mode", params.generation_mode, "--engine", engine,
            "--ranks-sharing-cache-fs", str(sharing)]
    if engine == "official":
        argv += ["--official-path", str(engine_path)]
    if keep_cache:
        argv.append("--keep-cache")
    return argv


# Runs in the jobs' Python (inside the image on container sites, where the checkout may live): is kv-cache.py of a
# checkout given as the repository or its kv_cache_benchmark/ directory there.
CHECKOUT_PROBE = r"""
import json, os, sys
found = None
for c in (sys.argv[1], os.path.join(sys.argv[1], "kv_cache_benchmark")):
    if os.path.isfile(os.path.join(c, "kv-cache.py")) and os.path.isfile(os.path.join(c, "config.yaml")):
        found = c
        break
print(json.dumps({"checkout": found, "package": found is not None and os.path.isdir(os.path.join(found, "kv_cache"))}))
"""


def probe(plan: Plan, python: str) -> None:
    """Nothing the login node can refuse by itself: the official engine's checkout is looked for where the jobs
    run (engine_probe)."""


def engine_probe(plan: Plan) -> EngineProbe | None:
    """The official engine needs its checkout (kv-cache.py, config.yaml and the kv_cache package) where the
    profile says, as the jobs see it; the builtin engine is part of mlps_slurm."""
    if plan.request.engine != "official":
        return None
    return EngineProbe("kvcache", CHECKOUT_PROBE, (plan.settings["engine_path"],))


def judge_probe(probe: EngineProbe, info: dict[str, Any], python: str) -> list[str]:
    if info.get("checkout") and info.get("package"):
        return []
    return [f"engines.kvcache.path = {probe.args[0]}: no kv_cache_benchmark checkout there (kv-cache.py, "
            "config.yaml and the kv_cache/ package); clone github.com/mlcommons/storage and point "
            "engines.kvcache.path at its kv_cache_benchmark/ directory, or use --engine builtin"]


def suite_request(model: str, profile: SiteProfile, settings: Mapping[str, Any]) -> KvCacheRequest:
    """The kv-cache run of `submit all` (its "model" is the path model of the submission tree, llama3.1-8b)."""
    given = {k: settings[k] for k in ("duration", "users", "trials", "inter_option_delay")
             if settings.get(k) is not None}
    return KvCacheRequest(nodes=settings["nodes"], **given)
