"""A real chain on the local Slurm cluster, then verify and bundle its run directory as a user would."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import pytest

from mlps_slurm.bundle import BundleError, check_bundle, make_bundle
from mlps_slurm.rules.core import Verdict
from mlps_slurm.verify import verify_run, verify_runs, write_run_verdict

pytestmark = pytest.mark.slurm


def test_real_scaled_run_is_invalid_for_submission_and_bundles_only_when_allowed(tmp_path):
    results = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "mlps_slurm", "submit", "checkpointing", "--model", "llama3-8b", "--scale", "0.0005",
         "--seconds-between-checkpoints", "0", "--results-dir", str(results), "-o",
         f"storage.checkpoint_dir={tmp_path / 'ckpt'}", "--wait", "--timeout", "600"],
        capture_output=True, text=True, timeout=700)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [run] = [p for p in results.iterdir() if not p.name.startswith(".")]

    verdict = verify_run(run)
    assert verdict.usable, verdict.problems
    assert verdict.verdict is Verdict.INVALID
    invalid = {f.rule_id for f in verdict.findings if f.verdict is Verdict.INVALID}
    assert invalid == {"ckpt.scaled"}, verdict.findings
    # Everything the real engine recorded passes: 10 + 10, fsync, the read gap, cache drop, exact sizes.
    passed = {f.rule_id for f in verdict.findings if f.verdict is Verdict.CLOSED}
    assert {"ckpt.write_read_count", "ckpt.fsync", "ckpt.read_gap", "ckpt.cache_drop", "ckpt.checkpoint_size",
            "ckpt.process_count", "run.preflight"} <= passed
    json_path, text_path = write_run_verdict(verdict)
    assert json.loads(json_path.read_text())["verdict"] == "INVALID" and "ckpt.scaled" in text_path.read_text()

    report = verify_runs([results])
    assert report.exit_code == 4 and [r.run_id for r in report.runs] == [run.name]  # judged INVALID (scaled)

    with pytest.raises(BundleError, match="ckpt.scaled"):
        make_bundle([run], "local-dev", "localhost", tmp_path / "bundle")
    result = make_bundle([run], "local-dev", "localhost", tmp_path / "bundle", allow_invalid=True)
    leaf = result.tree / "invalid/local-dev/results/localhost/checkpointing/llama3-8b"
    [ts] = [p for p in leaf.iterdir() if p.is_dir()]
    assert (ts / "raw/checkpointing/llama3-8b/engine.json").is_file() and (ts / "manifest.json").is_file()
    assert (result.tree / "invalid/local-dev/systems/localhost.yaml").is_file()
    check = check_bundle(result.tarball)
    assert check.ok, check.problems
    assert check.report.runs[0].verdict is Verdict.INVALID

    # Tampering with the bundled engine output is caught.
    with tarfile.open(result.tarball) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(result.tarball, "w:gz") as tar:
        for m, data in members:
            if data is not None and m.name.endswith("engine.json"):
                raw = json.loads(data)
                raw["fsync"] = False
                data = json.dumps(raw).encode()
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
    problems = check_bundle(result.tarball).problems
    assert any("engine.json: SHA-256 mismatch" in p for p in problems), problems
