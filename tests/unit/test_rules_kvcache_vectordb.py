"""KV-cache and VectorDB rules on planned requests and on result trees (good and bad)."""

from __future__ import annotations

import pytest

from mlps_slurm.benchmarks.kvcache import rules as kv
from mlps_slurm.benchmarks.vectordb import rules as vdb
from mlps_slurm.rules.core import Verdict, combine
from mlps_slurm.verify import verify_run
from tests.unit import rules_corpus as corpus


def verdict_of(findings, rule_id):
    matching = [f for f in findings if f.rule_id == rule_id]
    assert matching, f"no {rule_id} finding in {[f.rule_id for f in findings]}"
    return combine(matching)


# --- kv-cache ------------------------------------------------------------------------------------------------------

def test_closed_kvcache_plan():
    assert combine(kv.plan_findings(kv.KvCachePlan.closed(num_ranks=4))) is Verdict.CLOSED


def option(**changes):
    base = {"model": "llama3.1-8b", "num_users": 200, "duration_s": 300, "gpu_mem_gb": 0, "cpu_mem_gb": 0,
            "max_concurrent_allocs": 16, "generation_mode": "none"}
    return {**base, **changes}


@pytest.mark.parametrize("request_extra,rule_id,expected", [
    ({"options": {"1": option(num_users=50), "2": option(num_users=100, cpu_mem_gb=4),
                  "3": option(model="llama3.1-70b-instruct", num_users=70, max_concurrent_allocs=4)}},
     "kvcache.options", Verdict.OPEN),
    ({"options": {"1": option()}}, "kvcache.options", Verdict.INVALID),  # options 2 and 3 never ran
    ({"inter_option_delay_s": 20}, "kvcache.sequence", Verdict.OPEN),
    ({"config": "my.yaml"}, "kvcache.sequence", Verdict.OPEN),
    ({"autoscaling": True}, "kvcache.autoscaling", Verdict.OPEN),
    ({"rag": True}, "kvcache.open_features", Verdict.OPEN),
    ({"performance_profile": "throughput"}, "kvcache.open_features", Verdict.OPEN),
])
def test_kvcache_parameter_rules(tmp_path, request_extra, rule_id, expected):
    v = verify_run(corpus.kvcache_run(tmp_path, request_extra=request_extra))
    assert verdict_of(v.findings, rule_id) is expected


@pytest.mark.parametrize("kwargs,rule_id,expected", [
    ({}, "kvcache.trials_complete", Verdict.CLOSED),
    ({"seed": 7}, "kvcache.sequence", Verdict.OPEN),
    ({"trials": 2}, "kvcache.sequence", Verdict.OPEN),
    ({"missing": (2, 1, 0)}, "kvcache.trials_complete", Verdict.INVALID),
    ({"cpu_tier_option": 2}, "kvcache.cpu_tier", Verdict.OPEN),
    ({"wrong_seed_rank": 1}, "kvcache.rank_seeds", Verdict.INVALID),
])
def test_kvcache_runs(tmp_path, kwargs, rule_id, expected):
    v = verify_run(corpus.kvcache_run(tmp_path, **kwargs))
    assert verdict_of(v.findings, rule_id) is expected
    if not kwargs:
        assert v.verdict is Verdict.CLOSED and v.usable
        # 2 ranks x 3.5 GiB/s summed per trial, averaged over trials.
        assert v.metrics["option1_read_GiBps"] == pytest.approx(7.0)


def test_kvcache_malformed_rank_file_is_invalid_naming_it(tmp_path):
    run = corpus.kvcache_run(tmp_path)
    bad = run / "raw/kv_cache/option_3/trial_2/rank_1/kvcache_results_20270115_100000.json"
    bad.write_text('{"seed": 43, "cache_st')
    v = verify_run(run)
    assert not v.usable
    f = next(f for f in v.findings if f.rule_id == "kvcache.results_files")
    assert str(bad) in f.message and "not valid JSON" in f.message
    assert verdict_of(v.findings, "kvcache.trials_complete") is Verdict.INVALID


def test_kvcache_unknown_option_key_is_a_manifest_problem(tmp_path):
    v = verify_run(corpus.kvcache_run(tmp_path, request_extra={"options": {"1": {**option(), "users": 3}}}))
    f = next(f for f in v.findings if f.rule_id == "run.manifest")
    assert f.verdict is Verdict.INVALID and "users" in f.message


# --- vectordb ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes,rule_id,expected", [
    ({}, "vdb.index_type", Verdict.CLOSED),
    ({"index_type": "hnsw"}, "vdb.index_type", Verdict.CLOSED),
    ({"index_type": "AISAQ"}, "vdb.index_type", Verdict.CLOSED),
    ({"index_type": "IVF_FLAT"}, "vdb.index_type", Verdict.OPEN),
    ({"index_type": "ANNOY"}, "vdb.index_type", Verdict.INVALID),
    ({"backend": "pgvector"}, "vdb.backend", Verdict.OPEN),
    ({"backend": "redis"}, "vdb.backend", Verdict.INVALID),
    ({"params": {"search_list_size": 200, "num_query_processes": 8}}, "vdb.params", Verdict.CLOSED),
    ({"params": {"dimension": 768}}, "vdb.params", Verdict.OPEN),
    ({"runtime_s": 10}, "vdb.runtime", Verdict.INVALID),
    ({"runtime_s": None, "queries": 10000}, "vdb.runtime", Verdict.CLOSED),
    ({"runs": 3}, "vdb.run_count", Verdict.INVALID),
])
def test_vectordb_plan_rules(changes, rule_id, expected):
    request = {"index_type": "DISKANN", "runtime_s": 60, **changes}
    assert verdict_of(vdb.plan_findings(vdb.plan_from_request(request)), rule_id) is expected


@pytest.mark.parametrize("kwargs,rule_id,expected", [
    ({}, "vdb.run_count", Verdict.CLOSED),
    ({"runs": 4}, "vdb.run_count", Verdict.INVALID),
    ({"run_seconds": 10.0}, "vdb.runtime", Verdict.INVALID),
    ({"with_datagen": False}, "vdb.datagen", Verdict.INVALID),
    ({"index_type": "FLAT"}, "vdb.index_type", Verdict.OPEN),
])
def test_vectordb_runs(tmp_path, kwargs, rule_id, expected):
    v = verify_run(corpus.vectordb_run(tmp_path, **kwargs))
    assert verdict_of(v.findings, rule_id) is expected
    if not kwargs:
        assert v.verdict is Verdict.CLOSED and v.metrics["runs"] == 5


def test_vectordb_unreadable_summary_is_invalid_naming_it(tmp_path):
    run = corpus.vectordb_run(tmp_path)
    bad = run / "raw/vector_database/DISKANN/run/02/summary.json"
    bad.write_text('{"start": "2027-01-15T12:00:00", "end": "2027-01-15T12:01:00", "throughput_qps": "fast"}')
    v = verify_run(run)
    f = next(f for f in v.findings if f.rule_id == "vdb.summary")
    assert f.verdict is Verdict.INVALID and str(bad) in f.message and "throughput_qps" in f.message
    assert not v.usable
