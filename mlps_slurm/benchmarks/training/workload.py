"""The DLIO workload config of a training run: names no DLIO package ships, the complete workload with the --param
values applied, the file each phase runs, what DLIO 2.0.0 cannot do with it, and the workload the config really
describes.

Pure functions (no MPI, no Slurm); the traps of DLIO 2.0.0 it avoids are listed in
mlps_slurm.benchmarks.training.engine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any, Iterable, Mapping

import yaml

from mlps_slurm.benchmarks.training.catalog import DLIO_FORMATS, TENSORFLOW_FORMATS, TrainingWorkload
from mlps_slurm.benchmarks.training.params import Param, get_key, set_key

FRAMEWORKS = ("pytorch", "tensorflow")
DATA_LOADERS = ("pytorch", "tensorflow", "dali", "native_dali")


def config_name(model: str, accelerator: str, run_id: str) -> str:
    """A workload name no DLIO package ships, so Hydra cannot pick a packaged file of the same name."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"mlps_{model}_{accelerator}_{digest}"


def phase_name(base: str, phase: str, task: int | None = None) -> str:
    return f"{base}_datagen" if phase == "datagen" else f"{base}_run{task:02d}"


def base_config(w: TrainingWorkload, params: Iterable[Param], checkpoint_folder: str) -> dict[str, Any]:
    """The complete workload (every key DLIO 2.0.0 reads for it), with the --param values applied. The dataset's
    folder and file count are filled in by `finish_config` once the dataset size is settled."""
    reader: dict[str, Any] = {"data_loader": w.data_loader, "batch_size": w.batch_size,
                              "read_threads": w.read_threads, **w.reader_extra}
    if w.computation_threads is not None:
        reader["computation_threads"] = w.computation_threads
    checkpoint: dict[str, Any] = {"checkpoint_folder": checkpoint_folder}
    if w.checkpoint is not None:
        checkpoint.update(checkpoint_after_epoch=w.checkpoint.after_epoch,
                          epochs_between_checkpoints=w.checkpoint.epochs_between,
                          model_size=w.checkpoint.model_size_bytes)
    config: dict[str, Any] = {
        "model": w.model,
        "framework": w.framework,
        "workflow": {"generate_data": False, "train": True, "checkpoint": w.checkpoint is not None},
        "dataset": {"data_folder": None, "format": w.format, "num_files_train": None, "num_files_eval": 0,
                    "num_subfolders_train": 0, "num_samples_per_file": w.samples_per_file,
                    "record_length": w.record_length, "record_length_stdev": w.record_length_stdev,
                    "record_length_resize": w.record_length_resize, "keep_files": True},
        "reader": reader,
        "train": {"epochs": w.epochs, "computation_time": w.computation_time},
        "checkpoint": checkpoint,
        "metric": {"au": w.au_threshold},
    }
    for p in params:
        set_key(config, p.key, p.value)
    return config


def finish_config(config: Mapping[str, Any], num_files: int, data_folder: str, phase: str,
                  seed: int | None = None) -> dict[str, Any]:
    """The file DLIO runs for one phase: datagen generates (and does nothing else), a run trains."""
    out = json.loads(json.dumps(config))  # deep copy of plain data
    out["dataset"]["num_files_train"] = num_files
    out["dataset"]["data_folder"] = data_folder
    if phase == "datagen":
        out["workflow"] = {"generate_data": True, "train": False, "checkpoint": False}
    else:
        out["workflow"]["generate_data"] = False
        out["workflow"]["train"] = True
        if seed is not None:
            # Rules/guidelines §6.6-6.7: the seed changes from run to run (DLIO's default is a fixed 123).
            out["train"]["seed"] = seed
    return out


def run_seed(run_id: str, task: int) -> int:
    return int(hashlib.sha256(f"{run_id}/{task}".encode()).hexdigest()[:7], 16)


def effective(config: Mapping[str, Any]) -> dict[str, str]:
    """framework, format and data loader after the --param overrides."""
    return {"framework": str(config.get("framework")), "format": str(get_key(config, "dataset.format")),
            "data_loader": str(get_key(config, "reader.data_loader"))}


