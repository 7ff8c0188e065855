"""How fast and how heavy the builtin KV-cache engine is: one rank of a CLOSED option's model and tiers, with a
chosen user count and duration, on a chosen cache directory.

Runs `python -m mlps_slurm.benchmarks.kvcache.job` (the entry point the Slurm jobs run) and prints, from its
results file: storage read and write GiB/s as the reference computes them (bytes counted up to the statistics,
drain included, over the window) and as mlps-slurm measures them (bytes whose I/O finished inside the window),
CPU seconds per GiB of storage I/O and per request, and peak RSS beside the bound it should stay under (the
option's CPU tier + 2 GiB). Prints only; asserts nothing.

    .venv/bin/python perf/kvcache_engine.py [--option 1] [--users 200] [--duration 20] [--dir DIR]
                                            [--storage-capacity-gb 16] [--seed 42]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlps_slurm.benchmarks.kvcache.catalog import GIB, OPTIONS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--option", type=int, choices=sorted(OPTIONS), default=1)
    parser.add_argument("--users", type=int, default=None, help="default: the option's")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--dir", default=None, help="cache directory (default: a temporary one under ~)")
    parser.add_argument("--storage-capacity-gb", type=float, default=16.0,
                        help="storage tier limit (default 16 GiB, so a run leaves room on a shared machine; 0: the "
                             "engine's default, 95 %% of the free space)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    option = OPTIONS[args.option]
    users = args.users or option.num_users
    scratch = Path(tempfile.mkdtemp(prefix="kvcache-perf-", dir=args.dir or Path.home()))
    try:
        cmd = [sys.executable, "-m", "mlps_slurm.benchmarks.kvcache.job", "--output-base", str(scratch / "out"),
               "--cache-base", str(scratch / "cache"), "--seed-base", str(args.seed), "--model", option.model,
               "--num-users", str(users), "--duration", str(args.duration), "--gpu-mem-gb", "0",
               "--cpu-mem-gb", str(option.cpu_mem_gb), "--max-concurrent-allocs", str(option.max_concurrent_allocs),
               "--generation-mode", option.generation_mode]
        if args.storage_capacity_gb:
            cmd += ["--storage-capacity-gb", str(args.storage_capacity_gb)]
        env = {k: v for k, v in os.environ.items() if k not in ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")}
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        files = sorted((scratch / "out" / "rank_0").glob("kvcache_results_*.json"))
        if not files:
            print(proc.stdout + proc.stderr)
            return proc.returncode or 1
        data = json.loads(files[0].read_text())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    cs, mine = data["summary"]["cache_stats"], data["mlps_slurm"]
    measured, io = mine["measured"], mine["files"]
    io_gib = (io["file_bytes_read"] + io["file_bytes_written"]) / GIB
    requests = data["requests_completed"]
    bound = option.cpu_mem_gb * GIB + 2 * GIB
    print(f"option {args.option} ({option.model}, cpu tier {option.cpu_mem_gb:g} GiB, max allocs "
          f"{option.max_concurrent_allocs}), {users} users, {args.duration:g} s window "
          f"(measured {mine['window_s']:.2f} s, process {wall:.1f} s), exit {proc.returncode}")
    print(f"  requests completed          {requests}  ({data['summary']['requests_per_second']:.1f}/s)")
    print(f"  storage read  GiB/s         reference {cs['tier_storage_read_bandwidth_gbps']:.3f}   "
          f"in-window {measured['read_bandwidth_gibps']:.3f}")
    print(f"  storage write GiB/s         reference {cs['tier_storage_write_bandwidth_gbps']:.3f}   "
          f"in-window {measured['write_bandwidth_gibps']:.3f}   (in-window includes "
          f"{measured['demotion_write_bytes_in_window'] / GIB / mine['window_s']:.3f} GiB/s of CPU-tier demotions, "
          f"which the reference counts nowhere)")
    print(f"  device P95 ms               read {cs.get('storage_read_device_p95_ms', 0):.1f}   "
          f"write {cs.get('storage_write_device_p95_ms', 0):.1f}")
    print(f"  storage I/O                 {io_gib:.2f} GiB in {io['files_read']} reads + {io['files_written']} "
          f"writes (run and drain); /proc/self/io read {measured['proc_io']['read_bytes'] / GIB:.2f} GiB, "
          f"write {measured['proc_io']['write_bytes'] / GIB:.2f} GiB")
    print(f"  CPU seconds                 {measured['cpu_seconds']:.1f} run + {mine['setup_cpu_seconds']:.1f} "
          f"start-up; {measured['cpu_seconds'] / io_gib if io_gib else 0:.3f} per GiB of storage I/O, "
          f"{measured['cpu_seconds'] / requests if requests else 0:.3f} per request")
    print(f"  peak RSS                    {measured['peak_rss_bytes'] / GIB:.2f} GiB (bound: CPU tier + 2 GiB = "
          f"{bound / GIB:.2f} GiB)")
    print(f"  busy workers at snapshot    {mine['busy_workers_at_snapshot']}; I/O errors {mine['io_errors']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
