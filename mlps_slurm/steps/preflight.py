"""Preflight, inside the preflight job.

`node`: runs once per allocated node (srun --ntasks-per-node=1) and writes preflight/nodes/<node>.json: the node's
facts and one check per requirement of the manifest's "preflight" section. The file has two lines: a small index
(statuses, non-passing checks, clock, shared-token views), which is all gather decodes, and the full report with
"checks" as its last key, to which gather appends its own checks without decoding it.
`mpi`: a real collective over every task, started with the benchmark's launcher; rank 0 also measures each node's
clock offset by ping-pong and writes preflight/mpi.json.
`gather`: runs once on the batch host, decides what needs more than one node's report (shared-directory
visibility, clock skew, the MPI result), writes preflight.json (compact JSON: summary keys, then "reports" with
every node's full report, keyed by node) and preflight.txt, and exits non-zero on any error so that Slurm cancels
the benchmark jobs depending on the preflight (afterok).

Check ids are stable (rules, status and tests read them): os.distribution, os.kernel, cpu.count, memory.size,
python.version, python.import.<module>, python.lockfile, executable.<name>, storage.<id>.writable,
storage.<id>.filesystem, storage.<id>.free_space, storage.<id>.cache_drop, storage.separate.<a>.<b> (node);
storage.<id>.shared, clock.skew, node.report (gather, per node); mpi.collective (gather, node "all").

The manifest's "preflight" section (written by the plan; every key optional): python, python_modules, executables,
lockfile, storage [{id, path, required_free_bytes, shared?, cache_drop?}], expect_filesystem_type, storage_shared,
separate_filesystems, memory_gb_expected, cpus_expected, memory_sizes_dataset, cache_drop_required,
shared_token_timeout_s, clock_skew_warn_s, clock_skew_error_s.

Shared visibility: every node writes a token into each shared storage directory
(<dir>/.mlps-preflight-<job>/<shard>/<node>) first thing, runs its other checks, then waits (at most
`shared_token_timeout_s`, 5 s) for the tokens of up to 16 ring neighbours in the sorted node list (all other nodes in
allocations of up to 17). The node reports which it did not see; gather blames a node whose view disagrees with the
majority of its neighbours (it missed more than half of its targets, or more than half of its checkers missed it).
Sampling neighbours keeps the metadata load O(nodes), not O(nodes^2), on large allocations.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import errno
import functools
import gc
import importlib
import json
import os
import platform
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from mlps_slurm import hostlist, install_hints, lockfile
from mlps_slurm.rundir import RunDirectory, atomic_write_bytes, atomic_write_chunks, atomic_write_text
from mlps_slurm.steps import node_facts

PASS, WARN, FAIL = "pass", "warning", "error"
SCHEMA = "mlps-slurm/preflight/1"
INDEX_FORMAT = "mlps-slurm/preflight-node/1"  # first line of a node report file
ALL_NODES = "all"  # the `node` of a failure that belongs to the allocation, not to one node (mpi.collective)

# Memory: nodes.memory_gb is read as GiB (2^30), as MLPerf's dataset-size formula does. MemTotal is 2-5% below the
# installed memory (kernel, firmware), so a node is "short" only below 90% of the declared size.
MEMORY_LOW_RATIO = 0.90
# Above 110% the benchmark can cache more than the plan assumed (warning); when the plan sized a dataset from the
# declared memory (training's 5x rule), any excess beyond rounding makes the dataset too small (error).
MEMORY_HIGH_RATIO = 1.10
MEMORY_DATASET_RATIO = 1.005
PYTHON_MIN = (3, 10)
# Clock skew: above 1 s cross-node timestamps in the results disagree visibly; above 5 s (1/6 of checkpointing's
# 30 s write->read gap rule) rules that compare timestamps from different nodes can be judged wrongly.
CLOCK_WARN_S = 1.0
CLOCK_ERROR_S = 5.0
SHARED_TIMEOUT_S = 5.0
SHARED_NEIGHBOURS = 16
SHARD_SIZE = 64  # tokens per sub-directory: each node lists at most two small directories
TOKEN_DIR = ".mlps-preflight-"
PROBE_BYTES = 64 << 10
MAX_TEXT_LINES = 50  # per check and status in preflight.txt; preflight.json has every node

Check = dict[str, Any]


def node_name() -> str:
    # Emulated Slurm nodes share one host, so the Slurm node name is the identity, not the hostname.
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def _check(check_id: str, status: str, message: str, **facts: Any) -> Check:
    return {**facts, "id": check_id, "status": status, "message": message}


def _gib(nbytes: float) -> str:
    return f"{nbytes / (1 << 30):.1f} GiB"


# ---------------------------------------------------------------------------------------------- system checks

def check_os(os_info: dict[str, str]) -> Check:
    if not os_info.get("id"):
        return _check("os.distribution", WARN, "cannot identify the OS (no os-release): install hints will be "
                      "generic", os=os_info)
    return _check("os.distribution", PASS, os_info.get("name") or os_info["id"], os=os_info)


def check_kernel(kernel: dict[str, str]) -> Check:
    return _check("os.kernel", PASS, f"Linux {kernel['release']} {kernel['machine']}", **kernel)


def check_cpu(cpu: dict[str, Any], expected: int | None, node: str) -> Check:
    facts = {"logical": cpu["logical"], "usable": cpu["usable"], "model": cpu["model"], "expected": expected}
    text = f"{cpu['logical']} CPUs ({cpu['model']})"
    if expected and cpu["logical"] < expected:
        # Fewer cores slow the ranks down (lower AU) but do not invalidate the storage measurement.
        return _check("cpu.count", WARN, f"{node} has {cpu['logical']} CPUs, the profile declares {expected} "
                      f"(nodes.cpus): ranks per node were planned for {expected}; set nodes.cpus to "
                      f"{cpu['logical']} or exclude {node}", **facts)
    return _check("cpu.count", PASS, text, **facts)


def check_memory(memory: dict[str, Any], expected_gb: float | None, node: str,
                 sizes_dataset: bool = False) -> Check:
    total = memory["total_bytes"]
    facts = {"total_bytes": total, "expected_gb": expected_gb, "cgroup_limit_bytes": memory["cgroup_limit_bytes"]}
    if not expected_gb:
        return _check("memory.size", PASS, f"{_gib(total)} (not compared: nodes.memory_gb is not set)", **facts)
    ratio = total / (expected_gb * (1 << 30))
    facts["ratio"] = round(ratio, 3)
    if ratio < MEMORY_LOW_RATIO:
        return _check("memory.size", FAIL, f"{node} has {_gib(total)} of memory, less than 90% of the "
                      f"{expected_gb:g} GB the profile declares (nodes.memory_gb): a wrong node type or failed "
                      f"DIMMs; the plan and the system description assume {expected_gb:g} GB; exclude {node} "
                      f"(sbatch --exclude) or correct nodes.memory_gb", **facts)
    if ratio > (MEMORY_DATASET_RATIO if sizes_dataset else MEMORY_HIGH_RATIO):
        if sizes_dataset:
            return _check("memory.size", FAIL, f"{node} has {_gib(total)} of memory, more than the "
                          f"{expected_gb:g} GB the dataset was sized for (nodes.memory_gb): MLPerf's dataset-size "
                          f"rule (5 x client memory) would make this run INVALID; set nodes.memory_gb to at least "
                          f"{total / (1 << 30):.1f} and regenerate the dataset plan", **facts)
        return _check("memory.size", WARN, f"{node} has {_gib(total)} of memory, the profile declares "
                      f"{expected_gb:g} GB (nodes.memory_gb): more page cache than planned; set nodes.memory_gb "
                      f"to {total / (1 << 30):.1f} for dataset sizing and the system description", **facts)
    return _check("memory.size", PASS, f"{_gib(total)} (profile: {expected_gb:g} GB)", **facts)


def check_python() -> Check:
    version = platform.python_version()
    ok = sys.version_info >= PYTHON_MIN
    message = f"Python {version} at {sys.executable}" if ok else \
        f"Python {version} at {sys.executable} is older than {'.'.join(map(str, PYTHON_MIN))}; set " \
        "environment.python in the profile to a newer interpreter"
    return _check("python.version", PASS if ok else FAIL, message, version=version, executable=sys.executable)


def check_module(name: str, pinned: dict[str, str] | None = None, node: str | None = None) -> Check:
    """The module imports (really imports: a broken compiled extension fails here, not an hour into the run)."""
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # any import failure, not only ImportError, makes the node unusable
        dist = install_hints.module_distribution(name)
        version = (pinned or {}).get(lockfile.normalize(dist))
        hint = install_hints.python_package_hint(dist, version, sys.executable)
        return _check(f"python.import.{name}", FAIL, f"cannot import {name} on {node or node_name()}: "
                      f"{type(exc).__name__}: {exc}; install it into the job interpreter: {hint}", hint=hint)
    version = getattr(module, "__version__", "")
    return _check(f"python.import.{name}", PASS, f"{name} {version}".strip(), version=version)


def check_lockfile(path: str, node: str, installed: dict[str, str] | None = None) -> tuple[Check, dict[str, str]]:
    """The installed packages against the lockfile; also returns the pins (name -> version) for install hints."""
    try:
        pins = lockfile.parse(path)
    except lockfile.LockfileError as exc:
        return _check("python.lockfile", FAIL, f"{exc}; fix the path (submit --verify-lockfile) or the file",
                      lockfile=path), {}
    pinned = {p.key: p.version for p in pins if p.version}
    result = lockfile.check(pins, installed)
    facts = {"lockfile": path, "checked": result.checked,
             "problems": [{"name": p.name, "kind": p.kind, "expected": p.expected, "installed": p.installed}
                          for p in result.problems],
             "not_compared": [{"name": p.name, "expected": p.expected, "installed": p.installed}
                              for p in result.not_compared]}
    notes = "; ".join(p.message for p in result.not_compared)
    if result.ok:
        message = f"{result.checked} packages match {path}" + (f"; {notes}" if notes else "")
        return _check("python.lockfile", PASS, message, **facts), pinned
    wanted = [f"{p.name}{p.expected}" for p in result.problems if p.expected.startswith("==")]
    hint = install_hints.python_packages_hint(wanted, sys.executable) if wanted else ""
    shown = "; ".join(p.message for p in result.problems[:10])
    more = f" and {len(result.problems) - 10} more" if len(result.problems) > 10 else ""
    message = (f"{len(result.problems)} of {result.checked} packages on {node} differ from {path}: {shown}{more}"
               + (f"; fix: {hint}" if hint else ""))
    return _check("python.lockfile", FAIL, message, hint=hint, **facts), pinned


def check_executable(name: str, node: str, os_info: dict[str, str]) -> Check:
    path = shutil.which(name)
    base = name.rsplit("/", 1)[-1]
    if path is None:
        hint = install_hints.executable_hint(base, os_info.get("id", ""), os_info.get("id_like", ""),
                                             os_info.get("version_id", ""))
        where = f"at {name}" if "/" in name else "on PATH"
        return _check(f"executable.{base}", FAIL, f"{base} is not {where} on {node}; {hint}", hint=hint,
                      path=None)
    return _check(f"executable.{base}", PASS, path, path=path)


# ---------------------------------------------------------------------------------------------- storage checks

def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _page_cached(fd: int, buf: bytearray) -> bool | None:
    """Whether the first page of fd is in the page cache: a RWF_NOWAIT read fails with EAGAIN when it is not.
    None when the filesystem cannot tell (no RWF_NOWAIT support)."""
    flag = getattr(os, "RWF_NOWAIT", None)
    if flag is None:
        return None
    try:
        os.preadv(fd, [buf], 0, flag)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None


def probe_storage(path: str, node: str, test_cache: bool) -> tuple[str | None, bool, dict[str, Any] | None]:
    """Create the directory if missing, then create, fsync, (cache-test) and remove a probe file.

    Returns (error, created, cache result). The cache test is: written and fsynced pages are cached; after
    posix_fadvise(DONTNEED) a RWF_NOWAIT read must find them gone.
    """
    directory = Path(path)
    created = not directory.exists()
    probe = directory / f".mlps-preflight-probe-{node}-{os.getpid()}"
    cache: dict[str, Any] | None = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"\xa5" * (PROBE_BYTES if test_cache else 64))
            os.fsync(fd)
            if test_cache:
                buf = bytearray(4096)
                before = _page_cached(fd, buf)
                if before is False:  # evicted already (memory pressure): read it in, so the drop can be seen
                    os.pread(fd, len(buf), 0)
                    before = _page_cached(fd, buf)
                # The kernel may keep a page a moment longer (still under writeback, or locked by a reader):
                # one busy moment must not fail a node, so the advice gets three tries.
                for attempt in range(3):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    after = _page_cached(fd, buf)
                    if not after:
                        break
                    time.sleep(0.05 * (attempt + 1))
                cache = {"cached_after_write": before, "cached_after_fadvise": after}
        finally:
            os.close(fd)
            probe.unlink()
    except OSError as exc:
        return f"{exc.strerror or exc}", created, None
    return None, created, cache


def check_writable(sid: str, path: str, node: str, error: str | None, created: bool) -> Check:
    if error:
        return _check(f"storage.{sid}.writable", FAIL, f"{path} is not writable from {node}: {error}; make it "
                      f"a writable directory on {node} (mount, permissions) or change storage.{sid}", path=path)
    note = " (created)" if created else ""
    return _check(f"storage.{sid}.writable", PASS, f"{path} is writable{note}", path=path, created=created)


def check_cache_drop(sid: str, path: str, node: str, cache: dict[str, Any] | None, fstype: str,
                     required: bool) -> Check:
    drop_caches = os.access("/proc/sys/vm/drop_caches", os.W_OK)
    facts = {"method": "posix_fadvise(POSIX_FADV_DONTNEED)", "drop_caches_writable": drop_caches,
             **(cache or {})}
    cid = f"storage.{sid}.cache_drop"
    if cache is None:
        return _check(cid, WARN, f"not tested on {node}: {path} is not writable", **facts)
    if cache["cached_after_write"] and cache["cached_after_fadvise"] is False:
        return _check(cid, PASS, "posix_fadvise(DONTNEED) evicts this client's page cache (verified)", **facts)
    if cache["cached_after_fadvise"]:
        status = FAIL if required else WARN
        return _check(cid, status, f"posix_fadvise(DONTNEED) left a probe file in {node}'s page cache ({fstype} "
                      f"at {path}): reads may be served from client memory; "
                      + ("run the job as root so /proc/sys/vm/drop_caches can be used, or use O_DIRECT"
                         if not drop_caches else "drop caches with /proc/sys/vm/drop_caches (writable here)"),
                      **facts)
    status = WARN if required else PASS
    return _check(cid, status, f"cannot verify cache dropping on {fstype} (no RWF_NOWAIT residency test); "
                  "posix_fadvise(DONTNEED) is used", **facts)


def check_filesystem(sid: str, path: str, mount: node_facts.Mount | None, expected: str | None, node: str) -> Check:
    if mount is None:
        return _check(f"storage.{sid}.filesystem", FAIL, f"no mount holds {path} on {node} (/proc/self/mounts "
                      "unreadable?)", path=path)
    facts = {"path": path, "fstype": mount.fstype, "mount_point": mount.mount_point, "device": mount.device}
    if expected and mount.fstype != expected:
        return _check(f"storage.{sid}.filesystem", FAIL, f"{path} is on {mount.fstype} ({mount.device} at "
                      f"{mount.mount_point}) on {node}, the profile expects {expected} (storage.filesystem_type): "
                      f"the storage under test is not mounted on {node}; mount it, or set "
                      f"storage.filesystem_type to {mount.fstype}", expected=expected, **facts)
    return _check(f"storage.{sid}.filesystem", PASS, f"{mount.fstype} {mount.device} at {mount.mount_point}",
                  expected=expected, **facts)


def check_free_space(sid: str, path: str, required: int, node: str) -> Check:
    where = _existing_ancestor(Path(path))
    try:
        st = os.statvfs(where)
    except OSError as exc:
        return _check(f"storage.{sid}.free_space", FAIL, f"cannot statvfs {where} on {node}: "
                      f"{exc.strerror or exc}", path=path)
    free = st.f_bavail * st.f_frsize
    facts = {"path": path, "free_bytes": free, "required_bytes": required, "total_bytes": st.f_blocks * st.f_frsize}
    if free < required:
        return _check(f"storage.{sid}.free_space", FAIL, f"{path} has {_gib(free)} free on {node}, the run "
                      f"needs {_gib(required)}: free space or use a smaller --scale", **facts)
    return _check(f"storage.{sid}.free_space", PASS, f"{_gib(free)} free, {_gib(required)} needed", **facts)


def check_separate(a: dict[str, Any], b: dict[str, Any], mounts: list[node_facts.Mount], node: str) -> Check:
    """MLPerf Storage: the dataset and the results live on different filesystems."""
    cid = f"storage.separate.{a['id']}.{b['id']}"
    try:
        dev_a, dev_b = os.stat(a["path"]).st_dev, os.stat(b["path"]).st_dev
    except OSError as exc:
        return _check(cid, FAIL, f"cannot stat {exc.filename} on {node}: {exc.strerror}")
    ma, mb = node_facts.mount_for(a["path"], mounts), node_facts.mount_for(b["path"], mounts)
    same_device = ma is not None and mb is not None and ma.device == mb.device and ma.device.startswith("/")
    if dev_a == dev_b or same_device:
        where = f"{ma.fstype} {ma.device}" if ma else "one filesystem"
        return _check(cid, FAIL, f"{a['id']} ({a['path']}) and {b['id']} ({b['path']}) are on the same filesystem "
                      f"({where}) on {node}; MLPerf Storage requires them on different filesystems: move "
                      f"storage.{b['id']} to another filesystem", st_dev=[dev_a, dev_b])
    return _check(cid, PASS, f"{a['id']} and {b['id']} are on different filesystems", st_dev=[dev_a, dev_b])


# ---------------------------------------------------------------------------------------------- shared tokens

def token_targets(nodes: list[str], index: int, k: int = SHARED_NEIGHBOURS) -> list[str]:
    """The nodes whose tokens node `index` looks for: all others, or its k ring successors."""
    n = len(nodes)
    if n - 1 <= k:
        return [x for i, x in enumerate(nodes) if i != index]
    return [nodes[(index + d) % n] for d in range(1, k + 1)]


def token_path(directory: str, job: str, nodes_index: dict[str, int], node: str) -> Path:
    return Path(directory) / f"{TOKEN_DIR}{job}" / f"{nodes_index[node] // SHARD_SIZE:05d}" / node


def write_token(path: Path, node: str) -> str | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            fh.write(f"{node} {time.time():.6f}\n")
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def wait_for_tokens(wanted: dict[str, dict[str, Path]], timeout: float) -> tuple[dict[str, set[str]], float]:
    """Poll until every wanted token (dir id -> node -> path) is visible or the timeout passes.

    Lists each shard directory (opendir makes NFS revalidate the directory; a stat of a missing name could be
    answered from a cached negative lookup for up to acdirmax). Returns the nodes still missing per dir id.
    """
    missing = {sid: set(paths) for sid, paths in wanted.items()}
    started = time.monotonic()
    delay = 0.01
    while True:
        for sid, paths in wanted.items():
            shards: dict[Path, list[str]] = {}
            for node in missing[sid]:
                shards.setdefault(paths[node].parent, []).append(node)
            for shard, nodes in shards.items():
                try:
                    present = {entry.name for entry in os.scandir(shard)}
                except OSError:
                    continue
                missing[sid].difference_update(n for n in nodes if n in present)
        waited = time.monotonic() - started
        if not any(missing.values()) or waited >= timeout:
            return missing, waited
        time.sleep(min(delay, max(0.0, timeout - waited)))
        delay = min(delay * 2, 0.25)


def _shared_dirs(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Storage dirs that every node must see as one: results_dir always (the run directory lives there), the
    others when storage_shared; a dir's own `shared` key overrides both."""
    shared = bool(spec.get("storage_shared", True))
    return [d for d in spec.get("storage", [])
            if d.get("shared", d["id"] == "results_dir" or shared)]


