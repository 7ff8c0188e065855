"""A training run's record: the manifest's request and settings, with what the datagen job settled.

When the profile does not declare the clients' memory, the dataset size is settled in the datagen job from the
memory the preflight measured. That job writes datasize.json (it never rewrites the manifest); everyone who reads
the run afterwards (the run tasks, the finalize, the rules) reads the size from there through this one function.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from mlps_slurm.rundir import run_record

DATASIZE_FILE = "datasize.json"


class SettledSizeError(ValueError):
    """datasize.json exists but cannot be read; the message names it."""


def settled_size(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / DATASIZE_FILE
    if not path.exists():  # not settled (yet); anything else there (a directory, say) is reported below
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SettledSizeError(f"{path}: unreadable ({exc}); the datagen job's settled dataset size is lost") \
            from exc
    if not isinstance(data, dict) or not isinstance(data.get("num_files"), int):
        raise SettledSizeError(f"{path}: no whole-number num_files; the datagen job's record is damaged")
    return data


def training_record(run_dir: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The request, the planned settings and the settled dataset size of one training run, as one mapping."""
    record = run_record(dict(manifest))
    settled = settled_size(run_dir)
    if settled is not None:
        record.update(num_files_train=settled["num_files"], client_memory_gb=settled.get("memory_gib_per_host"),
                      memory_source=settled.get("memory_source", record.get("memory_source")),
                      datasize={k: v for k, v in settled.items()
                                if k not in ("settled", "memory_source", "dataset_dir", "explain", "configs")},
                      dataset_bytes=settled.get("total_bytes", record.get("dataset_bytes")),
                      dataset_dir=settled.get("dataset_dir", record.get("dataset_dir")))
    return record
