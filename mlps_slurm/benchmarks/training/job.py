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

The pieces live beside this module: `shim` (the tensorflow stub, DLIO's entry point, the MPI world, the step
error), `measure` (bytes read, the page cache) and `dataset` (the files on disk and their checks). This module runs
on compute nodes: it imports no click, jinja2 or cli code.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from mlps_slurm.benchmarks.training import catalog as cat
from mlps_slurm.benchmarks.training import engine as eng
from mlps_slurm.benchmarks.training.dataset import (clear_dataset_dir, dataset_shape, list_dataset, refuse_if_shared,
                                                    reusable, verify_dataset)
from mlps_slurm.benchmarks.training.dataset_lease import DatasetLock, take_lease
from mlps_slurm.benchmarks.training.measure import IoMeter, drop_dataset_cache
from mlps_slurm.benchmarks.training.output import resolved_config_problems
from mlps_slurm.benchmarks.training.record import DATASIZE_FILE, training_record
from mlps_slurm.benchmarks.training.shim import (Mpi, StepError, follow_training, guarded, install_tensorflow_stub, now,
                                                 preload, run_dlio)
from mlps_slurm.benchmarks.training.workload import (config_yaml, dataset_id, effective_workload, finish_config,
                                                     needs_tensorflow, phase_name, run_seed)
from mlps_slurm.steps.progress import Progress
from mlps_slurm.rundir import RunDirectory, atomic_write_json, atomic_write_text, read_json, run_record
from mlps_slurm.rules.facts import client_memory

GIB = 1 << 30


# --- prepare ---------------------------------------------------------------------------------------------------------

def _memory_from_preflight(run: RunDirectory) -> tuple[float, str]:
    path = run.preflight / "preflight.json"
    try:
        preflight = read_json(path)
    except (OSError, ValueError) as exc:
        raise StepError(f"cannot read {path} ({exc}); the dataset size needs the clients' memory: set "
                        "nodes.memory_gb in the profile (or -o nodes.memory_gb=GIB) and submit again") from exc
    memory = client_memory(preflight)
    if not memory:
        raise StepError(f"{path} records no memory facts for any node; set nodes.memory_gb in the profile (or -o "
                        "nodes.memory_gb=GIB) and submit again")
    # The largest node bounds what a client can cache; hosts x largest >= the aggregate memory.
    largest = max(memory.values()) / GIB
    return largest, f"preflight facts: {len(memory)} node(s), largest {largest:.2f} GiB"


def settle_datasize(run: RunDirectory, request: dict[str, Any]) -> tuple[cat.Datasize, float | None, str]:
    w = cat.workload(request["model"], request["accelerator"])
    w_eff = effective_workload(w, request["workload_config"])
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
        name = phase_name(base, phase, task)
        seed = run_seed(run_id, task) if task is not None else None
        text = config_yaml(finish_config(config, num_files, dataset_dir, phase, seed),
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
        f"{request['data_dir']}/{request['model']}/{dataset_id(config, size.num_files)}"
    if not request.get("reuse_data"):
        check_free_space(Path(dataset_dir), size.total_bytes)
    configs = write_configs(request, manifest["run_id"], size.num_files, dataset_dir)
    if needs_tensorflow(config):
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
    name = phase_name(args.workload_base, phase, task)
    path = Path(args.config_dir) / "workload" / f"{name}.yaml"
    try:
        return name, yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StepError(f"{path}: the workload file the prepare step writes is missing or unreadable ({exc}); "
                        "see the datagen job's log") from exc


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
    reuse, why = guarded(mpi, out, "checking the existing dataset", lambda: reusable(mpi, config, request))
    meter = IoMeter()
    meter.start()
    if not reuse:
        if mpi.rank == 0:
            guarded(mpi, out, "checking who else uses the dataset", lambda: refuse_if_shared(folder, run))
            guarded(mpi, out, "clearing the dataset directory", lambda: clear_dataset_dir(folder))
            if request.get("reuse_data"):  # prepare skipped the space check, counting on the old dataset
                guarded(mpi, out, "checking free space",
                        lambda: check_free_space(folder, int(request["dataset_bytes"])))
        mpi.comm.Barrier()
        if mpi.rank == 0:  # DLIO's generators report nothing countable; status shows the phase and its age
            Progress("datagen", None, "files").update(0, "generating the dataset", force=True)
        if config["dataset"]["format"] == "tfrecord":
            os.environ["PATH"] = f"{run.path / 'dlio' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        argv = eng.dlio_argv(args.config_dir, name, str(out), args.overrides)
        guarded(mpi, out, "DLIO data generation", lambda: run_dlio(argv))
    written = mpi.comm.gather(meter.stop(), root=0)
    generated_s = time.monotonic() - t0
    report = guarded(mpi, out, "checking the generated files", lambda: verify_dataset(mpi, config))
    code = 0
    if mpi.rank == 0:
        assert report is not None
        if not reuse:  # the files were made from our workload file, not a packaged one of the same name
            report["problems"] += resolved_config_problems(out, config, name, args.config_dir)
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


# --- run -------------------------------------------------------------------------------------------------------------

def _run_checks(out: Path, name: str, config: dict[str, Any], config_dir: str) -> list[str]:
    problems = []
    if not (out / "summary.json").is_file():
        problems.append(f"{out / 'summary.json'}: DLIO left no summary (it did not finish the run)")
    problems += resolved_config_problems(out, config, name, config_dir)
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
    if mpi.rank == 0:
        progress = Progress(f"run {task}", None, "steps")
        progress.update(0, "starting DLIO", force=True)
        follow_training(progress)
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
