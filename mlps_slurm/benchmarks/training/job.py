"""DLIO inside the training jobs: settle the dataset, generate and verify it, run it, measure what was read.

`prepare` (datagen job, batch host, one task): settles the dataset size (from the preflight's memory facts when the
  profile declared none), picks the dataset directory, writes the complete DLIO workload files (one for datagen,
  one per run: only the seed differs) and datasize.json, which holds the settled size (the manifest is never
  rewritten).
`generate` (datagen job, every rank): keeps an existing dataset when --reuse-data was asked and its files match,
  else lets DLIO generate the files in parallel; then checks every file on disk (count, sizes within the configured
  spread) and fails the job on a mismatch, so no run starts on a wrong dataset. Writes datagen.json.
`run` (run array task, every rank): drops the clients' page cache of the dataset, runs DLIO's training, and sums
  the bytes each rank (and its reader processes) really read, from /proc/self/io. Fails when DLIO fails, leaves no
  summary.json, or resolved a config other than ours. Writes io.json and launch.json beside DLIO's output.
`tfrecord2idx SRC DST`: the index DLIO's tfrecord generator asks DALI's tool for ("offset length" per record).

DLIO 2.0.0 imports tensorflow unconditionally (profiler_factory -> tf_profiler); a stub module for
`dlio_benchmark.profiler.tf_profiler` is put into sys.modules before DLIO is imported, so site-packages stay
untouched. Every rank that fails records its error (engine_error.<rank>.json) and aborts the whole MPI job, so no
rank is left waiting in a collective. This module runs on compute nodes: it imports no click, jinja2 or cli code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import socket
import struct
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any, Callable

import yaml

from mlps_slurm.benchmarks.training import catalog as cat
from mlps_slurm.benchmarks.training import engine as eng
from mlps_slurm.benchmarks.training.record import DATASIZE_FILE, training_record
from mlps_slurm.rundir import RunDirectory, atomic_write_json, atomic_write_text, read_json, run_record
from mlps_slurm.rules.facts import client_memory
from mlps_slurm.benchmarks.training.dataset_lease import DatasetLock, active_users, take_lease
from mlps_slurm.steps.pagecache import evict

GIB = 1 << 30
TF_PROFILER = "dlio_benchmark.profiler.tf_profiler"
RESIDENCY_SAMPLE = 16  # files checked for pages left in the page cache after a drop
DATASET_SUBDIRS = ("train", "valid", "index")  # what DLIO 2.0.0 creates in a data folder


class StepError(RuntimeError):
    """A problem that fails this step; the message says what and how to fix it."""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


# --- the tensorflow stub and DLIO ----------------------------------------------------------------------------------

def install_tensorflow_stub() -> None:
    """Stand in for DLIO's tf_profiler module, whose only use is profiler=tensorboard."""
    if TF_PROFILER in sys.modules:
        return
    module = types.ModuleType(TF_PROFILER)

    class TFProfiler:
        @staticmethod
        def get_instance() -> Any:
            raise RuntimeError("workload.profiling.profiler=tensorboard needs DLIO's tensorflow profiler, which "
                               "mlps-slurm stubs out; use profiler iostat or none")

    module.TFProfiler = TFProfiler  # type: ignore[attr-defined]
    sys.modules[TF_PROFILER] = module


def preload(config: dict[str, Any]) -> None:
    """Import DLIO and the framework before measuring, so the run's byte counts hold the dataset's reads, not
    the reading of Python modules."""
    import dlio_benchmark.main  # noqa: F401

    if config.get("framework") == "tensorflow":
        import tensorflow  # noqa: F401
    else:
        import torch  # noqa: F401
        import torch.utils.data  # noqa: F401


