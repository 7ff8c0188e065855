"""The kv-cache chain without Slurm: the plan, the refusals before submission, and the finalize's aggregation over
ranks and trials (Rules.md §6.3.4) on rank result files written here."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

from mlps_slurm.benchmarks.base import PlanError
from mlps_slurm.benchmarks.kvcache.finalize import finalize
from mlps_slurm.benchmarks.kvcache.plan import plan as plan_kvcache
from mlps_slurm.benchmarks.kvcache.request import KvCacheRequest
from mlps_slurm.probes import settle
from mlps_slurm.profile import load_profile
from mlps_slurm.rules import check_request, combine
from mlps_slurm.run import create_run

RUN_ID = "kvcache-20261205-120000-abcdef"


def make(tmp_path: Path, *overrides: str, **request):
    profile = load_profile("localhost", [f"storage.results_dir={tmp_path / 'runs'}",
                                         f"storage.kvcache_dir={tmp_path / 'cache'}", *overrides])
    req = KvCacheRequest(**{"nodes": 2, "ranks_per_node": 2, **request})
    return plan_kvcache(req, profile, run_id=RUN_ID, run_dir=str(tmp_path / "runs" / RUN_ID), python="/py"), profile


def test_chain_runs_options_in_order_after_the_preflight(tmp_path):
    plan, _ = make(tmp_path, trials=2, duration=20)
    assert [j.key for j in plan.jobs] == ["preflight", "option1", "option2", "option3", "finalize"]
    assert plan.job("option1").dependencies == (("afterok", ("preflight",)),)
    assert plan.job("option2").dependencies == (("afterok", ("preflight",)), ("afterany", ("option1",)))
    assert plan.job("finalize").dependencies == (("afterany", ("preflight", "option1", "option2", "option3")),)
    job = plan.job("option2")
    assert job.pin_to_preflight and "--ntasks=4" in job.sbatch and "--ntasks-per-node=2" in job.sbatch
    assert job.context["delay_s"] == 90 and plan.job("option1").context["delay_s"] == 0
    trials = job.context["trials"]
    assert [t["output_base"].rsplit("/", 2)[-2:] for t in trials] == [["option_2", "trial_0"],
                                                                      ["option_2", "trial_1"]]
    argv = trials[1]["engine"]
    assert argv[argv.index("--cpu-mem-gb") + 1] == "4" and argv[argv.index("--num-users") + 1] == "100"
    assert argv[argv.index("--duration") + 1] == "20" and argv[argv.index("--seed-base") + 1] == "42"
    assert argv[argv.index("--cache-base") + 1] == f"{tmp_path / 'cache'}/{RUN_ID}"
    record = plan.record()
    assert record["num_processes"] == 4 and record["options"]["3"]["model"] == "llama3.1-70b-instruct"
    assert plan.preflight["separate_filesystems"] == [["kvcache_dir", "results_dir"]]


def test_users_and_options_for_demos_and_the_rules_on_them(tmp_path):
    plan, _ = make(tmp_path, users=3, options=("1",))
    assert [j.key for j in plan.jobs] == ["preflight", "option1", "finalize"]
    findings = check_request("kvcache", plan.record())
    assert combine(findings).value == "INVALID"  # options 2 and 3 missing
    full, _ = make(tmp_path)
    verdicts = {f.rule_id: f.verdict.value for f in check_request("kvcache", full.record())}
    assert verdicts["kvcache.engine"] == "OPEN" and verdicts["kvcache.sequence"] == "CLOSED"
    assert verdicts["kvcache.options"] == "CLOSED"


def test_the_official_engine_needs_its_checkout(tmp_path):
    with pytest.raises(PlanError, match="engines.kvcache.path"):
        make(tmp_path, engine="official")
    # The checkout is looked for by the jobs' Python (inside the image on container sites): mlps_slurm.probes.
    plan, _ = make(tmp_path, f"engines.kvcache.path={tmp_path / 'nowhere'}", engine="official")
    with pytest.raises(PlanError, match="clone github.com/mlcommons/storage"):
        settle(plan, load_profile("localhost"), sys.executable)
    checkout = tmp_path / "storage" / "kv_cache_benchmark"
    (checkout / "kv_cache").mkdir(parents=True)
    (checkout / "kv-cache.py").write_text("")
    (checkout / "config.yaml").write_text("")
    plan, _ = make(tmp_path, f"engines.kvcache.path={checkout.parent}", engine="official")
    assert settle(plan, load_profile("localhost"), sys.executable) == plan
    argv = plan.job("option1").context["trials"][0]["engine"]
    assert argv[argv.index("--official-path") + 1] == str(checkout.parent)
    assert {f.rule_id: f.verdict.value for f in check_request("kvcache", plan.record())}["kvcache.engine"] == "CLOSED"


def rank_file(path: Path, read: float, write: float, tokens: float, dev_read: float, dev_write: float,
              entries: int = 5, measured_read: float | None = None, seed: int = 42) -> None:
    path.mkdir(parents=True, exist_ok=True)
    stats = {"tier_storage_read_bandwidth_gbps": read, "tier_storage_write_bandwidth_gbps": write,
             "storage_read_device_p95_ms": dev_read, "storage_write_device_p95_ms": dev_write,
             "storage_entries": entries}
    data = {"seed": seed, "summary": {"cache_stats": stats, "avg_throughput_tokens_per_sec": tokens,
                                      "storage_throughput_tokens_per_sec": 2 * tokens, "total_requests": 10,
                                      "storage_io_latency_ms": {"p95": dev_read + 1}},
            "mlps_slurm": {"engine": "builtin", "host": "n1",
                           "measured": {"read_bandwidth_gibps": read if measured_read is None else measured_read,
                                        "write_bandwidth_gibps": write}}}
    (path / "kvcache_results_20261205_120000.json").write_text(json.dumps(data))


def test_finalize_sums_ranks_averages_trials_and_takes_the_max_p95(tmp_path):
    plan, profile = make(tmp_path, trials=2, options=("1", "2"))
    run = create_run(plan, profile, tmp_path / "runs")
    (run.preflight / "preflight.json").write_text(json.dumps({"ok": True, "reports": {}}))
    raw = run.raw_dir("kv_cache", "")
    values = {}
    for option in (1, 2):
        for trial in range(2):
            for rank in range(4):
                v = (option, trial, rank)
                values[v] = (1.0 + trial + rank / 10, 0.5 + rank / 100, 100.0 * (rank + 1), 5.0 + rank + trial,
                             9.0 - rank)
                cpu_only = option == 2 and rank == 3
                rank_file(raw / f"option_{option}" / f"trial_{trial}" / f"rank_{rank}", *values[v],
                          entries=0 if cpu_only else 5, measured_read=0.5 if option == 1 else None, seed=42 + rank)
    results, text = finalize(run)
    assert results["status"] == "success", results["reasons"]
    o1, o2 = results["options"]["1"], results["options"]["2"]
    per_trial = [sum(values[(1, t, r)][0] for r in range(4)) for t in range(2)]
    assert o1["read_bandwidth_gibps"] == pytest.approx(statistics.fmean(per_trial))
    assert o1["avg_throughput_tokens_per_sec"] == pytest.approx(1000.0)
    assert o1["storage_throughput_tokens_per_sec"] == pytest.approx(2000.0)
    assert o1["device_read_p95_ms"] == 9.0 and o1["device_write_p95_ms"] == 9.0  # max over ranks and trials
    assert o1["drain_flag"] and not o2["drain_flag"]  # option 1's measured read is far below the reference's
    # A rank served from the CPU tier contributes 0.0 (Rules.md 6.3.4.4) and is listed.
    per_trial2 = [sum(values[(2, t, r)][0] for r in range(3)) for t in range(2)]
    assert o2["read_bandwidth_gibps"] == pytest.approx(statistics.fmean(per_trial2))
    assert o2["cpu_tier_ranks"] == ["trial_0/rank_3", "trial_1/rank_3"]
    assert "llama3.1-8b" in text and "I/O that finished after the timed window" in text
    assert results["verdict"] == "INVALID"  # option 3 missing: the rules say so, the aggregates stand
    assert not (tmp_path / "cache" / RUN_ID).exists()


def test_a_failed_rank_is_named_never_averaged_away(tmp_path):
    plan, profile = make(tmp_path, trials=1, options=("1",))
    run = create_run(plan, profile, tmp_path / "runs")
    (run.preflight / "preflight.json").write_text(json.dumps({"ok": True, "reports": {}}))
    base = run.raw_dir("kv_cache", "") / "option_1" / "trial_0"
    for rank in (0, 1, 3):
        rank_file(base / f"rank_{rank}", 1.0, 1.0, 10.0, 1.0, 1.0, seed=42 + rank)
    (base / "rank_2").mkdir(parents=True)
    (base / "rank_2" / "engine_error.json").write_text(json.dumps(
        {"rank": 2, "host": "n2", "during": "the timed window", "error": "OSError: [Errno 28] No space left"}))
    results, text = finalize(run)
    assert results["status"] == "failed" and results["verdict"] == "INVALID"
    assert any("rank 2 on n2" in r and "No space left" in r for r in results["reasons"])
    assert results["options"]["1"]["complete"] is False and "read_bandwidth_gibps" not in results["options"]["1"]
    assert "no aggregate" in text


def test_an_option_that_cannot_fit_the_time_limit_is_refused(tmp_path):
    import math

    from mlps_slurm.profile.schema import slurm_minutes

    assert [slurm_minutes(t) for t in ("30", "10:30", "01:00:00", "2-3", "1-00:00:00", "UNLIMITED")] == [
        30, 10.5, 60, 3060, 1440, math.inf]
    # 3 trials x (300 s + 200 workers x 2 s drain + 60 s) + 90 s delay: over 30 minutes.
    with pytest.raises(PlanError, match=r"slurm.time_limit.run \(00:30:00\); raise slurm.time_limit.run to at "
                                        r"least 39 minutes"):
        make(tmp_path, "slurm.time_limit.run=00:30:00")
    make(tmp_path, "slurm.time_limit.run=00:30:00", duration=20, users=4)  # a demo fits


def test_submit_all_chains_kvcache_when_the_suite_enables_it(tmp_path):
    from mlps_slurm.plan_suite import SuiteRequest, plan_suite

    profile = load_profile("localhost", [f"storage.results_dir={tmp_path / 'runs'}",
                                         "suite.benchmarks=[checkpointing, kvcache]"])
    request = SuiteRequest(scale=0.01, nodes=2, options=(("duration", 20.0), ("users", 3), ("trials", 1)))
    plan = plan_suite(request, profile, run_id="all-x", run_dir=str(tmp_path / "runs" / "all-x"), python="/py")
    assert [j.key for j in plan.jobs] == ["preflight", "checkpointing-llama3-8b.checkpointing",
                                          "kvcache-llama3.1-8b.option1", "kvcache-llama3.1-8b.option2",
                                          "kvcache-llama3.1-8b.option3", "finalize"]
    first = plan.job("kvcache-llama3.1-8b.option1")
    assert ("afterany", ("checkpointing-llama3-8b.checkpointing",)) in first.dependencies  # one at a time
    (member,) = [p for _, p in plan.members if p.benchmark == "kvcache"]
    assert member.request.duration == 20 and member.request.users == 3 and member.request.trials == 1
    assert ["kvcache_dir", "results_dir"] in plan.preflight["separate_filesystems"]


def test_damaged_rank_files_and_a_hostile_manifest_are_reasons_not_tracebacks(tmp_path):
    plan, profile = make(tmp_path, trials=1, options=("1", "2"))
    run = create_run(plan, profile, tmp_path / "runs")
    (run.preflight / "preflight.json").write_text(json.dumps({"ok": True, "reports": {}}))
    raw = run.raw_dir("kv_cache", "")
    for option in (1, 2):
        for rank in range(4):
            rank_file(raw / f"option_{option}" / "trial_0" / f"rank_{rank}", 1, 1, 1, 1, 1, seed=42 + rank)
    (bad,) = (raw / "option_1" / "trial_0" / "rank_0").glob("*.json")
    bad.write_bytes(b"\xff\xfe{")  # not UTF-8
    (gone,) = (raw / "option_2" / "trial_0" / "rank_3").glob("*.json")
    gone.unlink()
    gone.mkdir()  # a directory where the file belongs
    results, _ = finalize(run)
    assert results["status"] == "failed"
    assert any("option 1" in r and "rank_0" in r and "unreadable" in r for r in results["reasons"])
    assert any("option 2" in r and "rank_3" in r for r in results["reasons"])  # every option's problem is named
    manifest = json.loads(run.manifest_path.read_text())
    manifest["settings"]["options"] = {"../../../etc": {}}
    manifest["request"]["trials"] = "many"
    run.manifest_path.write_text(json.dumps(manifest))
    results, _ = finalize(run)
    assert results["status"] == "failed" and any("manifest is damaged" in r for r in results["reasons"])
    assert results["options"] == {}


def test_a_datasize_record_that_is_a_directory_is_named():
    import tempfile

    from mlps_slurm.benchmarks.training.record import SettledSizeError, settled_size

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "datasize.json").mkdir()
        with pytest.raises(SettledSizeError, match="datasize.json: unreadable"):
            settled_size(Path(d))