def engine_problems(config: Mapping[str, Any], parquet_hint: str) -> list[str]:
    """What PyPI DLIO 2.0.0 refuses or cannot do with this config; each message names the key and the fix."""
    eff = effective(config)
    problems = []
    if eff["format"] == "parquet":
        problems.append(f"dataset.format parquet cannot be generated or read by dlio-benchmark 2.0.0; parquet "
                        f"exists only in {parquet_hint}")
    elif eff["format"] not in DLIO_FORMATS:
        problems.append(f"dataset.format {eff['format']!r} is not a format dlio-benchmark 2.0.0 knows; valid: "
                        f"{', '.join(DLIO_FORMATS)}")
    if eff["framework"] not in FRAMEWORKS:
        problems.append(f"framework {eff['framework']!r}: valid frameworks are {', '.join(FRAMEWORKS)}")
    if eff["data_loader"] not in DATA_LOADERS:
        problems.append(f"reader.data_loader {eff['data_loader']!r}: valid loaders are {', '.join(DATA_LOADERS)}")
    if eff["format"] == "tfrecord" and eff["data_loader"] == "pytorch":
        problems.append("dataset.format tfrecord cannot be read by reader.data_loader pytorch in dlio-benchmark "
                        "2.0.0; use reader.data_loader=tensorflow with framework=tensorflow")
    if {eff["framework"], eff["data_loader"]} == {"pytorch", "tensorflow"}:
        problems.append(f"framework {eff['framework']} and reader.data_loader {eff['data_loader']} do not go "
                        "together (DLIO refuses the pair); set both to pytorch or both to tensorflow")
    return problems


def needs_tensorflow(config: Mapping[str, Any]) -> bool:
    eff = effective(config)
    return eff["format"] in TENSORFLOW_FORMATS or "tensorflow" in (eff["framework"], eff["data_loader"])


def dataset_id(config: Mapping[str, Any], num_files: int) -> str:
    """Names a dataset by what is on disk, so --reuse-data finds the same dataset again and nothing else."""
    d = config["dataset"]
    shape = {k: d.get(k) for k in ("format", "num_samples_per_file", "record_length", "record_length_stdev",
                                   "num_subfolders_train", "num_files_eval")}
    shape["num_files_train"] = num_files
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:10]
    return f"{num_files}f-{digest}"


def _positive(config: Mapping[str, Any], key: str, kind: type, minimum: float) -> Any:
    value = get_key(config, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ValueError(f"{key} is {value!r}, expected {'a whole number' if kind is int else 'a number'}")
    if value < minimum:
        raise ValueError(f"{key} is {value!r}, must be at least {minimum:g}")
    return value


def effective_workload(w: TrainingWorkload, config: Mapping[str, Any]) -> TrainingWorkload:
    """The catalog workload with the numbers the config (after --param) really holds: sizing, the AU threshold
    and the expected reads follow what runs, not what the catalog says."""
    return replace(
        w,
        framework=str(config.get("framework")), format=str(get_key(config, "dataset.format")),
        data_loader=str(get_key(config, "reader.data_loader")),
        record_length=_positive(config, "dataset.record_length", float, 1),
        record_length_stdev=_positive(config, "dataset.record_length_stdev", float, 0),
        record_length_resize=_positive(config, "dataset.record_length_resize", int, 0),
        samples_per_file=_positive(config, "dataset.num_samples_per_file", int, 1),
        batch_size=_positive(config, "reader.batch_size", int, 1),
        read_threads=_positive(config, "reader.read_threads", int, 0),
        epochs=_positive(config, "train.epochs", int, 1),
        computation_time=_positive(config, "train.computation_time", float, 0),
        au_threshold=_positive(config, "metric.au", float, 0),
    )


def config_yaml(config: Mapping[str, Any], header: str) -> str:
    lines = [f"# {line}" for line in header.splitlines()]
    return "\n".join(lines) + "\n" + yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)
