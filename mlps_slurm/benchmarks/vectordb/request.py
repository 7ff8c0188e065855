"""What a user asks of the vectordb benchmark: every option, its default and its range, in one place.

The defaults are the reference's CLOSED configuration (mlperf-storage.md §2.4: 1,000,000 vectors of dimension 1536,
max-degree 64, search-list-size 200, ef-construction 200, one query process, 60 s runs, 5 runs per index). Other
values exist for demos and tests; the rules say which make a run OPEN or INVALID and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlps_slurm.benchmarks.base import Request, RequestError, option
from mlps_slurm.benchmarks.vectordb.indexes import DISTRIBUTIONS, INDEX_TYPES, METRICS
from mlps_slurm.benchmarks.vectordb.rules import REQUIRED_RUNS

INDEX_CHOICES = tuple(INDEX_TYPES)


@dataclass(frozen=True)
class VectorDbRequest(Request):
    benchmark = "vectordb"

    index: str = option("HNSW", "--index", choices=INDEX_CHOICES,
                        help="Index type (CLOSED: DISKANN, HNSW, AISAQ; OPEN also IVF_FLAT, IVF_SQ8, FLAT).")
    metric: str = option("COSINE", "--metric", choices=METRICS, help="Similarity metric of the collection.")
    num_vectors: int = option(1_000_000, "--num-vectors", min=1, max=10**10, help="Vectors loaded (CLOSED: 1,000,000).")
    dimension: int = option(1536, "--dimension", min=2, max=32768, help="Vector dimension (CLOSED: 1536).")
    distribution: str = option("uniform", "--distribution", choices=DISTRIBUTIONS,
                               help="How the vectors are drawn (seeded, regenerated for the ground truth).")
    insert_batch_size: int = option(1000, "--insert-batch-size", min=1, max=100000,
                                    help="Vectors per insert call.")
    chunk_size: int = option(10000, "--chunk-size", min=1, max=10**7,
                             help="Vectors generated at a time (and flushed as a unit); keys stay unique across "
                                  "chunks.")
    num_shards: int = option(1, "--num-shards", min=1, max=64, help="Shards of the collection.")
    max_degree: int = option(64, "--max-degree", min=2, max=2048,
                             help="Graph degree: HNSW's M, DISKANN's and AISAQ's max_degree.")
    ef_construction: int = option(200, "--ef-construction", min=1, max=100000, help="HNSW efConstruction.")
    search_ef: int = option(200, "--search-ef", min=1, max=100000, help="HNSW ef at search time (at least top-k).")
    search_list_size: int = option(200, "--search-list-size", min=1, max=100000,
                                   help="DISKANN/AISAQ search list size (build and search).")
    inline_pq: int = option(16, "--inline-pq", min=1, max=1024, help="AISAQ inline PQ.")
    nlist: int = option(1024, "--nlist", min=1, max=65536, help="IVF_FLAT/IVF_SQ8 clusters.")
    nprobe: int = option(64, "--nprobe", min=1, max=65536, help="IVF_FLAT/IVF_SQ8 clusters searched.")
    top_k: int = option(10, "--top-k", min=1, max=1024, help="Neighbours per query (recall@k).")
    query_processes: int = option(1, "--query-processes", "-a", min=1, max=1024,
                                  help="Query processes on each node (placed by srun).")
    query_batch_size: int = option(1, "--query-batch-size", min=1, max=10000, help="Query vectors per search call.")
    runs: int = option(REQUIRED_RUNS, "--runs", min=1, max=100, suite="cli",
                       help=f"Timed query runs (CLOSED: {REQUIRED_RUNS}).")
    duration: float | None = option(None, "--duration", min=1, max=86400, suite="cli",
                                    help="Seconds of each timed run (default 60; the rules want at least 30).")
    queries: int | None = option(None, "--queries", min=1, max=10**9,
                                 help="Instead of --duration: queries per run, split over the query processes.")
    recall_queries: int = option(1000, "--recall-queries", min=1, max=100000,
                                 help="Queries whose recall is measured after each timed run, against exact ground "
                                      "truth.")
    seed: int = option(42, "--seed", min=0, max=2**31 - 2, help="Seed of the vectors and the queries.")
    scale: float = option(1.0, "--scale", min=0, max=1, min_open=True, suite="cli",
                          help="Load this fraction of the vectors, for demos and tests; a scaled run is not "
                               "submittable.")
    nodes: int | None = option(None, "--nodes", "-N", min=1, help="Query nodes (default: the profile's nodes.count).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.duration is not None and self.queries is not None:
            raise RequestError("--duration and --queries both given: a run is timed or counted, pass one")


REQUEST = VectorDbRequest
DEFAULT_DURATION_S = 60.0
