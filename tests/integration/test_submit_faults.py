"""Submission when sbatch's answer is lost (real Slurm, an sbatch wrapper on PATH that fails after the controller
queued the job): a retry finds the queued job by its token instead of queuing it twice; when the tool gives up,
nothing it queued stays behind (held preflight included) and no run directory is left."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parent.parent.parent
DEMO = ["submit", "checkpointing", "--model", "llama3-8b", "--scale", "0.002", "--seconds-between-checkpoints", "0"]


def wrapper(bin_dir: Path, mode: str, fail_calls: str) -> Path:
    """sbatch that really submits, then on the calls listed in `fail_calls` (1-based, space separated) loses the
    answer: `transient` prints a transient error, `hang` sleeps past the tool's timeout, `fatal` a plain error."""
    real = shutil.which("sbatch")
    counter = bin_dir / "calls"
    lose = {"transient": 'echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2; exit 1',
            "hang": "sleep 5; exit 0",
            "fatal": 'echo "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified" >&2; exit 1'}[mode]
    script = f"""#!/bin/bash
n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}
echo "${{@: -1}}" >> {bin_dir / "scripts"}
out=$({real} "$@") || exit $?
case " {fail_calls} " in *" $n "*) {lose} ;; esac
echo "$out"
"""
    (bin_dir / "sbatch").write_text(script)
    (bin_dir / "sbatch").chmod(0o755)
    return counter


def my_jobs() -> list[tuple[str, str, str]]:
    out = subprocess.run(["squeue", "-h", "--me", "--states=all", "-o", "%A|%k|%T"], capture_output=True,
                         text=True).stdout
    return [tuple(line.split("|")) for line in out.splitlines()]  # type: ignore[misc]


def submit(results: Path, bin_dir: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlps_slurm", *DEMO, "--results-dir", str(results), *extra],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env})


@pytest.fixture
def dirs(tmp_path):
    results = Path(tempfile.mkdtemp(prefix="mlps-submit-faults-", dir="/dev/shm"))
    (tmp_path / "bin").mkdir()
    yield results, tmp_path / "bin"
    shutil.rmtree(results, ignore_errors=True)


@pytest.mark.parametrize("mode", ["transient", "hang"])
def test_a_lost_answer_is_found_not_submitted_twice(dirs, mode):
    results, bin_dir = dirs
    counter = wrapper(bin_dir, mode, "1 2")  # the preflight's and the benchmark job's answers are lost
    proc = submit(results, bin_dir, "--json", "--wait", "--timeout", "300", MLPS_SLURM_TIMEOUT_S="2")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    run_id = doc["run_id"]
    tokens = [c for _, c, _ in my_jobs() if c.startswith(f"mlps-slurm:{run_id}:")]
    # one job per token: preflight, checkpointing, finalize; never a duplicate
    assert sorted(tokens) == sorted(f"mlps-slurm:{run_id}:{k}" for k in ("preflight", "checkpointing", "finalize"))
    assert int(counter.read_text()) == 3  # found by the token, not submitted again
    assert doc["exit_code"] == 0


def test_giving_up_cancels_what_was_queued_and_removes_the_run(dirs):
    results, bin_dir = dirs
    wrapper(bin_dir, "fatal", "2")  # the benchmark job is queued, then sbatch reports a plain error
    proc = submit(results, bin_dir)
    assert proc.returncode != 0 and "Invalid account" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not [p for p in results.iterdir() if not p.name.startswith(".")], "a half-written run was left"
    # the run the wrapper saw (other chains may run on the cluster meanwhile)
    run_id = Path((bin_dir / "scripts").read_text().splitlines()[0]).parent.parent.name
    ours = [(j, c, s) for j, c, s in my_jobs() if c.startswith(f"mlps-slurm:{run_id}:")]
    assert {c.rsplit(":", 1)[1] for _, c, _ in ours} == {"preflight", "checkpointing"}, ours
    leftover = [(j, c, s) for j, c, s in ours if s not in ("CANCELLED",)]
    assert leftover == [], leftover  # the held preflight and the queued benchmark job were cancelled
