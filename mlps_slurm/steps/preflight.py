"""Preflight, inside the preflight job.

`node`: runs once per allocated node (srun --ntasks-per-node=1) and writes preflight/nodes/<node>.json.
`gather`: runs once on the batch host, merges the node reports into preflight.json and preflight.txt, and exits
non-zero on any error so that Slurm cancels the benchmark jobs depending on the preflight (afterok).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import os
import platform
import socket
import sys
from pathlib import Path
from typing import Any

from mlps_slurm import hostlist
from mlps_slurm.rundir import RunDirectory, atomic_write_json, atomic_write_text, read_json

PASS, WARN, FAIL = "pass", "warning", "error"
REQUIRED_MODULES = ("mlps_slurm", "mpi4py")


def node_name() -> str:
    # Emulated Slurm nodes share one host, so the Slurm node name is the identity, not the hostname.
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def _check(check_id: str, status: str, message: str, **facts: Any) -> dict[str, Any]:
    return {"id": check_id, "status": status, "message": message, **facts}


def check_python() -> dict[str, Any]:
    version = platform.python_version()
    status = PASS if sys.version_info >= (3, 10) else FAIL
    return _check("python.version", status, f"Python {version} at {sys.executable}", version=version,
                  executable=sys.executable)


def check_module(name: str) -> dict[str, Any]:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # any import failure, not only ImportError, makes the node unusable
        return _check(f"python.import.{name}", FAIL, f"cannot import {name}: {exc}; install it into "
                      f"{sys.executable} (pip install {name.replace('_', '-')})")
    version = getattr(module, "__version__", "")
    return _check(f"python.import.{name}", PASS, f"{name} {version}".strip(), version=version)


def check_writable_dir(check_id: str, path: str) -> dict[str, Any]:
    """The directory exists (created if missing) and this node can create, fsync and remove a file in it."""
    probe = Path(path) / f".mlps-preflight-{node_name()}-{os.getpid()}"
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"mlps-slurm preflight\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        return _check(check_id, FAIL, f"{path} is not writable from {node_name()}: {exc.strerror or exc}",
                      path=path)
    return _check(check_id, PASS, f"{path} is writable", path=path)


def run_node_checks(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    checks = [check_python()]
    checks += [check_module(m) for m in REQUIRED_MODULES]
    for spec in manifest.get("preflight", {}).get("storage", []):
        checks.append(check_writable_dir(f"storage.{spec['id']}.writable", spec["path"]))
    return checks


def node_main(run: RunDirectory) -> int:
    manifest = run.read_manifest()
    checks = run_node_checks(manifest)
    report = {"node": node_name(), "hostname": socket.gethostname(), "time": dt.datetime.now(dt.timezone.utc).isoformat(),
              "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "checks": checks}
    atomic_write_json(run.preflight / "nodes" / f"{node_name()}.json", report)
    return 1 if any(c["status"] == FAIL for c in checks) else 0


def mpi_main(run: RunDirectory) -> int:
    """A real collective over every task, started by the benchmark's own launcher."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    total = comm.allreduce(1)
    nodes = comm.gather(node_name(), root=0)
    if comm.Get_rank() == 0:
        atomic_write_json(run.preflight / "mpi.json", {
            "ok": total == comm.Get_size(), "size": comm.Get_size(), "allreduce_sum": total, "nodes": nodes,
            "library": MPI.Get_library_version().splitlines()[0]})
    return 0


def gather(run: RunDirectory, nodes: list[str]) -> dict[str, Any]:
    reports: dict[str, Any] = {}
    for path in sorted((run.preflight / "nodes").glob("*.json")):
        try:
            report = read_json(path)
            reports[report["node"]] = report
        except (OSError, ValueError, KeyError) as exc:
            reports[path.stem] = {"node": path.stem, "checks": [
                _check("node.report", FAIL, f"unreadable node report {path}: {exc}")]}
    for node in nodes:
        if node not in reports:
            reports[node] = {"node": node, "checks": [_check(
                "node.report", FAIL, "the node check did not report (srun could not start it, or it crashed); "
                                     "see the preflight job's log")]}
    failures = [{"node": n, "check": c["id"], "message": c["message"]}
                for n, r in sorted(reports.items()) for c in r["checks"] if c["status"] == FAIL]
    warnings = [{"node": n, "check": c["id"], "message": c["message"]}
                for n, r in sorted(reports.items()) for c in r["checks"] if c["status"] == WARN]
    return {"ok": not failures, "nodes": sorted(reports), "failures": failures, "warnings": warnings,
            "reports": reports, "time": dt.datetime.now(dt.timezone.utc).isoformat()}


def format_text(summary: dict[str, Any]) -> str:
    lines = [f"preflight: {'PASSED' if summary['ok'] else 'FAILED'} on {len(summary['nodes'])} node(s): "
             f"{', '.join(summary['nodes'])}"]
    by_check: dict[str, list[str]] = {}
    for report in summary["reports"].values():
        for c in report["checks"]:
            by_check.setdefault(f"{c['status']:7} {c['id']}", []).append(report["node"])
    for key in sorted(by_check, key=lambda k: (not k.startswith(FAIL), k)):
        lines.append(f"  {key}: {', '.join(sorted(by_check[key]))}")
    for f in summary["failures"]:
        lines.append(f"  ERROR {f['node']} {f['check']}: {f['message']}")
    return "\n".join(lines) + "\n"


def gather_main(run: RunDirectory, expected_nodes: list[str]) -> int:
    summary = gather(run, expected_nodes)
    atomic_write_json(run.preflight / "preflight.json", summary)
    text = format_text(summary)
    atomic_write_text(run.preflight / "preflight.txt", text)
    sys.stdout.write(text)
    return 0 if summary["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlps_slurm.steps.preflight")
    parser.add_argument("action", choices=("node", "mpi", "gather"))
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--expected-nodes", default="", help="Slurm hostlist of the allocation (gather)")
    args = parser.parse_args(argv)
    run = RunDirectory(args.run_dir)
    if args.action == "node":
        return node_main(run)
    if args.action == "mpi":
        return mpi_main(run)
    return gather_main(run, hostlist.expand(args.expected_nodes))


if __name__ == "__main__":
    sys.exit(main())
