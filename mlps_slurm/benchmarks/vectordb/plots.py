"""The figures of a vectordb run's report (`mlps-slurm report`): per timed query run its QPS, its search latency
percentiles and its recall. Plain data (mlps_slurm.report.figures); nothing here imports matplotlib."""

from __future__ import annotations

from typing import Any, Mapping

from mlps_slurm.report.figures import Figure, figure, number, rows, series

PERCENTILES = (("p50", "p50"), ("p95", "p95"), ("p99", "p99"), ("p99_9", "p99.9"))


def figures(results: Mapping[str, Any]) -> list[Figure]:
    runs = rows(results.get("runs"))
    names = [str(r.get("run")) if isinstance(r.get("run"), (str, int)) else f"{i:02d}" for i, r in enumerate(runs)]
    latency = [r.get("latency_ms") if isinstance(r.get("latency_ms"), Mapping) else {} for r in runs]
    aggregate = results.get("aggregate") if isinstance(results.get("aggregate"), Mapping) else {}
    qps = aggregate.get("throughput_qps") if isinstance(aggregate.get("throughput_qps"), Mapping) else {}
    mean_qps = number(qps.get("mean"))
    batch = results.get("query_batch_size") or 1
    found = [
        figure("qps-per-run", "Queries per second per run",
               "All queries of a run divided by the union of its query processes' windows.", "queries/s",
               [series("QPS", zip(names, (r.get("throughput_qps") for r in runs)))], kind="bar", x_label="query run",
               threshold=mean_qps, threshold_label=f"mean {mean_qps:.1f} QPS" if mean_qps is not None else ""),
        figure("latency-per-run", "Search latency per run",
               f"Latency percentiles of the search calls (batch of {batch}) in each run, ms.", "ms",
               [series(label, zip(names, (lat.get(key) for lat in latency))) for key, label in PERCENTILES],
               kind="line", x_label="query run"),
        figure("recall-per-run", "Recall per run",
               "recall@k of each run against exact ground truth (the axis is zoomed to the values).", "recall",
               [series("recall", zip(names, (r.get("recall") for r in runs)))], kind="line", x_label="query run",
               from_zero=False),
    ]
    return [f for f in found if f is not None]
