"""The preflight node checks on this machine, with temporary directories and monkeypatching (no Slurm)."""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from mlps_slurm.steps.preflight import node_facts, storage, system, tokens
from mlps_slurm.steps.preflight.node import node_main, run_node_checks

DEBIAN = {"id": "debian", "id_like": "", "version_id": "12", "name": "Debian GNU/Linux 12"}
GIB = 1 << 30


# What every manifest carries (mlps_slurm.rundir checks it when reading).
MANIFEST_HEAD = {"schema": "mlps-slurm/manifest/2", "run_id": "run", "benchmark": "preflight", "request": {}}

def memory(total_gib: float) -> dict:
    return {"total_bytes": int(total_gib * GIB), "cgroup_limit_bytes": None}


# ---------------------------------------------------------------------------------------------- cpu, memory

def test_memory_thresholds():
    assert system.check_memory(memory(250), 256.0, "n1")["status"] == "pass"  # MemTotal is a little below installed
    low = system.check_memory(memory(200), 256.0, "n7")
    assert low["status"] == "error"
    assert "n7 has 200.0 GiB" in low["message"] and "nodes.memory_gb" in low["message"]
    assert "exclude n7" in low["message"]
    high = system.check_memory(memory(512), 256.0, "n1")
    assert high["status"] == "warning" and "set nodes.memory_gb to 512.0" in high["message"]
    assert system.check_memory(memory(270), 256.0, "n1")["status"] == "pass"  # within 10%
    assert system.check_memory(memory(512), None, "n1")["status"] == "pass"


def test_memory_above_declared_invalidates_a_dataset_sized_from_it():
    check = system.check_memory(memory(260), 256.0, "n1", sizes_dataset=True)
    assert check["status"] == "error" and "INVALID" in check["message"] and "5 x client memory" in check["message"]
    assert system.check_memory(memory(256.5), 256.0, "n1", sizes_dataset=True)["status"] == "pass"  # rounding


def test_cpu_count():
    cpu = {"model": "X", "logical": 2, "usable": 1}
    warn = system.check_cpu(cpu, 64, "n2")
    assert warn["status"] == "warning" and "n2 has 2 CPUs" in warn["message"] and "nodes.cpus" in warn["message"]
    assert system.check_cpu(cpu, 2, "n2")["status"] == "pass"
    assert system.check_cpu(cpu, None, "n2")["status"] == "pass"


def test_python_version(monkeypatch):
    assert system.check_python()["status"] == "pass"
    monkeypatch.setattr(system, "PYTHON_MIN", (99, 0))
    old = system.check_python()
    assert old["status"] == "error" and "environment.python" in old["message"]


def test_os_and_kernel_checks_keep_their_ids():
    assert system.check_os(DEBIAN)["id"] == "os.distribution"  # facts never override the check id
    assert system.check_os({"id": "", "id_like": "", "version_id": "", "name": ""})["status"] == "warning"
    assert system.check_kernel(node_facts.kernel_facts())["id"] == "os.kernel"


# ---------------------------------------------------------------------------------------------- python, executables

