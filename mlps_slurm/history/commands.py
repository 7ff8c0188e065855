"""`mlps-slurm history list | show | compare | ingest`: the work behind the click commands of cli/history.py.

Each function takes what the command parsed, prints through `echo` (stdout) and `err` (stderr) and returns the exit
status: 0 done (compare: no regression), 6 compare found a regression, 2 bad input (an unknown run, a damaged run
or database, a profile error). Before `list`, `show` and `compare` read the database, the finalized runs under the
results directory that it does not hold yet (or whose results.json changed) are recorded (`--no-scan` skips it).
"""

from __future__ import annotations

import os

import json
import re
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

from mlps_slurm.history.baseline import Comparison, baseline_comparison, compare_rows, lookup
from mlps_slurm.history.compare import CONFIDENCE, MIN_CHANGE, NO_SPREAD_BAND
from mlps_slurm.history.ingest import RUN_ID, NotFinalized, record, run_directories, scan
from mlps_slurm.history.store import HistoryError, RunRow, StoreError, select

EXIT_OK, EXIT_USAGE, EXIT_REGRESSION = 0, 2, 6
BASELINE = re.compile(r"^last-(\d{1,4})$")
Echo = Callable[[str], None]


class Where:
    """The database and the results directory a command uses (--db, else the profile's)."""

    def __init__(self, profile_ref: str, overrides: Sequence[str], db: str | None, scan_runs: bool = True) -> None:
        from mlps_slurm.history import default_db
        from mlps_slurm.profile import load_profile

        profile = load_profile(profile_ref, list(overrides))
        self.root = Path(profile.get("storage.results_dir"))
        self.db = Path(db) if db else default_db(profile)
        self.scan_runs = scan_runs

    def refresh(self, err: Echo) -> None:
        if not self.scan_runs:
            return
        _, problems = scan(self.root, self.db)
        if problems:
            more = f" (and {len(problems) - 1} more; `mlps-slurm history ingest {self.root}` lists them)" \
                if len(problems) > 1 else ""
            err(f"mlps-slurm: warning: not recorded: {problems[0]}{more}")


def _run(where: Where, ref: str) -> RunRow:
    """A run given as a run directory (recorded now) or as a recorded run id."""
    path = Path(ref)
    if path.exists() or "/" in ref:
        return record(path, where.db)
    if not RUN_ID.match(ref):
        raise HistoryError(f"{ref[:80]!r} is neither a run directory nor a run id")
    return lookup(where.db, ref)


def _guard(work: Callable[[], int], err: Echo) -> int:
    from mlps_slurm.profile import ProfileError

    try:
        return work()
    except (HistoryError, ProfileError) as exc:
        err(f"mlps-slurm: error: {exc}")
        return EXIT_USAGE


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _headline(row: RunRow) -> str:
    m = row.headline()
    return "-" if m is None else f"{m.name} {_num(m.value)} {m.unit}".rstrip()


def list_runs(profile_ref: str, overrides: Sequence[str], db: str | None, scan_runs: bool, benchmark: str | None,
              model: str | None, limit: int, as_json: bool, echo: Echo, err: Echo) -> int:
    def work() -> int:
        where = Where(profile_ref, overrides, db, scan_runs)
        where.refresh(err)
        conditions, params = [], []
        for column, value in (("benchmark", benchmark), ("model", model)):
            if value is not None:
                conditions.append(f"{column} = ?")
                params.append(value)
        rows = select(where.db, " AND ".join(conditions), params, limit=limit)
        if as_json:
            echo(json.dumps({"db": str(where.db), "runs": [r.to_dict() for r in rows]}, indent=1))
            return EXIT_OK
        if not rows:
            echo(f"no runs recorded in {where.db}")
            return EXIT_OK
        width = max(len(r.run_id) for r in rows)
        echo(f"{'run':<{width}}  {'benchmark':<13} {'model':<14} {'finalized':<20} {'status':<8} {'verdict':<8} "
             "headline")
        for r in rows:
            echo(f"{r.run_id:<{width}}  {r.benchmark:<13} {str(r.model or '-'):<14} {r.finalized[:19]:<20} "
                 f"{str(r.status or '-'):<8} {str(r.verdict or '-'):<8} {_headline(r)}")
        return EXIT_OK

    return _guard(work, err)


def show_run(ref: str, profile_ref: str, overrides: Sequence[str], db: str | None, scan_runs: bool, as_json: bool,
             echo: Echo, err: Echo) -> int:
    def work() -> int:
        where = Where(profile_ref, overrides, db, scan_runs)
        where.refresh(err)
        row = _run(where, ref)
        if as_json:
            echo(json.dumps(row.to_dict(), indent=1))
            return EXIT_OK
        versions = ", ".join(f"{k} {v}" for k, v in row.versions.items() if v)
        echo(f"run {row.run_id}: {row.benchmark} {row.model or ''}".rstrip())
        for label, value in (("directory", row.run_dir), ("finalized", row.finalized),
                             ("status", f"{row.status} (verdict {row.verdict or '-'})"),
                             ("nodes", ", ".join(row.nodes) or "-"), ("versions", versions or "-"),
                             ("request", row.request_digest[:16]),
                             ("profile", f"{row.profile_name or '-'} {str(row.profile_digest or '')[:16]}")):
            echo(f"  {label:<10} {value}")
        if not row.metrics:
            echo("  no metrics (the run produced none)")
            return EXIT_OK
        echo("")
        echo(f"  {'metric':<30} {'mean':>10} {'unit':<10} {'n':>3} {'sd %':>6} {'min':>10} {'max':>10}  better")
        for m in row.metrics:
            sd = statistics.stdev(m.samples) / abs(m.value) * 100 if len(m.samples) > 1 and m.value else None
            echo(f"  {m.name:<30} {_num(m.value):>10} {m.unit:<10} {len(m.samples):>3} "
                 f"{'-' if sd is None else f'{sd:.1f}':>6} {_num(min(m.samples, default=None)):>10} "
                 f"{_num(max(m.samples, default=None)):>10}  {'higher' if m.higher_is_better else 'lower'}")
        return EXIT_OK

    return _guard(work, err)


