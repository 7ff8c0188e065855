"""Container profiles run for real on the local Slurm cluster, through the stand-in apptainer (tests/standin/bin:
it enforces what apptainer enforces before a container starts, then runs the command on the host).

The profile is the example apptainer-site (with its --cleanenv) overridden for the local cluster: the debug
partition, no QoS/reservation/modules, srun --mpi=pmix (the PMIx case --cleanenv used to break), this venv's Python,
and a dummy image file. The jobs find the stand-in on PATH because sbatch exports the submitter's environment
(--export=ALL, its default; the tool never passes --export). pyxis is an srun plugin this cluster does not have:
its scripts and probe decisions are covered by unit tests only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "standin" / "bin"


def local_overrides(tmp_path: Path, python: str = sys.executable) -> list[str]:
    image = tmp_path / "mlps-slurm.sif"
    image.write_text("a stand-in image: the stand-in runtime only checks that the file exists\n")
    overrides = {
        "slurm.partition": "debug", "slurm.qos": "null", "slurm.reservation": "null",
        "slurm.extra_sbatch_args": "[]", "slurm.time_limit.run": "00:10:00",
        "nodes.count": "4", "nodes.cpus": "4", "nodes.memory_gb": "null", "nodes.accelerators_per_node": "2",
        "launcher.kind": "srun", "launcher.mpi": "pmix", "launcher.extra_args": "[]",
        "environment.python": python, "environment.modules": "[]",
        "container.image": str(image), "container.apptainer": "apptainer",
        "storage.filesystem_type": "null",
        # none of these exist yet: the chain must create them before anything binds them
        "storage.checkpoint_dir": str(tmp_path / "fresh" / "ckpt"),
        "storage.data_dir": str(tmp_path / "fresh" / "data"),
        "storage.kvcache_dir": str(tmp_path / "fresh" / "kv"),
        "vectordb.milvus.data_dir": str(tmp_path / "fresh" / "vdb"),
    }
    return [a for k, v in overrides.items() for a in ("-o", f"{k}={v}")]


def run_cli(tmp_path: Path, *args: str, timeout: float = 600, standin: bool = True) -> subprocess.CompletedProcess:
    """The CLI with the stand-in runtime on PATH (or, standin=False, without: a login node with no apptainer)."""
    path = f"{STANDIN}:{os.environ['PATH']}" if standin else os.environ["PATH"]
    env = {**os.environ, "PATH": path, "STANDIN_RUNTIME_LOG": str(tmp_path / "runtime.log")}
    return subprocess.run([sys.executable, "-m", "mlps_slurm", *args], capture_output=True, text=True,
                          timeout=timeout + 60, env=env, cwd=ROOT)


def only_run(results: Path) -> Path:
    runs = [p for p in results.iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1, runs
    return runs[0]


def test_checkpointing_chain_in_the_standin_container(tmp_path):
    results = tmp_path / "runs"
    proc = run_cli(tmp_path, "submit", "checkpointing", "--profile", "apptainer-site", *local_overrides(tmp_path),
                   "--model", "llama3-8b", "--scale", "0.002", "--seconds-between-checkpoints", "1",
                   "--results-dir", str(results), "--wait", "--timeout", "600")
    run = only_run(results)
    assert proc.returncode == 0, proc.stdout + proc.stderr + "".join(p.read_text() for p in (run / "logs").iterdir())
    result = json.loads((run / "results" / "results.json").read_text())
    assert result["status"] == "success" and result["reasons"] == []
    assert len([c for c in result["metrics"]["checkpoints"] if c["phase"] == "write"]) == 10
    assert result["metrics"]["hosts"] == ["n1", "n2", "n3", "n4"]  # PMIx reached the ranks through --cleanenv
    # Every step went through the stand-in with --cleanenv, binding only what checkpointing uses.
    calls = (tmp_path / "runtime.log").read_text().splitlines()
    assert calls and all("--cleanenv" in c for c in calls)
    binds = {c.split("--bind ", 1)[1].split()[0] for c in calls}
    ckpt = str(tmp_path / "fresh" / "ckpt")
    assert f"{results}:{results},{ckpt}:{ckpt}" in binds  # the benchmark's jobs
    assert f"{results}:{results}" in binds  # the finalize: only the run directory
    assert not any("fresh/data" in b or "fresh/kv" in b or "fresh/vdb" in b for b in binds)
    assert (tmp_path / "fresh" / "ckpt").is_dir() and not (tmp_path / "fresh" / "data").exists()
    preflight = json.loads((run / "preflight" / "preflight.json").read_text())
    assert preflight["ok"], preflight.get("failures")


def test_a_bind_source_that_cannot_be_created_is_reported_with_its_key(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    results = tmp_path / "runs"
    proc = run_cli(tmp_path, "submit", "checkpointing", "--profile", "apptainer-site", *local_overrides(tmp_path),
                   "-o", f"storage.checkpoint_dir={blocker / 'ckpt'}", "--model", "llama3-8b", "--scale", "0.002",
                   "--results-dir", str(results), "--wait", "--timeout", "300", timeout=300)
    assert proc.returncode != 0
    run = only_run(results)
    logs = "".join(p.read_text() for p in (run / "logs").glob("mlps-preflight-*"))
    assert f"mlps-slurm: cannot create storage.checkpoint_dir = {blocker / 'ckpt'}, which the container binds" in logs
    assert "mount source" not in logs  # stopped before the runtime was asked to bind it
    # The finalize binds only the run directory, so it still reports.
    result = json.loads((run / "results" / "results.json").read_text())
    assert result["status"] == "failed" and "preflight" in " ".join(result["reasons"])


def test_an_image_without_the_engine_fails_the_preflight_with_the_probe_answer(tmp_path):
    # An "image" whose Python has mlps-slurm but not DLIO: this venv's Python with dlio_benchmark hidden.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'dlio_benchmark':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (hidden by the test)')\n"
        "sys.meta_path.insert(0, _Hide())\n")
    python = tmp_path / "python-without-dlio"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={hide} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    results = tmp_path / "runs"
    overrides = local_overrides(tmp_path, str(python))
    request = ["--model", "unet3d", "--accelerator", "b200", "-N", "1", "-a", "1", "--scale", "0.01",
               "--results-dir", str(results)]
    # A login node that can run the image asks it at submit time, through the runtime, and refuses.
    refused = run_cli(tmp_path, "submit", "training", "--profile", "apptainer-site", *overrides, *request,
                      "--test-only", timeout=120)
    assert refused.returncode != 0
    assert "lacks dlio_benchmark" in refused.stderr and "in the image" in refused.stderr, refused.stderr
    assert "apptainer exec --cleanenv" in (tmp_path / "runtime.log").read_text()
    # A login node without apptainer (the nodes load it, here through environment.setup) leaves the probe to
    # the preflight job, which runs it in the container and stops the chain with the probe's answer.
    nodes_only = ["-o", f'environment.setup=["export PATH={STANDIN}:$PATH"]']
    plan_only = run_cli(tmp_path, "submit", "training", "--profile", "apptainer-site", *overrides, *nodes_only,
                        *request, "--test-only", timeout=120, standin=False)
    assert plan_only.returncode == 0, plan_only.stdout + plan_only.stderr  # the probe does not stop it here
    proc = run_cli(tmp_path, "submit", "training", "--profile", "apptainer-site", *overrides, *nodes_only, *request,
                   "--wait", "--timeout", "300", timeout=300, standin=False)
    assert proc.returncode != 0
    run = only_run(results)
    manifest = json.loads((run / "manifest.json").read_text())
    assert [p["benchmark"] for p in manifest["preflight"]["engine_probes"]] == ["training"]
    assert any("probed by the preflight job inside the container" in n for n in manifest["plan"]["notes"])
    preflight = json.loads((run / "preflight" / "preflight.json").read_text())
    failed = {f["check"]: f["message"] for f in preflight["failures"]}
    assert "training: the engine cannot run" in failed["engine.training"]
    assert "lacks dlio_benchmark" in failed["engine.training"]
    assert "requirements/nodeps.txt" in failed["engine.training"]  # the fix
    result = json.loads((run / "results" / "results.json").read_text())
    assert result["status"] == "failed" and "engine.training" in " ".join(result["reasons"])
