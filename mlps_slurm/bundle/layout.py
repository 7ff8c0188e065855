"""What a run's files become in a submission tree: the Entry of one file, and the two layouts benchmarks use.

A benchmark's bundle.py `layout(run, base)` picks one of them (with its own directory names):
- `whole_run`: the whole run directory copied into one timestamp directory;
- `split_run`: each raw run leaf becomes run/<its start time>, the run's own files (manifest, scripts, preflight,
  logs) datasize/<render time>, and the dataset record datagen/<render time>.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from mlps_slurm.rules.loaders import leaves

if TYPE_CHECKING:
    from mlps_slurm.verify import RunVerdict

RUN_SKIP = ("submission",)  # a bundle the finalize job made inside the run directory is not part of the run


@dataclass(frozen=True)
class Entry:
    """One file of the tree: copied from `source`, or generated `data`."""

    arcname: str
    source: Path | None = None
    data: bytes | None = None


def timestamp(epoch: float | None, fallback: str) -> str:
    """A timestamp directory name (UTC, YYYYmmdd_HHMMSS), or `fallback` when the time is unknown."""
    if epoch is None:
        return fallback
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y%m%d_%H%M%S")


def files_under(root: Path, skip_top: tuple[str, ...] = ()) -> list[tuple[Path, str]]:
    """Regular files under root (sorted, relative posix paths), without hidden temp files of atomic writes."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not (rel_dir == Path(".") and d in skip_top))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or not path.is_file() or path.is_symlink():
                continue
            out.append((path, (rel_dir / name).as_posix()))
    return out


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or name_2, name_3 ... when it is taken; the result is added to `taken`."""
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate


def whole_run(run: "RunVerdict", base: str, parent: str = "") -> tuple[list[Entry], str, str]:
    """The run copied whole into <base>/<parent>/<ts>, ts = when its measured work started (else when it was
    rendered). Returns (entries, ts, base): the model's results.json goes into base."""
    ts = timestamp(run.started or run.created, run.run_id)
    leaf = "/".join(p for p in (base, parent, ts) if p)
    return [Entry(f"{leaf}/{rel}", src) for src, rel in files_under(Path(run.path), skip_top=RUN_SKIP)], ts, base


def split_run(run: "RunVerdict", base: str, raw_model_dir: str, starts: Mapping[str, dt.datetime | None],
              results_dir: str) -> tuple[list[Entry], str, str]:
    """A run with a datagen step and several runs (raw leaves under `raw_model_dir`, found by
    mlps_slurm.rules.loaders.leaves): run/<start time of each leaf, from `starts` by leaf name>,
    datasize/<ts> for the run's own files, datagen/<ts> for the dataset record; ts = when the run was rendered.
    Returns (entries, ts, results_dir)."""
    root = Path(run.path)
    taken: set[str] = set()
    entries: list[Entry] = []
    datagen, run_leaves = leaves(root, raw_model_dir)
    for leaf in run_leaves:
        start = starts.get(leaf.name)
        name = unique_name(start.strftime("%Y%m%d_%H%M%S") if start else leaf.name, taken)
        entries += [Entry(f"{base}/run/{name}/{rel}", src) for src, rel in files_under(leaf)]
    ts = unique_name(timestamp(run.created, run.run_id), taken)
    entries += [Entry(f"{base}/datasize/{ts}/{rel}", src)
                for src, rel in files_under(root, skip_top=("raw", *RUN_SKIP))]
    for leaf in datagen:
        name = ts if len(datagen) == 1 else f"{ts}_{leaf.name}"  # datagen/ has its own namespace
        entries += [Entry(f"{base}/datagen/{name}/{rel}", src) for src, rel in files_under(leaf)]
    return entries, ts, results_dir
