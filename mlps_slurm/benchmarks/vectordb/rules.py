"""VectorDB rules (MLPerf Storage v3.0 Rules.md §5; reference mlperf-storage.md §2.4). Pure: records in, findings out.

- VdbPlan: backend, index type, tunable parameters, run length (before anything runs, and as recorded);
- VdbDatagen / VdbRunResult: the datagen leaf and each query run's summary.json;
- VdbChain: one index's datagen + its runs (a submission needs exactly 5 runs per index).

results.py documents the run-directory layout and builds the records.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

from mlps_slurm.rules.core import Finding, Rule, closed, declare, full_size, invalid, open_, rule, run_rules

CLOSED_INDEXES = ("DISKANN", "HNSW", "AISAQ")
OPEN_INDEXES = ("IVF_FLAT", "IVF_SQ8", "FLAT")
CLOSED_BACKENDS = ("milvus",)
OPEN_BACKENDS = ("elasticsearch", "pgvector")
# CLOSED tunables (reference §2.4): metric, index build/search parameters, client parallelism and data layout.
CLOSED_PARAMS = frozenset({"metric_type", "max_degree", "search_list_size", "ef_construction", "search_ef",
                           "inline_pq", "num_query_processes", "batch_size", "query_batch_size", "insert_batch_size",
                           "num_shards", "chunk_size", "storage_root", "storage_type"})
REQUIRED_RUNS = 5  # Rules.md §5.3.1: exactly 5 run timestamp directories per index
MIN_RUNTIME_S = 30.0  # a timed query run shorter than this measures start-up, not the index

SUMMARY = declare("vdb.summary", "every query run left a readable summary.json with throughput, latency and times")


@dataclass(frozen=True)
class VdbPlan:
    index_type: str
    backend: str = "milvus"
    params: Mapping[str, Any] = field(default_factory=dict)
    runtime_s: float | None = None  # timed mode
    queries: int | None = None  # query-count mode
    runs: int = REQUIRED_RUNS
    scale: float = 1.0  # --scale: the fraction of the planned vectors loaded


@dataclass(frozen=True)
class VdbDatagen:
    num_vectors: int | None
    dimension: int | None
    problem: str | None = None


@dataclass(frozen=True)
class VdbRunResult:
    name: str
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    throughput_qps: float | None = None
    recall: float | None = None
    problem: str | None = None

    @property
    def runtime_s(self) -> float | None:
        return (self.end - self.start).total_seconds() if self.start and self.end else None


@dataclass(frozen=True)
class VdbChain:
    run_id: str
    plan: VdbPlan
    datagen: VdbDatagen | None
    runs: tuple[VdbRunResult, ...]


Subject = Union[VdbPlan, VdbChain]


def _plan(s: Subject) -> VdbPlan:
    return s.plan if isinstance(s, VdbChain) else s


@rule("vdb.index_type", "index type: DISKANN, HNSW or AISAQ is CLOSED; IVF_FLAT, IVF_SQ8 or FLAT is OPEN; anything "
                        "else INVALID")
def check_index_type(subject: Subject) -> Finding:
    idx = _plan(subject).index_type.upper()
    if idx in CLOSED_INDEXES:
        return closed("vdb.index_type", f"index {idx}", list(CLOSED_INDEXES), idx)
    if idx in OPEN_INDEXES:
        return open_("vdb.index_type", f"index {idx} is OPEN only; CLOSED uses {', '.join(CLOSED_INDEXES)}",
                     list(CLOSED_INDEXES), idx)
    return invalid("vdb.index_type", f"unknown index type {idx}; valid: {', '.join(CLOSED_INDEXES + OPEN_INDEXES)}",
                   list(CLOSED_INDEXES), idx)


@rule("vdb.backend", "the vector database is Milvus (CLOSED); Elasticsearch or pgvector is OPEN")
def check_backend(subject: Subject) -> Finding:
    b = _plan(subject).backend.lower()
    if b in CLOSED_BACKENDS:
        return closed("vdb.backend", f"backend {b}", list(CLOSED_BACKENDS), b)
    if b in OPEN_BACKENDS:
        return open_("vdb.backend", f"backend {b} is OPEN only", list(CLOSED_BACKENDS), b)
    return invalid("vdb.backend", f"unknown backend {b}; valid: {', '.join(CLOSED_BACKENDS + OPEN_BACKENDS)}",
                   list(CLOSED_BACKENDS), b)


@rule("vdb.params", "only the CLOSED tunables (metric, index build and search parameters, query processes, batch "
                    "sizes, shards, chunk size, storage root/type) are changed; others are OPEN")
def check_params(subject: Subject) -> Finding:
    keys = sorted(_plan(subject).params)
    other = [k for k in keys if k not in CLOSED_PARAMS]
    if other:
        return open_("vdb.params", f"non-CLOSED parameter(s): {', '.join(other)}", sorted(CLOSED_PARAMS), keys)
    return closed("vdb.params", "only CLOSED tunables" if keys else "no parameter changed", sorted(CLOSED_PARAMS),
                  keys)


@rule("vdb.runtime", f"a timed query run lasts at least {MIN_RUNTIME_S:g} s")
def check_runtime(subject: Subject) -> Finding:
    if isinstance(subject, VdbChain):
        short = [f"{r.name} {r.runtime_s:.1f} s" for r in subject.runs
                 if r.problem is None and r.runtime_s is not None and r.runtime_s < MIN_RUNTIME_S]
        if short:
            return invalid("vdb.runtime", f"run(s) shorter than {MIN_RUNTIME_S:g} s: {', '.join(short)}",
                           f">= {MIN_RUNTIME_S:g}", short)
        return closed("vdb.runtime", f"every run lasted at least {MIN_RUNTIME_S:g} s", f">= {MIN_RUNTIME_S:g}")
    p = subject
    if p.runtime_s is None and p.queries is None:
        return invalid("vdb.runtime", "neither a runtime nor a query count is set", f">= {MIN_RUNTIME_S:g}", None)
    if p.runtime_s is not None and p.runtime_s < MIN_RUNTIME_S:
        return invalid("vdb.runtime", f"runtime {p.runtime_s:g} s < {MIN_RUNTIME_S:g} s", f">= {MIN_RUNTIME_S:g}",
                       p.runtime_s)
    return closed("vdb.runtime", "run length acceptable", f">= {MIN_RUNTIME_S:g}", p.runtime_s or p.queries)


@rule("vdb.run_count", f"exactly {REQUIRED_RUNS} query runs per index (planned, and each with a usable summary)")
def check_run_count(subject: Subject) -> Finding:
    if isinstance(subject, VdbChain):
        usable = [r for r in subject.runs if r.problem is None]
        if len(usable) == REQUIRED_RUNS and len(subject.runs) == REQUIRED_RUNS:
            return closed("vdb.run_count", f"{REQUIRED_RUNS} runs", REQUIRED_RUNS, REQUIRED_RUNS)
        return invalid("vdb.run_count", f"{len(usable)} usable run(s) of {len(subject.runs)}; a submission needs "
                                        f"exactly {REQUIRED_RUNS} per index", REQUIRED_RUNS, len(usable))
    if subject.runs != REQUIRED_RUNS:
        return invalid("vdb.run_count", f"{subject.runs} runs planned; a submission needs exactly {REQUIRED_RUNS}",
                       REQUIRED_RUNS, subject.runs)
    return closed("vdb.run_count", f"{REQUIRED_RUNS} runs planned", REQUIRED_RUNS, REQUIRED_RUNS)


@rule("vdb.scaled", "the collection has its full size: a scaled run (--scale < 1) is INVALID for submission")
def check_scaled(subject: Subject) -> Finding:
    scale = _plan(subject).scale
    return full_size("vdb.scaled", scale, "full-size collection", f"{scale:g} x the vectors; ")


PLAN_RULES: tuple[Rule, ...] = (check_index_type, check_backend, check_params, check_runtime, check_run_count,
                                check_scaled)


@rule("vdb.datagen", "the collection was loaded and indexed by a datagen step that left a summary")
def check_datagen(chain: VdbChain) -> Finding:
    d = chain.datagen
    if d is None or d.problem:
        return invalid("vdb.datagen", f"no usable datagen record: {d.problem if d else 'missing'}", "datagen", None)
    return closed("vdb.datagen", f"{d.num_vectors} vectors of dimension {d.dimension} loaded", "datagen",
                  d.num_vectors)


def plan_from_request(request: Mapping[str, Any]) -> VdbPlan:
    """The plan of a vectordb request (keys in results.py)."""
    runtime = request.get("runtime_s")
    queries = request.get("queries")
    return VdbPlan(index_type=str(request["index_type"]).upper(), backend=str(request.get("backend", "milvus")),
                   params=dict(request.get("params") or {}), runtime_s=None if runtime is None else float(runtime),
                   queries=None if queries is None else int(queries), runs=int(request.get("runs", REQUIRED_RUNS)),
                   scale=float(request.get("scale", 1.0)))


def plan_findings(plan: VdbPlan) -> list[Finding]:
    return run_rules(PLAN_RULES, plan)


def run_findings(chain: VdbChain) -> list[Finding]:
    findings = run_rules(PLAN_RULES + (check_datagen,), chain)
    return findings + [invalid(SUMMARY, f"run {r.name}: {r.problem}") for r in chain.runs if r.problem]
