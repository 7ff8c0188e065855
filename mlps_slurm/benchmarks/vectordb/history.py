"""What `mlps-slurm history` records of a vectordb run: per timed query run its QPS, p99 search latency and
recall; each metric is the mean over the runs, and their spread is the noise its comparison allows."""

from __future__ import annotations

from typing import Any, Mapping

from mlps_slurm.benchmarks.base import Metric, metric


def metrics(results: Mapping[str, Any]) -> list[Metric]:
    runs = [r for r in results.get("runs") or () if isinstance(r, Mapping)] \
        if isinstance(results.get("runs"), list) else []
    latency = [r.get("latency_ms") for r in runs]
    found = [
        metric("throughput", "queries/s", True, [r.get("throughput_qps") for r in runs]),
        metric("latency_p99", "ms", False, [lat.get("p99") for lat in latency if isinstance(lat, Mapping)]),
        metric("recall", "", True, [r.get("recall") for r in runs]),
    ]
    return [m for m in found if m is not None]


def versions(results: Mapping[str, Any]) -> dict[str, Any]:
    load = results.get("load")
    server = load.get("server_version") if isinstance(load, Mapping) else None
    return {"milvus": server} if isinstance(server, str) else {}
