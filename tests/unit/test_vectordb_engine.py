"""The vectordb job-side engine without Milvus: the seeded data and exact ground truth, the index parameter table,
the load/run steps against a fake client (unique keys, index build outcomes, query-count split, pooled QPS and
recall), the embedded server's pure helpers (config template, ports, data-directory ownership) and how a job
reaches Milvus (tokens from a file or an environment variable, the embedded server's state.json)."""

from __future__ import annotations

import argparse
import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from mlps_slurm.benchmarks.vectordb import connect, dataset, load, runs, server
from mlps_slurm.benchmarks.vectordb.connect import Endpoint, MilvusUnavailable
from mlps_slurm.benchmarks.vectordb.indexes import INDEX_TYPES, index_spec
from mlps_slurm.benchmarks.vectordb.request import VectorDbRequest

RUN_ID = "vectordb-20261205-120000-abcdef"


# --- dataset --------------------------------------------------------------------------------------------------------

def test_chunk_vectors_are_a_function_of_seed_and_chunk():
    a = dataset.chunk_vectors(42, 3, 50, 16, "uniform")
    assert a.dtype == np.float32 and a.shape == (50, 16)
    assert np.array_equal(a, dataset.chunk_vectors(42, 3, 50, 16, "uniform"))
    assert not np.allclose(a, dataset.chunk_vectors(42, 4, 50, 16, "uniform"))  # another chunk
    assert not np.allclose(a, dataset.chunk_vectors(43, 3, 50, 16, "uniform"))  # another seed
    assert 0 <= a.min() and a.max() < 1
    normal = dataset.chunk_vectors(42, 3, 2000, 4, "normal")
    assert normal.min() < 0 and abs(float(normal.mean())) < 0.1
    queries = dataset.query_vectors(42, 50, 16, "uniform")
    assert not np.allclose(queries, dataset.chunk_vectors(42, 0, 50, 16, "uniform"))
    with pytest.raises(ValueError, match="uniform, normal"):
        dataset.chunk_vectors(42, 0, 2, 2, "zipf")


def test_chunks_cover_every_key_once():
    parts = list(dataset.chunks(25_000, 7_000))
    assert parts == [(0, 0, 7000), (1, 7000, 7000), (2, 14000, 7000), (3, 21000, 4000)]
    keys = np.concatenate([np.arange(first, first + rows) for _, first, rows in parts])
    assert np.array_equal(keys, np.arange(25_000))
    assert list(dataset.chunks(14_000, 7_000)) == [(0, 0, 7000), (1, 7000, 7000)]
    assert list(dataset.chunks(3, 7_000)) == [(0, 0, 3)]


def naive_top_k(seed, n, chunk, dim, dist, metric, queries, k):
    vectors = np.concatenate([dataset.chunk_vectors(seed, c, rows, dim, dist)
                              for c, _, rows in dataset.chunks(n, chunk)]).astype(np.float64)
    q = queries.astype(np.float64)
    if metric == "COSINE":
        scores = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
            vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).T
    elif metric == "IP":
        scores = q @ vectors.T
    else:
        scores = -((q[:, None, :] - vectors[None, :, :]) ** 2).sum(axis=2)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("metric", ["COSINE", "L2", "IP"])
@pytest.mark.parametrize("dist", ["uniform", "normal"])
def test_ground_truth_is_brute_force_over_all_chunks(metric, dist):
    queries = dataset.query_vectors(7, 12, 8, dist)
    truth = dataset.ground_truth(7, 25_000, 7_000, 8, dist, metric, queries, 10)
    assert truth.dtype == np.int64 and truth.shape == (12, 10)
    assert np.array_equal(truth, naive_top_k(7, 25_000, 7_000, 8, dist, metric, queries, 10))
    assert truth.max() >= 7_000  # neighbours come from later chunks too, with their global keys


def test_ground_truth_with_chunks_smaller_than_k_and_fewer_vectors_than_k():
    queries = dataset.query_vectors(1, 5, 4, "normal")
    assert np.array_equal(dataset.ground_truth(1, 25, 3, 4, "normal", "L2", queries, 10),
                          naive_top_k(1, 25, 3, 4, "normal", "L2", queries, 10))
    few = dataset.ground_truth(1, 4, 3, 4, "normal", "IP", queries, 10)
    assert few.shape == (5, 4) and all(sorted(row) == [0, 1, 2, 3] for row in few.tolist())


