"""Finalize records the official checker's verdict beside ours when `mlpstorage` is on PATH.

The real checker is not installable here (it lives only on GitHub); a stand-in script named as such checks our
plumbing: the command we run, and that its exit status and output are recorded, never replacing our verdict.
"""

from __future__ import annotations

import stat

from mlps_slurm.rundir import RunDirectory
from mlps_slurm.steps.outcome import official_checker


def test_absent_checker_is_recorded_as_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    run = RunDirectory(tmp_path)
    assert official_checker(run)["installed"] is False


def test_present_checker_runs_on_the_raw_outputs_and_its_failure_is_recorded(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "mlpstorage"
    stand_in.write_text('#!/bin/sh\necho "args: $*"\necho "INVALID: something" >&2\nexit 3\n')
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    run = RunDirectory(tmp_path / "run")
    (run.results).mkdir(parents=True)
    record = official_checker(run)
    assert record["installed"] and record["exit_code"] == 3 and record["verdict"] == "failed"
    assert f"--results-dir {run.raw}" in record["output_tail"] and "INVALID: something" in record["output_tail"]
    assert (run.results / "official-checker.log").read_text().startswith("args: reports reportgen")
