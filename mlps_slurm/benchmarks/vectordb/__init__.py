"""VectorDB: insert, index and timed queries against a real Milvus (MLPerf Storage v3.0 vectordb): a load job,
then timed query runs from query processes on every node, recall measured outside the timed window."""

from mlps_slurm.benchmarks.base import Benchmark
from mlps_slurm.benchmarks.vectordb.rules import CLOSED_INDEXES, OPEN_INDEXES

BENCHMARK = Benchmark(
    name="vectordb",
    package=__name__,
    summary="Milvus: load and index, then timed query runs (QPS, latency, recall).",
    tree_name="vector_database",
    runnable=True,
    models=CLOSED_INDEXES + OPEN_INDEXES,  # the index type is the workload ("model") of a vectordb run
    engines=("milvus",),
    suite_models=("HNSW",),
    # Opt-in for `submit all` (suite.benchmarks): it needs a Milvus (embedded: about 1 GB of binaries and data per
    # run on the storage under test; DISKANN and AISAQ need an external server).
    in_default_suite=False,
    # The finalize removes the embedded server's data (and the last run drops an external collection): a run
    # task that runs again needs the load job to build the collection again.
    resume_requires={"run": ("load",)},
)