def test_recall_at_k_by_hand():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert dataset.recall_at_k([[4, 3, 2, 1], [8, 7, 6, 5]], truth, 4) == 1.0
    assert dataset.recall_at_k([[1, 2, 90, 91], [5, 6, 92, 93]], truth, 4) == 0.5
    assert dataset.recall_at_k([[9, 10, 11, 12], [13, 14, 15, 16]], truth, 4) == 0.0
    assert dataset.recall_at_k([[1, 2, 3, 4]], truth, 4) == 0.5  # a query without results counts as 0
    assert dataset.recall_at_k([[1, 9], [9, 9]], truth, 2) == 0.25  # only the top 2 of the truth count
    assert dataset.recall_at_k([], np.empty((0, 4), dtype=np.int64), 4) == 0.0


# --- indexes --------------------------------------------------------------------------------------------------------

def spec(**changes):
    return index_spec(VectorDbRequest(**changes).to_dict())


def test_each_index_type_builds_and_searches_with_its_own_parameters():
    hnsw = spec(index="HNSW", metric="L2", max_degree=32, ef_construction=100, search_ef=50, top_k=10)
    assert hnsw == {"index_type": "HNSW", "metric_type": "L2", "build_params": {"M": 32, "efConstruction": 100},
                    "search_params": {"ef": 50}}
    assert spec(index="HNSW", search_ef=5, top_k=40)["search_params"] == {"ef": 40}  # ef >= top_k
    disk = spec(index="DISKANN", max_degree=48, search_list_size=100, top_k=10)
    assert disk["build_params"] == {"max_degree": 48, "search_list_size": 100}
    assert disk["search_params"] == {"search_list": 100}
    assert spec(index="DISKANN", search_list_size=20, top_k=64)["search_params"] == {"search_list": 64}
    aisaq = spec(index="AISAQ", max_degree=16, search_list_size=8, inline_pq=4, top_k=12)
    assert aisaq["build_params"] == {"max_degree": 16, "search_list_size": 8, "inline_pq": 4}
    assert aisaq["search_params"] == {"search_list": 12}
    for ivf in ("IVF_FLAT", "IVF_SQ8"):
        s = spec(index=ivf, nlist=128, nprobe=16, metric="IP")
        assert s == {"index_type": ivf, "metric_type": "IP", "build_params": {"nlist": 128},
                     "search_params": {"nprobe": 16}}
    flat = spec(index="FLAT")
    assert flat["build_params"] == {} and flat["search_params"] == {} and flat["metric_type"] == "COSINE"


def test_the_embedded_server_cannot_build_diskann_or_aisaq():
    assert {n for n, t in INDEX_TYPES.items() if not t.embedded} == {"DISKANN", "AISAQ"}
    assert "2.5" in INDEX_TYPES["DISKANN"].needs and "2.6" in INDEX_TYPES["AISAQ"].needs


# --- load and runs against a fake client ----------------------------------------------------------------------------

class FakeClient:
    def __init__(self, truth=None, fail_on=None, index_states=()):
        self.inserted: list[dict] = []
        self.searches: list[int] = []
        self.truth, self.fail_on = truth, fail_on
        self.index_states = list(index_states)
        self.dropped, self.released, self.loaded = [], [], []

    def insert(self, name, rows):
        if self.fail_on == "insert":
            raise RuntimeError("permission denied for token root:s3cr3t")
        self.inserted += rows

    def flush(self, name):
        pass

    def prepare_index_params(self):
        class Params:
            def add_index(self, **kw):
                self.kw = kw
        return Params()

    def create_index(self, name, params, timeout, sync):
        self.index_params = params.kw

    def describe_index(self, name, field):
        return self.index_states.pop(0) if len(self.index_states) > 1 else self.index_states[0]

    def drop_index(self, name, field):
        self.dropped.append(name)

    def release_collection(self, name):
        self.released.append(name)

    def load_collection(self, name, timeout):
        self.loaded.append(name)

    def search(self, name, data, limit, search_params, anns_field):
        self.searches.append(len(data))
        if self.truth is None:
            return [[] for _ in data]
        return [[{"id": int(i)} for i in self.truth[j % len(self.truth)][:limit]] for j in range(len(data))]


LOAD = {"chunk_size": 7, "insert_batch_size": 3, "seed": 5, "dimension": 4, "distribution": "uniform"}


