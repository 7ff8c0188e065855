"""Finalize a training chain, inside its last job (afterany: it runs whatever happened before it).

Reads the preflight report, the datagen record and every run's DLIO output (summary.json, per_epoch_stats.json)
with the shim's measurements (io.json, launch.json, engine_error.*.json), and writes results/results.json and
results/results.txt: per run the AU, samples/s, DLIO's nominal MB/s beside the measured MB/s, pass/fail against
the AU threshold; the mean of the 5 scored runs; whether the runs were consecutive; whether the dataset fits in the
clients' page cache. Then the rules judge the run (verify.json) and their verdict is added. Exits non-zero when the
chain produced no usable result, after writing its report.
"""

from __future__ import annotations

import datetime as dt
import statistics
from pathlib import Path
from typing import Any

from mlps_slurm.benchmarks.training import catalog as cat
from mlps_slurm.rules.facts import client_memory, node_facts
from mlps_slurm.benchmarks.training.record import SettledSizeError, training_record
from mlps_slurm.benchmarks.training.report import table
from mlps_slurm.rundir import RunDirectory, read_json, run_record
from mlps_slurm.benchmarks.training.dataset_lease import drop_lease
from mlps_slurm.benchmarks.training.output import DlioOutputError, normalize_run
from mlps_slurm.steps.outcome import job_note, job_states, preflight_reasons, write_results

GIB = 1 << 30


# --- what the chain left -----------------------------------------------------------------------------------------

def log_tail(run: RunDirectory, states: dict[str, dict[str, Any]], key: str, task: int | None = None) -> str:
    """The telling lines at the end of a failed job's Slurm log (a rank killed by the OOM killer, say, leaves no
    error record of its own)."""
    job = states.get(key) or {}
    job_id = job.get("job_id")
    if task is not None:
        job_id = next((t["job_id"] for t in job.get("tasks", []) if t["task"] == task), None)
    if not job_id:
        return ""
    log = run.logs / f"mlps-{key}-{job_id}.out"
    try:
        lines = log.read_text(errors="replace").splitlines()[-200:]
    except OSError:
        return ""
    telling = [ln.strip() for ln in lines if any(w in ln for w in ("error", "Error", "Killed", "CANCELLED"))]
    return f"; {log.name}: " + " | ".join(telling[-3:]) if telling else ""


def engine_errors(leaf: Path) -> list[str]:
    out = []
    for path in sorted(leaf.glob("engine_error.*.json")):
        try:
            e = read_json(path)
            out.append(f"rank {e.get('rank')} on {e.get('host')} during {e.get('during')}: {e.get('error')}")
        except (OSError, ValueError):
            out.append(f"{path}: unreadable error record")
    return out


def load_datagen(run: RunDirectory, raw: Path,
                 states: dict[str, dict[str, Any]]) -> tuple[dict[str, Any] | None, list[str]]:
    leaf = raw / "datagen"
    errors = engine_errors(leaf)
    path = leaf / "datagen.json"
    if not path.is_file():
        detail = f": {'; '.join(errors)}" if errors else log_tail(run, states, "datagen")
        return None, [f"datagen left no record at {path}{job_note(states, 'datagen')}{detail}"]
    try:
        record = read_json(path)
    except (OSError, ValueError) as exc:
        return None, [f"{path}: unreadable ({exc})"]
    problems = [f"datagen check: {p}" for p in record.get("problems", [])] + errors
    return record, problems


