"""What every benchmark's finalize shares: the Slurm states of the chain's jobs, why the preflight failed, and
results.json with the rules' verdict and the official checker's beside it (inside the finalize job)."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any, Callable

from mlps_slurm.attempts import attempt_ids, merged_states
from mlps_slurm.rundir import RunDirectory, atomic_write_json, atomic_write_text, read_json, run_record
from mlps_slurm.steps.contention import shared_lines
from mlps_slurm.steps.hostmetrics_summary import results_entry as host_metrics_entry


def _summarize_tasks(states: list[Any]) -> dict[str, Any]:
    """An array job: one row per task that has its own record; `rest` is Slurm's record for the tasks that never
    got one (still pending, or cancelled before they started)."""
    tasks = sorted((s for s in states if s.array_task.isdigit()), key=lambda s: int(s.array_task))
    rest = next((s for s in states if not s.array_task.isdigit()), None)
    rows = [{"task": int(s.array_task), "job_id": s.job_id, "state": s.state, "reason": s.reason,
             "exit_code": s.exit_code, "nodes": s.nodes, "start": s.start, "elapsed": s.elapsed} for s in tasks]
    bad = [r for r in rows if r["state"] != "COMPLETED"]
    if bad:
        state, reason = bad[0]["state"], bad[0]["reason"]
    elif rest is not None:
        state, reason = rest.state, rest.reason
    else:
        state, reason = ("COMPLETED", "") if rows else ("UNKNOWN", "Slurm reports no task")
    out: dict[str, Any] = {"state": state, "reason": reason, "tasks": rows}
    if rest is not None:
        out["rest"] = {"state": rest.state, "reason": rest.reason}
    return out


def array_jobs(manifest: dict[str, Any]) -> tuple[str, ...]:
    """Keys of the planned jobs that are Slurm job arrays (an --array directive)."""
    return tuple(j["key"] for j in manifest.get("plan", {}).get("jobs", [])
                 if any(str(opt).startswith("--array=") for opt in j.get("sbatch", [])))


def job_states(manifest: dict[str, Any], arrays: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """Slurm states of the chain's other jobs; the array jobs (by key; default: those planned with --array) with
    one entry per task."""
    if arrays is None:
        arrays = array_jobs(manifest)
    records = {key: job for key, job in manifest.get("jobs", {}).items()
               if job.get("job_id") and job["job_id"] != os.environ.get("SLURM_JOB_ID")}
    jobs = {key: job["job_id"] for key, job in records.items()}
    if not jobs:
        return {}
    try:
        from mlps_slurm.slurm import get_backend

        # A resumed job: every attempt's id, merged (an array task from the newest attempt that ran it).
        raw = get_backend().states([i for record in records.values() for i in attempt_ids(record)])
        states = {jobs[key]: merged_states(record, raw) for key, record in records.items()}
    except Exception as exc:  # the report matters more than the states; record why they are missing
        return {key: {"job_id": jid, "state": "UNKNOWN", "reason": f"could not query Slurm: {exc}"}
                for key, jid in jobs.items()}
    out: dict[str, dict[str, Any]] = {}
    for key, jid in jobs.items():
        entries = states.get(jid) or []
        if key in arrays:
            out[key] = {"job_id": jid, **_summarize_tasks(entries)}
        elif entries:
            s = entries[0]
            out[key] = {"job_id": jid, "state": s.state, "reason": s.reason, "exit_code": s.exit_code,
                        "nodes": s.nodes, "start": s.start, "elapsed": s.elapsed}
    return out


def job_note(states: dict[str, dict[str, Any]], key: str, task: int | None = None) -> str:
    """" (job 12 FAILED, NonZeroExitCode)": what Slurm says about a job or one of its array tasks."""
    job = states.get(key)
    if not job:
        return ""
    if task is not None:
        row = next((t for t in job.get("tasks", []) if t["task"] == task), None)
        if row:
            why = f", {row['reason']}" if row["reason"] not in ("", "None") else ""
            return f" (array task {job['job_id']}_{task}: {row['state']}{why})"
        if job.get("rest"):
            return f" (array task {job['job_id']}_{task}: {job['rest']['state']} before it started)"
    reason = job.get("reason", "")
    return f" (job {job['job_id']} {job['state']}{', ' + reason if reason not in ('', 'None') else ''})"


def preflight_reasons(run: RunDirectory, states: dict[str, dict[str, Any]]) -> list[str]:
    path = run.preflight_report
    if not path.is_file():
        return [f"preflight did not report{job_note(states, 'preflight')}; see {run.logs}"] \
            if "preflight" in states else []
    try:
        summary = read_json(path)
    except (OSError, ValueError) as exc:
        return [f"{path}: unreadable ({exc})"]
    if summary.get("ok"):
        return []
    failed = [f"{f['node']} {f['check']}: {f['message']}" for f in summary.get("failures", [])]
    return [f"preflight failed ({path.parent / 'preflight.txt'}): " + "; ".join(failed)]


def write_results(run: RunDirectory, manifest: dict[str, Any], reasons: list[str], states: dict[str, Any],
                  table: Callable[[dict[str, Any]], str], **fields: Any) -> dict[str, Any]:
    """results.json (what every benchmark reports, then its own `fields`), then the rules' verdict and the official
    checker's beside it, then the readable table."""
    request = run_record(manifest)
    results = {
        "schema": "mlps-slurm/results/1",
        "run_id": manifest["run_id"],
        "benchmark": manifest["benchmark"],
        "model": request.get("model"),
        "nodes": request.get("nodes"),
        "scale": request.get("scale", 1.0),
        "status": "failed" if reasons else "success",
        "reasons": reasons,
        "notes": manifest.get("plan", {}).get("notes", []),
        "jobs": states,
        # `mlps-slurm resume`: which jobs and array tasks ran again, in which attempt (none: one attempt)
        "resumes": [{k: r.get(k) for k in ("attempt", "at", "rerun", "kept", "job_ids")}
                    for r in manifest.get("resumes", []) or [] if isinstance(r, dict)],
        # per benchmark job and node: disk, CPU, memory and network while it ran (monitoring.host_metrics)
        "host_metrics": host_metrics_entry(run.path, manifest, states),
        # other jobs on the benchmark jobs' nodes while they ran: a halved figure is never reported silently
        "shared_nodes": _shared_nodes(manifest, states),
        **fields,
        "finalized": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    atomic_write_json(run.results_json, results)
    # The rules read results.json, so they run after it exists; their verdict is then added to it.
    results["verdict"], results["rule_findings"] = rules_verdict(run)
    # One verdict, the rules': a run can be submitted when it produced a result and the rules did not find it
    # INVALID (an OPEN one goes to the open division).
    results["submittable"] = not reasons and results["verdict"] != "INVALID"
    results["official_checker"] = official_checker(run)
    atomic_write_json(run.results_json, results)
    atomic_write_text(run.results_text, table(results))
    return results


def _shared_nodes(manifest: dict[str, Any], states: dict[str, Any]) -> dict[str, Any]:
    from mlps_slurm.slurm import get_backend
    from mlps_slurm.steps.contention import shared_nodes

    try:
        backend = get_backend()
    except Exception as exc:  # the report matters more than this check
        return {"checked": False, "why": f"could not ask Slurm for other jobs on the run's nodes: {exc}", "jobs": []}
    return shared_nodes(manifest, states, backend)


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


def rules_verdict(run: RunDirectory) -> tuple[str, list[dict[str, Any]]]:
    from mlps_slurm.verify import verify_run, write_run_verdict

    verdict = verify_run(run.path)
    write_run_verdict(verdict, run.path)
    return verdict.verdict.value, [f.to_dict() for f in verdict.findings if f.verdict.value != "CLOSED"]


def verdict_lines(results: dict[str, Any]) -> list[str]:
    """The part of every benchmark's table that says how the run ended: status, the rules' verdict and the findings
    that are not CLOSED, the reasons and the notes."""
    lines = [f"status: {str(results.get('status', '?')).upper()}"]
    if results.get("verdict"):
        lines.append(f"rules verdict: {results['verdict']} (details: verify.txt in the run directory)")
        for f in results.get("rule_findings", []):
            lines.append(f"  {f['verdict']:<7} {f['rule_id']}: {f['message']}")
    lines += [f"  reason: {r}" for r in results.get("reasons", [])]
    lines += shared_lines(results.get("shared_nodes"))
    lines += [f"  note: {n}" for n in results.get("notes", [])]
    for r in results.get("resumes", []) or []:
        again = ", ".join(f"{k} (tasks {','.join(map(str, t))})" if isinstance(t, list) else str(k)
                          for k, t in (r.get("rerun") or {}).items())
        lines.append(f"  note: resumed (attempt {r.get('attempt')}, {r.get('at')}): ran again {again}")
    return lines
