"""Training: DLIO emulating accelerators that read a generated dataset (MLPerf Storage v3.0 training)."""

from mlps_slurm.benchmarks.base import Benchmark
from mlps_slurm.benchmarks.training.catalog import MODELS

BENCHMARK = Benchmark(
    name="training",
    package=__name__,
    summary="DLIO: datagen, then 1 warm-up + 5 scored runs reading the dataset.",
    tree_name="training",
    runnable=True,
    models=MODELS,
    engines=("dlio",),
    suite_models=("unet3d",),
    separate_from_results=("data_dir",),
)
