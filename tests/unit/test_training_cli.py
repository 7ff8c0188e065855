"""`datasize training`, `render training` and refusals as a user sees them: output, exit status, nothing left behind.

The commands run through `mlps-slurm` when they are registered there, else through their own module.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


PREFIX = [sys.executable, "-m", "mlps_slurm"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*PREFIX, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_datasize_prints_files_bytes_and_the_deciding_term():
    proc = run("datasize", "training", "--model", "unet3d", "--accelerator", "b200", "--accelerators-per-node", "8",
               "--nodes", "1", "--client-memory-gb", "1024")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "accelerator term: 500 steps x batch 7 x 8 accelerators = 28,000 samples" in out
    assert "memory term:      1 hosts x 1024.00 GiB x 5 x 2^30 / 146,600,628 B = 37,501 samples" in out
    assert "decided by:       memory" in out
    assert "files:            37,501 x 1 sample(s) per file" in out
    assert f"bytes:            {37_501 * 146_600_628:,}" in out


def test_datasize_reads_memory_from_a_runs_preflight(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "preflight").mkdir(parents=True)
    (run_dir / "preflight" / "preflight.json").write_text(
        '{"ok": true, "reports": {"n1": {"facts": {"memory": {"total_bytes": 274877906944}}}}}')
    proc = run("datasize", "training", "--model", "retinanet", "--accelerator", "mi355", "-a", "8", "-N", "2",
               "--from-run", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    # 2 x 256 GiB x 5 x 2^30 / 322,957 = 8,511,284.x -> 8,511,285 samples > 500 x 32 x 16 = 256,000
    assert "decided by:       memory" in proc.stdout and "files:            8,511,285" in proc.stdout
    assert "preflight facts of" in proc.stdout


def test_datasize_without_memory_says_where_to_get_it():
    proc = run("datasize", "training", "--model", "unet3d", "--accelerator", "b200", "-a", "1", "-N", "1")
    assert proc.returncode == 2
    assert "--client-memory-gb GIB, or --from-run RUN" in proc.stderr and "nodes.memory_gb" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--model", "unet3d", "--accelerator", "b200", "--param", "reader.batch_size=4"],
     "allowed in neither division"),
    (["--model", "dlrm", "--accelerator", "b200"], "MLCommons fork of DLIO"),
    (["--model", "unet3d", "--accelerator", "mi355"], "no computation time or batch size"),
    (["--model", "resnet50", "--accelerator", "h100"], "needs tensorflow"),
    (["--model", "unet3d", "--accelerator", "b200", "--param", "workflow.train=False", "--allow-invalid"],
     "mlps-slurm sets workflow.train itself"),
])
def test_refusals_exit_2_and_leave_no_run(tmp_path, args, message):
    if message == "needs tensorflow" and importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("tensorflow is installed here: resnet50 is accepted")
    results = tmp_path / "runs"
    proc = run("render", "training", *args, "-a", "1", "-N", "2", "--scale", "0.01", "--results-dir", str(results))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert not results.exists() or not any(results.iterdir())


def test_render_writes_the_chain(tmp_path):
    results = tmp_path / "runs"
    proc = run("render", "training", "--model", "unet3d", "--accelerator", "b200", "-a", "1", "-N", "2",
               "--scale", "0.01", "--param", "reader.read_threads=2", "--results-dir", str(results),
               "-o", "nodes.memory_gb=16")
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = results.iterdir()
    assert sorted(p.name for p in (run_dir / "scripts").iterdir()) == [
        "00-preflight.sbatch", "01-datagen.sbatch", "02-run.sbatch", "03-finalize.sbatch"]
    assert "pre-run rules check: INVALID" in proc.stdout and "train.scaled" in proc.stdout
    assert "note: scaled run (--scale 0.01): 70 of the 7000 files" in proc.stdout
