"""The benchmark seam: a benchmark the shared layers have never heard of (a package made here, one registry entry)
is verified, judged as a submission, bundled and checked through the registry, without editing shared code."""

from __future__ import annotations

import json
import sys

import pytest

from mlps_slurm import benchmarks
from mlps_slurm.bundle import check_bundle, make_bundle
from mlps_slurm.rules.core import Verdict
from mlps_slurm.verify import verify_run, verify_runs
from tests.unit import rules_corpus as corpus

PACKAGE = {
    "__init__": '''
from mlps_slurm.benchmarks.base import Benchmark

BENCHMARK = Benchmark(name="fakebench", package=__name__, summary="A benchmark only this test knows.",
                      tree_name="fake_bench", runnable=False, models=("m1",))
''',
    "results": '''
from mlps_slurm.rules.loaders import FileProblem, Loaded, fail, load_results, read_json_object


def load(root, manifest, preflight):
    loaded = Loaded("fakebench", manifest["request"]["model"])
    load_results(root, loaded)
    try:
        score = read_json_object(root / "raw" / "fake_bench" / "out.json")["score"]
    except FileProblem as exc:
        fail(loaded, "fake.output", str(exc))
        return loaded
    loaded.record = {"run_id": manifest["run_id"], "score": score}
    loaded.metrics = {"score": score}
    return loaded
''',
    "rules": '''
from mlps_slurm.rules.core import closed, invalid


def plan_from_request(request):
    return dict(request)


def plan_findings(plan):
    return []


def run_findings(record):
    if record["score"] >= 1:
        return [closed("fake.score", "the score is high enough", ">= 1", record["score"])]
    return [invalid("fake.score", "the score is too low", ">= 1", record["score"])]


def submission_findings(records):
    return [closed("fake.submission", f"{len(records)} run(s) of one model")]
''',
    "bundle": '''
from mlps_slurm.bundle.layout import whole_run


def layout(run, base):
    return whole_run(run, base, parent="runs")


def system_facts(runs):
    return {"fake_capabilities": {"runs": len(runs)}}
''',
}


@pytest.fixture
def fakebench(tmp_path, monkeypatch):
    package = tmp_path / "packages" / "fakebench"
    package.mkdir(parents=True)
    for name, text in PACKAGE.items():
        (package / f"{name}.py").write_text(text.lstrip())
    monkeypatch.syspath_prepend(str(tmp_path / "packages"))
    monkeypatch.setitem(benchmarks.REGISTRY, "fakebench", "fakebench")
    yield
    for name in [m for m in sys.modules if m == "fakebench" or m.startswith("fakebench.")]:
        del sys.modules[name]


def fake_run(parent, run_id, score, benchmark="fakebench"):
    run = parent / run_id
    files = {
        "manifest.json": corpus.manifest(run_id, benchmark, {"model": "m1"}),
        "preflight/preflight.json": corpus.preflight(["n001", "n002"]),
        "scripts/00-preflight.sbatch": "#!/bin/bash\n",
        "raw/fake_bench/out.json": {"score": score},
        "results/results.json": {"status": "success", "reasons": []},
    }
    for rel, data in files.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(data if isinstance(data, str) else json.dumps(data))
    return run


def test_a_registered_benchmark_is_verified_through_its_own_loader_and_rules(fakebench, tmp_path):
    good = verify_run(fake_run(tmp_path, "good", score=3))
    assert good.benchmark == "fakebench" and good.model == "m1" and good.usable
    assert good.verdict is Verdict.CLOSED and good.metrics == {"score": 3}
    assert {f.rule_id for f in good.findings} == {"run.preflight", "fake.score"}
    bad = verify_run(fake_run(tmp_path, "bad", score=0))
    assert bad.verdict is Verdict.INVALID and [f.rule_id for f in bad.findings if f.verdict is Verdict.INVALID] \
        == ["fake.score"]
    broken = fake_run(tmp_path, "broken", score=1)
    (broken / "raw/fake_bench/out.json").write_text("{")
    v = verify_run(broken)
    assert not v.usable and any(f.rule_id == "fake.output" and "not valid JSON" in f.message for f in v.findings)


def test_its_submission_rules_and_bundle_layout_come_from_its_package(fakebench, tmp_path):
    fake_run(tmp_path / "runs", "good", score=3)
    report = verify_runs([tmp_path / "runs"], submission=True)
    [group] = report.groups
    assert (group.benchmark, group.model, [f.rule_id for f in group.findings]) == ("fakebench", "m1",
                                                                                  ["fake.submission"])
    result = make_bundle([tmp_path / "runs"], "acme", "sys1", tmp_path / "sub")
    model_dir = result.tree / "closed/acme/results/sys1/fake_bench/m1"
    assert (model_dir / "runs/20270115_000000/raw/fake_bench/out.json").is_file()
    assert json.loads((model_dir / "results.json").read_text())["submission_findings"][0]["rule_id"] == \
        "fake.submission"
    assert "fake_capabilities:" in (result.tree / "closed/acme/systems/sys1.yaml").read_text()
    check = check_bundle(result.tarball)
    assert check.ok, check.problems
    assert check.report.submission and [r.verdict for r in check.report.runs] == [Verdict.CLOSED]


def test_an_unregistered_benchmark_is_an_invalid_manifest(fakebench, tmp_path):
    v = verify_run(fake_run(tmp_path, "stranger", score=3, benchmark="nosuchbench"))
    assert v.verdict is Verdict.INVALID and not v.usable
    assert v.findings[0].rule_id == "run.manifest" and "'nosuchbench', expected one of" in v.findings[0].message
    assert "fakebench" in v.findings[0].message
