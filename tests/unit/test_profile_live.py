"""`profiles validate --live` against a FakeClusterBackend (sinfo, scontrol, srun --mpi=list and sbatch --test-only
answers given by each test), and the parsers of the real backend on captured output."""

from __future__ import annotations

import datetime as dt
import getpass
import os
import sys
from pathlib import Path

import pytest

from mlps_slurm.profile import load_profile
from mlps_slurm.profile.live import constraint_features, live_checks, reservation_problems
from mlps_slurm.profile.live_login import (LiveCheck, module_checks, python_checks, separate_filesystem_checks,
                                           template_checks)
from mlps_slurm.profile.refusals import explain_refusal, refusal
from mlps_slurm.slurm import SlurmError
from mlps_slurm.slurm.cli_backend import parse_mpi_list, parse_reservations, parse_sinfo

# `sinfo -h -o "%P|%a|%l|%D|%c|%m|%f|%G"` on a partition of three node types (captured from a 23.02 site, names
# changed): sinfo prints one row per feature/gres set.
HETEROGENEOUS_SINFO = """\
compute*|up|2-00:00:00|120|64|256000|cpu,ib|(null)
compute*|up|2-00:00:00|8|128|512000|cpu,ib,nvme|(null)
gpu|up|1-00:00:00|4|64|512000|gpu,ib,nvme|gpu:a100:4(S:0-1)
gpu|up|1-00:00:00|2|32+|256000|gpu,ib|gpu:v100:2(S:0,1),nvme:1
debug|down|30:00|2|8|16000|(null)|(null)
"""


class FakeClusterBackend:
    """The cluster facts `validate --live` asks for, as the test sets them; sbatch --test-only refuses when
    `refuse` returns sbatch's stderr for the script's options and the extra arguments."""

    def __init__(self, sinfo: str = "debug*|up|infinite|4|4|4000|(null)|(null)\n",
                 conf: dict[str, str] | None = None, reservations: str = "",
                 mpi: str = "MPI plugin types are...\n\tpmix\n\tnone\n\tpmi2\n", refuse=None) -> None:
        self.sinfo, self.conf, self.res, self.mpi = sinfo, conf or {}, reservations, mpi
        self.refuse = refuse or (lambda options, args: None)
        self.test_only: list[tuple[list[str], list[str]]] = []

    def partitions(self):
        return parse_sinfo(self.sinfo)

    def config(self):
        return dict(self.conf)

    def associations(self, kind):
        return {"acct1"} if kind == "account" else {"normal"}

    def reservations(self):
        return parse_reservations(self.res)

    def mpi_plugins(self):
        return parse_mpi_list(self.mpi)

    def submit(self, script: Path, dependencies, extra_args=None, test_only=False, token=None):
        assert test_only, "validate --live must never queue a job"
        options = [line.split(" ", 1)[1] for line in script.read_text().splitlines() if line.startswith("#SBATCH ")]
        self.test_only.append((options, list(extra_args or [])))
        stderr = self.refuse(options, list(extra_args or []))
        if stderr:
            raise SlurmError(f"`sbatch --test-only {script}` failed (exit 1): {stderr}", stderr=stderr)
        return "sbatch: Job 1 to start at 2030-01-01T00:00:00 using 1 processors on nodes n1 in partition debug"


def profile(tmp_path, *overrides: str):
    # OPEN division: the data and the results share tmp_path's filesystem, which then only warns (tested below).
    return load_profile("localhost", [f"storage.results_dir={tmp_path}/runs", "nodes.count=4",
                                      "environment.python=null", "submission.division=open", *overrides])


def fails(checks: list[LiveCheck]) -> list[LiveCheck]:
    return [c for c in checks if not c.ok]


def of(checks: list[LiveCheck], key: str) -> list[LiveCheck]:
    return [c for c in checks if c.key == key]


