"""Progress recorded by running steps (steps/progress.py) and shown by `status` (chain.py)."""

from __future__ import annotations

import datetime as dt
import json
import sys
import types
from pathlib import Path

import pytest

from mlps_slurm.chain import chain_status, describe_status, status_record
from mlps_slurm.slurm import JobState
from mlps_slurm.steps import progress as pg
from tests.unit.fake_slurm import FakeSlurmBackend
from tests.unit.test_chain_fake_slurm import make_run
from mlps_slurm.chain import submit_chain


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_job_name_and_array_task_name_the_file(tmp_path):
    env = {"MLPS_RUN_DIR": str(tmp_path), "SLURM_JOB_NAME": "mlps-run", "SLURM_ARRAY_TASK_ID": "3"}
    assert pg.path_from_env(env) == tmp_path / "progress" / "run.3.json"
    assert pg.path_from_env({**env, "SLURM_ARRAY_TASK_ID": ""}) == tmp_path / "progress" / "run.json"
    # outside a chain's job, or a job name the plan did not give: nothing is recorded
    assert pg.path_from_env({"SLURM_JOB_NAME": "mlps-run"}) is None
    assert pg.path_from_env({**env, "SLURM_JOB_NAME": "interactive"}) is None
    assert pg.path_from_env({**env, "SLURM_JOB_NAME": "mlps-../../etc"}) is None


def test_updates_are_throttled_and_read_back(tmp_path):
    path = tmp_path / "progress" / "checkpointing.json"
    clock = Clock()
    p = pg.Progress("checkpoints", 20, "checkpoints", path=path, clock=clock)
    writes = []
    real = pg.atomic_write_json
    pg.atomic_write_json = lambda f, d: (writes.append(d["done"]), real(f, d))  # type: ignore[assignment]
    try:
        for i in range(1, 8):
            p.update(i, f"write {i}/10")
            clock.now += 0.3
        p.update(7, "write 7/10", force=True)
    finally:
        pg.atomic_write_json = real  # type: ignore[assignment]
    assert writes == [1, 5, 7]  # at most one write a second, and the forced one
    record = pg.read_progress(tmp_path, "checkpointing")
    assert record and record["done"] == 7 and record["total"] == 20 and record["detail"] == "write 7/10"
    line = pg.describe(record, now=dt.datetime.fromisoformat(record["updated"]) + dt.timedelta(seconds=3))
    assert line == "[#######-------------] 7/20 checkpoints  write 7/10  (updated 3 s ago)"


def test_timed_steps_report_seconds(tmp_path):
    path = tmp_path / "progress" / "option1.json"
    with pg.timed("kv-cache trial", 300, "trial 2/3", path=path, interval=0.01) as p:
        assert p.detail == "trial 2/3"
    record = pg.read_progress(tmp_path, "option1")
    assert record["unit"] == "s" and record["total"] == 300 and 0 <= record["done"] < 5
    assert pg.describe(record).startswith("[--------------------] 0 s/300 s  trial 2/3")


def test_an_unwritable_progress_file_warns_once_and_never_fails_the_step(tmp_path, capsys):
    blocker = tmp_path / "progress"
    blocker.write_text("a file where the directory belongs")
    p = pg.Progress("checkpoints", 2, "checkpoints", path=blocker / "x.json")
    p.update(1, force=True)
    p.update(2, force=True)
    assert capsys.readouterr().err.count("cannot record progress") == 1


@pytest.mark.parametrize("content", ["{not json", "\xff\xfe", json.dumps({"schema": pg.SCHEMA, "done": "7"}),
                                     json.dumps({"schema": "other", "done": 1}), json.dumps([1, 2]),
                                     json.dumps({"schema": pg.SCHEMA, "done": 1, "total": -3})])
def test_damaged_records_are_ignored(tmp_path, content):
    (tmp_path / "progress").mkdir()
    (tmp_path / "progress" / "run.json").write_bytes(content.encode("latin-1"))
    assert pg.read_progress(tmp_path, "run") is None


def test_hostile_keys_never_become_paths(tmp_path):
    outside = tmp_path / "progress" / "x.json"
    outside.parent.mkdir()
    outside.write_text(json.dumps({"schema": pg.SCHEMA, "done": 1, "total": 2}))
    run = tmp_path / "run"
    assert pg.read_progress(run, "../progress/x") is None
    assert pg.read_progress(run, "/etc/passwd") is None


def test_status_shows_the_running_tasks_progress(tmp_path):
    run = make_run(tmp_path)
    backend = FakeSlurmBackend()
    ids = submit_chain(run, backend)
    backend.given[ids["preflight"]] = [JobState(ids["preflight"], "mlps-preflight", "COMPLETED", "None")]
    backend.given[ids["checkpointing"]] = [JobState(ids["checkpointing"], "mlps-checkpointing", "RUNNING", "None",
                                                    nodes="n[1-2]")]
    progress = pg.Progress("checkpoints", 20, "checkpoints", path=pg.progress_file(run.path, "checkpointing"))
    progress.update(7, "write 7/10", force=True)
    # a preflight record from a finished job is kept in --json but not drawn
    pg.Progress("preflight", 4, "nodes", path=pg.progress_file(run.path, "preflight")).update(4, force=True)
    status = chain_status(run, backend)
    text = describe_status(status)
    assert "[#######-------------] 7/20 checkpoints  write 7/10" in text
    assert text.count("[") == 1 + text.count("[1-2]")
    record = status_record(status)
    by_key = {j["key"]: j for j in record["jobs"]}
    assert by_key["checkpointing"]["progress"]["done"] == 7
    assert by_key["preflight"]["progress"]["total"] == 4
    assert "progress" not in by_key["finalize"]


