"""The vectordb chain without Slurm or Milvus: the request's and the plan's refusals, the planned jobs, settings and
scripts (tokens stay out of them), then the finalize, its table and the rules' verdict on run directories written
here the way the jobs write them."""

from __future__ import annotations

import datetime as dt
import json
import statistics
from pathlib import Path

import pytest

from mlps_slurm.benchmarks.base import PlanError, RequestError
from mlps_slurm.benchmarks.vectordb import finalize as vdb_finalize
from mlps_slurm.benchmarks.vectordb import job
from mlps_slurm.benchmarks.vectordb.plan import plan
from mlps_slurm.benchmarks.vectordb.request import VectorDbRequest
from mlps_slurm.benchmarks.vectordb.server import MARKER
from mlps_slurm.profile import load_profile
from mlps_slurm.render import render_plan
from mlps_slurm.rules import check_request
from mlps_slurm.run import create_run
from mlps_slurm.rundir import RunDirectory

RUN_ID = "vectordb-20261205-120000-abcdef"
T0 = dt.datetime(2026, 12, 5, 12, 0, 0, tzinfo=dt.timezone.utc)
EXTERNAL = ("vectordb.milvus.mode=external", "vectordb.milvus.uri=http://milvus.example.org:19530")


def make(tmp_path: Path, *overrides: str, **request):
    profile = load_profile("localhost", [f"storage.results_dir={tmp_path / 'runs'}",
                                         f"vectordb.milvus.data_dir={tmp_path / 'vdb'}", *overrides])
    p = plan(VectorDbRequest(**request), profile, run_id=RUN_ID, run_dir=f"{tmp_path}/runs/{RUN_ID}",
             python="/usr/bin/python3")
    return p, profile


def verdicts(p) -> dict[str, str]:
    return {f.rule_id: f.verdict.value for f in check_request("vectordb", p.record())}


# --- request and plan -----------------------------------------------------------------------------------------------

def test_the_chain_loads_once_then_runs_an_array_one_task_at_a_time(tmp_path):
    p, _ = make(tmp_path, nodes=2, query_processes=3)
    assert [j.key for j in p.jobs] == ["preflight", "load", "run", "finalize"]
    assert p.job("load").dependencies == (("afterok", ("preflight",)),)
    assert p.job("run").dependencies == (("afterok", ("load",)),)
    assert p.job("finalize").dependencies == (("afterany", ("preflight", "load", "run")),)
    run = p.job("run")
    assert "--array=0-4%1" in run.sbatch and run.pin_to_preflight and p.job("load").pin_to_preflight
    assert {"--nodes=2", "--ntasks=6", "--ntasks-per-node=3"} <= set(run.sbatch)
    assert "--array=0-2%1" in make(tmp_path, runs=3)[0].job("run").sbatch
    s = p.settings
    assert s["num_query_processes"] == 6 and s["runtime_s"] == 60 and s["milvus_mode"] == "embedded"
    assert s["collection"] == "mlps_vectordb_20261205_120000_abcdef" and s["uri"] is None
    assert s["data_dir"] == f"{tmp_path}/vdb/{RUN_ID}"
    assert s["raw_dir"] == f"{tmp_path}/runs/{RUN_ID}/raw/vector_database/HNSW"
    assert s["index_spec"]["build_params"] == {"M": 64, "efConstruction": 200}
    storage = {d["id"]: d for d in p.preflight["storage"]}
    assert storage["vectordb_dir"]["path"] == f"{tmp_path}/vdb"
    assert storage["vectordb_dir"]["required_free_bytes"] == 3 * 1_000_000 * 1536 * 4 + 400 * 2**20
    assert {"pymilvus", "milvus"} <= set(p.preflight["python_modules"])
    assert verdicts(p) == dict.fromkeys(["vdb.index_type", "vdb.backend", "vdb.params", "vdb.runtime",
                                         "vdb.run_count", "vdb.scaled"], "CLOSED")


@pytest.mark.parametrize("index", ["DISKANN", "AISAQ"])
def test_the_embedded_server_refuses_diskann_and_aisaq(tmp_path, index):
    with pytest.raises(PlanError) as err:
        make(tmp_path, index=index)
    assert f"--index {index}" in str(err.value) and "HNSW" in str(err.value)
    assert "vectordb.milvus.mode: external" in str(err.value) and "vectordb.milvus.uri" in str(err.value)
    p, _ = make(tmp_path, *EXTERNAL, index=index)
    assert p.settings["uri"] == "http://milvus.example.org:19530" and p.settings["data_dir"] is None
    assert "milvus" not in p.preflight["python_modules"]
    assert not any(d["id"] == "vectordb_dir" for d in p.preflight["storage"])


