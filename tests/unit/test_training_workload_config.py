"""The DLIO workload file we generate, the checks of what DLIO resolved, the dataset checks, and the parsing of
DLIO's output."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from mlps_slurm.benchmarks.training import catalog as cat
from mlps_slurm.benchmarks.training import engine as eng
from mlps_slurm.benchmarks.training.filesizes import SizeModel, dataset_problems
from mlps_slurm.benchmarks.training.output import DlioOutputError, normalize_run, resolved_config_problems
from mlps_slurm.benchmarks.training.params import parse_params
from mlps_slurm.benchmarks.training.workload import (base_config, config_name, config_yaml, finish_config, phase_name,
                                                     run_seed)


def config_for(model="unet3d", accel="b200", params=()):
    w = cat.workload(model, accel)
    return base_config(w, parse_params(params, model), "/ckpt/run1/unet3d")


def test_complete_config_uses_dlio_2_0_0_key_names():
    base = config_for()
    run = finish_config(base, 7000, "/data/unet3d/7000f-x", "run", seed=42)
    d = run["dataset"]
    assert (d["record_length"], d["record_length_stdev"], d["record_length_resize"]) == \
        (146_600_628, 68_341_808, 2_097_152)
    assert not any(k.startswith("record_length_bytes") for k in d)  # 2.0.0 ignores these silently
    assert (d["num_files_train"], d["data_folder"], d["format"], d["keep_files"]) == \
        (7000, "/data/unet3d/7000f-x", "npz", True)
    assert run["checkpoint"]["checkpoint_folder"] == "/ckpt/run1/unet3d"  # never DLIO's ./checkpoints default
    assert run["workflow"] == {"generate_data": False, "train": True, "checkpoint": False}
    assert run["train"] == {"epochs": 5, "computation_time": 0.162, "seed": 42}
    assert run["reader"] == {"data_loader": "pytorch", "batch_size": 7, "read_threads": 4, "file_shuffle": "seed",
                             "sample_shuffle": "seed"}
    assert run["metric"] == {"au": 0.90} and run["framework"] == "pytorch" and run["model"] == "unet3d"
    gen = finish_config(base, 7000, "/data/unet3d/7000f-x", "datagen")
    assert gen["workflow"] == {"generate_data": True, "train": False, "checkpoint": False}
    assert "seed" not in gen["train"] and base["dataset"]["num_files_train"] is None  # base left untouched


def test_checkpointing_workloads_keep_their_checkpoint_settings():
    run = finish_config(config_for(accel="h100"), 168, "/d", "run", 1)
    assert run["workflow"]["checkpoint"] is True
    assert run["checkpoint"] == {"checkpoint_folder": "/ckpt/run1/unet3d", "checkpoint_after_epoch": 5,
                                 "epochs_between_checkpoints": 2, "model_size": 499_153_191}


def test_params_are_applied_to_the_config():
    run = config_for(params=("reader.read_threads=2", "dataset.num_subfolders_train=4", "reader.odirect=true"))
    assert run["reader"]["read_threads"] == 2 and run["reader"]["odirect"] is True
    assert run["dataset"]["num_subfolders_train"] == 4


def test_names_cannot_be_shadowed_by_dlio_packaged_workloads():
    name = config_name("unet3d", "h100", "training-20261128-120000-abcdef")
    assert name.startswith("mlps_unet3d_h100_") and len(name) == len("mlps_unet3d_h100_") + 8
    assert phase_name(name, "run", 3) == f"{name}_run03" and phase_name(name, "datagen") == f"{name}_datagen"
    spec = importlib.util.find_spec("dlio_benchmark")
    packaged = Path(spec.origin).parent / "configs" / "workload"
    shipped = {p.stem for p in packaged.glob("*.yaml")}
    assert "unet3d_h100" in shipped and not any(s.startswith("mlps_") for s in shipped)
    assert run_seed("r", 0) != run_seed("r", 1)


def test_config_yaml_round_trips_with_a_header():
    config = finish_config(config_for(), 10, "/d", "run", 7)
    text = config_yaml(config, "line one\nline two")
    assert text.startswith("# line one\n# line two\n")
    assert yaml.safe_load(text) == config


def test_dlio_argv_puts_options_before_overrides():
    argv = eng.dlio_argv("/run/dlio/config", "mlps_x_run00", "/run/raw/training/unet3d/run/00",
                         ["++workload.reader.read_threads=2"])
    assert argv == ["--config-dir=/run/dlio/config", "workload=mlps_x_run00",
                    "hydra.run.dir=/run/raw/training/unet3d/run/00", "hydra.output_subdir=dlio_config",
                    "++workload.reader.read_threads=2"]


def write_resolved(out: Path, workload: dict, chosen: str, sources: list[str]) -> None:
    sub = out / "dlio_config"
    sub.mkdir(parents=True)
    (sub / "config.yaml").write_text(yaml.safe_dump({"workload": workload}))
    (sub / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {
        "choices": {"workload": chosen},
        "config_sources": [{"path": p, "schema": "file", "provider": "x"} for p in sources]}}}))


def test_resolved_config_matches(tmp_path):
    config = finish_config(config_for(), 10, "/d", "run", 7)
    write_resolved(tmp_path, config, "mlps_x_run00", ["hydra.conf", "dlio_benchmark.configs", "/cfg"])
    assert resolved_config_problems(tmp_path, config, "mlps_x_run00", "/cfg") == []


def test_resolved_config_catches_shadowing_and_ignored_keys(tmp_path):
    config = finish_config(config_for(), 10, "/d", "run", 7)
    resolved = json.loads(json.dumps(config))
    resolved["dataset"]["record_length"] = 65536  # what a silently ignored key looks like
    del resolved["checkpoint"]["checkpoint_folder"]
    write_resolved(tmp_path, resolved, "unet3d_b200", ["hydra.conf", "dlio_benchmark.configs"])
    problems = "\n".join(resolved_config_problems(tmp_path, config, "mlps_x_run00", "/cfg"))
    assert "DLIO ran workload 'unet3d_b200', expected 'mlps_x_run00'" in problems
    assert "do not include /cfg" in problems
    assert "workload.dataset.record_length is 65536, we set 146600628" in problems
    assert "workload.checkpoint.checkpoint_folder is missing" in problems
    missing = resolved_config_problems(tmp_path / "nothing", config, "x", "/cfg")
    assert len(missing) == 1 and "DLIO left no readable resolved config" in missing[0]


def unet3d_sizes_like_dlio(n: int, record: int, stdev: int, seed: int = 10) -> list[int]:
    """What 2.0.0's npz generator writes: int(sqrt(L)) sides drawn from Normal(dim, stdev/2/sqrt(L))."""
    import math

    import numpy as np

    rng = np.random.RandomState(seed)
    dim = int(math.sqrt(record))
    sides = [max(int(d), 1) for d in rng.normal(dim, stdev / 2 / math.sqrt(record), 2 * n)] if stdev else [dim] * 2 * n
    return [sides[2 * i] * sides[2 * i + 1] + 498 for i in range(n)]  # + the zip and .npy headers


