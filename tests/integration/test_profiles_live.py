"""Profiles against the running local cluster: validate --live, init --from-cluster, submit --test-only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlps_slurm", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def apart(tmp_path: Path) -> str:
    """A results directory on another filesystem than the localhost profile's data (~, on /): the tmpfs /dev/shm,
    as in the profile itself. Validation only looks at it; nothing is created there."""
    return f"storage.results_dir=/dev/shm/mlps-slurm-test-{tmp_path.name}/runs"


def validate(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = ["profiles", "validate", "localhost", "--live", "-o", apart(tmp_path)]
    for override in overrides:
        args += ["-o", override]
    return cli(*args)


def fail_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("FAIL")]


def test_localhost_profile_passes_live_validation(tmp_path):
    proc = validate(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   slurm.partition: preflight, datagen, run, finalize jobs go to partition 'debug' (up)" in proc.stdout
    assert "ok   slurm: sbatch --test-only accepts the options of the preflight, datagen, run, finalize jobs" in proc.stdout
    assert "FAIL" not in proc.stdout


def test_missing_partition_fails_live_validation_by_name(tmp_path):
    proc = validate(tmp_path, "slurm.partitions.run=gpu-a100")
    assert proc.returncode == 2
    assert fail_lines(proc) == ["FAIL slurm.partitions.run: partition 'gpu-a100' (run job) does not exist on this "
                                "cluster; existing partitions: debug; set slurm.partitions.run to one of them"]


def test_missing_partition_of_every_job_is_reported_once(tmp_path):
    proc = validate(tmp_path, "slurm.partition=nope")
    assert proc.returncode == 2
    assert fail_lines(proc) == ["FAIL slurm.partition: partition 'nope' (preflight, datagen, run, finalize jobs) "
                                "does not exist on this cluster; existing partitions: debug; set slurm.partition to "
                                "one of them"], proc.stdout
    assert "1 live check(s) failed" in proc.stderr


def test_missing_reservation_fails_live_validation(tmp_path):
    proc = validate(tmp_path, "slurm.reservation=mlps-no-such-reservation")
    assert proc.returncode == 2
    assert fail_lines(proc) == ["FAIL slurm.reservation: reservation 'mlps-no-such-reservation' does not exist on "
                                "this cluster (existing: none); set slurm.reservation to one of them, or null"], \
        proc.stdout


def test_constraint_feature_missing_on_the_nodes(tmp_path):
    proc = validate(tmp_path, "slurm.constraint=nvme&ib")
    assert proc.returncode == 2
    assert fail_lines(proc) == ["FAIL slurm.constraint: features nvme, ib on no node of partition 'debug' "
                                "(preflight, datagen, run, finalize jobs); its nodes have: no features; use those "
                                "or set slurm.constraint: null"], proc.stdout


def test_gres_missing_on_the_nodes(tmp_path):
    proc = validate(tmp_path, "slurm.gres=gpu:4")
    assert proc.returncode == 2
    assert fail_lines(proc) == ["FAIL slurm.gres: no node of partition 'debug' (datagen, run jobs) offers gres "
                                "gpu:4; its nodes have: no gres; use those or set slurm.gres: null"], proc.stdout


def test_launcher_mpi_is_one_srun_lists(tmp_path):
    # Every value launcher.mpi accepts (pmix, pmi2, none) is built into the local cluster's srun: the refusal of
    # one it lacks is tested with a fake backend (tests/unit/test_profile_live.py).
    listed = subprocess.run(["srun", "--mpi=list"], capture_output=True, text=True, timeout=60)
    assert "pmi2" in listed.stdout + listed.stderr
    proc = validate(tmp_path, "launcher.mpi=pmi2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   launcher.mpi: srun offers --mpi=pmi2" in proc.stdout


def test_python_that_does_not_run(tmp_path):
    proc = validate(tmp_path, f"environment.python={tmp_path}/venv/bin/python")
    assert proc.returncode == 2
    assert fail_lines(proc) == [f"FAIL environment.python: {tmp_path}/venv/bin/python does not run on this login "
                                f"node ({tmp_path}/venv/bin/python: No such file or directory); set "
                                "environment.python to the jobs' interpreter (the venv's bin/python, as the nodes "
                                "see it)"], proc.stdout
    ok = validate(tmp_path, f"environment.python={sys.executable}")
    assert f"ok   environment.python: {sys.executable} runs (Python 3." in ok.stdout


def test_python_in_a_container_is_left_to_the_preflight(tmp_path):
    image = tmp_path / "mlps.sif"
    proc = validate(tmp_path, "container.runtime=apptainer", f"container.image={image}",
                    "environment.python=/opt/venv/bin/python")
    assert "skip environment.python: /opt/venv/bin/python runs inside the container (apptainer image " \
           f"{image}): the preflight checks it there" in proc.stdout


def test_modules_of_the_module_system(tmp_path):
    # This machine has no Lmod: a stand-in `module` function, sourced as environment.module_init is on sites whose
    # jobs do not start with modules set up, answers is-avail for openmpi/4.1 only.
    init = tmp_path / "module-init.sh"
    init.write_text('module() { [ "$1" = is-avail ] && [ "$2" = openmpi/4.1 ]; }\n')
    proc = validate(tmp_path, f"environment.module_init={init}", "environment.modules=[openmpi/4.1, hdf5/9]")
    assert "ok   environment.modules: module openmpi/4.1 is available" in proc.stdout
    assert fail_lines(proc) == ["FAIL environment.modules: module hdf5/9 is not available (`module avail hdf5/9`); "
                                "fix its name or version in environment.modules"], proc.stdout
    without = validate(tmp_path, "environment.modules=[openmpi/4.1]")
    assert "skip environment.modules: not checked: this login node has no module system" in without.stdout


def test_templates_dir_with_an_unknown_template(tmp_path):
    site = tmp_path / "templates"
    site.mkdir()
    (site / "finalize.sbatch.j2").write_text("{% include '_header.sbatch.j2' %}\n{{ finalize | argv }}\n")
    (site / "checkpoint.sbatch.j2").write_text("#!/bin/bash\n")
    proc = validate(tmp_path, f"templates.dir={site}")
    assert f"ok   templates.dir: {site}/finalize.sbatch.j2 overrides the packaged finalize.sbatch.j2" in proc.stdout
    assert [line.split(";")[0] for line in fail_lines(proc)] == [
        f"FAIL templates.dir: {site}/checkpoint.sbatch.j2 overrides no template mlps-slurm knows"], proc.stdout


def test_data_and_results_on_one_filesystem(tmp_path):
    proc = cli("profiles", "validate", "localhost", "--live", "-o", f"storage.results_dir={tmp_path}/runs",
               "-o", f"storage.data_dir={tmp_path}/data", "-o", f"storage.kvcache_dir={tmp_path}/kv")
    assert proc.returncode == 2
    fails = fail_lines(proc)
    assert [line.split(":")[0] for line in fails] == ["FAIL storage.data_dir / storage.results_dir",
                                                      "FAIL storage.kvcache_dir / storage.results_dir"], proc.stdout
    assert f"{tmp_path}/data and {tmp_path}/runs are on one filesystem" in fails[0]
    assert "MLPerf Storage wants the training data apart from the results" in fails[0]


def test_sbatch_refusal_names_the_extra_argument_it_came_from(tmp_path):
    proc = validate(tmp_path, 'slurm.extra_sbatch_args=["--gres=gpu:1"]')
    assert proc.returncode == 2
    assert fail_lines(proc) == ["FAIL slurm.extra_sbatch_args: preflight, datagen, run, finalize jobs: sbatch refused "
                                "--gres=gpu:1 (Invalid generic resource (gres) specification); use generic resources "
                                "the partition's nodes have (`sinfo -o '%P %G'`), or null"], proc.stdout


def test_too_many_nodes_fails_live_validation(tmp_path):
    proc = validate(tmp_path, "nodes.count=64")
    assert proc.returncode == 2
    # sbatch refuses them too ("Requested node configuration is not available"): said once, by this check
    assert fail_lines(proc) == ["FAIL nodes.count: partition 'debug' (datagen, run jobs) has 4 nodes, the profile "
                                "asks for 64; lower nodes.count to 4"], proc.stdout


def test_init_from_cluster_writes_a_profile_that_validates_live(tmp_path):
    out = tmp_path / "here.yaml"
    proc = cli("profiles", "init", "--from-cluster", "--name", "here", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "partition: debug" in text and "count: 4" in text
    check = cli("profiles", "validate", str(out), "--live", "-o", apart(tmp_path))
    assert check.returncode == 0, check.stdout + check.stderr


def test_submit_test_only_queues_nothing_and_keeps_no_run(tmp_path):
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    proc = cli("submit", "checkpointing", "--model", "llama3-8b", "--test-only", "--results-dir",
               str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr
    assert "checkpointing  sbatch: Job" in proc.stdout and "in partition debug" in proc.stdout
    assert "nothing was queued" in proc.stdout
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert set(after) <= set(before)
    assert not (tmp_path / "runs").exists()


def test_submit_test_only_reports_a_refused_job(tmp_path):
    proc = cli("submit", "checkpointing", "--model", "llama3-8b", "--test-only", "--results-dir",
               str(tmp_path / "runs"), "-o", "slurm.partitions.run=nosuchpart")
    assert proc.returncode == 1
    assert "checkpointing  REFUSED: slurm.partitions.run: sbatch refused --partition=nosuchpart (invalid partition " \
           "specified: nosuchpart; Invalid partition name specified); set it to a partition of this cluster" \
           in proc.stdout
    assert "mlps-test-only-" not in proc.stdout  # not the scratch script, gone by now


def test_submit_test_only_names_the_refused_reservation(tmp_path):
    proc = cli("submit", "checkpointing", "--model", "llama3-8b", "--test-only", "--results-dir",
               str(tmp_path / "runs"), "-o", "slurm.reservation=mlps-no-such-reservation")
    assert proc.returncode == 1
    refused = [line for line in proc.stdout.splitlines() if "REFUSED" in line]
    assert len(refused) == 3, proc.stdout  # preflight, checkpointing, finalize
    assert all("REFUSED: slurm.reservation: sbatch refused --reservation=mlps-no-such-reservation (Requested "
               "reservation is invalid)" in line for line in refused), proc.stdout
