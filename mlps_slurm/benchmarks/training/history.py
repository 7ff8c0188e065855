"""What `mlps-slurm history` records of a training run: per scored run (the warm-up and unusable runs left out)
the accelerator utilization, the samples/s and the measured MB/s; each metric is the mean over the scored runs, and
their spread is the noise its comparison allows."""

from __future__ import annotations

from typing import Any, Mapping

from mlps_slurm.benchmarks.base import Metric, metric

METRICS = (  # results.json runs[] key, history name, unit, higher is better
    ("au_percent", "au", "%", True),
    ("throughput_samples_per_s", "throughput", "samples/s", True),
    ("measured_MB_per_s", "measured_bandwidth", "MB/s", True),
)


def scored_runs(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    runs = results.get("runs")
    return [r for r in runs if isinstance(r, Mapping) and r.get("role") == "scored" and r.get("usable")] \
        if isinstance(runs, list) else []


def metrics(results: Mapping[str, Any]) -> list[Metric]:
    scored = scored_runs(results)
    found = [metric(name, unit, higher, [r.get(key) for r in scored]) for key, name, unit, higher in METRICS]
    return [m for m in found if m is not None]

