"""Each benchmark's history.py on what its real finalize writes (run directories built with the finalize tests'
helpers): the metrics recorded, their samples (per scored run, per trial, per query run) and their direction."""

from __future__ import annotations

import json

import pytest

from mlps_slurm.benchmarks.kvcache.finalize import finalize as kvcache_finalize
from mlps_slurm.benchmarks.training.finalize import finalize as training_finalize
from mlps_slurm.benchmarks.vectordb import finalize as vdb_finalize
from mlps_slurm.history import record
from mlps_slurm.history.baseline import compare_rows
from mlps_slurm.history.compare import REGRESSION
from mlps_slurm.run import create_run
from tests.unit import test_kvcache_chain as kv
from tests.unit import test_training_finalize as tr
from tests.unit import test_vectordb_plan_finalize as vdb


def test_training_records_au_and_throughput_per_scored_run(tmp_path):
    run = tr.make_run(tmp_path)
    tr.six_runs(run, per_task={2: {"au": 94.0}})
    results, _ = training_finalize(run)
    row = record(run.path, tmp_path / "h.sqlite")
    by_name = {m.name: m for m in row.metrics}
    assert list(by_name) == ["au", "throughput", "measured_bandwidth"]
    assert by_name["au"].samples == (96.0, 94.0, 96.0, 96.0, 96.0)  # the warm-up run is not scored
    assert by_name["au"].value == pytest.approx(results["summary"]["au_mean_percent"])
    assert by_name["throughput"].unit == "samples/s" and by_name["throughput"].higher_is_better
    assert row.nodes == ["n1", "n2"] and row.verdict == "INVALID" and row.model == "unet3d"


def test_kvcache_records_each_options_figures_per_trial(tmp_path):
    plan, profile = kv.make(tmp_path, trials=2, options=("1",))
    run = create_run(plan, profile, tmp_path / "runs")
    (run.preflight / "preflight.json").write_text(json.dumps({"ok": True, "reports": {}}))
    for trial in range(2):
        for rank in range(4):
            kv.rank_file(run.raw_dir("kv_cache", "") / "option_1" / f"trial_{trial}" / f"rank_{rank}",
                         1.0 + trial, 0.5, 100.0, 5.0, 9.0)
    results, _ = kvcache_finalize(run)
    row = record(run.path, tmp_path / "h.sqlite")
    by_name = {m.name: m for m in row.metrics}
    assert list(by_name) == ["option1.read_bandwidth", "option1.write_bandwidth", "option1.throughput",
                             "option1.storage_throughput"]
    assert by_name["option1.read_bandwidth"].samples == pytest.approx((4.0, 8.0))  # 4 ranks summed per trial
    assert by_name["option1.read_bandwidth"].value == pytest.approx(results["options"]["1"]["read_bandwidth_gibps"])
    assert row.model == "llama3.1-8b" and row.versions["kvcache_engine"] == "builtin"


def test_vectordb_records_qps_latency_and_recall_per_run_and_a_slower_p99_regresses(tmp_path):
    runs = []
    for name, latency in (("a", 6.0), ("b", 6.0 * 1.3)):
        run = vdb.make_run(tmp_path / name)
        vdb.write_datagen(run)
        vdb.write_runs(run, latency_ms={"mean": 2.0, "p50": 1.8, "p95": 4.0, "p99": latency, "p99_9": 9.0})
        vdb_finalize.finalize(run)
        runs.append(record(run.path, tmp_path / f"{name}.sqlite"))
    by_name = {m.name: m for m in runs[0].metrics}
    assert list(by_name) == ["throughput", "latency_p99", "recall"]
    assert by_name["throughput"].samples == (410.0, 402.5, 398.0, 415.5, 405.0)
    assert not by_name["latency_p99"].higher_is_better and by_name["recall"].higher_is_better
    assert runs[0].versions["milvus"] == "v2.3.5" and runs[0].model == "HNSW"
    comparison = compare_rows([runs[0]], runs[1])
    assert {v.name: v.verdict for v in comparison.verdicts}["latency_p99"] == REGRESSION
    assert comparison.regressed
