"""MLPerf Storage rules core: checks that turn a planned request, a run or a submission into findings.

Each check has a stable rule id (`ckpt.process_count`, `train.dataset_size`, ...) and returns Findings with a
verdict: CLOSED, OPEN or INVALID. A subject's verdict is the worst of its findings (`combine`). The checks are pure
functions of records and live with their benchmark (mlps_slurm/benchmarks/<name>/rules.py); the records are built
from run directories by each benchmark's results.py, and `mlps_slurm.verify` runs everything over runs and
submission trees.

Pre-submission use (before anything runs): `check_request(benchmark, request)` takes the request mapping the plan
records in the manifest and returns the same findings a finished run would get on its parameters.
"""

from __future__ import annotations

from typing import Any, Mapping

from mlps_slurm.rules.core import RULES, Finding, Rule, Verdict, combine

__all__ = ["RULES", "Finding", "Rule", "Verdict", "all_rules", "check_request", "combine"]


def all_rules() -> dict[str, Rule]:
    """Every rule of every benchmark (each benchmark's rules register themselves when its rules module loads)."""
    from mlps_slurm import benchmarks
    from mlps_slurm.rules import common  # noqa: F401  (registers the run-level rules shared by all benchmarks)

    for bench in benchmarks.all_benchmarks():
        bench.part("rules")
    return RULES


def check_request(benchmark: str, request: Mapping[str, Any]) -> list[Finding]:
    """Findings for a planned request (the manifest's request keys, see each benchmark's results.py).

    A request that cannot even be read as a plan raises ValueError naming the key, since that is the caller's
    bug, not a rule outcome.
    """
    from mlps_slurm import benchmarks

    try:
        bench = benchmarks.get(benchmark)
    except benchmarks.UnknownBenchmark as exc:
        raise ValueError(str(exc)) from None
    try:
        return bench.plan_findings(request)
    except KeyError as exc:
        raise ValueError(f"{benchmark} request lacks key {exc}") from exc
