"""A run directory's chain in Slurm: submit it, read its state back, wait for it.

Nothing here stays alive after submission: Slurm dependencies drive the chain (afterok + kill-on-invalid-dep
after the preflight, afterany for finalize), so the user can log out.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable

from mlps_slurm.attempts import attempt_ids, merged_states, own_states
from mlps_slurm.plan_suite import member_key
from mlps_slurm.rundir import RunDirectory, atomic_write_text, read_json
from mlps_slurm.steps.progress import describe as describe_progress, read_progress
from mlps_slurm.slurm import Dependency, JobState, SlurmBackend, SlurmError, combined_state


def dependencies_on(job: dict[str, Any], ids: dict[str, str], backend: SlurmBackend) -> list[Dependency]:
    """The planned dependencies of `job` on the jobs submitted so far (`ids`). A dependency on a job not among
    them is left out: for `resume`, that job completed, so it is met."""
    deps = []
    for kind, keys in job["dependencies"]:
        live = [k for k in keys if k in ids]
        for key in live:
            # Slurm accepts a dependency on an unknown job id and treats it as satisfied: never chain on an id
            # the controller does not know.
            if not backend.job_exists(ids[key]):
                raise SlurmError(f"Slurm does not know job {ids[key]} ({key}) that {job['key']} would depend on; "
                                 "refusing to chain on it")
        if live:
            deps.append(Dependency(kind, tuple(ids[k] for k in live)))
    return deps


def submit_chain(run: RunDirectory, backend: SlurmBackend) -> dict[str, str]:
    """Submit the run's jobs in order; on any failure cancel what was submitted, remove the run, and raise.

    The preflight is submitted held and released last: by the time it runs, pin-jobs.txt lists the benchmark jobs
    it must pin to the nodes it validated.
    """
    manifest = run.read_manifest()
    ids: dict[str, str] = {}
    held = None
    try:
        for job in manifest["plan"]["jobs"]:
            deps = dependencies_on(job, ids, backend)
            extra = list(job.get("sbatch_args", []))
            if job["key"] == "preflight":
                extra.append("--hold")
            ids[job["key"]] = backend.submit(run.scripts / job["script"], deps, extra,
                                             token=f"{run.run_id}:{job['key']}")
            if job["key"] == "preflight":
                held = ids["preflight"]
            manifest["jobs"][job["key"]] = {"job_id": ids[job["key"]], "script": job["script"],
                                            "submitted": dt.datetime.now(dt.timezone.utc).isoformat()}
            run.write_manifest(manifest)
        pinned = [ids[j["key"]] for j in manifest["plan"]["jobs"] if j.get("pin_to_preflight")]
        atomic_write_text(run.pin_jobs, "".join(f"{i}\n" for i in pinned))
        # Written before the release: once the preflight runs, the jobs (datagen) may update the manifest
        # themselves, and a later write from here would undo that.
        manifest["state"] = "submitted"
        run.write_manifest(manifest)
        record_member_jobs(run, manifest)
        if held:
            backend.release(held)
    except BaseException:
        backend.cancel(list(ids.values()))
        run.remove()
        raise
    return ids


def record_member_jobs(run: RunDirectory, manifest: dict[str, Any]) -> None:
    """A suite: each workload's manifest gets the ids of its jobs (the shared preflight and finalize included), so
    its own status, finalize and rules read them as for a single run."""
    for member in manifest["request"].get("members", []):
        member_run = RunDirectory(run.path / member["dir"])
        m = member_run.read_manifest()
        for job in m["plan"]["jobs"]:
            record = manifest["jobs"].get(member_key(member["name"], job["key"]))
            if record:
                m["jobs"][job["key"]] = record
        m["state"] = "submitted"
        member_run.write_manifest(m)


MEMBER_DIR = re.compile(r"runs/[A-Za-z0-9][A-Za-z0-9_.-]*")


def progress_location(run: RunDirectory, manifest: dict[str, Any], key: str) -> tuple[Path, str] | None:
    """Where the job `key` records its progress: (its run directory, its key there). A suite's workload job
    ("training-unet3d.run") records in the workload's own run directory under its own key ("run"). The member
    directory comes from the manifest, so it must look like one the suite planner makes."""
    for member in manifest.get("request", {}).get("members", []) or []:
        if not isinstance(member, dict):
            continue
        prefix = f"{member.get('name')}."
        if key.startswith(prefix):
            rel = str(member.get("dir", ""))
            if not MEMBER_DIR.fullmatch(rel) or ".." in rel:
                return None
            return run.path / rel, key[len(prefix):]
    return run.path, key


@dataclass(frozen=True)
class ChainStatus:
    run: RunDirectory
    jobs: list[tuple[str, str, JobState | None]]  # (key, job id, state; an array's combined state)
    tasks: dict[str, list[JobState]] = field(default_factory=dict)  # every entry Slurm gave, per key
    # What the running steps last reported (steps/progress.py), per (key, array task or None).
    progress: dict[tuple[str, int | None], dict[str, Any]] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return all(s is not None and (s.terminal or s.state == "UNKNOWN") for _, _, s in self.jobs)

    @property
    def state(self) -> str:
        """The chain's state: NOT SUBMITTED, PENDING, RUNNING, or once finished SUCCESS / FAILED (the finalize's
        results.json decides)."""
        if not any(s for _, _, s in self.jobs):
            return "NOT SUBMITTED"
        if not self.finished:
            return "RUNNING" if any(s and s.state in ("RUNNING", "COMPLETING") for _, _, s in self.jobs) \
                else "PENDING"
        results = _results(self.run)
        return "SUCCESS" if results and results.get("status") == "success" else "FAILED"


def _results(run: RunDirectory) -> dict[str, Any] | None:
    try:
        data = read_json(run.results_json)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# `mlps-slurm status` exit codes by chain state (2 and 3 are the CLI's usage and Slurm errors).
STATUS_EXIT = {"SUCCESS": 0, "FAILED": 1, "PENDING": 5, "RUNNING": 5, "NOT SUBMITTED": 5}


def status_record(status: ChainStatus) -> dict[str, Any]:
    """What `status --json` prints: the chain's state, every job and array task, and the results once there."""
    def row(s: JobState) -> dict[str, Any]:
        return {"job_id": s.job_id, "state": s.state, "reason": "" if s.reason in ("None",) else s.reason,
                "nodes": s.nodes, "start": s.start, "elapsed": s.elapsed, "exit_code": s.exit_code,
                "source": s.source}

    jobs = []
    for key, jid, s in status.jobs:
        entry: dict[str, Any] = {"key": key, "job_id": jid, **(row(s) if s else {"state": "NOT SUBMITTED"})}
        if (key, None) in status.progress:
            entry["progress"] = status.progress[(key, None)]
        tasks = [t for t in status.tasks.get(key, []) if t.array_task.isdigit()]
        if tasks:
            entry["tasks"] = []
            for t in sorted(tasks, key=lambda t: int(t.array_task)):
                task_entry = {"task": int(t.array_task), **row(t)}
                if (key, int(t.array_task)) in status.progress:
                    task_entry["progress"] = status.progress[(key, int(t.array_task))]
                entry["tasks"].append(task_entry)
        jobs.append(entry)
    return {"run_id": status.run.run_id, "run_dir": str(status.run.path), "state": status.state,
            "finished": status.finished, "exit_code": STATUS_EXIT[status.state], "jobs": jobs,
            "results": _results(status.run)}


