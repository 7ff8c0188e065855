"""The built-in checkpoint engine: an MPI program that follows the MLPerf Storage checkpointing protocol.

Run under the job's launcher, one process per simulated accelerator:

    srun --mpi=pmix python -m mlps_slurm.benchmarks.checkpointing.job --model llama3-8b --checkpoint-dir DIR \\
        --output FILE.json [--writes 10] [--reads 10] [--scale 1.0] [--seconds-between-checkpoints 5]

Write phase: every rank writes its model and optimizer shards (sized by mlps_slurm.benchmarks.checkpointing.catalog) with
fsync, between barriers, `--writes` times. Then each rank drops the page cache of its files, and the read phase
reads them back `--reads` times. Rank 0 gathers the per-rank timings and writes one JSON file that
mlps_slurm.benchmarks.checkpointing.engine.normalize() turns into metrics.

It runs on compute nodes, so it imports only the standard library, mpi4py and mlps_slurm.catalog.
Exit status: 0 success, 2 invalid arguments or unusable directories (checked before any data is written),
1 a rank failed during the run (the job is aborted with MPI_Abort rather than left hanging in a barrier).
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mlps_slurm import __version__
from mlps_slurm.rundir import atomic_write_text
from mlps_slurm.benchmarks.checkpointing.journal import Journal, Kept, journal_header, journal_path, resume_state, \
    resumed_attempt
from mlps_slurm.steps.pagecache import evict
from mlps_slurm.steps.progress import Progress
from mlps_slurm.benchmarks.checkpointing.catalog import (
    DEFAULT_NUM_CHECKPOINTS_READ,
    DEFAULT_NUM_CHECKPOINTS_WRITE,
    DEFAULT_SECONDS_BETWEEN_CHECKPOINTS,
    LLAMA3_MODELS,
    RankShard,
    process_count_problem,
    rank_shards,
)

if TYPE_CHECKING:
    from mpi4py.MPI import Intracomm

SCHEMA = "mlps-slurm/checkpoint-engine/1"  # mlps_slurm.benchmarks.checkpointing.engine.ENGINE_SCHEMA reads this
ENGINE = "mlps-builtin-checkpoint"
CACHE_DROP_METHOD = "posix_fadvise(POSIX_FADV_DONTNEED)"
PROG = "python -m mlps_slurm.benchmarks.checkpointing.job"
EXIT_FAILED, EXIT_USAGE = 1, 2
MAX_CHUNK_MIB = 1024
MAX_REPORTED = 20  # problems printed by rank 0; the same one can come from every node
# The write buffer is served at a different byte offset for each chunk (0..4095, cycling), so no two 4 KiB-aligned
# blocks among 4096 consecutive chunks are equal: storage with fixed-block deduplication cannot skip the writes of
# a buffer that is otherwise reused. Content-defined deduplication would still find the shifted copies.
PATTERN_SHIFTS = 4096


class UsageError(Exception):
    """A command-line problem; raised instead of argparse's exit so that only rank 0 reports it."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print and exit on every rank
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="MLPerf Storage checkpointing: write, then read back, Llama 3 checkpoints.")
    p.add_argument("--model", required=True, help=f"one of {', '.join(LLAMA3_MODELS)}")
    p.add_argument("--checkpoint-dir", required=True, type=Path, help="existing directory on the storage under test")
    p.add_argument("--output", required=True, type=Path, help="JSON file rank 0 writes the timings to")
    p.add_argument("--writes", type=int, default=DEFAULT_NUM_CHECKPOINTS_WRITE, help="checkpoints to write")
    p.add_argument("--reads", type=int, default=DEFAULT_NUM_CHECKPOINTS_READ,
                   help="checkpoints to read back (checkpoint k reads what write k %% writes wrote)")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the full checkpoint size, in (0, 1]")
    p.add_argument("--seconds-between-checkpoints", type=float, default=DEFAULT_SECONDS_BETWEEN_CHECKPOINTS,
                   help="pause between two writes")
    p.add_argument("--keep-files", action="store_true", help="leave the ckpt_* directories in place")
    p.add_argument("--chunk-mib", type=int, default=16, help="size of each write and read call, in MiB")
    return p


@dataclass(frozen=True)
class Settings:
    model: str
    checkpoint_dir: Path
    output: Path
    writes: int
    reads: int
    scale: float
    seconds_between: float
    keep_files: bool
    chunk_bytes: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        return cls(args.model, args.checkpoint_dir.absolute(), args.output.absolute(), args.writes, args.reads,
                   args.scale, args.seconds_between_checkpoints, args.keep_files, args.chunk_mib << 20)


