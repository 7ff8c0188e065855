"""A real scrontab entry on the local cluster (scrontab built by bin/mlps-local-cluster): it fires as a Slurm job
and submits a run that finalizes; a firing while that run is active is skipped and recorded; --keep prunes only the
schedule's own old runs; remove takes the entry out of the user's scrontab."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parent.parent.parent


def cli(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlps_slurm", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **env})


def log(state: Path, name: str) -> list[dict]:
    path = state / "schedules" / name / "firings.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.fixture
def dirs():
    results = Path(tempfile.mkdtemp(prefix="mlps-schedule-", dir="/dev/shm"))
    state = Path(tempfile.mkdtemp(prefix="mlps-schedule-state-"))
    yield results, state
    shutil.rmtree(results, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)


def test_a_scrontab_entry_fires_skips_while_active_and_prunes(dirs):
    assert shutil.which("scrontab"), "no scrontab: `bin/mlps-local-cluster up` builds it from Debian's source"
    results, state = dirs
    env = {"MLPS_STATE_DIR": str(state)}
    name = f"itest-{os.getpid()}"
    # Once, at the next whole minute (two if that is too close): no second firing races the test.
    at = dt.datetime.now() + dt.timedelta(minutes=1 if dt.datetime.now().second < 45 else 2)
    other = cli("render", "checkpointing", "--model", "llama3-8b", "--scale", "0.0005", "--results-dir", str(results),
                "--json", env=env)
    assert other.returncode == 0, other.stderr
    other_run = Path(json.loads(other.stdout)["run_dir"])  # same results directory, not the schedule's
    added = cli("schedule", "add", name, "--cron", f"{at.minute} {at.hour} * * *", "--keep", "1", "--",
                "submit", "checkpointing", "--model", "llama3-8b", "--scale", "0.0005",
                "--seconds-between-checkpoints", "1", "--results-dir", str(results), env=env)
    assert added.returncode == 0, added.stderr
    try:
        table = subprocess.run(["scrontab", "-l"], capture_output=True, text=True).stdout
        assert f"#SCRON --job-name=mlps-schedule-{name}" in table
        listed = json.loads(cli("schedule", "list", "--json", env=env).stdout)["schedules"]
        assert [s["name"] for s in listed] == [name] and listed[0]["backend"] == "scrontab"

        deadline = time.monotonic() + 200
        while not log(state, name):
            assert time.monotonic() < deadline, "the scrontab entry did not fire"
            time.sleep(1)
        first = log(state, name)[0]
        assert first["action"] == "submitted", first
        # it was the scrontab job that fired: its output file is in the schedule's directory
        assert list((state / "schedules" / name).glob("fire-*.out"))
        run1 = Path(first["run_dir"])

        skipped = cli("schedule", "fire", name, env=env)  # the run is still queued or running
        assert skipped.returncode == 0, skipped.stderr
        entry = json.loads(skipped.stdout)
        assert entry["action"] == "skipped" and run1.name in entry["reason"], entry
        assert [e["action"] for e in log(state, name)] == ["submitted", "skipped"]

        waited = cli("status", str(run1), "--watch", env=env, timeout=600)
        assert waited.returncode == 0, waited.stdout + waited.stderr  # a finalized, successful run
        assert json.loads((run1 / "results" / "results.json").read_text())["status"] == "success"

        second = cli("schedule", "fire", name, env=env)
        assert second.returncode == 0, second.stderr
        entry = json.loads(second.stdout)
        assert entry["action"] == "submitted" and entry["pruned"] == [run1.name], entry
        assert not run1.exists() and Path(entry["run_dir"]).is_dir() and other_run.is_dir()
        assert cli("status", entry["run_dir"], "--watch", env=env, timeout=600).returncode == 0
    finally:
        removed = cli("schedule", "remove", name, env=env)
    assert removed.returncode == 0, removed.stderr
    assert name not in subprocess.run(["scrontab", "-l"], capture_output=True, text=True).stdout
    assert json.loads(cli("schedule", "list", "--json", env=env).stdout)["schedules"] == []
