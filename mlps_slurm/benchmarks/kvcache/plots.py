"""The figures of a kv-cache run's report (`mlps-slurm report`): per option and trial, the storage bandwidth and the
token throughputs (the figures the finalize sums over clients within a trial), and per option the device P95
latencies. Plain data (mlps_slurm.report.figures); nothing here imports matplotlib."""

from __future__ import annotations

from typing import Any, Mapping

from mlps_slurm.report.figures import Figure, figure, series


def _options(results: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    options = results.get("options")
    if not isinstance(options, Mapping):
        return []
    return sorted(((str(k), v) for k, v in options.items() if isinstance(v, Mapping)),
                  key=lambda kv: (len(kv[0]), kv[0]))


def _per_trial(options: list[tuple[str, Mapping[str, Any]]], key: str, label: str) -> Any:
    points = []
    for number, option in options:
        values = option.get(f"{key}_per_trial")
        for trial, value in enumerate(values if isinstance(values, list) else []):
            points.append((f"opt {number} · trial {trial + 1}", value))
    return series(label, points)


def figures(results: Mapping[str, Any]) -> list[Figure]:
    options = _options(results)
    found = [
        figure("bandwidth-per-trial", "Storage bandwidth per option and trial",
               "KV-cache reads and writes, GiB/s summed over the clients of each trial (the reference's definition, "
               "I/O that drains after the timed window included). An option's figure is the mean of its trials.",
               "GiB/s", [_per_trial(options, "read_bandwidth_gibps", "read"),
                         _per_trial(options, "write_bandwidth_gibps", "write")], kind="bar"),
        figure("tokens-per-trial", "Token throughput per option and trial",
               "Tokens per second over all clients (avg throughput) and the tokens served from storage, per trial.",
               "tokens/s", [_per_trial(options, "avg_throughput_tokens_per_sec", "throughput"),
                            _per_trial(options, "storage_throughput_tokens_per_sec", "storage throughput")],
               kind="bar"),
        figure("device-p95", "Device latency P95 per option",
               "The largest per-client P95 of the device reads and writes in each option (ms): no per-trial spread.",
               "ms", [series("read P95", [(f"option {n}", o.get("device_read_p95_ms")) for n, o in options]),
                      series("write P95", [(f"option {n}", o.get("device_write_p95_ms")) for n, o in options])],
               kind="bar"),
    ]
    return [f for f in found if f is not None]
