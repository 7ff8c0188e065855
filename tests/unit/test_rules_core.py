"""The rules engine itself: findings, verdict combination, failing checks, the rule registry."""

from __future__ import annotations

import json

from mlps_slurm.rules import all_rules, check_request
from mlps_slurm.rules.core import Finding, Rule, Verdict, closed, combine, invalid, open_, run_rule, run_rules


def test_finding_is_frozen_and_json_serialisable():
    f = Finding("ckpt.read_gap", "INVALID", "too late", expected=(1, 2), actual={"a": {3}})
    assert f.verdict is Verdict.INVALID
    data = json.loads(json.dumps(f.to_dict()))
    assert data == {"rule_id": "ckpt.read_gap", "verdict": "INVALID", "message": "too late", "expected": [1, 2],
                    "actual": {"a": [3]}}
    assert Finding.from_dict(data) == f
    try:
        f.message = "changed"  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("Finding must be frozen")


def test_combine_takes_the_worst_verdict():
    assert combine([]) is Verdict.CLOSED
    assert combine([closed("a", ""), closed("b", "")]) is Verdict.CLOSED
    assert combine([closed("a", ""), open_("b", "")]) is Verdict.OPEN
    assert combine([open_("b", ""), invalid("c", ""), closed("a", "")]) is Verdict.INVALID
    assert combine([Verdict.OPEN, Verdict.CLOSED]) is Verdict.OPEN


def test_an_exception_inside_a_check_is_an_invalid_finding_naming_the_check():
    def broken(subject):
        return subject["missing key"]

    findings = run_rule(Rule("test.broken", "a check that raises", broken), {})
    assert len(findings) == 1
    f = findings[0]
    assert (f.rule_id, f.verdict) == ("test.broken", Verdict.INVALID)
    assert "broken" in f.message and "KeyError" in f.message


def test_a_check_returning_garbage_is_invalid_and_none_means_not_applicable():
    garbage = Rule("test.garbage", "", lambda s: ["not a finding"])
    silent = Rule("test.silent", "", lambda s: None)
    findings = run_rules([garbage, silent], object())
    assert [(f.rule_id, f.verdict) for f in findings] == [("test.garbage", Verdict.INVALID)]


def test_every_rule_id_is_namespaced_and_documented():
    RULES = all_rules()
    assert len(RULES) >= 40
    for rule_id, r in RULES.items():
        assert rule_id.split(".")[0] in {"ckpt", "train", "kvcache", "vdb", "run", "storage"}, rule_id
        assert r.summary and r.rule_id == rule_id


def test_check_request_before_anything_runs():
    good = check_request("checkpointing", {"model": "llama3-70b", "num_processes": 64, "nodes": 8})
    assert combine(good) is Verdict.CLOSED
    scaled = check_request("checkpointing", {"model": "llama3-8b", "num_processes": 8, "scale": 0.01})
    assert {f.rule_id for f in scaled if f.verdict is Verdict.INVALID} == {"ckpt.scaled"}
    vdb = check_request("vectordb", {"index_type": "ivf_flat", "runtime_s": 60})
    assert combine(vdb) is Verdict.OPEN
    try:
        check_request("checkpointing", {"model": "llama3-8b"})
    except ValueError as exc:
        assert "num_processes" in str(exc)
    else:
        raise AssertionError("a request without num_processes is a caller error")


def test_describe_node_reads_the_preflight_node_facts_shape():
    """Producer (mlps_slurm.steps.preflight.node_facts, on this machine) and reader must agree on the keys."""
    from mlps_slurm.rules.facts import describe_node
    from mlps_slurm.steps.preflight import node_facts

    facts = {"os": node_facts.os_facts(), "kernel": node_facts.kernel_facts(), "cpu": node_facts.cpu_facts(),
             "memory": node_facts.memory_facts(), "nics": node_facts.nic_facts()}
    d = describe_node(facts)
    for key in ("cpu_model", "cpu_cores", "cpu_threads", "memory_gib", "os_name", "os_version", "kernel"):
        assert d[key], key
    assert all("state" in n and "type" in n for n in d["nics"])