def test_external_settings_are_checked(tmp_path):
    with pytest.raises(PlanError, match="vectordb.milvus.uri is not set"):
        make(tmp_path, "vectordb.milvus.mode=external")
    with pytest.raises(PlanError, match="token_file and vectordb.milvus.token_env are both set"):
        make(tmp_path, *EXTERNAL, f"vectordb.milvus.token_file={tmp_path}/t", "vectordb.milvus.token_env=TOKEN")


def test_a_run_is_timed_or_counted_never_both():
    with pytest.raises(RequestError, match="--duration and --queries"):
        VectorDbRequest(duration=60, queries=1000)
    with pytest.raises(RequestError, match="--scale"):
        VectorDbRequest(scale=0)


def test_a_run_must_fit_the_profiles_time_limit(tmp_path):
    # localhost: slurm.time_limit.run 01:00:00; a run job adds 600 s, and 300 s for an embedded server's start
    assert make(tmp_path, duration=2700)[0].settings["runtime_s"] == 2700
    with pytest.raises(PlanError) as err:
        make(tmp_path, duration=2701)
    assert "slurm.time_limit.run" in str(err.value) and "--duration" in str(err.value)
    assert make(tmp_path, *EXTERNAL, duration=3000)[0].settings["runtime_s"] == 3000
    with pytest.raises(PlanError, match="slurm.time_limit.run"):
        make(tmp_path, *EXTERNAL, "slurm.time_limit.run=00:30:00", duration=1300)
    counted, _ = make(tmp_path, queries=10**6)
    assert counted.settings["runtime_s"] is None and counted.request.queries == 10**6


def test_only_changed_tunables_are_recorded_by_the_rules_names(tmp_path):
    assert make(tmp_path)[0].settings["params"] == {}
    p, _ = make(tmp_path, query_processes=2, metric="L2", search_ef=100)
    assert p.settings["params"] == {"num_query_processes": 2, "metric_type": "L2", "search_ef": 100}
    assert verdicts(p)["vdb.params"] == "CLOSED"
    p, _ = make(tmp_path, num_vectors=5000)
    assert p.settings["params"] == {"num_vectors": 5000} and verdicts(p)["vdb.params"] == "OPEN"
    p, _ = make(tmp_path, index="FLAT")
    assert verdicts(p)["vdb.index_type"] == "OPEN" and any("OPEN only" in n for n in p.notes)


def test_scale_loads_a_fraction_of_the_vectors_and_is_not_submittable(tmp_path):
    p, _ = make(tmp_path, num_vectors=1000, scale=0.25)
    assert p.settings["num_vectors_loaded"] == 250 and p.settings["params"] == {"num_vectors": 1000}
    assert any("250 of 1000 vectors; not submittable" in n for n in p.notes)
    assert verdicts(p)["vdb.scaled"] == "INVALID"
    assert make(tmp_path, num_vectors=100, scale=0.01)[0].settings["num_vectors_loaded"] == 10  # at least top-k
    assert make(tmp_path, num_vectors=1000)[0].settings["num_vectors_loaded"] == 1000


def test_never_more_vectors_than_asked(tmp_path):
    assert make(tmp_path, num_vectors=5, top_k=10)[0].settings["num_vectors_loaded"] <= 5


def test_external_scripts_name_where_the_token_is_never_the_token(tmp_path, monkeypatch):
    secret = "root:Sup3r-s3cret"
    token_file = tmp_path / "milvus.token"
    token_file.write_text(secret)
    monkeypatch.setenv("MLPS_VDB_TOKEN", secret)
    p, profile = make(tmp_path, *EXTERNAL, f"vectordb.milvus.token_file={token_file}", "vectordb.milvus.db_name=bench")
    scripts = render_plan(p)
    load, run = scripts["01-load.sbatch"], scripts["02-run.sbatch"]
    assert f"--token-file {token_file}" in load and "--uri http://milvus.example.org:19530" in load
    assert run.count(f"--token-file {token_file}") == 3 and "--db-name bench" in run  # prepare, query, collect
    assert "job serve" not in load + run and "MLPS_MILVUS_SERVE" not in load + run  # no server, no trap for it
    p, profile = make(tmp_path, *EXTERNAL, "vectordb.milvus.token_env=MLPS_VDB_TOKEN")
    scripts = render_plan(p)
    assert "--token-env MLPS_VDB_TOKEN" in scripts["01-load.sbatch"]
    run_dir = create_run(p, profile, tmp_path / "runs", scripts)
    written = "".join(f.read_text(errors="replace") for f in run_dir.path.rglob("*") if f.is_file())
    assert secret not in "".join(scripts.values()) and secret not in written and "MLPS_VDB_TOKEN" in written


