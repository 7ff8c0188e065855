"""Index types: what each builds with and searches with (Milvus's own parameter names), and which Milvus can
build it. One table, read by the plan (recorded in the manifest) and by the jobs (sent to Milvus).

The reference vdb-bench sends an HNSW-style `ef` with every search whatever the index; here each index type gets
its own search parameters, and the metric is the collection's (request --metric), never hard-coded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

METRICS = ("COSINE", "L2", "IP")
DISTRIBUTIONS = ("uniform", "normal")  # how dataset.py draws the vectors


@dataclass(frozen=True)
class IndexType:
    name: str
    build: Callable[[Mapping[str, Any]], dict[str, Any]]  # request fields -> index build params
    search: Callable[[Mapping[str, Any]], dict[str, Any]]  # request fields -> search params
    embedded: bool  # the embedded Milvus 2.3.5 server builds it
    needs: str = ""  # what it needs when the embedded server cannot build it


INDEX_TYPES: dict[str, IndexType] = {t.name: t for t in (
    IndexType("HNSW", lambda r: {"M": r["max_degree"], "efConstruction": r["ef_construction"]},
              lambda r: {"ef": max(r["search_ef"], r["top_k"])}, embedded=True),
    IndexType("DISKANN", lambda r: {"max_degree": r["max_degree"], "search_list_size": r["search_list_size"]},
              lambda r: {"search_list": max(r["search_list_size"], r["top_k"])}, embedded=False,
              needs="an external Milvus >= 2.5"),
    IndexType("AISAQ", lambda r: {"max_degree": r["max_degree"], "search_list_size": r["search_list_size"],
                                  "inline_pq": r["inline_pq"]},
              lambda r: {"search_list": max(r["search_list_size"], r["top_k"])}, embedded=False,
              needs="an external Milvus >= 2.6"),
    IndexType("IVF_FLAT", lambda r: {"nlist": r["nlist"]}, lambda r: {"nprobe": r["nprobe"]}, embedded=True),
    IndexType("IVF_SQ8", lambda r: {"nlist": r["nlist"]}, lambda r: {"nprobe": r["nprobe"]}, embedded=True),
    IndexType("FLAT", lambda r: {}, lambda r: {}, embedded=True),
)}


def index_spec(request: Mapping[str, Any]) -> dict[str, Any]:
    """What Milvus is asked: {"index_type", "metric_type", "params"} to build, {"metric_type", "params"} to search."""
    kind = INDEX_TYPES[request["index"]]
    return {"index_type": kind.name, "metric_type": request["metric"], "build_params": kind.build(request),
            "search_params": kind.search(request)}
