"""Compare recorded runs: one run against another, or against the N previous runs of its workload pooled.

What a comparison means is compare.py's (the method is in its docstring); this module picks the runs from the
database and turns their metrics into the series compare.py judges.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mlps_slurm.history.compare import MIN_CHANGE, MetricVerdict, Series, compare, overall, pool, regressed
from mlps_slurm.history.store import HistoryError, RunRow, get, previous


@dataclass(frozen=True)
class Comparison:
    candidate: RunRow
    baseline: tuple[RunRow, ...]
    verdicts: tuple[MetricVerdict, ...]
    notes: tuple[str, ...]

    @property
    def regressed(self) -> bool:
        return regressed(self.verdicts)

    @property
    def verdict(self) -> str:
        return overall(self.verdicts)


def series(row: RunRow) -> list[Series]:
    """A run's metrics as one-run series (a metric recorded without samples counts as its one value)."""
    return [Series(m.name, m.unit, m.higher_is_better, (tuple(m.samples) or (m.value,),)) for m in row.metrics]


def _notes(candidate: RunRow, baseline: Sequence[RunRow]) -> list[str]:
    notes = []
    for what, attr in (("model", "model"), ("request", "request_digest"), ("site profile", "profile_digest")):
        others = sorted({str(getattr(b, attr)) for b in baseline if getattr(b, attr) != getattr(candidate, attr)})
        if others:
            notes.append(f"the baseline's {what} differs ({', '.join(o[:16] for o in others)} vs "
                         f"{str(getattr(candidate, attr))[:16]}): the runs may not measure the same thing")
    if candidate.status != "success":
        notes.append(f"{candidate.run_id} did not succeed (status {candidate.status}): its metrics may be partial")
    return notes


def compare_rows(baseline: Sequence[RunRow], candidate: RunRow, min_change: float = MIN_CHANGE) -> Comparison:
    if not baseline:
        raise HistoryError("no baseline run to compare with")
    mixed = sorted({b.benchmark for b in baseline if b.benchmark != candidate.benchmark})
    if mixed:
        raise HistoryError(f"{candidate.run_id} is a {candidate.benchmark} run and the baseline holds "
                           f"{', '.join(mixed)} runs: only runs of one benchmark compare")
    per_run = [s for b in baseline for s in series(b)]
    names = list(dict.fromkeys(s.name for s in per_run))
    pooled = [p for p in (pool(n, per_run) for n in names) if p is not None]
    verdicts = compare(pooled, series(candidate), min_change)
    return Comparison(candidate, tuple(baseline), tuple(verdicts), tuple(_notes(candidate, baseline)))


def lookup(db: Path, run_id: str) -> RunRow:
    row = get(db, run_id)
    if row is None:
        raise HistoryError(f"{db}: no run {run_id!r} recorded (`mlps-slurm history list` shows the recorded runs; "
                           "`history ingest RUN_DIR` records one)")
    return row


def compare_to_baseline(db: str | Path, run_id: str, last_n: int, same_request: bool = True,
                        min_change: float = MIN_CHANGE) -> tuple[list[MetricVerdict], bool]:
    """Run `run_id` against the `last_n` previous successful runs of its benchmark, model and (by default) request:
    (the verdict of every metric, whether any regressed). No earlier run: ([], False)."""
    comparison = baseline_comparison(Path(db), run_id, last_n, same_request, min_change)
    if comparison is None:
        return [], False
    return list(comparison.verdicts), comparison.regressed


def baseline_comparison(db: Path, run_id: str, last_n: int, same_request: bool = True,
                        min_change: float = MIN_CHANGE) -> Comparison | None:
    if last_n < 1:
        raise HistoryError(f"--baseline last-{last_n}: N must be at least 1")
    candidate = lookup(db, run_id)
    earlier = previous(db, candidate, last_n, same_request)
    return compare_rows(earlier, candidate, min_change) if earlier else None