def _comparison_text(c: Comparison) -> list[str]:
    base = c.baseline[0].run_id if len(c.baseline) == 1 else \
        f"the {len(c.baseline)} previous runs ({', '.join(b.run_id for b in c.baseline)})"
    lines = [f"{c.candidate.run_id} ({c.candidate.benchmark} {c.candidate.model or ''}) against {base}",
             *(f"note: {n}" for n in c.notes), "",
             f"{'metric':<30} {'baseline':>10} {'run':>10} {'unit':<10} {'change':>8} {'noise':>7}  verdict"]
    for v in c.verdicts:
        change = "-" if v.change is None else f"{v.change * 100:+.1f}%"
        band = "-" if v.band is None else f"±{v.band * 100:.1f}%"
        lines.append(f"{v.name:<30} {_num(v.baseline):>10} {_num(v.candidate):>10} {v.unit:<10} {change:>8} "
                     f"{band:>7}  {v.verdict.upper() if v.verdict == 'regression' else v.verdict}")
    lines += ["", f"verdict: {c.verdict}" + (f" ({', '.join(v.name for v in c.verdicts if v.verdict == 'regression')})"
                                             if c.regressed else "")]
    return lines


def _comparison_json(c: Comparison, min_change: float) -> dict[str, Any]:
    return {"run_id": c.candidate.run_id, "benchmark": c.candidate.benchmark, "model": c.candidate.model,
            "baseline": [b.run_id for b in c.baseline], "verdict": c.verdict, "regressed": c.regressed,
            "notes": list(c.notes), "metrics": [v.to_dict() for v in c.verdicts],
            "method": {"test": "Welch t on the means", "confidence": CONFIDENCE, "min_change": min_change,
                       "no_spread_band": NO_SPREAD_BAND}}


def compare_runs(first: str, second: str | None, baseline: str | None, any_request: bool, min_change_pct: float,
                 profile_ref: str, overrides: Sequence[str], db: str | None, scan_runs: bool, as_json: bool,
                 echo: Echo, err: Echo) -> int:
    def work() -> int:
        min_change = min_change_pct / 100 if min_change_pct is not None else MIN_CHANGE
        if (second is None) == (baseline is None):
            raise HistoryError("give two runs (compare BASE RUN) or one run and --baseline last-N")
        match = BASELINE.match(baseline or "last-1")
        if match is None:
            raise HistoryError(f"--baseline {baseline!r}: expected last-N, e.g. last-5")
        where = Where(profile_ref, overrides, db, scan_runs)
        where.refresh(err)
        if second is not None:
            comparison = compare_rows([_run(where, first)], _run(where, second), min_change)
        else:
            candidate = _run(where, first)
            found = baseline_comparison(where.db, candidate.run_id, int(match.group(1)), not any_request, min_change)
            if found is None:
                scope = "model" if any_request else "model and request"
                message = (f"no baseline: no successful {candidate.benchmark} run of the same {scope} finalized "
                           f"before {candidate.run_id} is recorded in {where.db}; nothing to compare")
                echo(json.dumps({"run_id": candidate.run_id, "baseline": [], "verdict": None, "regressed": False,
                                 "note": message}, indent=1) if as_json else message)
                return EXIT_OK
            comparison = found
        if as_json:
            echo(json.dumps(_comparison_json(comparison, min_change), indent=1))
        else:
            echo("\n".join(_comparison_text(comparison)))
        return EXIT_REGRESSION if comparison.regressed else EXIT_OK

    return _guard(work, err)


def ingest_runs(paths: Sequence[str], profile_ref: str, overrides: Sequence[str], db: str | None, echo: Echo,
                err: Echo) -> int:
    """Record each run directory of PATHS (a directory of runs: every run in it); without PATHS, every finalized
    run under the results directory. Runs not finalized are skipped with the reason; damaged ones fail (exit 2)."""
    def work() -> int:
        where = Where(profile_ref, overrides, db, scan_runs=False)
        targets: list[Path] = []
        for p in [Path(p) for p in paths] or [where.root]:
            # a manifest.json of any kind (a damaged one too) makes it a run, reported as such, never a parent
            is_run = os.path.lexists(p / "manifest.json") or not p.is_dir()
            targets += [p] if is_run else list(run_directories(p))
        failed = recorded = 0
        for path in targets:
            try:
                row = record(path, where.db)
            except NotFinalized as exc:
                echo(f"skipped {exc}")
                continue
            except StoreError:
                raise
            except HistoryError as exc:
                err(f"mlps-slurm: error: {exc}")
                failed += 1
                continue
            recorded += 1
            echo(f"recorded {row.run_id}: {row.benchmark} {row.model or '-'}, {len(row.metrics)} metric(s), "
                 f"{row.status}")
        echo(f"{recorded} run(s) recorded in {where.db}" + (f"; {failed} could not be read" if failed else ""))
        return EXIT_USAGE if failed else EXIT_OK

    return _guard(work, err)
