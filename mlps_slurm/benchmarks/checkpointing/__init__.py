"""Checkpointing: Llama 3 checkpoint writes then reads by MPI ranks (MLPerf Storage v3.0 checkpointing)."""

from mlps_slurm.benchmarks.base import Benchmark
from mlps_slurm.benchmarks.checkpointing.catalog import LLAMA3_MODELS

BENCHMARK = Benchmark(
    name="checkpointing",
    package=__name__,
    summary="Llama 3 checkpoint writes then reads by MPI ranks.",
    tree_name="checkpointing",
    runnable=True,
    models=tuple(LLAMA3_MODELS),
    engines=("builtin", "dlio"),
    suite_models=("llama3-8b",),
    wait_timeout_s=3600,
)
