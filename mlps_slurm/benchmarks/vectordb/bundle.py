"""A vectordb run in a submission tree:

    <division>/<org>/results/<system>/vector_database/<INDEX>/{results.json, datasize/<ts>/, datagen/<ts>/,
                                                               run/<ts> x 5}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlps_slurm.bundle.layout import Entry, split_run

if TYPE_CHECKING:
    from mlps_slurm.verify import RunVerdict


def layout(run: "RunVerdict", base: str) -> tuple[list[Entry], str, str]:
    starts = {r.name: r.start for r in getattr(run.record, "runs", ())}
    return split_run(run, base, f"raw/vector_database/{run.model}", starts, results_dir=base)


def system_facts(runs: list["RunVerdict"]) -> dict[str, Any]:
    return {}
