"""Build rule records from a run directory (or its copy in a submission tree). The only module of
mlps_slurm.rules that reads files; everything it cannot read becomes an INVALID finding that names the file.

Run-directory layouts, per benchmark. Every run has manifest.json (request, profile values, planned jobs),
preflight/preflight.json (per-node reports, optional "facts" as in mlps_slurm.rules.facts) and
results/results.json (written by the finalize job: status "success" or "failed" with reasons, and metrics).

checkpointing (produced by the current chain)
    manifest.json request: model, num_processes, nodes, scale, num_checkpoints_write, num_checkpoints_read,
                  seconds_between_checkpoints, engine_output, expected_bytes_per_checkpoint, and optionally
                  accelerator (default b200) and params {dlio key: value}
    raw/checkpointing/<model>/engine.json     the engine's output (mlps_slurm.benchmarks.checkpointing.engine.normalize)

training (for the training chain to produce)
    manifest.json request: benchmark "training", model, accelerator, num_accelerators, nodes, client_memory_gb
                  (GiB per host, optional), num_files_train, num_subfolders_train, params {dlio key: value}, scale,
                  data_dir, runs (planned run count, default 6)
    raw/training/<model>/datagen/datagen.json  {"num_files": int, "num_subfolders": int, "bytes": int}: what the
                  datagen step found on disk after generating
    raw/training/<model>/run/<NN>/summary.json DLIO's summary (one directory per run, NN = 00 warm-up .. 05)
    raw/training/<model>/run/<NN>/dlio_config/overrides.yaml  (optional) the Hydra overrides DLIO ran with
    preflight facts "storage": {"data_dir": ..., "results_dir": ...} decide storage.separate_filesystems

kvcache (for the kv-cache chain to produce)
    manifest.json request: benchmark "kvcache", num_processes, cache_dir, and optionally options {"1": {model,
                  num_users, duration_s, gpu_mem_gb, cpu_mem_gb, max_concurrent_allocs, generation_mode}, ...}
                  (default: the CLOSED table), seed, trials, inter_option_delay_s, config, autoscaling, rag,
                  latency_tracing, trace_replay, performance_profile, multi_turn, prefix_caching
    raw/kv_cache/option_<O>/trial_<T>/rank_<N>/kvcache_results_*.json   kv-cache.py's --output, one per rank
    preflight facts "storage": {"kvcache_dir": ..., "results_dir": ...} decide storage.separate_filesystems

vectordb (for the vectordb chain to produce)
    manifest.json request: benchmark "vectordb", index_type, backend (default milvus), params {key: value},
                  runtime_s or queries, runs (planned, default 5)
    raw/vector_database/<INDEX>/datagen/summary.json   {"num_vectors": int, "dimension": int, ...}
    raw/vector_database/<INDEX>/run/<NN>/summary.json  {"start", "end" (ISO), "throughput_qps", "recall", ...}

In a submission tree (mlps_slurm.bundle) checkpointing and kvcache runs are copied whole into one timestamp
directory; training and vectordb keep the run's own files in datasize/<ts>/ and its raw leaves in datagen/<ts>/
and run/<ts>/, which `leaves()` finds from either layout.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from mlps_slurm.benchmarks.checkpointing.engine import EngineOutputError, normalize
from mlps_slurm.benchmarks.checkpointing import rules as ckpt
from mlps_slurm.benchmarks.kvcache import rules as kv
from mlps_slurm.benchmarks.training import rules as train
from mlps_slurm.benchmarks.vectordb import rules as vdb
from mlps_slurm.rules.common import (
    RUN_MANIFEST,
    RUN_READABLE,
    RUN_RESULTS,
    PreflightRecord,
    SeparateFilesystems,
    check_preflight,
)
from mlps_slurm.rules.core import Finding, invalid, parse_time, run_rules
from mlps_slurm.rules.facts import client_memory, filesystem

BENCHMARKS = ("checkpointing", "training", "kvcache", "vectordb")


class FileProblem(Exception):
    """A file that is missing, truncated or malformed; the message names it."""


def read_json_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise FileProblem(f"{path}: missing") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise FileProblem(f"{path}: unreadable: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        what = "empty" if not text.strip() else f"not valid JSON (truncated?): {exc.msg} at line {exc.lineno}"
        raise FileProblem(f"{path}: {what}") from exc


def read_json_object(path: Path) -> dict[str, Any]:
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise FileProblem(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


@dataclass
class Loaded:
    """A run as the rules see it. `problems` lists why the run has no usable result (empty: usable)."""

    benchmark: str
    model: str | None  # the model (training, checkpointing, kv-cache) or index type (vectordb)
    record: Any = None  # the benchmark's rule record, when it could be built
    findings: list[Finding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    started: float | None = None  # epoch seconds the measured work began: the submission tree's timestamp dir
    created: float | None = None  # epoch seconds the run was rendered (manifest "created")


def fail(loaded: Loaded, rule_id: str, message: str) -> None:
    """Record a load failure: an INVALID finding and a reason the run is unusable."""
    loaded.findings.append(invalid(rule_id, message))
    loaded.problems.append(message)


# --- shared pieces -----------------------------------------------------------------------------------------------

def read_manifest(root: Path) -> dict[str, Any]:
    manifest = read_json_object(root / "manifest.json")
    request = manifest.get("request")
    if not isinstance(request, dict):
        raise FileProblem(f"{root / 'manifest.json'}: has no request object")
    benchmark = manifest.get("benchmark", request.get("benchmark"))
    if benchmark not in BENCHMARKS:
        raise FileProblem(f"{root / 'manifest.json'}: benchmark is {benchmark!r}, expected one of "
                          f"{', '.join(BENCHMARKS)}")
    return manifest


def load_preflight(root: Path, manifest: Mapping[str, Any]) -> tuple[PreflightRecord, dict[str, Any] | None]:
    planned = any(j.get("key") == "preflight" for j in manifest.get("plan", {}).get("jobs", [])
                  if isinstance(j, Mapping))
    path = root / "preflight" / "preflight.json"
    try:
        data = read_json_object(path)
    except FileProblem as exc:
        return PreflightRecord(planned, None, problem=str(exc)), None
    ok = data.get("ok")
    if not isinstance(ok, bool):
        return PreflightRecord(planned, None, problem=f"{path}: 'ok' is {ok!r}, expected true or false"), data
    failures = tuple(f"{f.get('node')} {f.get('check')}: {f.get('message')}" for f in data.get("failures", [])
                     if isinstance(f, Mapping))
    return PreflightRecord(planned, ok, failures), data


def load_results(root: Path, loaded: Loaded) -> dict[str, Any] | None:
    """results/results.json of the finalize job; a missing, malformed or failed one makes the run unusable."""
    path = root / "results" / "results.json"
    try:
        results = read_json_object(path)
    except FileProblem as exc:
        hint = " (the chain has not finalized, or its finalize job failed: see logs/)" if "missing" in str(exc) else ""
        fail(loaded, RUN_RESULTS, f"{exc}{hint}")
        return None
    status = results.get("status")
    if status != "success":
        reasons = "; ".join(str(r) for r in results.get("reasons", [])[:5]) or "no reason recorded"
        fail(loaded, RUN_RESULTS, f"{path}: status {status!r}: {reasons}")
    return results


def _profile_value(manifest: Mapping[str, Any], key: str) -> Any:
    values = manifest.get("profile", {}).get("values", {})
    return values.get(key) if isinstance(values, Mapping) else None


def _relocate(root: Path, manifest: Mapping[str, Any], recorded: str | None, default: str) -> Path:
    """A path the manifest recorded inside the original run directory, found again under `root` (the run may have
    been moved or bundled since)."""
    run_id = str(manifest.get("run_id", ""))
    if recorded and run_id and f"/{run_id}/" in recorded:
        return root / recorded.split(f"/{run_id}/", 1)[1]
    return root / default


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


# --- checkpointing ----------------------------------------------------------------------------------------------

def load_checkpointing(root: Path, manifest: Mapping[str, Any], preflight: Mapping[str, Any] | None) -> Loaded:
    request = manifest["request"]
    loaded = Loaded("checkpointing", str(request.get("model")))
    try:
        plan = ckpt.plan_from_request(request)
    except (KeyError, TypeError, ValueError) as exc:
        fail(loaded, RUN_MANIFEST, f"{root / 'manifest.json'}: request cannot be read as a checkpointing plan: "
                                   f"{type(exc).__name__}: {exc}")
        return loaded
    load_results(root, loaded)
    path = _relocate(root, manifest, request.get("engine_output"), f"raw/checkpointing/{plan.model}/engine.json")
    try:
        raw = read_json_file(path)
        metrics = normalize(raw, str(path))
    except (FileProblem, EngineOutputError) as exc:
        fail(loaded, ckpt.ENGINE_OUTPUT, str(exc))
        loaded.record = plan  # the parameters can still be judged
        return loaded
    memory = client_memory(preflight)
    source = "preflight facts"
    declared = _finite(_profile_value(manifest, "nodes.memory_gb"))
    if not memory and declared:
        memory = {h: int(declared * 1e9) for h in metrics["hosts"]}
        source = "the profile's nodes.memory_gb"
    observed = ckpt.observation_from_engine(raw, metrics, memory, source)
    loaded.record = ckpt.CheckpointRun(str(manifest.get("run_id")), plan, observed)
    loaded.started = observed.started
    loaded.metrics = {
        "num_processes": plan.num_processes,
        "hosts": len(metrics["hosts"]),
        "bytes_per_checkpoint": metrics["write"]["bytes_per_checkpoint"],
        "write_GBps_mean": (metrics["write"]["throughput_GBps"] or {}).get("mean"),
        "read_GBps_mean": (metrics["read"]["throughput_GBps"] or {}).get("mean"),
        "write_seconds_mean": (metrics["write"]["duration_s"] or {}).get("mean"),
        "read_seconds_mean": (metrics["read"]["duration_s"] or {}).get("mean"),
    }
    return loaded


# --- training and vectordb: raw leaves from either layout ---------------------------------------------------------

def leaves(root: Path, raw_model_dir: str) -> tuple[list[Path], list[Path]]:
    """(datagen leaves, run leaves) of a training or vectordb run: raw/<benchmark>/<model>/{datagen, run/*} in a
    run directory, or ../../{datagen/*, run/*} when `root` is the datasize/<ts> copy in a submission tree."""
    raw = root / raw_model_dir
    if raw.is_dir():
        datagen = [raw / "datagen"] if (raw / "datagen").is_dir() else []
        return datagen, sorted(p for p in (raw / "run").glob("*") if p.is_dir())
    if root.parent.name == "datasize":
        model_dir = root.parent.parent
        return (sorted(p for p in (model_dir / "datagen").glob("*") if p.is_dir()),
                sorted(p for p in (model_dir / "run").glob("*") if p.is_dir()))
    return [], []


def _overrides(leaf: Path) -> dict[str, str]:
    for name in ("dlio_config/overrides.yaml", ".hydra/overrides.yaml"):
        path = leaf / name
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise FileProblem(f"{path}: not valid YAML: {exc}") from exc
            if not isinstance(data, list):
                raise FileProblem(f"{path}: expected a list of overrides, got {type(data).__name__}")
            return train.params_from_overrides(data)
    return {}


def _separate(preflight: Mapping[str, Any] | None, first_id: str, first_path: str | None,
              second_id: str, second_path: str | None) -> SeparateFilesystems:
    return SeparateFilesystems(first_id, first_path, second_id, second_path,
                               filesystem(preflight, first_id), filesystem(preflight, second_id))


def _results_dir(manifest: Mapping[str, Any]) -> str | None:
    return manifest["request"].get("results_dir") or _profile_value(manifest, "storage.results_dir")


def load_training(root: Path, manifest: Mapping[str, Any], preflight: Mapping[str, Any] | None) -> Loaded:
    request = manifest["request"]
    model = str(request.get("model"))
    loaded = Loaded("training", model)
    load_results(root, loaded)
    datagen_leaves, run_leaves = leaves(root, f"raw/training/{model}")
    params: dict[str, str] = {}
    runs = []
    for leaf in run_leaves:
        try:
            summary = read_json_object(leaf / "summary.json")
            params.update(_overrides(leaf))
            result = train.run_from_summary(leaf.name, summary)
            if result.problem:
                result = train.TrainingRunResult(leaf.name, problem=f"{leaf / 'summary.json'}: {result.problem}")
        except FileProblem as exc:
            result = train.TrainingRunResult(leaf.name, problem=str(exc))
        runs.append(result)
        if result.problem:
            loaded.problems.append(result.problem)
    planned = int(request.get("runs", train.REQUIRED_RUNS))
    if len(run_leaves) < planned:
        loaded.problems.append(f"{len(run_leaves)} of the {planned} planned runs left an output directory under "
                               f"{root}")
    datagen = None
    if datagen_leaves:
        path = datagen_leaves[0] / "datagen.json"
        try:
            d = read_json_object(path)
            datagen = train.TrainingDatagen(d.get("num_files"), d.get("num_subfolders"))
        except FileProblem as exc:
            datagen = train.TrainingDatagen(None, None, str(exc))
    memory = client_memory(preflight)
    try:  # preflight facts beat the declared memory: the smallest client bounds what can be cached
        plan = train.plan_from_request(request, params, min(memory.values()) / train.GIB if memory else None)
    except (KeyError, TypeError, ValueError) as exc:
        fail(loaded, RUN_MANIFEST, f"{root / 'manifest.json'}: request cannot be read as a training plan: "
                                   f"{type(exc).__name__}: {exc}")
        return loaded
    chain = train.TrainingChain(str(manifest.get("run_id")), plan, datagen, tuple(runs),
                                _separate(preflight, "data_dir", request.get("data_dir"), "results_dir",
                                          _results_dir(manifest)))
    loaded.record = chain
    usable = chain.usable_runs()
    scored = usable[1:]
    if usable and usable[0].start:
        loaded.started = usable[0].start.timestamp()
    if scored:
        au = [r.au_percent for r in scored if r.au_percent is not None]
        tput = [r.throughput_samples_per_s for r in scored if r.throughput_samples_per_s is not None]
        loaded.metrics = {"num_accelerators": plan.num_accelerators, "hosts": plan.num_hosts,
                          "scored_runs": len(scored), "au_mean_percent": sum(au) / len(au) if au else None,
                          "throughput_samples_per_s_mean": sum(tput) / len(tput) if tput else None}
    return loaded


# --- kv-cache -----------------------------------------------------------------------------------------------------

_RANK_DIR = re.compile(r"option_(\d+)/trial_(\d+)/rank_(\d+)$")


def _kv_rank(path: Path, option: int, trial: int, rank: int) -> kv.KvRankResult:
    try:
        data = read_json_object(path)
    except FileProblem as exc:
        return kv.KvRankResult(option, trial, rank, str(path), problem=str(exc).split(": ", 1)[-1])
    stats = data.get("cache_stats") if isinstance(data.get("cache_stats"), Mapping) else None
    if stats is None:
        return kv.KvRankResult(option, trial, rank, str(path), problem="no cache_stats object")
    seed = data.get("seed")
    entries = stats.get("storage_entries")
    return kv.KvRankResult(option, trial, rank, str(path), seed=seed if isinstance(seed, int) else None,
                           storage_entries=entries if isinstance(entries, int) else None,
                           read_bandwidth_gbps=_finite(stats.get("tier_storage_read_bandwidth_gbps")),
                           write_bandwidth_gbps=_finite(stats.get("tier_storage_write_bandwidth_gbps")))


def load_kvcache(root: Path, manifest: Mapping[str, Any], preflight: Mapping[str, Any] | None) -> Loaded:
    request = manifest["request"]
    loaded = Loaded("kvcache", "llama3.1-8b")  # the path model of a CLOSED kv-cache run (kvcache.md §5.2)
    load_results(root, loaded)
    try:
        plan = kv.plan_from_request(request)
    except (KeyError, TypeError, ValueError) as exc:
        fail(loaded, RUN_MANIFEST, f"{root / 'manifest.json'}: request cannot be read as a kv-cache plan: "
                                   f"{type(exc).__name__}: {exc}")
        return loaded
    results = []
    base = root / "raw" / "kv_cache"
    for rank_dir in sorted(base.glob("option_*/trial_*/rank_*")):
        m = _RANK_DIR.search(rank_dir.as_posix())
        if not m:
            continue
        option, trial, rank = map(int, m.groups())
        files = sorted(glob.glob(str(rank_dir / "kvcache_results_*.json")))
        if not files:
            results.append(kv.KvRankResult(option, trial, rank, str(rank_dir), problem="no kvcache_results_*.json"))
            continue
        results.append(_kv_rank(Path(files[0]), option, trial, rank))
    for r in results:
        if r.problem:
            loaded.problems.append(f"{r.path}: {r.problem}")
    expected = len(plan.options) * plan.trials * plan.num_ranks
    usable = [r for r in results if r.problem is None]
    if len(usable) < expected:
        loaded.problems.append(f"{len(usable)} of {expected} planned rank results are usable under {base}")
    run = kv.KvCacheRun(str(manifest.get("run_id")), plan, tuple(results),
                        _separate(preflight, "kvcache_dir", request.get("cache_dir"), "results_dir",
                                  _results_dir(manifest)))
    loaded.record = run
    for option in sorted(plan.options):
        per_trial: dict[int, float] = {}
        for r in usable:
            if r.option == option and r.read_bandwidth_gbps is not None:
                per_trial[r.trial] = per_trial.get(r.trial, 0.0) + r.read_bandwidth_gbps  # sum over ranks
        if per_trial:  # Rules.md 6.3.4.1: mean over trials of the per-trial sum
            loaded.metrics[f"option{option}_read_GiBps"] = sum(per_trial.values()) / len(per_trial)
    return loaded


# --- vectordb -----------------------------------------------------------------------------------------------------

def load_vectordb(root: Path, manifest: Mapping[str, Any], preflight: Mapping[str, Any] | None) -> Loaded:
    request = manifest["request"]
    index = str(request.get("index_type", "")).upper()
    loaded = Loaded("vectordb", index)
    load_results(root, loaded)
    try:
        plan = vdb.plan_from_request(request)
    except (KeyError, TypeError, ValueError) as exc:
        fail(loaded, RUN_MANIFEST, f"{root / 'manifest.json'}: request cannot be read as a vectordb plan: {exc}")
        return loaded
    datagen_leaves, run_leaves = leaves(root, f"raw/vector_database/{index}")
    datagen = None
    if datagen_leaves:
        try:
            d = read_json_object(datagen_leaves[0] / "summary.json")
            datagen = vdb.VdbDatagen(d.get("num_vectors"), d.get("dimension"))
        except FileProblem as exc:
            datagen = vdb.VdbDatagen(None, None, str(exc))
    runs = []
    for leaf in run_leaves:
        try:
            result = vdb.run_from_summary(leaf.name, read_json_object(leaf / "summary.json"))
            if result.problem:
                result = vdb.VdbRunResult(leaf.name, problem=f"{leaf / 'summary.json'}: {result.problem}")
        except FileProblem as exc:
            result = vdb.VdbRunResult(leaf.name, problem=str(exc))
        runs.append(result)
        if result.problem:
            loaded.problems.append(result.problem)
    if len(run_leaves) < plan.runs:
        loaded.problems.append(f"{len(run_leaves)} of the {plan.runs} planned runs left an output directory")
    chain = vdb.VdbChain(str(manifest.get("run_id")), plan, datagen, tuple(runs))
    loaded.record = chain
    good = [r for r in runs if r.problem is None]
    if good:
        loaded.started = good[0].start.timestamp() if good[0].start else None
        qps = [r.throughput_qps for r in good if r.throughput_qps is not None]
        rec = [r.recall for r in good if r.recall is not None]
        loaded.metrics = {"runs": len(good), "throughput_qps_mean": sum(qps) / len(qps) if qps else None,
                          "recall_mean": sum(rec) / len(rec) if rec else None}
    return loaded


LOADERS = {"checkpointing": load_checkpointing, "training": load_training, "kvcache": load_kvcache,
           "vectordb": load_vectordb}


def rule_findings(loaded: Loaded) -> list[Finding]:
    """The run-level rules of the loaded record (its load findings are already in loaded.findings)."""
    r = loaded.record
    if isinstance(r, ckpt.CheckpointRun):
        return ckpt.run_findings(r)
    if isinstance(r, ckpt.CheckpointPlan):
        return ckpt.plan_findings(r)
    if isinstance(r, train.TrainingChain):
        return train.chain_findings(r)
    if isinstance(r, kv.KvCacheRun):
        return kv.run_findings(r)
    if isinstance(r, vdb.VdbChain):
        return vdb.chain_findings(r)
    return []


def load_run(root: Path) -> tuple[dict[str, Any] | None, Loaded]:
    """Read one run directory and judge it: load findings + preflight + the benchmark's run-level rules.
    Never raises for a bad run: every problem is a finding."""
    try:
        manifest = read_manifest(root)
    except FileProblem as exc:
        loaded = Loaded("unknown", None)
        fail(loaded, RUN_MANIFEST, str(exc))
        return None, loaded
    preflight_record, preflight = load_preflight(root, manifest)
    benchmark = manifest.get("benchmark", manifest["request"].get("benchmark"))
    try:
        loaded = LOADERS[benchmark](root, manifest, preflight)
    except Exception as exc:  # a run nobody can read is INVALID, and the next run still gets checked
        loaded = Loaded(benchmark, manifest["request"].get("model"))
        fail(loaded, RUN_READABLE, f"{root}: reading the run failed: {type(exc).__name__}: {exc}")
    loaded.findings = run_rules([check_preflight], preflight_record) + loaded.findings + rule_findings(loaded)
    created = parse_time(manifest.get("created"))
    loaded.created = created.replace(tzinfo=dt.timezone.utc).timestamp() if created else None
    return manifest, loaded
