"""Host-metrics figures of a run: per node, disk MB/s and CPU iowait over time, from the sampler's series files.

The host-metrics sampler (mlps_slurm/steps/hostmetrics.py) writes one line per interval into
`<run>/hostmetrics/<job key>[.NN]/<node>.series.jsonl`: `t` (Unix time), `disk_total` {read_Bps, write_Bps} (the
devices that carry I/O once) and `cpu` {iowait, ...} in %. This module reads those files with the sampler's own name
patterns (standard library only) and tolerates everything else: a run without the directory, a damaged line, an unexpected name or a
symbolic link gives fewer points, never an error. Names from the directory are matched against strict patterns and
only appear in captions and legends, never in paths.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any, Iterator

from mlps_slurm.report.figures import Figure, figure, number, series
from mlps_slurm.steps.hostmetrics import NODE_NAME
from mlps_slurm.steps.hostmetrics_summary import HOST_METRICS_DIR as DIR
from mlps_slurm.steps.hostmetrics_summary import JOB_DIR

SERIES = ".series.jsonl"
MAX_LINES = 50_000  # per file: a day at a 2 s interval
MAX_POINTS = 1_500  # per node and figure: more adds nothing a reader can see
MAX_JOBS = 12
MB = 1e6


def _entries(folder: Path) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            yield from sorted(it, key=lambda e: e.name)
    except OSError:
        return


def _points(path: Path) -> list[tuple[dt.datetime, float | None, float | None]]:
    """(time, disk MB/s read + write, CPU iowait %) per sample line of one series file."""
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh):
                if n >= MAX_LINES:
                    break
                try:
                    sample = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(sample, dict) or number(sample.get("t")) is None:
                    continue
                disk = sample.get("disk_total") if isinstance(sample.get("disk_total"), dict) else {}
                rates = [number(disk.get(k)) for k in ("read_Bps", "write_Bps")]
                cpu = sample.get("cpu") if isinstance(sample.get("cpu"), dict) else {}
                try:
                    when = dt.datetime.fromtimestamp(float(sample["t"]), dt.timezone.utc)
                except (OverflowError, OSError, ValueError):
                    continue
                mbps = sum(r for r in rates if r is not None) / MB if any(r is not None for r in rates) else None
                out.append((when, mbps, number(cpu.get("iowait"))))
    except OSError:
        return []
    step = max(1, len(out) // MAX_POINTS)
    return out[::step]


def _jobs(run_dir: Path) -> dict[str, dict[str, list[tuple[dt.datetime, float | None, float | None]]]]:
    """job key -> node -> samples (the array tasks of a job joined in time order)."""
    jobs: dict[str, dict[str, list[Any]]] = {}
    for entry in _entries(run_dir / DIR):
        match = JOB_DIR.match(entry.name)
        if not match or not entry.is_dir(follow_symlinks=False):
            continue
        for file in _entries(Path(entry.path)):
            node = file.name[: -len(SERIES)] if file.name.endswith(SERIES) else ""
            if NODE_NAME.match(node) and file.is_file(follow_symlinks=False):
                jobs.setdefault(match["key"], {}).setdefault(node, []).extend(_points(Path(file.path)))
    return {k: {n: sorted(p, key=lambda s: s[0]) for n, p in nodes.items()}
            for k, nodes in sorted(jobs.items())[:MAX_JOBS]}


def figures(run_dir: Path) -> list[Figure]:
    """Two figures per benchmark job that left host metrics: disk MB/s and CPU iowait per node over time."""
    found = []
    for key, nodes in _jobs(Path(run_dir)).items():
        found += [
            figure(f"host-disk-{key}", f"Disk throughput per node: job {key}",
                   f"Bytes read plus written per second on each node's disks (MB/s, partitions and stacked devices "
                   f"counted once) while job {key} ran, from the host-metrics sampler.", "MB/s",
                   [series(node, [(t, mb) for t, mb, _ in pts]) for node, pts in nodes.items()], kind="line",
                   x_label="time (UTC)"),
            figure(f"host-iowait-{key}", f"CPU iowait per node: job {key}",
                   f"Share of CPU time spent waiting for I/O on each node (%) while job {key} ran: high iowait with "
                   "low throughput points at the storage, not the node.", "iowait %",
                   [series(node, [(t, w) for t, _, w in pts]) for node, pts in nodes.items()], kind="line",
                   x_label="time (UTC)"),
        ]
    return [f for f in found if f is not None]