def chain_status(run: RunDirectory, backend: SlurmBackend) -> ChainStatus:
    manifest = run.read_manifest()
    submitted = manifest.get("jobs", {})
    ids = [i for record in submitted.values() for i in attempt_ids(record)]  # resumed jobs: every attempt
    states = backend.states(ids) if ids else {}
    rows: list[tuple[str, str, JobState | None]] = []
    tasks: dict[str, list[JobState]] = {}
    progress: dict[tuple[str, int | None], dict[str, Any]] = {}
    suite = manifest.get("suite") if isinstance(manifest.get("suite"), dict) else {}
    run_ids = (run.run_id, *([str(suite["run_id"])] if suite.get("run_id") else []))
    for job in manifest["plan"]["jobs"]:
        record = submitted.get(job["key"], {})
        jid = record.get("job_id", "")
        # A recorded id may name another job once Slurm's ids restarted: never show that job as this chain's.
        entries = merged_states(record, own_states(record, states, run_ids, job["key"])) if jid in states else []
        rows.append((job["key"], jid, combined_state(entries) if entries else None))
        tasks[job["key"]] = entries
        where = progress_location(run, manifest, job["key"])
        if where is None:
            continue
        task_ids = sorted({int(t.array_task) for t in tasks[job["key"]] if t.array_task.isdigit()})
        for task in [None, *task_ids]:
            record = read_progress(where[0], where[1], task)
            if record is not None:
                progress[(job["key"], task)] = record
    return ChainStatus(run, rows, tasks, progress)


# --wait: Slurm is asked with backoff (WAIT_BACKOFF_S doubling up to WAIT_BACKOFF_MAX_S); between two asks only the
# finalize's results.json is looked at (one stat every WATCH_RESULTS_S, no Slurm call); once it is written, Slurm is
# asked every FINISH_POLL_S, FINISH_POLLS times, for the finalize's end.
WAIT_BACKOFF_S, WAIT_BACKOFF_MAX_S = 1.0, 8.0
WATCH_RESULTS_S = 0.2
FINISH_POLL_S, FINISH_POLLS = 0.25, 8


