"""DLIO's output after a run: the config DLIO resolved checked against the one we wrote, and one run's metrics
normalized from DLIO's summary.json and per_epoch_stats.json and the shim's io.json.

Pure functions (no MPI, no Slurm); the in-job shim checks the resolved config, the finalize step normalizes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import yaml

from mlps_slurm.benchmarks.training.engine import OUTPUT_SUBDIR


class DlioOutputError(ValueError):
    """DLIO's output is missing or malformed; the message names the file and the key."""


# --- after a run: the resolved config ----------------------------------------------------------------------------

def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (a == b and type(a) is type(b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b


def resolved_config_problems(output_dir: Path, expected: Mapping[str, Any], workload: str,
                             config_dir: str) -> list[str]:
    """Check what DLIO resolved (dlio_config/config.yaml, hydra.yaml) against the config we wrote: the workload
    file must be ours (config_sources, choices) and every key we set must have the value we set."""
    problems = []
    sub = output_dir / OUTPUT_SUBDIR
    try:
        resolved = yaml.safe_load((sub / "config.yaml").read_text())
        hydra_cfg = yaml.safe_load((sub / "hydra.yaml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        return [f"{sub}: DLIO left no readable resolved config ({exc})"]
    runtime = (hydra_cfg or {}).get("hydra", {}).get("runtime", {})
    chosen = (runtime.get("choices") or {}).get("workload")
    if chosen != workload:
        problems.append(f"{sub / 'hydra.yaml'}: DLIO ran workload {chosen!r}, expected {workload!r}")
    sources = [s.get("path") for s in runtime.get("config_sources") or [] if isinstance(s, Mapping)]
    if config_dir not in sources:
        problems.append(f"{sub / 'hydra.yaml'}: config_sources {sources} do not include {config_dir}: DLIO did "
                        "not read our workload file")
    got = _flatten((resolved or {}).get("workload", {}))
    for key, want in _flatten(dict(expected)).items():
        if key not in got:
            problems.append(f"{sub / 'config.yaml'}: workload.{key} is missing (we set {want!r})")
        elif not _same(got[key], want):
            problems.append(f"{sub / 'config.yaml'}: workload.{key} is {got[key]!r}, we set {want!r}")
    return problems



# --- DLIO's output ------------------------------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DlioOutputError(f"{path}: missing") from exc
    except json.JSONDecodeError as exc:
        raise DlioOutputError(f"{path}: not valid JSON (truncated?): {exc.msg} at line {exc.lineno}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DlioOutputError(f"{path}: unreadable: {exc}") from exc


def _epoch_seconds(stats: Any) -> float | None:
    """Training time of a run: the sum of its epochs' durations (DLIO's per_epoch_stats.json)."""
    if not isinstance(stats, Mapping):
        return None
    total = 0.0
    for entry in stats.values():
        if isinstance(entry, Mapping):
            try:
                total += float(str(entry.get("duration")))  # DLIO writes it as a string, e.g. "2.18"
            except ValueError:
                return None
    return total or None


def normalize_run(leaf: Path, record_length: float) -> dict[str, Any]:
    """One run's metrics from its hydra output dir: DLIO's summary.json and per_epoch_stats.json, the shim's
    io.json (bytes every rank read) and launch.json. Raises DlioOutputError naming the file."""
    summary = read_json(leaf / "summary.json")
    if not isinstance(summary, Mapping):
        raise DlioOutputError(f"{leaf / 'summary.json'}: expected a JSON object")
    metric = summary.get("metric")
    if not isinstance(metric, Mapping):
        raise DlioOutputError(f"{leaf / 'summary.json'}: metric: missing (DLIO did not finish training)")
    au = _number(metric.get("train_au_mean_percentage"))
    samples = _number(metric.get("train_throughput_mean_samples_per_second"))
    if au is None or samples is None:
        raise DlioOutputError(f"{leaf / 'summary.json'}: metric.train_au_mean_percentage / "
                              "train_throughput_mean_samples_per_second: missing or not a number")
    dlio_mib = _number(metric.get("train_io_mean_MB_per_second"))
    try:
        epoch_s = _epoch_seconds(read_json(leaf / "per_epoch_stats.json"))
    except DlioOutputError:
        epoch_s = None
    io = None
    if (leaf / "io.json").is_file():
        io = read_json(leaf / "io.json")
    measured = io.get("total", {}) if isinstance(io, Mapping) else {}
    bytes_read = measured.get("rchar")
    storage_bytes = measured.get("read_bytes")
    caching = summary.get("potential_caching")
    return {
        "name": leaf.name,
        "start": summary.get("start"),
        "end": summary.get("end"),
        "epochs": summary.get("epochs"),
        "num_accelerators": summary.get("num_accelerators"),
        "num_hosts": summary.get("num_hosts"),
        "num_files_train": summary.get("num_files_train"),
        "host_memory_GB": summary.get("host_memory_GB"),
        "au_percent": au,
        "au_per_epoch": [x for x in metric.get("train_au_percentage") or [] if _number(x) is not None],
        "au_meet_expectation": metric.get("train_au_meet_expectation"),
        "throughput_samples_per_s": samples,
        # DLIO computes its "MB/second" as samples/s x configured record length / 2^20: nominal, not measured.
        "dlio_MiB_per_s": dlio_mib,
        "dlio_MB_per_s": samples * record_length / 1e6,
        "train_seconds": epoch_s,
        "bytes_read": bytes_read,
        "storage_bytes_read": storage_bytes,
        "measured_MB_per_s": (bytes_read / epoch_s / 1e6) if isinstance(bytes_read, (int, float)) and epoch_s
        else None,
        # Share of the bytes read that came from storage rather than the page cache (page-ins of anything else
        # the ranks touched count too, so this is an upper bound for the dataset).
        "storage_fraction": (storage_bytes / bytes_read) if isinstance(storage_bytes, (int, float))
        and isinstance(bytes_read, (int, float)) and bytes_read > 0 else None,
        "dlio_potential_caching": caching,
        "cache_drop": io.get("cache_drop") if isinstance(io, Mapping) else None,
    }
