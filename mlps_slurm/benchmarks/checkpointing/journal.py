"""The checkpoint engine's journal: each completed checkpoint, appended and fsynced by rank 0 as it completes, so a
job that `mlps-slurm resume` runs again keeps the checkpoints an earlier attempt completed instead of redoing them.

`resume` sets the earlier attempt's outputs aside under <run>/attempts/<n>/ (the same relative paths) and runs the
job again with MLPS_RESUME_ATTEMPT=<n+1>; the engine reads the newest journal there whose header matches its own
configuration, keeps the writes whose files are all on disk at full size (then the reads, once every write is kept),
and writes the rest. Runs on compute nodes: standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mlps_slurm.rundir import attempt_dir

if TYPE_CHECKING:
    from mpi4py.MPI import Intracomm

    from mlps_slurm.benchmarks.checkpointing.job import Settings


JOURNAL_SCHEMA = "mlps-slurm/checkpoint-journal/1"


def resumed_attempt(env: dict[str, str] | os._Environ[str] = os.environ) -> int | None:
    """The attempt number when `mlps-slurm resume` submitted this job (2, 3, ...), else None."""
    value = env.get("MLPS_RESUME_ATTEMPT", "")
    return int(value) if value.isdigit() and int(value) >= 2 else None


def journal_path(output: Path) -> Path:
    """engine.json -> engine.journal.jsonl, beside it."""
    return output.with_name(f"{output.stem}.journal.jsonl")


def journal_header(settings: Settings, nprocs: int) -> dict[str, Any]:
    """What must match for an earlier attempt's checkpoints to count as this run's."""
    return {"schema": JOURNAL_SCHEMA, "model": settings.model, "num_processes": nprocs, "scale": settings.scale,
            "writes": settings.writes, "reads": settings.reads, "chunk_bytes": settings.chunk_bytes,
            "checkpoint_dir": str(settings.checkpoint_dir)}


class Journal:
    """Rank 0 appends one line per completed checkpoint and fsyncs it before the next one starts."""

    def __init__(self, path: Path, header: dict[str, Any], kept: list[dict[str, Any]]) -> None:
        self.path = path
        self._fh = open(path, "w", encoding="utf-8")
        for line in (header, *kept):
            self._fh.write(json.dumps(line) + "\n")
        self._sync()

    def append(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._sync()

    def _sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


@dataclass
class Kept:
    """What an earlier attempt completed and this one keeps: the first `writes` write checkpoints (their files
    verified on disk) and, once every write is kept, the first `reads` reads."""

    writes: int = 0
    reads: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""


def earlier_journals(settings: Settings, env: dict[str, str] | os._Environ[str] = os.environ) -> list[Path]:
    """Where resume set aside the earlier attempts' journals (attempts/<n>/<same path>), newest first."""
    attempt, run_dir = resumed_attempt(env), env.get("MLPS_RUN_DIR", "")
    if attempt is None or not run_dir:
        return []
    try:
        rel = journal_path(settings.output).relative_to(Path(run_dir).absolute())
    except ValueError:
        return []
    return [attempt_dir(Path(run_dir).absolute(), n) / rel for n in range(attempt - 1, 0, -1)]


def read_journal(path: Path, header: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The journal's checkpoint records, or None when it is missing, unreadable or from another configuration. A
    last line cut short by the kill is ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    records = []
    for i, line in enumerate(lines):
        try:
            value = json.loads(line)
        except ValueError:
            break
        if i == 0:
            if value != header:
                return None
            continue
        if not isinstance(value, dict) or value.get("phase") not in ("write", "read"):
            break
        records.append(value)
    return records if lines else None


def kept_checkpoints(settings: Settings, records: list[dict[str, Any]],
                     files_of: Callable[[int], list[tuple[Path, int]]]) -> Kept:
    """The longest run of complete checkpoints from the start: write k is kept when the journal has it and every
    rank's files of ckpt_k (`files_of(k)`: path and size) are on disk with their full size; reads only after all
    writes, in order."""
    kept = Kept()
    writes = {r.get("index"): r for r in records if r.get("phase") == "write"}
    while kept.writes < settings.writes and kept.writes in writes:
        files = files_of(kept.writes)
        if not all(p.is_file() and p.stat().st_size == n for p, n in files):
            break
        kept.records.append(writes[kept.writes])
        kept.writes += 1
    if kept.writes == settings.writes:
        reads = {r.get("index"): r for r in records if r.get("phase") == "read"}
        while kept.reads < settings.reads and kept.reads in reads:
            kept.records.append(reads[kept.reads])
            kept.reads += 1
    return kept


def resume_state(comm: Intracomm, settings: Settings, files_of: Callable[[int], list[tuple[Path, int]]]) -> Kept:
    """Rank 0 decides what an earlier attempt left that counts (`files_of(k)`: every rank's files of checkpoint k
    and their sizes), removes the rest of its ckpt_* directories, and tells every rank where to start."""
    kept = Kept()
    if comm.rank == 0 and resumed_attempt() is not None:
        header = journal_header(settings, comm.size)
        for path in earlier_journals(settings):
            records = read_journal(path, header)
            if records is not None:
                kept = kept_checkpoints(settings, records, files_of)
                kept.source = str(path)
                break
        removed = []
        for ckpt in sorted(settings.checkpoint_dir.glob("ckpt_*")):
            index = ckpt.name[len("ckpt_"):]
            if not (index.isdigit() and int(index) < kept.writes):
                shutil.rmtree(ckpt, ignore_errors=True)
                removed.append(ckpt.name)
        print(f"mlps-slurm checkpoint engine: resumed attempt {resumed_attempt()}: keeps {kept.writes} write and "
              f"{kept.reads} read checkpoint(s) of the earlier attempt ({kept.source or 'no usable journal'}); "
              f"removed {len(removed)} incomplete ckpt_* director{'y' if len(removed) == 1 else 'ies'}",
              flush=True)
    return comm.bcast(kept, root=0)
