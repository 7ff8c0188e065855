"""What `mlps-slurm history` records of a kv-cache run: per option, the figures the finalize sums over ranks
within a trial (storage read and write bandwidth, token throughputs); each metric is the mean over the option's
trials (Rules.md §6.3.4), and the trials' spread is the noise its comparison allows. The device P95s are a max over
ranks and trials, with no spread of their own, so they are not compared."""

from __future__ import annotations

from typing import Any, Mapping

from mlps_slurm.benchmarks.base import Metric, metric

METRICS = (  # results.json options.<n> key (with its _per_trial list), history name, unit
    ("read_bandwidth_gibps", "read_bandwidth", "GiB/s"),
    ("write_bandwidth_gibps", "write_bandwidth", "GiB/s"),
    ("avg_throughput_tokens_per_sec", "throughput", "tokens/s"),
    ("storage_throughput_tokens_per_sec", "storage_throughput", "tokens/s"),
)


def metrics(results: Mapping[str, Any]) -> list[Metric]:
    options = results.get("options")
    if not isinstance(options, Mapping):
        return []
    found = []
    for number, option in sorted(options.items(), key=lambda kv: (len(str(kv[0])), str(kv[0]))):
        if not (isinstance(number, str) and number.isdigit() and isinstance(option, Mapping)
                and option.get("complete")):
            continue
        for key, name, unit in METRICS:
            per_trial = option.get(f"{key}_per_trial")
            found.append(metric(f"option{number}.{name}", unit, True, per_trial if isinstance(per_trial, list)
                                else ()))
    return [m for m in found if m is not None]


def versions(results: Mapping[str, Any]) -> dict[str, Any]:
    engine = results.get("engine")
    return {"kvcache_engine": engine} if isinstance(engine, str) else {}
