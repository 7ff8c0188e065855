"""`mlps-slurm submit all` on the local Slurm cluster: one preflight, training (datagen + 6 runs) then
checkpointing, one finalize that finalizes both runs, verifies them as one submission and reports why it did not
bundle (scaled runs are INVALID). Then `verify` and `bundle --allow-invalid` take the suite directory as it is.

Sizes: 2 nodes x 1 simulated accelerator; --scale 0.004 keeps 28 unet3d files (2 steps of 7 x 2 per epoch) of
256 KiB (suite.training.params, INVALID, hence --allow-invalid), and llama3-8b checkpoints of 450 MB (on tmpfs). About a
minute here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def job_records(job_id: str) -> list[dict[str, str]]:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    return [dict(tok.split("=", 1) for tok in block.split() if "=" in tok)
            for block in out.strip().split("\n\n") if block.strip()]


@pytest.fixture
def dirs():
    results = Path(tempfile.mkdtemp(prefix="mlps-suite-", dir="/dev/shm"))  # not the data's filesystem
    data = Path(tempfile.mkdtemp(prefix="mlps-suite-data-", dir="/var/tmp"))
    yield results, data
    shutil.rmtree(results, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)


def mlps(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlps_slurm", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture
def tmp_ckpt():
    """Checkpoints on tmpfs: 20 x 450 MB through a disk with fsync took a minute; the chain is what is tested."""
    path = Path(tempfile.mkdtemp(prefix="mlps-suite-ckpt-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_submit_all_runs_every_enabled_benchmark_in_one_chain(dirs, tmp_path, tmp_ckpt):
    results_dir, data_dir = dirs
    proc = mlps("submit", "all", "--nodes", "2", "--scale", "0.004", "--seconds-between-checkpoints", "0",
                "--allow-invalid", "--results-dir", str(results_dir), "-o", "nodes.accelerators_per_node=1",
                "-o", f"storage.data_dir={data_dir}", "-o", f"storage.checkpoint_dir={tmp_ckpt}",
                "-o", "suite.training.params=[dataset.record_length=262144, dataset.record_length_stdev=65536]",
                "--wait", "--timeout", "600", timeout=700)
    (suite,) = [p for p in results_dir.iterdir() if not p.name.startswith(".")]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((suite / "manifest.json").read_text())
    jobs = {k: v["job_id"] for k, v in manifest["jobs"].items()}
    assert list(jobs) == ["preflight", "training-unet3d.datagen", "training-unet3d.run",
                          "checkpointing-llama3-8b.checkpointing", "finalize"]

    # One preflight validated the nodes; every benchmark job ran there, one workload after the other.
    pre = job_records(jobs["preflight"])[0]
    datagen = job_records(jobs["training-unet3d.datagen"])[0]
    runs = sorted(job_records(jobs["training-unet3d.run"]), key=lambda r: int(r["ArrayTaskId"]))
    ckpt = job_records(jobs["checkpointing-llama3-8b.checkpointing"])[0]
    final = job_records(jobs["finalize"])[0]
    assert [r["JobState"] for r in (pre, datagen, *runs, ckpt, final)] == ["COMPLETED"] * 10
    assert {r["NodeList"] for r in (datagen, *runs, ckpt)} == {pre["NodeList"]}
    assert ckpt["StartTime"] >= runs[-1]["EndTime"]  # never two benchmarks at once on the same clients
    assert final["StartTime"] >= ckpt["EndTime"]

    # Each workload is a complete run directory of its own, standing alone once finalized.
    members = {m["benchmark"]: suite / m["dir"] for m in manifest["request"]["members"]}
    for benchmark, run in members.items():
        m = json.loads((run / "manifest.json").read_text())
        assert m["benchmark"] == benchmark and m["jobs"]["preflight"]["job_id"] == jobs["preflight"]
        assert not (run / "preflight").is_symlink() and json.loads((run / "preflight" / "preflight.json")
                                                                   .read_text())["ok"]
        r = json.loads((run / "results" / "results.json").read_text())
        assert r["status"] == "success" and r["verdict"] == "INVALID" and not r["submittable"], r["reasons"]
        assert (run / "verify.json").is_file()
    training = json.loads((members["training"] / "results" / "results.json").read_text())
    assert [r["name"] for r in training["runs"]] == [f"{i:02d}" for i in range(6)]
    assert training["dataset"]["num_files"] == 28 and training["summary"]["scored_runs"] == 5
    checkpointing = json.loads((members["checkpointing"] / "results" / "results.json").read_text())
    assert [checkpointing["metrics"][p]["count"] for p in ("write", "read")] == [10, 10]
    # The datagen job sized the dataset from the memory the suite's preflight measured, through the link.
    # It wrote the settled size to datasize.json; the manifest is never rewritten.
    assert "preflight facts" in json.loads((members["training"] / "datasize.json").read_text())["memory_source"]

    summary = json.loads((suite / "results" / "results.json").read_text())
    assert summary["status"] == "success" and summary["submission_verdict"] == "INVALID"
    assert [m["name"] for m in summary["members"]] == ["training-unet3d", "checkpointing-llama3-8b"]
    assert summary["bundle"]["built"] is False and "INVALID" in summary["bundle"]["reason"]
    assert json.loads((suite / "verify.json").read_text())["submission"] is True
    assert "suite " in proc.stdout and "training-unet3d" in proc.stdout and "phase  count" in proc.stdout

    # The login-node tools take the suite directory as it is.
    verify = mlps("verify", str(suite), "--output", str(tmp_path / "v"))
    assert verify.returncode == 4, verify.stdout + verify.stderr  # INVALID (scaled)
    assert mlps("verify", str(suite), "--allow-invalid").returncode == 0
    assert json.loads((tmp_path / "v" / "verify.json").read_text())["verdict"] == "INVALID"
    out = tmp_path / "bundle"
    bundle = mlps("bundle", str(suite), "--allow-invalid", "--org", "acme", "--system", "local4", "-O", str(out))
    assert bundle.returncode == 0, bundle.stdout + bundle.stderr
    assert sorted(p.name for p in (out / "invalid" / "acme" / "results" / "local4").iterdir()) == [
        "checkpointing", "training"]
    check = mlps("bundle", "--check", str(out / "bundle.tar.gz"))
    assert check.returncode == 0, check.stdout + check.stderr
