"""KV-cache: LLM inference whose KV tensors spill from GPU and CPU memory to storage (MLPerf Storage v3.0 kv-cache):
options 1, 2 and 3 of Table KVCache-1, each for several trials, every client a rank with its own cache."""

from mlps_slurm.benchmarks.base import Benchmark

BENCHMARK = Benchmark(
    name="kvcache",
    package=__name__,
    summary="options 1, 2, 3 of Table KVCache-1, each trial one srun step of every client.",
    tree_name="kv_cache",
    runnable=True,
    # The submission tree files every kv-cache run under the CLOSED path model (kvcache.md §5.2).
    models=("llama3.1-8b",),
    engines=("builtin", "official"),
    suite_models=("llama3.1-8b",),
    # Opt-in for `submit all` (suite.benchmarks): at CLOSED size its 9 trials and delays take about 50 minutes and
    # the clients write terabytes to the cache filesystem.
    in_default_suite=False,
    separate_from_results=("kvcache_dir",),
)
