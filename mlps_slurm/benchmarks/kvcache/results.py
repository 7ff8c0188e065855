"""A kv-cache run directory as the rules' record (KvCacheRun).

    manifest.json request and settings: benchmark "kvcache", num_processes, cache_dir, and optionally options {"1": {model,
                  num_users, duration_s, gpu_mem_gb, cpu_mem_gb, max_concurrent_allocs, generation_mode}, ...}
                  (default: the CLOSED table), seed, trials, inter_option_delay_s, config, autoscaling, rag,
                  latency_tracing, trace_replay, performance_profile, multi_turn, prefix_caching
    raw/kv_cache/option_<O>/trial_<T>/rank_<N>/kvcache_results_*.json   kv-cache.py's --output, one per rank
    preflight facts "storage": {"kvcache_dir": ..., "results_dir": ...} decide storage.separate_filesystems
"""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Any, Mapping

from mlps_slurm.benchmarks.kvcache import rules as kv
from mlps_slurm.rules.common import RUN_MANIFEST, separate_filesystems
from mlps_slurm.rules.loaders import FileProblem, Loaded, fail, finite, load_results, read_json_object, results_dir
from mlps_slurm.rundir import run_record

PATH_MODEL = "llama3.1-8b"  # the path model of a CLOSED kv-cache run (kvcache.md §5.2)
_RANK_DIR = re.compile(r"option_(\d+)/trial_(\d+)/rank_(\d+)$")


def _rank(path: Path, option: int, trial: int, rank: int) -> kv.KvRankResult:
    try:
        data = read_json_object(path)
    except FileProblem as exc:
        return kv.KvRankResult(option, trial, rank, str(path), problem=str(exc).split(": ", 1)[-1])
    # kv-cache.py writes the statistics under summary.cache_stats (kvcache.md §4.5); a top-level cache_stats is read
    # too (records written before that was known).
    summary = data.get("summary") if isinstance(data.get("summary"), Mapping) else {}
    stats = next((s for s in (summary.get("cache_stats"), data.get("cache_stats")) if isinstance(s, Mapping)), None)
    if stats is None:
        return kv.KvRankResult(option, trial, rank, str(path), problem="no cache_stats object")
    seed = data.get("seed")
    entries = stats.get("storage_entries")
    return kv.KvRankResult(option, trial, rank, str(path), seed=seed if isinstance(seed, int) else None,
                           storage_entries=entries if isinstance(entries, int) else None,
                           read_bandwidth_gbps=finite(stats.get("tier_storage_read_bandwidth_gbps")),
                           write_bandwidth_gbps=finite(stats.get("tier_storage_write_bandwidth_gbps")))


def _ranks(base: Path) -> list[kv.KvRankResult]:
    results = []
    for rank_dir in sorted(base.glob("option_*/trial_*/rank_*")):
        m = _RANK_DIR.search(rank_dir.as_posix())
        if not m:
            continue
        option, trial, rank = map(int, m.groups())
        files = sorted(glob.glob(str(rank_dir / "kvcache_results_*.json")))
        if not files:
            results.append(kv.KvRankResult(option, trial, rank, str(rank_dir), problem="no kvcache_results_*.json"))
            continue
        results.append(_rank(Path(files[0]), option, trial, rank))
    return results


def load(root: Path, manifest: Mapping[str, Any], preflight: Mapping[str, Any] | None) -> Loaded:
    request = run_record(dict(manifest))
    loaded = Loaded("kvcache", PATH_MODEL)
    load_results(root, loaded)
    try:
        plan = kv.plan_from_request(request)
    except (KeyError, TypeError, ValueError) as exc:
        fail(loaded, RUN_MANIFEST, f"{root / 'manifest.json'}: request cannot be read as a kv-cache plan: "
                                   f"{type(exc).__name__}: {exc}")
        return loaded
    base = root / "raw" / "kv_cache"
    results = _ranks(base)
    for r in results:
        if r.problem:
            loaded.problems.append(f"{r.path}: {r.problem}")
    expected = len(plan.options) * plan.trials * plan.num_ranks
    usable = [r for r in results if r.problem is None]
    if len(usable) < expected:
        loaded.problems.append(f"{len(usable)} of {expected} planned rank results are usable under {base}")
    run = kv.KvCacheRun(str(manifest.get("run_id")), plan, tuple(results),
                        separate_filesystems(preflight, "kvcache_dir", request.get("cache_dir"), "results_dir",
                                             results_dir(manifest)))
    loaded.record = run
    for option in sorted(plan.options):
        per_trial: dict[int, float] = {}
        for r in usable:
            if r.option == option and r.read_bandwidth_gbps is not None:
                per_trial[r.trial] = per_trial.get(r.trial, 0.0) + r.read_bandwidth_gbps  # sum over ranks
        if per_trial:  # Rules.md 6.3.4.1: mean over trials of the per-trial sum
            loaded.metrics[f"option{option}_read_GiBps"] = sum(per_trial.values()) / len(per_trial)
    return loaded