def test_insert_uses_global_keys_across_chunks_and_batches():
    client = FakeClient()
    figures = load.insert_all(client, "c", LOAD, 25)
    keys = [row["id"] for row in client.inserted]
    assert sorted(keys) == list(range(25)) and len(keys) == 25
    assert figures["insert_calls"] == 3 + 3 + 3 + 2  # chunks of 7,7,7,4 in batches of 3
    row = client.inserted[16]  # key 16 is chunk 2's row 2
    assert row["id"] == 16 and np.array_equal(row["vector"], dataset.chunk_vectors(5, 2, 7, 4, "uniform")[2])


def test_index_build_outcomes(monkeypatch):
    monkeypatch.setattr(load, "POLL_S", 0)
    index = {"index_type": "HNSW", "metric_type": "L2", "build_params": {"M": 8}}
    ok = FakeClient(index_states=[{"state": "InProgress"}, {"state": "Finished", "pending_index_rows": 3},
                                  {"state": "Finished", "pending_index_rows": 0, "indexed_rows": 25}])
    done = load.build_index(ok, "c", index, timeout=60)
    assert done["indexed_rows"] == 25 and done["index_params"] == {"M": 8} and not ok.dropped
    assert ok.index_params["index_type"] == "HNSW" and ok.index_params["params"] == {"M": 8}
    failed = FakeClient(index_states=[{"state": "Failed", "index_state_fail_reason": "out of memory"}])
    with pytest.raises(load.LoadError, match="failed to build the HNSW index: out of memory"):
        load.build_index(failed, "c", index, timeout=60)
    assert failed.dropped == ["c"]
    stuck = FakeClient(index_states=[{"state": "InProgress", "indexed_rows": 2, "total_rows": 25}])
    with pytest.raises(load.LoadError, match=r"not built after 0 s .*index_timeout_s.*2 of 25"):
        load.build_index(stuck, "c", index, timeout=0)
    assert stuck.dropped == ["c"]


def test_a_load_failure_names_its_phase_and_never_the_token():
    class Broken(FakeClient):
        def get_server_version(self):
            return "v2.3.5"

        def has_collection(self, name):
            return False

        def create_schema(self, **kw):
            return type("Schema", (), {"add_field": lambda *a, **k: None})()

        def create_collection(self, *a, **kw):
            pass

    ep = Endpoint("http://milvus:19530", "root:s3cr3t")
    r = {**LOAD, "metric": "L2", "index": "HNSW", "num_shards": 1, "recall_queries": 3, "top_k": 2}
    with pytest.raises(load.LoadError) as err:
        load.run(Broken(fail_on="insert"), ep, r, {"collection": "c", "num_vectors_loaded": 10}, Path("/nowhere"), 5)
    assert str(err.value).startswith("insert: ") and "***" in str(err.value) and "s3cr3t" not in str(err.value)


def test_pooled_qps_is_all_queries_over_the_union_of_windows():
    ranks = [{"start": 100.0, "end": 110.0, "queries": 300}, {"start": 102.0, "end": 112.0, "queries": 500}]
    lat = np.array([0.001, 0.002, 0.003, 0.004, 0.010])
    out = runs.pooled(ranks, lat)
    assert out["queries"] == 800 and out["calls"] == 5 and out["window_s"] == 12.0
    assert out["throughput_qps"] == pytest.approx(800 / 12.0)
    assert out["latency_ms"]["mean"] == pytest.approx(4.0)
    assert out["latency_ms"]["p50"] == pytest.approx(3.0)
    assert out["latency_ms"]["p99"] == pytest.approx(np.percentile(lat * 1000, 99))
    assert out["start_epoch"] == 100.0 and out["end_epoch"] == 112.0
    empty = runs.pooled([{"start": 5.0, "end": 5.0, "queries": 0}], np.empty(0))
    assert empty["throughput_qps"] is None and empty["latency_ms"]["p95"] is None


def test_rank_prefers_the_mpi_launchers_own_rank(monkeypatch):
    for v in runs.RANK_VARIABLES:
        monkeypatch.delenv(v, raising=False)
    assert runs.rank_and_size(4) == (0, 4)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    assert runs.rank_and_size(4) == (3, 4)
    monkeypatch.delenv("OMPI_COMM_WORLD_RANK")
    monkeypatch.setenv("SLURM_PROCID", "2")
    assert runs.rank_and_size(4) == (2, 4)
    monkeypatch.setenv("PMIX_RANK", "")  # empty: not a rank
    assert runs.rank_and_size(4) == (2, 4)


