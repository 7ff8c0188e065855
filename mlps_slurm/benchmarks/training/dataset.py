"""The training dataset on disk, inside the jobs: the files as DLIO finds them, their sizes (every rank stats its
share), clearing a dataset directory of what DLIO made, and the checks the datagen job makes: whether an existing
dataset can be reused, whether the generated one matches the request, and whether another chain still uses it.

This module runs on compute nodes: it imports no click, jinja2 or cli code.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from mlps_slurm.benchmarks.training.dataset_lease import active_users
from mlps_slurm.benchmarks.training.engine import DATASET_MARKER
from mlps_slurm.benchmarks.training.filesizes import SizeModel, dataset_problems
from mlps_slurm.benchmarks.training.shim import Mpi, StepError
from mlps_slurm.rundir import RunDirectory, read_json

DATASET_SUBDIRS = ("train", "valid", "index")  # what DLIO 2.0.0 creates in a data folder


def list_dataset(data_folder: str, fmt: str) -> list[str]:
    """Training files as DLIO 2.0.0 finds them: train/*.<fmt>, or train/*/*.<fmt> with subfolders; sorted."""
    train = Path(data_folder) / "train"
    if not train.is_dir():
        return []
    names: list[str] = []
    suffix = f".{fmt}"
    with os.scandir(train) as it:
        for entry in it:
            if entry.is_dir():
                with os.scandir(entry.path) as sub:
                    names += [f"{entry.name}/{e.name}" for e in sub if e.name.endswith(suffix) and e.is_file()]
            elif entry.name.endswith(suffix):
                names.append(entry.name)
    return sorted(names)


def count_subfolders(data_folder: str) -> int:
    train = Path(data_folder) / "train"
    return sum(1 for p in train.iterdir() if p.is_dir()) if train.is_dir() else 0


def file_sizes(mpi: Mpi, root: str, names: list[str]) -> list[int] | None:
    """Sizes of every file, each rank stat-ing its share; the full list on rank 0, None elsewhere."""
    mine = []
    for i in range(mpi.rank, len(names), mpi.size):
        try:
            mine.append((i, os.stat(os.path.join(root, "train", names[i])).st_size))
        except OSError:
            mine.append((i, -1))
    parts = mpi.comm.gather(mine, root=0)
    if mpi.rank != 0:
        return None
    sizes = [0] * len(names)
    for part in parts:
        for i, size in part:
            sizes[i] = size
    return sizes


def clear_dataset_dir(path: Path) -> None:
    """Empty a dataset directory before generating into it, but only what mlps-slurm or DLIO put there."""
    if not path.exists():
        return
    foreign = [p.name for p in path.iterdir() if p.name not in (*DATASET_SUBDIRS, DATASET_MARKER)]
    if foreign:
        raise StepError(f"{path} holds files mlps-slurm did not create ({', '.join(sorted(foreign)[:5])}); refusing "
                        "to delete them: choose another --param dataset.data_folder or storage.data_dir, or remove "
                        "them")
    for name in DATASET_SUBDIRS:
        shutil.rmtree(path / name, ignore_errors=True)
    (path / DATASET_MARKER).unlink(missing_ok=True)


def dataset_shape(config: dict[str, Any]) -> dict[str, Any]:
    d = config["dataset"]
    return {k: d.get(k) for k in ("format", "num_files_train", "num_subfolders_train", "num_samples_per_file",
                                  "record_length", "record_length_stdev", "num_files_eval")}


# --- the datagen job's checks ----------------------------------------------------------------------------------------

def reusable(mpi: Mpi, config: dict[str, Any], request: dict[str, Any]) -> tuple[bool, str]:
    """Collective: whether the existing dataset matches what this run needs (marker, count and sizes)."""
    folder, fmt = config["dataset"]["data_folder"], config["dataset"]["format"]
    names: list[str] | None = None
    why = ""
    if mpi.rank == 0:
        marker = Path(folder) / DATASET_MARKER
        if not request.get("reuse_data"):
            why = "--reuse-data not given"
        elif marker.is_file() and read_json(marker).get("shape") != dataset_shape(config):
            why = f"{marker} describes another dataset"
        else:
            names = list_dataset(folder, fmt)
            why = "" if names else f"no {fmt} files under {folder}/train"
    names = mpi.comm.bcast(names if not why else None, root=0)
    if names is None:
        return False, mpi.comm.bcast(why, root=0)
    sizes = file_sizes(mpi, folder, names)
    problems: list[str] = []
    if mpi.rank == 0:
        problems = dataset_problems(sizes or [], config["dataset"]["num_files_train"],
                                    SizeModel.of(config), folder)
    problems = mpi.comm.bcast(problems, root=0)
    return not problems, "; ".join(problems) or "matches"


def verify_dataset(mpi: Mpi, config: dict[str, Any]) -> dict[str, Any] | None:
    folder, fmt = config["dataset"]["data_folder"], config["dataset"]["format"]
    names = mpi.comm.bcast(list_dataset(folder, fmt) if mpi.rank == 0 else None, root=0)
    sizes = file_sizes(mpi, folder, names)
    if mpi.rank != 0:
        return None
    assert sizes is not None
    model = SizeModel.of(config)
    lo, hi = model.file_bounds()
    return {"num_files": len(sizes), "num_subfolders": count_subfolders(folder), "bytes": sum(sizes),
            "min_file_bytes": min(sizes, default=0), "max_file_bytes": max(sizes, default=0),
            "mean_file_bytes": sum(sizes) / len(sizes) if sizes else 0, "expected_files":
            config["dataset"]["num_files_train"], "expected_file_bytes_range": [lo, hi] if model.checked else None,
            "sizes_checked": model.checked,
            "problems": dataset_problems(sizes, config["dataset"]["num_files_train"], model, folder)}


def refuse_if_shared(folder: Path, run: RunDirectory) -> None:
    """Regenerating would pull the files from under another chain's runs: refuse while one is queued or running."""
    from mlps_slurm.slurm import get_backend

    busy = active_users(folder, run.run_id, get_backend().states)
    if busy:
        raise StepError(f"{folder} is in use by another chain: {'; '.join(busy)}; submit with --reuse-data to "
                        "share the dataset (it is reused when its files match), or when that chain has ended")