def node_name() -> str:
    # Emulated Slurm nodes share one host, so the Slurm node name is the identity, not the hostname.
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


# --- validation (before any data is written) ------------------------------------------------------------------

def argument_problems(args: argparse.Namespace, num_processes: int) -> list[str]:
    """What is wrong with the arguments; identical on every rank."""
    problems = []
    model = LLAMA3_MODELS.get(args.model)
    if model is None:
        problems.append(f"unknown model {args.model!r}; valid models: {', '.join(LLAMA3_MODELS)}")
    else:
        problem = process_count_problem(model, num_processes)
        if problem:
            problems.append(problem)
    if not 0 < args.scale <= 1:  # also rejects NaN
        problems.append(f"--scale must be in (0, 1], got {args.scale}")
    for flag, value in (("--writes", args.writes), ("--reads", args.reads)):
        if value < 0:
            problems.append(f"{flag} must be >= 0, got {value}")
    if args.writes == 0 and args.reads > 0:
        problems.append("--reads needs --writes >= 1: the read phase reads back the checkpoints this run wrote")
    elif args.writes == 0 and args.reads == 0:
        problems.append("nothing to do: --writes and --reads are both 0")
    if not (math.isfinite(args.seconds_between_checkpoints) and args.seconds_between_checkpoints >= 0):
        problems.append(f"--seconds-between-checkpoints must be >= 0, got {args.seconds_between_checkpoints}")
    if not 1 <= args.chunk_mib <= MAX_CHUNK_MIB:
        problems.append(f"--chunk-mib must be in 1..{MAX_CHUNK_MIB}, got {args.chunk_mib}")
    return problems


def launch_problems(num_processes: int) -> list[str]:
    """srun without a working --mpi plugin starts N singletons that each believe they are rank 0 of 1."""
    step_tasks = os.environ.get("SLURM_STEP_NUM_TASKS", "")
    launched_by_mpirun = "OMPI_COMM_WORLD_SIZE" in os.environ
    if num_processes == 1 and step_tasks.isdigit() and int(step_tasks) > 1 and not launched_by_mpirun:
        return [f"srun started {step_tasks} tasks but MPI sees a world of 1: launch with srun --mpi=pmix "
                f"(see `srun --mpi=list`) or mpirun"]
    return []