def test_embedded_scripts_start_the_server_in_the_background_and_stop_it_on_exit(tmp_path):
    p, _ = make(tmp_path)
    scripts = render_plan(p)
    for name in ("01-load.sbatch", "02-run.sbatch"):
        lines = scripts[name].splitlines()
        serve = next(i for i, line in enumerate(lines) if ".job serve " in line)
        assert lines[serve].endswith(" &") and f"--data-dir {tmp_path}/vdb/{RUN_ID}" in lines[serve]
        assert f"--run-id {RUN_ID}" in lines[serve]
        assert lines[serve + 1] == "MLPS_MILVUS_SERVE=$!" and lines[serve + 2].startswith("trap ")
        assert "kill -USR1" in lines[serve + 2] and lines[serve + 2].rstrip().endswith("EXIT")
        work = next(i for i, line in enumerate(lines) if ".job load " in line or ".job prepare " in line)
        assert work > serve + 2 and "--server-state-root" in lines[work]
    assert "job serve" not in scripts["00-preflight.sbatch"] + scripts["03-finalize.sbatch"]
    assert 'scancel --state=PENDING "${SLURM_ARRAY_JOB_ID}"' in scripts["02-run.sbatch"]


# --- finalize -------------------------------------------------------------------------------------------------------

def make_run(tmp_path: Path, *overrides: str, **request) -> RunDirectory:
    p, profile = make(tmp_path, *overrides, **request)
    run = create_run(p, profile, tmp_path / "runs")
    (run.preflight / "preflight.json").write_text(json.dumps({"ok": True, "reports": {}}))
    return run


def raw(run: RunDirectory, index: str = "HNSW") -> Path:
    return run.raw_dir("vector_database", index)


def write_datagen(run: RunDirectory, index: str = "HNSW") -> None:
    (raw(run, index) / "datagen").mkdir(parents=True)
    (raw(run, index) / "datagen" / "summary.json").write_text(json.dumps(
        {"num_vectors": 1_000_000, "dimension": 1536, "insert_s": 812.5, "insert_vectors_per_s": 1230.8,
         "flush_s": 4.2, "index_build_s": 1450.0, "ground_truth_s": 95.0, "server_version": "v2.3.5",
         "index_params": {"M": 64, "efConstruction": 200}}))


def write_runs(run: RunDirectory, qps=(410.0, 402.5, 398.0, 415.5, 405.0), skip=(), seconds=61.0, **extra):
    for task, q in enumerate(qps):
        leaf = raw(run) / "run" / f"{task:02d}"
        leaf.mkdir(parents=True, exist_ok=True)
        if task in skip:
            continue
        start = T0 + dt.timedelta(seconds=100 * task)
        (leaf / "summary.json").write_text(json.dumps({
            "start": start.isoformat(), "end": (start + dt.timedelta(seconds=seconds)).isoformat(),
            "throughput_qps": q, "recall": 0.95 + task / 100, "queries": int(q * 60), "calls": int(q * 60),
            "window_s": 60.0, "load_s": 3.0 + task, "query_processes": 4, "mode": "timed",
            "latency_ms": {"mean": 2.0 + task, "p50": 1.8, "p95": 4.0, "p99": 6.0, "p99_9": 9.0}, **extra}))


