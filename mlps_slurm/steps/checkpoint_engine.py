"""The built-in MLPerf Storage checkpoint engine: an MPI program run under srun (or mpirun).

Protocol (MLPerf Storage rules §4): every rank writes its model and optimizer shards for N checkpoints, with fsync
on every file; the page cache of the checkpoint files is dropped; then the ranks read M checkpoints back. Each
checkpoint starts and ends with a barrier, so its duration is that of the slowest rank. Rank 0 gathers every
rank's timings and writes one JSON document (schema mlps-slurm/checkpoint-engine/1).

Kept light on purpose (stdlib, mpi4py, the catalog): it starts on every rank of every node.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from mlps_slurm import __version__
from mlps_slurm.catalog.checkpointing import (DEFAULT_NUM_CHECKPOINTS_READ, DEFAULT_NUM_CHECKPOINTS_WRITE,
                                              DEFAULT_SECONDS_BETWEEN_CHECKPOINTS, LLAMA3_MODELS,
                                              process_count_problem, rank_shards)

SCHEMA = "mlps-slurm/checkpoint-engine/1"
EXIT_USAGE = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mlps_slurm.steps.checkpoint_engine",
                                description="MLPerf Storage llama3 checkpoint writes then reads, one shard per rank.")
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoint-dir", required=True)
    p.add_argument("--output", required=True, help="JSON file written by rank 0")
    p.add_argument("--writes", type=int, default=DEFAULT_NUM_CHECKPOINTS_WRITE)
    p.add_argument("--reads", type=int, default=DEFAULT_NUM_CHECKPOINTS_READ)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--seconds-between-checkpoints", type=float, default=DEFAULT_SECONDS_BETWEEN_CHECKPOINTS)
    p.add_argument("--keep-files", action="store_true")
    p.add_argument("--chunk-mib", type=int, default=16, help="I/O size of each write and read call")
    return p.parse_args(argv)


def usage_problem(args: argparse.Namespace, nprocs: int) -> str | None:
    """Checked identically on every rank before any I/O, so all ranks exit together."""
    model = LLAMA3_MODELS.get(args.model)
    if model is None:
        return f"unknown model {args.model!r}; valid models: {', '.join(LLAMA3_MODELS)}"
    if not 0 < args.scale <= 1:
        return f"--scale must be in (0, 1], got {args.scale}"
    if args.writes < 1 and args.reads > 0:
        return "--reads needs at least one checkpoint written (--writes >= 1)"
    if args.writes < 0 or args.reads < 0 or args.chunk_mib < 1 or args.seconds_between_checkpoints < 0:
        return "--writes, --reads and --seconds-between-checkpoints must not be negative; --chunk-mib >= 1"
    problem = process_count_problem(model, nprocs)
    if problem:
        return problem
    if not os.path.isdir(args.checkpoint_dir):
        return f"checkpoint directory {args.checkpoint_dir} does not exist"
    if not os.access(args.checkpoint_dir, os.W_OK | os.X_OK):
        return f"checkpoint directory {args.checkpoint_dir} is not writable"
    return None


def shard_files(checkpoint_dir: str, index: int, rank: int, model_bytes: int, optimizer_bytes: int) -> list[tuple[Path, int]]:
    d = Path(checkpoint_dir) / f"ckpt_{index}"
    files = []
    if model_bytes > 0:
        files.append((d / f"rank_{rank}.model.bin", model_bytes))
    if optimizer_bytes > 0:
        files.append((d / f"rank_{rank}.optim.bin", optimizer_bytes))
    return files


def write_file(path: Path, nbytes: int, buf: memoryview) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        left = nbytes
        while left:
            n = os.write(fd, buf[: min(left, len(buf))])
            left -= n
        os.fsync(fd)  # the rules require every checkpoint file to be durable before the checkpoint ends
    finally:
        os.close(fd)


def read_file(path: Path, nbytes: int, buf: bytearray) -> int:
    total = 0
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            total += n
    if total != nbytes:
        raise OSError(f"{path}: read {total} bytes, expected {nbytes} (truncated checkpoint)")
    return total


def drop_cache(paths: list[Path]) -> dict[str, Any]:
    """Evict the checkpoint files from this node's page cache so reads come from storage (no root needed)."""
    try:
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)  # only clean pages can be dropped
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    except OSError as exc:
        return {"method": "posix_fadvise(POSIX_FADV_DONTNEED)", "ok": False, "error": str(exc)}
    return {"method": "posix_fadvise(POSIX_FADV_DONTNEED)", "ok": True, "error": None}


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def atomic_json(path: str, data: Any) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def run(args: argparse.Namespace, comm: Any) -> int:
    rank, nprocs = comm.Get_rank(), comm.Get_size()
    host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()  # emulated nodes share one real host
    model = LLAMA3_MODELS[args.model]
    shard = rank_shards(model, nprocs, args.scale)[rank]
    chunk = args.chunk_mib << 20
    write_buf = memoryview(os.urandom(chunk))  # one reused buffer: shards never live in memory
    read_buf = bytearray(chunk)
    started = now_iso()
    records: list[dict[str, Any]] = []
    written: list[Path] = []
    created_dirs: list[Path] = []

    def timed(phase: str, index: int, action: Any) -> None:
        comm.Barrier()
        t0, p0 = time.time(), time.perf_counter()
        nbytes = action()
        p1, t1 = time.perf_counter(), time.time()
        comm.Barrier()
        records.append({"phase": phase, "index": index, "rank": rank, "host": host, "bytes": nbytes,
                        "start": t0, "end": t1, "duration": p1 - p0})

    for k in range(args.writes):
        files = shard_files(args.checkpoint_dir, k, rank, shard.model_bytes, shard.optimizer_bytes)
        if rank == 0:
            files[0][0].parent.mkdir(exist_ok=True)
            created_dirs.append(files[0][0].parent)
        comm.Barrier()  # the checkpoint directory exists before any rank writes into it

        def write_all() -> int:
            for path, nbytes in files:
                write_file(path, nbytes, write_buf)
            if rank == 0:
                dfd = os.open(files[0][0].parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)  # make the new directory entries durable too
                finally:
                    os.close(dfd)
            return sum(n for _, n in files)

        timed("write", k, write_all)
        written += [p for p, _ in files]
        if rank == 0:
            print(f"write {k}: {report_line(comm, records[-1])}", flush=True)
        else:
            report_line(comm, records[-1])
        if k < args.writes - 1 and args.seconds_between_checkpoints:
            time.sleep(args.seconds_between_checkpoints)

    cache_drop = drop_cache(written)
    comm.Barrier()
    for k in range(args.reads):
        files = shard_files(args.checkpoint_dir, k % args.writes, rank, shard.model_bytes, shard.optimizer_bytes)
        timed("read", k, lambda: sum(read_file(p, n, read_buf) for p, n in files))
        line = report_line(comm, records[-1])
        if rank == 0:
            print(f"read  {k}: {line}", flush=True)
        if k < args.reads - 1 and args.seconds_between_checkpoints:
            time.sleep(args.seconds_between_checkpoints)

    rank_info = {"rank": rank, "host": host, "model_bytes": shard.model_bytes,
                 "optimizer_bytes": shard.optimizer_bytes, "cache_drop": cache_drop}
    gathered = comm.gather((rank_info, records), root=0)
    comm.Barrier()
    if not args.keep_files and rank == 0:
        for d in created_dirs:
            shutil.rmtree(d, ignore_errors=True)
    if rank != 0:
        return 0
    ranks = [info for info, _ in gathered]
    checkpoints: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _, recs in gathered:
        for r in recs:
            checkpoints.setdefault((r["phase"], r["index"]), []).append(
                {k: r[k] for k in ("rank", "host", "bytes", "start", "end", "duration")})
    atomic_json(args.output, {
        "schema": SCHEMA, "engine": "mlps-builtin-checkpoint", "engine_version": __version__,
        "model": model.name, "num_processes": nprocs, "scale": args.scale, "fsync": True,
        "num_checkpoints_write": args.writes, "num_checkpoints_read": args.reads,
        "seconds_between_checkpoints": args.seconds_between_checkpoints, "checkpoint_dir": args.checkpoint_dir,
        "chunk_bytes": chunk, "started": started, "ended": now_iso(), "ranks": ranks,
        "checkpoints": [{"phase": p, "index": i, "ranks": sorted(v, key=lambda r: r["rank"])}
                        for (p, i), v in sorted(checkpoints.items(), key=lambda kv: (kv[0][0] != "write", kv[0][1]))],
    })
    return 0


def report_line(comm: Any, record: dict[str, Any]) -> str:
    """Collective: the checkpoint's total bytes and slowest-rank time, for the progress log."""
    nbytes = comm.allreduce(record["bytes"])
    slowest = comm.allreduce(record["duration"], op=_max_op())
    return f"{nbytes / 1e6:.1f} MB in {slowest:.3f} s = {nbytes / slowest / 1e9 if slowest else 0:.3f} GB/s"


def _max_op() -> Any:
    from mpi4py import MPI

    return MPI.MAX


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mpi4py import MPI  # imported after argument parsing, so --help works without MPI

    comm = MPI.COMM_WORLD
    problem = usage_problem(args, comm.Get_size())
    if problem:
        if comm.Get_rank() == 0:
            print(f"checkpoint engine: error: {problem}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    try:
        return run(args, comm)
    except BaseException as exc:  # one rank failing must not leave the others waiting in a barrier forever
        host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        print(f"checkpoint engine: rank {comm.Get_rank()} on {host} failed: {exc}", file=sys.stderr, flush=True)
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        comm.Abort(1)
        return 1


if __name__ == "__main__":
    sys.exit(main())
