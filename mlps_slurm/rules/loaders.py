"""Build rule records from a run directory (or its copy in a submission tree). With each benchmark's results.py,
the only code of the rules that reads files; everything it cannot read becomes an INVALID finding that names the file.

Every run directory has manifest.json (run_id, created, benchmark, request, profile values, planned jobs),
preflight/preflight.json (per-node reports, optional "facts" as in mlps_slurm.rules.facts) and results/results.json
(written by the finalize job: status "success" or "failed" with reasons, and metrics). A loader reads the request
and the planned settings as one mapping (mlps_slurm.rundir.run_record: manifest 2 keeps them apart, manifest 1 had
both in "request"). What lies under raw/ is the benchmark's own: its results.py documents it and turns it into the
benchmark's rule record
(`load(root, manifest, preflight) -> Loaded`). This module holds what every loader shares, and `load_run`, which
reads the common files, hands the rest to the benchmark the manifest names (through the registry) and runs the
benchmark's run-level rules on the record it built.

In a submission tree (mlps_slurm.bundle) a run is either copied whole into one timestamp directory, or keeps its
own files in datasize/<ts>/ and its raw leaves in datagen/<ts>/ and run/<ts>/; `leaves()` finds the raw leaves
from either layout.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mlps_slurm import benchmarks
from mlps_slurm.rules.common import RUN_MANIFEST, RUN_READABLE, RUN_RESULTS, PreflightRecord, check_preflight
from mlps_slurm.rules.core import Finding, invalid, parse_time, run_rules
from mlps_slurm.rundir import ManifestError, RunDirectory, check_manifest, run_record


class FileProblem(Exception):
    """A file that is missing, truncated or malformed; the message names it."""


def read_json_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise FileProblem(f"{path}: missing") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise FileProblem(f"{path}: unreadable: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        what = "empty" if not text.strip() else f"not valid JSON (truncated?): {exc.msg} at line {exc.lineno}"
        raise FileProblem(f"{path}: {what}") from exc


def read_json_object(path: Path) -> dict[str, Any]:
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise FileProblem(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


@dataclass
class Loaded:
    """A run as the rules see it. `problems` lists why the run has no usable result (empty: usable)."""

    benchmark: str
    model: str | None  # the model (training, checkpointing, kv-cache) or index type (vectordb)
    record: Any = None  # the benchmark's rule record, when it could be built
    findings: list[Finding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    started: float | None = None  # epoch seconds the measured work began: the submission tree's timestamp dir
    created: float | None = None  # epoch seconds the run was rendered (manifest "created")


def fail(loaded: Loaded, rule_id: str, message: str) -> None:
    """Record a load failure: an INVALID finding and a reason the run is unusable."""
    loaded.findings.append(invalid(rule_id, message))
    loaded.problems.append(message)


# --- the files every run has ---------------------------------------------------------------------------------------

def benchmark_of(manifest: Mapping[str, Any]) -> Any:
    return manifest.get("benchmark", manifest["request"].get("benchmark"))


def read_manifest(root: Path) -> dict[str, Any]:
    manifest = read_json_object(root / "manifest.json")
    try:
        check_manifest(manifest, root / "manifest.json")
    except ManifestError as exc:
        raise FileProblem(str(exc)) from exc
    request = manifest.get("request")
    if not isinstance(request, dict):
        raise FileProblem(f"{root / 'manifest.json'}: has no request object")
    benchmark = benchmark_of(manifest)
    if not isinstance(benchmark, str) or benchmark not in benchmarks.names():
        raise FileProblem(f"{root / 'manifest.json'}: benchmark is {benchmark!r}, expected one of "
                          f"{', '.join(benchmarks.names())}")
    return manifest


def load_preflight(root: Path, manifest: Mapping[str, Any]) -> tuple[PreflightRecord, dict[str, Any] | None]:
    planned = any(j.get("key") == "preflight" for j in manifest.get("plan", {}).get("jobs", [])
                  if isinstance(j, Mapping))
    path = RunDirectory(root).preflight_report
    try:
        data = read_json_object(path)
    except FileProblem as exc:
        return PreflightRecord(planned, None, problem=str(exc)), None
    ok = data.get("ok")
    if not isinstance(ok, bool):
        return PreflightRecord(planned, None, problem=f"{path}: 'ok' is {ok!r}, expected true or false"), data
    failures = tuple(f"{f.get('node')} {f.get('check')}: {f.get('message')}" for f in data.get("failures", [])
                     if isinstance(f, Mapping))
    return PreflightRecord(planned, ok, failures), data


def load_results(root: Path, loaded: Loaded) -> dict[str, Any] | None:
    """results/results.json of the finalize job; a missing, malformed or failed one makes the run unusable."""
    path = RunDirectory(root).results_json
    try:
        results = read_json_object(path)
    except FileProblem as exc:
        hint = " (the chain has not finalized, or its finalize job failed: see logs/)" if "missing" in str(exc) else ""
        fail(loaded, RUN_RESULTS, f"{exc}{hint}")
        return None
    status = results.get("status")
    if status != "success":
        reasons = "; ".join(str(r) for r in results.get("reasons", [])[:5]) or "no reason recorded"
        fail(loaded, RUN_RESULTS, f"{path}: status {status!r}: {reasons}")
    return results


# --- helpers for the benchmarks' loaders ---------------------------------------------------------------------------

def profile_value(manifest: Mapping[str, Any], key: str) -> Any:
    """A resolved profile value the manifest recorded (`nodes.memory_gb`, ...), or None."""
    values = manifest.get("profile", {}).get("values", {})
    return values.get(key) if isinstance(values, Mapping) else None


def results_dir(manifest: Mapping[str, Any]) -> str | None:
    """The results directory of the run: the planned one (request or settings), else the profile's
    storage.results_dir."""
    return run_record(dict(manifest)).get("results_dir") or profile_value(manifest, "storage.results_dir")


def relocate(root: Path, manifest: Mapping[str, Any], recorded: str | None, default: str) -> Path:
    """A path the manifest recorded inside the original run directory, found again under `root` (the run may have
    been moved or bundled since)."""
    run_id = str(manifest.get("run_id", ""))
    if recorded and run_id and f"/{run_id}/" in recorded:
        return root / recorded.split(f"/{run_id}/", 1)[1]
    return root / default


def finite(x: Any) -> float | None:
    """x as a float when it is a finite number (not a bool), else None."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def leaves(root: Path, raw_model_dir: str) -> tuple[list[Path], list[Path]]:
    """(datagen leaves, run leaves) of a run with a datagen step and several runs: raw/<tree name>/<model>/{datagen,
    run/*} in a run directory, or ../../{datagen/*, run/*} when `root` is the datasize/<ts> copy in a submission
    tree."""
    raw = root / raw_model_dir
    if raw.is_dir():
        datagen = [raw / "datagen"] if (raw / "datagen").is_dir() else []
        return datagen, sorted(p for p in (raw / "run").glob("*") if p.is_dir())
    if root.parent.name == "datasize":
        model_dir = root.parent.parent
        return (sorted(p for p in (model_dir / "datagen").glob("*") if p.is_dir()),
                sorted(p for p in (model_dir / "run").glob("*") if p.is_dir()))
    return [], []