# ---------------------------------------------------------------------------------------------- node step

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
        for d in _shared_dirs(self.spec):
            self.tokens[d["id"]] = write_token(token_path(d["path"], self.job, self.index, self.node), self.node)

    def shared_views(self) -> dict[str, Any]:
        """What this node saw of its neighbours' tokens, per shared dir; gather turns it into verdicts."""
        dirs = _shared_dirs(self.spec)
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


# Compact, and one encoder for all calls: the C encoder is used only without indent, and gather encodes once per
# node of the allocation.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def _dumps(data: Any) -> bytes:
    return _ENCODER.encode(data).encode()


def report_index(report: dict[str, Any]) -> dict[str, Any]:
    """The part of a node report gather needs, shaped to decode fast (gather reads one per node): the ids of the
    passing checks and the shared-token targets as single space-separated strings, the non-passing checks in
    full, the clock and what the node saw of the shared tokens."""
    checks = report["checks"]
    index = {"format": INDEX_FORMAT, "node": report["node"], "slurm_job_id": report.get("slurm_job_id"),
             "clock_end": (report.get("clock") or {}).get("end"),
             "passed": " ".join(c["id"] for c in checks if c["status"] == PASS),
             "findings": [_finding(report["node"], c) for c in checks if c["status"] != PASS]}
    shared = report.get("shared")
    if shared:
        index["shared"] = {**shared, "targets": " ".join(shared.get("targets", [])),
                           "k": len(shared.get("targets", []))}
    return index


