"""The gather step: on the batch host, merges the node reports and the MPI result, decides what needs more than
one node's report (shared visibility, clock skew, the MPI collective) and writes preflight.json and preflight.txt."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from mlps_slurm.rundir import RunDirectory
from mlps_slurm.steps.preflight.common import (ALL_NODES, FAIL, PASS, WARN, Check, compact_nodes, make_check,
                                               natural_key, node_name)
from mlps_slurm.steps.preflight.report import Gathered, dumps, make_finding, split_report, write_outputs
from mlps_slurm.steps.preflight.tokens import cleanup_tokens, decide_shared

SCHEMA = "mlps-slurm/preflight/1"

# Clock skew: above 1 s cross-node timestamps in the results disagree visibly; above 5 s (1/6 of checkpointing's
# 30 s write->read gap rule) rules that compare timestamps from different nodes can be judged wrongly.
CLOCK_WARN_S = 1.0
CLOCK_ERROR_S = 5.0


class _NodeData:
    """What gather keeps of one node report once its index is read: little, so 10,000 nodes stay small."""

    __slots__ = ("full", "findings", "clock_end", "shared", "passed")

    def __init__(self, full: bytes, findings: list[dict[str, str]], clock_end: float | None,
                 shared: dict[str, Any] | None, passed: str = "") -> None:
        self.full = full
        self.findings = findings
        self.clock_end = clock_end
        self.shared = shared
        self.passed = passed  # ids of the node's own passing checks, space-separated; most nodes share one


def _made_report(node: str, check: Check) -> dict[str, Any]:
    return {"node": node, "checks": [check]}


def read_node_reports(nodes_dir: Path, job_id: str | None) -> dict[str, _NodeData]:
    """Every node report, decoding only its index line; an unreadable or stale one (another job's) becomes a
    node.report error."""
    out: dict[str, _NodeData] = {}
    try:
        entries = list(os.scandir(nodes_dir))
    except FileNotFoundError:
        return out
    for entry in entries:
        name = entry.name
        if name.startswith(".") or not name.endswith(".json"):
            continue  # atomic-write temporaries
        stem = name[:-5]
        try:
            with open(entry.path, "rb") as fh:
                index, full = split_report(fh.read())
            node, passed, findings = index["node"], index["passed"], index["findings"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            out[stem] = _made(stem, f"unreadable node report {entry.path}: {exc}; rerun the preflight")
            continue
        if job_id and index.get("slurm_job_id") not in (None, job_id):
            out[stem] = _made(stem, f"{entry.path} is from job {index.get('slurm_job_id')}, not this preflight (job "
                                    f"{job_id}): the node check of this job did not run on {stem}")
            continue
        out[node] = _NodeData(full, findings, index.get("clock_end"), index.get("shared"), passed)
    return out


def _made(node: str, message: str) -> _NodeData:
    check = make_check("node.report", FAIL, message)
    return _NodeData(dumps(_made_report(node, check)), [make_finding(node, check)], None, None)


def clock_check(node: str, clock_end: float, offsets: dict[str, Any], reference: str, batch_host: str,
                gather_started: float, warn_s: float, error_s: float) -> Check:
    """clock.skew of one node.

    Preferred: the MPI step's ping-pong offset (precision: half a round trip, microseconds), relative to rank 0's
    node, which is the batch host in a normal Slurm layout (the batch script runs on the first node). Fallback
    (no MPI clock): a node whose report claims to end after gather started on the batch host is ahead by at least
    that much; a node behind cannot be detected this way, and the check says so.
    """
    if node in offsets:
        offset, uncertainty = offsets[node]["offset_s"], offsets[node]["rtt_s"] / 2
        against = "the batch host" if reference == batch_host else f"{reference} (MPI rank 0)"
        facts = {"method": "mpi ping-pong", "reference": reference, "offset_s": round(offset, 6),
                 "uncertainty_s": round(uncertainty, 6)}
        magnitude = max(0.0, abs(offset) - uncertainty)
        text = f"{node}'s clock is {offset:+.3f} s (+/- {uncertainty:.4f}) off {against}"
    else:
        ahead = clock_end - gather_started
        facts = {"method": "report time vs batch host", "reference": batch_host,
                 "ahead_at_least_s": round(max(ahead, 0.0), 3)}
        magnitude = max(ahead, 0.0)
        text = (f"{node}'s clock is at least {ahead:.3f} s ahead of the batch host {batch_host}" if ahead > 0
                else f"{node}'s clock is not ahead of the batch host {batch_host} (without the MPI step's "
                     "measurement a clock behind cannot be detected)")
    if magnitude > error_s:
        return make_check("clock.skew", FAIL, f"{text}: above {error_s:g} s, cross-node timestamps in the results are "
                          f"wrong; synchronise {node} with NTP (chronyc tracking / timedatectl)", **facts)
    if magnitude > warn_s:
        return make_check("clock.skew", WARN, f"{text}: above {warn_s:g} s; synchronise {node} with NTP", **facts)
    return make_check("clock.skew", PASS, text, **facts)


def check_mpi(mpi: dict[str, Any] | None, path: Path, expected: list[str], job_id: str | None) -> Check:
    if mpi is None:
        return make_check("mpi.collective", FAIL, f"the MPI check wrote no {path}: the launcher could not start the "
                          "ranks or MPI failed; see the preflight job's log, and check launcher.kind / --mpi "
                          "and that mpi4py is built against the site MPI")
    facts = {"size": mpi.get("size"), "library": mpi.get("library"), "nodes": compact_nodes(mpi.get("nodes") or [])}
    if job_id and mpi.get("slurm_job_id") not in (None, job_id):
        return make_check("mpi.collective", FAIL, f"{path} is from job {mpi.get('slurm_job_id')}, not {job_id}: the "
                          "MPI check of this job did not run", **facts)
    absent = sorted(set(expected) - set(mpi.get("nodes") or []), key=natural_key)
    if not mpi.get("ok") or absent:
        why = f"nodes {compact_nodes(absent)} took no part" if absent else \
            f"allreduce gave {mpi.get('allreduce_sum')} for {mpi.get('size')} ranks"
        return make_check("mpi.collective", FAIL, f"the MPI collective failed: {why}; see the preflight job's log",
                          **facts)
    return make_check("mpi.collective", PASS, f"allreduce over {mpi['size']} ranks on {len(set(mpi['nodes']))} "
                      f"node(s): {facts['library']}", **facts)


def _read_optional_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read())
    except (OSError, ValueError):
        return None


def gather(run: RunDirectory, nodes: list[str], *, spec: dict[str, Any] | None = None, now: float | None = None,
           batch_host: str | None = None, job_id: str | None = None) -> Gathered:
    """Merge the node reports and the MPI result; decide shared visibility and clock skew (see gather_main)."""
    started = time.time() if now is None else now
    perf = time.perf_counter()
    job_id = job_id if job_id is not None else os.environ.get("SLURM_JOB_ID")
    batch_host = batch_host or node_name()
    if spec is None:
        try:
            spec = run.read_manifest().get("preflight", {})
        except (FileNotFoundError, ValueError):
            spec = {}
    with _collector_paused():
        return _gather(run, nodes, spec, started, perf, job_id, batch_host)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Gather allocates a few hundred thousand small containers and creates no reference cycles; the cyclic
    collector would rescan all of them again and again as they accumulate (a third of gather's time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _gather(run: RunDirectory, nodes: list[str], spec: dict[str, Any], started: float, perf: float,
            job_id: str | None, batch_host: str) -> Gathered:
    data = read_node_reports(run.preflight / "nodes", job_id)
    for node in nodes:
        if node not in data:
            data[node] = _made(node, f"the node check did not report from {node} (srun could not start it there, "
                                     "or it crashed); see the preflight job's log")
    shared_checks = decide_shared({n: d.shared for n, d in data.items() if d.shared})
    mpi = _read_optional_json(run.preflight / "mpi.json")
    clock = (mpi or {}).get("clock") or {}
    offsets, reference = clock.get("offsets") or {}, clock.get("reference_node", "")
    warn_s = float(spec.get("clock_skew_warn_s", CLOCK_WARN_S))
    error_s = float(spec.get("clock_skew_error_s", CLOCK_ERROR_S))

    names = sorted(data, key=natural_key)
    failures: list[dict[str, str]] = []
    warnings: list[dict[str, str]] = []
    passed: dict[str, list[str]] = {}
    by_signature: dict[str, list[str]] = {}
    reports: dict[str, tuple[bytes, bytes]] = {}
    encoded: dict[int, bytes] = {}
    for n in names:
        d = data[n]
        by_signature.setdefault(d.passed, []).append(n)
        extra = shared_checks.get(n, [])
        if d.clock_end is not None:
            extra.append(clock_check(n, d.clock_end, offsets, reference, batch_host, started, warn_s, error_s))
        findings = d.findings + [make_finding(n, c) for c in extra if c["status"] != PASS]
        for c in extra:
            if c["status"] == PASS:
                passed.setdefault(c["id"], []).append(n)
        for f in findings:
            (failures if f["status"] == FAIL else warnings).append(f)
        reports[n] = (d.full, b",".join(_encode_shared(c, encoded) for c in extra))
    for signature, members in by_signature.items():
        for cid in signature.split():
            passed.setdefault(cid, []).extend(members)
    cluster_checks = [check_mpi(mpi, run.preflight / "mpi.json", nodes, job_id)]
    for c in cluster_checks:
        if c["status"] == PASS:
            passed.setdefault(c["id"], []).append(ALL_NODES)
        else:
            (failures if c["status"] == FAIL else warnings).append(make_finding(ALL_NODES, c))
    summary = {"schema": SCHEMA, "ok": not failures, "nodes": names, "failures": failures, "warnings": warnings,
               "cluster_checks": cluster_checks, "mpi": mpi, "batch_host": batch_host, "slurm_job_id": job_id,
               "time": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(),
               "gather_seconds": round(time.perf_counter() - perf, 3)}
    return Gathered(summary, reports, passed)


def _encode_shared(check: Check, cache: dict[int, bytes]) -> bytes:
    """Encode a check; one object used for many nodes (see tokens._decide_dir) is encoded once. Keyed by id(): the
    objects stay alive in gather's tables for as long as the cache."""
    key = id(check)
    if key not in cache:
        cache[key] = dumps(check)
    return cache[key]


def gather_main(run: RunDirectory, expected_nodes: list[str]) -> int:
    spec = run.read_manifest().get("preflight", {})
    gathered = gather(run, expected_nodes, spec=spec)
    sys.stdout.write(write_outputs(run, gathered))
    cleanup_tokens(spec, gathered["slurm_job_id"])
    return 0 if gathered["ok"] else 1
