"""Other jobs that shared the run's nodes while its benchmark jobs ran (inside the finalize).

Two chains on the same nodes and storage each measure about half the bandwidth; nothing in their own output says
so. The finalize asks Slurm once for every job that ran on the benchmark jobs' nodes during their window and
records each one that overlapped a benchmark job in time and nodes, so a lowered figure is never reported silently.
Jobs of the run itself (its manifest's ids, their array tasks, anything carrying its comment token) are not
counted. Storage shared with jobs on other nodes cannot be seen this way; that stays the preflight's and the
site's concern.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from typing import Any

from mlps_slurm.attempts import attempt_ids
from mlps_slurm.hostlist import expand

# Jobs of the chain that are not benchmark jobs: their time on the nodes measures nothing.
NOT_MEASURING = frozenset({"preflight", "finalize"})
_ELAPSED = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")


def elapsed_seconds(text: str) -> int | None:
    """Slurm's elapsed time ([D-][H]H:MM:SS or M:SS) in seconds; None when it is not one."""
    m = _ELAPSED.match(text.strip())
    if not m:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _time(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _spans(states: dict[str, dict[str, Any]]) -> list[tuple[str, set[str], dt.datetime, dt.datetime]]:
    """(job label, its nodes, start, end) of each benchmark job or array task that ran."""
    spans = []
    for key, job in states.items():
        if key in NOT_MEASURING:
            continue
        rows = job.get("tasks") or [job]
        for row in rows:
            start, took = _time(row.get("start", "")), elapsed_seconds(row.get("elapsed", ""))
            if start is None or took is None or not row.get("nodes"):
                continue
            try:
                nodes = set(expand(row["nodes"]))
            except ValueError:
                continue
            label = f"{key}[{row['task']}]" if "task" in row else key
            spans.append((label, nodes, start, start + dt.timedelta(seconds=took)))
    return spans


def _own_ids(manifest: dict[str, Any], states: dict[str, dict[str, Any]]) -> set[str]:
    own = {i for record in manifest.get("jobs", {}).values() if isinstance(record, dict)
           for i in attempt_ids(record)}
    for job in states.values():
        own.add(str(job.get("job_id", "")))
        own.update(str(t.get("job_id", "")) for t in job.get("tasks", []))
    if os.environ.get("SLURM_JOB_ID"):
        own.add(os.environ["SLURM_JOB_ID"])
    return own


def shared_nodes(manifest: dict[str, Any], states: dict[str, dict[str, Any]], backend: Any,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    """{"checked": bool, "jobs": [other job, the nodes it shared, which benchmark jobs it overlapped, for how long]}.
    Never raises: a failed query is recorded (the results matter more)."""
    spans = _spans(states)
    if not spans:
        return {"checked": False, "why": "no benchmark job ran long enough to have a start and an elapsed time",
                "jobs": []}
    begin = min(s[2] for s in spans).isoformat(timespec="seconds")
    end = max(s[3] for s in spans).isoformat(timespec="seconds")
    exprs = sorted({job.get("nodes", "") for job in states.values() if job.get("nodes")}
                   | {t.get("nodes", "") for job in states.values() for t in job.get("tasks", []) if t.get("nodes")})
    try:
        others = backend.jobs_on_nodes(exprs, begin, end)
    except Exception as exc:  # a query that fails must not cost the run its results
        return {"checked": False, "why": f"could not ask Slurm for other jobs on the run's nodes: {exc}", "jobs": []}
    own, token = _own_ids(manifest, states), f"mlps-slurm:{manifest.get('run_id')}:"
    now = now or dt.datetime.now()
    found = []
    for other in others:
        if other.job_id in own or other.comment.startswith(token):
            continue
        start, stop = _time(other.start), _time(other.end) or now
        try:
            ran_on = set(expand(other.nodes))
        except ValueError:
            continue
        if start is None:
            continue
        overlaps, nodes = [], set()
        for label, span_nodes, span_start, span_end in spans:
            common = ran_on & span_nodes
            seconds = (min(stop, span_end) - max(start, span_start)).total_seconds()
            if common and seconds > 0:
                overlaps.append({"job": label, "seconds": round(seconds)})
                nodes |= common
        if overlaps:
            found.append({"job_id": other.job_id, "name": other.name, "user": other.user, "state": other.state,
                          "nodes": sorted(nodes), "start": other.start, "end": other.end, "overlaps": overlaps})
    return {"checked": True, "window": [begin, end], "jobs": found}


def shared_lines(entry: dict[str, Any] | None) -> list[str]:
    """The table's lines: one warning per job that shared the nodes."""
    if not entry:
        return []
    lines = []
    for job in entry.get("jobs", []):
        during = ", ".join(f"{o['job']} {o['seconds']} s" for o in job["overlaps"])
        who = ", ".join(x for x in (job.get("name"), job.get("user")) if x)
        lines.append(f"  warning: shared with job {job['job_id']}{f' ({who})' if who else ''} on "
                     f"{','.join(job['nodes'])} while {during}: the figures may be lower than the storage delivers "
                     "alone")
    if not entry.get("checked") and entry.get("why", "").startswith("could not"):
        lines.append(f"  note: {entry['why']}")
    return lines