# --- the backend's parsers
def test_heterogeneous_partition_sums_its_rows():
    parts = {p["name"]: p for p in parse_sinfo(HETEROGENEOUS_SINFO)}
    assert list(parts) == ["compute", "gpu", "debug"]
    assert parts["compute"]["nodes"] == "128" and parts["compute"]["default"] is True
    assert parts["compute"]["cpus"] == "64" and parts["compute"]["memory_mb"] == "256000"
    assert parts["gpu"]["nodes"] == "6" and parts["gpu"]["cpus"] == "32"
    assert [g["features"] for g in parts["compute"]["groups"]] == [["cpu", "ib"], ["cpu", "ib", "nvme"]]
    assert parts["gpu"]["groups"][1]["gres"] == ["gpu:v100:2(S:0,1)", "nvme:1"]
    assert parts["debug"]["state"] == "down" and parts["debug"]["groups"][0]["features"] == []


def test_heterogeneous_partition_has_enough_nodes(tmp_path):
    backend = FakeClusterBackend(HETEROGENEOUS_SINFO)
    checks = live_checks(profile(tmp_path, "slurm.partition=compute", "nodes.count=100"), backend)
    assert of(checks, "nodes.count")[0].ok, of(checks, "nodes.count")
    checks = live_checks(profile(tmp_path, "slurm.partition=compute", "nodes.count=129"), backend)
    assert "has 128 nodes, the profile asks for 129" in of(checks, "nodes.count")[0].message


def test_mpi_list_of_22_05_and_later_releases():
    assert parse_mpi_list("MPI plugin types are...\n\tpmix\n\tnone\n\tcray_shasta\n\tpmi2\n"
                          "specific pmix plugin versions available: pmix_v4\n") == \
        ["pmix", "none", "cray_shasta", "pmi2", "pmix_v4"]
    assert parse_mpi_list("srun: MPI types are...\nsrun: none\nsrun: pmi2\n") == ["none", "pmi2"]
    assert parse_mpi_list("MPI plugin types are...\n    none\n    pmi2\nspecific pmix plugin versions available: "
                          "pmix_v3,pmix_v5\n") == ["none", "pmi2", "pmix_v3", "pmix_v5"]


def test_reservations_parse_one_line_each():
    text = ("ReservationName=maint StartTime=2030-01-01T00:00:00 EndTime=2030-01-01T06:00:00 Duration=06:00:00 "
            "Nodes=n[1-4] NodeCnt=4 Users=root Accounts=(null) State=INACTIVE\n"
            "ReservationName=bench StartTime=2020-01-01T00:00:00 EndTime=2040-01-01T00:00:00 NodeCnt=2 "
            "Users=(null) Accounts=proj1,proj2 State=ACTIVE\n")
    res = parse_reservations(text)
    assert sorted(res) == ["bench", "maint"]
    assert res["bench"]["Accounts"] == "proj1,proj2" and res["maint"]["State"] == "INACTIVE"
    assert parse_reservations("No reservations in the system\n") == {}


# --- partitions: one failure per partition, whatever the number of job kinds sent there
def test_missing_partition_is_reported_once_for_all_its_job_kinds(tmp_path):
    checks = live_checks(profile(tmp_path, "slurm.partition=nope"), FakeClusterBackend(
        refuse=lambda o, a: "sbatch: error: invalid partition specified: nope\n"
                            "allocation failure: Invalid partition name specified"))
    bad = fails(checks)
    assert [c.key for c in bad] == ["slurm.partition"], bad
    assert bad[0].message.startswith("partition 'nope' (preflight, datagen, run, finalize jobs) does not exist")
    assert "existing partitions: debug; set slurm.partition to one of them" in bad[0].message


def test_partition_per_kind_names_its_own_key(tmp_path):
    checks = live_checks(profile(tmp_path, "slurm.partitions.run=gpu-a100"), FakeClusterBackend())
    assert [c.key for c in fails(checks)] == ["slurm.partitions.run"]
    assert "partition 'gpu-a100' (run job) does not exist" in fails(checks)[0].message
    assert "preflight, datagen, finalize jobs go to partition 'debug' (up)" in of(checks, "slurm.partition")[0].message


