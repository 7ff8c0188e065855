"""What submitting costs on the login node: `render` and `submit --test-only` of checkpointing, training and `all`
(median seconds of a few runs each), the Slurm calls each makes (and a real `submit`, cancelled at once), and
whether a 10,000-node profile renders without a script line that grows with the node count.

Slurm calls are counted by a wrapper directory put first on PATH: sbatch, squeue, scontrol, sacct, scancel, sinfo
and srun there log their arguments and exec the real command. Targets (issue 16 item 10): a 10,000-node profile
renders, and the longest command or #SBATCH line of its scripts is the same length for 4, 100, 1,000 and 10,000
nodes once every word holding a digit is written as one character (a count may gain digits, a run id or digest
differs per run; a node list would add thousands);
`submit --test-only` of 10,000 nodes is refused by this 4-node cluster, as expected (shown, not judged). The times
and call counts are printed for reference (no target: the chain's own cost is perf/orchestration_overhead.py).
Prints only; exits 0 when a target is missed, non-zero only on an error.

    .venv/bin/python perf/submit_cost.py [--repeat 3] [--no-submit] [--keep]

Needs the local cluster (bin/mlps-local-cluster up; SLURM_CONF set) for --test-only and the real submits.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MLPS = ROOT / ".venv" / "bin" / "mlps-slurm"
WRAPPED = ("sbatch", "squeue", "scontrol", "sacct", "scancel", "sinfo", "srun")
NODE_COUNTS = (4, 100, 1000, 10_000)
# A word holding a digit: a count, and also what is random or hashed per run (the run id's hex part, a workload's
# digest), whose length does not follow the node count but varies with its letters.
NUMBERISH = re.compile(r"[0-9A-Za-z]*[0-9][0-9A-Za-z]*")
WRAPPER = """#!/bin/sh
printf '%s\\n' "{name} $*" >> "$MLPS_PERF_CALL_LOG"
exec {real} "$@"
"""


def kinds(nodes: int | None = None) -> dict[str, list[str]]:
    """The command lines of each kind, for the profile's node count or `nodes` (with nodes.count set to it)."""
    if nodes is None:
        return {"checkpointing": ["checkpointing", "--model", "llama3-8b"],
                "training": ["training", "--model", "unet3d", "--accelerator", "h100"],
                "all": ["all"]}
    n = ["-o", f"nodes.count={nodes}"]
    # llama3-8b's 8 ranks cannot cover more than 8 nodes: 2 ranks a node, as the demo has. `all` chains the
    # workloads whose rank count follows the nodes (the suite's checkpointing model is llama3-8b, 8 ranks).
    return {"checkpointing": ["checkpointing", "--model", "llama3-8b", "-N", str(nodes), "-n", str(2 * nodes), *n],
            "training": ["training", "--model", "unet3d", "--accelerator", "h100", "-N", str(nodes), *n],
            "all": ["all", "--benchmarks", "training,kvcache,vectordb", "--nodes", str(nodes), *n]}


class Counted:
    """Runs mlps-slurm with the counting wrappers first on PATH."""

    def __init__(self, work: Path) -> None:
        self.bin = work / "bin"
        self.bin.mkdir()
        self.log = work / "calls.log"
        for name in WRAPPED:
            real = shutil.which(name)
            if real is None:
                raise RuntimeError(f"{name} is not on PATH: start the local cluster (bin/mlps-local-cluster up)")
            path = self.bin / name
            path.write_text(WRAPPER.format(name=name, real=real))
            path.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{self.bin}:{os.environ.get('PATH', '')}",
                    "MLPS_PERF_CALL_LOG": str(self.log)}

    def run(self, argv: list[str], ok: tuple[int, ...] = (0,)) -> tuple[float, Counter, str]:
        self.log.write_text("")
        t0 = time.perf_counter()
        proc = subprocess.run([str(MLPS), *argv], capture_output=True, text=True, env=self.env, cwd=ROOT,
                              timeout=600)
        seconds = time.perf_counter() - t0
        if proc.returncode not in ok:
            raise RuntimeError(f"`mlps-slurm {' '.join(argv)}` exited {proc.returncode}:\n{proc.stdout[-2000:]}"
                               f"{proc.stderr[-2000:]}")
        calls = Counter(line.split(" ", 1)[0] for line in self.log.read_text().splitlines() if line)
        return seconds, calls, proc.stdout + proc.stderr


def shown(calls: Counter) -> str:
    return ", ".join(f"{n} {name}" for name, n in sorted(calls.items())) or "none"


