"""The figures of a checkpointing run's report (`mlps-slurm report`): the throughput of every checkpoint, write and
read, beside the phase means; and how long each took. Plain data (mlps_slurm.report.figures); nothing here imports
matplotlib."""

from __future__ import annotations

from typing import Any, Mapping

from mlps_slurm.report.figures import Figure, figure, number, rows, series

PHASES = ("write", "read")


def figures(results: Mapping[str, Any]) -> list[Figure]:
    metrics = results.get("metrics") if isinstance(results.get("metrics"), Mapping) else {}
    checkpoints = rows(metrics.get("checkpoints"))
    by_phase = {p: [c for c in checkpoints if c.get("phase") == p] for p in PHASES}
    means = []
    for p in PHASES:
        summary = metrics.get(p) if isinstance(metrics.get(p), Mapping) else {}
        gbps = summary.get("throughput_GBps") if isinstance(summary.get("throughput_GBps"), Mapping) else {}
        if number(gbps.get("mean")) is not None:
            means.append(f"{p} mean {gbps['mean']:.3g} GB/s (min {number(gbps.get('min')) or 0:.3g}, "
                         f"max {number(gbps.get('max')) or 0:.3g}) over {summary.get('count')} checkpoint(s)")
    found = [
        figure("checkpoint-throughput", "Throughput per checkpoint",
               "Each checkpoint's bytes divided by its slowest rank's duration (GB/s = 10^9 bytes/s), by checkpoint "
               "index; writes first, then reads of the same checkpoints. A falling bar is a checkpoint the storage "
               "served more slowly than the others.", "GB/s",
               [series(p, [(int(c["index"]) if number(c.get("index")) is not None else i, c.get("throughput_GBps"))
                           for i, c in enumerate(by_phase[p])]) for p in PHASES],
               kind="bar", x_label="checkpoint", notes=tuple(means)),
        figure("checkpoint-duration", "Duration per checkpoint",
               "Seconds from the first rank's start to the slowest rank's end, per checkpoint.", "seconds",
               [series(p, [(int(c["index"]) if number(c.get("index")) is not None else i, c.get("duration_s"))
                           for i, c in enumerate(by_phase[p])]) for p in PHASES],
               kind="line", x_label="checkpoint"),
    ]
    return [f for f in found if f is not None]
