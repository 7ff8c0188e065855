"""Other jobs on a run's nodes while its benchmark jobs ran: what the finalize records and prints (FakeSlurmBackend
answers the one query; the parsing of squeue, sacct and jobcomp/filetxt output is tested on captured lines)."""

from __future__ import annotations

import datetime as dt

import pytest

from mlps_slurm.slurm import JobState
from mlps_slurm.slurm.cli_backend import _jobcomp_window, _window_row
from mlps_slurm.steps.contention import elapsed_seconds, shared_lines, shared_nodes
from tests.unit.fake_slurm import FakeSlurmBackend

MANIFEST = {"run_id": "checkpointing-20261205-101500",
            "jobs": {"preflight": {"job_id": "10"}, "checkpointing": {"job_id": "11", "earlier": [{"job_id": "7"}]},
                     "finalize": {"job_id": "12"}}}
STATES = {
    "preflight": {"job_id": "10", "state": "COMPLETED", "nodes": "n[1-4]", "start": "2026-12-05T10:15:01",
                  "elapsed": "00:00:02"},
    "checkpointing": {"job_id": "11", "state": "COMPLETED", "nodes": "n[1-2]", "start": "2026-12-05T10:15:05",
                      "elapsed": "00:01:00"},
}


def other(job_id: str, nodes: str, start: str, end: str, comment: str = "") -> JobState:
    return JobState(job_id=job_id, name="sleeper", state="COMPLETED", reason="", nodes=nodes, start=start, end=end,
                    user="alice", comment=comment)


@pytest.mark.parametrize("text,seconds", [("0:07", 7), ("12:34", 754), ("01:02:03", 3723), ("2-00:00:01", 172801),
                                          ("", None), ("INVALID", None)])
def test_elapsed_seconds(text, seconds):
    assert elapsed_seconds(text) == seconds


def test_a_job_that_overlapped_in_time_and_nodes_is_recorded_with_the_overlap():
    backend = FakeSlurmBackend()
    backend.on_nodes = [other("99", "n[2-3]", "2026-12-05T10:15:35", "2026-12-05T10:17:00")]
    entry = shared_nodes(MANIFEST, STATES, backend)
    assert entry["checked"] and entry["window"] == ["2026-12-05T10:15:05", "2026-12-05T10:16:05"]
    (job,) = entry["jobs"]
    assert job["job_id"] == "99" and job["nodes"] == ["n2"]  # n3 is not a benchmark node of this run
    assert job["overlaps"] == [{"job": "checkpointing", "seconds": 30}]
    # one query, for the benchmark jobs' window, over every node expression of the chain
    ((nodes, start, end),) = backend.on_nodes_calls
    assert (start, end) == ("2026-12-05T10:15:05", "2026-12-05T10:16:05") and "n[1-2]" in nodes
    (line,) = shared_lines(entry)
    assert "shared with job 99 (sleeper, alice) on n2 while checkpointing 30 s" in line


def test_own_jobs_other_nodes_and_other_times_are_not_counted():
    backend = FakeSlurmBackend()
    backend.on_nodes = [
        other("10", "n[1-4]", "2026-12-05T10:15:01", "2026-12-05T10:15:03"),  # the run's preflight
        other("7", "n1", "2026-12-05T10:15:05", "2026-12-05T10:15:30"),  # an earlier attempt of the run's job
        other("55", "n1", "2026-12-05T10:15:05", "", comment="mlps-slurm:checkpointing-20261205-101500:x"),
        other("60", "n4", "2026-12-05T10:15:05", "2026-12-05T10:16:00"),  # the preflight's node only
        other("61", "n1", "2026-12-05T10:10:00", "2026-12-05T10:15:04"),  # ended before the benchmark began
        other("62", "n1", "2026-12-05T10:16:06", ""),  # began after it ended
    ]
    entry = shared_nodes(MANIFEST, STATES, backend)
    assert entry == {"checked": True, "window": ["2026-12-05T10:15:05", "2026-12-05T10:16:05"], "jobs": []}
    assert shared_lines(entry) == []


def test_a_job_still_running_counts_until_now_and_array_tasks_are_spans_of_their_own():
    states = {"run": {"job_id": "20", "state": "COMPLETED", "tasks": [
        {"task": 0, "job_id": "21", "state": "COMPLETED", "nodes": "n1", "start": "2026-12-05T10:00:00",
         "elapsed": "0:10"},
        {"task": 1, "job_id": "22", "state": "COMPLETED", "nodes": "n1", "start": "2026-12-05T10:00:20",
         "elapsed": "0:10"}]}}
    backend = FakeSlurmBackend()
    backend.on_nodes = [other("21", "n1", "2026-12-05T10:00:00", ""),  # the run's own array task
                        other("30", "n1", "2026-12-05T10:00:25", "")]
    entry = shared_nodes({"run_id": "r", "jobs": {"run": {"job_id": "20"}}}, states, backend,
                         now=dt.datetime(2026, 12, 5, 10, 5))
    (job,) = entry["jobs"]
    assert job["job_id"] == "30" and job["overlaps"] == [{"job": "run[1]", "seconds": 5}]


def test_a_failed_query_is_recorded_and_costs_nothing_else():
    class Broken(FakeSlurmBackend):
        def jobs_on_nodes(self, nodes, start, end):
            raise RuntimeError("squeue: error: Unable to contact slurm controller")

    entry = shared_nodes(MANIFEST, STATES, Broken())
    assert not entry["checked"] and "Unable to contact" in entry["why"]
    assert "could not ask Slurm" in shared_lines(entry)[0]
    # a chain whose benchmark job never started has nothing to compare
    assert shared_nodes(MANIFEST, {"preflight": STATES["preflight"]}, FakeSlurmBackend())["checked"] is False


def test_squeue_and_sacct_rows_parse():
    row = _window_row("99|98_3|RUNNING|n[1-2]|2026-12-05T10:00:00|2026-12-05T11:00:00|sleeper|alice|a|b", "squeue")
    assert (row.job_id, row.array_task, row.nodes, row.user, row.comment) == ("99", "3", "n[1-2]", "alice", "a|b")
    assert _window_row("short|row", "sacct") is None


def test_jobcomp_window_keeps_ended_jobs_on_those_nodes_in_the_window(tmp_path):
    log = tmp_path / "jobcomp.txt"
    log.write_text(
        "JobId=40 UserId=alice(1000) Name=a JobState=COMPLETED NodeList=n[1-2] StartTime=2026-12-05T10:00:00 "
        "EndTime=2026-12-05T10:05:00\n"
        "JobId=41 UserId=bob(1001) Name=b JobState=COMPLETED NodeList=n3 StartTime=2026-12-05T10:00:00 "
        "EndTime=2026-12-05T10:05:00\n"
        "JobId=42 UserId=bob(1001) Name=c JobState=COMPLETED NodeList=n1 StartTime=2026-12-05T09:00:00 "
        "EndTime=2026-12-05T09:05:00\n"
        "JobId=43 UserId=bob(1001) Name=d JobState=CANCELLED NodeList=(null) StartTime=Unknown EndTime=Unknown\n"
        "JobId=44 garbage NodeList=n[1-\n")
    found = _jobcomp_window(log, {"n2"}, "2026-12-05T10:04:00", "2026-12-05T10:10:00")
    assert [(s.job_id, s.user, s.end) for s in found] == [("40", "alice", "2026-12-05T10:05:00")]
    assert _jobcomp_window(tmp_path / "missing", {"n2"}, "a", "b") == []