def _writable_problem(directory: Path, what: str, host: str) -> str | None:
    if not directory.is_dir():
        state = "is not a directory" if directory.exists() else "does not exist"
        return f"{what} {directory} {state} on {host}"
    try:  # a real probe: os.access() trusts mode bits (root passes everywhere), not root squashing or quotas
        fd, probe = tempfile.mkstemp(prefix=".mlps-write-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"{what} {directory} is not writable on {host}: {exc.strerror or exc}"
    return None


def filesystem_problems(settings: Settings, rank: int, host: str) -> list[str]:
    """Directory problems seen by this rank (mounts can differ between nodes, so every rank looks)."""
    problem = _writable_problem(settings.checkpoint_dir, "checkpoint dir", host)
    if problem:
        return [problem]
    if rank != 0:
        return []
    problems = []
    # The engine deletes the ckpt_* directories at the end; it must never take someone else's for its own.
    leftovers = sorted(p.name for p in settings.checkpoint_dir.glob("ckpt_*"))
    # `mlps-slurm resume` runs this job again: the directory is the run's own (<checkpoint_dir>/<run id>), so what
    # is there is the earlier attempt's, which resume_state() keeps or removes.
    if leftovers and resumed_attempt() is None:
        problems.append(f"checkpoint dir {settings.checkpoint_dir} already holds {', '.join(leftovers[:4])}"
                        f"{' ...' if len(leftovers) > 4 else ''} from an earlier run; remove them or use an "
                        "empty directory")
    if settings.output.is_dir():
        problems.append(f"--output {settings.output} is a directory, expected a file name")
    else:  # checked now, not after hours of benchmark
        problem = _writable_problem(settings.output.parent, "output directory", host)
        if problem:
            problems.append(problem)
    return problems


def parse(argv: list[str] | None) -> argparse.Namespace | str:
    """The parsed arguments, or the usage error to report."""
    parser = build_parser()
    try:
        return parser.parse_args(argv)
    except UsageError as exc:
        return f"{exc}\n{parser.format_usage().rstrip()}"


def _validate(comm: Intracomm, parsed: argparse.Namespace | str, host: str) -> tuple[Settings | None, list[str]]:
    """Check everything before any I/O; every rank gets the same verdict, so all ranks exit together."""
    problems: list[str] = []
    settings = None
    if isinstance(parsed, str):
        problems.append(parsed)
    else:
        problems += argument_problems(parsed, comm.size) + launch_problems(comm.size)
        if not problems:
            settings = Settings.from_args(parsed)
            problems += filesystem_problems(settings, comm.rank, host)
    merged: list[str] = []
    for rank_problems in comm.allgather(problems):
        merged += [p for p in rank_problems if p not in merged]
    return (settings if not merged else None), merged


# --- I/O ------------------------------------------------------------------------------------------------------

class Pattern:
    """One random buffer, reused for every write: chunk-sized views at a shifting offset."""

    def __init__(self, chunk_bytes: int) -> None:
        self._buf = memoryview(os.urandom(chunk_bytes + PATTERN_SHIFTS - 1))
        self._next = 0

    def view(self, size: int) -> memoryview:
        shift = self._next % PATTERN_SHIFTS
        self._next += 1
        return self._buf[shift:shift + size]


def shard_files(checkpoint_dir: Path, index: int, shard: RankShard) -> list[tuple[Path, int]]:
    """The files (and sizes) one rank writes for checkpoint `index`. ZeRO-1 ranks outside the first replica hold
    no model state and write no model file; the optimizer file is always written, even when empty."""
    ckpt = checkpoint_dir / f"ckpt_{index}"
    files = []
    if shard.model_bytes > 0:
        files.append((ckpt / f"rank_{shard.rank}.model.bin", shard.model_bytes))
    files.append((ckpt / f"rank_{shard.rank}.optim.bin", shard.optimizer_bytes))
    return files


def write_file(path: Path, size: int, pattern: Pattern, chunk_bytes: int) -> int:
    # O_EXCL: two processes that both think they are rank r (a broken launch) fail instead of sharing a file.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        remaining = size
        while remaining:
            view = pattern.view(min(chunk_bytes, remaining))
            while view:  # os.write may write less than asked (e.g. a signal, or a full disk before ENOSPC)
                written = os.write(fd, view)
                if written <= 0:
                    raise OSError(errno.EIO, f"write returned {written}")
                view = view[written:]
                remaining -= written
        os.fsync(fd)
    except OSError as exc:  # os.write and os.fsync errors do not name the file
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    finally:
        os.close(fd)
    return size


def read_file(path: Path, size: int, buf: memoryview) -> int:
    total = 0
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            total += n
    if total != size:
        raise OSError(errno.EIO, f"read {total} bytes, the checkpoint wrote {size} (truncated or replaced)",
                      str(path))
    return total


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some FUSE and network file systems refuse fsync on a directory; the files themselves were fsynced.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def drop_cache(paths: list[Path]) -> str | None:
    """Evict these (fsynced, hence clean) files from this node's page cache, so reads come from storage.
    Returns the first error, or None."""
    errors = evict(paths)
    return errors[0] if errors else None


# --- the protocol -----------------------------------------------------------------------------------------------

class Run:
    """One rank's view of the run. Rank 0 also collects every rank's timings."""

    def __init__(self, comm: Intracomm, settings: Settings, host: str, kept: Kept | None = None) -> None:
        self.comm, self.settings, self.host = comm, settings, host
        self.rank = comm.rank
        self.shard = rank_shards(LLAMA3_MODELS[settings.model], comm.size, settings.scale)[self.rank]
        self.stage = "setup"  # where a failure happened, for the error message
        self.kept = kept or Kept()
        self.checkpoints: list[dict[str, Any]] = list(self.kept.records) if self.rank == 0 else []  # rank 0 only
        self.cache_drop_error: str | None = None
        # kept checkpoints are this run's too: the clean-up at the end removes them
        self.created_dirs: list[Path] = [settings.checkpoint_dir / f"ckpt_{k}" for k in range(self.kept.writes)]
        self.journal: Journal | None = None
        # `mlps-slurm status` shows rank 0's count: checkpoint 7/20 (write 7/10).
        self.progress = Progress("checkpoints", settings.writes + settings.reads, "checkpoints") \
            if self.rank == 0 else None
        if self.rank == 0:
            self.stage = f"writing {journal_path(settings.output)}"
            self.journal = Journal(journal_path(settings.output), journal_header(settings, comm.size),
                                   self.checkpoints)
            if self.progress is not None and self.checkpoints:
                self.progress.update(len(self.checkpoints), "resumed", force=True)

    def files(self, index: int) -> list[tuple[Path, int]]:
        return shard_files(self.settings.checkpoint_dir, index, self.shard)

    def timed(self, phase: str, index: int, action: Callable[[], int]) -> None:
        """Run one checkpoint between barriers, so all ranks start together and the slowest defines its end."""
        self.stage = f"{phase} checkpoint {index}"
        self.comm.Barrier()
        start, t0 = time.time(), time.perf_counter()
        nbytes = action()
        duration = time.perf_counter() - t0
        end = time.time()
        self.comm.Barrier()
        record = {"rank": self.rank, "host": self.host, "bytes": nbytes, "start": start, "end": end,
                  "duration": duration}
        records = self.comm.gather(record, root=0)
        if records is not None:
            self.checkpoints.append({"phase": phase, "index": index, "ranks": records})
            if self.journal is not None:
                self.journal.append(self.checkpoints[-1])
            _report_line(phase, index, records)
            if self.progress is not None:
                count = self.settings.writes if phase == "write" else self.settings.reads
                self.progress.update(len(self.checkpoints), f"{phase} {index + 1}/{count}", force=True)

    def write_phase(self) -> None:
        pattern = Pattern(self.settings.chunk_bytes)
        chunk = self.settings.chunk_bytes
        for k in range(self.kept.writes, self.settings.writes):
            ckpt_dir = self.settings.checkpoint_dir / f"ckpt_{k}"
            if self.rank == 0:  # before the starting barrier: creating the directory is not the checkpoint's I/O
                self.stage = f"creating {ckpt_dir}"
                ckpt_dir.mkdir()
                self.created_dirs.append(ckpt_dir)
            files = self.files(k)
            self.timed("write", k, lambda: sum(write_file(p, n, pattern, chunk) for p, n in files))
            if self.rank == 0:
                # After the closing barrier, when every rank's entry exists. Outside the timing: it is a metadata
                # flush, and inside rank 0's timing it would always make rank 0 the slowest rank.
                fsync_dir(ckpt_dir)
            if k < self.settings.writes - 1 and self.settings.seconds_between > 0:
                self.stage = f"pause after write checkpoint {k}"
                time.sleep(self.settings.seconds_between)
        self.stage = "cache drop after the write phase"
        self.cache_drop_error = drop_cache([p for k in range(self.settings.writes) for p, _ in self.files(k)])

    def read_phase(self) -> None:
        buf = memoryview(bytearray(self.settings.chunk_bytes))
        for k in range(self.kept.reads, self.settings.reads):
            files = self.files(k % self.settings.writes)
            self.timed("read", k, lambda: sum(read_file(p, n, buf) for p, n in files))
            # Reading filled the cache again; drop it so that a later read of the same checkpoint (reads > writes)
            # comes from storage too. Outside the timing.
            self.stage = f"cache drop after read checkpoint {k}"
            self.cache_drop_error = self.cache_drop_error or drop_cache([p for p, _ in files])

    def rank_info(self) -> dict[str, Any]:
        return {"rank": self.rank, "host": self.host, "model_bytes": self.shard.model_bytes,
                "optimizer_bytes": self.shard.optimizer_bytes,
                "cache_drop": {"method": CACHE_DROP_METHOD, "ok": self.cache_drop_error is None,
                               "error": self.cache_drop_error}}

    def cleanup(self) -> list[str]:
        """Remove what this run wrote: each rank its own files in parallel, then rank 0 the directories."""
        self.stage = "cleanup"
        errors = []
        for k in range(self.settings.writes):
            for path, _ in self.files(k):
                try:
                    path.unlink()
                except OSError as exc:
                    errors.append(f"{path}: {exc.strerror or exc}")
        self.comm.Barrier()
        for ckpt_dir in self.created_dirs:
            try:
                shutil.rmtree(ckpt_dir)
            except OSError as exc:
                errors.append(f"{ckpt_dir}: {exc.strerror or exc}")
        return errors


def _report_line(phase: str, index: int, records: list[dict[str, Any]]) -> None:
    nbytes = sum(r["bytes"] for r in records)
    slowest = max(records, key=lambda r: r["duration"])
    seconds = slowest["duration"]
    rate = f"{nbytes / seconds / 1e9:.3f} GB/s" if seconds > 0 else "n/a GB/s"
    print(f"{phase:<5} checkpoint {index:>3}: {nbytes / 1e9:.3f} GB in {seconds:.3f} s (slowest rank "
          f"{slowest['rank']}) {rate}", flush=True)


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """The finalize job sees the whole file or none of it."""
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def execute(comm: Intracomm, run: Run) -> int:
    s = run.settings
    if run.rank == 0:
        total = sum(sh.total_bytes for sh in rank_shards(LLAMA3_MODELS[s.model], comm.size, s.scale))
        print(f"mlps-slurm checkpoint engine {__version__}: {s.model}, {comm.size} ranks, scale {s.scale}, "
              f"{total / 1e9:.3f} GB per checkpoint, {s.writes} writes, {s.reads} reads, in {s.checkpoint_dir}",
              flush=True)
    started = _now()
    run.write_phase()
    run.read_phase()
    ended = _now()
    run.stage = "gathering results"
    ranks = comm.gather(run.rank_info(), root=0)
    if ranks is not None:
        run.stage = f"writing {s.output}"
        write_json_atomically(s.output, {
            "schema": SCHEMA, "engine": ENGINE, "engine_version": __version__, "model": s.model,
            "num_processes": comm.size, "scale": s.scale, "fsync": True, "num_checkpoints_write": s.writes,
            "num_checkpoints_read": s.reads, "seconds_between_checkpoints": s.seconds_between,
            "checkpoint_dir": str(s.checkpoint_dir), "chunk_bytes": s.chunk_bytes, "started": started,
            "ended": ended, "ranks": ranks, "checkpoints": run.checkpoints,
            **({"resumed": {"attempt": resumed_attempt(), "kept_writes": run.kept.writes,
                            "kept_reads": run.kept.reads, "journal": run.kept.source}} if run.kept.source else {}),
        })
    if run.journal is not None:  # engine.json holds every checkpoint now; the journal only served a resume
        run.journal.close()
        run.journal.path.unlink(missing_ok=True)
    if s.keep_files:
        return 0
    # The measurement is complete and saved; files that cannot be removed are reported, not fatal.
    errors = comm.gather(run.cleanup(), root=0)
    if errors is not None:
        messages = [e for rank_errors in errors for e in rank_errors]
        for message in messages[:MAX_REPORTED]:
            print(f"{PROG}: warning: could not remove {message}", file=sys.stderr, flush=True)
        if len(messages) > MAX_REPORTED:
            print(f"{PROG}: warning: ... and {len(messages) - MAX_REPORTED} more", file=sys.stderr, flush=True)
    return 0


def _abort(comm: Intracomm, rank: int, host: str, stage: str, exc: BaseException, checkpoint_dir: Path) -> None:
    sys.stdout.flush()
    print(f"{PROG}: error: rank {rank} on {host} failed during {stage}: {type(exc).__name__}: {exc}\n"
          f"  (aborting all ranks; files written so far stay in {checkpoint_dir})", file=sys.stderr)
    traceback.print_exc(file=sys.stderr)
    sys.stderr.flush()
    comm.Abort(EXIT_FAILED)


def main(argv: list[str] | None = None) -> int:
    parsed = parse(argv)  # before MPI starts, so that --help needs no MPI
    from mpi4py import MPI  # initializes MPI; kept out of module import so the pure parts import without it

    comm = MPI.COMM_WORLD
    host = node_name()
    settings, problems = _validate(comm, parsed, host)
    if settings is None:
        if comm.rank == 0:
            for problem in problems[:MAX_REPORTED]:
                print(f"{PROG}: error: {problem}", file=sys.stderr)
            if len(problems) > MAX_REPORTED:  # e.g. a missing mount, reported once per node
                print(f"{PROG}: error: ... and {len(problems) - MAX_REPORTED} more", file=sys.stderr)
        return EXIT_USAGE
    run: Run | None = None
    stage = "resuming from the earlier attempt's journal"
    try:
        shards = rank_shards(LLAMA3_MODELS[settings.model], comm.size, settings.scale)
        kept = resume_state(comm, settings, lambda k: [
            f for shard in shards for f in shard_files(settings.checkpoint_dir, k, shard)])
        stage = f"opening the journal {journal_path(settings.output)}"
        run = Run(comm, settings, host, kept)
        return execute(comm, run)
    except Exception as exc:  # any rank's failure ends the job now; the others would wait in a barrier forever
        _abort(comm, comm.rank, host, run.stage if run is not None else stage, exc, settings.checkpoint_dir)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
