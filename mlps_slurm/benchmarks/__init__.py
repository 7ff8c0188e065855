"""The benchmark registry: name -> the package that holds everything specific to that benchmark.

Shared layers (cli, run, plan core, steps, rules core, bundle, verify) reach a benchmark only through `get(name)`;
they never name one. A package is imported on first use, so `mlps-slurm --help` imports none of them.

Adding a benchmark: one folder under mlps_slurm/benchmarks/ whose __init__.py defines BENCHMARK (a
`mlps_slurm.benchmarks.base.Benchmark`), one line below, its templates and its tests.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlps_slurm.benchmarks.base import Benchmark

# In the order `submit all` and the documentation list them.
REGISTRY: dict[str, str] = {
    "training": "mlps_slurm.benchmarks.training",
    "checkpointing": "mlps_slurm.benchmarks.checkpointing",
    "kvcache": "mlps_slurm.benchmarks.kvcache",
    "vectordb": "mlps_slurm.benchmarks.vectordb",
}


class UnknownBenchmark(KeyError):
    def __str__(self) -> str:
        return f"unknown benchmark {self.args[0]!r}; valid benchmarks: {', '.join(REGISTRY)}"


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> "Benchmark":
    """The benchmark called `name` (its package is imported now, once)."""
    try:
        path = REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownBenchmark(name) from None
    return importlib.import_module(path).BENCHMARK  # type: ignore[no-any-return]


def all_benchmarks() -> list["Benchmark"]:
    return [get(name) for name in REGISTRY]


def runnable() -> list["Benchmark"]:
    """The benchmarks this release can run as a chain (the others are only verified and bundled)."""
    return [b for b in all_benchmarks() if b.runnable]
