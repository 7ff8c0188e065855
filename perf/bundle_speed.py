"""How fast `verify` and `bundle` are on a full submission, next to `tar czf` on the same tree.

Builds a synthetic submission in a scratch directory: one CLOSED checkpointing run per llama3 model at its CLOSED
process count (8, 64, 512, 1024 ranks; the 1024-rank engine output alone holds 20,480 rank records), each with
per-rank log files, about 3,000 files and 200 MB in total (three quarters log text, one quarter incompressible).
Then it times verify_runs() alone, make_bundle() (verify + submission tree + SHA256SUMS + tar.gz), and
`tar czf` of the same runs, and prints the figures and the ratio. Target: bundling within 1.2 x `tar czf`.

    .venv/bin/python perf/bundle_speed.py [--files 3000] [--megabytes 200] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the corpus builders live with the tests

from mlps_slurm.bundle import GZIP_LEVEL, make_bundle
from mlps_slurm.benchmarks.checkpointing.catalog import LLAMA3_MODELS
from mlps_slurm.verify import verify_runs
from tests.unit.rules_corpus import T0, checkpoint_run

T = TypeVar("T")


def build_tree(runs_dir: Path, files: int, megabytes: int) -> tuple[int, int]:
    """The synthetic runs; returns (file count, bytes)."""
    ranks = {name: m.closed_processes for name, m in LLAMA3_MODELS.items()}
    total_ranks = sum(ranks.values())
    per_file = megabytes * 10**6 // files
    for i, (model, np_) in enumerate(ranks.items()):
        # Per-rank files in proportion to the ranks, so the 1024-rank model carries most of them.
        checkpoint_run(runs_dir, model=model, start=T0 + i * 3600, rank_files=max(1, files * np_ // total_ranks),
                       rank_file_bytes=per_file)
    count = size = 0
    for dirpath, _, names in os.walk(runs_dir):
        for n in names:
            count += 1
            size += os.path.getsize(os.path.join(dirpath, n))
    return count, size


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    return seconds, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3000, help="approximate number of files in the submission")
    parser.add_argument("--megabytes", type=int, default=200, help="approximate total size")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a new one under $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlps-bundle-speed-", dir=args.workdir))
    try:
        runs = work / "runs"
        t_build, (count, size) = timed(lambda: build_tree(runs, args.files, args.megabytes))
        print(f"synthetic submission: {count} files, {size / 1e6:.1f} MB in {runs} (built in {t_build:.1f} s); "
              f"{os.cpu_count()} CPU(s)")
        subprocess.run(["sync"], check=True)  # start all from the same state: data in page cache, clean
        # tar czf runs gzip at its default level, 6, which GZIP_LEVEL matches.

        t_tar, _ = timed(lambda: subprocess.run(
            ["tar", "czf", str(work / "reference.tar.gz"), "-C", str(work), "runs"], check=True))
        t_verify, report = timed(lambda: verify_runs([runs], submission=True))
        assert report.verdict.value == "CLOSED" and report.exit_code == 0, report.to_text()
        t_bundle, result = timed(lambda: make_bundle([runs], "acme", "sys1", work / "bundle"))
        t_single, _ = timed(lambda: make_bundle([runs], "acme", "sys1", work / "bundle1", workers=1))

        tar_size = (work / "reference.tar.gz").stat().st_size
        ours = result.tarball.stat().st_size
        print(f"{'':34} {'seconds':>8} {'output MB':>10} {'x tar czf':>10}")
        print(f"{'tar czf (gzip -' + str(GZIP_LEVEL) + ')':34} {t_tar:>8.2f} {tar_size / 1e6:>10.1f} {1.0:>10.2f}")
        print(f"{'verify (' + str(len(report.runs)) + ' runs)':34} {t_verify:>8.2f} {'':>10} "
              f"{t_verify / t_tar:>10.2f}")
        print(f"{'bundle (verify+tree+sums+tar.gz)':34} {t_bundle:>8.2f} {ours / 1e6:>10.1f} {t_bundle / t_tar:>10.2f}")
        print(f"{'bundle, one gzip thread':34} {t_single:>8.2f} {'':>10} {t_single / t_tar:>10.2f}")
        verdict = "within" if t_bundle <= 1.2 * t_tar else "OVER"
        print(f"bundle / tar czf = {t_bundle / t_tar:.2f} ({verdict} the 1.2 x target); {result.files} files bundled")
        return 0 if t_bundle <= 1.2 * t_tar else 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