def encode_report(report: dict[str, Any]) -> bytes:
    """A node report file: line 1 the index (all gather parses), line 2 the full report with "checks" last, so
    that gather can append its own checks to the bytes without decoding and re-encoding the report."""
    full = {k: v for k, v in report.items() if k != "checks"}
    full["checks"] = report["checks"]
    return _dumps(report_index(report)) + b"\n" + _dumps(full) + b"\n"


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


# ---------------------------------------------------------------------------------------------- MPI step

def measure_clock_offsets(comm: Any, rounds: int = 4) -> dict[str, dict[str, float]] | None:
    """Rank 0 ping-pongs every other rank: offset = their clock - midpoint of our send and receive times, from
    the round with the shortest round trip; uncertainty = half that round trip. Per node (best rank). Rank 0
    gets the table, other ranks None."""
    rank, size = comm.Get_rank(), comm.Get_size()
    me = node_name()
    if rank != 0:
        for _ in range(rounds):
            comm.recv(source=0, tag=71)
            comm.send((time.time(), me), dest=0, tag=72)
        return None
    best: dict[str, dict[str, float]] = {me: {"offset_s": 0.0, "rtt_s": 0.0}}
    for peer in range(1, size):
        for _ in range(rounds):
            t0 = time.time()
            comm.send(None, dest=peer, tag=71)
            their, node = comm.recv(source=peer, tag=72)
            t1 = time.time()
            rtt = t1 - t0
            if node not in best or rtt < best[node]["rtt_s"]:
                best[node] = {"offset_s": their - (t0 + t1) / 2, "rtt_s": rtt}
    return best


