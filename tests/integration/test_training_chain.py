"""The real training chain on the local Slurm cluster: preflight -> datagen (DLIO 2.0.0 under srun) -> 6 runs
(array, one at a time) -> finalize, with unet3d on 2 nodes at a small scale.

Sizes: unet3d on b200 with 2 simulated accelerators needs 7,000 files by the rules; --scale 0.024 keeps 168 of them,
exactly 12 steps of 7 samples x 2 ranks per epoch, so every file is read once per epoch. The records are made
256 KiB (spread 64 KiB) instead of 146.6 MB with --param ... --allow-invalid (record length is in neither the CLOSED
nor the OPEN list), so the chain takes about 2 minutes here. The epoch count stays at the workload's 5: the rules
allow no override of train.epochs, not even for a scaled run. The data directory is on the root filesystem and the
results on /dev/shm, since the preflight enforces MLPerf's separate-filesystems rule.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from mlps_slurm.benchmarks.training.filesizes import SizeModel, dataset_problems
from mlps_slurm.benchmarks.training.record import training_record

ROOT = Path(__file__).resolve().parent.parent.parent
SCALE = "0.024"
SMALL_RECORDS = ["--param", "dataset.record_length=262144", "--param", "dataset.record_length_stdev=65536"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Shared by the tests of this module, so the second one can reuse the first one's dataset."""
    return tmp_path_factory.mktemp("training-data")


