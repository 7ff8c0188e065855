"""Where `status` gets job states: squeue restricted to the chain (its text format), then one accounting query for
what squeue forgot or for exit codes (sacct, or the jobcomp/filetxt record), and what `status` makes of them."""

from __future__ import annotations

import json
from pathlib import Path

from mlps_slurm.chain import STATUS_EXIT, ChainStatus, status_record
from mlps_slurm.rundir import RunDirectory
from mlps_slurm.slurm import JobState, combined_state
from mlps_slurm.slurm.cli_backend import CliSlurm, _jobcomp_rows, _sacct_rows, _squeue_row

JOBCOMP = """JobId=291 UserId=root(0) GroupId=root(0) Name=mlps-run JobState=COMPLETED Partition=debug TimeLimit=60 StartTime=2026-12-05T18:33:15 EndTime=2026-12-05T18:33:43 NodeList=n[1-2] NodeCnt=2 ArrayJobId=291 ArrayTaskId=1 DerivedExitCode=0:0 ExitCode=0:0
JobId=293 UserId=root(0) GroupId=root(0) Name=mlps-run JobState=FAILED Partition=debug TimeLimit=60 StartTime=2026-12-05T18:32:44 EndTime=2026-12-05T18:34:14 NodeList=n[1-2] NodeCnt=2 ArrayJobId=291 ArrayTaskId=0 DerivedExitCode=0:0 ExitCode=1:0
JobId=300 UserId=root(0) GroupId=root(0) Name=other JobState=COMPLETED Partition=debug StartTime=2026-12-05T18:00:00 EndTime=2026-12-05T18:00:01 NodeList=n1 ArrayJobId=4294967294 ArrayTaskId=4294967294 ExitCode=0:0
JobId=292 UserId=root(0) GroupId=root(0) Name=mlps-finalize JobState=CANCELLED Partition=debug StartTime=2026-12-05T18:33:44 EndTime=2026-12-05T18:33:44 NodeList=n1 ArrayJobId=4294967294 ArrayTaskId=4294967294 ExitCode=0:15
JobId=292 UserId=root(0) GroupId=root(0) Name=mlps-finalize JobState=COMPLETED Partition=debug StartTime=2026-12-05T18:35:00 EndTime=2026-12-05T18:35:02 NodeList=n2 ArrayJobId=4294967294 ArrayTaskId=4294967294 ExitCode=0:0
"""


def test_squeue_rows_map_array_tasks_to_their_array_job():
    wanted = {"291", "292"}
    owner, task = _squeue_row("293|291|0|RUNNING|None|n[1-2]|2026-12-05T18:32:44|0:30|2026-12-05T18:32:40|mlps-run|mlps-slurm:r:run", wanted)
    assert owner == "291" and task.job_id == "293" and task.array_task == "0" and task.elapsed == "0:30"
    assert task.submit == "2026-12-05T18:32:40" and task.comment == "mlps-slurm:r:run"
    owner, pending = _squeue_row("291|291|[1-5%1]|PENDING|JobArrayTaskLimit||N/A|0:00|N/A|mlps-run|(null)", wanted)
    assert owner == "291" and pending.array_task == "[1-5%1]" and pending.start == "" and pending.nodes == ""
    owner, single = _squeue_row("292|292|N/A|PENDING|Dependency||N/A|0:00|2026-12-05T18:32:41|mlps-finalize|a|comment|with|bars", wanted)
    assert owner == "292" and single.array_task == "" and single.reason == "Dependency"
    assert single.comment == "a|comment|with|bars" and pending.comment == ""
    assert _squeue_row("999|999|N/A|RUNNING|None|n1|x|0:01|x|other|", wanted) is None
    assert _squeue_row("garbage", wanted) is None


