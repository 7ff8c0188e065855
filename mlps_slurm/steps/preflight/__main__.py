"""python -m mlps_slurm.steps.preflight node|mpi|gather --run-dir DIR [--expected-nodes HOSTLIST]"""

from __future__ import annotations

import argparse
import sys

from mlps_slurm import hostlist
from mlps_slurm.rundir import RunDirectory
from mlps_slurm.steps.preflight.gather import gather_main
from mlps_slurm.steps.preflight.mpi import mpi_main
from mlps_slurm.steps.preflight.node import node_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlps_slurm.steps.preflight")
    parser.add_argument("action", choices=("node", "mpi", "gather"))
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--expected-nodes", default="", help="Slurm hostlist of the allocation (gather)")
    args = parser.parse_args(argv)
    run = RunDirectory(args.run_dir)
    if args.action == "node":
        return node_main(run)
    if args.action == "mpi":
        return mpi_main(run)
    return gather_main(run, hostlist.expand(args.expected_nodes))


if __name__ == "__main__":
    sys.exit(main())