def mpi_main(run: RunDirectory) -> int:
    """A real collective over every task, started by the benchmark's own launcher."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    total = comm.allreduce(1)
    nodes = comm.gather(node_name(), root=0)
    offsets = measure_clock_offsets(comm)
    if comm.Get_rank() == 0:
        atomic_write_bytes(run.preflight / "mpi.json", _dumps({
            "ok": total == comm.Get_size(), "size": comm.Get_size(), "allreduce_sum": total, "nodes": nodes,
            "library": MPI.Get_library_version().rstrip("\x00").splitlines()[0],
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "clock": {"reference_node": node_name(), "time": time.time(), "offsets": offsets}}) + b"\n")
    return 0


# ---------------------------------------------------------------------------------------------- gather

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[Any, ...]:
    """n2 before n10."""
    return tuple(int(p) if p.isdigit() else p for p in _DIGITS.split(name))


@functools.lru_cache(maxsize=1 << 16)
def _split_name(name: str) -> tuple[str, int, int]:
    """'gpu017' -> ('gpu', 3, 17); a name without a trailing number -> (name, -1, 0). Cached: the same names
    are compacted once per check in preflight.txt."""
    prefix = name.rstrip("0123456789")
    digits = name[len(prefix):]
    if not digits:
        return name, -1, 0
    return prefix, len(digits) if digits[0] == "0" and len(digits) > 1 else 0, int(digits)


def compact_nodes(names: Iterable[str]) -> str:
    """['n1','n2','n3','n7','gpu01'] -> 'gpu01,n[1-3,7]' (Slurm hostlist syntax, zero padding kept)."""
    groups: dict[tuple[str, int], list[int]] = {}
    plain: set[str] = set()
    for name in names:
        prefix, width, number = _split_name(name)
        if width < 0:
            plain.add(name)
        else:
            groups.setdefault((prefix, width), []).append(number)
    parts = sorted(plain)
    for (prefix, width), numbers in sorted(groups.items()):
        numbers = sorted(set(numbers))
        ranges, start, prev = [], numbers[0], numbers[0]
        for n in numbers[1:]:
            if n != prev + 1:
                ranges.append(_range(start, prev, width))
                start = n
            prev = n
        ranges.append(_range(start, prev, width))
        parts.append(f"{prefix}{ranges[0]}" if len(numbers) == 1 else f"{prefix}[{','.join(ranges)}]")
    return ",".join(parts)


def _range(start: int, end: int, width: int) -> str:
    return f"{start:0{width}d}" if start == end else f"{start:0{width}d}-{end:0{width}d}"


class Gathered:
    """The preflight summary as gather builds it.

    `summary`: preflight.json without "reports" (ok, nodes, failures, warnings, cluster_checks, mpi, ...).
    `reports`: node -> (its full report as the node wrote it, gather's checks encoded): joined only while writing,
    so no report is decoded, re-encoded or held twice.
    `passed`: check id -> nodes on which it passed (for preflight.txt).
    """

    def __init__(self, summary: dict[str, Any], reports: dict[str, tuple[bytes, bytes]],
                 passed: dict[str, list[str]]) -> None:
        self.summary = summary
        self.reports = reports
        self.passed = passed

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]

    def report(self, node: str) -> dict[str, Any]:
        return json.loads(_append_checks(*self.reports[node]))

    def chunks(self) -> Iterator[bytes]:
        """preflight.json, piece by piece: the summary, then every report under "reports"."""
        head = _dumps(self.summary)
        yield head[:-1] + b',"reports":{'
        for i, node in enumerate(self.summary["nodes"]):
            yield (b"," if i else b"") + _dumps(node) + b":" + _append_checks(*self.reports[node])
        yield b"}}\n"

    def as_dict(self) -> dict[str, Any]:
        """Everything decoded (as preflight.json reads back); for tests and small allocations."""
        return {**self.summary, "reports": {n: self.report(n) for n in self.summary["nodes"]}}


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


def _split_report(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(index, full report bytes) of a node report file. Any other JSON report (an older format, pretty-printed,
    or written by hand) is decoded whole and re-encoded with "checks" last."""
    newline = data.find(b"\n")
    if newline > 0 and data.startswith(b'{"format":"' + INDEX_FORMAT.encode() + b'"'):
        end = len(data) - 1 if data.endswith(b"\n") else len(data)
        return json.loads(data[:newline]), data[newline + 1:end]
    report = json.loads(data)
    return report_index(report), encode_report(report).split(b"\n", 1)[1].strip()


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
                index, full = _split_report(fh.read())
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
    check = _check("node.report", FAIL, message)
    return _NodeData(_dumps(_made_report(node, check)), [_finding(node, check)], None, None)


def decide_shared(shared: dict[str, dict[str, Any]]) -> dict[str, list[Check]]:
    """Verdicts on shared visibility: node -> one storage.<id>.shared check per shared dir it reported.

    `shared`: node -> the "shared" section of its report index (targets as one string, k = their number,
    dirs: {id: {path, token, error, missing}}).
    """
    checks: dict[str, list[Check]] = {n: [] for n in shared}
    by_dir: dict[str, dict[str, dict[str, Any]]] = {}
    for node, section in shared.items():
        for sid, view in section.get("dirs", {}).items():
            by_dir.setdefault(sid, {})[node] = view
    for sid in sorted(by_dir):
        views = by_dir[sid]
        cid = f"storage.{sid}.shared"
        members = set()
        for node, view in views.items():
            reason = shared[node].get("skipped") or (None if view.get("token") else
                                                     f"cannot write a token into {view.get('path')}: "
                                                     f"{view.get('error')}")
            if reason:
                checks[node].append(_check(cid, WARN, f"not tested on {node}: {reason}", path=view.get("path")))
            else:
                members.add(node)
        for node, check in _decide_dir(sid, views, {n: shared[n] for n in members}).items():
            checks[node].append(check)
    return checks


def _decide_dir(sid: str, views: dict[str, dict[str, Any]],
                members: dict[str, dict[str, Any]]) -> dict[str, Check]:
    cid = f"storage.{sid}.shared"
    everyone = len(members) == len(views)
    if everyone and not any(views[n]["missing"] for n in members):
        # The common case, kept cheap: every node wrote its token and saw all of its targets. Nodes with the same
        # path and neighbour count share one check object (gather encodes it once).
        out, made = {}, {}
        for n in members:
            key = (views[n]["path"], members[n]["k"])
            if key not in made:
                text = (f"sees the tokens of its {key[1]} neighbour(s) in {key[0]}, and they see its token"
                        if key[1] else f"single node: shared visibility of {key[0]} is not testable")
                made[key] = _check(cid, PASS, text, path=key[0], targets=key[1], missing=[])
            out[n] = made[key]
        return out
    targets = {n: [t for t in s["targets"].split() if t in members] for n, s in members.items()}
    missed = {n: {m for m in views[n]["missing"] if m in members} for n in members}
    out = {}
    checkers: dict[str, list[str]] = {n: [] for n in members}
    missed_by: dict[str, list[str]] = {n: [] for n in members}
    for n in members:
        for t in targets[n]:
            checkers[t].append(n)
        for t in missed[n]:
            missed_by[t].append(n)
    # A node is at fault when its view disagrees with most of its neighbours, in either direction.
    faulty = {n for n in members
              if 2 * len(missed[n]) > len(targets[n]) or 2 * len(missed_by[n]) > len(checkers[n])}
    for n in members:
        path, timeout = views[n]["path"], members[n].get("timeout_s", SHARED_TIMEOUT_S)
        facts = {"path": path, "targets": len(targets[n]), "missing": sorted(missed[n], key=natural_key),
                 "not_seen_by": sorted(missed_by[n], key=natural_key)}
        if n in faulty:
            tie = " (with two nodes mlps-slurm cannot tell which one is wrong)" if len(members) == 2 else ""
            out[n] = _check(cid, FAIL, (
                f"{path} on {n} is not the directory the other nodes see: {n} saw "
                f"{len(targets[n]) - len(missed[n])} of {len(targets[n])} other nodes' tokens and "
                f"{len(missed_by[n])} of {len(checkers[n])} nodes did not see {n}'s token within {timeout:g} s; it "
                f"is node-local or mounted differently on {n}{tie}; check `findmnt -T {path}` on {n}"), **facts)
        elif missed[n] - faulty:
            lost = compact_nodes(missed[n] - faulty)
            out[n] = _check(cid, FAIL, (
                f"{n} does not see the tokens of {lost} in {path} within {timeout:g} s although other nodes do: "
                f"stale metadata caching (NFS actimeo/lookupcache) or a different mount on {n}; check its mount "
                "options or raise shared_token_timeout_s"), **facts)
        else:
            out[n] = _check(cid, PASS, f"{n} and its neighbours see one {path}"
                            + (f" (apart from {compact_nodes(missed[n])})" if missed[n] else ""), **facts)
    return out


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
        return _check("clock.skew", FAIL, f"{text}: above {error_s:g} s, cross-node timestamps in the results are "
                      f"wrong; synchronise {node} with NTP (chronyc tracking / timedatectl)", **facts)
    if magnitude > warn_s:
        return _check("clock.skew", WARN, f"{text}: above {warn_s:g} s; synchronise {node} with NTP", **facts)
    return _check("clock.skew", PASS, text, **facts)


def check_mpi(mpi: dict[str, Any] | None, path: Path, expected: list[str], job_id: str | None) -> Check:
    if mpi is None:
        return _check("mpi.collective", FAIL, f"the MPI check wrote no {path}: the launcher could not start the "
                      "ranks or MPI failed; see the preflight job's log, and check launcher.kind / --mpi "
                      "and that mpi4py is built against the site MPI")
    facts = {"size": mpi.get("size"), "library": mpi.get("library"), "nodes": compact_nodes(mpi.get("nodes") or [])}
    if job_id and mpi.get("slurm_job_id") not in (None, job_id):
        return _check("mpi.collective", FAIL, f"{path} is from job {mpi.get('slurm_job_id')}, not {job_id}: the "
                      "MPI check of this job did not run", **facts)
    absent = sorted(set(expected) - set(mpi.get("nodes") or []), key=natural_key)
    if not mpi.get("ok") or absent:
        why = f"nodes {compact_nodes(absent)} took no part" if absent else \
            f"allreduce gave {mpi.get('allreduce_sum')} for {mpi.get('size')} ranks"
        return _check("mpi.collective", FAIL, f"the MPI collective failed: {why}; see the preflight job's log",
                      **facts)
    return _check("mpi.collective", PASS, f"allreduce over {mpi['size']} ranks on {len(set(mpi['nodes']))} "
                  f"node(s): {facts['library']}", **facts)


def _read_optional_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read())
    except (OSError, ValueError):
        return None


