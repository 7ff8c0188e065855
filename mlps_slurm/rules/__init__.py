"""MLPerf Storage rules: checks that turn a planned request, a run or a submission into findings.

Each check has a stable rule id (`ckpt.process_count`, `train.dataset_size`, ...) and returns Findings with a
verdict: CLOSED, OPEN or INVALID. A subject's verdict is the worst of its findings (`combine`). The checks are pure
functions of records; `mlps_slurm.rules.loaders` builds the records from run directories, and
`mlps_slurm.verify` runs everything over runs and submission trees.

Pre-submission use (before anything runs): `check_request(benchmark, request)` takes the request mapping the plan
records in the manifest and returns the same findings a finished run would get on its parameters.
"""

from __future__ import annotations

from typing import Any, Mapping

from mlps_slurm.rules import checkpointing, common, kvcache, training, vectordb
from mlps_slurm.rules.core import RULES, Finding, Rule, Verdict, combine

__all__ = ["RULES", "Finding", "Rule", "Verdict", "check_request", "checkpointing", "combine", "common", "kvcache",
           "training", "vectordb"]


def check_request(benchmark: str, request: Mapping[str, Any]) -> list[Finding]:
    """Findings for a planned request (the manifest's request keys, see mlps_slurm.rules.loaders).

    A request that cannot even be read as a plan raises ValueError naming the key, since that is the caller's
    bug, not a rule outcome.
    """
    try:
        if benchmark == "checkpointing":
            return checkpointing.plan_findings(checkpointing.plan_from_request(request))
        if benchmark == "training":
            return training.plan_findings(training.plan_from_request(request))
        if benchmark == "kvcache":
            return kvcache.plan_findings(kvcache.plan_from_request(request))
        if benchmark == "vectordb":
            return vectordb.plan_findings(vectordb.plan_from_request(request))
    except KeyError as exc:
        raise ValueError(f"{benchmark} request lacks key {exc}") from exc
    raise ValueError(f"unknown benchmark {benchmark!r}; valid: checkpointing, training, kvcache, vectordb")
