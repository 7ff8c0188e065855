"""Slurm calls per `mlps-slurm status RUN` refresh for a run whose manifest holds 1, 100 and 1,000 jobs, and the time
per refresh. Target (issue 16 item 10): constant, at most 2 (one squeue restricted to the chain's ids, one
accounting query for the jobs squeue has forgotten or that ended: sacct, or with jobcomp/filetxt a read of its file,
which needs the config once: `scontrol show config`).

Real jobs: it submits held jobs (`sbatch --hold --wrap true`; 1,000 sbatch calls take 10-30 s) and one job that runs
and completes (so every refresh also takes the accounting path), renders a real run (`mlps-slurm render
checkpointing`) and replaces its plan's jobs and its job records with them. Calls are counted by wrappers first on
PATH (sbatch, squeue, scontrol, sacct, scancel, sinfo, srun log their arguments and exec the real command):
  status --json   one `mlps-slurm status RUN --json` process: one refresh, the configuration read included
  --watch         a refresh in a long-lived process (chain.chain_status with one backend, as `status --watch` and
                  `submit --wait` do), after the first
Every job it submitted is cancelled at the end, whatever happens. Prints only; exits 0 when a target is missed,
non-zero only on an error.

    .venv/bin/python perf/status_calls.py [--jobs 1,100,1000] [--repeat 3] [--keep]

Needs the local cluster (bin/mlps-local-cluster up; SLURM_CONF set).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from submit_cost import MLPS, Counted, shown  # noqa: E402

TARGET_CALLS = 2
REFRESH_IN_PROCESS = r"""
import json, sys, time
sys.path.insert(0, sys.argv[2])
from mlps_slurm.chain import chain_status
from mlps_slurm.rundir import RunDirectory
from mlps_slurm.slurm import get_backend
run, backend, log = RunDirectory(sys.argv[1]), get_backend(), sys.argv[3]
chain_status(run, backend)  # the first refresh reads the configuration
rows = []
for _ in range(int(sys.argv[4])):
    open(log, "w").close()
    t = time.perf_counter()
    status = chain_status(run, backend)
    rows.append({"seconds": time.perf_counter() - t, "calls": open(log).read().splitlines(),
                 "jobs": len(status.jobs), "known": sum(1 for _, _, s in status.jobs if s is not None)})
