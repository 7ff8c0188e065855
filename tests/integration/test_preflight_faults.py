"""The preflight job on the real local cluster, with real per-node faults.

Each emulated node's slurmd runs in its own mount namespace (bin/mlps-local-cluster), so a bind mount made with
`mlps-local-cluster node-exec n3 -- mount ...` changes what n3, and only n3, sees: a read-only checkpoint directory,
a node-local directory where the others share one, an executable that is not there. No test hook exists in the
product code; the preflight finds these the way it would on a real cluster. Every fault is undone in a `finally`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from mlps_slurm import install_hints
from mlps_slurm.steps.preflight import node_facts

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "bin" / "mlps-local-cluster"
NODES = ["n1", "n2", "n3", "n4"]
FAULTY = "n3"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("per-node faults are mounts inside a node's namespace: root only")


def run(args: list, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, **kwargs)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def render(tmp_path: Path, *overrides: str) -> Path:
    results = tmp_path / "runs"
    run([sys.executable, "-m", "mlps_slurm", "render", "checkpointing", "--model", "llama3-8b", "--scale", "0.001",
         "--results-dir", results, "-o", f"storage.checkpoint_dir={tmp_path / 'ckpt'}", *overrides], cwd=ROOT)
    (run_dir,) = [p for p in results.iterdir() if not p.name.startswith(".")]
    return run_dir


def submit_preflight(run_dir: Path, env: dict[str, str] | None = None, timeout: float = 90) -> tuple[str, dict, str]:
    """sbatch scripts/00-preflight.sbatch alone; wait for it; return (final state, preflight.json, .txt)."""
    job = run(["sbatch", "--parsable", run_dir / "scripts" / "00-preflight.sbatch"],
              env={**os.environ, **(env or {})}).stdout.strip().split(";")[0]
    deadline, state = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        info = run(["scontrol", "show", "job", "-o", job]).stdout
        state = re.search(r"JobState=(\S+)", info).group(1)
        if state in FINAL:
            break
        time.sleep(0.25)
    else:
        subprocess.run(["scancel", job])
        pytest.fail(f"preflight job {job} not finished after {timeout:.0f} s (state {state})")
    pre = run_dir / "preflight"
    logs = "\n".join(p.read_text() for p in (run_dir / "logs").glob("*"))
    assert (pre / "preflight.json").is_file(), f"job {job} {state} wrote no preflight.json\n{logs}"
    return state, json.loads((pre / "preflight.json").read_text()), (pre / "preflight.txt").read_text()


def node_exec(node: str, *cmd: str) -> None:
    run([TOOL, "node-exec", node, "--", *cmd])


@contextmanager
def mounted_on(node: str, *mount_args: str, target: Path | str) -> Iterator[None]:
    """A mount inside one node's namespace, always unmounted again."""
    node_exec(node, "mount", *mount_args)
    try:
        yield
    finally:
        node_exec(node, "umount", str(target))


def failures(summary: dict) -> set[tuple[str, str]]:
    return {(f["node"], f["check"]) for f in summary["failures"]}


def statuses(summary: dict, check_id: str) -> dict[str, str]:
    return {n: next(c["status"] for c in r["checks"] if c["id"] == check_id) for n, r in summary["reports"].items()}


def test_a_good_run_passes_on_every_node_with_facts(tmp_path: Path) -> None:
    run_dir = render(tmp_path)
    state, summary, text = submit_preflight(run_dir)
    assert state == "COMPLETED", text
    assert summary["ok"] and summary["failures"] == [], text
    assert summary["nodes"] == NODES
    for node in NODES:
        report = summary["reports"][node]
        facts = report["facts"]
        assert {"os", "kernel", "cpu", "memory", "nics", "mounts"} <= set(facts)
        assert facts["cpu"]["logical"] == os.cpu_count()
        assert facts["memory"]["total_bytes"] > 0
        assert facts["os"]["id"] == node_facts.os_facts()["id"]
        assert any(m["mount_point"] == "/" or str(tmp_path).startswith(m["mount_point"]) for m in facts["mounts"])
        assert report["seconds"] < 2.0, f"the node check took {report['seconds']} s on {node}"
        checks = {c["id"]: c for c in report["checks"]}
        for cid in ("storage.checkpoint_dir.writable", "storage.checkpoint_dir.shared",
                    "storage.results_dir.shared", "executable.srun", "python.import.mpi4py"):
            assert checks[cid]["status"] == "pass", checks[cid]
        # One clock, measured through the MPI step: the offsets must be tiny.
        assert checks["clock.skew"]["method"] == "mpi ping-pong"
        assert abs(checks["clock.skew"]["offset_s"]) < 0.5
    assert summary["cluster_checks"][0]["id"] == "mpi.collective"
    assert summary["cluster_checks"][0]["status"] == "pass"
    assert text.startswith("preflight: PASSED on 4 node(s): n[1-4]")
    assert "  storage.checkpoint_dir.shared: n[1-4]" in text
    # The tokens are cleaned up: nothing of the preflight is left in the checkpoint directory.
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_b_read_only_checkpoint_dir_on_one_node_fails_that_node_only(tmp_path: Path) -> None:
    run_dir = render(tmp_path)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    node_exec(FAULTY, "mount", "--bind", str(ckpt), str(ckpt))
    try:
        node_exec(FAULTY, "mount", "-o", "remount,bind,ro", str(ckpt))
        state, summary, text = submit_preflight(run_dir)
    finally:
        node_exec(FAULTY, "umount", str(ckpt))
    assert state == "FAILED"
    assert failures(summary) == {(FAULTY, "storage.checkpoint_dir.writable")}, text
    (failure,) = summary["failures"]
    assert "Read-only file system" in failure["message"] and FAULTY in failure["message"]
    assert f"errors\n  storage.checkpoint_dir.writable: {FAULTY}\n" in text
    # The other nodes still share the directory among themselves.
    assert statuses(summary, "storage.checkpoint_dir.shared") == {
        "n1": "pass", "n2": "pass", FAULTY: "warning", "n4": "pass"}


