"""Building the bundle: which verified runs go in, where (through each benchmark's layout), and the generated
files (per-model results.json, systems/<system>.yaml, results.json, results.csv, verify.json/txt).

A run goes under the best division its verdict allows (CLOSED -> closed/, OPEN -> open/). INVALID runs and runs
without a usable result are refused with the reason; with allow_invalid an INVALID run goes under invalid/, which
no one can mistake for a submission. The bundle is built in a hidden staging directory beside <out> and renamed
into place after everything is synced: an interrupted build leaves no partial bundle at <out>.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from mlps_slurm import __version__, benchmarks
from mlps_slurm.bundle.layout import Entry
from mlps_slurm.bundle.tarball import fsync_dir, write_tree_and_tarball
from mlps_slurm.rules.core import Verdict
from mlps_slurm.rules.facts import describe_node, node_facts
from mlps_slurm.rules.loaders import FileProblem, read_json_object
from mlps_slurm.rundir import RunDirectory
from mlps_slurm.verify import RunVerdict, Unused, VerifyReport, verify_runs

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
EXIT_OK, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2


class BundleError(RuntimeError):
    """The bundle cannot be built as asked; the message says why and what to change."""


# --- generated files -----------------------------------------------------------------------------------------------

def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, default=str) + "\n").encode()


def _run_summary(run: RunVerdict, division: Verdict, ts: str, path: str) -> dict[str, Any]:
    return {"run_id": run.run_id, "timestamp": ts, "path": path, "verdict": division.value, "metrics": run.metrics,
            "findings": [f.to_dict() for f in run.findings]}


def system_description(runs: Sequence[RunVerdict], org: str, system: str, division: str) -> bytes:
    """systems/<system>.yaml: client node types from the preflight facts, plus what the profile declares."""
    nodes: dict[str, dict[str, Any]] = {}
    profile: dict[str, Any] = {}
    fstypes: dict[str, set[str]] = {}
    for run in runs:
        root = Path(run.path)
        try:
            preflight = read_json_object(RunDirectory(root).preflight_report)
        except FileProblem:
            preflight = {}
        facts = node_facts(preflight)
        for node in preflight.get("nodes", []) or []:
            nodes.setdefault(str(node), describe_node(facts[node]) if node in facts else {})
        for per_node in facts.values():
            storage = per_node.get("storage")
            for sid, entry in (storage.items() if isinstance(storage, dict) else ()):
                if isinstance(entry, dict) and entry.get("fstype"):
                    fstypes.setdefault(sid, set()).add(str(entry["fstype"]))
        try:
            values = read_json_object(root / "manifest.json").get("profile", {}).get("values", {})
        except FileProblem:
            values = {}
        profile = profile or values
    types: dict[str, dict[str, Any]] = {}
    for node, desc in sorted(nodes.items()):
        key = json.dumps(desc, sort_keys=True)
        t = types.setdefault(key, {"count": 0, "nodes": [], **(desc or {"facts": "none recorded by the preflight"})})
        t["count"] += 1
        t["nodes"].append(node)
    doc = {
        "system_name": system,
        "organization": org,
        "division": division,
        "generated_by": f"mlps-slurm {__version__}",
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(),
        "clients": {
            "node_count": len(nodes),
            "node_types": list(types.values()),
            "declared": {k: profile.get(f"nodes.{k}") for k in ("count", "cpus", "memory_gb",
                                                                 "accelerators_per_node")},
        },
        "scheduler": {"kind": "slurm", "partition": profile.get("slurm.partition"),
                      "launcher": profile.get("launcher.kind"), "mpi": profile.get("launcher.mpi"),
                      "container": profile.get("container.runtime")},
        "storage": {
            "product": None,
            "access_type": None,  # one of: Local, Remote Block, NAS, Proprietary, Object, Other
            "filesystem_type": profile.get("storage.filesystem_type"),
            "shared": profile.get("storage.shared"),
            # What the preflight saw under each benchmark directory, per storage id.
            "observed_filesystems": {sid: sorted(types) for sid, types in sorted(fstypes.items())},
        },
    }
    for name in sorted({r.benchmark for r in runs}):  # what each benchmark's runs tell about the system
        doc.update(benchmarks.get(name).system_facts([r for r in runs if r.benchmark == name]))
    doc["runs"] = [r.run_id for r in runs]
    header = (f"# {system}: system description generated by mlps-slurm {__version__} from the preflight facts of the "
              "bundled runs.\n# Fields set to null are unknown to mlps-slurm (storage product, access type): fill "
              "them in, and add the PDF, before submitting.\n")
    return (header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)).encode()


CSV_FIRST = ["run_id", "benchmark", "model", "division", "organization", "system", "timestamp", "path"]


def results_csv(rows: list[dict[str, Any]]) -> bytes:
    metric_keys = sorted({k for r in rows for k in r if k not in CSV_FIRST})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIRST + metric_keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIRST + metric_keys})
    return buf.getvalue().encode()


# --- building ------------------------------------------------------------------------------------------------------

@dataclass
class BundleResult:
    tarball: Path
    tree: Path
    included: list[tuple[RunVerdict, Verdict]]
    refused: list[Unused]
    report: VerifyReport
    files: int = 0

    @property
    def exit_code(self) -> int:
        """Non-zero when something the user named was not bundled (a refused run, a path without runs)."""
        return EXIT_REFUSED if any(u.planned for u in self.refused) else EXIT_OK

    def to_text(self) -> str:
        lines = [f"bundle: {self.tarball}  ({self.files} files; tree {self.tree})"]
        for run, division in self.included:
            lines.append(f"  {division.value.lower():<7} {run.benchmark} {run.model}: {run.run_id}")
        if self.refused:
            lines.append("not bundled:")
            lines += [f"  {u.path}: {u.reason}" for u in self.refused]
        return "\n".join(lines) + "\n"


def _invalid_reason(run: RunVerdict, report: VerifyReport) -> str:
    group = report.group_of(run)
    bad = [f for f in run.findings + (group.findings if group else []) if f.verdict is Verdict.INVALID]
    return "INVALID: " + "; ".join(f"{f.rule_id}: {f.message}" for f in bad[:4]) + \
        " (bundle with --allow-invalid to include it under invalid/)"


def _check_arcnames(entries: Sequence[Entry], sources: dict[int, str]) -> None:
    """Every path of the tree stays inside it and is one file: no absolute path, no '.', '..' or empty component,
    no control character (a newline would break SHA256SUMS), no two entries for one path (two runs started in the
    same second would otherwise overwrite each other's files). `sources`: which run each entry (by id) came from."""
    seen: dict[str, str] = {}
    for e in entries:
        parts = e.arcname.split("/")
        origin = sources.get(id(e)) or "the bundle's own files"
        if e.arcname.startswith("/") or any(p in ("", ".", "..") for p in parts) or \
                any(ord(c) < 32 or c in "\\\x7f" for c in e.arcname):
            raise BundleError(f"{e.source or e.arcname!r} ({origin}) would be written as {e.arcname!r}, which is "
                              "not a plain path inside the bundle; rename or remove it")
        if e.arcname in seen:
            raise BundleError(f"{e.arcname}: two files map to this path ({seen[e.arcname]} and {origin}): two "
                              "runs of one model that started in the same second get one timestamp directory; "
                              "bundle them separately")
        seen[e.arcname] = origin


def _check_name(value: str, what: str) -> None:
    if not _NAME.match(value or ""):
        raise BundleError(f"{what} {value!r} may contain only letters, digits, '.', '_' and '-' (it becomes a "
                          "directory name in the submission tree)")


def make_bundle(run_dirs: Sequence[str | os.PathLike[str]], org: str, system: str, out_dir: str | os.PathLike[str],
                *, allow_invalid: bool = False, open_division: bool = False, workers: int | None = None,
                _before_each: Callable[[Entry], None] | None = None) -> BundleResult:
    """Verify `run_dirs` as one submission and write the bundle directory `out_dir` (which must not exist)."""
    _check_name(org, "organization")
    _check_name(system, "system name")
    out = Path(out_dir).absolute()
    _check_name(out.name, "bundle directory name")
    if out.exists():
        raise BundleError(f"{out} already exists; bundles are never overwritten: choose another directory or "
                          "remove it")
    if not out.parent.is_dir():
        raise BundleError(f"the parent directory {out.parent} does not exist")
    report = verify_runs(run_dirs, submission=True)
    included: list[tuple[RunVerdict, Verdict]] = []
    refused = list(report.unused)
    for run in report.runs:
        if not run.usable:
            continue  # already in report.unused with its reason
        division = report.division_of(run)
        if division is Verdict.INVALID and not allow_invalid:
            refused.append(Unused(run.path, _invalid_reason(run, report)))
            continue
        if division is Verdict.CLOSED and open_division:
            division = Verdict.OPEN
        included.append((run, division))
    if not included:
        why = "; ".join(f"{u.path}: {u.reason}" for u in refused[:5]) or "no runs given"
        raise BundleError(f"nothing to bundle: {why}")

    entries: list[Entry] = []
    sources: dict[int, str] = {}
    rows: list[dict[str, Any]] = []
    per_model: dict[str, dict[str, Any]] = {}
    by_division: dict[str, list[RunVerdict]] = {}
    for run, division in included:
        div = division.value.lower()
        by_division.setdefault(div, []).append(run)
        bench = benchmarks.get(run.benchmark)
        base = f"{div}/{org}/results/{system}/{bench.tree_name}/{run.model}"
        run_entries, ts, results_dir = bench.bundle_layout(run, base)
        entries += run_entries
        sources.update({id(e): f"run {run.run_id}" for e in run_entries})
        group = report.group_of(run)
        model_doc = per_model.setdefault(f"{results_dir}/results.json", {
            "schema": "mlps-slurm/submission-results/1", "benchmark": run.benchmark, "model": run.model,
            "division": div, "runs": [],
            "submission_findings": [f.to_dict() for f in group.findings] if group else []})
        model_doc["runs"].append(_run_summary(run, division, ts, base))
        rows.append({"run_id": run.run_id, "benchmark": run.benchmark, "model": run.model, "division": div,
                     "organization": org, "system": system, "timestamp": ts, "path": base, **run.metrics})
    entries += [Entry(name, data=_json_bytes(doc)) for name, doc in sorted(per_model.items())]
    entries += [Entry(f"{div}/{org}/systems/{system}.yaml", data=system_description(runs, org, system, div))
                for div, runs in sorted(by_division.items())]
    entries += [
        Entry("results.json", data=_json_bytes({
            "schema": "mlps-slurm/bundle-results/1", "tool_version": __version__, "organization": org,
            "system": system, "created": dt.datetime.now(dt.timezone.utc).isoformat(), "runs": rows,
            "not_included": [u.to_dict() for u in refused]})),
        Entry("results.csv", data=results_csv(rows)),
        Entry("verify.json", data=_json_bytes(report.to_dict())),
        Entry("verify.txt", data=report.to_text().encode()),
    ]
    _check_arcnames(entries, sources)

    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        tarball_name = f"{out.name}.tar.gz"
        files = write_tree_and_tarball(entries, staging, staging / tarball_name, out.name, workers=workers,
                                       before_each=_before_each)
        os.rename(staging, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BundleResult(out / tarball_name, out, included, refused, report, files)


def build_bundle(run_dirs: Sequence[str | os.PathLike[str]], org: str, system: str,
                 out_dir: str | os.PathLike[str], *, allow_invalid: bool = False) -> Path:
    """Build the bundle and return its tarball (`<out_dir>/<out_dir name>.tar.gz`); see make_bundle."""
    return make_bundle(run_dirs, org, system, out_dir, allow_invalid=allow_invalid).tarball


# --- command line --------------------------------------------------------------------------------------------------

def bundle_command(run_dirs: Sequence[str], org: str, system: str, out_dir: str, allow_invalid: bool = False,
                   echo: Any = print) -> int:
    """`mlps-slurm bundle RUN... --org ORG --system NAME [--output DIR] [--allow-invalid]`."""
    try:
        result = make_bundle(run_dirs, org, system, out_dir, allow_invalid=allow_invalid)
    except BundleError as exc:
        echo(f"mlps-slurm: error: {exc}")
        return EXIT_ERROR
    except OSError as exc:  # a full disk, an unreadable file, a path too long: the staging was removed
        echo(f"mlps-slurm: error: {exc.filename or out_dir}: {exc.strerror or exc}; no bundle was left")
        return EXIT_ERROR
    echo(result.to_text().rstrip("\n"))
    return result.exit_code