def test_array_tasks_progress_is_per_task(tmp_path):
    run = make_run(tmp_path)
    backend = FakeSlurmBackend()
    ids = submit_chain(run, backend)
    jid = ids["checkpointing"]
    backend.given[jid] = [JobState(f"{jid}", "mlps-checkpointing", "COMPLETED", "None", array_task="0"),
                          JobState(f"{int(jid) + 5}", "mlps-checkpointing", "RUNNING", "None", array_task="1"),
                          JobState(f"{jid}", "mlps-checkpointing", "PENDING", "JobArrayTaskLimit",
                                   array_task="2-5%1")]
    for task, done in ((0, 600), (1, 120)):
        p = pg.Progress(f"run {task}", 600, "steps", path=pg.progress_file(run.path, "checkpointing", task))
        p.update(done, f"epoch {done // 120 + 1}/5", force=True)
    text = describe_status(chain_status(run, backend))
    assert "task 1   [####----------------] 120/600 steps  epoch 2/5" in text
    assert "600/600" not in text  # a finished task's last record is not drawn


def test_training_progress_follows_dlios_epochs_and_steps(tmp_path, monkeypatch):
    """follow_training wraps the two StatsCounter methods DLIO calls; a stand-in class with DLIO's signatures."""
    calls = []

    class StatsCounter:
        def __init__(self) -> None:
            self.steps = 10
            self.args = types.SimpleNamespace(epochs=3)

        def start_train(self, epoch):
            calls.append(("epoch", epoch))

        def batch_processed(self, epoch, step, block, t0, computation_time):
            calls.append(("step", epoch, step))

    module = types.ModuleType("dlio_benchmark.utils.statscounter")
    module.StatsCounter = StatsCounter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dlio_benchmark.utils.statscounter", module)
    from mlps_slurm.benchmarks.training.shim import follow_training

    clock = Clock()
    p = pg.Progress("run 2", None, "steps", path=tmp_path / "p.json", clock=clock)
    follow_training(p)
    stats = StatsCounter()
    stats.start_train(2)
    for step in range(1, 5):
        clock.now += 2
        stats.batch_processed(2, step, 1, 0.0, 0.0)
    assert calls[0] == ("epoch", 2) and calls[-1] == ("step", 2, 4)  # DLIO's own methods still run
    record = json.loads((tmp_path / "p.json").read_text())
    assert (record["done"], record["total"], record["detail"]) == (14, 30, "epoch 2/3")


def test_kvcache_trial_label_reads_the_trial_count_from_the_manifest(tmp_path):
    from mlps_slurm.benchmarks.kvcache.job import trial_label

    (tmp_path / "manifest.json").write_text(json.dumps({"request": {"trials": 3}}))
    assert trial_label("/x/option_1/trial_1", {"MLPS_RUN_DIR": str(tmp_path)}) == "trial 2/3"
    assert trial_label("/x/option_1/trial_0", {}) == "trial 1"
    (tmp_path / "manifest.json").write_bytes(b"\xff")
    assert trial_label("/x/option_1/trial_0", {"MLPS_RUN_DIR": str(tmp_path)}) == "trial 1"
    assert trial_label("/x/option_1/elsewhere", {}) == ""


def test_status_never_shows_another_jobs_state_under_a_recorded_id(tmp_path):
    """After Slurm lost its state its job ids restart: a recorded id may name another run's job."""
    run = make_run(tmp_path)
    backend = FakeSlurmBackend()
    ids = submit_chain(run, backend)
    submitted = run.read_manifest()["jobs"]["checkpointing"]["submitted"]
    when = dt.datetime.fromisoformat(submitted).astimezone().replace(tzinfo=None)
    backend.given[ids["preflight"]] = [JobState(ids["preflight"], "mlps-preflight", "RUNNING", "None",
                                                comment="mlps-slurm:checkpointing-other-run:preflight")]
    backend.given[ids["checkpointing"]] = [JobState(ids["checkpointing"], "x", "RUNNING", "None",
                                                    submit=(when + dt.timedelta(hours=2)).isoformat())]
    backend.given[ids["finalize"]] = [JobState(ids["finalize"], "mlps-finalize", "PENDING", "Dependency",
                                               comment=f"mlps-slurm:{run.run_id}:finalize",
                                               submit=when.isoformat())]
    status = chain_status(run, backend)
    states = {k: s for k, _, s in status.jobs}
    assert states["preflight"].state == "UNKNOWN" and "checkpointing-other-run" in states["preflight"].reason
    assert states["checkpointing"].state == "UNKNOWN" and "submitted at" in states["checkpointing"].reason
    assert states["finalize"].state == "PENDING"  # its own token and submit time
    assert "now names another job" in describe_status(status)