def test_c_missing_executable_on_one_node_gives_an_install_hint(tmp_path: Path) -> None:
    # launcher.kind=mpirun makes mpirun a required executable (srun is needed by every job on the cluster, so
    # hiding it could break other tests' jobs on n3; mpirun is only run from a job's first node).
    run_dir = render(tmp_path, "-o", "launcher.kind=mpirun")
    mpirun = os.path.realpath("/usr/bin/mpirun")
    os_info = node_facts.os_facts()  # the emulated nodes run this host's OS
    manager = install_hints.package_manager(os_info["id"], os_info["id_like"], os_info["version_id"])
    expected = install_hints.install_command(manager, [install_hints.EXECUTABLE_PACKAGES["mpirun"][manager]])
    # Jobs run as root here; Open MPI refuses root without these.
    env = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    with mounted_on(FAULTY, "--bind", "/dev/null", mpirun, target=mpirun):
        state, summary, text = submit_preflight(run_dir, env)
    assert state == "FAILED"
    assert failures(summary) == {(FAULTY, "executable.mpirun")}, text
    (failure,) = summary["failures"]
    assert failure["hint"].startswith(f"as root: `{expected}`"), failure
    assert expected in text
    assert statuses(summary, "executable.mpirun") == {"n1": "pass", "n2": "pass", FAULTY: "error", "n4": "pass"}


def test_d_node_local_directory_on_one_node_fails_shared_visibility(tmp_path: Path) -> None:
    run_dir = render(tmp_path)
    ckpt, local = tmp_path / "ckpt", tmp_path / f"{FAULTY}-local-disk"
    ckpt.mkdir()
    local.mkdir()
    with mounted_on(FAULTY, "--bind", str(local), str(ckpt), target=ckpt):
        state, summary, text = submit_preflight(run_dir)
    assert state == "FAILED"
    assert failures(summary) == {(FAULTY, "storage.checkpoint_dir.shared")}, text
    (failure,) = summary["failures"]
    assert f"{ckpt} on {FAULTY} is not the directory the other nodes see" in failure["message"]
    assert f"saw 0 of 3 other nodes' tokens and 3 of 3 nodes did not see {FAULTY}'s token" in failure["message"]
    assert statuses(summary, "storage.checkpoint_dir.shared") == {"n1": "pass", "n2": "pass", FAULTY: "error",
                                                                  "n4": "pass"}
    # Writable and on the same filesystem type: only the token exchange can tell the difference.
    assert statuses(summary, "storage.checkpoint_dir.writable") == dict.fromkeys(NODES, "pass")


def test_e_mpi_that_cannot_start_fails_the_collective_and_every_node_is_still_checked(tmp_path: Path) -> None:
    # With srun the node checks and the collective share one step; an MPI that cannot start (a PML that does not
    # exist) fails that step after each task wrote its node report, the script checks the nodes again on their own,
    # and gather names the collective, not four missing nodes.
    run_dir = render(tmp_path)
    state, summary, text = submit_preflight(run_dir, {"OMPI_MCA_pml": "no-such-pml"})
    logs = "\n".join(p.read_text() for p in (run_dir / "logs").glob("*"))
    assert state == "FAILED", text
    assert failures(summary) == {("all", "mpi.collective")}, text
    assert "wrote no" in summary["failures"][0]["message"], text
    assert sorted(summary["reports"]) == NODES, text
    assert "checking the nodes on their own" in logs, logs
    assert statuses(summary, "storage.checkpoint_dir.writable") == dict.fromkeys(NODES, "pass")
