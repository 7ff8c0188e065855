"""Read a finalized run directory (manifest.json + results/results.json) into a history row, and record it.

Recording is idempotent: the run id is the key, and recording a run again replaces its row and metrics. A run
that has not finalized (no results.json, or one without its finalized time) is skipped with the reason
(NotFinalized); a damaged one (unreadable manifest, results.json that is not UTF-8 JSON, a run directory that is a
file, a run id that is not a plain name) is a HistoryError naming the file. What the manifest names is stored as
text and never becomes a path: run ids and model names must match strict patterns.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

from mlps_slurm import benchmarks
from mlps_slurm.history.store import HistoryError, RunRow, StoreError, fingerprints, put
from mlps_slurm.rundir import MANIFEST, ManifestError, RunDirectory

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\[\],-]{0,255}$")


class NotFinalized(HistoryError):
    """The run has no result to record yet (or none this release records); the message says why."""


def _read_results(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise NotFinalized(f"{path.parent.parent}: no results/results.json: the chain has not finalized") from None
    except UnicodeDecodeError as exc:
        raise HistoryError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); results.json is "
                           "damaged") from None
    except (ValueError, RecursionError) as exc:
        raise HistoryError(f"{path}: not valid JSON ({exc}); results.json is damaged") from None
    except OSError as exc:
        raise HistoryError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise HistoryError(f"{path}: not a JSON object; results.json is damaged")
    return data


def _manifest(run_dir: Path) -> dict[str, Any]:
    if not run_dir.exists():
        raise HistoryError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise HistoryError(f"{run_dir}: is a file, not a run directory")
    try:
        return RunDirectory(run_dir).read_manifest()
    except (ManifestError, FileNotFoundError) as exc:
        raise HistoryError(str(exc)) from None
    except (OSError, RecursionError) as exc:
        raise HistoryError(f"{run_dir / MANIFEST}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None


def request_digest(manifest: Mapping[str, Any], run_dir: Path) -> str:
    """SHA-256 of the request as asked (canonical JSON), leaving out values that name the run itself (its id or
    directory, e.g. an engine output path), so two runs asked the same have the same digest."""
    own = [o for o in (str(manifest.get("run_id") or ""), str(run_dir)) if o]
    request = manifest.get("request") or {}
    kept = {k: v for k, v in request.items() if not (isinstance(v, str) and any(o in v for o in own))}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def _nodes(run: RunDirectory, results: Mapping[str, Any]) -> list[str]:
    """The nodes the run used: the preflight's list, else what Slurm reported for the chain's jobs."""
    try:
        nodes = json.loads(run.preflight_report.read_bytes().decode("utf-8")).get("nodes")
    except (OSError, ValueError, AttributeError, RecursionError):
        nodes = None
    if not isinstance(nodes, list):
        jobs = results.get("jobs") if isinstance(results.get("jobs"), Mapping) else {}
        nodes = sorted({j.get("nodes") for j in jobs.values() if isinstance(j, Mapping)
                        and isinstance(j.get("nodes"), str) and j.get("nodes") not in ("", "None", "(null)")})
    return [n for n in nodes if isinstance(n, str) and HOST.match(n)]


def _utc(text: Any, path: Path, key: str) -> str:
    try:
        when = dt.datetime.fromisoformat(str(text))
    except ValueError:
        raise HistoryError(f"{path}: {key} {text!r} is not an ISO 8601 time; results.json is damaged") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).isoformat()


def read_run(run_dir: str | Path) -> RunRow:
    """The history row of a finalized run directory (not recorded yet)."""
    run_dir = Path(run_dir)
    manifest = _manifest(run_dir)
    run = RunDirectory(run_dir)
    run_id = manifest["run_id"]
    if not RUN_ID.match(run_id):
        raise HistoryError(f"{run.manifest_path}: run_id {run_id[:80]!r} is not a plain run id (letters, digits, "
                           "'.', '_', '-'); the manifest is damaged")
    name = manifest["benchmark"]
    if name not in benchmarks.names():
        what = "a suite: its workloads under runs/ are recorded one by one" if "members" in manifest["request"] \
            else f"benchmark {name[:40]!r} is not one this release records ({', '.join(benchmarks.names())})"
        raise NotFinalized(f"{run_dir}: {what}")
    results = _read_results(run.results_json)
    if "finalized" not in results:
        raise NotFinalized(f"{run.results_json}: no finalized time: the finalize job did not finish")
    if results.get("run_id", run_id) != run_id:
        raise HistoryError(f"{run.results_json}: run_id {str(results.get('run_id'))[:80]!r} is not the manifest's "
                           f"{run_id!r}; the results belong to another run")
    model = results.get("model", manifest["request"].get("model"))
    if model is not None and not (isinstance(model, str) and NAME.match(model)):
        raise HistoryError(f"{run.results_json}: model {str(model)[:80]!r} is not a plain name; results.json is "
                           "damaged")
    benchmark = benchmarks.get(name)
    try:
        metrics = benchmark.history_metrics(results)
        versions = benchmark.history_versions(results)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise HistoryError(f"{run.results_json}: unexpected shape ({type(exc).__name__}: {exc}); results.json is "
                           "damaged") from None
    stat = run.results_json.stat()
    profile = manifest.get("profile") if isinstance(manifest.get("profile"), Mapping) else {}
    verdict = results.get("verdict")
    return RunRow(
        run_id=run_id, run_dir=str(run.path), benchmark=name, model=model,
        request_digest=request_digest(manifest, run.path),
        profile_digest=str(profile["digest"]) if isinstance(profile.get("digest"), str) else None,
        profile_name=str(profile["name"]) if isinstance(profile.get("name"), str) else None,
        nodes=_nodes(run, results), tool_version=str(manifest.get("tool_version") or "") or None,
        versions={"mlps-slurm": manifest.get("tool_version"), **versions},
        created=str(manifest.get("created") or "") or None,
        finalized=_utc(results["finalized"], run.results_json, "finalized"),
        status=str(results.get("status")) if results.get("status") is not None else None,
        verdict=verdict if verdict in ("CLOSED", "OPEN", "INVALID") else None,
        submittable=results.get("submittable") if isinstance(results.get("submittable"), bool) else None,
        results_mtime_ns=stat.st_mtime_ns, results_size=stat.st_size,
        recorded=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), metrics=metrics)


def record(run_dir: str | Path, db: str | Path) -> RunRow:
    """Record a finalized run in the history database `db` (replacing an earlier record of it): its row."""
    row = read_run(run_dir)
    put(Path(db), row)
    return row


def run_directories(root: Path) -> Iterator[Path]:
    """The run directories under a results directory: <root>/<run>/ and a suite's workloads <root>/<suite>/runs/*/
    (hidden entries, such as runs still being created, are left out)."""
    try:
        entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise HistoryError(f"{root}: cannot list runs ({exc.strerror or exc})") from None
    for path in entries:
        if not (path / MANIFEST).is_file():
            continue
        yield path
        members = path / "runs"
        if members.is_dir():
            try:
                yield from sorted(p for p in members.iterdir() if not p.name.startswith(".")
                                  and (p / MANIFEST).is_file())
            except OSError:
                continue


def scan(root: Path, db: Path) -> tuple[list[RunRow], list[str]]:
    """Record every finalized run under `root` that is new, or whose results.json changed since it was recorded:
    (rows recorded, problems of damaged runs). Runs that have not finalized are passed over silently."""
    known = fingerprints(db)
    recorded, problems = [], []
    for path in run_directories(root):
        results = path / "results" / "results.json"
        try:
            stat = results.stat()
        except OSError:
            continue  # not finalized (yet)
        if known.get(str(path.resolve())) == (stat.st_mtime_ns, stat.st_size):
            continue
        try:
            recorded.append(record(path, db))
        except NotFinalized:
            continue
        except StoreError:
            raise  # the database itself failed: nothing else can be recorded
        except HistoryError as exc:
            problems.append(str(exc))
    return recorded, problems
