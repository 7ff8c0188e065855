"""A chain as a cluster user runs it: not root, the default profile (no --profile, no --results-dir), the site's
Python (Debian's /usr/bin/python3 with the project's packages on PYTHONPATH, as a shared software tree would
provide them), while another user's job holds a CPU on the same nodes: the finalize says the nodes were shared."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sysconfig
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parent.parent.parent
SITE_PYTHON = "/usr/bin/python3"


@contextmanager
def searchable_by_others(path: Path) -> Iterator[None]:
    """`path` readable and every directory on the way searchable by other users for the test (CI clones into a
    0700 `mktemp -d` directory, and a checkout under /root is not reachable either; Python lists a PYTHONPATH entry,
    so it needs read too): only the missing bits, taken away again afterwards."""
    changed = []
    try:
        for d, bits in [(path, 0o005), *((p, 0o001) for p in path.parents)]:
            mode = stat.S_IMODE(os.stat(d).st_mode)
            if mode & bits != bits:
                os.chmod(d, mode | bits)
                changed.append((d, mode))
        yield
    finally:
        for d, mode in reversed(changed):
            os.chmod(d, mode)


@pytest.fixture
def sleeper():
    """Another user's job on every node: one CPU each, for longer than the chain needs."""
    proc = subprocess.run(["sbatch", "--parsable", "-N4", "--ntasks-per-node=1", "-J", "other-users-job",
                           "-o", "/dev/null", "--wrap", "sleep 300"], capture_output=True, text=True, check=True)
    job = proc.stdout.strip().split(";")[0]
    subprocess.run(["scontrol", "wait_job", job], capture_output=True, timeout=60)  # returns once it runs
    yield job
    subprocess.run(["scancel", job], capture_output=True)


def test_a_user_runs_a_chain_with_the_default_profile_and_shared_nodes_are_reported(ci_user, sleeper):
    site_packages = Path(sysconfig.get_paths()["purelib"])
    if not Path(SITE_PYTHON).is_file():
        pytest.skip(f"no {SITE_PYTHON}, the site Python this test runs the tool with")
    with searchable_by_others(ROOT), searchable_by_others(site_packages):
        run_as_user(ci_user, sleeper, site_packages)


def run_as_user(ci_user: str, sleeper: str, site_packages: Path) -> None:
    env = {"HOME": f"/home/{ci_user}", "USER": ci_user, "PATH": os.environ["PATH"],
           "PYTHONPATH": f"{site_packages}:{ROOT}"}
    if os.environ.get("SLURM_CONF"):
        env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    argv = ["runuser", "-u", ci_user, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()), SITE_PYTHON,
            "-m", "mlps_slurm", "submit", "checkpointing", "--model", "llama3-8b", "--scale", "0.0005",
            "--seconds-between-checkpoints", "0", "-o", f"environment.python={SITE_PYTHON}", "--wait",
            "--timeout", "300", "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=400, cwd="/")
    doc = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    run = Path(doc.get("run_dir", "/nonexistent"))
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # the default profile's per-user top directory (no shared parent whose owner decides who may run)
        assert run.parent.parent.name == f"mlps-slurm-{ci_user}" and run.stat().st_uid != 0
        results = json.loads((run / "results" / "results.json").read_text())
        assert results["status"] == "success"
        shared = results["shared_nodes"]
        assert shared["checked"] and sleeper in [j["job_id"] for j in shared["jobs"]], shared
        job = next(j for j in shared["jobs"] if j["job_id"] == sleeper)
        assert job["user"] == "root" and job["nodes"] == ["n1", "n2", "n3", "n4"]
        assert job["overlaps"][0]["job"] == "checkpointing" and job["overlaps"][0]["seconds"] > 0
        assert f"shared with job {sleeper} (other-users-job, root)" in (run / "results" / "results.txt").read_text()
    finally:
        if run.is_dir():
            shutil.rmtree(run.parent.parent, ignore_errors=True)
