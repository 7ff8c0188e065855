"""Profiles against the running local cluster: validate --live, init --from-cluster, submit --test-only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlps_slurm", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_localhost_profile_passes_live_validation(tmp_path):
    proc = cli("profiles", "validate", "localhost", "--live", "-o", f"storage.results_dir={tmp_path}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   slurm.partition: run jobs go to partition 'debug' (up)" in proc.stdout
    assert "FAIL" not in proc.stdout


def test_missing_partition_fails_live_validation_by_name(tmp_path):
    proc = cli("profiles", "validate", "localhost", "--live", "-o", "slurm.partitions.run=gpu-a100")
    assert proc.returncode == 2
    assert "FAIL slurm.partitions.run: partition 'gpu-a100' does not exist on this cluster; existing " \
           "partitions: debug" in proc.stdout


def test_too_many_nodes_fails_live_validation():
    proc = cli("profiles", "validate", "localhost", "--live", "-o", "nodes.count=64")
    assert proc.returncode == 2
    assert "FAIL nodes.count: partition 'debug' has 4 nodes, the profile asks for 64" in proc.stdout


def test_init_from_cluster_writes_a_profile_that_validates_live(tmp_path):
    out = tmp_path / "here.yaml"
    proc = cli("profiles", "init", "--from-cluster", "--name", "here", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "partition: debug" in text and "count: 4" in text
    check = cli("profiles", "validate", str(out), "--live", "-o", f"storage.results_dir={tmp_path}")
    assert check.returncode == 0, check.stdout + check.stderr


def test_submit_test_only_queues_nothing_and_keeps_no_run(tmp_path):
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    proc = cli("submit", "checkpointing", "--model", "llama3-8b", "--test-only", "--results-dir",
               str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr
    assert "checkpointing  sbatch: Job" in proc.stdout and "in partition debug" in proc.stdout
    assert "nothing was queued" in proc.stdout
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert set(after) <= set(before)
    assert not (tmp_path / "runs").exists()


def test_submit_test_only_reports_a_refused_job(tmp_path):
    proc = cli("submit", "checkpointing", "--model", "llama3-8b", "--test-only", "--results-dir",
               str(tmp_path / "runs"), "-o", "slurm.partitions.run=nosuchpart")
    assert proc.returncode == 1
    assert "checkpointing  REFUSED" in proc.stdout and "invalid partition" in proc.stdout.lower()
