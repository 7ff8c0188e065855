"""Finalize a checkpointing chain, inside its last job: the engine's output -> results.json, the table, the
verdict. Exits non-zero (through mlps_slurm.steps.finalize) when the run produced no usable result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlps_slurm.benchmarks.checkpointing.engine import EngineOutputError, load_results
from mlps_slurm.benchmarks.checkpointing.report import table
from mlps_slurm.rundir import RunDirectory, run_record
from mlps_slurm.steps.outcome import job_states, preflight_reasons, write_results


def finalize(run: RunDirectory) -> tuple[dict[str, Any], str]:
    manifest = run.read_manifest()
    request = run_record(manifest)
    states = job_states(manifest)
    reasons = preflight_reasons(run, states)
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
    results = write_results(run, manifest, reasons, states, table, num_processes=request["num_processes"],
                            metrics=metrics)
    return results, table(results)
