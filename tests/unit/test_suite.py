"""`submit all`: the suite plan (jobs, order, dependencies, merged preflight needs), its run directory (one run
directory per workload), submission against FakeSlurmBackend, discovery by verify, and the suite finalize when a
workload's output is broken. The real suite runs in tests/integration/test_suite_chain.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlps_slurm.benchmarks.checkpointing.catalog import LLAMA3_MODELS
from mlps_slurm.benchmarks.training.catalog import MODELS
from mlps_slurm.chain import submit_chain
from mlps_slurm.run import create_run
from mlps_slurm.plan import PlanError
from mlps_slurm.benchmarks.checkpointing.plan import plan as plan_checkpointing
from mlps_slurm.benchmarks.checkpointing.request import CheckpointingRequest
from mlps_slurm.plan_suite import SuiteRequest, plan_suite
from mlps_slurm.profile import load_profile
from mlps_slurm.profile.schema import SCHEMA
from mlps_slurm.render import render_plan
from mlps_slurm.rundir import RunDirectory
from mlps_slurm.verify import discover
from tests.unit.fake_slurm import FakeSlurmBackend

RUN_ID = "all-20261204-120000-abcdef"
PY = "/opt/venv/bin/python"


def profile_for(tmp_path: Path, *overrides: str):
    return load_profile("localhost", [f"storage.results_dir={tmp_path}/runs", f"storage.data_dir={tmp_path}/data",
                                      f"storage.checkpoint_dir={tmp_path}/ckpt", *overrides])


def make_plan(tmp_path: Path, *overrides: str, **request):
    profile = profile_for(tmp_path, *overrides)
    return plan_suite(SuiteRequest(**{"scale": 0.01, "nodes": 2, **request}), profile, run_id=RUN_ID,
                      run_dir=f"{tmp_path}/runs/{RUN_ID}", python=PY), profile


def test_schema_suite_keys_come_from_the_registry():
    assert tuple(SCHEMA["suite.training.models"].choices) == MODELS
    assert tuple(SCHEMA["suite.checkpointing.models"].choices) == tuple(LLAMA3_MODELS)
    assert tuple(SCHEMA["suite.benchmarks"].choices) == ("training", "checkpointing", "kvcache", "vectordb")
    assert SCHEMA["suite.benchmarks"].default == ["training", "checkpointing"]  # kvcache and vectordb are opt-in
    assert "suite.training.params" in SCHEMA
    assert SCHEMA["suite.vectordb.models"].default == ["HNSW"]
    assert tuple(SCHEMA["suite.vectordb.models"].choices) == ("DISKANN", "HNSW", "AISAQ", "IVF_FLAT", "IVF_SQ8",
                                                             "FLAT")


def test_the_suite_chains_vectordb_when_the_profile_enables_it(tmp_path):
    plan, _ = make_plan(tmp_path, "suite.benchmarks=[checkpointing,vectordb]", "suite.vectordb.models=[HNSW,FLAT]",
                        f"vectordb.milvus.data_dir={tmp_path}/vdb")
    keys = [j.key for j in plan.jobs]
    assert keys == ["preflight", "checkpointing-llama3-8b.checkpointing", "vectordb-HNSW.load", "vectordb-HNSW.run",
                    "vectordb-FLAT.load", "vectordb-FLAT.run", "finalize"]
    members = dict(plan.members)
    hnsw = members["runs/vectordb-HNSW-20261204-120000-abcdef"]
    assert hnsw.request.index == "HNSW" and hnsw.request.scale == 0.01 and hnsw.request.nodes == 2
    assert hnsw.settings["num_vectors_loaded"] == 10000  # 1,000,000 x --scale 0.01


def test_one_preflight_workloads_one_after_another_one_finalize(tmp_path):
    plan, _ = make_plan(tmp_path)
    keys = [j.key for j in plan.jobs]
    assert keys == ["preflight", "training-unet3d.datagen", "training-unet3d.run",
                    "checkpointing-llama3-8b.checkpointing", "finalize"]
    deps = {j.key: j.dependencies for j in plan.jobs}
    assert deps["training-unet3d.datagen"] == (("afterok", ("preflight",)),)
    assert deps["training-unet3d.run"] == (("afterok", ("training-unet3d.datagen",)),)
    # Checkpointing waits for the validated nodes and for the training runs to end, however they ended.
    assert deps["checkpointing-llama3-8b.checkpointing"] == (("afterok", ("preflight",)),
                                                             ("afterany", ("training-unet3d.run",)))
    assert deps["finalize"] == (("afterany", tuple(keys[:-1])),)
    assert [j.pin_to_preflight for j in plan.jobs] == [False, True, True, True, False]
    # Each workload keeps its own run directory: its jobs log there and its engine writes there.
    run = plan.job("training-unet3d.run")
    member_dir = f"{tmp_path}/runs/{RUN_ID}/runs/training-unet3d-20261204-120000-abcdef"
    assert run.context["run_dir"] == member_dir
    assert f"--output={member_dir}/logs/%x-%j.out" in run.sbatch
    assert "--nodes=2" in plan.job("checkpointing-llama3-8b.checkpointing").sbatch
    assert [m["run_id"] for m in plan.record()["members"]] == [
        "training-unet3d-20261204-120000-abcdef", "checkpointing-llama3-8b-20261204-120000-abcdef"]


def test_the_workload_jobs_are_the_ones_a_single_submit_would_render(tmp_path):
    plan, profile = make_plan(tmp_path, benchmarks=("checkpointing",))
    (rel, member), = plan.members
    alone = plan_checkpointing(CheckpointingRequest(model="llama3-8b", nodes=2, scale=0.01), profile,
                               run_id=member.run_id, run_dir=f"{tmp_path}/runs/{RUN_ID}/{rel}", python=PY)
    suite_scripts, alone_scripts = render_plan(plan), render_plan(alone)
    assert suite_scripts["01-checkpointing-llama3-8b.checkpointing.sbatch"] == alone_scripts["01-checkpointing.sbatch"]


def test_preflight_needs_are_the_union_and_space_adds_up(tmp_path):
    plan, _ = make_plan(tmp_path, "suite.training.models=[unet3d, retinanet]", "nodes.memory_gb=1")
    needs = plan.preflight
    storage = {d["id"]: d for d in needs["storage"]}
    data = [m.preflight for _, m in plan.members if m.benchmark == "training"]
    assert storage["data_dir"]["required_free_bytes"] == sum(
        next(d["required_free_bytes"] for d in spec["storage"] if d["id"] == "data_dir") for spec in data)
    assert storage["results_dir"]["path"] == f"{tmp_path}/runs"
    assert [d["id"] for d in needs["storage"]].count("results_dir") == 1
    assert {"dlio_benchmark", "mlps_slurm.benchmarks.checkpointing.job", "mpi4py"} <= set(needs["python_modules"])
    assert needs["separate_filesystems"] == [["data_dir", "results_dir"]]
    assert needs["memory_sizes_dataset"] is True and needs["memory_gb_expected"] == 1
    assert [j.key for j in plan.jobs][1:4] == ["training-unet3d.datagen", "training-unet3d.run",
                                               "training-retinanet.datagen"]
    assert plan.job("training-retinanet.datagen").dependencies[-1] == ("afterany", ("training-unet3d.run",))


@pytest.mark.parametrize("overrides, request_, message", [
    ((), {"benchmarks": ("nosuch",)},
     "--benchmarks nosuch: `submit all` chains training, checkpointing, kvcache, vectordb"),
    (("suite.benchmarks=[vectordb]", "suite.vectordb.models=[DISKANN]"), {}, "the embedded Milvus server (2.3.5) "
                                                                              "cannot build it"),
    (("suite.benchmarks=[]",), {}, "suite.benchmarks is empty"),
    (("suite.checkpointing.models=[]",), {}, "suite.checkpointing.models is empty while suite.benchmarks lists"),
    (("suite.accelerator=mi355", "suite.training.models=[unet3d]"), {},
     "training unet3d (profile localhost: suite.training.models)"),
    ((), {"nodes": 5}, "--nodes 5: the profile allows 4"),
    ((), {"scale": 1.5}, "--scale must be > 0 and <= 1"),
])
def test_bad_suite_requests_name_the_key_and_the_fix(tmp_path, overrides, request_, message):
    with pytest.raises(PlanError, match=None) as err:
        make_plan(tmp_path, *overrides, **request_)
    assert message in str(err.value)


def test_run_directory_holds_one_run_per_workload_and_submission_records_their_jobs(tmp_path):
    plan, profile = make_plan(tmp_path)
    run = create_run(plan, profile, tmp_path / "runs")
    backend = FakeSlurmBackend()
    ids = submit_chain(run, backend)
    assert list(ids) == [j.key for j in plan.jobs]
    # Every benchmark job is pinned to the validated nodes.
    assert (run.path / "pin-jobs.txt").read_text().split() == [ids[k] for k in list(ids)[1:4]]
    for info in plan.record()["members"]:
        member = RunDirectory(run.path / info["dir"])
        manifest = member.read_manifest()
        assert manifest["benchmark"] == info["benchmark"] and manifest["suite"]["run_id"] == RUN_ID
        assert manifest["state"] == "submitted"
        own = {k: v["job_id"] for k, v in manifest["jobs"].items()}
        assert own["preflight"] == ids["preflight"] and own["finalize"] == ids["finalize"]
        assert set(own) == {j["key"] for j in manifest["plan"]["jobs"]}
        # Live until the finalize copies it: the datagen job reads the preflight's memory facts through it.
        assert member.preflight.is_symlink() and member.preflight.resolve() == run.preflight
        for job in manifest["plan"]["jobs"]:
            assert (member.path / job["script"]).resolve().is_file()
    roots, unused, _ = discover([run.path])
    assert sorted(r.name for r in roots) == sorted(m["run_id"] for m in plan.record()["members"])
    assert unused == []


def test_suite_finalize_reports_a_broken_workload_and_still_finalizes_the_other(tmp_path, monkeypatch):
    from mlps_slurm.steps import finalize_suite as fs

    plan, profile = make_plan(tmp_path)
    run = create_run(plan, profile, tmp_path / "runs")
    submit_chain(run, FakeSlurmBackend())
    (run.preflight / "preflight.json").write_text(json.dumps({"ok": True, "failures": [], "nodes": []}))
    training, checkpointing = (RunDirectory(run.path / m["dir"]) for m in plan.record()["members"])
    # The checkpointing engine left a truncated output; the training chain left nothing at all.
    engine_output = Path(checkpointing.read_manifest()["settings"]["engine_output"])
    engine_output.parent.mkdir(parents=True, exist_ok=True)
    engine_output.write_text('{"schema": "mlps-slurm/checkpoint-engine/1", "checkp')
    monkeypatch.setattr("mlps_slurm.slurm.get_backend", FakeSlurmBackend)  # the finalize asks for job states

    results, text = fs.finalize_suite(run)

    assert results["status"] == "failed"
    rows = {r["name"]: r for r in results["members"]}
    assert set(rows) == {"training-unet3d", "checkpointing-llama3-8b"}
    assert all(r["status"] == "failed" for r in rows.values())
    assert any(str(engine_output) in why for why in rows["checkpointing-llama3-8b"]["reasons"])
    assert results["bundle"]["built"] is False and "not bundled" in results["bundle"]["reason"]
    for member in (training, checkpointing):
        assert not member.preflight.is_symlink() and (member.preflight / "preflight.json").is_file()
        assert (member.results / "results.json").is_file() and (member.path / "verify.json").is_file()
    assert (run.path / "verify.json").is_file()
    assert json.loads((run.results / "results.json").read_text())["members"] == results["members"]
    assert text.startswith(f"suite {RUN_ID}: 2 workload(s), status FAILED")


def test_suite_bundles_its_runs_when_every_one_is_usable_and_valid(tmp_path):
    from mlps_slurm.bundle import check_bundle
    from mlps_slurm.steps.finalize_suite import _bundle
    from tests.unit import rules_corpus as corpus

    suite = tmp_path / RUN_ID
    (suite / "runs").mkdir(parents=True)
    corpus.checkpoint_run(suite / "runs", run_id="checkpointing-llama3-8b-x")
    corpus.training_run(suite / "runs", run_id="training-unet3d-x")
    manifest = {"request": {"submission": {"organization": "acme", "system": "box1"}}}
    rows = [{"name": n, "status": "success", "verdict": "CLOSED"} for n in ("training-unet3d", "checkpointing-llama3-8b")]

    bundle = _bundle(RunDirectory(suite), manifest, rows)

    assert bundle["built"] is True and bundle["runs"] == 2, bundle
    tarball = Path(bundle["tarball"])
    assert tarball == suite / "submission" / "submission.tar.gz"
    assert check_bundle(tarball).ok
    assert (suite / "submission" / "closed" / "acme" / "systems" / "box1.yaml").is_file()
    # An INVALID workload keeps the suite from bundling: the message says what to do instead.
    rows[1]["verdict"] = "INVALID"
    again = _bundle(RunDirectory(tmp_path / "elsewhere"), manifest, rows)
    assert again["built"] is False and "checkpointing-llama3-8b" in again["reason"]
