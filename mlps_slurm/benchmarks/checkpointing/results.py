"""A checkpointing run directory as the rules' record (CheckpointRun, or its CheckpointPlan when the engine's
output is unusable).

    manifest.json request and settings: model, num_processes, nodes, scale, num_checkpoints_write, num_checkpoints_read,
                  seconds_between_checkpoints, engine_output, expected_bytes_per_checkpoint, and optionally
                  accelerator (default b200) and params {dlio key: value}
    raw/checkpointing/<model>/engine.json     the engine's output (mlps_slurm.benchmarks.checkpointing.engine.normalize)
    preflight facts "memory" give each client's RAM (else the profile's nodes.memory_gb) for ckpt.cache_drop
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from mlps_slurm.benchmarks.checkpointing import rules as ckpt
from mlps_slurm.benchmarks.checkpointing.engine import EngineOutputError, normalize
from mlps_slurm.rules.common import RUN_MANIFEST
from mlps_slurm.rules import facts
from mlps_slurm.rules.loaders import (FileProblem, Loaded, fail, finite, load_results, profile_value, read_json_file,
                                      relocate)
from mlps_slurm.rundir import run_record


def observation_from_engine(raw: Mapping[str, Any], metrics: Mapping[str, Any], client_memory: Mapping[str, int],
                            memory_source: str) -> ckpt.CheckpointObservation:
    """Build the observation from the engine JSON (`raw`) and its normalized metrics. `raw` must already have
    passed mlps_slurm.benchmarks.checkpointing.engine.normalize(), so its shape is trusted here."""
    checkpoints = raw["checkpoints"]
    writes = [c for c in checkpoints if c["phase"] == "write"]
    reads = [c for c in checkpoints if c["phase"] == "read"]
    last_write = max(writes, key=lambda c: c["index"]) if writes else None
    first_read = min(reads, key=lambda c: c["index"]) if reads else None
    written: Counter[str] = Counter()
    for c in writes:
        for r in c["ranks"]:
            written[r["host"]] += r["bytes"]
    errors = tuple(f"rank {r['rank']} on {r['host']}: {r['cache_drop'].get('error')}"
                   for r in raw["ranks"] if not r["cache_drop"]["ok"])
    all_ranks = [r for c in checkpoints for r in c["ranks"]]
    return ckpt.CheckpointObservation(
        fsync=bool(raw["fsync"]),
        writes=metrics["write"]["count"],
        reads=metrics["read"]["count"],
        checkpoint_bytes=tuple((c["phase"], c["index"], c["bytes"]) for c in metrics["checkpoints"]),
        write_end=max(r["end"] for r in last_write["ranks"]) if last_write else None,
        read_start=min(r["start"] for r in first_read["ranks"]) if first_read else None,
        cache_drop_ok=not errors,
        cache_drop_errors=errors,
        written_per_host=dict(written),
        ranks_per_host=dict(Counter(r["host"] for r in raw["ranks"])),
        client_memory=dict(client_memory),
        memory_source=memory_source,
        started=min((r["start"] for r in all_ranks), default=None),
        ended=max((r["end"] for r in all_ranks), default=None),
    )


def load(root: Path, manifest: Mapping[str, Any], preflight: Mapping[str, Any] | None) -> Loaded:
    request = run_record(dict(manifest))
    loaded = Loaded("checkpointing", str(request.get("model")))
    try:
        plan = ckpt.plan_from_request(request)
    except (KeyError, TypeError, ValueError) as exc:
        fail(loaded, RUN_MANIFEST, f"{root / 'manifest.json'}: request cannot be read as a checkpointing plan: "
                                   f"{type(exc).__name__}: {exc}")
        return loaded
    load_results(root, loaded)
    path = relocate(root, manifest, request.get("engine_output"), f"raw/checkpointing/{plan.model}/engine.json")
    try:
        raw = read_json_file(path)
        metrics = normalize(raw, str(path))
    except (FileProblem, EngineOutputError) as exc:
        fail(loaded, ckpt.ENGINE_OUTPUT, str(exc))
        loaded.record = plan  # the parameters can still be judged
        return loaded
    memory = facts.client_memory(preflight)
    source = "preflight facts"
    declared = finite(profile_value(manifest, "nodes.memory_gb"))
    if not memory and declared:
        memory = {h: int(declared * 1e9) for h in metrics["hosts"]}
        source = "the profile's nodes.memory_gb"
    observed = observation_from_engine(raw, metrics, memory, source)
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