def test_down_partition_and_time_limit(tmp_path):
    checks = live_checks(profile(tmp_path, "slurm.partition=debug", "slurm.time_limit.run=01:00:00"),
                         FakeClusterBackend(HETEROGENEOUS_SINFO))
    assert "partition 'debug' (preflight, datagen, run, finalize jobs) is down" in of(checks, "slurm.partition")[0].message
    assert "01:00:00 exceeds partition 'debug' MaxTime 30:00" in of(checks, "slurm.time_limit.run")[0].message


# --- reservation
NOW = dt.datetime(2030, 1, 1, 12, 0)


def test_reservation_problems():
    res = {"Users": "alice,bob", "Accounts": "(null)", "EndTime": "2030-01-02T00:00:00", "NodeCnt": "4"}
    assert reservation_problems(res, "alice", None, 4, NOW) == []
    assert "admits users alice,bob, not carol" in reservation_problems(res, "carol", None, 4, NOW)[0]
    assert "it ended at 2030-01-02" in reservation_problems(res, "alice", None, 4, dt.datetime(2030, 2, 1))[0]
    assert "holds 4 nodes, nodes.count asks for 8" in reservation_problems(res, "alice", None, 8, NOW)[0]
    everyone_but = {"Users": "-carol", "EndTime": "2031-01-01T00:00:00"}
    assert reservation_problems(everyone_but, "alice", None, 1, NOW) == []
    assert reservation_problems(everyone_but, "carol", None, 1, NOW)
    by_account = {"Users": "(null)", "Accounts": "proj1", "EndTime": "2031-01-01T00:00:00"}
    assert reservation_problems(by_account, "alice", "proj1", 1, NOW) == []
    assert "not proj2 (set slurm.account" in reservation_problems(by_account, "alice", "proj2", 1, NOW)[0]
    assert "slurm.account is not set" in reservation_problems(by_account, "alice", None, 1, NOW)[0]


def test_reservation_missing_unusable_or_fine(tmp_path):
    me = getpass.getuser()
    text = (f"ReservationName=mine EndTime=2999-01-01T00:00:00 NodeCnt=4 Users={me} Accounts=(null) State=ACTIVE\n"
            "ReservationName=theirs EndTime=2999-01-01T00:00:00 NodeCnt=4 Users=someone-else State=ACTIVE\n"
            f"ReservationName=later EndTime=2999-01-01T00:00:00 StartTime=2998-01-01T00:00:00 NodeCnt=4 Users={me} "
            "State=INACTIVE\n")
    backend = FakeClusterBackend(reservations=text)
    missing = of(live_checks(profile(tmp_path, "slurm.reservation=nores"), backend), "slurm.reservation")
    assert [c.ok for c in missing] == [False]
    assert "reservation 'nores' does not exist on this cluster (existing: later, mine, theirs)" in missing[0].message
    theirs = of(live_checks(profile(tmp_path, "slurm.reservation=theirs"), backend), "slurm.reservation")
    assert not theirs[0].ok and f"admits users someone-else, not {me}" in theirs[0].message
    mine = of(live_checks(profile(tmp_path, "slurm.reservation=mine"), backend), "slurm.reservation")
    assert mine[0].ok and not mine[0].warning and "is active and admits you" in mine[0].message
    later = of(live_checks(profile(tmp_path, "slurm.reservation=later"), backend), "slurm.reservation")
    assert later[0].ok and later[0].warning and "jobs wait for its start at 2998-01-01" in later[0].message


# --- features and gres
def test_constraint_features():
    assert constraint_features("nvme&ib") == (["nvme", "ib"], True)
    assert constraint_features("[rack1|rack2]*2") == (["rack1", "rack2"], False)
    assert constraint_features("a|b") == (["a", "b"], False)


