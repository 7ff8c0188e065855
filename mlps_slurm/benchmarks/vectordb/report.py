"""The readable table of a vectordb run's results (the finalize job prints it; `status` shows it)."""

from __future__ import annotations

from typing import Any

from mlps_slurm.steps.outcome import verdict_lines


def _f(value: Any, spec: str, width: int) -> str:
    return f"{value:{width}{spec}}" if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else f"{'-':>{width}}"


def table(results: dict[str, Any]) -> str:
    lines = [f"run {results.get('run_id')}: vectordb, {results.get('index_type')} index ({results.get('metric')}), "
             f"{results.get('num_vectors')} vectors of dimension {results.get('dimension')}, "
             f"{results.get('query_processes')} query process(es) on {results.get('nodes')} node(s), "
             f"Milvus {results.get('milvus_mode')}", *verdict_lines(results)]
    load = results.get("load") or {}
    if load:
        lines += ["", f"load: {load.get('num_vectors')} vectors inserted in {_f(load.get('insert_s'), '.1f', 0)} s "
                      f"({_f(load.get('insert_vectors_per_s'), '.0f', 0)}/s), flush {_f(load.get('flush_s'), '.1f', 0)}"
                      f" s, index built in {_f(load.get('index_build_s'), '.1f', 0)} s "
                      f"({load.get('index_params')}), server {load.get('server_version')}"]
    runs = results.get("runs") or []
    if runs:
        lines += ["", f"{'run':<5}{'QPS':>10}{'mean ms':>9}{'p50':>8}{'p95':>8}{'p99':>8}{'p99.9':>8}"
                      f"{'recall':>8}{'queries':>10}{'load s':>8}"]
        for r in runs:
            lat = r.get("latency_ms") or {}
            lines.append(f"{r.get('run', '?'):<5}{_f(r.get('throughput_qps'), '.1f', 10)}{_f(lat.get('mean'), '.2f', 9)}"
                         f"{_f(lat.get('p50'), '.2f', 8)}{_f(lat.get('p95'), '.2f', 8)}{_f(lat.get('p99'), '.2f', 8)}"
                         f"{_f(lat.get('p99_9'), '.2f', 8)}{_f(r.get('recall'), '.4f', 8)}"
                         f"{_f(r.get('queries'), '.0f', 10)}{_f(r.get('load_s'), '.1f', 8)}")
        agg = results.get("aggregate") or {}
        qps, rec = agg.get("throughput_qps") or {}, agg.get("recall") or {}
        lines.append(f"{'mean':<5}{_f(qps.get('mean'), '.1f', 10)}"
                     + "".join(_f((agg.get("latency_ms") or {}).get(k), '.2f', w)
                               for k, w in (("mean", 9), ("p50", 8), ("p95", 8), ("p99", 8), ("p99_9", 8)))
                     + f"{_f(rec.get('mean'), '.4f', 8)}")
        lines.append(f"  QPS: all queries / the union of the query processes' windows; latency per search call "
                     f"(batch of {results.get('query_batch_size', 1) or 1}), ms; recall@k after the window, against "
                     "exact ground truth")
    left = (results.get("cleanup") or {}).get("collection_left")
    if left:
        lines.append(f"  note: {left}; drop it on the server when it is no longer needed")
    return "\n".join(lines) + "\n"