def _append_checks(full: bytes, extra: bytes) -> bytes:
    """Append encoded checks ("{...},{...}") to a report's JSON, whose last key is "checks" (see encode_report)."""
    if not extra:
        return full
    if not full.endswith(b"]}"):
        raise ValueError("node report does not end with its checks list")
    body = full[:-2]
    return body + (b"" if body.endswith(b"[") else b",") + extra + b"]}"


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
        findings = d.findings + [_finding(n, c) for c in extra if c["status"] != PASS]
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
            (failures if c["status"] == FAIL else warnings).append(_finding(ALL_NODES, c))
    summary = {"schema": SCHEMA, "ok": not failures, "nodes": names, "failures": failures, "warnings": warnings,
               "cluster_checks": cluster_checks, "mpi": mpi, "batch_host": batch_host, "slurm_job_id": job_id,
               "time": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(),
               "gather_seconds": round(time.perf_counter() - perf, 3)}
    return Gathered(summary, reports, passed)


def _encode_shared(check: Check, cache: dict[int, bytes]) -> bytes:
    """Encode a check; one object used for many nodes (see _decide_dir) is encoded once. Keyed by id(): the
    objects stay alive in gather's tables for as long as the cache."""
    key = id(check)
    if key not in cache:
        cache[key] = _dumps(check)
    return cache[key]


