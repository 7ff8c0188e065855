"""A checkpointing run in a submission tree:

    <division>/<org>/results/<system>/checkpointing/<model>/{results.json, <YYYYmmdd_HHMMSS>/<the run>}

The timestamp is the run's first write (UTC). The system description states the shared capabilities the rules
ask of checkpointing storage (Rules.md §4.7.4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlps_slurm.bundle.layout import Entry, whole_run

if TYPE_CHECKING:
    from mlps_slurm.verify import RunVerdict


def layout(run: "RunVerdict", base: str) -> tuple[list[Entry], str, str]:
    return whole_run(run, base)


def system_facts(runs: list["RunVerdict"]) -> dict[str, Any]:
    hosts = max((int(r.metrics.get("hosts") or 0) for r in runs), default=0)
    if not hosts:
        return {}
    # The rules spell the read key with two underscores.
    return {"shared_capabilities": {"multi_host_support": hosts > 1, "simultaneous_write_support": hosts > 1,
                                    "simultaneous_read__support": hosts > 1}}
