"""What the preflight's one step and the local cluster's Open MPI settings save, side by side in one allocation.

The demo chain's overhead (perf/orchestration_overhead.py) moves by tens of percent with this machine's speed, so
the two changes that cut it are measured here against what they replaced, interleaved round by round inside one
`salloc` (same nodes, same moment):

  preflight, one step   srun --mpi=pmix -N4 -n4: node checks, then the MPI check in the same tasks (srun launchers)
  preflight, two steps  srun -N4 -n4 node checks; srun --mpi=pmix -n4 MPI check (what mpirun launchers still do)
  MPI start, site MCA   srun --mpi=pmix -n8 (2 per node) of `from mpi4py import MPI` + a barrier, start to exit,
                        with the local cluster's task prolog settings (ob1; self, vader, tcp; no UCX one-sided)
  MPI start, probing    the same with every component allowed again (Open MPI probes UCX, OFI, PSM, openib)

The node checks run on a real rendered run directory (the demo's: checkpointing llama3-8b, scale 0.002). Prints
medians with the spread and the ratios; exits 0 (non-zero only on an error).

    .venv/bin/python perf/preflight_steps.py [--rounds 5]

Needs the local cluster (bin/mlps-local-cluster up; SLURM_CONF set) with 4 free nodes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
# Empty values: the prolog leaves a variable the task already has alone, and Open MPI reads an empty selection as
# none made, so it considers every component again, as without the prolog.
PROBE_ALL = {"OMPI_MCA_pml": "", "OMPI_MCA_btl": "", "OMPI_MCA_osc": ""}
MPI_START = "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})})
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return seconds


def inside(run_dir: str, rounds: int) -> None:
    """Runs inside the allocation: every variant once per round, in turn."""
    node = [PYTHON, "-m", "mlps_slurm.steps.preflight", "node", "--run-dir", run_dir]
    mpi = [PYTHON, "-m", "mlps_slurm.steps.preflight", "mpi", "--run-dir", run_dir]
    variants = {
        "preflight, one step": lambda: timed(["srun", "--mpi=pmix", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1",
                                              "--kill-on-bad-exit=1", *node[:4], "--then-mpi", *node[4:]]),
        "preflight, two steps": lambda: timed(["srun", "--nodes=4", "--ntasks-per-node=1", *node])
        + timed(["srun", "--mpi=pmix", "--ntasks=4", "--ntasks-per-node=1", *mpi]),
        "MPI start, site MCA": lambda: timed(["srun", "--mpi=pmix", "--ntasks=8", PYTHON, "-c", MPI_START]),
        "MPI start, probing": lambda: timed(["srun", "--mpi=pmix", "--ntasks=8", PYTHON, "-c", MPI_START], PROBE_ALL),
    }
    for name in variants:  # one warm-up each: page cache, pyc
        variants[name]()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            seconds[name].append(run())
    print(f"{rounds} round(s) in one allocation (job {os.environ.get('SLURM_JOB_ID')}), {os.cpu_count()} CPU(s); "
          "seconds, median [min-max]")
    med = {name: statistics.median(values) for name, values in seconds.items()}
    for name, values in seconds.items():
        print(f"  {name:22s} {med[name]:6.2f}  [{min(values):.2f}-{max(values):.2f}]")
    print(f"one step / two steps:   {med['preflight, one step'] / med['preflight, two steps']:.2f} x "
          f"({med['preflight, two steps'] - med['preflight, one step']:.2f} s saved per preflight)")
    print(f"site MCA / probing:     {med['MPI start, site MCA'] / med['MPI start, probing']:.2f} x "
          f"({med['MPI start, probing'] - med['MPI start, site MCA']:.2f} s saved per MPI start; the demo has two)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--inside", metavar="RUN_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args.inside, args.rounds)
        return 0
    work = Path(tempfile.mkdtemp(prefix="mlps-preflight-steps-", dir="/dev/shm"))
    try:
        subprocess.run([str(ROOT / ".venv" / "bin" / "mlps-slurm"), "render", "checkpointing", "--model", "llama3-8b",
                        "--scale", "0.002", "--results-dir", str(work / "runs"), "-o",
                        f"storage.checkpoint_dir={work / 'ckpt'}"], check=True, capture_output=True, text=True)
        (run_dir,) = (work / "runs").iterdir()
        proc = subprocess.run(["salloc", "--nodes=4", "--ntasks-per-node=2", "--time=10", PYTHON, __file__,
                               "--rounds", str(args.rounds), "--inside", str(run_dir)], text=True)
        return proc.returncode
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