def _finding(node: str, c: Check) -> dict[str, str]:
    finding = {"node": node, "check": c["id"], "status": c["status"], "message": c["message"]}
    if c.get("hint"):
        finding["hint"] = c["hint"]
    return finding


def _passed_from_reports(reports: dict[str, Any]) -> dict[str, list[str]]:
    passed: dict[str, list[str]] = {}
    for node, report in reports.items():
        for c in report["checks"]:
            if c["status"] == PASS:
                passed.setdefault(c["id"], []).append(node)
    return passed


def format_text(summary: dict[str, Any] | Gathered, passed: dict[str, list[str]] | None = None) -> str:
    """preflight.txt: the verdict, then errors, warnings and passes grouped by check with their nodes.
    Takes a Gathered, or a decoded preflight.json."""
    if isinstance(summary, Gathered):
        summary, passed = summary.summary, summary.passed
    if passed is None:
        passed = _passed_from_reports(summary.get("reports", {}))
        for c in summary.get("cluster_checks", []):
            if c["status"] == PASS:
                passed.setdefault(c["id"], []).append(ALL_NODES)
    nodes = summary["nodes"]
    lines = [f"preflight: {'PASSED' if summary['ok'] else 'FAILED'} on {len(nodes)} node(s): "
             f"{compact_nodes(nodes)}  ({len(summary['failures'])} error(s), {len(summary['warnings'])} warning(s)"
             f"; batch host {summary.get('batch_host', '?')}, job {summary.get('slurm_job_id') or '-'})"]
    for title, findings in (("errors", summary["failures"]), ("warnings", summary["warnings"])):
        if not findings:
            continue
        lines.append(title)
        by_check: dict[str, list[dict[str, str]]] = {}
        for f in findings:
            by_check.setdefault(f["check"], []).append(f)
        for check_id in sorted(by_check):
            group = by_check[check_id]
            lines.append(f"  {check_id}: {compact_nodes(f['node'] for f in group)}")
            templates = _message_groups(group)
            for template, members in list(templates.items())[:MAX_TEXT_LINES]:
                who = members[0]["node"] if len(members) == 1 else compact_nodes(f["node"] for f in members)
                lines.append(f"    {who}: {members[0]['message'] if len(members) == 1 else template}")
            if len(templates) > MAX_TEXT_LINES:
                lines.append(f"    ... {len(templates) - MAX_TEXT_LINES} more in preflight.json")
    if passed:
        lines.append("passed")
        everywhere = compact_nodes(nodes)  # most checks pass on every node: compact that list once
        lines += [f"  {cid}: {everywhere if len(passed[cid]) == len(nodes) else compact_nodes(passed[cid])}"
                  for cid in sorted(passed)]
    return "\n".join(lines) + "\n"


