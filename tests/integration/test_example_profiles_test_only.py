"""Every example profile, every benchmark and `submit all`: rendered and `--test-only`-submitted on the local cluster
(sbatch says each job would be accepted; nothing is queued, no run directory stays). Each profile is overridden
only where this cluster differs from the site it describes: the partition, the node count and shape, accounting
and site resources (account, QoS, reservation, constraint, gres) this cluster does not have, and storage paths
under a scratch directory. Container profiles render with the stand-in runtime on PATH (tests/standin/bin)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "standin" / "bin"
BENCHMARKS = {
    "checkpointing": ["--model", "llama3-8b", "--scale", "0.01", "--nodes", "2"],
    "training": ["--model", "unet3d", "--accelerator", "b200", "--scale", "0.01", "--allow-invalid"],
    "kvcache": ["--duration", "20", "--trials", "1"],
    "vectordb": ["--index", "HNSW", "--num-vectors", "20000", "--dimension", "64", "--duration", "5", "--runs", "1"],
    "all": ["--nodes", "2", "--scale", "0.01", "--allow-invalid"],
}
# What each example's site has and this cluster has not.
SITE_ONLY = {
    "localhost": {},
    "generic-cpu": {"slurm.partition": "debug", "slurm.account": "null", "slurm.qos": "null"},
    "gpu-pyxis": {"slurm.partition": "debug", "slurm.account": "null", "slurm.constraint": "null",
                  "slurm.gres": "null", "suite.checkpointing.models": "[llama3-8b]"},
    "apptainer-site": {"slurm.partition": "debug", "slurm.qos": "null", "slurm.reservation": "null"},
}


def overrides(profile: str, scratch: Path) -> list[str]:
    values = dict(SITE_ONLY[profile])
    if profile != "localhost":
        values.update({"nodes.count": "4", "nodes.cpus": "4", "nodes.accelerators_per_node": "1",
                       "storage.results_dir": str(scratch / "runs"),
                       "storage.checkpoint_dir": str(scratch / "ckpt"), "storage.data_dir": str(scratch / "data"),
                       "storage.kvcache_dir": str(scratch / "kv"), "vectordb.milvus.data_dir": str(scratch / "vdb")})
    return [a for k, v in values.items() for a in ("-o", f"{k}={v}")]


@pytest.mark.parametrize("benchmark", sorted(BENCHMARKS))
@pytest.mark.parametrize("profile", sorted(SITE_ONLY))
def test_every_example_profile_test_only_submits_every_benchmark(profile, benchmark, tmp_path):
    scratch = tmp_path / "site"
    env = {**os.environ, "PATH": f"{STANDIN}:{os.environ['PATH']}", "STANDIN_RUNTIME_LOG": str(tmp_path / "rt.log")}
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "mlps_slurm", "submit", benchmark, *BENCHMARKS[benchmark],
                           "--profile", profile, *overrides(profile, scratch), "--results-dir", str(results),
                           "--test-only"], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    answers = [line for line in proc.stdout.splitlines() if "sbatch: " in line]
    assert len(answers) >= 3 and all(" to start at " in line for line in answers), proc.stdout + proc.stderr
    assert "REFUSED" not in proc.stdout and "nothing was queued" in proc.stdout
    assert not results.exists() or not [p for p in results.iterdir() if not p.name.startswith(".")]
