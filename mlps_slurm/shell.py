"""Words of a job's command line that the shell expands when the job runs. Imports nothing of mlps_slurm, so the
container runtimes (which must stay out of import cycles) and the plan share one type that the renderer knows."""

from __future__ import annotations


class ShellRef(str):
    """An argument whose value is a shell variable of the job (e.g. SLURM_JOB_NODELIST), rendered as "$NAME"."""