def _replace_word(text: str, word: str, replacement: str) -> str:
    """Replace `word` where it stands alone (n1, not the n1 inside n10 or /data/n1x)."""
    out, i = [], 0
    while True:
        j = text.find(word, i)
        if j == -1:
            out.append(text[i:])
            return "".join(out)
        before = text[j - 1] if j else " "
        after = text[j + len(word)] if j + len(word) < len(text) else " "
        alone = not (before.isalnum() or before in "_-./") and not (after.isalnum() or after in "_-/")
        out.append(text[i:j] + (replacement if alone else word))
        i = j + len(word)


def _message_groups(findings: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """Findings with the same message once the node's own name is replaced by <node>, so that a problem shared
    by 1,000 nodes is one line."""
    groups: dict[str, list[dict[str, str]]] = {}
    for f in findings:
        groups.setdefault(_replace_word(f["message"], f["node"], "<node>"), []).append(f)
    return groups


def write_outputs(run: RunDirectory, gathered: Gathered) -> str:
    """preflight.json and preflight.txt; returns the text."""
    atomic_write_chunks(run.preflight / "preflight.json", gathered.chunks())
    text = format_text(gathered)
    atomic_write_text(run.preflight / "preflight.txt", text)
    return text


def cleanup_tokens(spec: dict[str, Any], job_id: str | None) -> None:
    """Remove this job's token directories (as seen from the batch host), shards in parallel: on a parallel
    filesystem each unlink is a metadata round trip. A node that saw a node-local directory keeps its token
    there (.mlps-preflight-<job>/), which only it can see."""
    if not job_id:
        return
    from concurrent.futures import ThreadPoolExecutor  # here: the node step never needs threads

    roots = [Path(d["path"]) / f"{TOKEN_DIR}{job_id}" for d in _shared_dirs(spec)]
    shards = [entry.path for root in roots if root.is_dir() for entry in os.scandir(root)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda shard: shutil.rmtree(shard, ignore_errors=True), shards))
    for root in roots:
        try:
            root.rmdir()
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                raise


def gather_main(run: RunDirectory, expected_nodes: list[str]) -> int:
    spec = run.read_manifest().get("preflight", {})
    gathered = gather(run, expected_nodes, spec=spec)
    sys.stdout.write(write_outputs(run, gathered))
    cleanup_tokens(spec, gathered["slurm_job_id"])
    return 0 if gathered["ok"] else 1


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
