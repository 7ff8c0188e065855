"""Training rules: the datasize formula, the parameter lists, and result trees of DLIO summaries (good and bad)."""

from __future__ import annotations

import math

import pytest

from mlps_slurm.benchmarks.training import results as train_results
from mlps_slurm.benchmarks.training import rules as train
from mlps_slurm.rules.common import SeparateFilesystems, check_separate_filesystems
from mlps_slurm.rules.core import Verdict, combine
from mlps_slurm.rules.facts import FilesystemIdentity
from mlps_slurm.verify import verify_run
from tests.unit import rules_corpus as corpus


def verdict_of(findings, rule_id):
    matching = [f for f in findings if f.rule_id == rule_id]
    assert matching, f"no {rule_id} finding in {[f.rule_id for f in findings]}"
    return combine(matching)


def plan(**changes):
    base = dict(model="unet3d", accelerator="b200", num_accelerators=8, num_hosts=1, client_memory_gb=64.0,
                num_files_train=28000)
    return train.TrainingPlan(**{**base, **changes})


@pytest.mark.parametrize("model,acc,accels,hosts,mem,expected", [
    # 500 steps x batch 7 x 8 accelerators = 28,000 samples beats 5 x 64 GiB of 146.6 MB records (2,344).
    ("unet3d", "b200", 8, 1, 64.0, 28000),
    # 4 hosts x 1 TiB: 5 x 4 TiB / 146,600,628 B = 149,993.6 -> 149,994 files.
    ("unet3d", "b200", 32, 4, 1024.0, math.ceil(4 * 1024 * 5 * 2**30 / 146_600_628)),
    # retinanet on mi355, batch 32: 500 x 32 x 16 = 256,000 samples vs 2 x 512 GiB x 5 / 322,957 B.
    ("retinanet", "mi355", 16, 2, 512.0, max(256000, math.ceil(2 * 512 * 5 * 2**30 / 322_957))),
    # resnet50 on h100: 1,251 samples per file.
    ("resnet50", "h100", 8, 1, 64.0, math.ceil(max(500 * 400 * 8, 64 * 5 * 2**30 / 114_660.07) / 1251)),
])
def test_required_files_matches_the_hand_computed_value(model, acc, accels, hosts, mem, expected):
    p = plan(model=model, accelerator=acc, num_accelerators=accels, num_hosts=hosts, client_memory_gb=mem)
    assert train.required_files(p, mem * hosts) == expected


@pytest.mark.parametrize("changes,rule_id,expected", [
    ({}, "train.workload", Verdict.CLOSED),
    ({"model": "retinanet", "accelerator": "mi355", "num_files_train": 10**6}, "train.workload", Verdict.CLOSED),
    ({"model": "resnet50", "accelerator": "h100"}, "train.workload", Verdict.INVALID),
    ({"model": "bert"}, "train.workload", Verdict.INVALID),
    ({"num_files_train": 27999}, "train.dataset_size", Verdict.INVALID),
    ({"client_memory_gb": None}, "train.dataset_size", Verdict.INVALID),
    ({"num_accelerators": 12, "num_hosts": 5}, "train.hosts_homogeneous", Verdict.INVALID),
    ({"params": {"reader.read_threads": 8, "++workload.dataset.num_subfolders_train": 2}}, "train.params",
     Verdict.CLOSED),
    ({"params": {"dataset.format": "npz"}}, "train.params", Verdict.OPEN),
    ({"params": {"reader.odirect": True}}, "train.params", Verdict.CLOSED),
    ({"model": "retinanet", "accelerator": "b200", "params": {"reader.odirect": True}}, "train.params",
     Verdict.OPEN),
    ({"params": {"train.epochs": 2}}, "train.params", Verdict.INVALID),
    ({"params": {"dataset.skip_listing": True}}, "train.params", Verdict.CLOSED),  # tool-injected
    ({"scale": 0.1}, "train.scaled", Verdict.INVALID),
])
def test_plan_rules(changes, rule_id, expected):
    assert verdict_of(train.plan_findings(plan(**changes)), rule_id) is expected


