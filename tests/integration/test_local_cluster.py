"""The local Slurm cluster of bin/mlps-local-cluster, exercised with real jobs.

These tests need the cluster up: `make test` starts it; by hand run `bin/mlps-local-cluster up` as root. They never
take it down, because the other integration tests run on it. They assume the default 4 nodes (n1..n4).
"""
from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "bin" / "mlps-local-cluster"
NODES = ["n1", "n2", "n3", "n4"]
JOB_TIMEOUT = 60.0
USABLE = {"idle", "mixed", "allocated", "completing"}
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED"}
UP_HINT = "run `bin/mlps-local-cluster up` as root first (`make test` does that for you)"


def run(args: list, *, timeout: float = 30, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    args = [str(a) for a in args]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        pytest.fail(f"`{shlex.join(args)}` exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    """Fail every test with one clear message when there is no cluster to talk to."""
    if shutil.which("sinfo") is None:
        pytest.fail(f"`sinfo` is not installed, so there is no local Slurm cluster; {UP_HINT}", pytrace=False)
    try:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`sinfo` hung for 20 s: slurmctld is not answering; {UP_HINT}", pytrace=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"the local Slurm cluster is not running (`sinfo` exited {proc.returncode}: "
                    f"{proc.stderr.strip()[-300:]}); {UP_HINT}", pytrace=False)


def node_states() -> dict[str, str]:
    out = run(["sinfo", "-h", "-N", "-o", "%N %T"]).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def slurm_config(key: str) -> str:
    out = run(["scontrol", "show", "config"]).stdout
    match = re.search(rf"^{key}\s*=\s*(\S+)", out, re.M)
    assert match, f"{key} not in `scontrol show config`"
    return match.group(1)


def run_job(name: str, script: str, outdir: Path, *sbatch_args: str, user: str | None = None) -> tuple[str, str]:
    """Submit a batch script, wait for it to end, require COMPLETED; return (job id, its output)."""
    path = outdir / f"{name}.sh"
    path.write_text(script)
    path.chmod(0o755)
    cmd = ["sbatch", "--parsable", f"--job-name=mlps-test-{name}", f"--chdir={outdir}",
           f"--output={outdir}/{name}.%j.out", *sbatch_args, str(path)]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    job_id = run(cmd, cwd=outdir).stdout.strip().split(";")[0]
    info = wait_job(job_id)
    out_file = outdir / f"{name}.{job_id}.out"
    output = out_file.read_text() if out_file.exists() else "<no output file>"
    state = re.search(r"JobState=(\S+)", info).group(1)
    assert state == "COMPLETED", f"job {job_id} ({name}) ended {state}\n--- scontrol\n{info}\n--- output\n{output}"
    return job_id, output


def wait_job(job_id: str, timeout: float = JOB_TIMEOUT) -> str:
    """Poll `scontrol show job` until the job is final. (`sbatch --wait` polls after 2 s, then 8 s, 32 s...:
    a 3 s job would take 10 s.) Returns the one-line record."""
    deadline = time.monotonic() + timeout
    info = ""
    while time.monotonic() < deadline:
        info = run(["scontrol", "show", "job", "-o", job_id]).stdout.strip()
        match = re.search(r"JobState=(\S+)", info)
        if match and match.group(1) in FINAL_STATES:
            return info
        time.sleep(0.25)
    run(["scancel", job_id], check=False)
    queue = run(["squeue"], check=False).stdout
    pytest.fail(f"job {job_id} not finished after {timeout:.0f} s (cancelled)\n--- scontrol\n{info}\n--- squeue\n{queue}")


def test_status_reports_all_nodes_usable() -> None:
    proc = run([TOOL, "status"], check=False)
    assert proc.returncode == 0, f"status exited {proc.returncode}\n{proc.stdout}{proc.stderr}"
    assert re.search(r"slurmctld\s+pid \d+\s+alive", proc.stdout), proc.stdout
    states = node_states()
    assert set(NODES) <= set(states), f"nodes missing: {states}"
    assert all(states[n] in USABLE for n in NODES), f"nodes not usable: {states}"


def test_srun_spans_all_four_nodes(tmp_path: Path) -> None:
    script = """#!/bin/bash
srun --ntasks-per-node=1 bash -c 'echo "node=$SLURMD_NODENAME nodeid=$SLURM_NODEID shm=$OMPI_MCA_btl_vader_backing_directory"'
"""
    _, output = run_job("four-nodes", script, tmp_path, "--nodes=4", "--ntasks-per-node=1")
    rows = [dict(kv.split("=", 1) for kv in line.split()) for line in output.splitlines() if line.startswith("node=")]
    assert sorted(r["node"] for r in rows) == NODES, output
    assert sorted(r["nodeid"] for r in rows) == ["0", "1", "2", "3"], output
    # The TaskProlog gives each emulated node its own Open MPI shared-memory directory.
    assert all(r["shm"].endswith("-" + r["node"]) for r in rows), output


def test_task_prolog_configures_open_mpi_for_a_machine_without_fabric(tmp_path: Path) -> None:
    # ob1 over self/vader/tcp, no UCX one-sided; a value the job set itself is kept.
    script = """#!/bin/bash
export OMPI_MCA_osc=pt2pt
srun -N1 bash -c 'echo "pml=$OMPI_MCA_pml btl=$OMPI_MCA_btl osc=$OMPI_MCA_osc"'
"""
    _, output = run_job("mca", script, tmp_path, "--nodes=1")
    line = next((x for x in output.splitlines() if x.startswith("pml=")), "")
    assert dict(kv.split("=", 1) for kv in line.split()) == {
        "pml": "ob1", "btl": "self,vader,tcp", "osc": "pt2pt"}, output


def test_pmix_fences_run_on_the_ring() -> None:
    # Slurm 22.05's tree collective lets a rank leave MPI_Init before a peer on another emulated node has left the
    # modex fence; that peer then segfaults (perf/mpi_start_failures.py: ~2 % of starts, 0 of 800 on the ring).
    assert slurm_config("PMIxCollFence") == "ring"


MPI_PROGRAM = """
import os
from mpi4py import MPI
comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank() + 1)
print(f"rank={comm.Get_rank()} size={comm.Get_size()} node={os.environ['SLURMD_NODENAME']} sum={total}", flush=True)
"""


def test_mpi_allreduce_across_two_nodes(tmp_path: Path) -> None:
    # Two ranks on each of two emulated nodes: the case that needs both the per-node TmpFS (PMIx) and the
    # per-node vader directory (Open MPI shared memory).
    script = f"""#!/bin/bash
srun --mpi=pmix -N2 --ntasks-per-node=2 {shlex.quote(sys.executable)} -c {shlex.quote(MPI_PROGRAM)}
"""
    _, output = run_job("mpi", script, tmp_path, "--nodes=2", "--ntasks-per-node=2", "--nodelist=n1,n2")
    rows = [dict(kv.split("=", 1) for kv in line.split()) for line in output.splitlines() if line.startswith("rank=")]
    assert sorted(int(r["rank"]) for r in rows) == [0, 1, 2, 3], output
    assert {r["size"] for r in rows} == {"4"}, output
    assert {r["sum"] for r in rows} == {"10"}, output
    assert Counter(r["node"] for r in rows) == {"n1": 2, "n2": 2}, output


@pytest.fixture
def shared_dir():
    """A world-writable output dir. Not tmp_path: pytest's base temp dir is 0700 root, so the job user could not
    even reach it."""
    path = Path(tempfile.mkdtemp(prefix="mlps-local-cluster-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_non_root_user_runs_jobs(ci_user: str, shared_dir: Path) -> None:
    tmpfs = slurm_config("TmpFS")  # e.g. /var/tmp/mlps-local-cluster/tmp/%n
    # Each task writes into its node's TmpFS and /dev/shm dir (both created by root, so they must be 1777),
    # under --mpi=pmix, which makes slurmstepd create the PMIx dirs for this uid in TmpFS.
    script = f"""#!/bin/bash
set -eu
echo "user=$(id -un) slurm_job_user=$SLURM_JOB_USER"
srun --mpi=pmix -N2 --ntasks-per-node=2 bash -c '
  tmpfs=$(echo {shlex.quote(tmpfs)} | sed "s/%n/$SLURMD_NODENAME/")
  for d in "$tmpfs" "$OMPI_MCA_btl_vader_backing_directory"; do
    f=$d/probe.$SLURM_JOB_ID.$SLURM_PROCID
    echo x > "$f" && rm "$f"
  done
  echo "task node=$SLURMD_NODENAME user=$(id -un) writable=yes"'
"""
    _, output = run_job("non-root", script, shared_dir, "--nodes=2", "--ntasks-per-node=2", user=ci_user)
    assert f"user={ci_user} slurm_job_user={ci_user}" in output, output
    tasks = [line for line in output.splitlines() if line.startswith("task ")]
    assert len(tasks) == 4 and all(f"user={ci_user} writable=yes" in t for t in tasks), output
    assert len({t.split()[1] for t in tasks}) == 2, output
    owner = pwd.getpwuid(next(shared_dir.glob("non-root.*.out")).stat().st_uid).pw_name
    assert owner == ci_user


def test_up_again_is_a_fast_noop() -> None:
    if os.geteuid() != 0:
        pytest.skip("`up` needs root")
    pid_file = Path(slurm_config("SlurmctldPidFile"))
    before = pid_file.read_text().strip()
    started = time.monotonic()
    proc = run([TOOL, "up"], timeout=120)
    elapsed = time.monotonic() - started
    assert "already up" in proc.stdout, proc.stdout + proc.stderr
    assert elapsed < 10, f"`up` on a running cluster took {elapsed:.1f} s"
    after = pid_file.read_text().strip()
    assert after == before
    assert Path(f"/proc/{after}/comm").read_text().strip() == "slurmctld"
    assert all(s in USABLE for n, s in node_states().items() if n in NODES)
