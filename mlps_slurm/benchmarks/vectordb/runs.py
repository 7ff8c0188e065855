"""One timed query run (an array task of the run job), in three steps:

prepare (batch host): a clean run/<NN>/ leaf, the collection loaded from storage (timed: load_s);
query (every query process, placed by srun): a barrier so all start together, then searches for the window (or the
    count), one latency per call, written per rank; nothing else happens inside the window;
collect (batch host): the ranks' figures pooled (QPS = all queries / the union of the windows; latency percentiles
    over every call), then recall@k measured outside the window against the exact ground truth, into summary.json.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mlps_slurm.benchmarks.vectordb import dataset
from mlps_slurm.benchmarks.vectordb.load import VECTOR_FIELD, LoadError, now_iso, write_json
from mlps_slurm.steps.progress import Progress

BARRIER_TIMEOUT_S = 600.0
RECALL_BATCH = 100
PERCENTILES = {"p50": 50, "p95": 95, "p99": 99, "p99_9": 99.9}


def leaf(output_root: str, task: int) -> Path:
    return Path(output_root) / f"{task:02d}"


def search_params(settings: Mapping[str, Any]) -> dict[str, Any]:
    spec = settings["index_spec"]
    return {"metric_type": spec["metric_type"], "params": dict(spec["search_params"])}


def prepare(client: Any, settings: Mapping[str, Any], run_leaf: Path, load_timeout: float,
            server_times: Mapping[str, float] | None = None) -> dict[str, Any]:
    """A requeued or repeated task starts from an empty leaf; the collection is loaded (from storage, for an
    embedded server that just started) before any query process starts its window."""
    for stale in set(run_leaf.glob("rank_*")) | set(run_leaf.glob("*.json")):
        stale.unlink(missing_ok=True)
    # A repeated task's barrier must not let its ranks through before all of them are ready again.
    shutil.rmtree(run_leaf / "ready", ignore_errors=True)
    run_leaf.mkdir(parents=True, exist_ok=True)
    Progress("prepare", None, "s").update(0, "loading the collection", force=True)
    name = settings["collection"]
    load_start = time.time()
    started = time.perf_counter()
    try:
        client.release_collection(name)  # an external server may still hold it from the previous run
        client.load_collection(name, timeout=load_timeout)
    except Exception as exc:
        raise LoadError(f"loading collection {name} failed or took more than {load_timeout:g} s: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    out = {"load_s": time.perf_counter() - started, "host": socket.gethostname(), "prepared": now_iso(),
           "timeline": {**(server_times or {}), "load_start": load_start, "load_end": time.time()}}
    write_json(run_leaf / "prepare.json", out)
    return out


def _barrier(run_leaf: Path, rank: int, size: int) -> None:
    ready = run_leaf / "ready"
    ready.mkdir(exist_ok=True)
    (ready / str(rank)).touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while sum(1 for _ in ready.iterdir()) < size:
        if time.monotonic() > deadline:
            raise LoadError(f"rank {rank}: not every query process became ready within {BARRIER_TIMEOUT_S:g} s")
        time.sleep(0.01)


def query(client: Any, settings: Mapping[str, Any], request: Mapping[str, Any], run_leaf: Path, rank: int,
          size: int, queries_file: Path) -> dict[str, Any]:
    """This rank's timed window: searches only; the vectors are converted before the window opens."""
    if rank >= size:
        raise LoadError(f"rank {rank} from the launcher, but the plan placed {size} query processes")
    vectors = np.load(queries_file).tolist()
    name, params, k = settings["collection"], search_params(settings), int(request["top_k"])
    batch = int(request["query_batch_size"])
    per_rank = None
    if request.get("queries"):
        total = int(request["queries"])
        per_rank = total // size + (1 if rank < total % size else 0)
    duration = float(request["duration"]) if request.get("duration") else math.inf
    client.search(name, data=[vectors[0]], limit=k, search_params=params, anns_field=VECTOR_FIELD)  # connection up
    _barrier(run_leaf, rank, size)
    latencies: list[float] = []
    # rank 0 stands for all in `status`: seconds of the window, or its share of a fixed query count
    progress = (Progress("queries", duration, "s") if per_rank is None else Progress("queries", per_rank, "queries")) \
        if rank == 0 else None
    position = (rank * 7919) % len(vectors)  # ranks start at different queries
    sent = 0
    start_wall, start = time.time(), time.perf_counter()
    end_at = start + duration
    while (per_rank is None and time.perf_counter() < end_at) or (per_rank is not None and sent < per_rank):
        n = batch if per_rank is None else min(batch, per_rank - sent)
        data = [vectors[(position + i) % len(vectors)] for i in range(n)]
        t0 = time.perf_counter()
        client.search(name, data=data, limit=k, search_params=params, anns_field=VECTOR_FIELD)
        latencies.append(time.perf_counter() - t0)
        position += n
        sent += n
        if progress is not None:
            progress.update(min(duration, time.perf_counter() - start) if per_rank is None else sent,
                            "timed window" if per_rank is None else "rank 0's share")
    elapsed = time.perf_counter() - start
    if progress is not None:
        progress.update(progress.total or sent, "window closed; measuring recall", force=True)
    np.save(run_leaf / f"rank_{rank}.npy", np.asarray(latencies, dtype=np.float64))
    record = {"rank": rank, "host": socket.gethostname(), "node": os.environ.get("SLURMD_NODENAME"),
              "start": start_wall, "end": start_wall + elapsed,
              "queries": sent, "calls": len(latencies), "batch": batch}
    write_json(run_leaf / f"rank_{rank}.json", record)
    return record


