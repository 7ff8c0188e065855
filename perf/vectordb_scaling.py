#!/usr/bin/env python3
"""vectordb on the local cluster with the embedded Milvus 2.3.5: query scaling with 1, 2 and 4 query processes,
index build time, and the tool's own overhead around the engine, printed beside the reference vdb-bench's figures
measured on this machine class at the same workload (issue 12: 100,000 x 128, HNSW M 64 / efConstruction 200 /
ef 200, top-10, 60 s runs).

    .venv/bin/python perf/vectordb_scaling.py [--duration 60] [--procs 1,2,4] [--flat-procs 1,2]

Each configuration is one real chain (preflight -> load -> 1 run -> finalize); the machine is noisy, so the figures
of one invocation are compared with each other, the reference's are quoted from its own measurement.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REFERENCE = {  # vdb-bench against the same server, as measured for issue 12
    ("HNSW", 1): "218-229 QPS, recall 0.946-0.949, p95 5.0 ms",
    ("HNSW", 2): "323-330 QPS",
    ("FLAT", 1): "80 QPS, recall 1.0",
    ("FLAT", 2): "117-122 QPS, recall 1.0",
}
REFERENCE_BUILD = "insert 2.8 s, HNSW build 119 s + a full rebuild of 121 s after compaction"


def job_start(job_id: str) -> dt.datetime | None:
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
    m = re.search(r"StartTime=(\S+)", out.splitlines()[0] if out else "")
    if not m or m.group(1) in ("Unknown", "None"):
        return None
    return dt.datetime.fromisoformat(m.group(1)).astimezone()


def chain(index: str, procs: int, duration: float, results: Path, data: Path) -> dict:
    argv = [sys.executable, "-m", "mlps_slurm", "submit", "vectordb", "--index", index, "--num-vectors", "100000",
            "--dimension", "128", "--max-degree", "64", "--ef-construction", "200", "--search-ef", "200",
            "--top-k", "10", "--duration", f"{duration:g}", "--runs", "1", "-N", "1", "-a", str(procs),
            "--results-dir", str(results), "-o", f"vectordb.milvus.data_dir={data}", "--wait", "--timeout", "3600"]
    proc = subprocess.run(argv, capture_output=True, text=True)
    run = sorted(p for p in results.iterdir() if p.name.startswith("vectordb-"))[-1]
    summary = json.loads((run / "results" / "results.json").read_text())
    if summary["status"] != "success":
        raise SystemExit(f"{index} x {procs}: {summary['reasons']}\n{proc.stdout}{proc.stderr}")
    manifest = json.loads((run / "manifest.json").read_text())
    raw = run / "raw" / "vector_database" / index
    s = json.loads((raw / "run" / "00" / "summary.json").read_text())
    datagen = json.loads((raw / "datagen" / "summary.json").read_text())
    ranks = [json.loads((raw / "run" / "00" / f"rank_{r}.json").read_text()) for r in range(procs)]
    run_start = job_start(f"{manifest['jobs']['run']['job_id']}_0")
    load_start = job_start(manifest["jobs"]["load"]["job_id"])
    first_query = dt.datetime.fromtimestamp(min(r["start"] for r in ranks)).astimezone()
    t = s.get("timeline") or {}
    steps = None
    if run_start and {"started_at", "ready_at", "load_start", "load_end", "first_query"} <= set(t):
        zero = run_start.timestamp()
        steps = {"to server start": t["started_at"] - zero, "server start": t["ready_at"] - t["started_at"],
                 "to index load": t["load_start"] - t["ready_at"], "index load": t["load_end"] - t["load_start"],
                 "to first query": t["first_query"] - t["load_end"]}
    return {"index": index, "procs": procs, "overhead_steps": steps, "qps": s["throughput_qps"], "recall": s["recall"],
            "p95": s["latency_ms"]["p95"], "p99": s["latency_ms"]["p99"], "mean": s["latency_ms"]["mean"],
            "insert_s": datagen["insert_s"], "flush_s": datagen["flush_s"], "build_s": datagen["index_build_s"],
            "load_s": s["load_s"],
            "run_overhead_s": (first_query - run_start).total_seconds() if run_start else None,
            "load_overhead_s": (dt.datetime.fromisoformat(datagen["start"]) - load_start).total_seconds()
            if load_start else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--procs", default="1,2,4")
    ap.add_argument("--flat-procs", default="1,2")
    args = ap.parse_args()
    results = Path(tempfile.mkdtemp(prefix="mlps-perf-vdb-", dir="/dev/shm"))
    data = Path(tempfile.mkdtemp(prefix="mlps-perf-vdb-data-"))
    rows = []
    try:
        configs = [("HNSW", int(p)) for p in args.procs.split(",") if p] + \
                  [("FLAT", int(p)) for p in args.flat_procs.split(",") if p]
        for index, procs in configs:
            row = chain(index, procs, args.duration, results, data)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(results, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
    print(f"\n100,000 x 128, top-10, {args.duration:g} s runs, embedded Milvus 2.3.5, 1 node")
    print(f"{'index':<6}{'procs':>6}{'QPS':>9}{'recall':>8}{'mean ms':>9}{'p95 ms':>8}{'p99 ms':>8}"
          f"{'build s':>9}{'load s':>8}{'job->1st query s':>18}   reference vdb-bench")
    for r in rows:
        print(f"{r['index']:<6}{r['procs']:>6}{r['qps']:>9.1f}{r['recall']:>8.4f}{r['mean']:>9.2f}{r['p95']:>8.2f}"
              f"{r['p99']:>8.2f}{r['build_s']:>9.1f}{r['load_s']:>8.1f}"
              f"{r['run_overhead_s'] if r['run_overhead_s'] is not None else float('nan'):>18.1f}   "
              f"{REFERENCE.get((r['index'], r['procs']), '-')}")
    for r in rows:
        if r.get("overhead_steps"):
            print(f"{r['index']} x {r['procs']}: job start -> first query: " +
                  ", ".join(f"{k} {v:.1f} s" for k, v in r["overhead_steps"].items()))
    base = next((r["qps"] for r in rows if r["index"] == "HNSW" and r["procs"] == 1), None)
    if base:
        print("HNSW scaling vs 1 process: " + ", ".join(f"{r['procs']}: {r['qps'] / base:.2f}x"
                                                      for r in rows if r["index"] == "HNSW"))
    hnsw = [r for r in rows if r["index"] == "HNSW"]
    if hnsw:
        builds = ", ".join(f"{r['build_s']:.0f}" for r in hnsw)
        print(f"load (HNSW): insert {hnsw[0]['insert_s']:.1f} s, flush {hnsw[0]['flush_s']:.1f} s, build "
              f"{builds} s; job start -> insert "
              f"{hnsw[0]['load_overhead_s']:.1f} s; reference: {REFERENCE_BUILD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
