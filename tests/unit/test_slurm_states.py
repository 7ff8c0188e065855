"""combined_state: one line of `status` for an array job (the 6 training runs) from its per-task records."""

from __future__ import annotations

from mlps_slurm.slurm import JobState, combined_state


def task(t: str, state: str, exit_code: str = "0:0") -> JobState:
    return JobState(job_id=f"10_{t}" if t.isdigit() else "10", name="mlps-run", state=state, reason="None",
                    exit_code=exit_code, array_task=t)


def test_a_plain_job_is_its_own_state():
    one = JobState(job_id="7", name="x", state="RUNNING", reason="None")
    assert combined_state([one]) is one


def test_an_array_is_running_while_any_task_runs_and_lists_every_task():
    s = combined_state([task("[3-5%1]", "PENDING"), task("2", "RUNNING"), task("0", "COMPLETED"),
                        task("1", "COMPLETED")])
    assert s.state == "RUNNING"
    assert s.reason == "tasks: 0 COMPLETED, 1 COMPLETED, 2 RUNNING, [3-5%1] PENDING"


def test_an_array_completes_only_when_every_task_did():
    assert combined_state([task(str(i), "COMPLETED") for i in range(6)]).state == "COMPLETED"


def test_the_first_task_that_did_not_complete_decides_and_brings_its_exit_code():
    s = combined_state([task("2", "CANCELLED", "0:15"), task("1", "FAILED", "1:0"), task("0", "COMPLETED")])
    assert (s.state, s.exit_code) == ("FAILED", "1:0")
