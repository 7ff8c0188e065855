"""DLIO adapter for the training benchmark: the workload config, the command line, and DLIO's output normalized.

Pure functions (no MPI, no Slurm); the in-job shim (mlps_slurm.benchmarks.training.job) and the finalize step use them.

Written for PyPI dlio-benchmark 2.0.0 and its traps (reference dlio.md §6):
- the record-size keys are `record_length`, `record_length_stdev`, `record_length_resize`; the upstream MLPerf
  Storage spelling `record_length_bytes*` is ignored by 2.0.0 without a warning, so it is never written;
- Hydra searches DLIO's packaged configs before --config-dir, so our workload files carry names no package ships
  (`mlps_<model>_<accelerator>_<run hash>_<phase>`), and the config DLIO resolved is checked after every run;
- `checkpoint.checkpoint_folder` is always set: 2.0.0 creates it even when checkpointing is off, in the working
  directory by default;
- `train_io_mean_MB_per_second` is samples/s x the configured record length / 2^20, not bytes read: the shim
  measures the bytes every rank actually read and it is reported beside DLIO's figure.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from mlps_slurm.benchmarks.training.catalog import (CLOSED_PARAMS, DLIO_FORMATS, MANAGED_PARAMS, ODIRECT_MODELS, OPEN_PARAMS,
                                         TENSORFLOW_FORMATS, TrainingWorkload)

TESTED_DLIO_VERSION = "2.0.0"
OUTPUT_SUBDIR = "dlio_config"  # hydra.output_subdir, as mlpstorage sets it
DATASET_MARKER = ".mlps-dataset.json"
SHIM_MODULE = "mlps_slurm.benchmarks.training.job"
FRAMEWORKS = ("pytorch", "tensorflow")
DATA_LOADERS = ("pytorch", "tensorflow", "dali", "native_dali")
IO_SCHEMA = "mlps-slurm/dlio-io/1"
DATAGEN_SCHEMA = "mlps-slurm/dlio-datagen/1"


class DlioOutputError(ValueError):
    """DLIO's output is missing or malformed; the message names the file and the key."""


# --- parameters ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    key: str  # workload key without the "workload." prefix, e.g. reader.read_threads
    text: str  # the value as given
    value: Any  # the value as YAML reads it (what Hydra passes to DLIO for simple scalars)
    division: str  # CLOSED, OPEN, INVALID or MANAGED

    def override(self) -> str:
        return f"++workload.{self.key}={self.text}"


class ParamError(ValueError):
    """A --param that is malformed or names a key mlps-slurm manages; the message says which and how to fix it."""


def classify_param(key: str, model: str) -> str:
    if key in MANAGED_PARAMS or key.startswith("hydra.") or key.startswith("workflow."):
        return "MANAGED"
    if key == "reader.odirect" and model not in ODIRECT_MODELS:
        return "OPEN"
    if key in CLOSED_PARAMS:
        return "CLOSED"
    if key in OPEN_PARAMS:
        return "OPEN"
    return "INVALID"


def parse_params(items: Iterable[str], model: str) -> list[Param]:
    """`key=value` strings -> Params. Keys may carry DLIO's `++workload.` prefix; a key given twice is an error."""
    out: dict[str, Param] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().lstrip("+").removeprefix("workload.")
        if not sep or not key or not text.strip():
            raise ParamError(f"--param {item!r}: expected KEY=VALUE, e.g. --param reader.read_threads=8")
        if key in out:
            raise ParamError(f"--param {key} is given twice ({out[key].text!r} and {text!r}); give it once")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            problem = str(exc).splitlines()[0]
            raise ParamError(f"--param {key}={text!r}: the value is not a YAML scalar ({problem}); quote it "
                             "or give a plain number or word") from exc
        if isinstance(value, (dict, list)):
            raise ParamError(f"--param {key}={text!r}: only single values can be overridden, not lists or maps")
        division = classify_param(key, model)
        if division == "MANAGED":
            raise ParamError(f"--param {key}: mlps-slurm sets {key} itself for every job of the chain (datagen, "
                             "the 6 runs); remove this --param")
        out[key] = Param(key, text.strip(), value, division)
    return list(out.values())


def params_verdict(params: list[Param]) -> str:
    if any(p.division == "INVALID" for p in params):
        return "INVALID"
    if any(p.division == "OPEN" for p in params):
        return "OPEN"
    return "CLOSED"


