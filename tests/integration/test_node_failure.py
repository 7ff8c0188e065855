"""A node dies under a running benchmark job (its slurmd killed): the job is not requeued into a hang (it is pinned
to the preflight's nodes), the finalize runs and reports NODE_FAIL with the node, the verdict is INVALID; then
`bin/mlps-local-cluster up` restarts only the dead slurmd and keeps Slurm's state and job ids."""

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

import pytest

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parent.parent.parent
CLUSTER_DIR = Path(os.environ.get("MLPS_CLUSTER_DIR", "/var/tmp/mlps-local-cluster"))


def status(run: Path) -> tuple[dict, int]:
    proc = subprocess.run([sys.executable, "-m", "mlps_slurm", "status", str(run), "--json"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode in (0, 1, 5), f"status exited {proc.returncode}: {proc.stderr}"
    return json.loads(proc.stdout), proc.returncode


def kill_node(slurmd_pid: int) -> None:
    """The emulated node dies whole: its slurmd and every process in its own mount namespace (its step daemons,
    the ranks and samplers they started), as a power loss would; nothing of it lingers on the shared host."""
    namespace = os.readlink(f"/proc/{slurmd_pid}/ns/mnt")
    if namespace == os.readlink("/proc/self/ns/mnt"):
        pytest.skip("the emulated nodes share the host's mount namespace (MLPS_CLUSTER_NODE_NAMESPACES=0)")
    for _ in range(3):  # processes may be starting while we look
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns" / "mnt") == namespace:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue
        time.sleep(0.2)


def job(doc: dict, key: str) -> dict:
    return next(j for j in doc["jobs"] if j["key"] == key)


@pytest.fixture
def results_dir():
    path = Path(tempfile.mkdtemp(prefix="mlps-nodefail-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_dead_node_fails_the_job_the_finalize_says_so_and_up_repairs_in_place(results_dir):
    proc = subprocess.run([sys.executable, "-m", "mlps_slurm", "submit", "checkpointing", "--model", "llama3-8b",
                           "--scale", "0.002", "--seconds-between-checkpoints", "8", "--nodes", "4",
                           "--results-dir", str(results_dir), "--json"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    run = Path(json.loads(proc.stdout)["run_dir"])
    deadline = time.monotonic() + 300
    while True:
        doc, _ = status(run)
        ckpt = job(doc, "checkpointing")
        if ckpt["state"] == "RUNNING" and ckpt.get("progress", {}).get("done", 0) >= 1:
            break
        assert not doc["finished"] and time.monotonic() < deadline, doc
        time.sleep(0.5)
    victim = "n4"
    pid = int((CLUSTER_DIR / "run" / f"slurmd.{victim}.pid").read_text().strip())
    try:
        kill_node(pid)
        deadline = time.monotonic() + 300
        while not (doc := status(run)[0])["finished"]:
            assert time.monotonic() < deadline, f"the chain hung after {victim} died: {doc}"
            time.sleep(2)
        ckpt = job(doc, "checkpointing")
        assert ckpt["state"] == "NODE_FAIL", ckpt
        assert job(doc, "finalize")["state"] in ("COMPLETED", "FAILED") and doc["state"] == "FAILED"
        results = json.loads((run / "results" / "results.json").read_text())
        assert results["status"] == "failed" and results["verdict"] == "INVALID"
        assert any("NODE_FAIL" in r for r in results["reasons"]), results["reasons"]
        assert results["jobs"]["checkpointing"]["state"] == "NODE_FAIL"
        # the checkpoint the journal proves complete is kept (for resume); the partial rest was removed
        files = results["checkpoint_files"]
        assert len(files["kept"]) >= 1 and files["kept"][0] == "ckpt_0", files
        assert sorted(p.name for p in Path(files["dir"]).glob("ckpt_*")) == files["kept"]
        assert "for `mlps-slurm resume`" in (run / "results" / "results.txt").read_text()
        last_id = max(int(j["job_id"]) for j in doc["jobs"])
    finally:
        repaired = subprocess.run([str(ROOT / "bin" / "mlps-local-cluster"), "up"], capture_output=True, text=True,
                                  timeout=300)
    assert repaired.returncode == 0, repaired.stderr
    assert "repairing" in repaired.stdout + repaired.stderr and "from scratch" not in repaired.stdout
    # Slurm kept its state: the chain's jobs are still known and new ids continue after them.
    probe = subprocess.run(["sbatch", "--parsable", "--hold", "-o", "/dev/null", "--wrap", "true"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    new_id = int(probe.stdout.strip().split(";")[0])
    subprocess.run(["scancel", str(new_id)], capture_output=True)
    assert new_id > last_id
    assert status(run)[0]["jobs"][1]["state"] == "NODE_FAIL"  # not another job's state under a reused id
