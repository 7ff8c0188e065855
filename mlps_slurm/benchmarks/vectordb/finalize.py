"""Finalize a vectordb chain, inside its last job: the load summary and every run's summary -> the figures, the
table, the verdict; then the embedded server's data directory is removed (whatever happened before).

Per run: QPS (all queries / the union of the query processes' windows), latency percentiles over every search
call, recall@k measured after the window. Over the runs: the mean, min and max of each.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Mapping

from mlps_slurm.benchmarks.vectordb.indexes import INDEX_TYPES
from mlps_slurm.benchmarks.vectordb.report import table
from mlps_slurm.benchmarks.vectordb.server import remove_data_dir
from mlps_slurm.rundir import RunDirectory, run_record
from mlps_slurm.steps.outcome import job_note, job_states, preflight_reasons, write_results

LATENCIES = ("mean", "p50", "p95", "p99", "p99_9")


def _read(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path}: unreadable ({getattr(exc, 'strerror', None) or exc})"
    if not isinstance(data, dict):
        return None, f"{path}: not a JSON object"
    return data, None


def errors_in(leaf: Path) -> list[str]:
    """What the steps that failed in `leaf` recorded (engine_error*.json)."""
    out = []
    for path in sorted(leaf.glob("engine_error*.json")) if leaf.is_dir() else []:
        data, problem = _read(path)
        if data is None:
            out.append(problem or f"{path}: empty")
        else:
            rank = f" rank {data['rank']}" if "rank" in data else ""
            out.append(f"{data.get('during')}{rank} on {data.get('host')}: {data.get('error')}")
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def run_row(leaf: Path) -> tuple[dict[str, Any] | None, str | None]:
    summary, problem = _read(leaf / "summary.json")
    if summary is None:
        errors = errors_in(leaf)
        return None, "; ".join(errors) if errors else problem or f"no summary.json in {leaf}"
    lat = summary.get("latency_ms") if isinstance(summary.get("latency_ms"), Mapping) else {}
    row = {"run": leaf.name, "throughput_qps": _number(summary.get("throughput_qps")),
           "recall": _number(summary.get("recall")), "queries": summary.get("queries"),
           "window_s": _number(summary.get("window_s")), "load_s": _number(summary.get("load_s")),
           "query_processes": summary.get("query_processes"), "start": summary.get("start"),
           "latency_ms": {k: _number(lat.get(k)) for k in LATENCIES}}
    if row["throughput_qps"] is None:
        return None, f"{leaf / 'summary.json'}: no throughput_qps"
    return row, None


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def stats(values: list[float | None]) -> dict[str, float | None]:
        v = [x for x in values if x is not None]
        return {"mean": statistics.fmean(v) if v else None, "min": min(v) if v else None,
                "max": max(v) if v else None}

    return {"throughput_qps": stats([r["throughput_qps"] for r in rows]),
            "recall": stats([r["recall"] for r in rows]), "load_s": stats([r["load_s"] for r in rows]),
            "latency_ms": {k: stats([r["latency_ms"][k] for r in rows])["mean"] for k in LATENCIES}}


def cleanup(record: Mapping[str, Any], run: RunDirectory, run_id: str) -> dict[str, Any]:
    """The embedded server's data directory (only one this tool created for this run: its marker holds the run
    id) and any token a killed server left."""
    out: dict[str, Any] = {}
    data_dir = record.get("data_dir")
    if record.get("milvus_mode") == "embedded" and isinstance(data_dir, str) and data_dir:
        path = Path(data_dir)
        out["data_dir"] = data_dir
        out["data_dir_removed"] = (path.name == run_id and remove_data_dir(path, run_id)) or not path.exists()
    for token in (run.path / "milvus-server").glob("*/token"):
        try:
            token.unlink()
        except OSError:
            pass
    return out


def run_row_dropped(run: RunDirectory, index: str, planned: int) -> Any:
    """What the last run's collect recorded about dropping an external server's collection."""
    summary, _ = _read(run.raw_dir("vector_database", index) / "run" / f"{planned - 1:02d}" / "summary.json")
    return (summary or {}).get("collection_dropped")


def finalize(run: RunDirectory) -> tuple[dict[str, Any], str]:
    manifest = run.read_manifest()
    record = run_record(manifest)
    states = job_states(manifest)
    reasons = preflight_reasons(run, states)
    preflight_failed = bool(reasons)
    index, planned = record.get("index_type"), record.get("runs")
    rows: list[dict[str, Any]] = []
    datagen: dict[str, Any] | None = None
    if not isinstance(index, str) or index not in INDEX_TYPES or isinstance(planned, bool) or not isinstance(planned, int) or planned < 1:
        reasons.append(f"{run.manifest_path}: index_type {index!r} / runs {planned!r} are not a known index type and "
                       "a whole number; the manifest is damaged")
    else:
        raw = run.raw_dir("vector_database", index)
        datagen, problem = _read(raw / "datagen" / "summary.json")
        if datagen is None and not preflight_failed:
            why = "; ".join(errors_in(raw / "datagen")) or problem or "no datagen/summary.json"
            reasons.append(f"load: {why}{job_note(states, 'load')}")
        elif datagen is not None:
            for task in range(planned):
                row, why = run_row(raw / "run" / f"{task:02d}")
                if row is None:
                    reasons.append(f"run {task}: {why}{job_note(states, 'run', task)}")
                else:
                    rows.append(row)
    removed = cleanup(record, run, str(manifest.get("run_id")))
    if record.get("milvus_mode") == "external" and datagen is not None:
        last = run_row_dropped(run, index, planned)
        if last is not True:
            removed["collection_left"] = f"collection {record.get('collection')} is still on {record.get('uri')}" + (
                f" (dropping it failed: {last})" if isinstance(last, str) else " (no run dropped it: the chain ended before its last run's collect)")
    if removed.get("data_dir") and not removed.get("data_dir_removed"):
        reasons.append(f"the embedded server's data directory {removed['data_dir']} could not be removed")
    load_figures = {k: datagen.get(k) for k in ("num_vectors", "dimension", "insert_s", "insert_vectors_per_s",
                                                  "flush_s", "index_build_s", "ground_truth_s", "server_version",
                                                  "index_params")} if datagen else None
    results = write_results(run, manifest, reasons, states, table, model=index, index_type=index,
                            milvus_mode=record.get("milvus_mode"), metric=record.get("metric"),
                            num_vectors=record.get("num_vectors_loaded"), dimension=record.get("dimension"),
                            query_processes=record.get("num_query_processes"), runs_planned=planned,
                            query_batch_size=record.get("query_batch_size"),
                            search_params=(record.get("index_spec") or {}).get("search_params"),
                            load=load_figures, runs=rows, aggregate=aggregate(rows) if rows else None,
                            cleanup=removed)
    return results, table(results)
