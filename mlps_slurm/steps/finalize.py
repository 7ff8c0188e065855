"""Finalize, inside the last job of a chain (afterany: it runs whatever happened before it).

Reads what the chain produced (preflight.json, the engine's raw output, the Slurm states of the earlier jobs),
normalizes the engine output into results/results.json, writes results/results.txt, and exits non-zero when the
run produced no usable result, so the failure is visible in Slurm too. It always writes its report first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

from mlps_slurm.engines.checkpoint import EngineOutputError, load_results
from mlps_slurm.report import checkpointing_table
from mlps_slurm.rundir import RunDirectory, atomic_write_json, atomic_write_text, read_json


def _job_states(manifest: dict[str, Any]) -> dict[str, dict[str, str]]:
    jobs = {key: job["job_id"] for key, job in manifest.get("jobs", {}).items()
            if job.get("job_id") and job["job_id"] != os.environ.get("SLURM_JOB_ID")}
    if not jobs:
        return {}
    try:
        from mlps_slurm.slurm import SlurmError, get_backend

        states = get_backend().states(list(jobs.values()))
    except Exception as exc:  # the report matters more than the states; record why they are missing
        return {key: {"job_id": jid, "state": "UNKNOWN", "reason": f"could not query Slurm: {exc}"}
                for key, jid in jobs.items()}
    out = {}
    for key, jid in jobs.items():
        s = states[jid][0]
        out[key] = {"job_id": jid, "state": s.state, "reason": s.reason, "exit_code": s.exit_code, "nodes": s.nodes}
    return out


def _preflight_reasons(run: RunDirectory, states: dict[str, dict[str, str]]) -> list[str]:
    path = run.preflight / "preflight.json"
    if not path.is_file():
        state = states.get("preflight", {})
        if not state:
            return []
        return [f"preflight did not report (job {state.get('job_id')} {state.get('state')}); "
                f"see {run.logs}"]
    summary = read_json(path)
    if summary.get("ok"):
        return []
    failed = [f"{f['node']} {f['check']}: {f['message']}" for f in summary.get("failures", [])]
    return [f"preflight failed ({path.parent / 'preflight.txt'}): " + "; ".join(failed)]


def finalize_checkpointing(run: RunDirectory) -> dict[str, Any]:
    manifest = run.read_manifest()
    request = manifest["request"]
    plan = manifest.get("plan", {})
    states = _job_states(manifest)
    reasons = _preflight_reasons(run, states)
    metrics = None
    engine_output = Path(request["engine_output"])
    if engine_output.is_file():
        try:
            metrics = load_results(engine_output)
        except EngineOutputError as exc:
            reasons.append(str(exc))
    else:
        bench = states.get("checkpointing", {})
        detail = f" (job {bench.get('job_id')} {bench.get('state')}: {bench.get('reason')})" if bench else ""
        reasons.append(f"the checkpointing engine left no output at {engine_output}{detail}")
    if metrics is not None:
        expected = request["expected_bytes_per_checkpoint"]
        for c in metrics["checkpoints"]:
            if c["bytes"] != expected:
                reasons.append(f"{c['phase']} checkpoint {c['index']} moved {c['bytes']} bytes, expected {expected}")
        for phase, key in (("write", "num_checkpoints_write"), ("read", "num_checkpoints_read")):
            count = metrics.get(phase, {}).get("count", 0)
            if count != request[key]:
                reasons.append(f"{count} {phase} checkpoints recorded, {request[key]} planned")
    results = {
        "schema": "mlps-slurm/results/1",
        "run_id": manifest["run_id"],
        "benchmark": "checkpointing",
        "model": request["model"],
        "num_processes": request["num_processes"],
        "nodes": request["nodes"],
        "scale": request["scale"],
        "status": "failed" if reasons else "success",
        "reasons": reasons,
        "submittable": bool(plan.get("submittable")) and not reasons,
        "notes": plan.get("notes", []),
        "jobs": states,
        "metrics": metrics,
        "finalized": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    atomic_write_json(run.results / "results.json", results)
    # The rules read results.json, so they run after it exists; their verdict is then added to it.
    results["verdict"], results["rule_findings"] = _verdict(run)
    results["official_checker"] = official_checker(run)
    atomic_write_json(run.results / "results.json", results)
    atomic_write_text(run.results / "results.txt", checkpointing_table(results))
    return results


OFFICIAL_CHECKER = "mlpstorage"


def official_checker(run: RunDirectory, timeout: float = 600) -> dict[str, Any]:
    """Run MLPerf Storage's own checker when the cluster has it, and record its verdict beside ours.

    It never replaces our verdict: it does not know Slurm runs and (with DLIO 2.0.0 output) has crashed or
    skipped runs silently, so its exit status and output are recorded as they are.
    """
    import shutil
    import subprocess

    exe = shutil.which(OFFICIAL_CHECKER)
    if exe is None:
        return {"installed": False, "note": f"{OFFICIAL_CHECKER} is not on PATH; only mlps-slurm's rules ran"}
    argv = [exe, "reports", "reportgen", "--results-dir", str(run.raw), "--output-dir",
            str(run.results / "official-checker")]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"installed": True, "command": argv, "error": str(exc)}
    atomic_write_text(run.results / "official-checker.log", proc.stdout + proc.stderr)
    return {"installed": True, "command": argv, "exit_code": proc.returncode,
            "verdict": "passed" if proc.returncode == 0 else "failed",
            "output_tail": (proc.stdout + proc.stderr)[-2000:]}


def _verdict(run: RunDirectory) -> tuple[str, list[dict[str, Any]]]:
    from mlps_slurm.verify import verify_run, write_run_verdict

    verdict = verify_run(run.path)
    write_run_verdict(verdict, run.path)
    return verdict.verdict.value, [f.to_dict() for f in verdict.findings if f.verdict.value != "CLOSED"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlps_slurm.steps.finalize")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    run = RunDirectory(args.run_dir)
    results = finalize_checkpointing(run)
    sys.stdout.write(checkpointing_table(results))
    return 0 if results["status"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
