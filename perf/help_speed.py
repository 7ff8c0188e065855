"""How fast `mlps-slurm --help` answers, next to a bare `python -c "import click"`: target within 1.5 x.

The floor is the interpreter starting and importing click, which any click command line pays; everything above it
is what mlps-slurm imports before it can print its help (no benchmark package, Jinja2 or YAML should be among it).
Runs are interleaved (click, help, click, help, ...) after one unmeasured warm-up of each, so that a busy moment
of the machine falls on both; the median is the figure, the minimum the best case.

    .venv/bin/python perf/help_speed.py [--runs 15] [--module]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.5


def help_command(use_module: bool) -> list[str]:
    """The console script installed beside this interpreter, else `python -m mlps_slurm.cli.main`."""
    script = Path(sys.executable).parent / "mlps-slurm"
    if not use_module and script.is_file() and os.access(script, os.X_OK):
        return [str(script), "--help"]
    return [sys.executable, "-m", "mlps_slurm.cli.main", "--help"]


def run_once(argv: list[str], prints: bool) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or (prints and not proc.stdout):
        sys.exit(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{proc.stderr.decode(errors='replace')}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="measured runs of each command (default 15)")
    parser.add_argument("--module", action="store_true",
                        help="time `python -m mlps_slurm.cli.main --help` even when the console script exists")
    args = parser.parse_args()
    commands = {"python -c 'import click'": [sys.executable, "-c", "import click"],
                "mlps-slurm --help": help_command(args.module)}
    for name, argv in commands.items():  # warm-up: byte-code caches written, files in the page cache
        run_once(argv, prints=name.endswith("--help"))
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, argv in commands.items():
            times[name].append(run_once(argv, prints=name.endswith("--help")))

    print(f"{args.runs} interleaved runs each; {os.cpu_count()} CPU(s); {sys.executable}")
    print(f"  help command: {' '.join(commands['mlps-slurm --help'])}")
    print(f"{'':26} {'median ms':>10} {'min ms':>10}")
    for name, values in times.items():
        print(f"{name:26} {statistics.median(values) * 1e3:>10.1f} {min(values) * 1e3:>10.1f}")
    floor, ours = times["python -c 'import click'"], times["mlps-slurm --help"]
    ratio_median = statistics.median(ours) / statistics.median(floor)
    ratio_min = min(ours) / min(floor)
    verdict = "within" if ratio_median <= TARGET_RATIO else "OVER"
    print(f"--help / import click = {ratio_median:.2f} x median, {ratio_min:.2f} x min "
          f"({verdict} the {TARGET_RATIO:g} x target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