def test_module_import_failures_say_how_to_install(tmp_path, monkeypatch):
    missing = system.check_module("no_such_module_xyz", {"no-such-module-xyz": "1.2.3"}, "n4")
    assert missing["status"] == "error" and missing["id"] == "python.import.no_such_module_xyz"
    assert "on n4" in missing["message"]
    assert missing["hint"] == f"`{sys.executable} -m pip install no-such-module-xyz==1.2.3`"
    # A module that exists but fails while importing (a broken compiled extension, say) fails the check too.
    (tmp_path / "broken_mod_xyz.py").write_text("raise RuntimeError('libmpi.so.40: cannot open shared object')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = system.check_module("broken_mod_xyz", None, "n4")
    assert broken["status"] == "error" and "libmpi.so.40" in broken["message"]
    assert system.check_module("json")["status"] == "pass"


def test_lockfile_check(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("click==0.0.1\nmpi4py==0.1\nnothere==2.0\n")
    check, pinned = system.check_lockfile(str(lock), "n2")
    assert check["status"] == "error" and check["id"] == "python.lockfile"
    assert "2 of 2 packages on n2 differ" in check["message"]
    assert check["hint"] == f"`{sys.executable} -m pip install click==0.0.1 nothere==2.0`"
    assert [p["name"] for p in check["not_compared"]] == ["mpi4py"]
    assert pinned["nothere"] == "2.0"
    from importlib.metadata import version

    lock.write_text(f"click=={version('click')}\nmpi4py==0.1\n")
    check, _ = system.check_lockfile(str(lock), "n2")
    assert check["status"] == "pass" and "not compared" in check["message"]
    check, _ = system.check_lockfile(str(tmp_path / "absent.txt"), "n2")
    assert check["status"] == "error" and "cannot read lockfile" in check["message"]


def test_executable_on_path_and_missing_with_hint(tmp_path, monkeypatch):
    stub = tmp_path / "mpirun"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert system.check_executable("mpirun", "n1", DEBIAN) == {"id": "executable.mpirun", "status": "pass",
                                                               "message": str(stub), "path": str(stub)}
    stub.chmod(0o644)  # not executable: as good as missing
    check = system.check_executable("mpirun", "n3", DEBIAN)
    assert check["status"] == "error" and "mpirun is not on PATH on n3" in check["message"]
    assert check["hint"].startswith("as root: `apt-get install -y openmpi-bin`")
    full = system.check_executable("/opt/apptainer/bin/apptainer", "n3", {"id": "rocky", "id_like": "rhel",
                                                                          "version_id": "9"})
    assert full["id"] == "executable.apptainer" and "at /opt/apptainer/bin/apptainer" in full["message"]
    assert "`dnf install -y apptainer`" in full["hint"]


# ---------------------------------------------------------------------------------------------- storage

def test_probe_creates_writes_and_cleans_up(tmp_path):
    target = tmp_path / "a" / "b"
    error, created, cache = storage.probe_storage(str(target), "n1", test_cache=True)
    assert error is None and created and target.is_dir()
    assert list(target.iterdir()) == []  # the probe file is gone
    assert cache is not None and set(cache) == {"cached_after_write", "cached_after_fadvise"}
    writable = storage.check_writable("checkpoint_dir", str(target), "n1", error, created)
    assert writable["message"].endswith("(created)")


def test_unwritable_directory_fails_with_node_and_fix(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    error, _, cache = storage.probe_storage(str(blocker / "ckpt"), "n3", test_cache=True)
    assert error == "Not a directory" and cache is None
    check = storage.check_writable("checkpoint_dir", str(blocker / "ckpt"), "n3", error, False)
    assert check["id"] == "storage.checkpoint_dir.writable" and check["status"] == "error"
    assert "not writable from n3: Not a directory" in check["message"] and "storage.checkpoint_dir" in check["message"]


def test_cache_drop_verified_on_this_filesystem(tmp_path):
    _, _, cache = storage.probe_storage(str(tmp_path), "n1", test_cache=True)
    check = storage.check_cache_drop("checkpoint_dir", str(tmp_path), "n1", cache, "ext4", required=True)
    if cache["cached_after_write"] is None:
        pytest.skip("this filesystem has no RWF_NOWAIT reads: residency cannot be observed")
    assert check["status"] == "pass" and "verified" in check["message"]
    assert check["drop_caches_writable"] == os.access("/proc/sys/vm/drop_caches", os.W_OK)


def test_cache_drop_that_does_not_evict(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "_page_cached", lambda fd, buf: True)  # as on a client cache fadvise cannot drop
    _, _, cache = storage.probe_storage(str(tmp_path), "n2", test_cache=True)
    assert cache == {"cached_after_write": True, "cached_after_fadvise": True}
    soft = storage.check_cache_drop("checkpoint_dir", str(tmp_path), "n2", cache, "gpfs", required=False)
    hard = storage.check_cache_drop("checkpoint_dir", str(tmp_path), "n2", cache, "gpfs", required=True)
    assert (soft["status"], hard["status"]) == ("warning", "error")
    assert "n2's page cache (gpfs" in hard["message"]
    monkeypatch.setattr(storage, "_page_cached", lambda fd, buf: None)
    _, _, cache = storage.probe_storage(str(tmp_path), "n2", test_cache=True)
    assert storage.check_cache_drop("d", str(tmp_path), "n2", cache, "nfs4", required=False)["status"] == "pass"
    assert storage.check_cache_drop("d", str(tmp_path), "n2", cache, "nfs4", required=True)["status"] == "warning"


def test_filesystem_type_expectation(tmp_path):
    mounts = node_facts.parse_mounts("/dev/vda / ext4 rw 0 0\n10.0.0.1@tcp:/fs /lus lustre rw 0 0\n")
    ok = storage.check_filesystem("data_dir", "/lus/data", node_facts.mount_for("/lus/data", mounts), "lustre", "n1")
    assert ok["status"] == "pass" and ok["fstype"] == "lustre" and ok["mount_point"] == "/lus"
    bad = storage.check_filesystem("data_dir", "/scratch/data", node_facts.mount_for("/scratch/data", mounts),
                                   "lustre", "n3")
    assert bad["status"] == "error"
    assert "is on ext4 (/dev/vda at /) on n3, the profile expects lustre" in bad["message"]
    assert "storage.filesystem_type" in bad["message"]
    anything = storage.check_filesystem("data_dir", "/x", node_facts.mount_for("/x", mounts), None, "n3")
    assert anything["status"] == "pass"


def test_free_space(tmp_path):
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    assert storage.check_free_space("checkpoint_dir", str(tmp_path), 1 << 20, "n1")["status"] == "pass"
    short = storage.check_free_space("checkpoint_dir", str(tmp_path / "not" / "yet"), free * 4, "n1")
    assert short["status"] == "error" and short["required_bytes"] == free * 4
    assert "free on n1, the run needs" in short["message"]


def test_separate_filesystems(tmp_path):
    mounts = node_facts.read_mounts()
    a, b = tmp_path / "data", tmp_path / "results"
    a.mkdir()
    b.mkdir()
    same = storage.check_separate({"id": "data_dir", "path": str(a)}, {"id": "results_dir", "path": str(b)}, mounts,
                                  "n1")
    assert same["status"] == "error" and same["id"] == "storage.separate.data_dir.results_dir"
    assert "MLPerf Storage requires them on different filesystems" in same["message"]
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem (/dev/shm) here")
    other = storage.check_separate({"id": "data_dir", "path": str(shm)}, {"id": "results_dir", "path": str(b)},
                                   mounts, "n1")
    assert other["status"] == "pass"


# ---------------------------------------------------------------------------------------------- shared tokens

def test_ring_targets_are_symmetric_and_bounded():
    nodes = [f"c{i:03d}" for i in range(100)]
    targets = {n: tokens.token_targets(nodes, i) for i, n in enumerate(nodes)}
    assert all(len(t) == tokens.SHARED_NEIGHBOURS and n not in t for n, t in targets.items())
    checked_by = {n: sum(n in t for t in targets.values()) for n in nodes}
    assert set(checked_by.values()) == {tokens.SHARED_NEIGHBOURS}
    small = ["a", "b", "c"]
    assert tokens.token_targets(small, 1) == ["a", "c"]


def test_wait_for_tokens_returns_at_once_or_after_the_timeout(tmp_path):
    index = {"a": 0, "b": 1}
    paths = {n: tokens.token_path(str(tmp_path), "7", index, n) for n in index}
    assert tokens.write_token(paths["a"], "a") is None
    missing, waited = tokens.wait_for_tokens({"d": {"a": paths["a"]}}, timeout=5)
    assert missing == {"d": set()} and waited < 1
    started = time.monotonic()
    missing, waited = tokens.wait_for_tokens({"d": {"a": paths["a"], "b": paths["b"]}}, timeout=0.3)
    assert missing == {"d": {"b"}} and 0.3 <= time.monotonic() - started < 2


def spec_for(ckpt: Path, results: Path, **extra) -> dict:
    return {"python_modules": ["json"], "executables": ["sh"], "storage_shared": True,
            "storage": [{"id": "checkpoint_dir", "path": str(ckpt), "required_free_bytes": 0},
                        {"id": "results_dir", "path": str(results), "required_free_bytes": 0}],
            "shared_token_timeout_s": 1.0, **extra}


def run_nodes(specs: dict[str, dict]) -> dict[str, tuple]:
    """Run the node checks of several emulated nodes concurrently, as srun does."""
    out: dict[str, tuple] = {}
    nodes = sorted(specs)

    def one(node: str) -> None:
        out[node] = run_node_checks({"preflight": specs[node]}, node=node, job="99", nodes=nodes)

    threads = [threading.Thread(target=one, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_nodes_see_each_others_tokens(tmp_path):
    spec = spec_for(tmp_path / "ckpt", tmp_path / "results")
    results = run_nodes({"n1": spec, "n2": spec, "n3": spec})
    for node, (checks, facts, shared) in results.items():
        assert shared["targets"] == [n for n in ("n1", "n2", "n3") if n != node]
        assert all(v["token"] and v["missing"] == [] for v in shared["dirs"].values()), shared
        assert {c["id"] for c in checks} >= {"storage.checkpoint_dir.writable", "storage.checkpoint_dir.cache_drop",
                                             "storage.results_dir.free_space", "executable.sh", "python.import.json"}
        assert "storage.results_dir.cache_drop" not in {c["id"] for c in checks}  # never timed reads there
        assert facts["memory"]["total_bytes"] > 0


def test_a_node_local_directory_is_missing_from_the_others_view(tmp_path):
    shared = spec_for(tmp_path / "ckpt", tmp_path / "results")
    local = spec_for(tmp_path / "n3-local", tmp_path / "results")  # n3 has its own directory at the same path
    results = run_nodes({"n1": shared, "n2": shared, "n3": local})
    views = {n: r[2]["dirs"]["checkpoint_dir"]["missing"] for n, r in results.items()}
    assert views == {"n1": ["n3"], "n2": ["n3"], "n3": ["n1", "n2"]}
    assert all(r[2]["dirs"]["results_dir"]["missing"] == [] for r in results.values())


def test_only_results_dir_is_shared_when_storage_is_node_local(tmp_path):
    spec = spec_for(tmp_path / "ckpt", tmp_path / "results", storage_shared=False)
    assert [d["id"] for d in tokens.shared_dirs(spec)] == ["results_dir"]
    spec["storage"][0]["shared"] = True  # a directory can insist
    assert [d["id"] for d in tokens.shared_dirs(spec)] == ["checkpoint_dir", "results_dir"]


def test_node_outside_an_allocation_skips_the_token_test(tmp_path):
    spec = spec_for(tmp_path / "ckpt", tmp_path / "results")
    _, _, shared = run_node_checks({"preflight": spec}, node="login1", job="1", nodes=["n1", "n2"])
    assert "not in SLURM_JOB_NODELIST" in shared["skipped"]
    assert not any((tmp_path / "ckpt").glob(".mlps-preflight-*"))


def test_separate_filesystem_rule_applies_only_with_both_dirs(tmp_path):
    spec = spec_for(tmp_path / "ckpt", tmp_path / "results", separate_filesystems=[["data_dir", "results_dir"]])
    checks, _, _ = run_node_checks({"preflight": spec}, node="n1", job="1", nodes=["n1"])
    assert not any(c["id"].startswith("storage.separate.") for c in checks)
    spec["storage"].insert(0, {"id": "data_dir", "path": str(tmp_path / "data"), "required_free_bytes": 0})
    checks, _, _ = run_node_checks({"preflight": spec}, node="n1", job="1", nodes=["n1"])
    (sep,) = [c for c in checks if c["id"].startswith("storage.separate.")]
    assert sep["id"] == "storage.separate.data_dir.results_dir" and sep["status"] == "error"


def test_node_main_writes_an_index_line_and_the_full_report(tmp_path, monkeypatch):
    from mlps_slurm.rundir import RunDirectory, atomic_write_json

    run = RunDirectory(tmp_path / "run")
    (run.preflight / "nodes").mkdir(parents=True)
    atomic_write_json(run.manifest_path, {**MANIFEST_HEAD, "preflight": spec_for(tmp_path / "ckpt", tmp_path)})
    monkeypatch.setenv("SLURMD_NODENAME", "n1")
    monkeypatch.setenv("SLURM_JOB_ID", "5")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "n1")
    started = time.monotonic()
    assert node_main(run) == 0
    assert time.monotonic() - started < 2  # the node check is on the critical path of every run
    import json

    index_line, full_line = (run.preflight / "nodes" / "n1.json").read_bytes().splitlines()
    index, full = json.loads(index_line), json.loads(full_line)
    assert index["node"] == "n1" and index["slurm_job_id"] == "5" and index["findings"] == []
    assert index["passed"].split() == [c["id"] for c in full["checks"]]
    assert list(full)[-1] == "checks"  # gather appends its checks to the bytes
    assert full["facts"]["cpu"]["logical"] == os.cpu_count()
    assert stat.S_IMODE((run.preflight / "nodes" / "n1.json").stat().st_mode) == 0o644


def test_writable_check_says_when_the_preflight_created_the_directory(tmp_path):
    spec = spec_for(tmp_path / "new" / "ckpt", tmp_path)
    checks, _, shared = run_node_checks({"preflight": spec}, node="n1", job="1", nodes=["n1"])
    writable = {c["id"]: c for c in checks}
    assert writable["storage.checkpoint_dir.writable"]["created"] is True  # although the token made it first
    assert writable["storage.results_dir.writable"]["created"] is False
    assert shared["dirs"]["checkpoint_dir"]["token"] is True
