"""`status` on the real local cluster: Slurm calls per refresh counted by wrappers on PATH (the same for a chain of
3 jobs and for 3 jobs + a 6-task array), states, nodes, start and elapsed while jobs run, final states from the
job-completion record once squeue no longer lists the jobs (simulated by a wrapper that hides them), and --json.

The chains' jobs are stand-ins (`sbatch --wrap "sleep"`) recorded in rendered run directories: what is under test
is how status reads Slurm, not the benchmarks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm
WRAPPED = ("squeue", "sacct", "scontrol", "sinfo", "sbatch", "scancel")


@pytest.fixture
def counting_path(tmp_path):
    """A PATH whose Slurm commands log each call, then run the real one; squeue drops the lines of the job ids in
    $HIDE_JOBS (as if MinJobAge had passed)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name in WRAPPED:
        real = shutil.which(name)
        if real is None:
            continue
        # A job's own id is the first column, an array task's array id the second.
        hide = ('| grep -v -E "^(${HIDE_JOBS// /|})\\||^[0-9]+\\|(${HIDE_JOBS// /|})\\|" || true'
                if name == "squeue" else "")
        script = (f'#!/bin/bash\necho "{name} $*" >> {log}\n'
                  + (f'if [ -n "${{HIDE_JOBS:-}}" ]; then {real} "$@" {hide}; exit 0; fi\n' if hide else "")
                  + f'exec {real} "$@"\n')
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    return bin_dir, log


def render(tmp_path: Path, *args: str) -> Path:
    proc = subprocess.run([sys.executable, "-m", "mlps_slurm", "render", *args, "--json",
                           "--results-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return Path(json.loads(proc.stdout)["run_dir"])


def stand_in(run: Path, seconds: float, arrays: dict[str, int]) -> list[str]:
    """Submit a sleeping job for each planned job (an array where asked) and record it as the chain's."""
    manifest = json.loads((run / "manifest.json").read_text())
    ids = []
    for job in manifest["plan"]["jobs"]:
        argv = ["sbatch", "--parsable", "-N", "1", "-o", "/dev/null", "--wrap", f"sleep {seconds}"]
        if job["key"] in arrays:
            argv[1:1] = [f"--array=0-{arrays[job['key']] - 1}"]
        jid = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
        manifest["jobs"][job["key"]] = {"job_id": jid, "script": job["script"]}
        ids.append(jid)
    (run / "manifest.json").write_text(json.dumps(manifest))
    return ids


def status(run: Path, bin_dir: Path, log: Path, **env: str) -> tuple[dict, int, list[str]]:
    log.write_text("")
    full = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env}
    proc = subprocess.run([sys.executable, "-m", "mlps_slurm", "status", str(run), "--json"], capture_output=True,
                          text=True, env=full, timeout=120)
    assert proc.returncode in (0, 1, 5), proc.stderr
    return json.loads(proc.stdout), proc.returncode, log.read_text().split("\n")[:-1]


def test_status_calls_are_constant_and_states_survive_squeue(tmp_path, counting_path):
    bin_dir, log = counting_path
    small = render(tmp_path, "checkpointing", "--model", "llama3-8b", "--scale", "0.01")
    arrayed = render(tmp_path, "vectordb", "--runs", "6", "--scale", "0.01")
    small_ids = stand_in(small, 8, {})
    array_ids = stand_in(arrayed, 8, {"run": 6})
    try:
        time.sleep(2)
        doc_small, code_small, calls_small = status(small, bin_dir, log)
        doc_array, code_array, calls_array = status(arrayed, bin_dir, log)
        # One squeue restricted to the chain's ids per refresh, whatever the number of jobs and tasks.
        assert [c.split()[0] for c in calls_small] == [c.split()[0] for c in calls_array], (calls_small, calls_array)
        squeues = [c for c in calls_array if c.startswith("squeue")]
        assert len(squeues) == 1 and ",".join(array_ids) in squeues[0] and "--json" not in squeues[0]
        assert code_small == code_array == 5 and doc_array["state"] in ("PENDING", "RUNNING")
        running = [j for j in doc_small["jobs"] if j["state"] == "RUNNING"]
        assert running and all(j["nodes"] and j["start"] and j["elapsed"] for j in running), doc_small
        # Wait until every stand-in ended, then hide them from squeue: the states come from the jobcomp record.
        deadline = time.monotonic() + 300
        while status(arrayed, bin_dir, log)[0]["state"] in ("PENDING", "RUNNING"):
            assert time.monotonic() < deadline, "the stand-in jobs did not finish"
            time.sleep(2)
        shown, code, calls = status(arrayed, bin_dir, log)
        hidden, code_hidden, calls_hidden = status(arrayed, bin_dir, log, HIDE_JOBS=" ".join(array_ids))
        assert [c.split()[0] for c in calls_hidden].count("squeue") == 1
        run_job = next(j for j in hidden["jobs"] if j["key"] == "run")
        assert [t["task"] for t in run_job["tasks"]] == list(range(6)), run_job
        assert all(t["state"] == "COMPLETED" and t["exit_code"] == "0:0" and t["source"] == "jobcomp"
                   for t in run_job["tasks"]), run_job
        assert [j["state"] for j in hidden["jobs"]] == [j["state"] for j in shown["jobs"]] == ["COMPLETED"] * 4
        # Finished without a finalize's results.json (stand-ins): the chain's state is FAILED, exit status 1.
        assert hidden["state"] == "FAILED" and code_hidden == 1
    finally:
        subprocess.run(["scancel", *small_ids, *array_ids], capture_output=True)


def test_cancel_stops_what_has_not_ended_and_records_it(tmp_path):
    run = render(tmp_path, "checkpointing", "--model", "llama3-8b", "--scale", "0.01")
    ids = stand_in(run, 120, {})
    try:
        proc = subprocess.run([sys.executable, "-m", "mlps_slurm", "cancel", str(run), "--json"], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["cancelled"] == ["preflight", "checkpointing", "finalize"]
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["state"] == "cancelled" and set(manifest["cancellations"][0]["jobs"]) == {
            "preflight", "checkpointing", "finalize"}
        deadline = time.monotonic() + 60
        while True:
            doc = json.loads(subprocess.run([sys.executable, "-m", "mlps_slurm", "status", str(run), "--json"],
                                            capture_output=True, text=True, timeout=120).stdout)
            if doc["finished"]:
                break
            assert time.monotonic() < deadline
            time.sleep(1)
        assert {j["state"] for j in doc["jobs"]} == {"CANCELLED"} and doc["state"] == "FAILED"
        again = subprocess.run([sys.executable, "-m", "mlps_slurm", "cancel", str(run)], capture_output=True,
                               text=True, timeout=120)
        assert again.returncode == 0 and "nothing to cancel" in again.stdout
    finally:
        subprocess.run(["scancel", *ids], capture_output=True)
