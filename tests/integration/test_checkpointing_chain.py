"""The real checkpointing chain on the local Slurm cluster: preflight -> engine under srun -> finalize."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlps_slurm.benchmarks.checkpointing.catalog import LLAMA3_MODELS, rank_shards

SCALE = 0.0005  # llama3-8b: ~56 MB per checkpoint over 8 ranks


def submit(tmp_path: Path, *extra: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, Path]:
    results = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "mlps_slurm", "submit", "checkpointing", "--model", "llama3-8b", "--scale", str(SCALE),
         "--seconds-between-checkpoints", "0", "--results-dir", str(results), "--wait", "--timeout", str(timeout),
         *extra],
        capture_output=True, text=True, timeout=timeout + 60)
    runs = [p for p in results.iterdir() if not p.name.startswith(".")] if results.exists() else []
    assert len(runs) == 1, (proc.stdout, proc.stderr)
    return proc, runs[0]


def slurm_state(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    return dict(tok.split("=", 1) for tok in out.split() if "=" in tok)


def test_chain_completes_with_ten_writes_and_reads(tmp_path):
    proc, run = submit(tmp_path, "-o", f"storage.checkpoint_dir={tmp_path / 'ckpt'}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    states = {key: slurm_state(manifest["jobs"][key]["job_id"]) for key in ("preflight", "checkpointing", "finalize")}
    for key, state in states.items():
        assert state["JobState"] == "COMPLETED", (key, state)
    # The benchmark ran exactly on the nodes the preflight validated (pinned by the preflight job).
    assert states["checkpointing"]["ReqNodeList"] == states["preflight"]["NodeList"] == "n[1-4]"
    assert states["checkpointing"]["NodeList"] == states["preflight"]["NodeList"]
    results = json.loads((run / "results" / "results.json").read_text())
    assert results["status"] == "success" and results["reasons"] == []
    assert results["submittable"] is False  # scaled
    metrics = results["metrics"]
    expected = sum(s.total_bytes for s in rank_shards(LLAMA3_MODELS["llama3-8b"], 8, SCALE))
    writes = [c for c in metrics["checkpoints"] if c["phase"] == "write"]
    reads = [c for c in metrics["checkpoints"] if c["phase"] == "read"]
    assert len(writes) == 10 and len(reads) == 10
    assert all(c["bytes"] == expected for c in writes + reads)
    assert all(c["throughput_GBps"] > 0 and c["duration_s"] > 0 for c in writes + reads)
    assert metrics["hosts"] == ["n1", "n2", "n3", "n4"]  # 8 ranks spread over the 4 emulated nodes
    preflight = json.loads((run / "preflight" / "preflight.json").read_text())
    assert preflight["ok"] and preflight["nodes"] == ["n1", "n2", "n3", "n4"]
    # The preflight's log says what it checked and nothing alarming beside it (the pinning used to add a Slurm
    # "Job is pending execution" line per pinned job).
    log = (run / "logs" / f"mlps-preflight-{manifest['jobs']['preflight']['job_id']}.out").read_text()
    assert log.startswith("preflight: PASSED on 4 node(s)") and "slurm_allocation_lookup" not in log, log
    # The user-facing output: the results table with write and read GB/s, and the run directory.
    assert "mean GB/s" in proc.stdout and str(run) in proc.stdout
    assert not any((tmp_path / "ckpt").glob("*/ckpt_*")), "checkpoint files are removed after the run"
    # finalize ran the rules: a scaled run is INVALID for submission, and says which rule decided.
    assert results["verdict"] == "INVALID"
    assert [f["rule_id"] for f in results["rule_findings"] if f["verdict"] == "INVALID"] == ["ckpt.scaled"]
    assert (run / "verify.json").is_file() and "ckpt.scaled" in (run / "verify.txt").read_text()
    check_verify_and_bundle_cli(tmp_path, run)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlps_slurm", *args], capture_output=True, text=True, timeout=300)


def check_verify_and_bundle_cli(tmp_path: Path, run: Path) -> None:
    verify = cli("verify", str(run))
    assert verify.returncode == 4, verify.stderr  # INVALID (it finished and was judged)
    assert "INVALID ckpt.scaled" in verify.stdout
    assert cli("verify", str(run), "--allow-invalid").returncode == 0
    refused = cli("bundle", str(run), "-O", str(tmp_path / "refused"))
    assert refused.returncode != 0 and "--allow-invalid" in refused.stdout + refused.stderr
    assert not (tmp_path / "refused").exists()
    made = cli("bundle", str(run), "-O", str(tmp_path / "sub"), "--allow-invalid", "--org", "acme", "--system", "s1")
    assert made.returncode == 0, made.stdout + made.stderr
    (tarball,) = (tmp_path / "sub").glob("*.tar.gz")
    assert (tmp_path / "sub" / "invalid" / "acme" / "results" / "s1" / "checkpointing" / "llama3-8b").is_dir()
    assert cli("bundle", "--check", str(tarball)).returncode == 0
    # Tamper with one bundled file and rebuild the tarball from the tree: the checksums no longer match.
    engine = next((tmp_path / "sub").rglob("engine.json"))
    engine.write_text(engine.read_text().replace('"fsync": true', '"fsync": false'))
    forged = tmp_path / "forged.tar.gz"
    subprocess.run(["tar", "czf", str(forged), "-C", str(tmp_path), "--exclude", tarball.name, "sub"], check=True)
    check = cli("bundle", "--check", str(forged))
    assert check.returncode != 0 and "engine.json" in check.stdout


def test_failing_preflight_cancels_the_benchmark_and_finalize_says_why(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where a directory is needed\n")
    proc, run = submit(tmp_path, "-o", f"storage.checkpoint_dir={blocker}/ckpt", timeout=300)
    assert proc.returncode == 1
    manifest = json.loads((run / "manifest.json").read_text())
    states = {k: slurm_state(v["job_id"]) for k, v in manifest["jobs"].items()}
    assert states["preflight"]["JobState"] == "FAILED"
    assert states["checkpointing"]["JobState"] == "CANCELLED"
    assert states["checkpointing"]["Reason"] == "DependencyNeverSatisfied"
    assert states["finalize"]["JobState"] == "FAILED"  # ran (afterany), reported, and exited non-zero
    results = json.loads((run / "results" / "results.json").read_text())
    assert results["status"] == "failed" and results["metrics"] is None
    assert "preflight failed" in results["reasons"][0]
    assert "storage.checkpoint_dir.writable" in results["reasons"][0]
    assert all(node in results["reasons"][0] for node in ("n1", "n2", "n3", "n4"))
    assert results["jobs"]["checkpointing"]["state"] == "CANCELLED"
    assert "preflight failed" in proc.stdout
    # Later, from the login node: each job with its state and reason, and why the run failed.
    status = subprocess.run([sys.executable, "-m", "mlps_slurm", "status", str(run)], capture_output=True, text=True)
    assert status.returncode == 1, status.stderr  # the chain's state: it failed
    assert "checkpointing  job" in status.stdout
    assert "CANCELLED  (DependencyNeverSatisfied)" in status.stdout
    assert f"preflight failed: see {run}/preflight/preflight.txt" in status.stdout
    assert "n1: storage.checkpoint_dir.writable" in status.stdout


def test_verify_lockfile_mismatch_stops_the_chain_on_every_node(tmp_path):
    lock = tmp_path / "site.lock"
    made = subprocess.run([sys.executable, "-m", "mlps_slurm", "lockfile", "generate", "-O", str(lock)],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    text = lock.read_text()
    assert "\nclick==" in text
    lock.write_text("\n".join("click==0.1" if line.startswith("click==") else line for line in text.splitlines()))
    proc, run = submit(tmp_path, "-o", f"storage.checkpoint_dir={tmp_path / 'ckpt'}", "--verify-lockfile",
                       str(lock), timeout=300)
    assert proc.returncode == 1
    assert (run / "lockfile.txt").read_text() == lock.read_text()  # the run keeps what it was checked against
    preflight = json.loads((run / "preflight" / "preflight.json").read_text())
    failing = {(f["node"], f["check"]) for f in preflight["failures"]}
    assert failing == {(n, "python.lockfile") for n in ("n1", "n2", "n3", "n4")}
    assert "click" in preflight["failures"][0]["message"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert slurm_state(manifest["jobs"]["checkpointing"]["job_id"])["JobState"] == "CANCELLED"
