"""The load job's work (on its batch host): a fresh collection, every vector inserted with keys 0..N-1, the index
built and waited for with a timeout, then the query set and its exact ground truth. Writes datagen/summary.json,
queries.npy and ground_truth.npy; a failure leaves engine_error.json naming the phase."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mlps_slurm.benchmarks.vectordb import dataset
from mlps_slurm.benchmarks.vectordb.connect import Endpoint, MilvusUnavailable, _message
from mlps_slurm.steps.progress import Progress

VECTOR_FIELD = "vector"
KEY_FIELD = "id"
POLL_S = 1.0


class LoadError(RuntimeError):
    pass


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def create_collection(client: Any, name: str, dimension: int, metric: str, shards: int) -> None:
    from pymilvus import DataType

    if client.has_collection(name):
        client.drop_collection(name)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(KEY_FIELD, DataType.INT64, is_primary=True)
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dimension)
    client.create_collection(name, schema=schema, num_shards=shards, metric_type=metric)


def insert_all(client: Any, name: str, r: Mapping[str, Any], num_vectors: int,
               progress: Progress | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    calls = 0
    for number, first, rows in dataset.chunks(num_vectors, r["chunk_size"]):
        vectors = dataset.chunk_vectors(r["seed"], number, rows, r["dimension"], r["distribution"])
        for lo in range(0, rows, r["insert_batch_size"]):
            hi = min(rows, lo + r["insert_batch_size"])
            client.insert(name, [{KEY_FIELD: first + i, VECTOR_FIELD: vectors[i]} for i in range(lo, hi)])
            calls += 1
            if progress is not None:
                progress.update(first + hi, "inserting")
    insert_s = time.perf_counter() - started
    started = time.perf_counter()
    client.flush(name)
    return {"insert_s": insert_s, "insert_calls": calls, "insert_vectors_per_s": num_vectors / insert_s,
            "flush_s": time.perf_counter() - started}


def build_index(client: Any, name: str, spec: Mapping[str, Any], timeout: float,
                progress: Progress | None = None) -> dict[str, Any]:
    """Create the index and wait until every row is indexed; a failed build or the timeout drops the index and
    raises with Milvus's reason (a build that fails is retried by the server forever: nothing else would end)."""
    params = client.prepare_index_params()
    params.add_index(field_name=VECTOR_FIELD, index_type=spec["index_type"], metric_type=spec["metric_type"],
                     params=dict(spec["build_params"]), index_name=VECTOR_FIELD)
    started = time.perf_counter()
    client.create_index(name, params, timeout=timeout, sync=False)
    while True:
        info = client.describe_index(name, VECTOR_FIELD)
        state = str(info.get("state", ""))
        if progress is not None:
            progress.update(int(info.get("indexed_rows") or 0), f"building the {spec['index_type']} index")
        if state == "Finished" and not info.get("pending_index_rows") \
                and int(info.get("indexed_rows") or 0) >= int(info.get("total_rows") or 0):
            break
        if state == "Failed":
            reason = info.get("index_state_fail_reason") or "no reason given"
            _drop_index(client, name)
            raise LoadError(f"Milvus failed to build the {spec['index_type']} index: {reason}")
        if time.perf_counter() - started > timeout:
            _drop_index(client, name)
            raise LoadError(f"the {spec['index_type']} index was not built after {timeout:g} s "
                            f"(vectordb.milvus.index_timeout_s; state {state or '?'}, "
                            f"{info.get('indexed_rows')} of {info.get('total_rows')} rows indexed); dropped")
        time.sleep(POLL_S)
    return {"index_build_s": time.perf_counter() - started, "indexed_rows": info.get("indexed_rows"),
            "index_params": dict(spec["build_params"])}


def _drop_index(client: Any, name: str) -> None:
    try:
        client.drop_index(name, VECTOR_FIELD)
    except Exception:  # the reason already raised matters more than a failed clean-up
        pass


def run(client: Any, ep: Endpoint, r: Mapping[str, Any], settings: Mapping[str, Any], out: Path,
        index_timeout: float) -> dict[str, Any]:
    name = settings["collection"]
    n = int(settings["num_vectors_loaded"])
    summary: dict[str, Any] = {"start": now_iso(), "collection": name, "num_vectors": n,
                               "dimension": r["dimension"], "distribution": r["distribution"], "seed": r["seed"],
                               "metric": r["metric"], "index_type": r["index"], "uri": ep.uri}
    progress = Progress("load", n, "vectors")
    phase = "version"
    try:
        summary["server_version"] = client.get_server_version()
        phase = "create"
        create_collection(client, name, r["dimension"], r["metric"], r["num_shards"])
        phase = "insert"
        summary.update(insert_all(client, name, r, n, progress))
        phase = "index"
        summary.update(build_index(client, name, settings["index_spec"], index_timeout, progress))
    except LoadError:
        raise
    except Exception as exc:
        raise LoadError(f"{phase}: {ep.redact(_message(exc))}") from None
    progress.update(n, "computing the ground truth", force=True)
    started = time.perf_counter()
    queries = dataset.query_vectors(r["seed"], r["recall_queries"], r["dimension"], r["distribution"])
    truth = dataset.ground_truth(r["seed"], n, r["chunk_size"], r["dimension"], r["distribution"], r["metric"],
                                 queries, r["top_k"])
    np.save(out / "queries.npy", queries)
    np.save(out / "ground_truth.npy", truth)
    summary["ground_truth_s"] = time.perf_counter() - started
    summary["end"] = now_iso()
    return summary


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


__all__ = ["LoadError", "MilvusUnavailable", "run", "write_json", "now_iso"]