def test_constraint_checked_against_the_partitions_nodes(tmp_path):
    backend = FakeClusterBackend(HETEROGENEOUS_SINFO)
    ok = of(live_checks(profile(tmp_path, "slurm.partition=compute", "slurm.constraint=nvme&ib"), backend),
            "slurm.constraint")
    assert [c.ok for c in ok] == [True]
    missing = of(live_checks(profile(tmp_path, "slurm.partition=compute", "slurm.constraint=gpu"), backend),
                 "slurm.constraint")
    assert [c.ok for c in missing] == [False]
    assert "feature gpu on no node of partition 'compute' (preflight, datagen, run, finalize jobs); its nodes " \
           "have: cpu, ib, nvme" in missing[0].message
    apart = of(live_checks(profile(tmp_path, "slurm.partition=gpu", "slurm.constraint=nvme&cpu"), backend),
               "slurm.constraint")
    assert "feature cpu on no node" in apart[0].message
    split = of(live_checks(profile(tmp_path, "slurm.partition=compute", "slurm.partitions.run=gpu",
                                   "slurm.constraint=nvme&gpu"), backend), "slurm.constraint")
    assert [c.ok for c in split] == [False, True], split  # compute has no gpu feature; gpu has both on one node


def test_gres_checked_on_the_benchmark_jobs_partition(tmp_path):
    backend = FakeClusterBackend(HETEROGENEOUS_SINFO)

    def gres(value, partition="gpu"):
        return of(live_checks(profile(tmp_path, f"slurm.partition={partition}", f"slurm.gres={value}"), backend),
                  "slurm.gres")

    assert [c.ok for c in gres("gpu:4")] == [True]
    assert [c.ok for c in gres("gpu:a100:2")] == [True]
    assert [c.ok for c in gres("gpu:v100:2,nvme:1")] == [True]
    assert [c.ok for c in gres("gpu:v100:4")] == [False]
    assert [c.ok for c in gres("gpu:8")] == [False]
    bad = gres("gpu:1", partition="compute")
    assert [c.ok for c in bad] == [False]
    assert "no node of partition 'compute' (datagen, run jobs) offers gres gpu:1; its nodes have: no gres" \
           in bad[0].message


# --- srun's MPI plugin
def test_launcher_mpi_against_srun_mpi_list(tmp_path):
    backend = FakeClusterBackend(mpi="MPI plugin types are...\n\tnone\n\tpmi2\n")
    bad = of(live_checks(profile(tmp_path, "launcher.mpi=pmix"), backend), "launcher.mpi")
    assert [c.ok for c in bad] == [False]
    assert "srun offers --mpi=none, pmi2, not 'pmix'" in bad[0].message
    assert [c.ok for c in of(live_checks(profile(tmp_path, "launcher.mpi=pmi2"), backend), "launcher.mpi")] == [True]
    assert of(live_checks(profile(tmp_path, "launcher.kind=mpirun"), backend), "launcher.mpi") == []


# --- the jobs' interpreter
def test_python_runs_or_names_the_key(tmp_path):
    ok = python_checks(profile(tmp_path, f"environment.python={sys.executable}"))
    assert ok[0].ok and f"Python {sys.version_info.major}.{sys.version_info.minor}" in ok[0].message
    bad = python_checks(profile(tmp_path, f"environment.python={tmp_path}/venv/bin/python"))
    assert not bad[0].ok and bad[0].key == "environment.python"
    assert f"{tmp_path}/venv/bin/python does not run on this login node (" in bad[0].message
    assert "No such file or directory" in bad[0].message


def test_python_in_a_container_is_left_to_the_preflight(tmp_path):
    checks = python_checks(profile(tmp_path, "environment.python=/opt/venv/bin/python", "container.runtime=apptainer",
                                   "container.image=/images/mlps.sif"))
    assert checks[0].skipped and checks[0].ok
    assert "the preflight checks it there" in checks[0].message


# --- environment modules
def test_modules_skipped_without_a_module_system(tmp_path, monkeypatch):
    monkeypatch.delenv("LMOD_CMD", raising=False)
    monkeypatch.delenv("MODULESHOME", raising=False)
    checks = module_checks(profile(tmp_path, "environment.modules=[openmpi/4.1]"))
    assert [(c.ok, c.skipped) for c in checks] == [(True, True)]
    assert "this login node has no module system" in checks[0].message


