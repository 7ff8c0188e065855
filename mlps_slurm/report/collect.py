"""What a report shows, gathered from a run directory or a schedule's runs (login-node code, no matplotlib).

A run report has one Section per benchmark run (a suite: one per workload under runs/): the run's facts (id,
benchmark, model, status, rules verdict, nodes), its headline numbers (the metrics `mlps-slurm history` records,
with their spread), the benchmark's figures (its plots.py) and the host-metrics figures. A schedule report has one
Section per workload the schedule ran (benchmark and model): each metric over time across its runs, the spread of
each run's samples as an error bar, and the verdict of each run against the runs before it (`history compare RUN
--baseline last-N`, N the schedule's) marked on the points.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from mlps_slurm import benchmarks
from mlps_slurm.benchmarks.base import Metric
from mlps_slurm.history.ingest import NotFinalized, read_run, record, run_directories
from mlps_slurm.history.store import HistoryError, RunRow
from mlps_slurm.report import hostmetrics
from mlps_slurm.report.figures import Figure, figure, number, series, slug


class ReportError(Exception):
    """A run or schedule that cannot be reported; the message names the path and the cause."""


@dataclass
class Section:
    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    header: list[str] = field(default_factory=list)  # the headline table
    rows: list[list[str]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    text: str = ""  # the benchmark's readable results table, as the finalize wrote it


@dataclass
class Report:
    title: str
    subtitle: str
    sections: list[Section]
    problems: list[str] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        return [f for s in self.sections for f in s.figures]


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _metric_row(m: Metric) -> list[str]:
    samples = m.samples or (m.value,)
    better = "higher" if m.higher_is_better else "lower"
    return [m.name, fmt(m.value), m.unit or "-", str(len(samples)), fmt(min(samples)), fmt(max(samples)), better]


def _results(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ReportError(f"{path}: cannot read the results ({exc})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: not a JSON object; results.json is damaged")
    return data


def _named(prefix: str, found: list[Figure]) -> list[Figure]:
    """The figures with names unique in the report: `<prefix>-<figure name>`, slugged."""
    from dataclasses import replace

    return [replace(f, name=slug(f"{prefix}-{f.name}", 90)) for f in found]


def run_section(run_dir: Path, row: RunRow) -> Section:
    results = _results(run_dir / "results" / "results.json")
    benchmark = benchmarks.get(row.benchmark)
    try:
        drawn = list(benchmark.figures(results))
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise ReportError(f"{run_dir / 'results' / 'results.json'}: unexpected shape ({type(exc).__name__}: {exc}); "
                          "results.json is damaged") from None
    drawn += hostmetrics.figures(run_dir)
    versions = ", ".join(f"{k} {v}" for k, v in row.versions.items() if v)
    facts = [("run", row.run_id), ("benchmark", row.benchmark), ("model", row.model or "-"),
             ("status", str(row.status or "-")), ("rules verdict", row.verdict or "-"),
             ("submittable", {True: "yes", False: "no", None: "-"}[row.submittable]),
             ("finalized", row.finalized[:19].replace("T", " ") + " UTC"), ("nodes", ", ".join(row.nodes) or "-"),
             ("versions", versions or "-"), ("directory", row.run_dir)]
    notes = [f"reason: {r}" for r in results.get("reasons") or [] if isinstance(r, str)]
    notes += [f"note: {n}" for n in results.get("notes") or [] if isinstance(n, str)]
    notes += [f"{f.get('verdict')} {f.get('rule_id')}: {f.get('message')}" for f in results.get("rule_findings") or []
              if isinstance(f, Mapping) and f.get("verdict") in ("OPEN", "INVALID")]
    try:
        text = (run_dir / "results" / "results.txt").read_text(encoding="utf-8", errors="replace")[:20000]
    except OSError:
        text = ""
    return Section(title=f"{row.benchmark} {row.model or ''}: {row.run_id}".replace("  ", " "), facts=facts,
                   header=["metric", "mean", "unit", "samples", "min", "max", "better"],
                   rows=[_metric_row(m) for m in row.metrics], figures=_named(row.run_id, drawn), notes=notes,
                   text=text)


def run_report(run_dir: Path) -> Report:
    """The report of a finalized run directory, or of every finalized workload of a suite."""
    try:
        manifest = json.loads((run_dir / "manifest.json").read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ReportError(f"{run_dir / 'manifest.json'}: cannot read the manifest ({exc})") from None
    request = manifest.get("request") if isinstance(manifest, dict) else None
    if isinstance(request, Mapping) and "members" in request:
        members, problems, sections = list(run_directories(run_dir / "runs")), [], []
        for member in members:
            try:
                sections.append(run_section(member, read_run(member)))
            except (HistoryError, ReportError) as exc:
                problems.append(str(exc))
        if not sections:
            raise ReportError(f"{run_dir}: a suite with no finalized workload yet"
                              + (f" ({problems[0]})" if problems else ""))
        return Report(f"Suite {manifest.get('run_id')}", f"{len(sections)} workload(s)", sections, problems)
    try:
        row = read_run(run_dir)
    except NotFinalized as exc:
        raise ReportError(f"{exc}; report it once `mlps-slurm status {run_dir}` shows it ended") from None
    except HistoryError as exc:
        raise ReportError(str(exc)) from None
    section = run_section(run_dir, row)
    return Report(f"{row.benchmark} run {row.run_id}", f"{row.model or ''} · {row.status} · verdict "
                  f"{row.verdict or '-'}", [section])


# --- a schedule: each metric over time across its runs -----------------------------------------------------------

def _when(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None


Judge = Callable[[RunRow], dict[str, str]]


def workload_section(title: str, rows: list[RunRow], judge: Judge, prefix: str) -> Section:
    """Each metric of `rows` (one benchmark and model, oldest first) over time, verdicts marked."""
    verdicts = {r.run_id: judge(r) for r in rows}
    names = list(dict.fromkeys(m.name for r in rows for m in r.metrics))
    found = []
    for name in names:
        points, ranges, marks, unit = [], [], [], ""
        for r in rows:
            m = next((m for m in r.metrics if m.name == name), None)
            when = _when(r.finalized)
            if m is None or when is None:
                continue
            unit = m.unit
            samples = [v for v in m.samples if number(v) is not None] or [m.value]
            points.append((when, m.value))
            ranges.append((min(samples), max(samples)))
            marks.append(verdicts[r.run_id].get(name))
        found.append(figure(f"{prefix}-{name}", f"{name} over time", f"{name} ({unit or 'no unit'}) of each run of "
                            "the schedule by the time it finalized: the point is the run's mean, the bar spans its "
                            "samples (checkpoints, scored runs, trials or query runs); a red X is a regression and a "
                            "green triangle an improvement against the runs before it.", unit or name,
                            [series(name, points, ranges, marks)], kind="line", x_label="finalized (UTC)"))
    regressed = [r.run_id for r in rows if "regression" in verdicts[r.run_id].values()]
    table = [[r.run_id, r.finalized[:19].replace("T", " "), str(r.status or "-"), r.verdict or "-",
              *(fmt(next((m.value for m in r.metrics if m.name == n), None)) for n in names),
              ", ".join(f"{k} {v}" for k, v in verdicts[r.run_id].items()) or "-"] for r in rows]
    return Section(title=title, facts=[("runs", str(len(rows))), ("regressed", ", ".join(regressed) or "none")],
                   header=["run", "finalized (UTC)", "status", "rules verdict", *names, "vs. runs before"],
                   rows=table, figures=[f for f in found if f is not None])


def schedule_report(name: str, entries: list[dict[str, Any]], db: Path, judge: Judge) -> Report:
    """The report of schedule `name` from its log entries: every finalized run it submitted, recorded in `db`."""
    problems: list[str] = []
    recorded: dict[str, RunRow] = {}
    pending = 0
    for entry in entries:
        run_dir = entry.get("run_dir")
        if entry.get("action") != "submitted" or not isinstance(run_dir, str) or not run_dir:
            continue
        path = Path(run_dir)
        if path.name != entry.get("run_id") or path.is_symlink() or not path.is_dir():
            if not path.exists():
                continue  # removed by the schedule's retention
            problems.append(f"{run_dir}: not the run {str(entry.get('run_id'))[:80]!r} the log names; left out")
            continue
        targets = list(run_directories(path / "runs")) if (path / "runs").is_dir() else [path]
        for target in targets:
            try:
                row = record(target, db)
            except NotFinalized:
                pending += 1
                continue
            except HistoryError as exc:
                problems.append(str(exc))
                continue
            recorded[row.run_id] = row
    if not recorded:
        raise ReportError(f"schedule {name!r}: none of its runs has finalized yet ({pending} pending); nothing to draw")
    groups: dict[tuple[str, str], list[RunRow]] = {}
    for row in sorted(recorded.values(), key=lambda r: (r.finalized, r.run_id)):
        groups.setdefault((row.benchmark, row.model or "-"), []).append(row)
    sections = [workload_section(f"{b} {m}", rows, judge, slug(f"{name}-{b}-{m}", 60))
                for (b, m), rows in sorted(groups.items())]
    subtitle = f"{len(recorded)} finalized run(s)" + (f", {pending} not finalized yet" if pending else "")
    return Report(f"Schedule {name}", subtitle, sections, problems)