def test_five_good_runs(tmp_path):
    run = make_run(tmp_path)
    write_datagen(run)
    write_runs(run)
    results, text = vdb_finalize.finalize(RunDirectory(run.path))
    assert results["status"] == "success" and results["reasons"] == []
    assert results["verdict"] == "CLOSED" and results["submittable"], results["rule_findings"]
    agg = results["aggregate"]
    assert agg["throughput_qps"] == {"mean": pytest.approx(statistics.fmean([410.0, 402.5, 398.0, 415.5, 405.0])),
                                     "min": 398.0, "max": 415.5}
    assert agg["recall"]["mean"] == pytest.approx(0.97) and agg["latency_ms"]["mean"] == pytest.approx(4.0)
    assert [r["run"] for r in results["runs"]] == ["00", "01", "02", "03", "04"]
    assert results["load"]["index_build_s"] == 1450.0 and results["runs_planned"] == 5
    assert results["search_params"] == {"ef": 200} and results["index_type"] == "HNSW"
    on_disk = json.loads(run.results_json.read_text())
    assert on_disk["status"] == "success" and on_disk["aggregate"]["throughput_qps"]["max"] == 415.5
    assert "QPS" in text and "recall" in text and "406.2" in text and "0.9700" in text
    assert "index built in 1450.0 s" in text and run.results_text.read_text() == text


def test_short_runs_are_measured_but_invalid(tmp_path):
    run = make_run(tmp_path)
    write_datagen(run)
    write_runs(run, seconds=12.0)
    results, _ = vdb_finalize.finalize(run)
    assert results["status"] == "success" and results["verdict"] == "INVALID"
    assert any(f["rule_id"] == "vdb.runtime" for f in results["rule_findings"])