def run_dlio(argv: list[str]) -> None:
    """DLIO's hydra entry point with these arguments; raises whatever DLIO raised."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # hydra re-raises the engine's exception instead of exiting with 1
    import dlio_benchmark.main as dlio_main

    saved = sys.argv
    sys.argv = ["dlio_benchmark", *argv]
    try:
        dlio_main.run_benchmark()
    except SystemExit as exc:  # DLIO calls exit() on some errors, argparse on bad arguments
        if exc.code not in (0, None):
            raise RuntimeError(f"DLIO exited with status {exc.code}") from exc
    finally:
        sys.argv = saved


class Mpi:
    """The MPI world as DLIO sees it (its DLIOMPI singleton), started before DLIO runs so the shim can measure
    around DLIO and gather the results; node-local rank 0 acts for its node."""

    def __init__(self) -> None:
        from dlio_benchmark.utils.utility import DLIOMPI

        self._dlio = DLIOMPI.get_instance()
        self._dlio.initialize()
        self.comm = self._dlio.comm()
        self.rank = self._dlio.rank()
        self.size = self._dlio.size()
        self.local_rank = self._dlio.local_rank()

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)

    def finalize(self) -> None:
        self._dlio.finalize()


def guarded(mpi: Mpi, error_dir: Path, what: str, fn: Callable[[], Any]) -> Any:
    """Run fn; on any failure record it for finalize and abort every rank (none may wait in a collective)."""
    try:
        return fn()
    except BaseException as exc:  # whatever DLIO raises (SystemExit too), the job must fail with it recorded
        record = {"rank": mpi.rank, "host": socket.gethostname(), "during": what, "time": now(),
                  "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-6000:]}
        try:
            error_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(error_dir / f"engine_error.{mpi.rank}.json", record)
        except OSError:
            pass
        print(f"mlps-slurm: rank {mpi.rank}: {what} failed: {record['error']}", file=sys.stderr, flush=True)
        mpi.abort(1)
        raise  # not reached: Abort ends the process


# --- measurements ----------------------------------------------------------------------------------------------------

def read_proc_io(pid: int | str = "self") -> dict[str, int]:
    """A process's I/O counters: rchar = bytes read through read()/pread() (page-cache hits too), read_bytes =
    bytes fetched from storage. They include the process's reaped children."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/io") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if value.strip().isdigit():
                    out[key.strip()] = int(value)
    except OSError:
        pass
    return out


def descendants(root: int) -> list[int]:
    """Every live process below `root` (from /proc/*/stat parent ids)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


class IoMeter:
    """Bytes a rank and its reader processes read between start() and stop(). DLIO 2.0.0's PyTorch loader keeps
    its workers alive across epochs (persistent_workers), so their counters are read from /proc/<worker>/io while
    they live; workers already reaped are in the rank's own counters."""

    KEYS = ("rchar", "read_bytes", "syscr", "wchar", "write_bytes")

    def start(self) -> None:
        self._own = read_proc_io()
        self._children = {pid: read_proc_io(pid) for pid in descendants(os.getpid())}

    def stop(self) -> dict[str, Any]:
        own = read_proc_io()
        total = {k: own.get(k, 0) - self._own.get(k, 0) for k in self.KEYS}
        workers = 0
        for pid in descendants(os.getpid()):
            now_io, then = read_proc_io(pid), self._children.get(pid, {})
            if now_io:
                workers += 1
                for k in self.KEYS:
                    total[k] += now_io.get(k, 0) - then.get(k, 0)
        return {**total, "live_workers": workers}


PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_fraction(path: str) -> float | None:
    """Share of the file's pages in this node's page cache (mincore on a mapping: touches no page, unlike a
    RWF_NOWAIT read, which starts readahead); None when it cannot tell."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return None
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            pages = (size + PAGE - 1) // PAGE
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(addr, size, vec) != 0:
                return None
            return sum(v & 1 for v in vec) / pages
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def sample(paths: list[str], count: int = RESIDENCY_SAMPLE) -> list[str]:
    return paths[::max(1, len(paths) // count)][:count]


def mean_resident(paths: list[str]) -> float | None:
    values = [v for v in (resident_fraction(p) for p in paths) if v is not None]
    return sum(values) / len(values) if values else None


def drop_dataset_cache(paths: list[str]) -> dict[str, Any]:
    """Evict the dataset from this node's page cache: posix_fadvise(DONTNEED) on every file (no root needed); if
    sampled files are still resident afterwards (some network filesystems ignore the advice) and we may write
    /proc/sys/vm/drop_caches (root), drop the node's whole page cache too."""
    started = time.monotonic()
    probe = sample(paths)
    before = mean_resident(probe)
    os.sync()  # DONTNEED leaves dirty pages; the first run follows datagen's writes
    failed = len(evict(paths))
    after = mean_resident(probe)
    method = "posix_fadvise"
    if after and os.access("/proc/sys/vm/drop_caches", os.W_OK):
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("1\n")  # page cache only; dentries and inodes stay
        method = "posix_fadvise+drop_caches"
        after = mean_resident(probe)
    return {"host": socket.gethostname(), "method": method, "files": len(paths), "failed": failed,
            "sampled": len(probe), "resident_before": before, "resident_after": after,
            "seconds": round(time.monotonic() - started, 3)}