def set_key(config: dict[str, Any], dotted: str, value: Any) -> None:
    node = config
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def get_key(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


# --- the workload config ------------------------------------------------------------------------------------------

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


# --- the command line ---------------------------------------------------------------------------------------------

def dlio_argv(config_dir: str, workload: str, output_dir: str, overrides: Iterable[str]) -> list[str]:
    """DLIO's arguments (after the program name). Hydra's parser takes options before the overrides."""
    return [f"--config-dir={config_dir}", f"workload={workload}", f"hydra.run.dir={output_dir}",
            f"hydra.output_subdir={OUTPUT_SUBDIR}", *overrides]


# --- after a run: the resolved config ----------------------------------------------------------------------------

def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (a == b and type(a) is type(b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b


def resolved_config_problems(output_dir: Path, expected: Mapping[str, Any], workload: str,
                             config_dir: str) -> list[str]:
    """Check what DLIO resolved (dlio_config/config.yaml, hydra.yaml) against the config we wrote: the workload
    file must be ours (config_sources, choices) and every key we set must have the value we set."""
    problems = []
    sub = output_dir / OUTPUT_SUBDIR
    try:
        resolved = yaml.safe_load((sub / "config.yaml").read_text())
        hydra_cfg = yaml.safe_load((sub / "hydra.yaml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        return [f"{sub}: DLIO left no readable resolved config ({exc})"]
    runtime = (hydra_cfg or {}).get("hydra", {}).get("runtime", {})
    chosen = (runtime.get("choices") or {}).get("workload")
    if chosen != workload:
        problems.append(f"{sub / 'hydra.yaml'}: DLIO ran workload {chosen!r}, expected {workload!r}")
    sources = [s.get("path") for s in runtime.get("config_sources") or [] if isinstance(s, Mapping)]
    if config_dir not in sources:
        problems.append(f"{sub / 'hydra.yaml'}: config_sources {sources} do not include {config_dir}: DLIO did "
                        "not read our workload file")
    got = _flatten((resolved or {}).get("workload", {}))
    for key, want in _flatten(dict(expected)).items():
        if key not in got:
            problems.append(f"{sub / 'config.yaml'}: workload.{key} is missing (we set {want!r})")
        elif not _same(got[key], want):
            problems.append(f"{sub / 'config.yaml'}: workload.{key} is {got[key]!r}, we set {want!r}")
    return problems


# --- dataset files ------------------------------------------------------------------------------------------------

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


# --- DLIO's output ------------------------------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DlioOutputError(f"{path}: missing") from exc
    except json.JSONDecodeError as exc:
        raise DlioOutputError(f"{path}: not valid JSON (truncated?): {exc.msg} at line {exc.lineno}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DlioOutputError(f"{path}: unreadable: {exc}") from exc


def _epoch_seconds(stats: Any) -> float | None:
    """Training time of a run: the sum of its epochs' durations (DLIO's per_epoch_stats.json)."""
    if not isinstance(stats, Mapping):
        return None
    total = 0.0
    for entry in stats.values():
        if isinstance(entry, Mapping):
            try:
                total += float(str(entry.get("duration")))  # DLIO writes it as a string, e.g. "2.18"
            except ValueError:
                return None
    return total or None


def normalize_run(leaf: Path, record_length: float) -> dict[str, Any]:
    """One run's metrics from its hydra output dir: DLIO's summary.json and per_epoch_stats.json, the shim's
    io.json (bytes every rank read) and launch.json. Raises DlioOutputError naming the file."""
    summary = read_json(leaf / "summary.json")
    if not isinstance(summary, Mapping):
        raise DlioOutputError(f"{leaf / 'summary.json'}: expected a JSON object")
    metric = summary.get("metric")
    if not isinstance(metric, Mapping):
        raise DlioOutputError(f"{leaf / 'summary.json'}: metric: missing (DLIO did not finish training)")
    au = _number(metric.get("train_au_mean_percentage"))
    samples = _number(metric.get("train_throughput_mean_samples_per_second"))
    if au is None or samples is None:
        raise DlioOutputError(f"{leaf / 'summary.json'}: metric.train_au_mean_percentage / "
                              "train_throughput_mean_samples_per_second: missing or not a number")
    dlio_mib = _number(metric.get("train_io_mean_MB_per_second"))
    try:
        epoch_s = _epoch_seconds(read_json(leaf / "per_epoch_stats.json"))
    except DlioOutputError:
        epoch_s = None
    io = None
    if (leaf / "io.json").is_file():
        io = read_json(leaf / "io.json")
    measured = io.get("total", {}) if isinstance(io, Mapping) else {}
    bytes_read = measured.get("rchar")
    storage_bytes = measured.get("read_bytes")
    caching = summary.get("potential_caching")
    return {
        "name": leaf.name,
        "start": summary.get("start"),
        "end": summary.get("end"),
        "epochs": summary.get("epochs"),
        "num_accelerators": summary.get("num_accelerators"),
        "num_hosts": summary.get("num_hosts"),
        "num_files_train": summary.get("num_files_train"),
        "host_memory_GB": summary.get("host_memory_GB"),
        "au_percent": au,
        "au_per_epoch": [x for x in metric.get("train_au_percentage") or [] if _number(x) is not None],
        "au_meet_expectation": metric.get("train_au_meet_expectation"),
        "throughput_samples_per_s": samples,
        # DLIO computes its "MB/second" as samples/s x configured record length / 2^20: nominal, not measured.
        "dlio_MiB_per_s": dlio_mib,
        "dlio_MB_per_s": samples * record_length / 1e6,
        "train_seconds": epoch_s,
        "bytes_read": bytes_read,
        "storage_bytes_read": storage_bytes,
        "measured_MB_per_s": (bytes_read / epoch_s / 1e6) if isinstance(bytes_read, (int, float)) and epoch_s
        else None,
        # Share of the bytes read that came from storage rather than the page cache (page-ins of anything else
        # the ranks touched count too, so this is an upper bound for the dataset).
        "storage_fraction": (storage_bytes / bytes_read) if isinstance(storage_bytes, (int, float))
        and isinstance(bytes_read, (int, float)) and bytes_read > 0 else None,
        "dlio_potential_caching": caching,
        "cache_drop": io.get("cache_drop") if isinstance(io, Mapping) else None,
    }


# --- the jobs' interpreter ------------------------------------------------------------------------------------------

# Runs inside the jobs' interpreter: is the engine importable there (find_spec: no import of DLIO, which would
# import tensorflow), and, only when asked, does tensorflow really import.
_PROBE = r"""
import importlib.util, importlib.metadata, json, sys
out = {"python": sys.version.split()[0], "missing": []}
for name in ("dlio_benchmark", "dftracer", "mpi4py", "hydra", "torch"):
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        out["missing"].append(name)
try:
    out["dlio_version"] = importlib.metadata.version("dlio-benchmark")
except importlib.metadata.PackageNotFoundError:
    out["dlio_version"] = None
if "--tensorflow" in sys.argv:
    try:
        import tensorflow
        out["tensorflow"] = tensorflow.__version__
    except Exception as exc:
        out["tensorflow_error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""

TENSORFLOW_HINT = ("install tensorflow-cpu into the jobs' Python (tested with tensorflow-cpu==2.21.0, about 1.4 GB; "
                   "DLIO's tfrecord generator also calls DALI's tfrecord2idx, for which mlps-slurm provides a "
                   "stand-in), or run the OPEN variant without tensorflow: --param framework=pytorch --param "
                   "reader.data_loader=pytorch --param dataset.format=npz")


def probe_engine(python: str, need_tensorflow: bool, timeout: float = 300) -> list[str]:
    """Problems with the jobs' interpreter for this workload, each with the fix; empty when it can run."""
    import subprocess

    argv = [python, "-c", _PROBE] + (["--tensorflow"] if need_tensorflow else [])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"cannot run the jobs' Python {python} to look for DLIO: {exc}; set environment.python in the "
                "profile to a working interpreter"]
    if proc.returncode != 0:
        return [f"the jobs' Python {python} failed to probe DLIO: {proc.stderr.strip()[-500:]}"]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    problems = []
    if info["missing"]:
        problems.append(f"the jobs' Python {python} lacks {', '.join(info['missing'])}: install the pinned "
                        "requirements (requirements/jobs.txt, then dlio-benchmark==2.0.0 and pydftracer==1.0.2 with "
                        "--no-deps: requirements/nodeps.txt) into it")
    if need_tensorflow and "tensorflow" not in info:
        problems.append(f"this workload needs tensorflow (tfrecord files or the tensorflow framework/loader), which "
                        f"the jobs' Python {python} cannot import ({info.get('tensorflow_error')}); "
                        f"{TENSORFLOW_HINT}")
    return problems