def test_a_counted_run_splits_queries_over_ranks_then_collect_pools_and_measures_recall(tmp_path):
    datagen, leaf = tmp_path / "datagen", tmp_path / "run" / "00"
    datagen.mkdir()
    queries = dataset.query_vectors(3, 20, 4, "uniform")
    truth = dataset.ground_truth(3, 50, 16, 4, "uniform", "COSINE", queries, 5)
    np.save(datagen / "queries.npy", queries)
    np.save(datagen / "ground_truth.npy", truth)
    settings = {"collection": "c", "index_spec": {"metric_type": "COSINE", "search_params": {"ef": 5}}}
    request = {"top_k": 5, "query_batch_size": 3, "queries": 7, "duration": None}
    client = FakeClient(truth=truth)
    runs.prepare(client, settings, leaf, 10)
    assert client.released == ["c"] and client.loaded == ["c"] and (leaf / "prepare.json").is_file()
    (leaf / "ready").mkdir()
    (leaf / "ready" / "1").touch()  # rank 1 is ready, so rank 0's barrier opens
    r0 = runs.query(client, settings, request, leaf, 0, 2, datagen / "queries.npy")
    r1 = runs.query(client, settings, request, leaf, 1, 2, datagen / "queries.npy")
    assert (r0["queries"], r0["calls"], r1["queries"], r1["calls"]) == (4, 2, 3, 1)
    with pytest.raises(load.LoadError, match="placed 2"):
        runs.query(client, settings, request, leaf, 2, 2, datagen / "queries.npy")
    summary = runs.collect(client, settings, request, leaf, datagen, 2)
    assert summary["queries"] == 7 and summary["calls"] == 3 and summary["mode"] == "queries"
    assert summary["recall"] == 1.0 and summary["recall_queries"] == 20 and summary["recall_k"] == 5
    assert json.loads((leaf / "summary.json").read_text())["throughput_qps"] == summary["throughput_qps"]
    assert not (leaf / "ready").exists() and (leaf / "rank_1.npy").is_file()
    wrong = FakeClient(truth=truth[:, ::-1] + 1000)  # never a true neighbour
    assert runs.measure_recall(wrong, settings, request, datagen)["recall"] == 0.0
    (leaf / "rank_1.json").unlink()
    with pytest.raises(load.LoadError, match="rank 1"):
        runs.collect(client, settings, request, leaf, datagen, 2)


def test_prepare_cleans_a_leaf_left_by_an_earlier_attempt(tmp_path):
    leaf = tmp_path / "00"
    leaf.mkdir()
    for name in ("rank_0.json", "rank_0.npy", "summary.json", "engine_error_rank_1.json"):
        (leaf / name).write_text("{}")
    runs.prepare(FakeClient(), {"collection": "c"}, leaf, 10)
    assert sorted(p.name for p in leaf.iterdir()) == ["prepare.json"]


def test_prepare_clears_a_stale_barrier(tmp_path):
    leaf = tmp_path / "00"
    (leaf / "ready").mkdir(parents=True)
    for rank in ("0", "1"):
        (leaf / "ready" / rank).touch()
    (leaf / "rank_0.npy").write_text("")
    runs.prepare(FakeClient(), {"collection": "c"}, leaf, 10)
    assert not (leaf / "rank_0.npy").exists()
    assert not (leaf / "ready").exists() or not any((leaf / "ready").iterdir())


# --- the embedded server's pure helpers -----------------------------------------------------------------------------

def test_render_config_fills_values_and_defaults():
    template = ("port: {{ proxy_port(int): 19530 }}\nlog: {{ etcd_log_level: info }}\n"
                "auth: {{ authorization_enabled(bool): false }}\ndir: {{local_storage_dir}}\n")
    text = server.render_config(template, {"proxy_port": 20001, "authorization_enabled": True,
                                           "local_storage_dir": "/d"})
    assert text == "port: 20001\nlog: info\nauth: true\ndir: /d\n"
    with pytest.raises(server.ServeError, match="'local_storage_dir'"):
        server.render_config(template, {})


YAML = """\
common:
  session:
    ttl: 30 # the lease
    retryTimes: 30
  # ttl: 99
proxy:
  session:
    ttl: 30
"""


