"""Finalize a checkpointing chain, inside its last job: the engine's output -> results.json, the table, the
verdict. Exits non-zero (through mlps_slurm.steps.finalize) when the run produced no usable result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlps_slurm.benchmarks.checkpointing.cleanup import remove_partial
from mlps_slurm.benchmarks.checkpointing.engine import EngineOutputError, load_results
from mlps_slurm.benchmarks.checkpointing.journal import journal_path
from mlps_slurm.benchmarks.checkpointing.report import table
from mlps_slurm.rundir import RunDirectory, run_record
from mlps_slurm.steps.outcome import job_states, preflight_reasons, write_results


def finalize(run: RunDirectory) -> tuple[dict[str, Any], str]:
    manifest = run.read_manifest()
    request = run_record(manifest)
    states = job_states(manifest)
    reasons = preflight_reasons(run, states)
    metrics, cleanup = None, None
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
        if "checkpointing" in states:  # the engine was submitted, so it may have left files
            cleanup = remove_partial(str(request.get("checkpoint_dir", "")), str(manifest["run_id"]),
                                     journal_path(engine_output), bool(request.get("keep_files")),
                                     bool((manifest.get("preflight") or {}).get("storage_shared", True)))
    bench = states.get("checkpointing", {})
    if metrics is not None and bench.get("state") not in (None, "COMPLETED", "UNKNOWN"):
        # The engine finished, then Slurm ended the job otherwise (a node declared dead, a time limit during the
        # clean-up): a run whose job failed is not a result to submit, whatever its output says.
        reasons.append(f"the checkpointing job {bench.get('job_id')} ended {bench.get('state')}"
                       f"{' on ' + bench['nodes'] if bench.get('nodes') else ''}"
                       f"{', ' + bench['reason'] if bench.get('reason') not in (None, '', 'None') else ''} after "
                       "its engine wrote the output; the run is not trusted")
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
                            metrics=metrics, checkpoint_files=cleanup)
    return results, table(results)