def test_good_chain_is_closed(tmp_path):
    v = verify_run(corpus.training_run(tmp_path))
    assert v.usable and v.verdict is Verdict.CLOSED, v.findings
    assert v.metrics["scored_runs"] == 5 and v.metrics["au_mean_percent"] == pytest.approx(95.0)


@pytest.mark.parametrize("kwargs,rule_id,expected", [
    ({"model": "resnet50", "accelerator": "h100"}, "train.workload", Verdict.INVALID),
    ({"num_files_train": 1000, "generated_files": 1000}, "train.dataset_size", Verdict.INVALID),
    ({"generated_files": 20000}, "train.datagen_covers", Verdict.INVALID),
    ({"runs": 5}, "train.run_count", Verdict.INVALID),
    ({"runs": 7}, "train.run_count", Verdict.INVALID),
    ({"gap_s": 3600.0}, "train.runs_consecutive", Verdict.INVALID),
    ({"gap_s": -60.0}, "train.runs_consecutive", Verdict.INVALID),
    ({"au": 80.0}, "train.au_threshold", Verdict.INVALID),
    ({"params": {"dataset.format": "npz"}}, "train.params", Verdict.OPEN),
    ({"params": {"train.epochs": "1"}}, "train.params", Verdict.INVALID),
    ({"scale": 0.1}, "train.scaled", Verdict.INVALID),
    ({"same_filesystem": True}, "storage.separate_filesystems", Verdict.INVALID),
    ({"bad_summary": 2}, "train.summary", Verdict.INVALID),
])
def test_bad_chains_are_flagged_by_the_right_rule(tmp_path, kwargs, rule_id, expected):
    v = verify_run(corpus.training_run(tmp_path, **kwargs))
    assert verdict_of(v.findings, rule_id) is expected


def test_truncated_summary_makes_the_chain_unusable_naming_the_file(tmp_path):
    run = corpus.training_run(tmp_path, bad_summary=3)
    v = verify_run(run)
    assert not v.usable
    assert any(str(run / "raw/training/unet3d/run/03/summary.json") in p for p in v.problems)


def test_dlio_overrides_parse_into_workload_keys():
    params = train_results.params_from_overrides(["workload=unet3d_b200", "++workload.reader.read_threads=8",
                                                  "hydra.run.dir=/x", "+workload.dataset.num_files_train=10"])
    assert params == {"reader.read_threads": "8", "dataset.num_files_train": "10"}


def test_summary_without_end_is_a_problem_not_a_crash():
    r = train_results.run_from_summary("00", {"start": "2027-01-15T10:00:00", "metric": {}})
    assert r.problem and "end" in r.problem and "train_au_mean_percentage" in r.problem


def fs(device=None, mount=None):
    return FilesystemIdentity("/p", device, "lustre", mount)


@pytest.mark.parametrize("record,expected", [
    (SeparateFilesystems("data_dir", "/data", "results_dir", "/results", {"n1": fs("a")}, {"n1": fs("b")}),
     Verdict.CLOSED),
    (SeparateFilesystems("data_dir", "/data", "results_dir", "/results", {"n1": fs("a")}, {"n1": fs("a")}),
     Verdict.INVALID),
    (SeparateFilesystems("data_dir", "/data", "results_dir", "/results", {"n1": fs(mount="/m")},
                         {"n1": fs(mount="/m")}), Verdict.INVALID),
    (SeparateFilesystems("data_dir", "/data", "results_dir", "/results"), Verdict.OPEN),  # no facts: no evidence
    (SeparateFilesystems("data_dir", "/data", "results_dir", "/data/results"), Verdict.INVALID),  # nested
    (SeparateFilesystems("data_dir", "/data", "results_dir", "/data/"), Verdict.INVALID),  # the same
    (SeparateFilesystems("data_dir", None, "results_dir", "/results"), Verdict.INVALID),  # unset
])
def test_separate_filesystems(record, expected):
    assert check_separate_filesystems.check(record).verdict is expected