def test_dataset_check_accepts_what_dlio_generates():
    config = finish_config(config_for(params=("dataset.record_length=262144",
                                              "dataset.record_length_stdev=65536")), 168, "/d", "datagen")
    sizes = unet3d_sizes_like_dlio(168, 262_144, 65_536)
    assert dataset_problems(sizes, 168, SizeModel.of(config), "/d") == []
    fixed = finish_config(config_for(params=("dataset.record_length=262144", "dataset.record_length_stdev=0")),
                          40, "/d", "datagen")
    assert dataset_problems(unet3d_sizes_like_dlio(40, 262_144, 0), 40, SizeModel.of(fixed), "/d") == []


def test_dataset_check_catches_the_64_kib_default_and_missing_files():
    config = finish_config(config_for(), 100, "/d", "datagen")  # 146.6 MB records
    default_sized = [65_536 + 498] * 99
    problems = dataset_problems(default_sized, 100, SizeModel.of(config), "/d")
    assert problems[0] == "/d: 99 files on disk, 100 requested"
    assert "mean file size 66,034 bytes" in problems[-1]
    fixed = finish_config(config_for(params=("dataset.record_length=262144", "dataset.record_length_stdev=0")),
                          3, "/d", "datagen")
    problems = dataset_problems([262_642, 262_642, 100], 3, SizeModel.of(fixed), "/d")
    assert "1 file(s) outside the configured size range 262,144-264,208 bytes (e.g. 100 bytes)" in problems[0]