def test_a_failed_rank_is_named_with_its_error_and_slurms_word(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    write_datagen(run)
    write_runs(run, skip=(2,))
    (raw(run) / "run" / "02" / "engine_error_rank_1.json").write_text(json.dumps(
        {"during": "query", "host": "n3", "error": "MilvusException: deadline exceeded", "rank": 1}))
    task = {"task": 2, "job_id": "102_2", "state": "FAILED", "reason": "NonZeroExitCode", "exit_code": "1:0",
            "nodes": "n1"}
    monkeypatch.setattr(vdb_finalize, "job_states", lambda manifest: {
        "run": {"job_id": "102", "state": "FAILED", "reason": "NonZeroExitCode", "tasks": [task]}})
    results, text = vdb_finalize.finalize(run)
    assert results["status"] == "failed" and results["verdict"] == "INVALID" and not results["submittable"]
    assert results["reasons"] == ["run 2: query rank 1 on n3: MilvusException: deadline exceeded "
                                  "(array task 102_2: FAILED, NonZeroExitCode)"]
    assert len(results["runs"]) == 4 and results["aggregate"]["throughput_qps"]["mean"] == pytest.approx(
        statistics.fmean([410.0, 402.5, 415.5, 405.0]))
    assert "reason: run 2: query rank 1 on n3" in text


def test_a_failed_load_is_the_reason(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    (raw(run) / "datagen").mkdir(parents=True)
    (raw(run) / "datagen" / "engine_error.json").write_text(json.dumps(
        {"during": "load", "host": "n1", "error": "Milvus failed to build the HNSW index: out of memory"}))
    write_runs(run)  # never read without a load
    monkeypatch.setattr(vdb_finalize, "job_states", lambda manifest: {
        "load": {"job_id": "101", "state": "FAILED", "reason": "NonZeroExitCode"}})
    results, text = vdb_finalize.finalize(run)
    assert results["status"] == "failed" and results["runs"] == [] and results["aggregate"] is None
    assert results["reasons"] == ["load: load on n1: Milvus failed to build the HNSW index: out of memory "
                                  "(job 101 FAILED, NonZeroExitCode)"]
    assert "status: FAILED" in text


def test_the_load_jobs_token_error_reaches_the_finalize(tmp_path, monkeypatch):
    run = make_run(tmp_path, *EXTERNAL, "vectordb.milvus.token_env=MLPS_VDB_TOKEN")
    monkeypatch.delenv("MLPS_VDB_TOKEN", raising=False)
    out = raw(run) / "datagen"
    assert job.main(["load", "--uri", "http://milvus.example.org:19530", "--token-env", "MLPS_VDB_TOKEN",
                     "--collection", "c", "--run-dir", str(run.path), "--output-dir", str(out)]) == 1
    assert json.loads((out / "engine_error.json").read_text())["during"] == "load"
    results, _ = vdb_finalize.finalize(run)
    assert len(results["reasons"]) == 1 and results["reasons"][0].startswith("load: load on ")
    assert "$MLPS_VDB_TOKEN is not set" in results["reasons"][0]


def outside(tmp_path: Path, run: RunDirectory) -> set[Path]:
    return {p for p in tmp_path.rglob("*") if run.path not in (p, *p.parents)}


@pytest.mark.parametrize("where,key,value", [
    ("settings", "index_type", "../../etc"), ("settings", "index_type", None), ("request", "runs", "x"),
    ("request", "runs", 0), ("request", "runs", True), ("request", "runs", 2.5)])
def test_a_damaged_manifest_is_a_reason_not_a_crash(tmp_path, where, key, value):
    run = make_run(tmp_path)
    write_datagen(run)
    write_runs(run)
    manifest = json.loads(run.manifest_path.read_text())
    manifest[where][key] = value
    run.manifest_path.write_text(json.dumps(manifest))
    before = outside(tmp_path, run)
    results, _ = vdb_finalize.finalize(RunDirectory(run.path))
    assert results["status"] == "failed" and results["runs"] == []
    assert any("the manifest is damaged" in r and repr(value) in r for r in results["reasons"])
    assert outside(tmp_path, run) == before


def test_an_unhashable_index_type_is_a_reason(tmp_path):
    run = make_run(tmp_path)
    manifest = json.loads(run.manifest_path.read_text())
    manifest["settings"]["index_type"] = ["HNSW"]
    run.manifest_path.write_text(json.dumps(manifest))
    results, _ = vdb_finalize.finalize(run)
    assert results["status"] == "failed"


def test_a_float_query_count_does_not_crash_the_table(tmp_path):
    run = make_run(tmp_path)
    write_datagen(run)
    write_runs(run, queries=3100.0)
    results, text = vdb_finalize.finalize(run)
    assert "3100" in text


def test_finalize_removes_only_the_runs_own_data_directory(tmp_path):
    run = make_run(tmp_path)
    write_datagen(run)
    write_runs(run)
    data_dir = tmp_path / "vdb" / RUN_ID
    (data_dir / "data").mkdir(parents=True)
    (data_dir / MARKER).write_text(RUN_ID + "\n")
    token = run.path / "milvus-server" / "101" / "token"
    token.parent.mkdir(parents=True)
    token.write_text("root:pw")
    results, _ = vdb_finalize.finalize(run)
    assert results["status"] == "success" and not data_dir.exists() and not token.exists()
    assert results["cleanup"] == {"data_dir": str(data_dir), "data_dir_removed": True}


@pytest.mark.parametrize("name,marker", [(RUN_ID, None), (RUN_ID, "vectordb-someone-else"), ("elsewhere", RUN_ID)])
def test_finalize_keeps_a_data_directory_that_is_not_the_runs(tmp_path, name, marker):
    run = make_run(tmp_path)
    write_datagen(run)
    write_runs(run)
    data_dir = tmp_path / "vdb" / name
    data_dir.mkdir(parents=True)
    (data_dir / "precious").write_text("keep")
    if marker:
        (data_dir / MARKER).write_text(marker)
    if name != RUN_ID:
        manifest = json.loads(run.manifest_path.read_text())
        manifest["settings"]["data_dir"] = str(data_dir)
        run.manifest_path.write_text(json.dumps(manifest))
    results, _ = vdb_finalize.finalize(RunDirectory(run.path))
    assert (data_dir / "precious").read_text() == "keep"
    assert results["cleanup"]["data_dir_removed"] is False and results["status"] == "failed"
    assert results["reasons"] == [f"the embedded server's data directory {data_dir} could not be removed"]


def test_an_external_run_removes_no_directory(tmp_path):
    run = make_run(tmp_path, *EXTERNAL)
    write_datagen(run)
    write_runs(run)
    (tmp_path / "vdb" / RUN_ID).mkdir(parents=True)
    (tmp_path / "vdb" / RUN_ID / MARKER).write_text(RUN_ID)
    results, text = vdb_finalize.finalize(run)
    assert results["status"] == "success" and (tmp_path / "vdb" / RUN_ID).is_dir()
    # No run recorded dropping the site server's collection: the results and the table say it is still there.
    assert list(results["cleanup"]) == ["collection_left"]
    assert "mlps_vectordb_20261205_120000_abcdef is still on http://milvus.example.org:19530" in text
    assert results["milvus_mode"] == "external" and "Milvus external" in text
    last = run.raw_dir("vector_database", "HNSW") / "run" / "04" / "summary.json"
    last.write_text(json.dumps({**json.loads(last.read_text()), "collection_dropped": True}))
    results, text = vdb_finalize.finalize(run)
    assert results["cleanup"] == {} and "still on" not in text
