"""Result trees for the rules, verify and bundle tests, built from code (no committed fixtures).

Each builder writes one run directory the way the chain lays it out (mlps_slurm.rules.loaders documents the
layouts): a manifest shaped like mlps_slurm.chain.write_run's, a preflight report with per-node facts, the raw
engine output, and the finalize job's results.json. The defaults make a good, CLOSED run; keyword arguments
break one thing at a time. The benchmark benchmarks/bundle_speed.py uses them too (with extra per-rank files).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
from pathlib import Path
from typing import Any

from mlps_slurm.benchmarks.checkpointing.catalog import LLAMA3_MODELS, rank_shards
from mlps_slurm.benchmarks.checkpointing.engine import ENGINE_SCHEMA, normalize
from mlps_slurm.benchmarks.checkpointing.report import table as checkpointing_table

T0 = 1_800_000_000.0  # 2027-01-15, an arbitrary fixed epoch so timestamps are stable


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, (bytes, bytearray)):
        path.write_bytes(data)
    elif isinstance(data, str):
        path.write_text(data)
    else:
        path.write_text(json.dumps(data, indent=1) + "\n")


def node_facts(node: str, memory_gb: float = 256.0, devices: dict[str, str] | None = None) -> dict[str, Any]:
    """The facts a preflight records for one node (mlps_slurm.rules.facts documents the shape)."""
    devices = devices or {}
    return {
        "cpu": {"model": "AMD EPYC 9454 48-Core Processor", "sockets": 2, "cores": 96, "threads": 192},
        "memory": {"total_bytes": int(memory_gb * (1 << 30))},
        "os": {"name": "Rocky Linux", "version": "9.4", "kernel": "5.14.0-427.el9.x86_64"},
        "product": "PowerEdge R7625",
        "nics": [{"name": "ib0", "type": "infiniband", "speed_mbps": 200000, "state": "up"},
                 {"name": "eno1", "type": "ethernet", "speed_mbps": 25000, "state": "up"}],
        "storage": {sid: {"path": f"/{sid}", "device": dev, "fstype": "lustre" if dev != "local" else "xfs",
                          "mount_point": f"/mnt/{dev}"} for sid, dev in devices.items()},
    }


def preflight(nodes: list[str], ok: bool = True, memory_gb: float | None = 256.0,
              devices: dict[str, str] | None = None) -> dict[str, Any]:
    reports = {}
    for n in nodes:
        report: dict[str, Any] = {"node": n, "hostname": n, "time": "2027-01-15T00:00:00+00:00",
                                  "checks": [{"id": "python.version", "status": "pass", "message": "Python 3.11"}]}
        if memory_gb is not None:
            report["facts"] = node_facts(n, memory_gb, devices)
        reports[n] = report
    failures = [] if ok else [{"node": nodes[0], "check": "storage.checkpoint_dir.writable",
                               "message": "/ckpt is not writable from " + nodes[0]}]
    return {"ok": ok, "nodes": nodes, "failures": failures, "warnings": [], "reports": reports,
            "time": "2027-01-15T00:00:00+00:00"}


PROFILE = {
    "name": "testsite", "nodes.count": 128, "nodes.cpus": 192, "nodes.memory_gb": 256.0,
    "nodes.accelerators_per_node": 8, "slurm.partition": "storage", "launcher.kind": "srun", "launcher.mpi": "pmix",
    "container.runtime": "none", "storage.results_dir": "/results", "storage.checkpoint_dir": "/ckpt",
    "storage.data_dir": "/data", "storage.kvcache_dir": "/kvcache", "storage.filesystem_type": "lustre",
    "storage.shared": True, "submission.organization": "acme", "submission.system": "sys1",
    "submission.division": "closed",
}


def manifest(run_id: str, benchmark: str, request: dict[str, Any], with_preflight_job: bool = True,
             profile: dict[str, Any] | None = None) -> dict[str, Any]:
    jobs = (["preflight"] if with_preflight_job else []) + [benchmark, "finalize"]
    return {
        "schema": "mlps-slurm/manifest/1", "run_id": run_id, "benchmark": benchmark, "tool_version": "0.1.0",
        "created": "2027-01-15T00:00:00+00:00", "state": "submitted", "request": {"benchmark": benchmark, **request},
        "profile": {"name": "testsite", "digest": "0" * 64, "values": dict(profile or PROFILE)},
        "plan": {"submittable": True, "notes": [], "jobs": [
            {"key": k, "script": f"{i:02d}-{k}.sbatch", "sbatch": [], "sbatch_args": [], "dependencies": []}
            for i, k in enumerate(jobs)]},
        "preflight": {}, "jobs": {k: {"job_id": str(100 + i), "script": f"{i:02d}-{k}.sbatch"}
                                  for i, k in enumerate(jobs)},
    }


def _common_files(run: Path, m: dict[str, Any], pre: dict[str, Any] | None) -> None:
    _write(run / "manifest.json", m)
    _write(run / "profile.resolved.yaml", "name: testsite\n")
    for job in m["plan"]["jobs"]:
        _write(run / "scripts" / job["script"], f"#!/bin/bash\n#SBATCH --job-name=mlps-{job['key']}\n")
        _write(run / "logs" / f"mlps-{job['key']}-1.out", f"{job['key']} done\n")
    if pre is not None:
        _write(run / "preflight" / "preflight.json", pre)
        _write(run / "preflight" / "preflight.txt", "preflight: PASSED\n")
        for node, report in pre["reports"].items():
            _write(run / "preflight" / "nodes" / f"{node}.json", report)


# --- checkpointing -------------------------------------------------------------------------------------------------

def engine_output(model: str, np_: int, nodes: int, scale: float, writes: int, reads: int, seconds_between: float,
                  fsync: bool, read_gap: float, cache_drop_ok: bool, start: float,
                  short_checkpoint: int | None = None) -> dict[str, Any]:
    """The built-in engine's JSON for a run, with the shape mlps_slurm.benchmarks.checkpointing.job writes."""
    shards = rank_shards(LLAMA3_MODELS[model], np_, scale)
    per_node = -(-np_ // nodes)
    host = [f"n{r // per_node + 1:03d}" for r in range(np_)]
    ranks = [{"rank": r, "host": host[r], "model_bytes": s.model_bytes, "optimizer_bytes": s.optimizer_bytes,
              "cache_drop": {"method": "posix_fadvise(POSIX_FADV_DONTNEED)", "ok": cache_drop_ok,
                             "error": None if cache_drop_ok else "Operation not permitted"}}
             for r, s in enumerate(shards)]
    checkpoints = []
    clock = start
    for phase, count in (("write", writes), ("read", reads)):
        if phase == "read" and count:
            clock += read_gap
        for k in range(count):
            per_rank = []
            slowest = 0.0
            for r, s in enumerate(shards):
                d = 2.0 + 0.01 * ((r * 7 + k * 3) % 11)
                nbytes = s.total_bytes - (1 if short_checkpoint == k and phase == "write" and r == 0 else 0)
                per_rank.append({"rank": r, "host": host[r], "bytes": nbytes, "start": clock + 0.001 * (r % 3),
                                 "end": clock + 0.001 * (r % 3) + d, "duration": d})
                slowest = max(slowest, 0.001 * (r % 3) + d)
            checkpoints.append({"phase": phase, "index": k, "ranks": per_rank})
            clock += slowest
            if phase == "write" and k < count - 1:
                clock += seconds_between
    iso = dt.datetime.fromtimestamp(start, dt.timezone.utc).isoformat()
    end = dt.datetime.fromtimestamp(clock, dt.timezone.utc).isoformat()
    return {"schema": ENGINE_SCHEMA, "engine": "mlps-builtin-checkpoint", "engine_version": "0.1.0", "model": model,
            "num_processes": np_, "scale": scale, "fsync": fsync, "num_checkpoints_write": writes,
            "num_checkpoints_read": reads, "seconds_between_checkpoints": seconds_between,
            "checkpoint_dir": f"/ckpt/{model}", "chunk_bytes": 16 << 20, "started": iso, "ended": end,
            "ranks": ranks, "checkpoints": checkpoints}


def checkpoint_run(parent: Path, *, run_id: str | None = None, model: str = "llama3-8b", np_: int | None = None,
                   nodes: int | None = None, scale: float = 1.0, writes: int = 10, reads: int = 10,
                   seconds_between: float = 5.0, fsync: bool = True, read_gap: float = 1.5,
                   cache_drop_ok: bool = True, accelerator: str | None = None, memory_gb: float | None = 256.0,
                   preflight_ok: bool = True, with_preflight: bool = True, status: str = "success",
                   start: float = T0, params: dict[str, str] | None = None, short_checkpoint: int | None = None,
                   rank_files: int = 0, rank_file_bytes: int = 0, profile: dict[str, Any] | None = None) -> Path:
    """A finished checkpointing run. Defaults: CLOSED (CLOSED process count, 8 ranks per node, 10 + 10, fsync,
    1.5 s read gap, cache dropped, full size, 5 s between checkpoints). `rank_files` adds that many per-rank log
    files of about `rank_file_bytes` each (the benchmark's bulk)."""
    np_ = np_ or LLAMA3_MODELS[model].closed_processes
    nodes = nodes or max(1, np_ // 8)
    run_id = run_id or f"checkpointing-{model}-{int(start)}"
    run = parent / run_id
    raw = run / "raw" / "checkpointing" / model
    request: dict[str, Any] = {
        "model": model, "num_processes": np_, "nodes": nodes, "scale": scale, "num_checkpoints_write": writes,
        "num_checkpoints_read": reads, "seconds_between_checkpoints": seconds_between, "engine": "builtin",
        "keep_files": False, "checkpoint_dir": f"/ckpt/{run_id}", "engine_output": f"{run}/raw/checkpointing/{model}/"
                                                                                   "engine.json",
        "expected_bytes_per_checkpoint": sum(s.total_bytes for s in rank_shards(LLAMA3_MODELS[model], np_, scale))}
    if accelerator is not None:
        request["accelerator"] = accelerator
    if params:
        request["params"] = params
    m = manifest(run_id, "checkpointing", request, with_preflight_job=with_preflight, profile=profile)
    engine = engine_output(model, np_, nodes, scale, writes, reads, seconds_between, fsync, read_gap, cache_drop_ok,
                           start, short_checkpoint)
    hosts = sorted({r["host"] for r in engine["ranks"]})
    _common_files(run, m, preflight(hosts, preflight_ok, memory_gb) if with_preflight else None)
    _write(raw / "engine.json", engine)
    metrics = normalize(engine, str(raw / "engine.json"))
    results = {"schema": "mlps-slurm/results/1", "run_id": run_id, "benchmark": "checkpointing", "model": model,
               "num_processes": np_, "nodes": nodes, "scale": scale, "status": status,
               "reasons": [] if status == "success" else ["the checkpointing job FAILED"], "submittable": True,
               "notes": [], "jobs": {}, "metrics": metrics, "finalized": "2027-01-15T01:00:00+00:00"}
    _write(run / "results" / "results.json", results)
    _write(run / "results" / "results.txt", checkpointing_table(results))
    if rank_files:
        _bulk_files(raw / "ranks", rank_files, rank_file_bytes, seed=int(start) % 9973)
    return run


_POOL: bytes | None = None


def _text_pool() -> bytes:
    """1 MiB of log-like JSON lines, sliced into per-rank files (compressible like real logs, not trivially)."""
    global _POOL
    if _POOL is None:
        rng = random.Random(7)
        lines = []
        size = 0
        while size < 1 << 20:
            line = json.dumps({"rank": rng.randrange(1024), "op": rng.choice(["write", "read", "fsync"]),
                               "offset": rng.randrange(1 << 40), "bytes": rng.randrange(1 << 24),
                               "t": round(T0 + rng.random() * 1e4, 6)}) + "\n"
            lines.append(line)
            size += len(line)
        _POOL = "".join(lines).encode()
    return _POOL


def _bulk_files(directory: Path, count: int, approx_bytes: int, seed: int) -> None:
    """`count` files of about `approx_bytes`: three quarters log text, one quarter incompressible trace data."""
    pool = _text_pool()
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        n = max(1, int(approx_bytes * rng.uniform(0.5, 1.5)))
        if i % 4 == 3:
            data = os.urandom(n)
        else:
            off = rng.randrange(len(pool) - min(n, len(pool) - 1))
            data = (pool[off:] + pool)[:n]
        (directory / f"rank_{i:05d}.log").write_bytes(data)


# --- training --------------------------------------------------------------------------------------------------------

def training_run(parent: Path, *, run_id: str = "training-unet3d-1", model: str = "unet3d", accelerator: str = "b200",
                 num_accelerators: int = 8, nodes: int = 1, memory_gb: float = 64.0, num_files_train: int = 28000,
                 generated_files: int = 28000, runs: int = 6, au: float = 95.0, gap_s: float = 5.0,
                 run_seconds: float = 600.0, params: dict[str, str] | None = None, scale: float = 1.0,
                 same_filesystem: bool = False, bad_summary: int | None = None) -> Path:
    """A finished training chain. Defaults: CLOSED unet3d on b200, 8 accelerators on 1 host with 64 GiB, a
    28,000-file dataset (500 steps x 7 x 8 = 28,000 samples), 6 runs 5 s apart at AU 95 %."""
    run = parent / run_id
    hosts = [f"n{i + 1:03d}" for i in range(nodes)]
    request = {"model": model, "accelerator": accelerator, "num_accelerators": num_accelerators, "nodes": nodes,
               "num_files_train": num_files_train, "num_subfolders_train": 0, "params": params or {},
               "scale": scale, "data_dir": "/data/unet3d", "results_dir": "/results", "runs": 6}
    devices = {"data_dir": "dev-data", "results_dir": "dev-data" if same_filesystem else "dev-results"}
    m = manifest(run_id, "training", request)
    _common_files(run, m, preflight(hosts, True, memory_gb, devices))
    raw = run / "raw" / "training" / model
    _write(raw / "datagen" / "datagen.json", {"num_files": generated_files, "num_subfolders": 0,
                                              "bytes": generated_files * 146_600_628})
    clock = dt.datetime(2027, 1, 15, 10, 0, 0)
    for i in range(runs):
        start, end = clock, clock + dt.timedelta(seconds=run_seconds)
        summary: dict[str, Any] = {
            "start": start.isoformat(), "end": end.isoformat(), "num_accelerators": num_accelerators,
            "num_hosts": nodes, "hostname": hosts[0], "host_memory_GB": [memory_gb] * nodes,
            "host_cpu_count": [192] * nodes, "num_files_train": num_files_train, "num_samples_per_file": 1,
            "epochs": 5, "metric": {"train_au_percentage": [au] * 5, "train_au_mean_percentage": au,
                                    "train_au_meet_expectation": "success" if au >= 90 else "fail",
                                    "train_throughput_mean_samples_per_second": 310.5,
                                    "train_io_mean_MB_per_second": 43_400.0}}
        leaf = raw / "run" / f"{i:02d}"
        if bad_summary == i:
            _write(leaf / "summary.json", '{"start": "2027-01-15T10:00:00", "metric": {"train_au_mean')
        else:
            _write(leaf / "summary.json", summary)
        _write(leaf / "dlio_config" / "overrides.yaml",
               "- workload=unet3d_b200\n- ++workload.dataset.num_files_train=%d\n" % num_files_train
               + "".join(f"- ++workload.{k}={v}\n" for k, v in (params or {}).items()))
        _write(leaf / "dlio.log", "DLIO run\n")
        clock = end + dt.timedelta(seconds=gap_s)
    _write(run / "results" / "results.json", {"schema": "mlps-slurm/results/1", "run_id": run_id,
                                               "benchmark": "training", "status": "success", "reasons": []})
    return run


# --- kv-cache --------------------------------------------------------------------------------------------------------

def kvcache_run(parent: Path, *, run_id: str = "kvcache-1", ranks: int = 2, trials: int = 3, seed: int | None = 42,
                request_extra: dict[str, Any] | None = None, missing: tuple[int, int, int] | None = None,
                cpu_tier_option: int | None = None, wrong_seed_rank: int | None = None) -> Path:
    """A finished kv-cache run: options 1-3 x trials x ranks result files. Defaults: CLOSED."""
    run = parent / run_id
    request: dict[str, Any] = {"num_processes": ranks, "cache_dir": "/kvcache", "results_dir": "/results",
                               "trials": trials, "seed": seed, "inter_option_delay_s": 90, **(request_extra or {})}
    hosts = ["n001"]
    m = manifest(run_id, "kvcache", request)
    _common_files(run, m, preflight(hosts, True, 256.0, {"kvcache_dir": "local", "results_dir": "dev-results"}))
    for option in (1, 2, 3):
        for trial in range(trials):
            for rank in range(ranks):
                if missing == (option, trial, rank):
                    continue
                entries = 0 if cpu_tier_option == option else 1200
                rank_seed = (seed or 0) + rank + (1 if wrong_seed_rank == rank else 0)
                _write(run / "raw" / "kv_cache" / f"option_{option}" / f"trial_{trial}" / f"rank_{rank}" /
                       "kvcache_results_20270115_100000.json",
                       {"requests_completed": 5000, "seed": rank_seed, "summary": {"total_requests": 5000},
                        "cache_stats": {"storage_entries": entries, "tier_storage_read_bandwidth_gbps": 3.5,
                                        "tier_storage_write_bandwidth_gbps": 1.25}})
    _write(run / "results" / "results.json", {"status": "success", "reasons": []})
    return run


# --- vectordb --------------------------------------------------------------------------------------------------------

def vectordb_run(parent: Path, *, run_id: str = "vectordb-1", index_type: str = "DISKANN", backend: str = "milvus",
                 runs: int = 5, run_seconds: float = 60.0, runtime_s: float = 60.0,
                 params: dict[str, Any] | None = None, with_datagen: bool = True) -> Path:
    """A finished vectordb chain: datagen + `runs` timed query runs. Defaults: CLOSED DISKANN on Milvus."""
    run = parent / run_id
    request = {"index_type": index_type, "backend": backend, "params": params or {}, "runtime_s": runtime_s,
               "runs": 5}
    m = manifest(run_id, "vectordb", request)
    _common_files(run, m, preflight(["n001"], True, 256.0))
    raw = run / "raw" / "vector_database" / index_type
    if with_datagen:
        _write(raw / "datagen" / "summary.json", {"num_vectors": 1_000_000, "dimension": 1536})
    clock = dt.datetime(2027, 1, 15, 12, 0, 0)
    for i in range(runs):
        end = clock + dt.timedelta(seconds=run_seconds)
        _write(raw / "run" / f"{i:02d}" / "summary.json",
               {"start": clock.isoformat(), "end": end.isoformat(), "throughput_qps": 850.0 + i, "recall": 0.97,
                "p99_latency_ms": 13.4})
        clock = end + dt.timedelta(seconds=10)
    _write(run / "results" / "results.json", {"status": "success", "reasons": []})
    return run