def test_the_job_completion_record_gives_final_states_exit_codes_and_elapsed(tmp_path):
    path = tmp_path / "jobcomp.txt"
    path.write_text(JOBCOMP)
    rows = _jobcomp_rows(path, {"291", "292"})
    assert sorted((s.array_task, s.state, s.exit_code) for s in rows["291"]) == [("0", "FAILED", "1:0"),
                                                                                ("1", "COMPLETED", "0:0")]
    (final,) = rows["292"]  # a requeued job: its last record wins
    assert final.state == "COMPLETED" and final.nodes == "n2" and final.elapsed == "00:00:02"
    assert "300" not in rows and _jobcomp_rows(tmp_path / "absent.txt", {"1"}) == {}


def test_sacct_rows():
    text = "293|291_0|FAILED|1:0|n[1-2]|2026-12-05T18:32:44|00:01:30|mlps-run\n292|292|COMPLETED|0:0|n1|x|00:00:02|f\n"
    rows = _sacct_rows(text, {"291", "292"})
    assert rows["291"][0].array_task == "0" and rows["291"][0].exit_code == "1:0"
    assert rows["292"][0].state == "COMPLETED" and rows["292"][0].source == "sacct"


class Recorder(CliSlurm):
    """CliSlurm with its commands answered from canned text (named as such: not a Slurm)."""

    def __init__(self, squeue: str, conf: dict[str, str]):
        super().__init__(retries=1)
        self.calls: list[list[str]] = []
        self.squeue, self._conf = squeue, conf

    def _run(self, argv, *, retry=True):
        import subprocess

        self.calls.append(argv)
        out = self.squeue if argv[0] == "squeue" else ""
        return subprocess.CompletedProcess(argv, 0, out, "")


def test_one_squeue_for_the_chain_and_one_accounting_read_for_what_it_forgot(tmp_path):
    path = tmp_path / "jobcomp.txt"
    path.write_text(JOBCOMP)
    backend = Recorder("294|294|N/A|RUNNING|None|n3|2026-12-05T18:40:00|1:00|2026-12-05T18:39:00|mlps-x|\n",
                       {"AccountingStorageType": "accounting_storage/none", "JobCompType": "jobcomp/filetxt",
                        "JobCompLoc": str(path)})
    states = backend.states(["291", "292", "294", "1"])
    assert [c[0] for c in backend.calls] == ["squeue"] and "291,292,294,1" in backend.calls[0]
    assert combined_state(states["291"]).state == "FAILED" and states["292"][0].source == "jobcomp"
    assert states["294"][0].state == "RUNNING" and states["1"][0].state == "UNKNOWN"
    sacct = Recorder("", {"AccountingStorageType": "accounting_storage/slurmdbd"})
    sacct.states(["5", "6", "7"])
    assert [c[0] for c in sacct.calls] == ["squeue", "sacct"]


def test_status_record_and_exit_codes(tmp_path):
    run = RunDirectory(tmp_path / "r")
    (tmp_path / "r" / "results").mkdir(parents=True)
    tasks = [JobState("293", "run", "COMPLETED", "None", "0:0", "n1", "0", "2026-12-05T18:32:44", "0:30"),
             JobState("291", "run", "RUNNING", "None", "", "n1", "1", "2026-12-05T18:33:15", "0:05")]
    status = ChainStatus(run, [("preflight", "290", JobState("290", "p", "COMPLETED", "None")),
                               ("run", "291", combined_state(tasks))], {"run": tasks})
    record = status_record(status)
    assert record["state"] == "RUNNING" and record["exit_code"] == STATUS_EXIT["RUNNING"] == 5
    assert [t["task"] for t in record["jobs"][1]["tasks"]] == [0, 1]
    assert record["jobs"][1]["start"] == "2026-12-05T18:32:44"
    done = ChainStatus(run, [("preflight", "290", JobState("290", "p", "COMPLETED", "None"))], {})
    assert done.state == "FAILED" and status_record(done)["exit_code"] == 1  # finished, no results
    (tmp_path / "r" / "results" / "results.json").write_text(json.dumps({"status": "success"}))
    assert done.state == "SUCCESS" and status_record(done)["results"] == {"status": "success"}
    assert Path(record["run_dir"]) == tmp_path / "r"
