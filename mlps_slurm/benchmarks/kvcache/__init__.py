"""KV-cache: LLM inference whose KV tensors spill to storage (MLPerf Storage v3.0 kv-cache). This release verifies
and bundles its runs; it does not run it yet."""

from mlps_slurm.benchmarks.base import Benchmark

BENCHMARK = Benchmark(
    name="kvcache",
    package=__name__,
    summary="KV-cache offload to storage (verify and bundle only in this release).",
    tree_name="kv_cache",
    runnable=False,
    engines=("builtin", "mlperf"),
)