def fake_module_init(tmp_path: Path) -> Path:
    """A module system knowing openmpi/4.1 and python/3.11 (is-avail exits 0 for those only)."""
    init = tmp_path / "init.sh"
    init.write_text('module() { [ "$1" = is-avail ] || return 2; case "$2" in openmpi/4.1|python/3.11) return 0;; '
                    'esac; return 1; }\n')
    return init


def test_modules_asked_of_the_module_system(tmp_path):
    init = fake_module_init(tmp_path)
    checks = module_checks(profile(tmp_path, f"environment.module_init={init}",
                                   "environment.modules=[openmpi/4.1, hdf5/1.14]"))
    assert [(c.ok, c.skipped) for c in checks] == [(True, False), (False, False)]
    assert "module hdf5/1.14 is not available" in checks[1].message and checks[1].key == "environment.modules"


def test_module_init_that_does_not_exist(tmp_path):
    checks = module_checks(profile(tmp_path, f"environment.module_init={tmp_path}/nope.sh",
                                   "environment.modules=[openmpi/4.1]"))
    assert [(c.key, c.ok) for c in checks] == [("environment.module_init", False)]


# --- site templates
def test_templates_dir(tmp_path):
    assert "is not a directory" in template_checks(profile(tmp_path, f"templates.dir={tmp_path}/none"))[0].message
    site = tmp_path / "tpl"
    site.mkdir()
    empty = template_checks(profile(tmp_path, f"templates.dir={site}"))
    assert empty[0].ok and empty[0].warning and "overrides nothing" in empty[0].message
    (site / "finalize.sbatch.j2").write_text("{% include '_header.sbatch.j2' %}\n{{ finalize | argv }}\n")
    (site / "finalise.sbatch.j2").write_text("#!/bin/bash\n")
    (site / "preflight.sbatch.j2").write_text("{% if x %}\nunclosed\n")
    checks = {Path(c.message.split(" ")[0].split(":")[0]).name: c for c in
              template_checks(profile(tmp_path, f"templates.dir={site}"))}
    assert checks["finalize.sbatch.j2"].ok
    assert not checks["finalise.sbatch.j2"].ok and "overrides no template mlps-slurm knows" in \
        checks["finalise.sbatch.j2"].message and "finalize.sbatch.j2" in checks["finalise.sbatch.j2"].message
    assert not checks["preflight.sbatch.j2"].ok and "fix the template" in checks["preflight.sbatch.j2"].message


# --- the benchmark data apart from the results
def test_data_and_results_on_one_filesystem(tmp_path):
    same = separate_filesystem_checks(profile(tmp_path, f"storage.data_dir={tmp_path}/data",
                                              f"storage.kvcache_dir={tmp_path}/kv", "submission.division=closed"))
    assert [(c.key, c.ok) for c in same] == [("storage.data_dir / storage.results_dir", False),
                                             ("storage.kvcache_dir / storage.results_dir", False)]
    assert "are on one filesystem" in same[0].message and "(judged by the nearest existing directories)" in \
        same[0].message
    assert "MLPerf Storage wants the training data apart from the results" in same[0].message
    open_division = separate_filesystem_checks(profile(tmp_path, f"storage.data_dir={tmp_path}/data",
                                                       f"storage.kvcache_dir={tmp_path}/kv"))
    assert all(c.ok and c.warning for c in open_division)


