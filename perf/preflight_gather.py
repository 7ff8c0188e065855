"""How fast the preflight gather merges node reports: target under 1 s and under 200 MB for 10,000 nodes.

Builds one real node report on this machine (the same checks a preflight job runs: OS, CPU, memory, Python,
modules, a lockfile, executables, three storage directories with their probes, shared tokens), clones it for N
synthetic nodes with their own names, ring neighbours and clocks, writes them into a temporary run directory with
an mpi.json, then runs each measurement in a fresh interpreter (so that peak RSS is that measurement's own):

  read      scandir + read the bytes of every report (the floor: file system cost)
  parse     read + json.loads of every line (what decoding whole reports would cost)
  gather    gather(): parse, decide shared visibility and clock skew, build the summary
  gather+w  gather() + writing preflight.json and preflight.txt (what the preflight job does)

Files are warm in the page cache (just written), so this measures the code, not the disk.

    .venv/bin/python perf/preflight_gather.py [--nodes 10000] [--keep]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlps_slurm import lockfile  # noqa: E402
from mlps_slurm.rundir import RunDirectory, atomic_write_json  # noqa: E402
from mlps_slurm.steps.preflight.common import compact_nodes  # noqa: E402
from mlps_slurm.steps.preflight.node import run_node_checks  # noqa: E402
from mlps_slurm.steps.preflight.report import encode_report  # noqa: E402
from mlps_slurm.steps.preflight.tokens import token_targets  # noqa: E402

TIME_TARGET_S = 1.0
MEMORY_TARGET_MB = 200.0

MEASURE = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[3])
mode, run_dir = sys.argv[1], sys.argv[2]
from mlps_slurm import hostlist
from mlps_slurm.rundir import RunDirectory
from mlps_slurm.steps.preflight.gather import gather
from mlps_slurm.steps.preflight.report import write_outputs
run = RunDirectory(run_dir)
nodes_dir = run.preflight / "nodes"
expected = hostlist.expand(open(os.path.join(run_dir, "nodelist")).read().strip())
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t, cpu = time.perf_counter(), time.process_time()
if mode in ("read", "parse"):
    total = 0
    for entry in os.scandir(nodes_dir):
        with open(entry.path, "rb") as fh:
            data = fh.read()
        total += len(data)
        if mode == "parse":
            for line in data.splitlines():
                json.loads(line)
else:
    gathered = gather(run, expected, batch_host="c00001", job_id="4242")
    if mode == "gather+w":
        write_outputs(run, gathered)
    assert len(gathered["nodes"]) == len(expected), len(gathered["nodes"])
elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": elapsed, "cpu": cpu, "peak_mb": peak / 1024, "grew_mb": (peak - base) / 1024}))
"""


def template_report(workdir: Path) -> tuple[dict, dict]:
    """One real node report of this machine, with a realistic manifest section."""
    lock = workdir / "requirements.lock"
    lockfile.generate(lock)
    dirs = {name: workdir / name for name in ("data", "ckpt", "results")}
    spec = {"python": sys.executable, "python_modules": ["mlps_slurm", "json", "sqlite3"],
            "executables": ["sh", "ls", "cat"], "lockfile": str(lock),
            "storage": [{"id": "data_dir", "path": str(dirs["data"]), "required_free_bytes": 1 << 20},
                        {"id": "checkpoint_dir", "path": str(dirs["ckpt"]), "required_free_bytes": 1 << 20},
                        {"id": "results_dir", "path": str(dirs["results"]), "required_free_bytes": 1 << 20}],
            "expect_filesystem_type": None, "storage_shared": True, "separate_filesystems": [],
            "memory_gb_expected": 4.0, "cpus_expected": 2, "shared_token_timeout_s": 0.01}
    checks, facts, shared = run_node_checks({"preflight": spec}, node="c00001", job="4242", nodes=["c00001"])
    now = time.time()
    report = {"node": "c00001", "hostname": "c00001", "time": "2026-01-01T00:00:00+00:00",
              "clock": {"start": now - 0.3, "end": now}, "seconds": 0.3, "slurm_job_id": "4242",
              "shared": shared, "facts": facts, "checks": checks}
    return report, spec


def write_reports(run: RunDirectory, template: dict, n: int) -> list[str]:
    names = [f"c{i:05d}" for i in range(1, n + 1)]
    nodes_dir = run.preflight / "nodes"
    nodes_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(template, separators=(",", ":"))
    for i, name in enumerate(names):
        report = json.loads(text)
        report["node"] = report["hostname"] = report["facts"]["hostname"] = name
        report["shared"]["targets"] = token_targets(names, i)
        (nodes_dir / f"{name}.json").write_bytes(encode_report(report))
    offsets = {name: {"offset_s": 1e-5, "rtt_s": 4e-5} for name in names}
    atomic_write_json(run.preflight / "mpi.json", {
        "ok": True, "size": n, "allreduce_sum": n, "nodes": names, "library": "synthetic",
        "slurm_job_id": "4242", "clock": {"reference_node": names[0], "time": time.time(), "offsets": offsets}})
    return names


def measure(mode: str, run_dir: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", MEASURE, mode, str(run_dir), str(ROOT)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"measuring {mode} failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement; the best time is shown")
    parser.add_argument("--keep", action="store_true", help="keep the temporary run directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mlps-gather-bench-"))
    try:
        template, spec = template_report(workdir)
        run = RunDirectory(workdir / "run")
        run.path.mkdir()
        atomic_write_json(run.manifest_path, {"preflight": spec})
        names = write_reports(run, template, args.nodes)
        (run.path / "nodelist").write_text(compact_nodes(names) + "\n")
        sizes = [e.stat().st_size for e in os.scandir(run.preflight / "nodes")]
        flagged = sum(c["status"] != "pass" for c in template["checks"])
        print(f"{args.nodes} node reports, {len(template['checks'])} checks each ({flagged} not passing on every "
              f"node, as on this machine), {sum(sizes) / len(sizes) / 1024:.1f} KiB average, "
              f"{sum(sizes) / 2**20:.1f} MiB in total")
        results = {}
        for mode in ("read", "parse", "gather", "gather+w"):
            runs = [measure(mode, run.path) for _ in range(args.repeat)]
            results[mode] = min(runs, key=lambda r: r["seconds"])
        floor = results["read"]["seconds"]
        print(f"{'step':<10} {'seconds':>8} {'CPU s':>7} {'x read':>7} {'peak RSS MB':>12} {'grew MB':>8}")
        for mode, r in results.items():
            print(f"{mode:<10} {r['seconds']:8.3f} {r['cpu']:7.3f} {r['seconds'] / floor:7.1f} {r['peak_mb']:12.1f} "
                  f"{r['grew_mb']:8.1f}")
        out = run.preflight / "preflight.json"
        print(f"preflight.json: {out.stat().st_size / 2**20:.1f} MiB")
        worst = results["gather+w"]
        ok = worst["seconds"] < TIME_TARGET_S and worst["peak_mb"] < MEMORY_TARGET_MB
        print(f"target: gather+write under {TIME_TARGET_S:g} s and {MEMORY_TARGET_MB:g} MB peak RSS: "
              f"{'met' if ok else 'MISSED'}")
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
