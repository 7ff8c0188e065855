"""What DLIO 2.0.0's generator writes per file for a workload config, and the check of the files on disk against it
(count, each size within the configured spread, the mean near the configured record length).

Pure functions (no MPI, no Slurm); the in-job shim measures the sizes and calls `dataset_problems`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Mapping


# Bytes a file holds beyond its samples' raw bytes (container headers), per format: (fixed, per sample). Measured
# for 2.0.0's generators: npz adds ~500 B (zip + two .npy headers) and 8 B per label; tfrecord frames each record.
_OVERHEAD = {"npz": (2048, 16), "npy": (1024, 0), "tfrecord": (1024, 128), "hdf5": (65536, 64)}
# Compressed image formats: random pixels compress to a format-specific fraction of the raw size.
_COMPRESSED = {"jpeg": (0.3, 1.3), "png": (0.5, 1.3)}


@dataclass(frozen=True)
class SizeModel:
    """What 2.0.0's generator writes per file: dims ~ Normal(dim, dim_stdev) per side, dim = int(sqrt(record))."""

    format: str
    samples_per_file: int
    dim: int
    dim_stdev: float

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> "SizeModel":
        d = config["dataset"]
        record = float(d["record_length"])
        return cls(str(d["format"]), int(d["num_samples_per_file"]), int(math.sqrt(record)),
                   float(d.get("record_length_stdev") or 0) / 2.0 / math.sqrt(record))

    @property
    def checked(self) -> bool:
        return self.format in _OVERHEAD or self.format in _COMPRESSED

    @property
    def mean_raw(self) -> float:
        """E[d1 x d2] x samples; DLIO's int() on each side lowers it by about dim when there is a spread."""
        return float(self.samples_per_file * self.dim ** 2)

    @property
    def raw_stdev(self) -> float:
        """Spread of one file's raw bytes: spf x d1 x d2 with independent normal sides."""
        s, m = self.dim_stdev, self.dim
        return self.samples_per_file * math.sqrt(max(0.0, (m * m + s * s) ** 2 - m ** 4))

    def file_bounds(self, sigmas: float = 6.0) -> tuple[int, int]:
        lo_side = max(1, int(self.dim - sigmas * self.dim_stdev))
        hi_side = int(self.dim + sigmas * self.dim_stdev)
        lo, hi = self.samples_per_file * lo_side ** 2, self.samples_per_file * hi_side ** 2
        if self.format in _COMPRESSED:
            a, b = _COMPRESSED[self.format]
            return int(lo * a), int(hi * b) + 4096
        fixed, per_sample = _OVERHEAD.get(self.format, (0, 0))
        return lo, hi + fixed + per_sample * self.samples_per_file


def dataset_problems(sizes: list[int], expected_files: int, model: SizeModel, where: str) -> list[str]:
    """Files on disk against the request: the count exactly, each size within the configured spread, and the mean
    within six standard errors of the configured record length (this catches 2.0.0's silent 64 KiB default)."""
    problems = []
    if len(sizes) != expected_files:
        problems.append(f"{where}: {len(sizes)} files on disk, {expected_files} requested")
    if not sizes or not model.checked:
        return problems
    lo, hi = model.file_bounds()
    outside = [s for s in sizes if not lo <= s <= hi]
    if outside:
        problems.append(f"{where}: {len(outside)} file(s) outside the configured size range {lo:,}-{hi:,} bytes "
                        f"(e.g. {outside[0]:,} bytes)")
    mean = statistics.fmean(sizes)
    if model.format in _COMPRESSED:
        a, b = _COMPRESSED[model.format]
        low, high = model.mean_raw * a, model.mean_raw * b + 4096
    else:
        fixed, per_sample = _OVERHEAD.get(model.format, (0, 0))
        slack = 6 * model.raw_stdev / math.sqrt(len(sizes))
        flooring = model.samples_per_file * model.dim if model.dim_stdev else 0
        low = model.mean_raw - slack - flooring
        high = model.mean_raw + slack + fixed + per_sample * model.samples_per_file
    if not low <= mean <= high:
        problems.append(f"{where}: mean file size {mean:,.0f} bytes, the configured record length gives "
                        f"{low:,.0f}-{high:,.0f} bytes")
    return problems
