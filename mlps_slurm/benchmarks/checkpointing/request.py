"""What a user asks of the checkpointing benchmark: every option, its default and its range, in one place.

The command-line options of `submit|render checkpointing`, the `submit all` settings and the manifest's request
are all derived from this dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlps_slurm.benchmarks.base import Request, option
from mlps_slurm.benchmarks.checkpointing import catalog as ckpt


@dataclass(frozen=True)
class CheckpointingRequest(Request):
    benchmark = "checkpointing"

    model: str = option(None, "--model", required=True, choices=tuple(ckpt.LLAMA3_MODELS),
                        help="Llama 3 checkpoint workload.")
    num_processes: int | None = option(None, "--num-processes", "-n", min=1,
                                       help="MPI ranks (default: the CLOSED count of the model: 8/64/512/1024).")
    scale: float = option(1.0, "--scale", min=0, max=1, min_open=True, suite="cli",
                          help="Shrink every shard by this factor for demos and tests; a scaled run is not "
                               "submittable.")
    num_checkpoints_write: int = option(ckpt.DEFAULT_NUM_CHECKPOINTS_WRITE, "--writes", min=1,
                                        help="Checkpoints written.")
    num_checkpoints_read: int = option(ckpt.DEFAULT_NUM_CHECKPOINTS_READ, "--reads", min=0,
                                       help="Checkpoints read back.")
    seconds_between_checkpoints: float = option(ckpt.DEFAULT_SECONDS_BETWEEN_CHECKPOINTS,
                                                "--seconds-between-checkpoints", min=0, suite="cli",
                                                help="Pause between two checkpoints (the rules' "
                                                     "time_between_checkpoints).")
    nodes: int | None = option(None, "--nodes", "-N", min=1,
                               help="Nodes (default: the ranks over the profile's nodes.accelerators_per_node, "
                                    "rounded up; at most nodes.count and one node per rank).")
    engine: str | None = option(None, "--engine", choices=("builtin", "dlio"),
                                help="builtin: mlps-slurm's MPI checkpoint engine; dlio: a DLIO build with llama3 "
                                     "checkpoint workloads (default: the profile's engines.checkpointing.engine).")
    keep_files: bool = option(False, "--keep-files", help="Keep the checkpoint files after the run.")
    skip_preflight: bool = option(False, "--skip-preflight",
                                  help="Run without validating the nodes first; the run is recorded as "
                                       "unvalidated (not submittable).")
    accelerator: str = option("b200", "--accelerator", choices=tuple(ckpt.ACCELERATOR_MEMORY_GB), suite="accelerator",
                              help="Simulated accelerator (its memory bounds the checkpoint size per rank; "
                                   "h100/a100 are what-if only).")
    verify_lockfile: str | None = option(None, "--verify-lockfile", existing_file=True,
                                         help="Lockfile (mlps-slurm lockfile generate) that every node's packages "
                                              "must match.")


REQUEST = CheckpointingRequest
