"""Schedules without Slurm: validation, the scrontab/crontab block, the overlap guard and retention (fake Slurm and
a fake table; the real scrontab fires in tests/integration/test_schedule_scrontab.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mlps_slurm import schedule as sch
from mlps_slurm.chain import submit_chain
from mlps_slurm.slurm import JobState
from tests.unit.fake_slurm import FakeSlurmBackend
from tests.unit.test_chain_fake_slurm import make_run


class FakeTable(sch.Table):
    def __init__(self, backend: str = "scrontab", lines: list[str] | None = None) -> None:
        self.backend, self.lines, self.writes = backend, list(lines or []), 0

    def read(self) -> list[str]:
        return list(self.lines)

    def write(self, lines: list[str]) -> None:
        self.lines, self.writes = list(lines), self.writes + 1


@pytest.fixture(autouse=True)
def scrontab_here(monkeypatch):
    monkeypatch.setattr(sch, "pick_backend", lambda requested: requested or "scrontab")


ARGV = ["submit", "checkpointing", "--model", "llama3-8b", "--scale", "0.01"]


@pytest.mark.parametrize("cron", ["0 2 * * 0", "*/15 * * * 1-5", "@daily", "0 2 * * sun"])
def test_cron_expressions(cron):
    assert sch.check_cron(cron) == cron


@pytest.mark.parametrize("cron", ["", "0 2 * *", "0 2 * * 0 extra", "0 2 * * 0; rm -rf /", "@sometimes",
                                  "0 2 * * $(x)"])
def test_bad_cron_is_refused_with_the_fix(cron):
    with pytest.raises(sch.ScheduleError, match="five fields"):
        sch.check_cron(cron)


@pytest.mark.parametrize("name", ["", "../x", "a b", "x" * 65, "-x", "a/b", "a\nb"])
def test_bad_names(name):
    with pytest.raises(sch.ScheduleError, match="schedule name"):
        sch.check_name(name)


@pytest.mark.parametrize("argv,problem", [(["all"], "after `--`"), (["submit"], "after `--`"),
                                          (["submit", "all", "--wait"], "--wait"),
                                          (["submit", "all", "--json"], "--json")])
def test_bad_commands(argv, problem):
    with pytest.raises(sch.ScheduleError, match=problem):
        sch.check_argv(argv)


def test_add_writes_one_block_and_keeps_the_users_other_entries(tmp_path):
    table = FakeTable(lines=["#SCRON -p debug", "0 * * * * my-own-job"])
    spec = sch.add(tmp_path, "weekly", "0 2 * * 0", ARGV, keep=3, slurm_options=["--partition=debug"], table=table)
    assert table.lines[:2] == ["#SCRON -p debug", "0 * * * * my-own-job"]
    block = table.lines[2:]
    assert block[0].startswith("# mlps-slurm schedule weekly") and block[-1] == "# end of mlps-slurm schedule weekly"
    assert "#SCRON --job-name=mlps-schedule-weekly" in block and "#SCRON --partition=debug" in block
    entry = next(line for line in block if line.startswith("0 2 * * 0 "))
    assert "-m mlps_slurm schedule fire weekly --state-dir" in entry
    saved = json.loads((tmp_path / "schedules" / "weekly" / "schedule.json").read_text())
    assert saved["argv"] == ARGV and saved["keep"] == 3 and saved["backend"] == "scrontab" == spec.backend
    with pytest.raises(sch.ScheduleError, match="exists"):
        sch.add(tmp_path, "weekly", "0 3 * * 0", ARGV, keep=None, table=table)
    sch.remove(tmp_path, "weekly", table=table)
    assert table.lines == ["#SCRON -p debug", "0 * * * * my-own-job"]
    assert not (tmp_path / "schedules" / "weekly").exists()


def test_crontab_entries_log_their_output(tmp_path):
    table = FakeTable("crontab")
    sch.add(tmp_path, "nightly", "@daily", ARGV, keep=None, backend="crontab", table=table)
    entry = table.lines[1]
    assert entry.startswith("@daily env ") and entry.endswith(f"{tmp_path}/schedules/nightly/fire.log 2>&1")
    assert not any(line.startswith("#SCRON") for line in table.lines)


def test_a_refused_entry_leaves_no_schedule(tmp_path):
    class Refusing(FakeTable):
        def write(self, lines):
            raise sch.ScheduleError("scrontab refused the entry: bad")

    with pytest.raises(sch.ScheduleError, match="refused"):
        sch.add(tmp_path, "x", "@daily", ARGV, keep=None, table=Refusing())
    assert not (tmp_path / "schedules" / "x").exists()


def test_the_real_table_reads_an_empty_crontab_and_reports_refusals(tmp_path):
    def run(argv, **kw):
        if argv[1] == "-l":
            return subprocess.CompletedProcess(argv, 1, "", "no crontab for alice\n")
        return subprocess.CompletedProcess(argv, 1, "", "scrontab: error: invalid entry at line 3\n")

    table = sch.Table("scrontab", run=run)
    assert table.read() == []
    with pytest.raises(sch.ScheduleError, match="invalid entry at line 3"):
        table.write(["x"])


def _submitting(tmp_path: Path, backend: FakeSlurmBackend, made: list):
    """A stand-in for `mlps-slurm submit --json`: a real run directory, its chain on the fake Slurm."""
    def submit(spec):
        run = make_run(tmp_path / "runs")
        ids = submit_chain(run, backend)
        made.append((run, ids))
        return {"run_id": run.run_id, "run_dir": str(run.path), "jobs": ids}
    return submit


def finish(backend, ids):
    for key, jid in ids.items():
        backend.given[jid] = [JobState(jid, key, "COMPLETED", "None")]


def test_a_firing_skips_while_the_previous_run_is_active_and_records_why(tmp_path):
    state = tmp_path / "state"
    sch.add(state, "nightly", "@daily", ARGV, keep=None, table=FakeTable())
    backend, made = FakeSlurmBackend(), []
    submit = _submitting(tmp_path, backend, made)
    first = sch.fire(state, "nightly", backend, submit)
    assert first["action"] == "submitted" and first["run_id"] == made[0][0].run_id
    second = sch.fire(state, "nightly", backend, submit)
    assert second["action"] == "skipped" and made[0][0].run_id in second["reason"] and len(made) == 1
    finish(backend, made[0][1])
    third = sch.fire(state, "nightly", backend, submit)
    assert third["action"] == "submitted" and len(made) == 2
    log = sch.read_log(state, "nightly")
    assert [e["action"] for e in log] == ["submitted", "skipped", "submitted"]


def test_a_failed_submission_is_recorded(tmp_path):
    state = tmp_path / "state"
    sch.add(state, "nightly", "@daily", ARGV, keep=None, table=FakeTable())

    def refuse(spec):
        raise sch.ScheduleError("`mlps-slurm submit ...` exited 2: mlps-slurm: error: bad partition")

    entry = sch.fire(state, "nightly", FakeSlurmBackend(), refuse)
    assert entry["action"] == "failed" and "bad partition" in entry["reason"]


def test_keep_prunes_only_this_schedules_old_finished_runs(tmp_path):
    state = tmp_path / "state"
    sch.add(state, "nightly", "@daily", ARGV, keep=2, table=FakeTable())
    backend, made = FakeSlurmBackend(), []
    submit = _submitting(tmp_path, backend, made)
    other = make_run(tmp_path / "runs")  # a run of the same results directory, not of this schedule
    for _ in range(3):
        sch.fire(state, "nightly", backend, submit)
        finish(backend, made[-1][1])
    # 3 runs, keep 2: the oldest went when the third was submitted
    assert not made[0][0].path.exists() and made[1][0].path.exists() and made[2][0].path.exists()
    assert other.path.exists()
    # an old run whose chain is still active is never removed
    sch.fire(state, "nightly", backend, submit)  # 4th: run 2 would go
    assert not made[1][0].path.exists()
    backend.given[made[2][1]["finalize"]] = [JobState(made[2][1]["finalize"], "f", "PENDING", "Dependency")]
    sch.fire(state, "nightly", backend, submit)  # 5th: run 3 is old but active
    assert sch.read_log(state, "nightly")[-1]["action"] == "skipped"  # ...the 4th is still active too
    finish(backend, made[3][1])
    sch.fire(state, "nightly", backend, submit)
    assert made[2][0].path.exists() and made[3][0].path.exists()  # run 3 still active: kept beyond --keep
    pruned = [e["run_id"] for e in sch.read_log(state, "nightly") if e["action"] == "pruned"]
    assert pruned == [made[0][0].run_id, made[1][0].run_id]


@pytest.mark.parametrize("tamper", ["symlink", "other_id", "outside_name"])
def test_retention_never_removes_what_the_log_does_not_prove(tmp_path, tamper):
    state = tmp_path / "state"
    sch.add(state, "nightly", "@daily", ARGV, keep=1, table=FakeTable())
    victim = tmp_path / "precious"
    victim.mkdir()
    (victim / "manifest.json").write_text(json.dumps({"run_id": "precious"}))
    log = state / "schedules" / "nightly" / "firings.jsonl"
    if tamper == "symlink":
        link = tmp_path / "runs-link" / "checkpointing-x"
        link.parent.mkdir()
        link.symlink_to(victim)
        entry = {"action": "submitted", "run_id": "checkpointing-x", "run_dir": str(link)}
    elif tamper == "other_id":
        entry = {"action": "submitted", "run_id": "precious-2", "run_dir": str(victim)}
    else:
        entry = {"action": "submitted", "run_id": "../precious", "run_dir": str(victim)}
    log.write_text(json.dumps(entry) + "\n")
    backend, made = FakeSlurmBackend(), []
    sch.fire(state, "nightly", backend, _submitting(tmp_path, backend, made))
    finish(backend, made[-1][1])
    sch.fire(state, "nightly", backend, _submitting(tmp_path, backend, made))
    assert victim.is_dir() and (victim / "manifest.json").is_file()


def test_listing_shows_the_last_firing_and_damaged_specs(tmp_path):
    state = tmp_path / "state"
    sch.add(state, "nightly", "@daily", ARGV, keep=None, table=FakeTable())
    (state / "schedules" / "broken").mkdir()
    (state / "schedules" / "broken" / "schedule.json").write_bytes(b"\xff\xfe")
    backend, made = FakeSlurmBackend(), []
    sch.fire(state, "nightly", backend, _submitting(tmp_path, backend, made))
    rows = {r["name"]: r for r in sch.listing(state)}
    assert rows["nightly"]["runs"] == 1 and rows["nightly"]["last"]["action"] == "submitted"
    assert "unreadable schedule" in rows["broken"]["problem"]


def test_a_firing_judges_the_previous_run_against_the_runs_before_it(tmp_path):
    """The previous run, 30 % slower than the two before it, is recorded and flagged; the firing still submits."""
    from mlps_slurm.history import record
    from tests.unit.test_history import ckpt

    root = tmp_path / "runs"
    runs = [ckpt(root, 1), ckpt(root, 2), ckpt(root, 3, factor=0.70)]
    for run in runs[:2]:
        record(run, root / "history.sqlite")
    state = tmp_path / "state"
    sch.add(state, "nightly", "@daily", ARGV, keep=None, table=FakeTable(), baseline=2)
    backend = FakeSlurmBackend()
    manifest_path = runs[2] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["jobs"] = {"checkpointing": {"job_id": "900"}}
    manifest["plan"]["jobs"] = [{"key": "checkpointing", "script": "x", "dependencies": []}]
    manifest_path.write_text(json.dumps(manifest))
    backend.given["900"] = [JobState("900", "c", "COMPLETED", "None")]
    (state / "schedules" / "nightly" / "firings.jsonl").write_text(json.dumps(
        {"action": "submitted", "run_id": runs[2].name, "run_dir": str(runs[2])}) + "\n")
    made: list = []
    entry = sch.fire(state, "nightly", backend, _submitting(tmp_path, backend, made))
    assert entry["action"] == "submitted" and made
    judged = entry["previous"]
    assert judged["run_id"] == runs[2].name and judged["regressed"] and judged["verdict"] == "regression"
    assert {m["metric"]: m["verdict"] for m in judged["metrics"]} == {"write_throughput": "regression"}
    # the next firing judges the new run (no results yet): nothing to flag
    finish(backend, made[-1][1])
    assert sch.fire(state, "nightly", backend, _submitting(tmp_path, backend, made))["previous"] == {
        "run_id": made[0][0].run_id, "verdict": "no results", "regressed": False}