def longest_lines(run_dir: Path) -> tuple[int, str, int, int]:
    """(the longest line of every rendered script, that line's start, the longest sbatch argument in the plan, the
    longest line with every number written as one character)."""
    best, where, digitless = 0, "", 0
    for script in sorted(run_dir.rglob("*.sbatch")):
        for line in script.read_text().splitlines():
            digitless = max(digitless, len(NUMBERISH.sub("#", line)))
            if len(line) > best:
                best, where = len(line), f"{script.name}: {line[:60]}"
    manifests = [json.loads(p.read_text()) for p in run_dir.rglob("manifest.json")]
    args = [len(a) for m in manifests for j in m.get("plan", {}).get("jobs", []) for a in j.get("sbatch_args", [])]
    return best, where, max(args, default=0), digitless


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timed command (default 3): the median")
    parser.add_argument("--no-submit", action="store_true", help="skip the real submits (cancelled at once)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    if not MLPS.exists():
        print(f"{MLPS} is missing: run `make setup` first", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mlps-submit-cost-", dir="/dev/shm"))
    ok = True
    try:
        counted = Counted(work)
        results = work / "runs"
        common = ["--results-dir", str(results)]
        print(f"{os.cpu_count()} CPU(s); median of {args.repeat} run(s) each; Slurm calls counted by wrappers on PATH")
        print(f"{'':16}{'render s':>9}  {'calls':<10}{'--test-only s':>14}  {'calls':<40}{'submit s':>9}  calls")
        for kind, argv in kinds().items():
            rend = [counted.run(["render", *argv, *common]) for _ in range(args.repeat)]
            test = [counted.run(["submit", *argv, "--test-only", *common]) for _ in range(args.repeat)]
            sub = ""
            if not args.no_submit:
                seconds, calls, out = counted.run(["submit", *argv, "--json", *common])
                run_dir = json.loads(out[out.index("{"):out.rindex("}") + 1])["run_dir"]
                subprocess.run([str(MLPS), "cancel", run_dir], capture_output=True, text=True, cwd=ROOT,
                               timeout=120, check=True)
                sub = f"{seconds:9.2f}  {shown(calls)}"
            print(f"{kind:<16}{statistics.median(r[0] for r in rend):9.2f}  {shown(rend[-1][1]):<10}"
                  f"{statistics.median(r[0] for r in test):14.2f}  {shown(test[-1][1]):<40}{sub}", flush=True)

        print("\nnode count: the longest line of the rendered scripts (characters) and render seconds")
        table: dict[str, list[tuple[int, str, int, int, float]]] = {}
        for nodes in NODE_COUNTS:
            for kind, argv in kinds(nodes).items():
                out_dir = work / f"n{nodes}-{kind}"
                seconds, _, text = counted.run(["render", *argv, "--results-dir", str(out_dir)])
                (run_dir,) = [p for p in out_dir.iterdir() if p.is_dir()]
                table.setdefault(kind, []).append((*longest_lines(run_dir), seconds))
                shutil.rmtree(out_dir)
        print(f"{'':18}" + "".join(f"{f'{n:,} nodes':>16}" for n in NODE_COUNTS) + "   target")
        for kind, rows in table.items():
            good = len({r[3] for r in rows}) == 1
            ok &= good
            print(f"{kind + ' line':<18}" + "".join(f"{r[0]:>16}" for r in rows)
                  + f"   (+{rows[-1][0] - rows[0][0]}: the digits of counts)")
            print(f"{'  numbers as #':<18}" + "".join(f"{r[3]:>16}" for r in rows)
                  + f"   constant: {'PASS' if good else 'MISS'}")
            print(f"{'  sbatch arg':<18}" + "".join(f"{r[2]:>16}" for r in rows))
            print(f"{'  render s':<18}" + "".join(f"{r[4]:>16.2f}" for r in rows))
        for kind, rows in table.items():
            print(f"  longest {kind} line at {NODE_COUNTS[-1]:,} nodes: {rows[-1][1]}")

        nodes = NODE_COUNTS[-1]
        seconds, calls, text = counted.run(["submit", *kinds(nodes)["checkpointing"], "--test-only", *common],
                                           ok=(0, 1, 2))
        refused = [line for line in text.splitlines() if "REFUSED" in line]
        print(f"\nsubmit --test-only of checkpointing on {nodes:,} nodes ({seconds:.2f} s, {shown(calls)}): "
              f"{'refused by this 4-node cluster, as expected' if refused else 'NOT refused (unexpected here)'}")
        for line in refused:
            print(f"  {line[:200]}")
        queued = [p for p in results.glob("*") if p.is_dir()] if results.exists() else []
        print(f"\n{'figure':<50} {'target':<24} verdict")
        print(f"{'10,000-node render, longest script line':<50} {'constant in node count':<24} "
              f"{'PASS' if ok else 'MISS'}")
        print(f"{'10,000-node --test-only on a 4-node cluster':<50} {'refused (expected)':<24} "
              f"{'as expected' if refused else 'UNEXPECTED'}")
        if queued and args.no_submit:
            print(f"warning: run directories left by --test-only: {queued}")
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