@pytest.fixture
def results_dir():
    path = Path(tempfile.mkdtemp(prefix="mlps-training-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def submit(results: Path, data: Path, *extra: str, timeout: float = 420, scale: str = SCALE,
           wait: bool = True) -> tuple[subprocess.CompletedProcess, Path]:
    proc = subprocess.run(
        [sys.executable, "-m", "mlps_slurm", "submit", "training", "--model", "unet3d", "--accelerator", "b200",
         "--accelerators-per-node", "1", "--nodes", "2", "--scale", scale, *SMALL_RECORDS, "--allow-invalid",
         "--results-dir", str(results), "-o", f"storage.data_dir={data}",
         *(["--wait", "--timeout", str(timeout)] if wait else []), *extra],
        capture_output=True, text=True, timeout=timeout + 60, cwd=ROOT)
    runs = sorted(p for p in results.iterdir() if not p.name.startswith("."))
    return proc, runs[-1]


def job_records(job_id: str) -> list[dict[str, str]]:
    """`scontrol show job` for a job or all tasks of an array, one dict per record."""
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    return [dict(tok.split("=", 1) for tok in block.split() if "=" in tok)
            for block in out.strip().split("\n\n") if block.strip()]


def test_unet3d_chain_end_to_end(results_dir, data_dir):
    proc, run = submit(results_dir, data_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    request = training_record(run, manifest)  # the request, the plan's settings, the size datagen settled
    jobs = {k: v["job_id"] for k, v in manifest["jobs"].items()}
    assert list(jobs) == ["preflight", "datagen", "run", "finalize"]
    single = {k: job_records(jobs[k])[0] for k in ("preflight", "datagen", "finalize")}
    assert all(r["JobState"] == "COMPLETED" for r in single.values()), single
    nodes = single["preflight"]["NodeList"]
    assert single["datagen"]["ReqNodeList"] == nodes  # pinned to the validated nodes

    # Six array tasks, all COMPLETED, each started after the previous one ended (%1).
    tasks = sorted(job_records(jobs["run"]), key=lambda r: int(r["ArrayTaskId"]))
    assert [int(t["ArrayTaskId"]) for t in tasks] == list(range(6))
    assert all(t["JobState"] == "COMPLETED" and t["NodeList"] == nodes for t in tasks), tasks
    assert all(b["StartTime"] >= a["EndTime"] for a, b in zip(tasks, tasks[1:]))

    # The dataset on disk: the count the plan settled, every file within the configured spread.
    dataset = Path(request["dataset_dir"])
    assert dataset.parent.parent == data_dir and request["num_files_train"] == 168
    files = sorted((dataset / "train").glob("*.npz"))
    sizes = [f.stat().st_size for f in files]
    config = yaml.safe_load((run / "dlio" / "config" / "workload" /
                             f"{request['workload_name']}_run00.yaml").read_text())
    assert config["dataset"]["record_length"] == 262_144 and config["dataset"]["num_files_train"] == 168
    assert len(files) == 168 and dataset_problems(sizes, 168, SizeModel.of(config), str(dataset)) == []
    assert abs(statistics.fmean(sizes) / 262_144 - 1) < 0.1
    datagen = json.loads((run / "raw" / "training" / "unet3d" / "datagen" / "datagen.json").read_text())
    assert datagen["num_files"] == 168 and datagen["bytes"] == sum(sizes) and datagen["problems"] == []

    results = json.loads((run / "results" / "results.json").read_text())
    assert results["status"] == "success" and results["reasons"] == [], results["reasons"]
    assert [r["name"] for r in results["runs"]] == [f"{i:02d}" for i in range(6)]
    for r in results["runs"]:
        leaf = run / "raw" / "training" / "unet3d" / "run" / r["name"]
        summary = json.loads((leaf / "summary.json").read_text())  # DLIO's own, untouched
        assert r["au_percent"] == summary["metric"]["train_au_mean_percentage"]
        assert r["throughput_samples_per_s"] == summary["metric"]["train_throughput_mean_samples_per_second"]
        assert r["dlio_MiB_per_s"] == summary["metric"]["train_io_mean_MB_per_second"]
        assert summary["num_files_train"] == 168 and summary["epochs"] == 5
        # DLIO ran our workload file, from our config directory.
        hydra = yaml.safe_load((leaf / "dlio_config" / "hydra.yaml").read_text())["hydra"]["runtime"]
        assert hydra["choices"]["workload"] == f"{request['workload_name']}_run{r['name']}"
        assert str(run / "dlio" / "config") in [s["path"] for s in hydra["config_sources"]]
        assert json.loads((leaf / "launch.json").read_text())["problems"] == []
        # Every file is read once per epoch: the ranks' bytes are 5 x the dataset, plus the npz directory reads.
        assert 1.0 <= r["bytes_read"] / (5 * datagen["bytes"]) < 1.1, r
        assert 0.98 < r["read_vs_expected"] < 1.1 and r["measured_MB_per_s"] > 0
        assert all(d["resident_after"] == 0.0 for d in r["cache_drop"])  # dropped before the run

    s = results["summary"]
    scored = results["runs"][1:]
    assert s["scored_runs"] == 5
    assert s["au_mean_percent"] == pytest.approx(statistics.fmean(r["au_percent"] for r in scored))
    assert s["au_pass_all"] == all(r["au_percent"] >= 90 for r in scored)
    assert results["consecutive"]["ok"] and results["caching"]["fits_in_client_memory"]
    assert "share one page cache" in results["caching"]["shared_page_cache"]
    # Scaled, with INVALID parameters: judged, and INVALID for submission, saying which rules decided.
    assert results["verdict"] == "INVALID" and not results["submittable"]
    assert {"train.scaled", "train.params"} <= {f["rule_id"] for f in results["rule_findings"]}
    text = (run / "results" / "results.txt").read_text()
    assert "scored runs (5 of 5): mean AU" in text and "consecutive: yes" in text
    assert "meas. MB/s" in proc.stdout and str(run) in proc.stdout


def test_engine_crash_fails_the_run_job_and_the_report_says_why(results_dir, data_dir):
    proc, run = submit(results_dir, data_dir, "--reuse-data", "--param", "reader.multiprocessing_context=spwan",
                       timeout=300)
    assert proc.returncode == 1
    manifest = json.loads((run / "manifest.json").read_text())
    jobs = {k: v["job_id"] for k, v in manifest["jobs"].items()}
    assert job_records(jobs["datagen"])[0]["JobState"] == "COMPLETED"
    # The multiprocessing context only matters to the reader workers: datagen passed, the first run crashed.
    tasks = {r.get("ArrayTaskId"): r["JobState"] for r in job_records(jobs["run"])}
    assert tasks.pop("0") == "FAILED"
    assert set(tasks.values()) == {"CANCELLED"}  # the rest were moot: 6 consecutive runs are no longer possible
    assert job_records(jobs["finalize"])[0]["JobState"] == "FAILED"  # ran (afterany), reported, exited non-zero
    results = json.loads((run / "results" / "results.json").read_text())
    assert results["status"] == "failed" and results["verdict"] == "INVALID"
    assert "multiprocessing_context='spwan'" in results["reasons"][0]
    assert results["reasons"][0].startswith("run 00: ")
    assert all("did not start" in r and "CANCELLED" in r for r in results["reasons"][1:])
    assert "spwan" in proc.stdout
    assert manifest["request"]["reuse_data"]
    datagen = json.loads((run / "raw" / "training" / "unet3d" / "datagen" / "datagen.json").read_text())
    assert datagen["reused"] and not datagen["problems"]  # reused when the first test left the same dataset


def test_a_second_chain_never_regenerates_a_dataset_the_first_is_reading(tmp_path):
    """Chain A generates and runs; chain B (same workload and size, no --reuse-data) is submitted once A's dataset
    is ready: its datagen refuses to regenerate while A's runs are queued or running. A is untouched. (That a
    second datagen waits for a first one's lock is tested in tests/unit/test_dataset_lease.py.)"""
    data = tmp_path / "data"
    results_a = Path(tempfile.mkdtemp(prefix="mlps-training-a-", dir="/dev/shm"))
    results_b = Path(tempfile.mkdtemp(prefix="mlps-training-b-", dir="/dev/shm"))
    try:
        proc_a, run_a = submit(results_a, data, scale="0.004", wait=False)
        assert proc_a.returncode == 0, proc_a.stdout + proc_a.stderr
        generated = run_a / "raw" / "training" / "unet3d" / "datagen" / "datagen.json"
        deadline = time.monotonic() + 120
        while not generated.is_file() and time.monotonic() < deadline:  # A's runs now read the dataset
            time.sleep(0.5)
        assert generated.is_file()
        # Keep A's remaining runs queued while B plans its dataset, however fast or slow this machine is.
        run_job = json.loads((run_a / "manifest.json").read_text())["jobs"]["run"]["job_id"]
        subprocess.run(["scontrol", "hold", run_job], capture_output=True, text=True)
        try:
            proc_b, run_b = submit(results_b, data, scale="0.004", timeout=300)
        finally:
            subprocess.run(["scontrol", "release", run_job], capture_output=True, text=True)
        assert proc_b.returncode == 1, proc_b.stdout + proc_b.stderr
        waited = subprocess.run([sys.executable, "-m", "mlps_slurm", "status", str(run_a), "--wait", "--timeout",
                                 "300"], capture_output=True, text=True, timeout=360, cwd=ROOT)
        assert waited.returncode == 0, waited.stdout + waited.stderr

        b = json.loads((run_b / "results" / "results.json").read_text())
        assert b["status"] == "failed"
        assert any("is in use by another chain" in r and run_a.name in r for r in b["reasons"]), b["reasons"]
        a = json.loads((run_a / "results" / "results.json").read_text())
        assert a["status"] == "success" and a["summary"]["scored_runs"] == 5, a["reasons"]
        dataset = Path(a["dataset"]["dataset_dir"])
        assert a["dataset"]["num_files"] == len(list((dataset / "train").glob("*.npz"))) == 28
        # Both chains have ended: no lease is left behind.
        assert not any(Path(f"{dataset}.users").glob("*.json"))
    finally:
        shutil.rmtree(results_a, ignore_errors=True)
        shutil.rmtree(results_b, ignore_errors=True)