def _results_stamp(run: RunDirectory) -> tuple[int, int, int] | None:
    try:
        st = os.stat(run.results_json)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def wait_for_chain(run: RunDirectory, backend: SlurmBackend, timeout: float,
                   on_change: Callable[[ChainStatus], None] | None = None, *,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> ChainStatus:
    """Until every job of the chain has ended. One squeue call per refresh for the whole chain, with backoff (1, 2,
    4, 8 s; every second while the finalize runs); between refreshes a stat of results.json: when the finalize
    writes it, Slurm is asked every 0.25 s for a couple of seconds, so --wait returns within a second of the
    finalize's end, without polling Slurm faster the rest of the time (the 8 s backoff alone had --wait return up
    to 8 s after a short finalize, which it never saw RUNNING)."""
    deadline = clock() + timeout
    delay, last, fast = WAIT_BACKOFF_S, None, 0
    stamp = _results_stamp(run)
    while True:
        status = chain_status(run, backend)
        summary = [(k, s.state if s else None) for k, _, s in status.jobs]
        if on_change and summary != last:
            on_change(status)
        last = summary
        if status.finished:
            # finalize writes results before it exits; nothing else to wait for
            return status
        if clock() >= deadline:
            raise TimeoutError(f"the chain of {run.run_id} did not finish within {timeout:.0f} s")
        final = status.jobs[-1][2] if status.jobs else None
        if final is not None and final.state in ("RUNNING", "COMPLETING"):
            delay = min(delay, WAIT_BACKOFF_S)
        if fast:
            fast -= 1
            sleep(min(FINISH_POLL_S, max(0.0, deadline - clock())))
            continue
        wake = min(clock() + delay, deadline)
        while clock() < wake:
            sleep(min(WATCH_RESULTS_S, max(0.0, wake - clock())))
            now = _results_stamp(run)
            if now != stamp:  # the finalize is writing its results: its end is near
                stamp, fast = now, FINISH_POLLS
                break
        delay = min(delay * 2, WAIT_BACKOFF_MAX_S)


def cancel_chain(run: RunDirectory, backend: SlurmBackend) -> list[str]:
    """Cancel the chain's jobs that have not ended (the finalize too: a cancelled chain is not reported as a run)
    and record it in the manifest (when, which jobs); returns the keys cancelled."""
    status = chain_status(run, backend)
    live = [(key, jid) for key, jid, s in status.jobs if jid and s is not None and not s.terminal
            and s.state != "UNKNOWN"]
    backend.cancel([jid for _, jid in live])
    manifest = run.read_manifest()
    manifest.setdefault("cancellations", []).append(
        {"at": dt.datetime.now(dt.timezone.utc).isoformat(), "jobs": {key: jid for key, jid in live}})
    if live:
        manifest["state"] = "cancelled"
    run.write_manifest(manifest)
    return [key for key, _ in live]


def tidy_cancelled(run: RunDirectory, backend: SlurmBackend, timeout: float = 60.0,
                   sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """After `cancel`: once every job has ended (so no rank still writes), let the run's benchmark remove the partial
    data its cancelled jobs left on the storage under test; the lines to print. A suite's workloads each tidy their
    own; a chain that does not end within `timeout` is left alone, and says so."""
    from mlps_slurm import benchmarks
    from mlps_slurm.plan_suite import SUITE

    deadline = time.monotonic() + timeout
    while not chain_status(run, backend).finished:
        if time.monotonic() > deadline:
            return [f"the jobs of {run.run_id} had not ended after {timeout:.0f} s; their partial files were left "
                    "in place"]
        sleep(1.0)
    manifest = run.read_manifest()
    runs = [run]
    if manifest.get("benchmark") == SUITE:
        runs = [RunDirectory(p) for p in sorted((run.path / "runs").glob("*")) if (p / "manifest.json").is_file()
                and not p.is_symlink()]
    lines = []
    for member in runs:
        try:
            bench = benchmarks.get(member.read_manifest().get("benchmark"))
        except benchmarks.UnknownBenchmark:
            continue
        lines += bench.tidy_unfinished(member)
    return lines


def describe_status(status: ChainStatus) -> str:
    run = status.run
    lines = [f"run {run.run_id}  ({run.path})"]
    width = max([14, *(len(key) for key, _, _ in status.jobs)])
    for i, (key, jid, s) in enumerate(status.jobs):
        if s is None:
            lines.append(f"  {i:02d} {key:<{width}} not submitted")
            continue
        reason = "" if s.reason in ("", "None") else f"  ({s.reason})"
        where = "".join(f"  {label} {value}" for label, value in (("on", s.nodes), ("started", s.start),
                                                                  ("elapsed", s.elapsed)) if value)
        lines.append(f"  {i:02d} {key:<{width}} job {jid:<8} {s.state}{reason}{where}")
        # The running steps' own progress: the job's, or each running array task's.
        running = [(task, t) for t in status.tasks.get(key, []) if t.state == "RUNNING"
                   for task in ([int(t.array_task)] if t.array_task.isdigit() else [None])]
        for task, _ in running:
            record = status.progress.get((key, task))
            if record is not None:
                label = f"task {task}" if task is not None else ""
                lines.append(f"  {'':2} {'':<{width}} {label:<8} {describe_progress(record)}".rstrip())
    pre = run.preflight_report
    if pre.is_file():
        summary = read_json(pre)
        if not summary.get("ok"):
            lines.append(f"preflight failed: see {run.preflight_text}")
            for f in summary.get("failures", []):
                lines.append(f"  {f['node']}: {f['check']}: {f['message']}")
    results = run.results_text
    if results.is_file():
        lines.append("")
        lines.append(results.read_text().rstrip())
    return "\n".join(lines) + "\n"