# --- the dataset on disk -------------------------------------------------------------------------------------------

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
    foreign = [p.name for p in path.iterdir() if p.name not in (*DATASET_SUBDIRS, eng.DATASET_MARKER)]
    if foreign:
        raise StepError(f"{path} holds files mlps-slurm did not create ({', '.join(sorted(foreign)[:5])}); refusing "
                        "to delete them: choose another --param dataset.data_folder or storage.data_dir, or remove "
                        "them")
    for name in DATASET_SUBDIRS:
        shutil.rmtree(path / name, ignore_errors=True)
    (path / eng.DATASET_MARKER).unlink(missing_ok=True)


def dataset_shape(config: dict[str, Any]) -> dict[str, Any]:
    d = config["dataset"]
    return {k: d.get(k) for k in ("format", "num_files_train", "num_subfolders_train", "num_samples_per_file",
                                  "record_length", "record_length_stdev", "num_files_eval")}


# --- prepare ---------------------------------------------------------------------------------------------------------

def _memory_from_preflight(run: RunDirectory) -> tuple[float, str]:
    path = run.preflight / "preflight.json"
    try:
        preflight = read_json(path)
    except (OSError, ValueError) as exc:
        raise StepError(f"cannot read {path} ({exc}); the dataset size needs the clients' memory: set "
                        "nodes.memory_gb in the profile (or -o nodes.memory_gb=G) and submit again") from exc
    memory = client_memory(preflight)
    if not memory:
        raise StepError(f"{path} records no memory facts for any node; set nodes.memory_gb in the profile (or -o "
                        "nodes.memory_gb=G) and submit again")
    # The largest node bounds what a client can cache; hosts x largest >= the aggregate memory.
    largest = max(memory.values()) / GIB
    return largest, f"preflight facts: {len(memory)} node(s), largest {largest:.2f} GiB"


def settle_datasize(run: RunDirectory, request: dict[str, Any]) -> tuple[cat.Datasize, float | None, str]:
    w = cat.workload(request["model"], request["accelerator"])
    w_eff = eng.effective_workload(w, request["workload_config"])
    planned = request["datasize"]
    memory, source = request.get("client_memory_gb"), request.get("memory_source", "")
    if not planned["final"]:
        memory, source = _memory_from_preflight(run)
    size = cat.datasize(w, request["num_accelerators"], request["nodes"], memory, request["scale"],
                        planned.get("explicit_files"), w_eff.samples_per_file, w_eff.record_length)
    least = cat.min_files_for_au(w_eff.batch_size, request["num_accelerators"], w_eff.samples_per_file)
    if size.num_files < least:
        raise StepError(f"the settled dataset has {size.num_files} files, fewer than {cat.MIN_STEPS_PER_EPOCH} "
                        f"steps of every rank ({least}); use a larger --scale")
    return size, memory, source


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_free_space(dataset_dir: Path, need: int) -> None:
    st = os.statvfs(_existing_ancestor(dataset_dir))
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise StepError(f"{dataset_dir}: the dataset needs {need / 1e9:.2f} GB, {free / 1e9:.2f} GB are free; free "
                        "space, use a smaller --scale, or point storage.data_dir elsewhere")


def write_configs(request: dict[str, Any], run_id: str, num_files: int, dataset_dir: str) -> list[Path]:
    """One complete workload file per phase: datagen, and each run (they differ only in the seed)."""
    base, config_dir, config = request["workload_name"], Path(request["config_dir"]), request["workload_config"]
    written = []
    phases = [("datagen", None)] + [("run", t) for t in range(request["runs"])]
    for phase, task in phases:
        name = eng.phase_name(base, phase, task)
        seed = eng.run_seed(run_id, task) if task is not None else None
        text = eng.config_yaml(eng.finish_config(config, num_files, dataset_dir, phase, seed),
                               f"Written by mlps-slurm for run {run_id} ({phase}"
                               f"{'' if task is None else f' {task:02d}'}): the complete DLIO workload.\n"
                               f"DLIO reads it as workload={name} --config-dir={config_dir}.")
        path = config_dir / "workload" / f"{name}.yaml"
        atomic_write_text(path, text)
        written.append(path)
    return written