def pooled(ranks: list[Mapping[str, Any]], latencies: np.ndarray) -> dict[str, Any]:
    """QPS over the union of the ranks' windows and latency statistics over every call (ms)."""
    start, end = min(r["start"] for r in ranks), max(r["end"] for r in ranks)
    queries = sum(int(r["queries"]) for r in ranks)
    window = end - start
    ms = latencies * 1000.0
    out: dict[str, Any] = {"queries": queries, "calls": int(len(latencies)), "window_s": window,
                           "throughput_qps": queries / window if window > 0 else None,
                           "latency_ms": {"mean": float(ms.mean()) if len(ms) else None,
                                          **{name: float(np.percentile(ms, q)) if len(ms) else None
                                             for name, q in PERCENTILES.items()}}}
    out["start_epoch"], out["end_epoch"] = start, end
    return out


def measure_recall(client: Any, settings: Mapping[str, Any], request: Mapping[str, Any],
                   datagen: Path) -> dict[str, Any]:
    queries = np.load(datagen / "queries.npy")
    truth = np.load(datagen / "ground_truth.npy")
    k = int(request["top_k"])
    found: list[list[int]] = []
    started = time.perf_counter()
    for lo in range(0, len(queries), RECALL_BATCH):
        hits = client.search(settings["collection"], data=queries[lo:lo + RECALL_BATCH].tolist(), limit=k,
                             search_params=search_params(settings), anns_field=VECTOR_FIELD)
        found += [[int(h["id"]) for h in row] for row in hits]
    return {"recall": dataset.recall_at_k(found, truth, k), "recall_queries": int(len(queries)), "recall_k": k,
            "recall_s": time.perf_counter() - started}


def collect(client: Any, settings: Mapping[str, Any], request: Mapping[str, Any], run_leaf: Path,
            datagen: Path, size: int) -> dict[str, Any]:
    ranks, lat = [], []
    missing = []
    for rank in range(size):
        try:
            ranks.append(json.loads((run_leaf / f"rank_{rank}.json").read_text(encoding="utf-8")))
            lat.append(np.load(run_leaf / f"rank_{rank}.npy"))
        except (OSError, ValueError) as exc:
            missing.append(f"rank {rank}: {getattr(exc, 'strerror', None) or exc}")
    if missing:
        raise LoadError(f"{run_leaf}: query results missing: {'; '.join(missing[:4])}")
    figures = pooled(ranks, np.concatenate(lat) if lat else np.empty(0))
    prepared = {}
    try:
        prepared = json.loads((run_leaf / "prepare.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    summary = {
        "start": _iso(figures.pop("start_epoch")), "end": _iso(figures.pop("end_epoch")), **figures,
        "mode": "queries" if request.get("queries") else "timed", "duration_s": request.get("duration"),
        "query_processes": size, "load_s": prepared.get("load_s"),
        # When the server started and was ready, the index loaded, the queries began and ended (epoch seconds).
        "timeline": {**(prepared.get("timeline") or {}), "first_query": min(r["start"] for r in ranks),
                     "last_query_end": max(r["end"] for r in ranks)},
        "per_rank": [{"rank": r["rank"], "host": r["host"], "node": r.get("node"), "queries": r["queries"],
                      "qps": r["queries"] / (r["end"] - r["start"]) if r["end"] > r["start"] else None}
                     for r in ranks],
    }
    summary.update(measure_recall(client, settings, request, datagen))
    try:
        client.release_collection(settings["collection"])
    except Exception:
        pass  # the next run loads it again either way
    if settings.get("milvus_mode") == "external" and run_leaf.name == f"{int(request['runs']) - 1:02d}":
        # The last run: a site's server does not keep every run's collection (an embedded server's whole data
        # directory goes with the run instead). A chain that stops earlier leaves it; the finalize says so.
        try:
            client.drop_collection(settings["collection"])
            summary["collection_dropped"] = True
        except Exception as exc:
            summary["collection_dropped"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    write_json(run_leaf / "summary.json", summary)
    for rank in range(size):  # the per-call latencies stay; the barrier files go
        try:
            (run_leaf / "ready" / str(rank)).unlink()
        except OSError:
            pass
    try:
        (run_leaf / "ready").rmdir()
    except OSError:
        pass
    return summary


def _iso(epoch: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat()


# The MPI launcher's own rank first: under mpirun every process inherits the batch step's SLURM_PROCID.
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")


def rank_and_size(planned: int) -> tuple[int, int]:
    """(this query process's rank, the number of query processes the plan placed)."""
    return next((int(os.environ[v]) for v in RANK_VARIABLES if os.environ.get(v, "").isdigit()), 0), planned