print(json.dumps(rows))
"""


def sbatch(args: list[str]) -> str:
    proc = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]


def submit_held(n: int, submitted: list[str]) -> list[str]:
    """n held jobs, 4 sbatch at a time; every id is appended to `submitted` as soon as it exists."""
    argv = ["--hold", "--wrap", "true", "-o", "/dev/null", "-J", "mlps-perf-held", "-t", "1"]

    def one(_: int) -> str:
        jid = sbatch(argv)
        submitted.append(jid)
        return jid

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(n)))


def completed_job(submitted: list[str]) -> str:
    jid = sbatch(["--wrap", "true", "-o", "/dev/null", "-J", "mlps-perf-done", "-t", "1"])
    submitted.append(jid)
    deadline = time.time() + 120
    while time.time() < deadline:
        out = subprocess.run(["squeue", "-h", "--states=all", "-j", jid, "-o", "%T"], capture_output=True,
                             text=True).stdout.strip()
        if out in ("COMPLETED", "FAILED", "CANCELLED") or (not out and time.time() > deadline - 110):
            return jid
        time.sleep(0.5)
    raise RuntimeError(f"job {jid} (sbatch --wrap true) did not complete within 120 s")


def manifest_with(run_dir: Path, ids: list[str]) -> None:
    """The rendered run's manifest, its plan's jobs and job records replaced by `ids` (one job each)."""
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    template = manifest["plan"]["jobs"][-1]
    plan_jobs, records = [], {}
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    for i, jid in enumerate(ids):
        key = f"job{i:04d}"
        plan_jobs.append({**template, "key": key})
        records[key] = {"job_id": jid, "script": template["script"], "submitted": now}
    manifest["plan"]["jobs"], manifest["jobs"], manifest["state"] = plan_jobs, records, "submitted"
    path.write_text(json.dumps(manifest, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="1,100,1000", help="manifest sizes (default 1,100,1000)")
    parser.add_argument("--repeat", type=int, default=3, help="refreshes timed per size (default 3): the median")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (the jobs are cancelled)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.jobs.split(",")]
    if not MLPS.exists():
        print(f"{MLPS} is missing: run `make setup` first", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mlps-status-calls-", dir="/dev/shm"))
    submitted: list[str] = []
    rows = []
    try:
        counted = Counted(work)
        t0 = time.perf_counter()
        done = completed_job(submitted)
        held = submit_held(max(sizes) - 1, submitted)
        print(f"submitted {len(held)} held jobs and 1 completed one in {time.perf_counter() - t0:.1f} s; "
              f"{os.cpu_count()} CPU(s)", flush=True)
        subprocess.run([str(MLPS), "render", "checkpointing", "--model", "llama3-8b", "--results-dir",
                        str(work / "runs")], capture_output=True, text=True, check=True, cwd=ROOT)
        (run_dir,) = [p for p in (work / "runs").iterdir() if p.is_dir()]
        for n in sizes:
            manifest_with(run_dir, [done, *held[:n - 1]])
            cli = [counted.run(["status", str(run_dir), "--json"], ok=(0, 1, 5)) for _ in range(args.repeat)]
            record = json.loads(cli[-1][2][cli[-1][2].index("{"):cli[-1][2].rindex("}") + 1])
            if len(record["jobs"]) != n or any(j["state"] == "NOT SUBMITTED" for j in record["jobs"]):
                raise RuntimeError(f"status of {n} jobs showed {len(record['jobs'])} rows, some not known to Slurm")
            proc = subprocess.run([sys.executable, "-c", REFRESH_IN_PROCESS, str(run_dir), str(ROOT),
                                   str(counted.log), str(args.repeat)], capture_output=True, text=True,
                                  env=counted.env, cwd=ROOT, timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"refreshing in one process failed:\n{proc.stderr[-2000:]}")
            watch = json.loads(proc.stdout)
            rows.append((n, cli, watch))
            cli_calls = max(sum(c[1].values()) for c in cli)
            watch_calls = max(len(w["calls"]) for w in watch)
            print(f"{n:>6} jobs: status --json {statistics.median(c[0] for c in cli):6.2f} s, {shown(cli[-1][1])}"
                  f" | --watch refresh {statistics.median(w['seconds'] for w in watch) * 1000:7.1f} ms, "
                  f"{shown(Counter(c.split(' ', 1)[0] for c in watch[-1]['calls']))} "
                  f"(max {cli_calls} and {watch_calls})", flush=True)
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        for i in range(0, len(submitted), 200):
            subprocess.run(["scancel", *submitted[i:i + 200]], capture_output=True, text=True, timeout=120)
        print(f"cancelled the {len(submitted)} job(s) it submitted")
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    calls = {n: max(max(sum(c[1].values()) for c in cli), max(len(w["calls"]) for w in watch))
             for n, cli, watch in rows}
    constant = len({max(sum(c[1].values()) for c in cli) for _, cli, _ in rows}) == 1
    print(f"\n{'figure':<44}" + "".join(f"{f'{n:,} jobs':>12}" for n in calls) + "   target")
    print(f"{'Slurm calls per status --json (a process)':<44}"
          + "".join(f"{max(sum(c[1].values()) for c in cli):>12}" for _, cli, _ in rows)
          + f"   constant, <= {TARGET_CALLS}: "
          + ("PASS" if constant and max(calls.values()) <= TARGET_CALLS else "MISS"))
    print(f"{'Slurm calls per --watch refresh':<44}" + "".join(f"{max(len(w['calls']) for w in watch):>12}"
                                                          for _, _, watch in rows))
    print(f"{'status --json seconds (median)':<44}"
          + "".join(f"{statistics.median(c[0] for c in cli):>12.2f}" for _, cli, _ in rows))
    print(f"{'--watch refresh ms (median)':<44}"
          + "".join(f"{statistics.median(w['seconds'] for w in watch) * 1000:>12.1f}" for _, _, watch in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
