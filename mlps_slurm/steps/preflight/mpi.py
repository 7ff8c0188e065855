"""The MPI step: a collective over every task, and each node's clock offset (see the package docstring)."""

from __future__ import annotations

import os
import time
from typing import Any

from mlps_slurm.rundir import RunDirectory, atomic_write_bytes
from mlps_slurm.steps.preflight.common import node_name
from mlps_slurm.steps.preflight.report import dumps


def measure_clock_offsets(comm: Any, rounds: int = 4) -> dict[str, dict[str, float]] | None:
    """Rank 0 ping-pongs every other rank: offset = their clock - midpoint of our send and receive times, from
    the round with the shortest round trip; uncertainty = half that round trip. Per node (best rank). Rank 0
    gets the table, other ranks None."""
    rank, size = comm.Get_rank(), comm.Get_size()
    me = node_name()
    if rank != 0:
        for _ in range(rounds):
            comm.recv(source=0, tag=71)
            comm.send((time.time(), me), dest=0, tag=72)
        return None
    best: dict[str, dict[str, float]] = {me: {"offset_s": 0.0, "rtt_s": 0.0}}
    for peer in range(1, size):
        for _ in range(rounds):
            t0 = time.time()
            comm.send(None, dest=peer, tag=71)
            their, node = comm.recv(source=peer, tag=72)
            t1 = time.time()
            rtt = t1 - t0
            if node not in best or rtt < best[node]["rtt_s"]:
                best[node] = {"offset_s": their - (t0 + t1) / 2, "rtt_s": rtt}
    return best


def mpi_main(run: RunDirectory) -> int:
    """A real collective over every task, started by the benchmark's own launcher."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    total = comm.allreduce(1)
    nodes = comm.gather(node_name(), root=0)
    offsets = measure_clock_offsets(comm)
    if comm.Get_rank() == 0:
        atomic_write_bytes(run.preflight / "mpi.json", dumps({
            "ok": total == comm.Get_size(), "size": comm.Get_size(), "allreduce_sum": total, "nodes": nodes,
            "library": MPI.Get_library_version().rstrip("\x00").splitlines()[0],
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "clock": {"reference_node": node_name(), "time": time.time(), "offsets": offsets}}) + b"\n")
    return 0
