"""Finalize a `submit all` suite, inside its last job (afterany: it runs whatever happened before it).

For each workload run: replace the link to the suite's preflight with a copy (the run directory then stands
alone), finalize it as its own chain would, and keep going when one fails. Then verify all of them as one
submission (verify.json / verify.txt in the suite directory) and, when every run is usable and none is INVALID,
bundle them into <suite>/submission/. Writes results/results.json and results/results.txt; exits non-zero when any
workload has no successful result.
"""

from __future__ import annotations

import datetime as dt
import shutil
import traceback
from pathlib import Path
from typing import Any

from mlps_slurm.plan_suite import SUITE
from mlps_slurm.rundir import RunDirectory, atomic_write_json, atomic_write_text

SCHEMA = "mlps-slurm/suite-results/1"
__all__ = ["SUITE", "finalize_benchmark", "finalize_suite"]


def finalize_benchmark(run: RunDirectory) -> tuple[dict[str, Any], str]:
    """Finalize one benchmark run with its own benchmark's finalize: (results, the readable table)."""
    from mlps_slurm import benchmarks

    manifest_path = run.manifest_path
    name = run.read_manifest().get("benchmark")
    try:
        bench = benchmarks.get(name)
    except benchmarks.UnknownBenchmark as exc:
        raise SystemExit(f"mlps-slurm finalize: {manifest_path}: {exc}") from None
    if not bench.runnable:
        raise SystemExit(f"mlps-slurm finalize: {manifest_path}: benchmark {name!r} has no finalize step in this "
                         "version of mlps-slurm")
    return bench.finalize(run)


def _own_preflight(suite: RunDirectory, member: RunDirectory) -> None:
    link = member.preflight
    if link.is_symlink():
        link.unlink()
    if suite.preflight.is_dir() and not link.exists():
        shutil.copytree(suite.preflight, link, symlinks=False)


def _finalize_member(suite: RunDirectory, info: dict[str, Any]) -> tuple[dict[str, Any], str]:
    member = RunDirectory(suite.path / info["dir"])
    row = {"name": info["name"], "benchmark": info["benchmark"], "model": info["model"], "run_id": info["run_id"],
           "path": str(member.path)}
    try:
        _own_preflight(suite, member)
        results, table = finalize_benchmark(member)
    except Exception as exc:  # one workload's broken output must not cost the others their report
        detail = traceback.format_exc(limit=3).strip().splitlines()[-1]
        row.update(status="failed", verdict="INVALID", reasons=[f"its finalize failed: {detail}"])
        return row, f"run {info['run_id']}: finalize failed: {exc}\n"
    row.update(status=results.get("status"), verdict=results.get("verdict"), reasons=results.get("reasons", []),
               submittable=results.get("submittable"))
    return row, table


def _bundle(suite: RunDirectory, manifest: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    from mlps_slurm.bundle import BundleError, make_bundle

    unusable = [r["name"] for r in rows if r.get("verdict") in (None, "INVALID") or r["status"] != "success"]
    if unusable:
        return {"built": False, "reason": f"not bundled: {', '.join(unusable)} INVALID or without a result; "
                                          "fix and resubmit, or bundle the others with `mlps-slurm bundle`"}
    org = manifest["request"]["submission"]["organization"]
    system = manifest["request"]["submission"]["system"]
    try:
        result = make_bundle([suite.path / "runs"], org, system, suite.path / "submission")
    except (BundleError, OSError) as exc:
        return {"built": False, "reason": f"not bundled: {exc}"}
    return {"built": True, "tarball": str(result.tarball), "organization": org, "system": system,
            "runs": len(result.included)}


def finalize_suite(suite: RunDirectory) -> tuple[dict[str, Any], str]:
    from mlps_slurm.verify import verify_runs, write_report

    manifest = suite.read_manifest()
    rows, tables = [], []
    for info in manifest["request"]["members"]:
        row, table = _finalize_member(suite, info)
        rows.append(row)
        tables.append(table)
    report = verify_runs([suite.path / "runs"], submission=True)
    write_report(report, suite.path)
    bundle = _bundle(suite, manifest, rows)
    results = {
        "schema": SCHEMA,
        "run_id": manifest["run_id"],
        "benchmark": "suite",
        "status": "success" if rows and all(r["status"] == "success" for r in rows) else "failed",
        "members": rows,
        "submission_verdict": report.verdict.value,
        "submission_findings": [f.to_dict() for g in report.groups for f in g.findings
                                if f.verdict.value != "CLOSED"],
        "not_used": [u.to_dict() for u in report.unused],
        "bundle": bundle,
        "finalized": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    text = suite_table(results) + "".join("\n" + t for t in tables)
    atomic_write_json(suite.results_json, results)
    atomic_write_text(suite.results_text, text)
    return results, text


def suite_table(results: dict[str, Any]) -> str:
    lines = [f"suite {results['run_id']}: {len(results['members'])} workload(s), status "
             f"{str(results['status']).upper()}, submission verdict {results['submission_verdict']} "
             "(details: verify.txt in the suite directory)"]
    width = max((len(r["name"]) for r in results["members"]), default=0)
    for r in results["members"]:
        lines.append(f"  {r['name']:<{width}}  {str(r['status']).upper():<8} {r.get('verdict') or '-':<8} "
                     f"{Path(r['path']).name}")
        lines += [f"      reason: {why}" for why in r.get("reasons", [])[:3]]
    for f in results["submission_findings"]:
        lines.append(f"  submission {f['verdict']} {f['rule_id']}: {f['message']}")
    for u in results["not_used"]:
        lines.append(f"  not used: {u['path']}: {u['reason']}")
    b = results["bundle"]
    lines.append(f"bundle: {b['tarball']}" if b.get("built") else f"bundle: {b['reason']}")
    return "\n".join(lines) + "\n"
