"""Finalize, inside the last job of a chain (afterany: it runs whatever happened before it).

Reads what the chain produced (preflight.json, the engine's raw output, the Slurm states of the earlier jobs) through
the finalize of the run's benchmark (mlps_slurm/benchmarks/<name>/finalize.py), which writes results/results.json
and results/results.txt; exits non-zero when the run produced no usable result, so the failure is visible in Slurm
too. The report is always written first.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mlps_slurm.rundir import RunDirectory


def finalize_run(run: RunDirectory) -> tuple[dict[str, Any], str]:
    """Finalize whichever run the manifest names, a suite or one benchmark: (results, the readable table)."""
    from mlps_slurm.steps.finalize_suite import SUITE, finalize_benchmark, finalize_suite

    if run.read_manifest().get("benchmark") == SUITE:
        return finalize_suite(run)
    return finalize_benchmark(run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlps_slurm.steps.finalize")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    results, table = finalize_run(RunDirectory(args.run_dir))
    sys.stdout.write(table)
    return 0 if results["status"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
