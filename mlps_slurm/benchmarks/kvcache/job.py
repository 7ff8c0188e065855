"""One KV-cache rank inside a Slurm job (srun starts one process per rank, no MPI):

    python -m mlps_slurm.benchmarks.kvcache.job --output-base <run>/raw/kv_cache/option_<O>/trial_<T> \\
        --cache-base <cache_dir>/<run_id> --seed-base 42 --model llama3.1-8b --num-users 200 --duration 300 \\
        --gpu-mem-gb 0 --cpu-mem-gb 0 --max-concurrent-allocs 16 --generation-mode none \\
        [--storage-capacity-gb X] [--engine builtin|official] [--official-path DIR] [--ranks-sharing-cache-fs K]

As the reference's mlperf_wrapper.py: rank = SLURM_PROCID, else OMPI_COMM_WORLD_RANK, else PMI_RANK, else 0;
seed = seed base + rank; results `<output-base>/rank_<N>/kvcache_results_<YYYYmmdd_HHMMSS>.json`; cache
`<cache-base>/rank_<N>/`, whose top-level *.npy files are removed at start.

Deliberate differences from the reference, also recorded in every builtin results file (notes.py):
- the rank's cache files are removed at the end too (with either engine), so a scheduled run never fills the cache
  filesystem;
- without --storage-capacity-gb the builtin storage tier's limit is 95 % of the cache filesystem's free space at
  start divided by --ranks-sharing-cache-fs (default 1): ranks sharing a filesystem would each claim 95 % of it.
  The official engine gets --storage-capacity-gb only when it was given, as mlpstorage passes it.

`--engine official --official-path DIR` runs the reference DIR/kv-cache.py (or DIR/kv_cache_benchmark/kv-cache.py)
with this interpreter: `--config <its config.yaml>`, the option flags, then `--seed`, `--output` and `--cache-dir`
last, as its mlperf_wrapper does. On any failure the rank writes `<output-base>/rank_<N>/engine_error.json`
({rank, host, during, error, traceback}), prints the error and exits 1. This module runs on compute nodes: it
imports no click, jinja2 or cli code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Mapping

from mlps_slurm import __version__
from mlps_slurm.benchmarks.kvcache import catalog as cat
from mlps_slurm.benchmarks.kvcache.notes import CHOICES, DIFFERENCES
from mlps_slurm.rundir import atomic_write_json, read_json
from mlps_slurm.steps.progress import timed

RANK_VARIABLES = ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
ERROR_FILE = "engine_error.json"
OFFICIAL_LAUNCH_FILE = "official_launch.json"


class EngineError(RuntimeError):
    """A problem that fails this rank; the message says what and how to fix it."""


class Step:
    """What the rank is doing now: the error record's "during"."""

    def __init__(self, during: str) -> None:
        self.during = during


def rank_from_env(env: Mapping[str, str] = os.environ) -> int:
    for name in RANK_VARIABLES:
        value = env.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mlps_slurm.benchmarks.kvcache.job", allow_abbrev=False,
                                description="One rank of the MLPerf Storage KV-cache benchmark.")
    p.add_argument("--output-base", required=True, help="results go to <output-base>/rank_<N>/")
    p.add_argument("--cache-base", required=True, help="the cache goes to <cache-base>/rank_<N>/")
    p.add_argument("--seed-base", type=int, default=cat.CLOSED_SEED, help="seed = seed base + rank")
    p.add_argument("--model", required=True)
    p.add_argument("--num-users", type=int, required=True)
    p.add_argument("--duration", type=float, required=True, help="timed window, seconds")
    p.add_argument("--gpu-mem-gb", type=float, required=True)
    p.add_argument("--cpu-mem-gb", type=float, required=True)
    p.add_argument("--max-concurrent-allocs", type=int, required=True)
    p.add_argument("--generation-mode", required=True, choices=sorted(cat.GENERATION_TIMING))
    p.add_argument("--storage-capacity-gb", type=float, default=None, help="storage tier limit, GiB")
    p.add_argument("--engine", choices=("builtin", "official"), default="builtin")
    p.add_argument("--official-path", default=None, help="the reference's kv_cache_benchmark (or repository) dir")
    p.add_argument("--ranks-sharing-cache-fs", type=int, default=1,
                   help="ranks whose caches share one filesystem (divides the default storage limit)")
    p.add_argument("--keep-cache", action="store_true", help="leave the cache files (the reference does)")
    # tests only: join each thread this long after the window (the reference: 2 s)
    p.add_argument("--join-timeout", type=float, default=cat.JOIN_TIMEOUT_S, help=argparse.SUPPRESS)
    return p


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def storage_capacity(args: argparse.Namespace, cache_dir: Path) -> tuple[float, str]:
    """(limit in bytes, how it was decided)."""
    if args.storage_capacity_gb is not None and args.storage_capacity_gb > 0:
        return args.storage_capacity_gb * cat.GIB, f"--storage-capacity-gb {_number(args.storage_capacity_gb)}"
    st = os.statvfs(cache_dir)
    free = st.f_bavail * st.f_frsize
    k = max(1, args.ranks_sharing_cache_fs)
    return free * cat.STORAGE_FREE_SPACE_RATIO / k, \
        f"{cat.STORAGE_FREE_SPACE_RATIO:g} x {free} bytes free at start / {k} rank(s) sharing the filesystem"


