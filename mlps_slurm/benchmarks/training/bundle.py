"""A training run in a submission tree:

    <division>/<org>/results/<system>/training/<model>/{datasize/<ts>/<the run without raw/>, datagen/<ts>/,
                                                        run/{results.json, <ts> x 6}}

Each DLIO run is named by its start time; datasize/ and datagen/ by the time the run was rendered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlps_slurm.bundle.layout import Entry, split_run

if TYPE_CHECKING:
    from mlps_slurm.verify import RunVerdict


def layout(run: "RunVerdict", base: str) -> tuple[list[Entry], str, str]:
    starts = {r.name: r.start for r in getattr(run.record, "runs", ())}
    return split_run(run, base, f"raw/training/{run.model}", starts, results_dir=f"{base}/run")


def system_facts(runs: list["RunVerdict"]) -> dict[str, Any]:
    return {}
