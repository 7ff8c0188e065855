"""A chain job's attempts: the job submitted with the chain, and the jobs `resume` submitted for it later.

The manifest keeps, per job key, the current attempt and the earlier ones:

    "jobs": {"run": {"job_id": "212", "tasks": [3, 4, 5], ..., "earlier": [{"job_id": "180", ...}]}}

`tasks` lists the array tasks the current attempt runs (absent: all of them). Everything that reads states (status,
the finalize) asks for every attempt's id and merges them here: an array task comes from the newest attempt that
ran it, so a resumed 6-run array shows its runs 0-2 from the first attempt and 3-5 from the second.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from mlps_slurm.slurm import JobState

_JOB_ID = re.compile(r"\d{1,12}")


def attempt_ids(record: Mapping[str, Any]) -> list[str]:
    """Every Slurm job id of this job key, oldest first (ids that are not plain job ids are ignored)."""
    ids = [str(e.get("job_id", "")) for e in record.get("earlier", []) or [] if isinstance(e, Mapping)]
    ids.append(str(record.get("job_id", "")))
    return [i for i in ids if _JOB_ID.fullmatch(i)]


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