def prepare_cache_dir(cache_dir: Path) -> int:
    """Create the rank's cache directory, remove its top-level *.npy files (as the reference does at start) and
    check that a file can be written there; returns the number of files removed."""
    from mlps_slurm.benchmarks.kvcache.npy_io import NpyStore

    cache_dir.mkdir(parents=True, exist_ok=True)
    removed = NpyStore(cache_dir).clear()
    probe = cache_dir / f".mlps-slurm-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        probe.unlink(missing_ok=True)
    return removed


def remove_cache_files(cache_dir: Path) -> int:
    from mlps_slurm.benchmarks.kvcache.npy_io import NpyStore

    return NpyStore(cache_dir).clear() if cache_dir.is_dir() else 0


# --- builtin ---------------------------------------------------------------------------------------------------------

def check_builtin(args: argparse.Namespace) -> cat.KvModel:
    try:
        model = cat.model(args.model)
    except ValueError as exc:
        raise EngineError(str(exc)) from None
    if args.gpu_mem_gb != 0:
        raise EngineError(f"--gpu-mem-gb {_number(args.gpu_mem_gb)}: the builtin engine has no GPU tier; use 0 (every "
                          "CLOSED option does) or --engine official")
    if args.num_users < 1 or args.duration <= 0 or args.cpu_mem_gb < 0 or args.max_concurrent_allocs < 0:
        raise EngineError("--num-users must be >= 1, --duration > 0, --cpu-mem-gb and --max-concurrent-allocs >= 0")
    return model