def write_tfrecord2idx(run_dir: Path, python: str) -> None:
    """DLIO's tfrecord generator runs DALI's `tfrecord2idx` from PATH; ours stands in (see cmd_tfrecord2idx)."""
    script = run_dir / "dlio" / "bin" / "tfrecord2idx"
    atomic_write_text(script, f"#!/bin/sh\nexec {python} -m {eng.SHIM_MODULE} tfrecord2idx \"$@\"\n", mode=0o755)


def cmd_prepare(args: argparse.Namespace) -> int:
    run = RunDirectory(args.run_dir)
    manifest = run.read_manifest()
    request = run_record(manifest)
    size, memory, source = settle_datasize(run, request)
    config = request["workload_config"]
    dataset_dir = request.get("dataset_dir_user") or \
        f"{request['data_dir']}/{request['model']}/{eng.dataset_id(config, size.num_files)}"
    if not request.get("reuse_data"):
        check_free_space(Path(dataset_dir), size.total_bytes)
    configs = write_configs(request, manifest["run_id"], size.num_files, dataset_dir)
    if eng.needs_tensorflow(config):
        write_tfrecord2idx(run.path, sys.executable)
    record = {"settled": now(), "memory_gib_per_host": memory, "memory_source": source, **size.as_dict(),
              "dataset_dir": dataset_dir, "explain": size.explain(), "configs": [str(p) for p in configs]}
    # The run tasks, the finalize and the rules read the settled size from here (training_record); the manifest's
    # request stays what was asked.
    atomic_write_json(run.settled(DATASIZE_FILE), record)
    print(f"mlps-slurm: dataset {dataset_dir}: {size.num_files} files, {size.total_bytes / 1e9:.3f} GB "
          f"(decided by {size.decided_by}: {size.explain()}; memory from {source})", flush=True)
    return 0


# --- generate --------------------------------------------------------------------------------------------------------

def load_phase_config(args: argparse.Namespace, phase: str, task: int | None = None) -> tuple[str, dict[str, Any]]:
    name = eng.phase_name(args.workload_base, phase, task)
    path = Path(args.config_dir) / "workload" / f"{name}.yaml"
    try:
        return name, yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StepError(f"{path}: the workload file the prepare step writes is missing or unreadable ({exc}); "
                        "see the datagen job's log") from exc


def _reusable(mpi: Mpi, config: dict[str, Any], request: dict[str, Any]) -> tuple[bool, str]:
    """Collective: whether the existing dataset matches what this run needs (marker, count and sizes)."""
    folder, fmt = config["dataset"]["data_folder"], config["dataset"]["format"]
    names: list[str] | None = None
    why = ""
    if mpi.rank == 0:
        marker = Path(folder) / eng.DATASET_MARKER
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
        problems = eng.dataset_problems(sizes or [], config["dataset"]["num_files_train"],
                                        eng.SizeModel.of(config), folder)
    problems = mpi.comm.bcast(problems, root=0)
    return not problems, "; ".join(problems) or "matches"


def _verify_dataset(mpi: Mpi, config: dict[str, Any]) -> dict[str, Any] | None:
    folder, fmt = config["dataset"]["data_folder"], config["dataset"]["format"]
    names = mpi.comm.bcast(list_dataset(folder, fmt) if mpi.rank == 0 else None, root=0)
    sizes = file_sizes(mpi, folder, names)
    if mpi.rank != 0:
        return None
    assert sizes is not None
    model = eng.SizeModel.of(config)
    lo, hi = model.file_bounds()
    return {"num_files": len(sizes), "num_subfolders": count_subfolders(folder), "bytes": sum(sizes),
            "min_file_bytes": min(sizes, default=0), "max_file_bytes": max(sizes, default=0),
            "mean_file_bytes": sum(sizes) / len(sizes) if sizes else 0, "expected_files":
            config["dataset"]["num_files_train"], "expected_file_bytes_range": [lo, hi] if model.checked else None,
            "sizes_checked": model.checked,
            "problems": eng.dataset_problems(sizes, config["dataset"]["num_files_train"], model, folder)}


