"""Finalize a kv-cache chain, inside its last job: every rank's results file -> per-option aggregates, the table,
the verdict.

Aggregation is Rules.md §6.3.4's (kvcache.md §4.6): within a trial the ranks' storage read and write bandwidths and
token throughputs are summed, the option's figure is the mean over its trials, and the device read and write P95s
are the max of the per-rank P95s over all ranks and trials (not a pooled percentile). A rank that served everything
from the CPU tier contributes 0.0 bandwidth (6.3.4.4). A rank without a usable results file is never averaged away:
the option has no aggregate then, and the reasons name the rank and the engine's error.

Beside the reference-compatible figures (the drain after the window included, divided by the window) the builtin
engine's measured ones are aggregated the same way (bytes its reads and writes moved inside the window), so a difference
is visible.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Mapping

from mlps_slurm.benchmarks.kvcache.report import table
from mlps_slurm.benchmarks.kvcache.results import PATH_MODEL
from mlps_slurm.rundir import RunDirectory, run_record
from mlps_slurm.steps.outcome import job_note, job_states, preflight_reasons, write_results

# Reference-compatible figures summed over ranks within a trial, then averaged over trials.
SUMMED = {
    "read_bandwidth_gibps": ("cache_stats", "tier_storage_read_bandwidth_gbps"),
    "write_bandwidth_gibps": ("cache_stats", "tier_storage_write_bandwidth_gbps"),
    "avg_throughput_tokens_per_sec": ("summary", "avg_throughput_tokens_per_sec"),
    "storage_throughput_tokens_per_sec": ("summary", "storage_throughput_tokens_per_sec"),
}
MEASURED = {"measured_read_bandwidth_gibps": "read_bandwidth_gibps",
            "measured_write_bandwidth_gibps": "write_bandwidth_gibps"}
# Max over ranks and trials.
MAXED = {
    "device_read_p95_ms": ("cache_stats", "storage_read_device_p95_ms"),
    "device_write_p95_ms": ("cache_stats", "storage_write_device_p95_ms"),
    "storage_io_p95_ms": ("storage_io_latency_ms", "p95"),
}
# Measured bandwidth this far below the reference-compatible one is flagged (the drain counted after the window).
DRAIN_FLAG_RATIO = 1.10


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    summary = data.get("summary") if isinstance(data.get("summary"), Mapping) else {}
    if name == "summary":
        return summary
    value = summary.get(name, data.get(name))
    return value if isinstance(value, Mapping) else {}


def read_rank(rank_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(figures of one rank, None) or (None, why there are none: the engine's error when it left one)."""
    error = rank_dir / "engine_error.json"
    if error.is_file():
        try:
            e = json.loads(error.read_text(encoding="utf-8"))
            return None, f"rank {e.get('rank')} on {e.get('host')} failed during {e.get('during')}: {e.get('error')}"
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return None, f"{error}: unreadable error record ({exc})"
    files = sorted(rank_dir.glob("kvcache_results_*.json")) if rank_dir.is_dir() else []
    if not files:
        return None, f"no kvcache_results_*.json in {rank_dir}"
    try:
        data = json.loads(files[0].read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{files[0]}: unreadable ({exc})"
    if not isinstance(data, dict) or not _section(data, "cache_stats"):
        return None, f"{files[0]}: no summary.cache_stats"
    stats = _section(data, "cache_stats")
    row: dict[str, Any] = {"file": str(files[0]), "storage_entries": stats.get("storage_entries"),
                           "requests": _section(data, "summary").get("total_requests"), "seed": data.get("seed")}
    for key, (section, name) in {**SUMMED, **MAXED}.items():
        row[key] = _number(_section(data, section).get(name))
    own = data.get("mlps_slurm") if isinstance(data.get("mlps_slurm"), Mapping) else {}
    measured = own.get("measured") if isinstance(own.get("measured"), Mapping) else {}
    for key, name in MEASURED.items():
        row[key] = _number(measured.get(name))
    row["engine"] = own.get("engine", "official")
    row["host"] = own.get("host")
    if row["storage_entries"] == 0:  # Rules.md 6.3.4.4: a CPU-tier rank measured no storage
        row["read_bandwidth_gibps"] = row["write_bandwidth_gibps"] = 0.0
    return row, None


def aggregate_option(ranks: Mapping[int, Mapping[int, dict[str, Any]]]) -> dict[str, Any]:
    """`ranks[trial][rank]` -> the option's figures; None where any rank lacks the value."""
    out: dict[str, Any] = {"trial_count": len(ranks), "rank_count": max((len(r) for r in ranks.values()), default=0)}
    for key in (*SUMMED, *MEASURED):
        per_trial = []
        for rows in ranks.values():
            values = [row.get(key) for row in rows.values()]
            per_trial.append(None if any(v is None for v in values) else sum(values))
        out[key] = statistics.fmean(per_trial) if per_trial and None not in per_trial else None
        out[f"{key}_per_trial"] = per_trial
    for key in MAXED:  # a rank with no operation of that kind has no percentile: it does not lower the max
        values = [row[key] for rows in ranks.values() for row in rows.values() if row.get(key) is not None]
        out[key] = max(values) if values else None
    out["cpu_tier_ranks"] = sorted({f"trial_{t}/rank_{k}" for t, rows in ranks.items() for k, row in rows.items()
                                    if row.get("storage_entries") == 0})
    reference, measured = out.get("read_bandwidth_gibps"), out.get("measured_read_bandwidth_gibps")
    out["drain_flag"] = bool(reference and measured is not None and reference > DRAIN_FLAG_RATIO * measured)
    return out


def planned_layout(record: Mapping[str, Any]) -> tuple[dict[str, Any], int, int]:
    """(options by number, trials, ranks) as the manifest planned them; a damaged or hostile value (an option that
    is not a number would become a path) is a ValueError naming the key."""
    options, trials, ranks = record.get("options"), record.get("trials"), record.get("num_processes")
    if not isinstance(options, Mapping) or not all(isinstance(k, str) and k.isdigit() for k in options):
        raise ValueError(f"settings.options {options!r} is not a mapping of option numbers")
    for key, value in (("request.trials", trials), ("settings.num_processes", ranks)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} {value!r} is not a whole number >= 1")
    return dict(sorted(options.items(), key=lambda kv: int(kv[0]))), trials, ranks


def finalize(run: RunDirectory) -> tuple[dict[str, Any], str]:
    manifest = run.read_manifest()
    record = run_record(manifest)
    states = job_states(manifest)
    reasons = preflight_reasons(run, states)
    preflight_failed = bool(reasons)  # then no rank ran: listing every missing file would hide the cause
    raw = run.raw_dir("kv_cache", "")
    try:
        planned, trials, num_ranks = planned_layout(record)
    except ValueError as exc:
        reasons.append(f"{run.manifest_path}: {exc}; the manifest is damaged")
        planned, trials, num_ranks = {}, 0, 0
    options: dict[str, Any] = {}
    for number, params in planned.items():
        ranks: dict[int, dict[int, dict[str, Any]]] = {}
        problems = []
        for trial in range(trials):
            for rank in range(num_ranks):
                row, why = read_rank(raw / f"option_{number}" / f"trial_{trial}" / f"rank_{rank}")
                if row is None:
                    problems.append(f"option {number} trial {trial}: {why}")
                else:
                    ranks.setdefault(trial, {})[rank] = row
        if problems and not preflight_failed:
            note = job_note(states, f"option{number}")
            reasons += [p + note for p in problems[:4]]
            if len(problems) > 4:
                reasons.append(f"option {number}: {len(problems) - 4} more rank result(s) missing")
        options[number] = {"params": params, "complete": not problems,
                           **(aggregate_option(ranks) if not problems else {"ranks_usable": sum(map(len,
                                                                                            ranks.values()))})}
    _remove_empty_cache_dirs(record.get("cache_dir"), num_ranks)
    results = write_results(run, manifest, reasons, states, table, model=PATH_MODEL,
                            engine=record.get("engine"), num_processes=record.get("num_processes"),
                            ranks_per_node=record.get("ranks_per_node"), trials=record.get("trials"),
                            options=options)
    return results, table(results)


def _remove_empty_cache_dirs(cache_dir: Any, ranks: int) -> None:
    """The ranks remove their cache files; their emptied directories go here. Only empty directories are removed
    (rmdir), so a manifest naming another directory can never cost a file."""
    if not isinstance(cache_dir, str) or not cache_dir:
        return
    for path in [Path(cache_dir) / f"rank_{r}" for r in range(ranks)] + [Path(cache_dir)]:
        try:
            path.rmdir()
        except OSError:
            pass  # not empty, absent or not ours: left as it is
