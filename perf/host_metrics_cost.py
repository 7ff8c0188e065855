"""What host metrics cost the benchmark: the same small checkpointing chain on the local cluster, N times with the
samplers and N times without (monitoring.host_metrics true/false), alternating in ABBA order within one invocation
so that drift of the machine hits both sides alike.

For each run it takes the engine's own figures from results.json (mean write and read GB/s over the checkpoints,
the summed seconds of the writes and reads) and the benchmark job's wall time from Slurm (1 s resolution), then
prints the mean of each side, the ratio with/without and the spread (standard deviation, min-max). Target: the
ratio of throughputs within the spread of either side (no cost that the noise of the machine does not hide).

    .venv/bin/python perf/host_metrics_cost.py [--runs 5] [--interval 10] [--scale 0.005] [--nodes 4] [--keep]

Needs the local cluster (bin/mlps-local-cluster up; SLURM_CONF set) and runs one chain at a time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = (("write_GBps", "write GB/s (mean of 10)", True), ("read_GBps", "read GB/s (mean of 10)", True),
           ("io_seconds", "write+read seconds", False), ("job_seconds", "benchmark job wall s", False))


def job_seconds(job_id: str) -> float | None:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    fields = dict(t.split("=", 1) for t in out.split() if "=" in t)
    try:
        start, end = (dt.datetime.fromisoformat(fields[k]) for k in ("StartTime", "EndTime"))
    except (KeyError, ValueError):
        return None
    return (end - start).total_seconds()


def one_run(workdir: Path, monitored: bool, args: argparse.Namespace, index: int) -> dict[str, float]:
    results_dir = workdir / f"{index:02d}-{'with' if monitored else 'without'}"
    argv = [sys.executable, "-m", "mlps_slurm", "submit", "checkpointing", "--model", "llama3-8b",
            "--scale", str(args.scale), "--seconds-between-checkpoints", "0", "-N", str(args.nodes),
            "--results-dir", str(results_dir), "--wait", "--timeout", "900",
            "-o", f"monitoring.host_metrics={'true' if monitored else 'false'}",
            "-o", f"monitoring.interval_s={args.interval:g}",
            "-o", f"storage.checkpoint_dir={workdir / 'ckpt'}"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=1000)
    if proc.returncode != 0:
        raise SystemExit(f"run {index} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    (run,) = [p for p in results_dir.iterdir() if not p.name.startswith(".")]
    results = json.loads((run / "results" / "results.json").read_text())
    checkpoints = results["metrics"]["checkpoints"]
    manifest = json.loads((run / "manifest.json").read_text())
    samples = sum(n.get("samples", 0) for j in results["host_metrics"]["jobs"].values() for n in j["nodes"].values())
    if monitored != bool(results["host_metrics"]["jobs"]):
        raise SystemExit(f"run {index}: host metrics {'missing' if monitored else 'present'} in {run}")
    return {"write_GBps": statistics.mean(c["throughput_GBps"] for c in checkpoints if c["phase"] == "write"),
            "read_GBps": statistics.mean(c["throughput_GBps"] for c in checkpoints if c["phase"] == "read"),
            "io_seconds": sum(c["duration_s"] for c in checkpoints),
            "job_seconds": job_seconds(manifest["jobs"]["checkpointing"]["job_id"]) or float("nan"),
            "samples": samples}


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"sd {sd:6.3f} [{min(values):7.3f}-{max(values):7.3f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs on each side (default 5)")
    parser.add_argument("--interval", type=float, default=10.0, help="monitoring.interval_s (default 10)")
    parser.add_argument("--scale", type=float, default=0.005, help="checkpoint scale (default 0.005)")
    parser.add_argument("--nodes", type=int, default=4, help="nodes of the benchmark job (default 4)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new directory under /dev/shm")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mlps-hostmetrics-cost-", dir="/dev/shm"))
    # ABBA: with, without, without, with, ...: a slow drift of the machine weighs on both sides equally.
    order = [(i % 4) in (0, 3) for i in range(2 * args.runs)]
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    try:
        for i, monitored in enumerate(order):
            r = one_run(workdir, monitored, args, i)
            runs[monitored].append(r)
            print(f"run {i:2d} {'with   ' if monitored else 'without'}: write {r['write_GBps']:.3f} GB/s, read "
                  f"{r['read_GBps']:.3f} GB/s, I/O {r['io_seconds']:.2f} s, job {r['job_seconds']:.0f} s, "
                  f"{r['samples']:.0f} samples", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nhost metrics cost: llama3-8b --scale {args.scale:g}, {args.nodes} nodes, interval {args.interval:g} s, "
          f"{args.runs} runs each side (ABBA)")
    print(f"{'figure':<26}{'with':>9}  {'spread with':<30}{'without':>9}  {'spread without':<30}{'with/without':>13}")
    for key, label, higher_is_better in FIGURES:
        with_, without = [r[key] for r in runs[True]], [r[key] for r in runs[False]]
        ratio = statistics.mean(with_) / statistics.mean(without)
        print(f"{label:<26}{statistics.mean(with_):9.3f}  {spread(with_):<30}{statistics.mean(without):9.3f}  "
              f"{spread(without):<30}{ratio:13.3f}")
    print("(throughput ratio < 1 or seconds ratio > 1 is a cost; compare it with the spread of either side)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
