"""The vectordb chain on the real local cluster with a real Milvus (PyPI milvus 2.3.5, started by the jobs): load,
index, timed query runs from 2 processes on each of 2 nodes, recall against exact ground truth, the verdict, the
bundle; the server and its data gone afterwards, also after scancel mid-run; and an external server: one that is
unreachable (the job fails fast naming the URI, never the token) and a reachable one whose token never reaches the
run directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mlps_slurm.bundle import make_bundle
from mlps_slurm.verify import verify_run

pytestmark = pytest.mark.slurm
SMALL = ["--num-vectors", "20000", "--dimension", "64", "--chunk-size", "7000", "--insert-batch-size", "2000",
         "--recall-queries", "200"]


@pytest.fixture
def dirs(tmp_path):
    results = Path(tempfile.mkdtemp(prefix="mlps-vdb-", dir="/dev/shm"))
    yield results, tmp_path / "milvus-data"
    shutil.rmtree(results, ignore_errors=True)


def submit(results: Path, data: Path, *extra: str, wait: bool = True) -> subprocess.Popen:
    argv = [sys.executable, "-m", "mlps_slurm", "submit", "vectordb", *SMALL, "--results-dir", str(results),
            "-o", f"vectordb.milvus.data_dir={data}", *extra]
    if wait:
        argv += ["--wait", "--timeout", "900"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def the_run(results: Path) -> Path:
    (run,) = [p for p in results.iterdir() if not p.name.startswith(".")]
    return run


def milvus_processes() -> list[str]:
    proc = subprocess.run(["pgrep", "-af", "milvus run standalone"], capture_output=True, text=True)
    return [line for line in proc.stdout.splitlines() if line.strip()]


def leftovers(data: Path) -> list[str]:
    """What is left in the data root besides the shared, extracted server binaries."""
    return sorted(p.name for p in data.iterdir() if not p.name.startswith(".milvus-")) if data.exists() else []


def contains(root: Path, secret: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


class TokenWatch(threading.Thread):
    """Collects the per-job passwords of the embedded servers while the chain runs (they exist only then)."""

    def __init__(self, results: Path):
        super().__init__(daemon=True)
        self.results, self.tokens, self.stop = results, set(), threading.Event()

    def run(self):
        while not self.stop.is_set():
            for token in self.results.glob("*/milvus-server/*/token"):
                try:
                    self.tokens.add(token.read_bytes().strip())
                except OSError:
                    pass
            time.sleep(0.2)


def test_embedded_chain_loads_indexes_queries_and_cleans_up(dirs, tmp_path):
    results, data = dirs
    watch = TokenWatch(results)
    watch.start()
    proc = submit(results, data, "--index", "FLAT", "--duration", "5", "--runs", "2", "-N", "2", "-a", "2", "--json")
    out, err = proc.communicate(timeout=900)
    watch.stop.set()
    run = the_run(results)
    assert proc.returncode == 0, out + err
    doc = json.loads(out)  # --json: one document on stdout, the messages on stderr
    assert doc["run_dir"] == str(run) and doc["run_id"] == run.name and doc["exit_code"] == 0
    assert set(doc["jobs"]) == {"preflight", "load", "run", "finalize"} and "submitted" in err
    summary = json.loads((run / "results" / "results.json").read_text())
    assert doc["results"] == summary
    assert summary["status"] == "success", summary["reasons"]
    # A scaled-down, 5 s, 2-run FLAT run is INVALID for submission, and says why.
    assert summary["verdict"] == "INVALID"
    assert {f["rule_id"] for f in summary["rule_findings"]} >= {"vdb.runtime", "vdb.run_count", "vdb.index_type"}
    load = summary["load"]
    assert load["num_vectors"] == 20000 and load["server_version"] == "v2.3.5-lite" and load["index_build_s"] >= 0
    raw = run / "raw" / "vector_database" / "FLAT"
    truth = np.load(raw / "datagen" / "ground_truth.npy")
    assert truth.shape == (200, 10) and truth.max() >= 14000  # keys from the third chunk: unique across chunks
    assert len(summary["runs"]) == 2
    for row in summary["runs"]:
        leaf = raw / "run" / row["run"]
        s = json.loads((leaf / "summary.json").read_text())
        assert s["recall"] == 1.0  # FLAT is exact: every key unique, ground truth over all 20,000 vectors
        assert s["query_processes"] == 4 and len(s["per_rank"]) == 4
        assert {r["node"] for r in s["per_rank"]} == {"n1", "n2"}  # placed by srun across the allocation
        assert sum(r["queries"] for r in s["per_rank"]) == s["queries"] > 0
        assert s["throughput_qps"] == pytest.approx(s["queries"] / s["window_s"])
        assert 5.0 <= s["window_s"] < 7.0
        calls = np.concatenate([np.load(leaf / f"rank_{r}.npy") for r in range(4)])
        assert len(calls) == s["calls"] == s["queries"]  # batch 1: one query per call
        assert s["latency_ms"]["mean"] == pytest.approx(calls.mean() * 1000)
        assert s["latency_ms"]["p50"] <= s["latency_ms"]["p95"] <= s["latency_ms"]["p99"] <= s["latency_ms"]["p99_9"]
        assert s["load_s"] > 0 and s["recall_s"] > 0
    assert summary["aggregate"]["throughput_qps"]["mean"] == pytest.approx(
        sum(r["throughput_qps"] for r in summary["runs"]) / 2)
    assert "QPS" in (run / "results" / "results.txt").read_text()
    # Nothing left running or on the storage under test; no password anywhere in the run directory.
    assert milvus_processes() == []
    assert leftovers(data) == [] and summary["cleanup"]["data_dir_removed"]
    assert len(watch.tokens) >= 3, "a token per job (load, 2 runs) was expected"
    for token in watch.tokens:
        assert contains(run, token) == [], "a server password reached the run directory"
    # As a user would: verify, then bundle (INVALID runs only with --allow-invalid, under invalid/).
    assert verify_run(run).verdict.value == "INVALID"
    bundle = make_bundle([run], "local-dev", "localhost", tmp_path / "bundle", allow_invalid=True)
    placed = sorted(str(p.relative_to(tmp_path / "bundle")) for p in (tmp_path / "bundle").rglob("summary.json"))
    assert any("vector_database/FLAT/run/" in p for p in placed) and any("/datagen/" in p for p in placed), placed
    assert bundle.tarball.exists()


def summary_collection(run: Path) -> str:
    return json.loads((run / "manifest.json").read_text())["settings"]["collection"]


def _chain_ids(run: Path) -> list[str]:
    manifest = json.loads((run / "manifest.json").read_text())
    return [j["job_id"] for j in manifest.get("jobs", {}).values() if j.get("job_id")]


def test_scancel_mid_run_stops_the_server_and_removes_its_data(dirs):
    results, data = dirs
    proc = submit(results, data, "--index", "FLAT", "--duration", "120", "--runs", "2", "-N", "1", wait=False)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    run = the_run(results)
    # Slow machines take minutes to start Milvus twice (load, then run): wait as long as the chain is alive, and
    # when it ended or the wait runs out, say where it stood and why.
    deadline = time.monotonic() + 600
    while not list(run.glob("raw/vector_database/FLAT/run/00/ready/*")):
        queued = subprocess.run(["squeue", "-h", "-j", ",".join(_chain_ids(run))], capture_output=True, text=True)
        alive = bool(queued.stdout.strip())
        if not alive or time.monotonic() > deadline:
            logs = {p.name: p.read_text(errors="replace")[-1500:] for p in sorted((run / "logs").glob("*.out"))}
            pytest.fail(f"the first query run never started ({'timed out' if alive else 'the chain ended'}); "
                        f"squeue: {queued.stdout!r}; logs: {json.dumps(logs, indent=1)}")
        time.sleep(0.5)
    time.sleep(2)  # inside the timed window
    assert milvus_processes(), "the embedded server should be running now"
    subprocess.run(["scancel", *_chain_ids(run)], check=True)
    deadline = time.monotonic() + 60
    while True:
        queued = subprocess.run(["squeue", "-h", "-j", ",".join(_chain_ids(run))], capture_output=True, text=True)
        if not queued.stdout.strip() and not milvus_processes():
            break
        assert time.monotonic() < deadline, f"still there after scancel: {queued.stdout} {milvus_processes()}"
        time.sleep(0.5)
    assert leftovers(data) == []  # the supervisor removed the data directory on SIGTERM
    state = json.loads(next(run.glob("milvus-server/*/state.json")).read_text())
    assert state.get("data_removed") in (True, None)
    assert not list(run.glob("milvus-server/*/token"))


def test_unreachable_external_server_fails_fast_naming_the_uri_not_the_token(dirs, tmp_path):
    results, data = dirs
    secret = "root:s3cret-never-logged-4711"
    token_file = tmp_path / "milvus-token"
    token_file.write_text(secret + "\n")
    started = time.monotonic()
    proc = submit(results, data, "--index", "HNSW", "--duration", "5", "--runs", "1", "-N", "1",
                  "-o", "vectordb.milvus.mode=external", "-o", "vectordb.milvus.uri=http://127.0.0.1:9",
                  "-o", f"vectordb.milvus.token_file={token_file}")
    out, err = proc.communicate(timeout=600)
    elapsed = time.monotonic() - started
    run = the_run(results)
    summary = json.loads((run / "results" / "results.json").read_text())
    assert summary["status"] == "failed" and summary["verdict"] == "INVALID"
    assert any("http://127.0.0.1:9" in r and r.startswith("load:") for r in summary["reasons"]), summary["reasons"]
    assert elapsed < 180, f"the chain took {elapsed:.0f} s to fail"
    assert contains(run, secret.encode()) == [] and secret not in out + err


def test_external_server_runs_the_chain_and_its_token_stays_out_of_the_run(dirs, tmp_path):
    """The 'site' server is a real Milvus started here (the embedded one, outside Slurm) with a password."""
    results, data = dirs
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["SLURM_JOB_ID"] = "site"
    server = subprocess.Popen([sys.executable, "-m", "mlps_slurm.benchmarks.vectordb.job", "serve",
                               "--data-dir", str(tmp_path / "site-milvus" / "site"), "--run-id", "site",
                               "--state-root", str(tmp_path / "state"), "--port-base", "29530"], env=env)
    try:
        state_file = tmp_path / "state" / "site" / "state.json"
        deadline = time.monotonic() + 180
        while not (state_file.exists() and json.loads(state_file.read_text())["state"] in ("ready", "failed")):
            assert time.monotonic() < deadline and server.poll() is None, "the site server did not start"
            time.sleep(0.2)
        state = json.loads(state_file.read_text())
        assert state["state"] == "ready", state
        token = (tmp_path / "state" / "site" / "token").read_text().strip()
        token_file = tmp_path / "token"
        token_file.write_text(token)
        proc = submit(results, data, "--index", "HNSW", "--duration", "3", "--runs", "1", "-N", "1",
                      "-o", "vectordb.milvus.mode=external",
                      "-o", f"vectordb.milvus.uri=http://127.0.0.1:{state['port']}",
                      "-o", f"vectordb.milvus.token_file={token_file}")
        out, err = proc.communicate(timeout=600)
        run = the_run(results)
        summary = json.loads((run / "results" / "results.json").read_text())
        assert summary["status"] == "success", summary["reasons"]
        assert summary["runs"][0]["recall"] > 0.9 and summary["load"]["index_params"] == {"M": 64,
                                                                                             "efConstruction": 200}
        assert contains(run, token.encode()) == [] and token not in out + err
        # The last run dropped its collection from the site's server.
        from pymilvus import MilvusClient

        site = MilvusClient(uri=f"http://127.0.0.1:{state['port']}", token=token)
        assert summary["cleanup"] == {} and not site.has_collection(summary_collection(run))
        site.close()
        assert not data.exists() or leftovers(data) == []  # external: nothing on the local data root
    finally:
        server.send_signal(15)
        server.wait(60)
    assert milvus_processes() == []


def test_an_index_build_past_its_timeout_fails_the_load_with_the_reason_and_leaves_nothing(dirs):
    results, data = dirs
    proc = submit(results, data, "--index", "HNSW", "--duration", "5", "--runs", "1", "-N", "1",
                  "-o", "vectordb.milvus.index_timeout_s=1")
    out, err = proc.communicate(timeout=600)
    run = the_run(results)
    summary = json.loads((run / "results" / "results.json").read_text())
    assert summary["status"] == "failed"
    (reason,) = [r for r in summary["reasons"] if r.startswith("load:")]
    assert "HNSW index was not built after 1 s" in reason and "index_timeout_s" in reason, reason
    assert summary["jobs"]["run"]["state"] != "COMPLETED"  # the query runs never ran on a missing index
    assert milvus_processes() == [] and leftovers(data) == []
