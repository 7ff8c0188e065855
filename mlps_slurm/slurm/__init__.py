"""The one seam to Slurm. `get_backend()` returns the CLI backend (sbatch/squeue/scontrol/scancel)."""

from mlps_slurm.slurm.base import (
    Dependency,
    JobState,
    SlurmBackend,
    SlurmError,
    SlurmUnreachable,
    TERMINAL_STATES,
    combined_state,
)
from mlps_slurm.slurm.cli_backend import CliSlurm


def get_backend() -> SlurmBackend:
    return CliSlurm()


__all__ = ["CliSlurm", "Dependency", "JobState", "SlurmBackend", "SlurmError", "SlurmUnreachable",
           "TERMINAL_STATES", "combined_state", "get_backend"]
