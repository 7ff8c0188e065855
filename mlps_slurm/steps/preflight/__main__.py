"""python -m mlps_slurm.steps.preflight node [--then-mpi]|mpi|gather --run-dir DIR [--expected-nodes HOSTLIST]"""

from __future__ import annotations

import argparse
import sys
import traceback

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
    parser.add_argument("--then-mpi", action="store_true",
                        help="node: then the MPI check, in the same tasks (one step, so MPI starts once)")
    args = parser.parse_args(argv)
    run = RunDirectory(args.run_dir)
    if args.action == "node" and args.then_mpi:
        return node_then_mpi(run)
    if args.action == "node":
        return node_main(run)
    if args.action == "mpi":
        return mpi_main(run)
    return gather_main(run, hostlist.expand(args.expected_nodes))


def node_then_mpi(run: RunDirectory) -> int:
    """The node checks, then the MPI check. A failed node check is gather's to report, so the exit status is the
    MPI check's: non-zero tells the job script that MPI could not start (or a node check crashed), and it checks
    the nodes again in a step of their own, so that gather can tell a missing node from a broken MPI. A crash in
    the node checks still lets this task reach MPI_Init, where the other tasks wait for it."""
    crashed = False
    try:
        node_main(run)
    except Exception:
        traceback.print_exc()
        crashed = True
    return mpi_main(run) or int(crashed)


if __name__ == "__main__":
    sys.exit(main())
