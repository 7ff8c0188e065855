"""finalize_training on synthetic run directories: per-run metrics, the scored mean, consecutiveness, caching,
and the reasons a chain has no usable result."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from mlps_slurm.run import create_run
from mlps_slurm.benchmarks.training import engine as eng
from mlps_slurm.benchmarks.training.request import TrainingRequest
from mlps_slurm.benchmarks.training.plan import plan as plan_training
from mlps_slurm.profile import load_profile
from mlps_slurm.rundir import RunDirectory
from mlps_slurm.benchmarks.training.report import table as training_table
from mlps_slurm.benchmarks.training.finalize import consecutive, finalize


def finalize_training(run):
    return finalize(run)[0]

RUN_ID = "training-20261128-120000-abcdef"
T0 = dt.datetime(2026, 11, 28, 17, 0, 0)


def make_run(tmp_path: Path) -> RunDirectory:
    profile = load_profile("localhost", [f"storage.results_dir={tmp_path / 'runs'}",
                                         f"storage.data_dir={tmp_path / 'data'}", "nodes.memory_gb=23"])
    request = TrainingRequest("unet3d", "b200", accelerators_per_node=1, nodes=2, scale=0.024,
                              params=("dataset.record_length=262144", "dataset.record_length_stdev=65536"),
                              allow_invalid=True)
    plan = plan_training(request, profile, run_id=RUN_ID, run_dir=str(tmp_path / "runs" / RUN_ID), python="/py")
    run = create_run(plan, profile, tmp_path / "runs")
    node = {"hostname": "vm", "memory": {"total_bytes": 23 * (1 << 30)}}
    reports = {"n1": {"facts": node}, "n2": {"facts": node}}
    (run.preflight / "preflight.json").write_text(json.dumps(
        {"ok": True, "nodes": ["n1", "n2"], "failures": [], "reports": reports}))
    datagen = run.raw / "training" / "unet3d" / "datagen"
    datagen.mkdir(parents=True)
    (datagen / "datagen.json").write_text(json.dumps(
        {"schema": eng.DATAGEN_SCHEMA, "num_files": 168, "num_subfolders": 0, "bytes": 44_636_298, "problems": [],
         "dataset_dir": str(tmp_path / "data" / "ds"), "reused": False, "seconds": 3.2}))
    return run


def add_run(run: RunDirectory, task: int, start: dt.datetime, seconds: float = 11.0, au: float = 96.0,
            problems: list[str] | None = None) -> Path:
    leaf = run.raw / "training" / "unet3d" / "run" / f"{task:02d}"
    leaf.mkdir(parents=True)
    end = start + dt.timedelta(seconds=seconds)
    (leaf / "summary.json").write_text(json.dumps({
        "start": start.isoformat(), "end": end.isoformat(), "epochs": 5, "num_accelerators": 2, "num_hosts": 2,
        "num_files_train": 168, "host_memory_GB": [23.0, 23.0],
        "metric": {"train_au_mean_percentage": au, "train_au_meet_expectation": "success" if au >= 90 else "fail",
                   "train_throughput_mean_samples_per_second": 78.0, "train_io_mean_MB_per_second": 19.5}}))
    (leaf / "per_epoch_stats.json").write_text(json.dumps({str(e): {"duration": "2.0"} for e in range(1, 6)}))
    # 168 samples per epoch x 5 epochs x 265,692 B mean file size, plus 3% of zip directory reads
    (leaf / "io.json").write_text(json.dumps({"total": {"rchar": int(5 * 44_636_298 * 1.03),
                                                        "read_bytes": 44_636_298},
                                              "cache_drop": [{"method": "posix_fadvise", "resident_before": 1.0,
                                                              "resident_after": 0.0}]}))
    (leaf / "launch.json").write_text(json.dumps({"problems": problems or []}))
    return leaf


def six_runs(run: RunDirectory, gap: float = 5.0, per_task: dict[int, dict] | None = None) -> None:
    start = T0
    for task in range(6):
        add_run(run, task, start, **(per_task or {}).get(task, {}))
        start += dt.timedelta(seconds=11.0 + gap)


def test_six_good_runs(tmp_path):
    run = make_run(tmp_path)
    six_runs(run)
    results = finalize_training(run)
    assert results["status"] == "success" and results["reasons"] == []
    assert [r["role"] for r in results["runs"]] == ["warm-up"] + ["scored"] * 5
    s = results["summary"]
    assert s["scored_runs"] == 5 and s["au_pass_all"] and s["au_mean_percent"] == pytest.approx(96.0)
    assert s["throughput_samples_per_s_mean"] == pytest.approx(78.0)
    assert s["dlio_MB_per_s_mean"] == pytest.approx(78.0 * 262_144 / 1e6)
    assert s["measured_MB_per_s_mean"] == pytest.approx(5 * 44_636_298 * 1.03 / 10.0 / 1e6, rel=1e-6)
    first = results["runs"][1]
    assert first["read_vs_expected"] == pytest.approx(1.03, rel=1e-3)  # 168 files: every sample read each epoch
    assert first["storage_fraction"] == pytest.approx(1 / 5.15, rel=1e-3)
    assert results["consecutive"]["ok"] and len(results["consecutive"]["gaps"]) == 5
    assert results["caching"]["fits_in_client_memory"]
    assert "share one page cache" in results["caching"]["shared_page_cache"]
    assert results["verdict"] == "INVALID"  # scaled and INVALID params: judged, but not submittable
    assert {f["rule_id"] for f in results["rule_findings"]} >= {"train.scaled", "train.params"}
    saved = json.loads((run.results / "results.json").read_text())
    assert saved["verdict"] == "INVALID" and saved["summary"] == s
    text = (run.results / "results.txt").read_text()
    assert "mean AU 96.00% (threshold 90%: PASS)" in text and "consecutive: yes" in text
    assert "posix_fadvise: 100% -> 0% cached" in text and "DLIO MB/s = samples/s" in text


def test_gaps_and_low_au_are_reported(tmp_path):
    run = make_run(tmp_path)
    six_runs(run, gap=5.0, per_task={3: {"au": 80.0}})
    # Move run 05 an hour later: not consecutive.
    summary = run.raw / "training" / "unet3d" / "run" / "05" / "summary.json"
    data = json.loads(summary.read_text())
    for key in ("start", "end"):
        data[key] = (dt.datetime.fromisoformat(data[key]) + dt.timedelta(hours=1)).isoformat()
    summary.write_text(json.dumps(data))
    results = finalize_training(run)
    assert results["status"] == "success"  # every run has a result; the rules judge them
    assert not results["summary"]["au_pass_all"] and results["summary"]["au_failing_runs"] == ["03"]
    assert not results["consecutive"]["ok"]
    bad = [g for g in results["consecutive"]["gaps"] if not g["ok"]]
    assert bad[0]["between"] == ["04", "05"] and bad[0]["gap_s"] > 3600
    text = training_table(results)
    assert "FAIL (03)" in text and "consecutive: NO" in text


def test_a_crashed_run_fails_the_chain_with_the_engine_error(tmp_path):
    run = make_run(tmp_path)
    six_runs(run)
    leaf = run.raw / "training" / "unet3d" / "run" / "02"
    (leaf / "summary.json").unlink()
    (leaf / "engine_error.1.json").write_text(json.dumps(
        {"rank": 1, "host": "n2", "during": "DLIO run 02", "error": "ValueError: bad multiprocessing_context"}))
    add_run(run, 9, T0)  # an unplanned leftover directory is not a planned run
    results = finalize_training(run)
    assert results["status"] == "failed" and not results["submittable"]
    (reason,) = results["reasons"]
    assert reason.startswith("run 02: ") and "summary.json: missing" in reason
    assert "rank 1 on n2 during DLIO run 02: ValueError: bad multiprocessing_context" in reason
    assert results["summary"]["scored_runs"] == 4 and not results["summary"]["au_pass_all"]


def test_shim_problems_make_a_run_unusable(tmp_path):
    run = make_run(tmp_path)
    six_runs(run, per_task={0: {"problems": ["dlio_config/hydra.yaml: DLIO ran workload 'unet3d_b200'"]}})
    results = finalize_training(run)
    assert results["reasons"] == ["run 00: dlio_config/hydra.yaml: DLIO ran workload 'unet3d_b200'"]
    assert results["consecutive"]["runs"] == 5


def test_failed_preflight_is_the_reason(tmp_path):
    run = make_run(tmp_path)
    (run.preflight / "preflight.json").write_text(json.dumps(
        {"ok": False, "nodes": ["n1"], "failures": [{"node": "n1", "check": "storage.separate.data_dir.results_dir",
                                                     "message": "same filesystem"}]}))
    results = finalize_training(run)
    assert results["status"] == "failed" and results["runs"] == []
    assert "preflight failed" in results["reasons"][0] and "storage.separate.data_dir.results_dir" in \
        results["reasons"][0]


def test_missing_datagen_record_is_the_reason(tmp_path):
    run = make_run(tmp_path)
    (run.raw / "training" / "unet3d" / "datagen" / "datagen.json").unlink()
    results = finalize_training(run)
    assert results["reasons"][0].startswith("datagen left no record at ")


def test_consecutive_uses_the_shorter_neighbour():
    runs = [{"name": "00", "usable": True, "start": "2026-11-28T17:00:00", "end": "2026-11-28T17:00:10"},
            {"name": "01", "usable": True, "start": "2026-11-28T17:00:15", "end": "2026-11-28T17:00:19"},
            {"name": "02", "usable": False}]
    c = consecutive(runs)
    assert c["durations_s"] == [10.0, 4.0] and c["gaps"][0]["shorter_run_s"] == 4.0
    assert not c["ok"]  # a 5 s gap is not shorter than the 4 s run beside it
