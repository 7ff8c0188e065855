"""The kv-cache chain on the real local cluster: 2 nodes x 2 clients, the builtin engine writing and reading real
.npy files, the finalize aggregating what the ranks wrote; and a rank that dies mid-window."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from mlps_slurm.benchmarks.kvcache import catalog as cat

pytestmark = pytest.mark.slurm
RANKS = 4  # 2 nodes x 2 ranks per node


@pytest.fixture
def dirs(tmp_path):
    # The results on /dev/shm, the cache on /: separate filesystems, as the rules want (the localhost profile's way).
    results = Path(tempfile.mkdtemp(prefix="mlps-kvcache-", dir="/dev/shm"))
    yield results, tmp_path / "cache"
    shutil.rmtree(results, ignore_errors=True)


def submit(results: Path, cache: Path, *extra: str, timeout: float = 600, duration: int = 20) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mlps_slurm", "submit", "kvcache", "--duration", str(duration), "--trials", "1",
         "-N", "2",
         "-a", "2", "--users", "4", "--inter-option-delay", "0", "--results-dir", str(results),
         "-o", f"storage.kvcache_dir={cache}", "--wait", "--timeout", str(timeout), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def the_run(results: Path) -> Path:
    (run,) = [p for p in results.iterdir() if not p.name.startswith(".")]
    return run


def test_three_options_write_and_read_real_files_and_aggregate(dirs):
    results, cache = dirs
    proc = submit(results, cache, "--keep-cache", duration=8)  # three 8 s windows: enough entries reach storage
    out, err = proc.communicate(timeout=700)
    assert proc.returncode == 0, out + err
    run = the_run(results)
    summary = json.loads((run / "results" / "results.json").read_text())
    assert summary["status"] == "success" and summary["verdict"] == "OPEN", summary["reasons"]
    assert {f["rule_id"] for f in summary["rule_findings"]} >= {"kvcache.engine", "kvcache.options"}
    manifest = json.loads((run / "manifest.json").read_text())
    cache_base = Path(manifest["settings"]["cache_dir"])
    for number, option in summary["options"].items():
        params = cat.OPTIONS[int(number)]
        model = cat.MODELS[params.model]
        assert option["complete"] and option["rank_count"] == RANKS and option["trial_count"] == 1
        per_rank_read = 0.0
        for rank in range(RANKS):
            rank_dir = run / "raw" / "kv_cache" / f"option_{number}" / "trial_0" / f"rank_{rank}"
            (result_file,) = rank_dir.glob("kvcache_results_*.json")
            data = json.loads(result_file.read_text())
            stats = data["summary"]["cache_stats"]
            assert data["seed"] == 42 + rank and data["mlps_slurm"]["engine"] == "builtin"
            assert stats["write_iops"] > 0 and stats["total_write_bytes"] > 0
            read_bw = 0.0 if stats["storage_entries"] == 0 else stats["tier_storage_read_bandwidth_gbps"]
            per_rank_read += read_bw
            proc_io = data["mlps_slurm"]["measured"]["proc_io"]
            if number == "3":
                # The last option (each starts by clearing the rank's cache directory, as the reference does),
                # and one whose entries all went to storage. What the storage tier held once every thread had finished is
                # exactly what is left on the cache filesystem: that many .npy files of tokens x bytes per token,
                # whose data bytes add up to the tier's accounted bytes.
                files = sorted((cache_base / f"rank_{rank}").glob("*.npy"))
                measured = data["mlps_slurm"]["measured"]
                assert len(files) == measured["storage_entries_at_end"] > 0
                data_bytes = 0
                for f in files:
                    arr = np.load(f, mmap_mode="r")
                    assert arr.dtype == np.float16 and arr.shape[0] == model.num_layers
                    assert arr.nbytes % model.bytes_per_token == 0
                    data_bytes += arr.nbytes
                assert data_bytes == measured["storage_bytes_at_end"]
                io = data["mlps_slurm"]["files"]
                # The OS saw what the engine wrote, and the reads bypassed the page cache (DONTNEED before each).
                assert proc_io["write_bytes"] >= io["file_bytes_written"] > 0
                assert proc_io["read_bytes"] >= 0.9 * io["file_bytes_read"]
        assert option["read_bandwidth_gibps"] == pytest.approx(per_rank_read)  # one trial: the sum over ranks
    text = (run / "results" / "results.txt").read_text()
    assert "llama3.1-70b-instruct" in text and "meas. rd" in text
    shutil.rmtree(cache, ignore_errors=True)


def _rank_pid(run_id: str, rank: int, deadline: float) -> int:
    while time.monotonic() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"mlps_slurm.benchmarks.kvcache.job" in cmd and any(run_id.encode() in c for c in cmd) \
                    and f"SLURM_PROCID={rank}".encode() in env:
                return int(pid)
        time.sleep(0.5)
    raise AssertionError(f"rank {rank} of {run_id} never started")


def test_a_rank_that_dies_fails_the_job_and_is_named(dirs):
    results, cache = dirs
    proc = submit(results, cache, "--option", "1", timeout=300)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (results.exists() and any(not p.name.startswith(".")
                                                                         for p in results.iterdir())):
        time.sleep(0.5)
    run = the_run(results)
    pid = _rank_pid(run.name, 1, deadline)
    time.sleep(5)  # inside the 20 s window
    os.kill(pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 1, out + err
    summary = json.loads((run / "results" / "results.json").read_text())
    assert summary["status"] == "failed" and summary["verdict"] == "INVALID"
    assert any("rank 1 on" in r and "SIGTERM" in r for r in summary["reasons"]), summary["reasons"]
    assert summary["jobs"]["option1"]["state"] == "FAILED"
    assert summary["options"]["1"]["complete"] is False
    error = json.loads((run / "raw" / "kv_cache" / "option_1" / "trial_0" / "rank_1" / "engine_error.json")
                       .read_text())
    assert error["rank"] == 1 and "SIGTERM" in error["error"]
    # The rank removed its cache files on the way out.
    assert not list((cache / run.name / "rank_1").glob("*.npy"))