# --- one run -------------------------------------------------------------------------------------------------------

def rule_findings(loaded: Loaded) -> list[Finding]:
    """The run-level rules of the loaded record (its load findings are already in loaded.findings)."""
    if loaded.record is None:
        return []
    return benchmarks.get(loaded.benchmark).run_findings(loaded.record)


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _symlinks_under(top: Path) -> list[Path]:
    """Symbolic links at or below `top` (not followed)."""
    if top.is_symlink():
        return [top]
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        found += [Path(dirpath) / n for n in sorted(dirnames + filenames) if (Path(dirpath) / n).is_symlink()]
    return found


def load_run(root: Path) -> tuple[dict[str, Any] | None, Loaded]:
    """Read one run directory and judge it: load findings + preflight + the benchmark's run-level rules.
    Never raises for a bad run: every problem is a finding."""
    try:
        manifest = read_manifest(root)
    except FileProblem as exc:
        loaded = Loaded("unknown", None)
        fail(loaded, RUN_MANIFEST, str(exc))
        return None, loaded
    preflight_record, preflight = load_preflight(root, manifest)
    benchmark = benchmark_of(manifest)
    # Names a manifest gives become paths (the run's raw directory, directories of a submission tree): a hostile
    # run directory must not steer what is read or written, so they are checked before anything uses them.
    bad = [f"{what} {str(value)[:80]!r}" for what, value in (("run_id", manifest.get("run_id", root.name)),
                                                             ("model", manifest["request"].get("model")))
           if value is not None and not SAFE_NAME.fullmatch(str(value))]
    if bad:
        loaded = Loaded(benchmark, None)
        fail(loaded, RUN_MANIFEST, f"{root / 'manifest.json'}: {' and '.join(bad)} is not a plain name (letters, "
                                   "digits, '.', '_', '-'; starting with a letter or digit); the manifest is damaged "
                                   "or was not written by mlps-slurm")
        return manifest, loaded
    try:
        loaded = benchmarks.get(benchmark).load_run(root, manifest, preflight)
    except Exception as exc:  # a run nobody can read is INVALID, and the next run still gets checked
        loaded = Loaded(benchmark, manifest["request"].get("model"))
        fail(loaded, RUN_READABLE, f"{root}: reading the run failed: {type(exc).__name__}: {exc}")
    symlinks = [p for sub in ("raw", "results") for p in _symlinks_under(root / sub)]
    if symlinks:
        fail(loaded, RUN_READABLE, f"{symlinks[0]}{f' (and {len(symlinks) - 1} more)' if len(symlinks) > 1 else ''}"
                                   ": a symbolic link among the run's results; a run must hold its own files (copy "
                                   "the file in place of the link)")
    loaded.findings = run_rules([check_preflight], preflight_record) + loaded.findings + rule_findings(loaded)
    created = parse_time(manifest.get("created"))
    loaded.created = created.replace(tzinfo=dt.timezone.utc).timestamp() if created else None
    return manifest, loaded
