"""A kv-cache run in a submission tree:

    <division>/<org>/results/<system>/kv_cache/<model>/{results.json, run/<YYYYmmdd_HHMMSS>/<the run>}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlps_slurm.bundle.layout import Entry, whole_run

if TYPE_CHECKING:
    from mlps_slurm.verify import RunVerdict


def layout(run: "RunVerdict", base: str) -> tuple[list[Entry], str, str]:
    return whole_run(run, base, parent="run")


def system_facts(runs: list["RunVerdict"]) -> dict[str, Any]:
    return {}