def run_builtin(args: argparse.Namespace, rank: int, seed: int, cache_dir: Path, output: Path,
                step: Step) -> None:
    from mlps_slurm.benchmarks.kvcache.engine import BuiltinRun, RunSettings
    from mlps_slurm.benchmarks.kvcache.npy_io import NoiseBuffer, NpyStore
    from mlps_slurm.benchmarks.kvcache.stats import Metrics
    from mlps_slurm.benchmarks.kvcache.tiers import TieredCache

    step.during = "checking the options"
    model = check_builtin(args)
    step.during = f"preparing the cache directory {cache_dir}"
    prepare_cache_dir(cache_dir)
    capacity, capacity_source = storage_capacity(args, cache_dir)
    step.during = "building the noise buffer"
    noise = NoiseBuffer(seed, model.numpy_dtype)
    metrics = Metrics(model.bytes_per_token)
    cache = TieredCache(model, args.cpu_mem_gb * cat.GIB, capacity, NpyStore(cache_dir), noise, metrics,
                        args.max_concurrent_allocs)
    settings = RunSettings(args.model, args.num_users, args.duration, args.cpu_mem_gb, args.max_concurrent_allocs,
                           args.generation_mode, seed, args.join_timeout)
    print(f"mlps-slurm kv-cache rank {rank}: builtin engine, {args.model} ({model.bytes_per_token} B/token), "
          f"{args.num_users} users, {_number(args.duration)} s, cpu {_number(args.cpu_mem_gb)} GiB, storage limit "
          f"{capacity / cat.GIB:.1f} GiB, seed {seed}, cache {cache_dir}", flush=True)
    step.during = "the timed run"
    outcome = BuiltinRun(settings, cache, metrics).run()
    step.during = "removing the cache files"
    removed = 0 if args.keep_cache else remove_cache_files(cache_dir)
    results = outcome.results
    results["mlps_slurm"] = {
        "engine": "builtin", "engine_version": __version__, "rank": rank, "host": socket.gethostname(),
        "seed": seed, "window_s": outcome.window_s, "measured": outcome.measured,
        "choices": list(CHOICES), "differences": list(DIFFERENCES),
        "settings": {"model": args.model, "num_users": args.num_users, "duration_s": args.duration,
                     "gpu_mem_gb": args.gpu_mem_gb, "cpu_mem_gb": args.cpu_mem_gb,
                     "max_concurrent_allocs": args.max_concurrent_allocs, "generation_mode": args.generation_mode,
                     "storage_capacity_bytes": capacity, "storage_capacity_source": capacity_source,
                     "cache_dir": str(cache_dir), "io_chunk_bytes": cat.IO_CHUNK_BYTES},
        "files": outcome.io, "io_errors": outcome.io["io_errors"], "first_io_error": outcome.first_io_error,
        "busy_workers_at_snapshot": outcome.busy_at_snapshot, "conversations": outcome.conversations,
        "setup_cpu_seconds": outcome.setup_cpu_seconds, "cache_files_removed": removed}
    step.during = f"writing {output}"
    atomic_write_json(output, _plain(results))
    cs = results["summary"]["cache_stats"]
    print(f"mlps-slurm kv-cache rank {rank}: {results['requests_completed']} requests in {outcome.window_s:.1f} s; "
          f"storage read {cs['tier_storage_read_bandwidth_gbps']:.3f} GiB/s, write "
          f"{cs['tier_storage_write_bandwidth_gbps']:.3f} GiB/s (in the window: "
          f"{outcome.measured['read_bandwidth_gibps']:.3f} / {outcome.measured['write_bandwidth_gibps']:.3f}); "
          f"{output}", flush=True)
    if outcome.io["io_errors"]:
        step.during = "the timed run (storage I/O)"
        raise EngineError(f"{outcome.io['io_errors']} storage I/O operation(s) failed in {cache_dir}, first: "
                          f"{outcome.first_io_error}; the results file records the run but its figures are not "
                          "valid")


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python numbers, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


# --- official --------------------------------------------------------------------------------------------------------

def official_script(path: str | None) -> Path:
    if not path:
        raise EngineError("--engine official needs --official-path: the reference's kv_cache_benchmark directory "
                          "(or the mlcommons/storage checkout holding it)")
    root = Path(path)
    for candidate in (root / "kv-cache.py", root / "kv_cache_benchmark" / "kv-cache.py"):
        if candidate.is_file():
            return candidate
    raise EngineError(f"{root}: no kv-cache.py there or in {root / 'kv_cache_benchmark'}; point --official-path at "
                      "the reference's kv_cache_benchmark directory")


def official_command(args: argparse.Namespace, seed: int, output: Path, cache_dir: Path,
                     python: str = sys.executable) -> list[str]:
    """The reference's command line as its mlperf_wrapper builds it: the option flags, then the per-rank values
    last (kv-cache.py takes the last value of a repeated flag)."""
    script = official_script(args.official_path)
    config = script.parent / "config.yaml"
    if not config.is_file():
        raise EngineError(f"{config}: missing; the reference runs every MLPerf option with its config.yaml")
    argv = [python, str(script), "--config", str(config), "--model", args.model,
            "--num-users", str(args.num_users), "--duration", _number(args.duration),
            "--gpu-mem-gb", _number(args.gpu_mem_gb), "--cpu-mem-gb", _number(args.cpu_mem_gb),
            "--max-concurrent-allocs", str(args.max_concurrent_allocs), "--generation-mode", args.generation_mode]
    if args.storage_capacity_gb is not None:
        argv += ["--storage-capacity-gb", _number(args.storage_capacity_gb)]
    return argv + ["--seed", str(seed), "--output", str(output), "--cache-dir", str(cache_dir)]