def _parse_time(text: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None


def load_runs(run: RunDirectory, raw: Path, request: dict[str, Any], datagen: dict[str, Any] | None,
              states: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """One entry per planned run, in task order; reasons for every run without a usable result."""
    runs, reasons = [], []
    threshold = 100 * float(request["au_threshold"])
    files = (datagen or {}).get("num_files") or request["num_files_train"]
    dataset_bytes = (datagen or {}).get("bytes") or request.get("dataset_bytes")
    per_epoch_samples = cat.expected_samples_read_per_epoch(files, request["samples_per_file"],
                                                            request["batch_size"], request["num_accelerators"])
    expected_epoch_bytes = (dataset_bytes * per_epoch_samples / (files * request["samples_per_file"])
                            if dataset_bytes else None)
    for task in range(request["runs"]):
        leaf = raw / "run" / f"{task:02d}"
        role = "warm-up" if task == 0 else "scored"
        entry: dict[str, Any] = {"task": task, "name": leaf.name, "role": role, "usable": False}
        errors = engine_errors(leaf)
        if not leaf.is_dir():
            reasons.append(f"run {task:02d} did not start{job_note(states, 'run', task)}")
            runs.append(entry)
            continue
        try:
            entry.update(normalize_run(leaf, float(request["record_length"])))
        except DlioOutputError as exc:
            detail = f"; engine error: {'; '.join(errors)}" if errors else log_tail(run, states, "run", task)
            reasons.append(f"run {task:02d}: {exc}{job_note(states, 'run', task)}{detail}")
            entry["errors"] = errors
            runs.append(entry)
            continue
        try:
            launch = read_json(leaf / "launch.json")
        except (OSError, ValueError):
            launch = {"problems": [f"{leaf / 'launch.json'}: missing (the shim did not finish)"]}
        problems = list(launch.get("problems", [])) + errors
        reasons += [f"run {task:02d}: {p}" for p in problems]
        expected = expected_epoch_bytes * entry["epochs"] if expected_epoch_bytes and entry.get("epochs") else None
        entry.update(
            usable=not problems, problems=problems, au_threshold_percent=threshold,
            au_pass=entry["au_percent"] >= threshold and entry.get("au_meet_expectation") == "success",
            expected_bytes_read=int(expected) if expected else None,
            read_vs_expected=(entry["bytes_read"] / expected) if expected and entry.get("bytes_read") else None)
        runs.append(entry)
    return runs, reasons


def consecutive(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rules §2.1.18a: every gap between neighbouring runs is shorter than a run (here: the shorter of the two)."""
    timed = []
    for r in runs:
        start, end = _parse_time(r.get("start")), _parse_time(r.get("end"))
        if r.get("usable") and start and end:
            timed.append((r["name"], start, end))
    timed.sort(key=lambda t: t[1])
    durations = [(end - start).total_seconds() for _, start, end in timed]
    gaps = []
    for i in range(1, len(timed)):
        gap = (timed[i][1] - timed[i - 1][2]).total_seconds()
        shorter = min(durations[i - 1], durations[i])
        gaps.append({"between": [timed[i - 1][0], timed[i][0]], "gap_s": round(gap, 3),
                     "shorter_run_s": round(shorter, 3), "ok": 0 <= gap < shorter})
    return {"ok": len(timed) >= 2 and all(g["ok"] for g in gaps), "runs": len(timed),
            "durations_s": [round(d, 3) for d in durations], "gaps": gaps}


def caching(request: dict[str, Any], datagen: dict[str, Any] | None, preflight: dict[str, Any] | None,
            runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Does the dataset fit in a client's memory (so reads may be page-cache hits)? Also says when the nodes are
    one host (emulated nodes): they then share one page cache."""
    memory = client_memory(preflight)
    if not memory:
        memory = {f"dlio-host-{i}": int(g * GIB) for r in runs[:1]
                  for i, g in enumerate(r.get("host_memory_GB") or []) if isinstance(g, (int, float))}
    dataset = (datagen or {}).get("bytes") or request.get("dataset_bytes") or 0
    hostnames = {str(f.get("hostname")) for f in node_facts(preflight).values() if f.get("hostname")}
    smallest = min(memory.values()) if memory else None
    out: dict[str, Any] = {"dataset_bytes": dataset, "client_memory_bytes": memory,
                           "fits_in_client_memory": smallest is not None and dataset <= smallest}
    if len(hostnames) == 1 and len(node_facts(preflight)) > 1:
        out["shared_page_cache"] = (f"the {len(node_facts(preflight))} nodes run on one host ({hostnames.pop()}): "
                                    "they share one page cache")
    return out


def _mean(values: list[float | None]) -> float | None:
    good = [v for v in values if isinstance(v, (int, float))]
    return statistics.fmean(good) if good else None


def scored_summary(runs: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    scored = [r for r in runs if r["role"] == "scored" and r.get("usable")]
    return {
        "scored_runs": len(scored),
        "au_threshold_percent": threshold,
        "au_mean_percent": _mean([r["au_percent"] for r in scored]),
        "au_pass_all": len(scored) == cat.SCORED_RUNS and all(r["au_pass"] for r in scored),
        "au_failing_runs": [r["name"] for r in scored if not r["au_pass"]],
        "throughput_samples_per_s_mean": _mean([r["throughput_samples_per_s"] for r in scored]),
        "dlio_MB_per_s_mean": _mean([r["dlio_MB_per_s"] for r in scored]),
        "measured_MB_per_s_mean": _mean([r.get("measured_MB_per_s") for r in scored]),
    }


def finalize(run: RunDirectory) -> tuple[dict[str, Any], str]:
    manifest = run.read_manifest()
    states = job_states(manifest)
    reasons = preflight_reasons(run, states)
    try:
        request = training_record(run.path, manifest)
    except SettledSizeError as exc:
        reasons.append(str(exc))
        request = run_record(manifest)
    raw = run.raw_dir("training", request["model"])
    datagen, datagen_problems = (None, []) if reasons else load_datagen(run, raw, states)
    reasons += datagen_problems
    runs: list[dict[str, Any]] = []
    if datagen is not None and not datagen_problems:
        runs, run_reasons = load_runs(run, raw, request, datagen, states)
        reasons += run_reasons
    try:
        preflight = read_json(run.preflight_report)
    except (OSError, ValueError):
        preflight = None
    threshold = 100 * float(request["au_threshold"])
    if request.get("dataset_dir"):  # this chain no longer reads the dataset: another may regenerate it
        try:
            drop_lease(request["dataset_dir"], manifest["run_id"])
        except OSError as exc:
            reasons.append(f"could not remove this chain's dataset lease: {exc}")
    results = write_results(
        run, manifest, reasons, states, table,
        accelerator=request["accelerator"],
        num_accelerators=request["num_accelerators"],
        dataset=None if datagen is None else {
            k: datagen.get(k) for k in ("dataset_dir", "num_files", "num_subfolders", "bytes", "mean_file_bytes",
                                        "min_file_bytes", "max_file_bytes", "expected_files",
                                        "expected_file_bytes_range", "reused", "reuse_decision", "seconds",
                                        "write_bytes")},
        datasize=request.get("datasize"),
        runs=runs,
        summary=scored_summary(runs, threshold),
        consecutive=consecutive(runs),
        caching=caching(request, datagen, preflight, runs) if datagen else None)
    return results, table(results)