def test_compressed_formats_get_a_loose_check():
    config = finish_config(config_for("retinanet", "b200"), 10, "/d", "datagen")
    model = SizeModel.of(config)
    assert model.format == "jpeg" and model.checked
    assert dataset_problems([180_000] * 10, 10, model, "/d") == []  # random pixels: ~0.56 x raw in JPEG
    assert dataset_problems([65_536] * 10, 10, model, "/d")


def write_run_leaf(leaf: Path, au=96.0, samples=78.0, start="2026-11-28T17:21:24.7", end="2026-11-28T17:21:35.8",
                   rchar=229_634_175, read_bytes=45_105_152) -> None:
    leaf.mkdir(parents=True)
    summary = {"start": start, "end": end, "epochs": 5, "num_accelerators": 2, "num_hosts": 2,
               "num_files_train": 168, "host_memory_GB": [23.5, 23.5], "potential_caching": [1, 1],
               "metric": {"train_au_percentage": [94.0, 96.0, 97.0, 96.5, 96.5], "train_au_mean_percentage": au,
                          "train_au_meet_expectation": "success" if au >= 90 else "fail",
                          "train_throughput_mean_samples_per_second": samples,
                          "train_io_mean_MB_per_second": samples * 262_144 / 2**20}}
    (leaf / "summary.json").write_text(json.dumps(summary))
    (leaf / "per_epoch_stats.json").write_text(json.dumps(
        {str(e): {"start": "x", "end": "y", "duration": "2.18"} for e in range(1, 6)}))
    (leaf / "io.json").write_text(json.dumps({"schema": eng.IO_SCHEMA, "total": {"rchar": rchar,
                                                                                 "read_bytes": read_bytes}}))


def test_normalize_run_reports_dlio_and_measured_throughput(tmp_path):
    write_run_leaf(tmp_path / "01")
    m = normalize_run(tmp_path / "01", 262_144)
    assert m["au_percent"] == 96.0 and m["au_meet_expectation"] == "success"
    assert m["throughput_samples_per_s"] == 78.0
    assert m["dlio_MiB_per_s"] == pytest.approx(78.0 * 262_144 / 2**20)
    assert m["dlio_MB_per_s"] == pytest.approx(78.0 * 262_144 / 1e6)
    assert m["train_seconds"] == pytest.approx(10.9)
    assert m["measured_MB_per_s"] == pytest.approx(229_634_175 / 10.9 / 1e6)
    assert m["storage_fraction"] == pytest.approx(45_105_152 / 229_634_175)


def test_normalize_run_names_the_missing_file(tmp_path):
    with pytest.raises(DlioOutputError, match="summary.json: missing"):
        normalize_run(tmp_path, 1.0)
    (tmp_path / "summary.json").write_text('{"start": "x"')
    with pytest.raises(DlioOutputError, match="not valid JSON"):
        normalize_run(tmp_path, 1.0)
    (tmp_path / "summary.json").write_text('{"start": "x", "metric": {}}')
    with pytest.raises(DlioOutputError, match="train_au_mean_percentage"):
        normalize_run(tmp_path, 1.0)
