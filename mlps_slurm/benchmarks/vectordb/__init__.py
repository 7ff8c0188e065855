"""VectorDB: insert, index and timed queries against Milvus (MLPerf Storage v3.0 vectordb). This release verifies
and bundles its runs; it does not run it yet."""

from mlps_slurm.benchmarks.base import Benchmark
from mlps_slurm.benchmarks.vectordb.rules import CLOSED_INDEXES, OPEN_INDEXES

BENCHMARK = Benchmark(
    name="vectordb",
    package=__name__,
    summary="Milvus vector search (verify and bundle only in this release).",
    tree_name="vector_database",
    runnable=False,
    models=CLOSED_INDEXES + OPEN_INDEXES,
    engines=("milvus",),
)
