"""The node step: once per allocated node, writes preflight/nodes/<node>.json (see the package docstring)."""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import time
from typing import Any

from mlps_slurm import hostlist
from mlps_slurm.rundir import RunDirectory, atomic_write_bytes
from mlps_slurm.steps.preflight import node_facts
from mlps_slurm.steps.preflight.common import FAIL, Check, natural_key, node_name
from mlps_slurm.steps.preflight.report import encode_report
from mlps_slurm.steps.preflight.storage import (check_cache_drop, check_filesystem, check_free_space, check_separate,
                                                check_writable, probe_storage)
from mlps_slurm.steps.preflight.system import (check_cpu, check_engine, check_executable, check_kernel,
                                               check_lockfile, check_memory, check_module, check_os, check_python)
from mlps_slurm.steps.preflight.tokens import (SHARED_TIMEOUT_S, shared_dirs, token_path, token_targets,
                                               wait_for_tokens, write_token)


class NodeRun:
    """One node's preflight: tokens first (so that neighbours see them early), then checks, then the wait."""

    def __init__(self, spec: dict[str, Any], node: str, job: str, nodes: list[str]) -> None:
        self.spec = spec
        self.node = node
        self.job = job
        self.nodes = nodes
        self.index = {n: i for i, n in enumerate(nodes)}
        self.tokens: dict[str, str | None] = {}  # dir id -> error writing this node's token
        # Writing a token creates its storage directory; remember which ones the preflight created.
        self.absent = {d["id"] for d in spec.get("storage", []) if not os.path.exists(d["path"])}

    @property
    def in_allocation(self) -> bool:
        return self.node in self.index

    def write_tokens(self) -> None:
        if not self.in_allocation:
            return
        for d in shared_dirs(self.spec):
            self.tokens[d["id"]] = write_token(token_path(d["path"], self.job, self.index, self.node), self.node)

    def shared_views(self) -> dict[str, Any]:
        """What this node saw of its neighbours' tokens, per shared dir; gather turns it into verdicts."""
        dirs = shared_dirs(self.spec)
        if not self.in_allocation:
            return {"skipped": f"{self.node} is not in SLURM_JOB_NODELIST (not running inside the preflight job)",
                    "targets": [], "dirs": {d["id"]: {"path": d["path"]} for d in dirs}}
        targets = token_targets(self.nodes, self.index[self.node])
        wanted = {d["id"]: {t: token_path(d["path"], self.job, self.index, t) for t in targets}
                  for d in dirs if self.tokens.get(d["id"]) is None}
        timeout = float(self.spec.get("shared_token_timeout_s", SHARED_TIMEOUT_S))
        missing, waited = wait_for_tokens(wanted, timeout) if wanted else ({}, 0.0)
        views: dict[str, Any] = {}
        for d in dirs:
            error = self.tokens.get(d["id"])
            views[d["id"]] = {"path": d["path"], "token": error is None, "error": error,
                              "missing": sorted(missing.get(d["id"], ()), key=natural_key)}
        return {"targets": targets, "timeout_s": timeout, "waited_s": round(waited, 3), "dirs": views}

    def run_checks(self, facts: dict[str, Any], mounts: list[node_facts.Mount]) -> list[Check]:
        spec, node = self.spec, self.node
        os_info = facts["os"]
        checks = [check_os(os_info), check_kernel(facts["kernel"]),
                  check_cpu(facts["cpu"], spec.get("cpus_expected"), node),
                  check_memory(facts["memory"], spec.get("memory_gb_expected"), node,
                               bool(spec.get("memory_sizes_dataset"))),
                  check_python()]
        # First the engine probes the login node could not run in the image: their answer is the one to read.
        python = spec.get("python") or sys.executable
        checks[:0] = [check_engine(record, python, node) for record in spec.get("engine_probes", [])]
        pinned: dict[str, str] = {}
        if spec.get("lockfile"):
            lock_check, pinned = check_lockfile(spec["lockfile"], node)
            checks.append(lock_check)
        checks += [check_module(m, pinned, node) for m in spec.get("python_modules", ["mlps_slurm"])]
        checks += [check_executable(e, node, os_info) for e in spec.get("executables", [])]
        for d in spec.get("storage", []):
            checks += self.storage_checks(d, mounts)
        by_id = {d["id"]: d for d in spec.get("storage", [])}
        for a, b in spec.get("separate_filesystems", []):
            if a in by_id and b in by_id:  # a rule about two directories only applies when the run has both
                checks.append(check_separate(by_id[a], by_id[b], mounts, node))
        return checks

    def storage_checks(self, d: dict[str, Any], mounts: list[node_facts.Mount]) -> list[Check]:
        sid, path = d["id"], d["path"]
        # The benchmark never times reads from the results directory, so its cache behaviour does not matter.
        test_cache = bool(d.get("cache_drop", sid != "results_dir"))
        error, created, cache = probe_storage(path, self.node, test_cache)
        mount = node_facts.mount_for(path, mounts)
        checks = [check_writable(sid, path, self.node, error, created or sid in self.absent),
                  check_filesystem(sid, path, mount, self.spec.get("expect_filesystem_type"), self.node),
                  check_free_space(sid, path, int(d.get("required_free_bytes", 0)), self.node)]
        if test_cache:
            checks.append(check_cache_drop(sid, path, self.node, cache, mount.fstype if mount else "?",
                                           bool(self.spec.get("cache_drop_required"))))
        return checks


def run_node_checks(manifest: dict[str, Any], node: str | None = None, job: str | None = None,
                    nodes: list[str] | None = None) -> tuple[list[Check], dict[str, Any], dict[str, Any]]:
    """This node's checks, facts and shared-token views. `nodes`: the allocation (default: SLURM_JOB_NODELIST)."""
    spec = manifest.get("preflight", {})
    node = node or node_name()
    job = job or os.environ.get("SLURM_JOB_ID") or f"pid{os.getpid()}"
    if nodes is None:
        nodes = hostlist.expand(os.environ.get("SLURM_JOB_NODELIST", ""))
    run = NodeRun(spec, node, job, sorted(nodes, key=natural_key))
    run.write_tokens()
    mounts = node_facts.read_mounts()
    facts = node_facts.collect([d["path"] for d in spec.get("storage", [])], mounts)
    checks = run.run_checks(facts, mounts)
    return checks, facts, run.shared_views()


def node_main(run: RunDirectory) -> int:
    started = time.time()
    manifest = run.read_manifest()
    checks, facts, shared = run_node_checks(manifest)
    ended = time.time()
    report = {"node": node_name(), "hostname": socket.gethostname(),
              "time": dt.datetime.fromtimestamp(ended, dt.timezone.utc).isoformat(),
              "clock": {"start": started, "end": ended}, "seconds": round(ended - started, 3),
              "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "shared": shared, "facts": facts, "checks": checks}
    atomic_write_bytes(run.preflight / "nodes" / f"{node_name()}.json", encode_report(report))
    return 1 if any(c["status"] == FAIL for c in checks) else 0
