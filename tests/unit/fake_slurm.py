"""FakeSlurmBackend: an in-memory stand-in for fast unit tests of chain logic. Integration tests use real Slurm."""

from __future__ import annotations

from pathlib import Path

from mlps_slurm.slurm import Dependency, JobState, SlurmError


class FakeSlurmBackend:
    def __init__(self, fail_on_submit: int | None = None, forget: set[str] | None = None) -> None:
        self.submitted: list[tuple[Path, list[Dependency]]] = []
        self.cancelled: list[str] = []
        self.released: list[str] = []
        self.extra_args: list[list[str]] = []
        self.fail_on_submit = fail_on_submit  # 0-based index of the sbatch call that fails
        self.forget = forget or set()  # job ids the "controller" claims not to know
        self._next = 100
        self.given: dict[str, list[JobState]] = {}  # states a test sets; every other job is PENDING
        self.state_calls = 0
        self.on_nodes: list[JobState] = []  # what jobs_on_nodes answers (the test filters nothing for it)
        self.on_nodes_calls: list[tuple[list[str], str, str]] = []

    def ping(self) -> None:
        pass

    def submit(self, script: Path, dependencies: list[Dependency], extra_args: list[str] | None = None,
               test_only: bool = False, token: str | None = None) -> str:
        if self.fail_on_submit is not None and len(self.submitted) == self.fail_on_submit:
            raise SlurmError("sbatch: error: Batch job submission failed: Invalid partition name specified")
        self.submitted.append((script, dependencies))
        self.extra_args.append(list(extra_args or []))
        self._next += 1
        return str(self._next)

    def job_exists(self, job_id: str) -> bool:
        return job_id not in self.forget and int(job_id) <= self._next

    def states(self, job_ids: list[str]) -> dict[str, list[JobState]]:
        self.state_calls += 1
        return {j: self.given.get(j) or [JobState(j, "fake", "PENDING", "Dependency")] for j in job_ids}

    def release(self, job_id: str) -> None:
        self.released.append(job_id)

    def cancel(self, job_ids: list[str]) -> None:
        self.cancelled += job_ids

    def jobs_on_nodes(self, nodes: list[str], start: str, end: str) -> list[JobState]:
        self.on_nodes_calls.append((list(nodes), start, end))
        return list(self.on_nodes)
