"""mlps-slurm: run the MLPerf Storage v3.0 benchmarks as Slurm job chains."""

__version__ = "0.1.0"
