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
    """The CLI backend; MLPS_SLURM_TIMEOUT_S bounds each Slurm command (default 60 s; a slow controller may need
    more, and the tests use less to reach the timeout path)."""
    import os

    try:
        timeout = float(os.environ.get("MLPS_SLURM_TIMEOUT_S") or 60)
    except ValueError:
        timeout = 60.0
    return CliSlurm(timeout=max(1.0, timeout))


__all__ = ["CliSlurm", "Dependency", "JobState", "SlurmBackend", "SlurmError", "SlurmUnreachable",
           "TERMINAL_STATES", "combined_state", "get_backend"]