def cmd_generate(args: argparse.Namespace) -> int:
    install_tensorflow_stub()
    mpi = Mpi()
    out = Path(args.output_dir)
    run = RunDirectory(args.run_dir)
    manifest = run.read_manifest()
    request = training_record(run.path, manifest)
    name, config = guarded(mpi, out, "reading the workload file", lambda: load_phase_config(args, "datagen"))
    folder = Path(config["dataset"]["data_folder"])
    started, t0 = now(), time.monotonic()
    lock = DatasetLock(folder)
    if mpi.rank == 0:  # the other ranks wait for rank 0 in the first collective
        guarded(mpi, out, "locking the dataset directory", lambda: lock.acquire(on_wait=lambda: print(
            f"mlps-slurm: another chain is generating {folder}; waiting for it", flush=True)))
    reuse, why = guarded(mpi, out, "checking the existing dataset", lambda: _reusable(mpi, config, request))
    meter = IoMeter()
    meter.start()
    if not reuse:
        if mpi.rank == 0:
            guarded(mpi, out, "checking who else uses the dataset", lambda: _refuse_if_shared(folder, run))
            guarded(mpi, out, "clearing the dataset directory", lambda: clear_dataset_dir(folder))
            if request.get("reuse_data"):  # prepare skipped the space check, counting on the old dataset
                guarded(mpi, out, "checking free space",
                        lambda: check_free_space(folder, int(request["dataset_bytes"])))
        mpi.comm.Barrier()
        if config["dataset"]["format"] == "tfrecord":
            os.environ["PATH"] = f"{run.path / 'dlio' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        argv = eng.dlio_argv(args.config_dir, name, str(out), args.overrides)
        guarded(mpi, out, "DLIO data generation", lambda: run_dlio(argv))
    written = mpi.comm.gather(meter.stop(), root=0)
    generated_s = time.monotonic() - t0
    report = guarded(mpi, out, "checking the generated files", lambda: _verify_dataset(mpi, config))
    code = 0
    if mpi.rank == 0:
        assert report is not None
        if not reuse:  # the files were made from our workload file, not a packaged one of the same name
            report["problems"] += eng.resolved_config_problems(out, config, name, args.config_dir)
        report.update(schema=eng.DATAGEN_SCHEMA, dataset_dir=str(folder), reused=reuse, reuse_decision=why,
                      started=started, ended=now(), seconds=round(time.monotonic() - t0, 3),
                      generate_seconds=round(generated_s, 3), ranks=mpi.size,
                      write_bytes=sum(w.get("write_bytes", 0) for w in written),
                      dlio_argv=None if reuse else eng.dlio_argv(args.config_dir, name, str(out), args.overrides))
        atomic_write_json(out / "datagen.json", report)
        if report["problems"]:
            code = 1
            for p in report["problems"]:
                print(f"mlps-slurm: datagen check failed: {p}", file=sys.stderr, flush=True)
        else:
            atomic_write_json(folder / eng.DATASET_MARKER, {"shape": dataset_shape(config), "run_id": run.run_id,
                                                            "verified": report["ended"], "bytes": report["bytes"]})
            jobs = [os.environ.get("SLURM_JOB_ID", ""), manifest.get("jobs", {}).get("run", {}).get("job_id", "")]
            take_lease(folder, run.run_id, str(run.path), [j for j in jobs if j])
            print(f"mlps-slurm: dataset {'reused' if reuse else 'generated'}: {report['num_files']} files, "
                  f"{report['bytes'] / 1e9:.3f} GB in {report['seconds']:.1f} s ({why})", flush=True)
        lock.release()
    code = mpi.comm.bcast(code, root=0)
    mpi.finalize()
    return code


def _refuse_if_shared(folder: Path, run: RunDirectory) -> None:
    """Regenerating would pull the files from under another chain's runs: refuse while one is queued or running."""
    from mlps_slurm.slurm import get_backend

    busy = active_users(folder, run.run_id, get_backend().states)
    if busy:
        raise StepError(f"{folder} is in use by another chain: {'; '.join(busy)}; submit with --reuse-data to "
                        "share the dataset (it is reused when its files match), or when that chain has ended")


# --- run -------------------------------------------------------------------------------------------------------------