def test_set_literals_replaces_by_dotted_path_and_keeps_comments():
    out = server.set_literals(YAML, {"common.session.ttl": "10"})
    assert out == YAML.replace("ttl: 30 # the lease", "ttl: 10 # the lease")
    assert "proxy:\n  session:\n    ttl: 30" in out and "# ttl: 99" in out
    both = server.set_literals(YAML, {"common.session.ttl": "10", "proxy.session.ttl": "5"})
    assert both.count("ttl: 30") == 0 and "    ttl: 5" in both
    with pytest.raises(server.ServeError, match="common.session.missing"):
        server.set_literals(YAML, {"common.session.missing": "1"})
    with pytest.raises(server.ServeError, match="session.ttl"):
        server.set_literals(YAML, {"session.ttl": "1"})  # a path, not a key name


def test_the_wheels_config_template_renders_with_our_values():
    import milvus  # noqa: F401  (pinned in requirements/nodeps.txt: the test must run, not skip)
    import yaml
    template = (server.package_dir() / "data" / "config.yaml.template").read_text()
    values = {k: 30000 + i for i, k in enumerate(server.PORT_KEYS)}
    values.update(etcd_log_path="/x/etcd.log", etcd_data_dir="/x/etcd", local_storage_dir="/x/data",
                  rocksmq_data_dir="/x/mq", system_log_path="/x/logs", authorization_enabled=True)
    config = yaml.safe_load(server.set_literals(server.render_config(template, values), server.OVERRIDES))
    assert config["common"]["session"]["ttl"] == 10 and config["common"]["security"]["authorizationEnabled"]
    assert config["proxy"]["port"] == values["proxy_port"]


def test_choose_ports_skips_a_block_with_a_port_in_use():
    for base in range(40000, 50000, 1024):
        held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            held.bind(("0.0.0.0", base + 3))
            held.listen()
        except OSError:
            held.close()
            continue
        try:
            ports = server.choose_ports(base, 0)
        finally:
            held.close()
        break
    else:
        pytest.skip("no free port to hold between 40000 and 50000")
    values = sorted(ports.values())
    assert len(ports) == 11 and len(set(values)) == 11 and base + 3 not in values
    assert values == list(range(values[0], values[0] + 11)) and values[0] >= base + server.PORT_BLOCK
    assert set(ports) == {*server.PORT_KEYS, "metrics_port"}


def test_a_data_directory_is_claimed_and_removed_only_with_the_runs_marker(tmp_path):
    mine = tmp_path / RUN_ID
    server.claim_data_dir(mine, RUN_ID)
    assert (mine / server.MARKER).read_text().strip() == RUN_ID
    (mine / "data").mkdir()
    server.claim_data_dir(mine, RUN_ID)  # the next job of the chain reuses it
    assert (mine / "data").is_dir()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious").write_text("keep")
    with pytest.raises(server.ServeError, match="refusing"):
        server.claim_data_dir(foreign, RUN_ID)
    other = tmp_path / "other"
    server.claim_data_dir(other, "vectordb-other")
    with pytest.raises(server.ServeError, match="refusing"):
        server.claim_data_dir(other, RUN_ID)
    assert not server.remove_data_dir(foreign, RUN_ID) and (foreign / "precious").read_text() == "keep"
    assert not server.remove_data_dir(other, RUN_ID) and (other / server.MARKER).is_file()
    assert server.remove_data_dir(mine, RUN_ID) and not mine.exists()
    assert not server.remove_data_dir(tmp_path / "absent", RUN_ID)


# --- connect --------------------------------------------------------------------------------------------------------

