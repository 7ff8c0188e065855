"""What every Slurm backend offers, as plain data and a Protocol."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

TERMINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL",
    "DEADLINE", "REVOKED",
})


class SlurmError(RuntimeError):
    """A Slurm command failed in a way retrying does not fix."""


class SlurmUnreachable(SlurmError):
    """The controller cannot be contacted."""


@dataclass(frozen=True)
class Dependency:
    """`kind` is a Slurm dependency type (afterok, afterany, ...) on the already-submitted `job_ids`."""

    kind: str
    job_ids: tuple[str, ...]

    def render(self) -> str:
        return f"{self.kind}:" + ":".join(self.job_ids)


@dataclass(frozen=True)
class JobState:
    job_id: str
    name: str
    state: str  # Slurm's state name, or "UNKNOWN" once Slurm has forgotten the job
    reason: str
    exit_code: str = ""
    nodes: str = ""
    array_task: str = ""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class SlurmBackend(Protocol):
    def ping(self) -> None:
        """Raise SlurmUnreachable when the controller does not answer."""

    def submit(self, script: Path, dependencies: list[Dependency], extra_args: list[str] | None = None,
               test_only: bool = False) -> str:
        """Submit a batch script; return the job id."""

    def job_exists(self, job_id: str) -> bool:
        """Whether the controller knows this job id (Slurm treats unknown dependency ids as satisfied)."""

    def states(self, job_ids: list[str]) -> dict[str, list[JobState]]:
        """Current states of many jobs in one refresh; array jobs map to one entry per task."""

    def release(self, job_id: str) -> None:
        """Release a job submitted with --hold."""

    def cancel(self, job_ids: list[str]) -> None:
        """Cancel jobs (ignoring ones that already ended)."""
