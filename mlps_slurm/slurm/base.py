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
    """A Slurm command failed in a way retrying does not fix. `stderr`: what the command said, when it ran."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


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
    start: str = ""  # ISO time the job started ("" while it has not)
    elapsed: str = ""  # run time so far, as Slurm prints it ([D-]HH:MM:SS or M:SS)
    source: str = ""  # where the state came from: squeue, sacct or jobcomp
    submit: str = ""  # when Slurm received the job (its local time, as Slurm prints it)
    comment: str = ""  # the job's --comment (a chain's jobs: "mlps-slurm:<run id>:<key>[:<attempt>]")
    end: str = ""  # ISO time the job ended ("" while it runs; only jobs_on_nodes fills it)
    user: str = ""  # the job's owner (only jobs_on_nodes fills it)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def _task_order(s: JobState) -> tuple[int, str]:
    first = s.array_task.split("-")[0].split(",")[0].split("%")[0].strip("[]")
    return (int(first) if first.isdigit() else 1 << 30, s.array_task)


def combined_state(states: list[JobState]) -> JobState:
    """One state for a job that may be an array: the array is active while any task is, COMPLETED only when every
    task completed, else the state of the first task (in task order) that did not complete. The reason lists the
    tasks, so `status` shows where a 6-run array is."""
    if len(states) == 1:
        return states[0]
    ordered = sorted(states, key=_task_order)
    active = [s for s in ordered if not s.terminal]
    if active:
        lead = next((s for s in active if s.state == "RUNNING"), active[0])
    else:
        lead = next((s for s in ordered if s.state != "COMPLETED"), ordered[0])
    tasks = ", ".join(f"{s.array_task or '?'} {s.state}" for s in ordered)
    exit_code = next((s.exit_code for s in ordered if s.state not in ("COMPLETED", "PENDING", "RUNNING")),
                     lead.exit_code)
    starts = sorted(s.start for s in ordered if s.start)
    return JobState(job_id=lead.job_id, name=lead.name, state=lead.state, reason=f"tasks: {tasks}",
                    exit_code=exit_code, nodes=lead.nodes, array_task=lead.array_task,
                    start=starts[0] if starts else "", elapsed=lead.elapsed, source=lead.source)


class SlurmBackend(Protocol):
    def ping(self) -> None:
        """Raise SlurmUnreachable when the controller does not answer."""

    def submit(self, script: Path, dependencies: list[Dependency], extra_args: list[str] | None = None,
               test_only: bool = False, token: str | None = None) -> str:
        """Submit a batch script; return the job id. `token` (unique per job of a chain) makes a retried
        submission find a job the controller queued although its answer was lost, instead of queuing it twice."""

    def job_exists(self, job_id: str) -> bool:
        """Whether the controller knows this job id (Slurm treats unknown dependency ids as satisfied)."""

    def states(self, job_ids: list[str]) -> dict[str, list[JobState]]:
        """Current states of many jobs in one refresh; array jobs map to one entry per task."""

    def release(self, job_id: str) -> None:
        """Release a job submitted with --hold."""

    def cancel(self, job_ids: list[str]) -> None:
        """Cancel jobs (ignoring ones that already ended)."""

    def jobs_on_nodes(self, nodes: list[str], start: str, end: str) -> list[JobState]:
        """Every job that ran on any of `nodes` (hostlist expressions) between `start` and `end` (ISO times, the
        cluster's local time), with its start, end ("" while it runs), nodes and user: one batched query."""