def test_data_and_results_apart(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's tmp directory")
    checks = separate_filesystem_checks(load_profile("localhost", [
        f"storage.results_dir={shm}/pt-live-{os.getpid()}/runs", f"storage.data_dir={tmp_path}/data",
        f"storage.kvcache_dir={tmp_path}/kv"]))
    assert [(c.key, c.ok, c.warning) for c in checks] == [("storage.data_dir", True, False),
                                                          ("storage.kvcache_dir", True, False)]


# --- sbatch --test-only: whatever else sbatch refuses, named by the key it came from
def test_sbatch_refusal_of_an_extra_argument_names_that_key(tmp_path):
    def refuse(options, args):
        return "sbatch: error: Invalid generic resource (gres) specification" if "--gres=gpu:1" in args else None

    backend = FakeClusterBackend(refuse=refuse)
    checks = live_checks(profile(tmp_path, 'slurm.extra_sbatch_args=["--gres=gpu:1"]'), backend)
    bad = fails(checks)
    assert [c.key for c in bad] == ["slurm.extra_sbatch_args"]
    assert bad[0].message.startswith("preflight, datagen, run, finalize jobs: sbatch refused --gres=gpu:1 (Invalid "
                                     "generic resource (gres) specification)")
    assert len(backend.test_only) == 4


def test_sbatch_accepting_every_kind_is_one_line(tmp_path):
    backend = FakeClusterBackend()
    checks = live_checks(profile(tmp_path), backend)
    assert fails(checks) == []
    assert "sbatch --test-only accepts the options of the preflight, datagen, run, finalize jobs" in \
        [c.message for c in of(checks, "slurm")]
    run_options = backend.test_only[2][0]
    assert "--partition=debug" in run_options and "--nodes=4" in run_options and "--no-requeue" in run_options


def test_sbatch_refusal_already_reported_is_not_repeated(tmp_path):
    backend = FakeClusterBackend(refuse=lambda o, a: "allocation failure: Invalid feature specification")
    checks = live_checks(profile(tmp_path, "slurm.constraint=nvme"), backend)
    assert [c.key for c in fails(checks)] == ["slurm.constraint"]
    assert "on no node of partition 'debug'" in fails(checks)[0].message


# --- refusals of `submit --test-only` name the profile key
REFUSALS = [
    ("sbatch: error: invalid partition specified: gpu\nallocation failure: Invalid partition name specified",
     ["slurm.partitions.run=gpu"], ["--partition=gpu"], "slurm.partitions.run"),
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
     ["slurm.account=nope"], ["--account=nope"], "slurm.account"),
    ("sbatch: error: Batch job submission failed: Invalid qos specification", ["slurm.qos=nope"], ["--qos=nope"],
     "slurm.qos"),
    ("allocation failure: Requested reservation is invalid", ["slurm.reservation=r"], ["--reservation=r"],
     "slurm.reservation"),
    ("allocation failure: Invalid feature specification", ["slurm.constraint=nvme"], ["--constraint=nvme"],
     "slurm.constraint"),
    ("sbatch: error: Invalid generic resource (gres) specification", ["slurm.gres=gpu:2"], ["--gres=gpu:2"],
     "slurm.gres"),
    ("sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds some limit)",
     ["slurm.time_limit.run=9-00:00:00"], ["--time=9-00:00:00"], "slurm.time_limit.run"),
    ("allocation failure: Requested node configuration is not available", ["nodes.count=4"], ["--nodes=4"],
     "nodes.count"),
]


@pytest.mark.parametrize("stderr, overrides, sbatch, key", REFUSALS, ids=[r[3] for r in REFUSALS])
def test_refusal_names_the_key(tmp_path, stderr, overrides, sbatch, key):
    p = profile(tmp_path, *overrides)
    keys, message = refusal(stderr, ["--job-name=mlps-x", "--output=/r/logs/%x-%j.out", *sbatch], [], p)
    assert keys == [key]
    assert "/tmp/" not in message and message.startswith(f"sbatch refused {sbatch[0]} (")


def test_refusal_of_a_directive_from_extra_directives(tmp_path):
    p = profile(tmp_path, 'slurm.extra_directives=["--constraint=bogus"]')
    line = explain_refusal("allocation failure: Invalid feature specification", ["--constraint=bogus"], [], p)
    assert line.startswith("slurm.extra_directives: sbatch refused --constraint=bogus (Invalid feature "
                           "specification); use features")


def test_refusal_sbatch_does_not_explain(tmp_path):
    line = explain_refusal("sbatch: error: Batch job submission failed: Something new", [], [], profile(tmp_path))
    assert line.startswith("sbatch refused the job: Batch job submission failed: Something new; its options come "
                           "from the profile's slurm.* keys")
