"""DLIO adapter for the training benchmark: the constants every part shares, DLIO's command line, and the probe of
the jobs' interpreter.

Pure functions (no MPI, no Slurm); the in-job shim (mlps_slurm.benchmarks.training.job) and the finalize step use
them. The adapter's other parts: `params` (--param parsing and divisions), `workload` (the workload config),
`filesizes` (what the generator writes per file, checked on disk) and `output` (DLIO's output: the resolved config
and the metrics).

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

from typing import Iterable

TESTED_DLIO_VERSION = "2.0.0"
OUTPUT_SUBDIR = "dlio_config"  # hydra.output_subdir, as mlpstorage sets it
DATASET_MARKER = ".mlps-dataset.json"
SHIM_MODULE = "mlps_slurm.benchmarks.training.job"
IO_SCHEMA = "mlps-slurm/dlio-io/1"
DATAGEN_SCHEMA = "mlps-slurm/dlio-datagen/1"


# --- the command line ---------------------------------------------------------------------------------------------

def dlio_argv(config_dir: str, workload: str, output_dir: str, overrides: Iterable[str]) -> list[str]:
    """DLIO's arguments (after the program name). Hydra's parser takes options before the overrides."""
    return [f"--config-dir={config_dir}", f"workload={workload}", f"hydra.run.dir={output_dir}",
            f"hydra.output_subdir={OUTPUT_SUBDIR}", *overrides]


# --- the jobs' interpreter ------------------------------------------------------------------------------------------

# Runs inside the jobs' interpreter: is the engine importable there (find_spec: no import of DLIO, which would
# import tensorflow), and, only when asked, does tensorflow really import.
PROBE_CODE = r"""
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


def probe_engine(python: str, need_tensorflow: bool) -> list[str]:
    """Problems with the interpreter `python` on this host for this workload, each with the fix; empty when it can
    run. (A run's probe goes through mlps_slurm.probes, which runs it inside the image on container sites.)"""
    from mlps_slurm.benchmarks.base import EngineProbe
    from mlps_slurm.probes import run

    return run(EngineProbe("training", PROBE_CODE, ("--tensorflow",) if need_tensorflow else ()), python)


def judge_probe(info: dict, python: str, need_tensorflow: bool) -> list[str]:
    """What PROBE_CODE printed, as problems with their fixes."""
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