def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    connect.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_external_token_from_a_file_or_an_environment_variable(tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text("root:s3cr3t\n")
    ep = connect.endpoint(args("--uri", "http://milvus:19530", "--token-file", str(token), "--db-name", "bench"))
    assert ep == Endpoint("http://milvus:19530", "root:s3cr3t", "bench")
    monkeypatch.setenv("MLPS_TEST_TOKEN", "api-key-123")
    assert connect.endpoint(args("--uri", "http://milvus:19530", "--token-env", "MLPS_TEST_TOKEN")).token == \
        "api-key-123"
    assert connect.endpoint(args("--uri", "http://milvus:19530")).token is None
    assert ep.redact("denied for root:s3cr3t at root:s3cr3t") == "denied for *** at ***"
    assert Endpoint("http://m:1", None).redact("as is") == "as is"


def test_a_missing_token_names_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.delenv("MLPS_TEST_TOKEN", raising=False)
    with pytest.raises(MilvusUnavailable, match=r"token_env: \$MLPS_TEST_TOKEN is not set"):
        connect.endpoint(args("--uri", "http://milvus:19530", "--token-env", "MLPS_TEST_TOKEN"))
    with pytest.raises(MilvusUnavailable, match="token_file .*/absent: cannot read it"):
        connect.endpoint(args("--uri", "http://milvus:19530", "--token-file", str(tmp_path / "absent")))
    binary = tmp_path / "binary"
    binary.write_bytes(b"root:s3cr3t\xff\xfe")
    with pytest.raises(MilvusUnavailable) as err:
        connect.endpoint(args("--uri", "http://milvus:19530", "--token-file", str(binary)))
    assert str(binary) in str(err.value) and "s3cr3t" not in str(err.value)
    with pytest.raises(MilvusUnavailable, match="neither"):
        connect.endpoint(args())


def test_an_unreachable_server_is_named_by_uri_never_by_token():
    import pymilvus  # noqa: F401  (pinned in requirements/jobs.txt)
    with pytest.raises(MilvusUnavailable) as err:
        connect.client(Endpoint("http://127.0.0.1:1", "root:s3cr3t"), timeout=0.5)
    assert "http://127.0.0.1:1" in str(err.value) and "s3cr3t" not in str(err.value)


def write_state(state_dir: Path, **state) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "state.json").write_text(json.dumps(state))


def test_the_embedded_endpoint_waits_for_its_jobs_server(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    root = tmp_path / "milvus-server"
    (root / "4242").mkdir(parents=True)
    (root / "4242" / "token").write_text("root:pw\n")
    write_state(root / "4243", state="ready", host=socket.gethostname(), port=1)  # another job's server
    later = threading.Timer(0.3, write_state, (root / "4242",),
                            {"state": "ready", "host": socket.gethostname(), "port": 20001, "version": "2.3.5"})
    later.start()
    try:
        ep = connect.endpoint(args("--server-state-root", str(root), "--wait-timeout", "10"))
    finally:
        later.cancel()
    assert ep == Endpoint("http://127.0.0.1:20001", "root:pw", None, "2.3.5", {})
    write_state(root / "4242", state="ready", host="n3", port=20001)
    assert connect.endpoint(args("--server-state-root", str(root))).uri == "http://n3:20001"


def test_the_embedded_endpoint_reports_a_failed_or_absent_server(tmp_path, monkeypatch):
    root = tmp_path / "milvus-server"
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(MilvusUnavailable, match="SLURM_JOB_ID"):
        connect.endpoint(args("--server-state-root", str(root)))
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    with pytest.raises(MilvusUnavailable, match=r"not ready after 0.2 s .*state.json: absent"):
        connect.endpoint(args("--server-state-root", str(root), "--wait-timeout", "0.2"))
    write_state(root / "7", state="failed", reason="no block of 11 free ports from 19530 upward")
    with pytest.raises(MilvusUnavailable, match="server failed: no block of 11 free ports"):
        connect.endpoint(args("--server-state-root", str(root), "--wait-timeout", "10"))
    write_state(root / "7", state="ready", host=socket.gethostname(), port=5)  # but no token file
    with pytest.raises(MilvusUnavailable, match="token"):
        connect.endpoint(args("--server-state-root", str(root), "--wait-timeout", "10"))


def test_a_non_root_server_gets_a_private_tmp_through_a_user_namespace(tmp_path, monkeypatch):
    from mlps_slurm.benchmarks.vectordb import server

    bin_dir = tmp_path / "bin"
    assert server.server_argv(bin_dir, tmp_path / "d")[0] == str(bin_dir / "milvus") or os.geteuid() != 0
    monkeypatch.setattr(server.os, "geteuid", lambda: 1000)
    data = tmp_path / "d"
    data.mkdir()
    argv = server.server_argv(bin_dir, data)
    assert argv[0].endswith("unshare") and "--map-root-user" in argv and "--mount" in argv
    assert argv[-4:] == [str(data / "tmp"), str(bin_dir / "milvus"), "run", "standalone"]
    assert (data / "tmp").is_dir()
    monkeypatch.setattr(server.shutil, "which", lambda name: None)
    with pytest.raises(server.ServeError, match="vectordb.milvus.mode: external"):
        server.server_argv(bin_dir, data)