def _run_checks(out: Path, name: str, config: dict[str, Any], config_dir: str) -> list[str]:
    problems = []
    if not (out / "summary.json").is_file():
        problems.append(f"{out / 'summary.json'}: DLIO left no summary (it did not finish the run)")
    problems += eng.resolved_config_problems(out, config, name, config_dir)
    return problems


def cmd_run(args: argparse.Namespace) -> int:
    install_tensorflow_stub()
    mpi = Mpi()
    task = int(args.task)
    out = Path(args.output_root) / f"{task:02d}"
    name, config = guarded(mpi, out, "reading the workload file", lambda: load_phase_config(args, "run", task))
    folder, fmt = config["dataset"]["data_folder"], config["dataset"]["format"]
    names = mpi.comm.bcast(list_dataset(folder, fmt) if mpi.rank == 0 else None, root=0)
    drop = None
    if mpi.local_rank == 0:  # one rank per node: the page cache belongs to the node
        drop = guarded(mpi, out, "dropping the page cache",
                       lambda: drop_dataset_cache([os.path.join(folder, "train", n) for n in names]))
    drops = mpi.comm.gather(drop, root=0)
    argv = eng.dlio_argv(args.config_dir, name, str(out), args.overrides)
    guarded(mpi, out, "importing DLIO", lambda: preload(config))
    meter = IoMeter()
    mpi.comm.Barrier()
    started, t0 = now(), time.monotonic()
    meter.start()
    guarded(mpi, out, f"DLIO run {task:02d}", lambda: run_dlio(argv))
    measured = {"rank": mpi.rank, "host": socket.gethostname(), "seconds": round(time.monotonic() - t0, 3),
                **meter.stop()}
    per_rank = mpi.comm.gather(measured, root=0)
    code = 0
    if mpi.rank == 0:
        problems = _run_checks(out, name, config, args.config_dir)
        total = {k: sum(r.get(k, 0) for r in per_rank) for k in IoMeter.KEYS}
        atomic_write_json(out / "io.json", {"schema": eng.IO_SCHEMA, "task": task, "started": started,
                                            "ended": now(), "total": total, "per_rank": per_rank,
                                            "cache_drop": [d for d in drops if d is not None],
                                            "dataset_files": len(names)})
        atomic_write_json(out / "launch.json", {"task": task, "workload": name, "config_dir": args.config_dir,
                                                "dlio_argv": argv, "ranks": mpi.size, "problems": problems})
        for p in problems:
            print(f"mlps-slurm: run {task:02d}: {p}", file=sys.stderr, flush=True)
        code = 1 if problems else 0
    code = mpi.comm.bcast(code, root=0)
    mpi.finalize()
    return code


# --- tfrecord index --------------------------------------------------------------------------------------------------

def cmd_tfrecord2idx(args: argparse.Namespace) -> int:
    """Write "offset length" per record, as DALI's tfrecord2idx does; a TFRecord record is an 8-byte length, a
    4-byte CRC of it, the data and a 4-byte CRC of the data."""
    lines = []
    with open(args.src, "rb") as fh:
        while True:
            offset = fh.tell()
            head = fh.read(8)
            if len(head) < 8:
                break
            (length,) = struct.unpack("<Q", head)
            fh.seek(4 + length + 4, os.SEEK_CUR)
            lines.append(f"{offset} {fh.tell() - offset}\n")
    Path(args.dst).write_text("".join(lines))
    return 0


# --- entry point -----------------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {eng.SHIM_MODULE}")
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare")
    prep.add_argument("--run-dir", required=True)
    for cmd in ("generate", "run"):
        s = sub.add_parser(cmd)
        s.add_argument("--run-dir", required=True)
        s.add_argument("--config-dir", required=True)
        s.add_argument("--workload-base", required=True)
        if cmd == "generate":
            s.add_argument("--output-dir", required=True)
        else:
            s.add_argument("--output-root", required=True)
            s.add_argument("--task", required=True, type=int)
        s.add_argument("overrides", nargs="*", help="DLIO overrides (++workload.key=value), after --")
    idx = sub.add_parser("tfrecord2idx")
    idx.add_argument("src")
    idx.add_argument("dst")
    return p


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "prepare": cmd_prepare, "generate": cmd_generate, "run": cmd_run, "tfrecord2idx": cmd_tfrecord2idx}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except StepError as exc:
        print(f"mlps-slurm: error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
