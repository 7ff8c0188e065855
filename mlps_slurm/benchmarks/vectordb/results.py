"""A vectordb run directory as the rules' record (VdbChain).

    manifest.json request and settings: benchmark "vectordb", index_type, backend (default milvus), params {key: value},
                  runtime_s or queries, runs (planned, default 5)
    raw/vector_database/<INDEX>/datagen/summary.json   {"num_vectors": int, "dimension": int, ...}
    raw/vector_database/<INDEX>/run/<NN>/summary.json  {"start", "end" (ISO), "throughput_qps", "recall", ...}

In a submission tree the run's own files are in datasize/<ts>/ and the raw leaves in datagen/<ts>/ and run/<ts>/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from mlps_slurm.benchmarks.vectordb import rules as vdb
from mlps_slurm.rules.common import RUN_MANIFEST
from mlps_slurm.rules.core import parse_time
from mlps_slurm.rules.loaders import FileProblem, Loaded, fail, leaves, load_results, read_json_object
from mlps_slurm.rundir import run_record


def run_from_summary(name: str, summary: Mapping[str, Any]) -> vdb.VdbRunResult:
    """A vdb-bench run summary.json: start, end (ISO), throughput_qps, recall (optional)."""
    problems = []
    start, end = parse_time(summary.get("start")), parse_time(summary.get("end"))
    if start is None or end is None:
        problems.append(f"start/end are {summary.get('start')!r}/{summary.get('end')!r}, expected ISO times")
    qps = summary.get("throughput_qps")
    if isinstance(qps, bool) or not isinstance(qps, (int, float)):
        problems.append(f"throughput_qps is {qps!r}, expected a number")
        qps = None
    recall = summary.get("recall")
    return vdb.VdbRunResult(name, start, end, None if qps is None else float(qps),
                            float(recall) if isinstance(recall, (int, float)) and not isinstance(recall, bool)
                            else None, "; ".join(problems) or None)


def load(root: Path, manifest: Mapping[str, Any], preflight: Mapping[str, Any] | None) -> Loaded:
    request = run_record(dict(manifest))
    index = str(request.get("index_type", "")).upper()
    loaded = Loaded("vectordb", index)
    load_results(root, loaded)
    try:
        plan = vdb.plan_from_request(request)
    except (KeyError, TypeError, ValueError) as exc:
        fail(loaded, RUN_MANIFEST, f"{root / 'manifest.json'}: request cannot be read as a vectordb plan: {exc}")
        return loaded
    datagen_leaves, run_leaves = leaves(root, f"raw/vector_database/{index}")
    datagen = None
    if datagen_leaves:
        try:
            d = read_json_object(datagen_leaves[0] / "summary.json")
            datagen = vdb.VdbDatagen(d.get("num_vectors"), d.get("dimension"))
        except FileProblem as exc:
            datagen = vdb.VdbDatagen(None, None, str(exc))
    runs = []
    for leaf in run_leaves:
        try:
            result = run_from_summary(leaf.name, read_json_object(leaf / "summary.json"))
            if result.problem:
                result = vdb.VdbRunResult(leaf.name, problem=f"{leaf / 'summary.json'}: {result.problem}")
        except FileProblem as exc:
            result = vdb.VdbRunResult(leaf.name, problem=str(exc))
        runs.append(result)
        if result.problem:
            loaded.problems.append(result.problem)
    if len(run_leaves) < plan.runs:
        loaded.problems.append(f"{len(run_leaves)} of the {plan.runs} planned runs left an output directory")
    chain = vdb.VdbChain(str(manifest.get("run_id")), plan, datagen, tuple(runs))
    loaded.record = chain
    good = [r for r in runs if r.problem is None]
    if good:
        loaded.started = good[0].start.timestamp() if good[0].start else None
        qps = [r.throughput_qps for r in good if r.throughput_qps is not None]
        rec = [r.recall for r in good if r.recall is not None]
        loaded.metrics = {"runs": len(good), "throughput_qps_mean": sum(qps) / len(qps) if qps else None,
                          "recall_mean": sum(rec) / len(rec) if rec else None}
    return loaded
