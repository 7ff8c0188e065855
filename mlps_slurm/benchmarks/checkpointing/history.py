"""What `mlps-slurm history` records of a checkpointing run: the write and read throughput, each the mean of the
per-checkpoint throughputs results.json lists (bytes of the checkpoint / its slowest rank's duration), so the
spread over the run's checkpoints is the noise its comparison allows."""

from __future__ import annotations

from typing import Any, Mapping

from mlps_slurm.benchmarks.base import Metric, metric


def _checkpoints(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    metrics = results.get("metrics")
    rows = metrics.get("checkpoints") if isinstance(metrics, Mapping) else None
    return [c for c in rows if isinstance(c, Mapping)] if isinstance(rows, list) else []


def metrics(results: Mapping[str, Any]) -> list[Metric]:
    checkpoints = _checkpoints(results)
    found = [metric(f"{phase}_throughput", "GB/s", True,
                    [c.get("throughput_GBps") for c in checkpoints if c.get("phase") == phase])
             for phase in ("write", "read")]
    return [m for m in found if m is not None]


def versions(results: Mapping[str, Any]) -> dict[str, Any]:
    m = results.get("metrics")
    if not isinstance(m, Mapping) or not isinstance(m.get("engine"), str):
        return {}
    return {str(m["engine"]): m.get("engine_version")}
