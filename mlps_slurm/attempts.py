"""A chain job's attempts: the job submitted with the chain, and the jobs `resume` submitted for it later.

The manifest keeps, per job key, the current attempt and the earlier ones:

    "jobs": {"run": {"job_id": "212", "tasks": [3, 4, 5], ..., "earlier": [{"job_id": "180", ...}]}}

`tasks` lists the array tasks the current attempt runs (absent: all of them). Everything that reads states (status,
the finalize) asks for every attempt's id and merges them here: an array task comes from the newest attempt that
ran it, so a resumed 6-run array shows its runs 0-2 from the first attempt and 3-5 from the second.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace
from typing import Any, Mapping

from mlps_slurm.slurm import JobState

_JOB_ID = re.compile(r"\d{1,12}")


def attempt_ids(record: Mapping[str, Any]) -> list[str]:
    """Every Slurm job id of this job key, oldest first (ids that are not plain job ids are ignored)."""
    ids = [str(e.get("job_id", "")) for e in record.get("earlier", []) or [] if isinstance(e, Mapping)]
    ids.append(str(record.get("job_id", "")))
    return [i for i in ids if _JOB_ID.fullmatch(i)]


COMMENT_PREFIX = "mlps-slurm:"
# How far Slurm's submit time of a job may lie from the time the manifest recorded for it (the record is written
# right after sbatch answered; retries with backoff take well under this).
SUBMIT_SLACK_S = 600


def _parse_time(text: str) -> dt.datetime | None:
    """Slurm prints local time without a zone; the manifest records UTC with one."""
    try:
        value = dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return value if value.tzinfo else value.astimezone()


def _token_is_ours(comment: str, run_ids: tuple[str, ...], key: str) -> bool:
    """"mlps-slurm:<run id>:<key>[:<attempt>]"; a suite's workload job carries the suite's run id and its key
    "<workload>.<key>"."""
    parts = comment[len(COMMENT_PREFIX):].split(":")
    return len(parts) in (2, 3) and parts[0] in run_ids and (parts[1] == key or parts[1].endswith("." + key))


def foreign(state: JobState, run_ids: tuple[str, ...], key: str, submitted: str = "") -> str:
    """Why the job Slurm reports under a recorded id is not this chain's job (its ids restarted after the
    controller lost its state, so the id now names another job), or "" when nothing says so. `run_ids`: the run's
    id, and its suite's for a workload of `submit all`."""
    if state.comment.startswith(COMMENT_PREFIX) and not _token_is_ours(state.comment, run_ids, key):
        return f"its comment is {state.comment!r}, not this chain's"
    theirs, recorded = _parse_time(state.submit), _parse_time(submitted)
    if theirs is not None and recorded is not None and abs((theirs - recorded).total_seconds()) > SUBMIT_SLACK_S:
        return f"it was submitted at {state.submit}, this chain's job at {submitted}"
    return ""


def own_states(record: Mapping[str, Any], states: Mapping[str, list[JobState]], run_ids: tuple[str, ...],
               key: str) -> dict[str, list[JobState]]:
    """`states` with every entry of this key's attempts that belongs to another job replaced by UNKNOWN."""
    out = dict(states)
    attempts = [e for e in record.get("earlier", []) or [] if isinstance(e, Mapping)] + [record]
    for attempt in attempts:
        jid = str(attempt.get("job_id", ""))
        checked = []
        for s in states.get(jid, []):
            why = foreign(s, run_ids, key, str(attempt.get("submitted", "")))
            checked.append(replace(s, state="UNKNOWN", nodes="", start="", elapsed="", exit_code="",
                                   reason=f"job id {s.job_id} now names another job ({why}): Slurm's job ids "
                                          "restarted, so this job's state is lost") if why else s)
        if jid in states:
            out[jid] = checked
    return out


def merged_states(record: Mapping[str, Any], states: Mapping[str, list[JobState]]) -> list[JobState]:
    """The states of the current attempt, plus each array task that only an earlier attempt ran."""
    current = list(states.get(str(record.get("job_id", "")), []))
    earlier = [e for e in record.get("earlier", []) or [] if isinstance(e, Mapping)]
    if not earlier:
        return current
    covered = {int(t) for t in record.get("tasks", []) or [] if isinstance(t, int)}
    covered |= {int(s.array_task) for s in current if s.array_task.isdigit()}
    merged = current
    for attempt in reversed(earlier):  # the newest earlier attempt first
        for s in states.get(str(attempt.get("job_id", "")), []):
            if s.array_task.isdigit() and int(s.array_task) not in covered:
                merged.append(s)
                covered.add(int(s.array_task))
    return merged