def run_official(args: argparse.Namespace, rank: int, seed: int, cache_dir: Path, output: Path,
                 step: Step) -> None:
    step.during = "locating the reference kv-cache.py"
    argv = official_command(args, seed, output, cache_dir)
    step.during = f"preparing the cache directory {cache_dir}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    launch = {"rank": rank, "host": socket.gethostname(), "seed": seed, "argv": argv,
              "started": dt.datetime.now(dt.timezone.utc).isoformat()}
    atomic_write_json(output.parent / OFFICIAL_LAUNCH_FILE, launch)
    print(f"mlps-slurm kv-cache rank {rank}: {' '.join(argv)}", flush=True)
    step.during = "running the reference kv-cache.py"
    try:
        code = subprocess.run(argv, check=False).returncode
    finally:
        removed = 0 if args.keep_cache else remove_cache_files(cache_dir)
    launch.update(returncode=code, ended=dt.datetime.now(dt.timezone.utc).isoformat(), cache_files_removed=removed)
    atomic_write_json(output.parent / OFFICIAL_LAUNCH_FILE, launch)
    if code != 0:
        raise EngineError(f"the reference kv-cache.py exited with status {code} (see this job's log)")
    if not output.is_file():
        raise EngineError(f"the reference kv-cache.py exited 0 but wrote no {output}")
    try:
        json.loads(output.read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(f"{output}: the reference's results file is unreadable ({exc})") from None


# --- entry point -----------------------------------------------------------------------------------------------------

def write_error(out_dir: Path, rank: int, during: str, exc: BaseException) -> None:
    record = {"rank": rank, "host": socket.gethostname(), "during": during,
              "error": f"{type(exc).__name__}: {exc}" if not isinstance(exc, EngineError) else str(exc),
              "traceback": traceback.format_exc()[-6000:]}
    try:
        atomic_write_json(out_dir / ERROR_FILE, record)
    except OSError as write_exc:
        print(f"mlps-slurm: rank {rank}: cannot write {out_dir / ERROR_FILE}: {write_exc}", file=sys.stderr)
    print(f"mlps-slurm: kv-cache rank {rank} failed during {during}: {record['error']}", file=sys.stderr, flush=True)


class Terminated(Exception):
    pass


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"terminated by signal {signal.Signals(signum).name} (Slurm cancelled the step, a time limit "
                     "passed, or another rank failed)")


def trial_label(output_base: str, env: Mapping[str, str] = os.environ) -> str:
    """"trial 2/3" for `status`, from the trial directory the plan named (trial_<t>) and the run's request."""
    match = re.fullmatch(r"trial_(\d+)", Path(output_base).name)
    if not match:
        return ""
    label = f"trial {int(match.group(1)) + 1}"
    try:
        trials = int(read_json(Path(env["MLPS_RUN_DIR"]) / "manifest.json")["request"]["trials"])
    except (KeyError, OSError, ValueError, TypeError):
        return label
    return f"{label}/{trials}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    rank = rank_from_env()
    seed = args.seed_base + rank
    out_dir = Path(args.output_base) / f"rank_{rank}"
    cache_dir = Path(args.cache_base) / f"rank_{rank}"
    output = out_dir / f"kvcache_results_{dt.datetime.now().strftime('%Y%m%d_%H%M%S')}.json"
    step = Step("creating the output directory")
    # Slurm ends a step with SIGTERM (scancel, a time limit, srun -K after another rank failed): turn it into an
    # exception so the rank still writes its error record and removes its cache files.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        engine = run_official if args.engine == "official" else run_builtin
        if rank == 0:  # one progress record per trial: rank 0's window stands for every rank's
            with timed("kv-cache trial", args.duration, trial_label(args.output_base)):
                engine(args, rank, seed, cache_dir, output, step)
        else:
            engine(args, rank, seed, cache_dir, output, step)
    except BaseException as exc:  # the finalize must learn of every failure, KeyboardInterrupt too
        if args.engine == "builtin" and not args.keep_cache:
            try:
                remove_cache_files(cache_dir)
            except OSError:
                pass
        write_error(out_dir, rank, step.during, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
