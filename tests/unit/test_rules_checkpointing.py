"""Checkpointing rules on planned requests and on result trees built in tmp_path (good and bad)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlps_slurm.benchmarks.checkpointing.catalog import LLAMA3_MODELS
from mlps_slurm.benchmarks.checkpointing import rules as ckpt
from mlps_slurm.rules.core import Verdict, combine
from mlps_slurm.verify import verify_run, verify_runs
from tests.unit import rules_corpus as corpus
from tests.unit.rules_corpus import T0


def verdict_of(findings, rule_id: str) -> Verdict:
    matching = [f for f in findings if f.rule_id == rule_id]
    assert matching, f"no {rule_id} finding in {[f.rule_id for f in findings]}"
    return combine(matching)


@pytest.mark.parametrize("model,np_,expected", [
    ("llama3-8b", 8, Verdict.CLOSED), ("llama3-70b", 64, Verdict.CLOSED), ("llama3-405b", 512, Verdict.CLOSED),
    ("llama3-1t", 1024, Verdict.CLOSED),
    ("llama3-8b", 16, Verdict.OPEN), ("llama3-8b", 3, Verdict.OPEN), ("llama3-70b", 16, Verdict.OPEN),
    ("llama3-405b", 256, Verdict.OPEN), ("llama3-1t", 2048, Verdict.OPEN),
    ("llama3-70b", 12, Verdict.INVALID), ("llama3-405b", 408, Verdict.INVALID), ("llama3-1t", 768, Verdict.INVALID),
    ("llama3-8b", 0, Verdict.INVALID),
])
def test_process_count(model, np_, expected):
    findings = ckpt.plan_findings(ckpt.CheckpointPlan(model, np_))
    assert verdict_of(findings, "ckpt.process_count") is expected


def test_planned_closed_request_is_closed_and_every_rule_reports():
    findings = ckpt.plan_findings(ckpt.plan_from_request({"model": "llama3-405b", "num_processes": 512,
                                                          "nodes": 64}))
    assert combine(findings) is Verdict.CLOSED
    assert {f.rule_id for f in findings} == {"ckpt.model", "ckpt.process_count", "ckpt.ranks_per_host",
                                             "ckpt.write_read_count", "ckpt.accelerator", "ckpt.accelerator_memory",
                                             "ckpt.scaled", "ckpt.params"}


@pytest.mark.parametrize("changes,rule_id,expected", [
    ({"accelerator": "h100"}, "ckpt.accelerator", Verdict.INVALID),
    ({"accelerator": "tpu-v5"}, "ckpt.accelerator", Verdict.INVALID),
    ({"accelerator": "mi355"}, "ckpt.accelerator", Verdict.CLOSED),
    ({"model": "llama3-70b", "num_processes": 8, "accelerator": "h100"}, "ckpt.accelerator_memory",
     Verdict.INVALID),  # 8 x 80 GB < 978 GB
    ({"model": "llama3-70b", "num_processes": 8}, "ckpt.accelerator_memory", Verdict.CLOSED),  # 8 x 180 GB
    ({"num_checkpoints_write": 5}, "ckpt.write_read_count", Verdict.INVALID),
    ({"num_checkpoints_read": 0}, "ckpt.write_read_count", Verdict.CLOSED),  # one half of a split pair
    ({"scale": 0.25}, "ckpt.scaled", Verdict.INVALID),
    ({"seconds_between_checkpoints": 0}, "ckpt.params", Verdict.OPEN),
    ({"params": {"++workload.checkpoint.checkpoint_folder": "/x"}}, "ckpt.params", Verdict.CLOSED),
    ({"params": {"checkpoint.fsync": "False"}}, "ckpt.params", Verdict.OPEN),
    ({"nodes": 3}, "ckpt.ranks_per_host", Verdict.OPEN),  # 3/3/2
    ({"nodes": 4}, "ckpt.ranks_per_host", Verdict.OPEN),  # 2 per host
    ({"nodes": 2}, "ckpt.ranks_per_host", Verdict.CLOSED),
    ({"model": "llama3-9b"}, "ckpt.model", Verdict.INVALID),
])
def test_plan_rules(changes, rule_id, expected):
    request = {"model": "llama3-8b", "num_processes": 8, "nodes": 1, **changes}
    assert verdict_of(ckpt.plan_findings(ckpt.plan_from_request(request)), rule_id) is expected


def test_unknown_model_skips_the_checks_that_need_it_instead_of_crashing():
    findings = ckpt.plan_findings(ckpt.CheckpointPlan("llama3-9b", 8))
    assert combine(findings) is Verdict.INVALID
    assert "ckpt.process_count" not in {f.rule_id for f in findings}


# --- result trees --------------------------------------------------------------------------------------------------

def test_good_run_is_closed(tmp_path):
    run = corpus.checkpoint_run(tmp_path)
    v = verify_run(run)
    assert v.usable and v.verdict is Verdict.CLOSED, [f for f in v.findings if f.verdict is not Verdict.CLOSED]
    ids = {f.rule_id for f in v.findings}
    assert {"ckpt.fsync", "ckpt.read_gap", "ckpt.cache_drop", "ckpt.checkpoint_size", "run.preflight"} <= ids
    assert v.metrics["write_GBps_mean"] > 0 and v.metrics["read_GBps_mean"] > 0


@pytest.mark.parametrize("kwargs,rule_id,expected", [
    ({"np_": 16, "nodes": 2}, "ckpt.process_count", Verdict.OPEN),
    ({"model": "llama3-70b", "np_": 12, "nodes": 3}, "ckpt.process_count", Verdict.INVALID),
    ({"nodes": 4}, "ckpt.ranks_per_host", Verdict.OPEN),
    ({"writes": 9}, "ckpt.write_read_count", Verdict.INVALID),
    ({"reads": 11}, "ckpt.write_read_count", Verdict.INVALID),
    ({"fsync": False}, "ckpt.fsync", Verdict.INVALID),
    ({"read_gap": 45.0}, "ckpt.read_gap", Verdict.INVALID),
    ({"read_gap": 29.0}, "ckpt.read_gap", Verdict.CLOSED),
    # 1,124 GB written per client: under 3 x 1 TiB of RAM, so the cache had to be dropped, and was not.
    ({"cache_drop_ok": False, "memory_gb": 1024.0}, "ckpt.cache_drop", Verdict.INVALID),
    # ... but over 3 x 256 GiB, so the page cache cannot have held the checkpoints: no drop needed.
    ({"cache_drop_ok": False, "memory_gb": 256.0}, "ckpt.cache_drop", Verdict.CLOSED),
    ({"accelerator": "a100"}, "ckpt.accelerator", Verdict.INVALID),
    ({"scale": 0.001}, "ckpt.scaled", Verdict.INVALID),
    ({"seconds_between": 0.0}, "ckpt.params", Verdict.OPEN),
    ({"short_checkpoint": 3}, "ckpt.checkpoint_size", Verdict.INVALID),
    ({"preflight_ok": False}, "run.preflight", Verdict.INVALID),
    ({"with_preflight": False}, "run.preflight", Verdict.OPEN),
    ({"status": "failed"}, "run.results", Verdict.INVALID),
])
def test_bad_runs_are_flagged_by_the_right_rule(tmp_path, kwargs, rule_id, expected):
    v = verify_run(corpus.checkpoint_run(tmp_path, **kwargs))
    assert verdict_of(v.findings, rule_id) is expected
    if expected is not Verdict.CLOSED:
        assert v.verdict.rank >= expected.rank


def test_cache_drop_with_unknown_client_memory_is_invalid(tmp_path):
    profile = {**corpus.PROFILE, "nodes.memory_gb": None}
    v = verify_run(corpus.checkpoint_run(tmp_path, cache_drop_ok=False, memory_gb=None, profile=profile))
    f = next(f for f in v.findings if f.rule_id == "ckpt.cache_drop")
    assert f.verdict is Verdict.INVALID and "unknown" in f.message


def test_client_memory_falls_back_to_the_profile(tmp_path):
    # No preflight facts, but the profile declares 1,024 GB per node: the drop was needed.
    profile = {**corpus.PROFILE, "nodes.memory_gb": 1024.0}
    v = verify_run(corpus.checkpoint_run(tmp_path, cache_drop_ok=False, memory_gb=None, profile=profile))
    assert verdict_of(v.findings, "ckpt.cache_drop") is Verdict.INVALID


def test_missing_preflight_report_of_a_planned_preflight_is_invalid(tmp_path):
    run = corpus.checkpoint_run(tmp_path)
    (run / "preflight" / "preflight.json").unlink()
    v = verify_run(run)
    f = next(f for f in v.findings if f.rule_id == "run.preflight")
    assert f.verdict is Verdict.INVALID and "preflight.json" in f.message


@pytest.mark.parametrize("damage,needle", [
    (lambda p: p.unlink(), "missing"),
    (lambda p: p.write_text(p.read_text()[:500]), "not valid JSON"),
    (lambda p: p.write_text(""), "empty"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "schema": "dlio/9"})), "schema"),
    (lambda p: p.write_text(json.dumps([1, 2])), "expected a JSON object"),
])
def test_damaged_engine_output_is_invalid_naming_the_file_never_a_crash(tmp_path, damage, needle):
    run = corpus.checkpoint_run(tmp_path)
    engine = run / "raw" / "checkpointing" / "llama3-8b" / "engine.json"
    damage(engine)
    v = verify_run(run)
    assert not v.usable and v.verdict is Verdict.INVALID
    f = next(f for f in v.findings if f.rule_id == "ckpt.engine_output")
    assert str(engine) in f.message and needle in f.message
    # The parameters are still judged: a reviewer sees every problem at once.
    assert "ckpt.process_count" in {f.rule_id for f in v.findings}


def test_submission_pairs_split_invocations_and_rejects_duplicates(tmp_path):
    first = corpus.checkpoint_run(tmp_path, run_id="w", reads=0)
    write_end = verify_run(first).record.observed.write_end
    corpus.checkpoint_run(tmp_path, run_id="r", writes=0, start=write_end + 4.0, read_gap=1.0)
    report = verify_runs([tmp_path], submission=True)
    assert [g.verdict for g in report.groups] == [Verdict.CLOSED], report.to_text()

    late = tmp_path / "late"
    corpus.checkpoint_run(late, run_id="w", reads=0)
    corpus.checkpoint_run(late, run_id="r", writes=0, start=write_end + 60.0)
    g = verify_runs([late], submission=True).groups[0]
    assert (g.findings[0].rule_id, g.verdict) == ("ckpt.submission_runs", Verdict.INVALID)
    assert "limit 30 s" in g.findings[0].message

    dup = tmp_path / "dup"
    corpus.checkpoint_run(dup, run_id="a")
    corpus.checkpoint_run(dup, run_id="b", start=T0 + 7200)
    g = verify_runs([dup], submission=True).groups[0]
    assert g.verdict is Verdict.INVALID and "pick the run" in g.findings[0].message


def test_the_real_engine_shapes_match_the_corpus():
    # The corpus writes what the engine writes; a drift in either would make these tests meaningless.
    raw = corpus.engine_output("llama3-8b", 8, 1, 1.0, 10, 10, 5.0, True, 1.5, True, T0)
    assert raw["schema"] == "mlps-slurm/checkpoint-engine/1"
    assert sum(r["model_bytes"] + r["optimizer_bytes"] for r in raw["ranks"]) == \
        LLAMA3_MODELS["llama3-8b"].checkpoint_bytes()


def test_observation_from_engine_measures_the_gap_from_rank_times(tmp_path):
    run = verify_run(corpus.checkpoint_run(tmp_path, read_gap=12.5)).record
    o = run.observed
    assert o.read_start - o.write_end == pytest.approx(12.5, abs=0.01)
    assert o.ranks_per_host == {"n001": 8} and o.writes == 10 and o.reads == 10
    assert Path(run.run_id).name == run.run_id
