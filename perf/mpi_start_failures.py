"""How often an MPI start fails on this cluster: N back-to-back 8-rank starts in one allocation, per variant.

With Slurm 22.05's default PMIx fences, Open MPI 4.1.4 (Debian 12) lost a rank to SIGSEGV at address 0 inside
MPI_Init in about 2 % of the starts on the local cluster's emulated nodes; with `PMIxCollFence=ring` (what
bin/mlps-local-cluster now writes into mpi.conf) in none of 800 (docs/performance.md, "Open MPI on the emulated
nodes"). This script is how those rates were measured, and how a candidate change is judged: the variants run
interleaved, one start each per round, in one `salloc` (same nodes, same moment), each start being

    srun --mpi=pmix --ntasks=8 --kill-on-bad-exit=1 python -c "from mpi4py import MPI; <allgather>; <barrier>"

A variant is a set of environment settings (KEY=VALUE,KEY=VALUE) given with --variant NAME=SETTINGS; the baseline
(the task prolog's settings alone) always runs. Prints starts, failures and the rate per variant, the first lines of
the first failure of each, and exits 0 (non-zero only on an error of its own).

    .venv/bin/python perf/mpi_start_failures.py [--rounds 200] [--variant single=MPI4PY_RC_THREAD_LEVEL=single]

Needs the local cluster (bin/mlps-local-cluster up; SLURM_CONF set) with 4 free nodes; about 0.8 s per start.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
MPI_START = "from mpi4py import MPI; c = MPI.COMM_WORLD; c.allgather(c.rank); c.Barrier()"
SHOWN_LINES = 6


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, sep, settings = text.partition("=")
    env = dict(item.split("=", 1) for item in settings.split(",") if "=" in item)
    if not sep or not name or not env:
        raise ValueError(f"{text!r}: expected NAME=KEY=VALUE[,KEY=VALUE...]")
    return name, env


def inside(rounds: int, variants: dict[str, dict[str, str]]) -> None:
    """Runs inside the allocation: one start per variant per round."""
    argv = ["srun", "--mpi=pmix", "--ntasks=8", "--kill-on-bad-exit=1", PYTHON, "-c", MPI_START]
    failures: dict[str, int] = {name: 0 for name in variants}
    first: dict[str, str] = {}
    for _ in range(rounds):
        for name, env in variants.items():
            proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env})
            if proc.returncode != 0:
                failures[name] += 1
                first.setdefault(name, "\n".join((proc.stdout + proc.stderr).splitlines()[:SHOWN_LINES]))
    print(f"{rounds} start(s) per variant in one allocation (job {os.environ.get('SLURM_JOB_ID')}), 8 ranks on 4 "
          f"nodes, {os.cpu_count()} CPU(s)")
    for name, env in variants.items():
        settings = ",".join(f"{k}={v}" for k, v in env.items()) or "(the task prolog's settings)"
        print(f"  {name:12s} {failures[name]:4d} failed of {rounds}  ({100 * failures[name] / rounds:.1f} %)  "
              f"{settings}")
    for name, text in first.items():
        print(f"\nfirst failure, {name}:\n" + "\n".join(f"  | {line}" for line in text.splitlines()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="starts per variant (default 200)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=K=V[,K=V]")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        variants = {"baseline": {}, **dict(parse_variant(text) for text in args.variant)}
    except ValueError as exc:
        parser.error(f"argument --variant: {exc}")
    if args.inside:
        inside(args.rounds, variants)
        return 0
    forwarded = [arg for text in args.variant for arg in ("--variant", text)]
    minutes = max(10, int(args.rounds * len(variants) * 2 / 60) + 5)
    try:
        proc = subprocess.run(["salloc", "--quiet", "--nodes=4", "--ntasks-per-node=2", f"--time={minutes}", PYTHON,
                               __file__, "--inside", "--rounds", str(args.rounds), *forwarded], text=True)
    except OSError as exc:
        print(f"error: salloc: {exc}", file=sys.stderr)
        return 1
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
