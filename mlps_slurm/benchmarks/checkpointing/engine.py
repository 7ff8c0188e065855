"""Adapter for the built-in checkpoint engine: its command line, and its output normalized into metrics.

Pure functions (no MPI): used on the login node to build the job, and by the finalize job to read the result.
A checkpoint's duration is that of its slowest rank; its throughput is the bytes of all ranks over that duration,
because a checkpoint is only complete (and training can only go on) once the last rank has finished.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from pathlib import Path
from typing import Any, NoReturn

# Must match mlps_slurm.benchmarks.checkpointing.job, which may not import this module (it runs on compute nodes
# with only the catalog); the integration test runs the engine and feeds its output through normalize().
ENGINE_SCHEMA = "mlps-slurm/checkpoint-engine/1"
ENGINE_MODULE = "mlps_slurm.benchmarks.checkpointing.job"
PHASES = ("write", "read")


class EngineOutputError(ValueError):
    """The engine's output is missing, truncated or malformed; the message names the file and the key."""


def engine_argv(python: str, model: str, checkpoint_dir: str, output: str, writes: int, reads: int, scale: float,
                seconds_between: float, keep_files: bool = False) -> list[str]:
    """The engine's command line, to be prefixed by the launcher (srun --mpi=pmix ... or mpirun ...)."""
    argv = [python, "-m", ENGINE_MODULE, "--model", model, "--checkpoint-dir", checkpoint_dir, "--output", output,
            "--writes", str(writes), "--reads", str(reads),
            # repr() round-trips floats exactly, so the engine sizes the same shards as the plan.
            "--scale", repr(float(scale)), "--seconds-between-checkpoints", repr(float(seconds_between))]
    if keep_files:
        argv.append("--keep-files")
    return argv


class _Checker:
    """Typed access to the engine JSON; every failure names the file and the key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, problem: str) -> NoReturn:
        raise EngineOutputError(f"{self.source}: {path or '<top level>'}: {problem}")

    def _get(self, obj: Any, path: str, key: str) -> tuple[Any, str]:
        if not isinstance(obj, dict):
            self.fail(path, f"expected an object, got {type(obj).__name__}")
        where = f"{path}.{key}" if path else key
        if key not in obj:
            self.fail(where, "missing")
        return obj[key], where

    def integer(self, obj: Any, path: str, key: str, minimum: int = 0) -> int:
        value, where = self._get(obj, path, key)
        # bool is an int subclass in Python; true/false in the JSON is a type error, not 1/0.
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"expected an integer, got {value!r}")
        if value < minimum:
            self.fail(where, f"must be >= {minimum}, got {value}")
        return value

    def number(self, obj: Any, path: str, key: str, minimum: float | None = 0.0) -> float:
        value, where = self._get(obj, path, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(where, f"expected a finite number, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(where, f"must be >= {minimum}, got {value}")
        return float(value)

    def string(self, obj: Any, path: str, key: str, nullable: bool = False) -> str | None:
        value, where = self._get(obj, path, key)
        if not (isinstance(value, str) or (nullable and value is None)):
            self.fail(where, f"expected a string{' or null' if nullable else ''}, got {value!r}")
        return value

    def boolean(self, obj: Any, path: str, key: str) -> bool:
        value, where = self._get(obj, path, key)
        if not isinstance(value, bool):
            self.fail(where, f"expected true or false, got {value!r}")
        return value

    def array(self, obj: Any, path: str, key: str) -> list[Any]:
        value, where = self._get(obj, path, key)
        if not isinstance(value, list):
            self.fail(where, f"expected a list, got {type(value).__name__}")
        return value

    def mapping(self, obj: Any, path: str, key: str) -> dict[str, Any]:
        value, where = self._get(obj, path, key)
        if not isinstance(value, dict):
            self.fail(where, f"expected an object, got {value!r}")
        return value

    def timestamp(self, obj: Any, path: str, key: str) -> str:
        value = self.string(obj, path, key)
        try:
            dt.datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{path}.{key}" if path else key, f"not an ISO 8601 time: {value!r}")
        return str(value)


def _rank_table(check: _Checker, raw: dict[str, Any], nprocs: int) -> list[dict[str, Any]]:
    """Check the per-rank list (one entry per rank, in rank order); return each rank's host and cache-drop outcome."""
    ranks = check.array(raw, "", "ranks")
    if len(ranks) != nprocs:
        check.fail("ranks", f"lists {len(ranks)} ranks, num_processes is {nprocs}")
    table = []
    for i, entry in enumerate(ranks):
        path = f"ranks[{i}]"
        if check.integer(entry, path, "rank") != i:
            check.fail(f"{path}.rank", f"expected {i} (ranks in rank order), got {entry['rank']}")
        drop = check.mapping(entry, path, "cache_drop")
        check.string(drop, f"{path}.cache_drop", "method")
        check.string(drop, f"{path}.cache_drop", "error", nullable=True)
        check.integer(entry, path, "model_bytes")
        check.integer(entry, path, "optimizer_bytes")
        table.append({"host": check.string(entry, path, "host"),
                      "cache_drop_ok": check.boolean(drop, f"{path}.cache_drop", "ok")})
    return table


def _checkpoint(check: _Checker, ckpt: Any, path: str, table: list[dict[str, Any]]) -> dict[str, Any]:
    """One checkpoint's metrics; every rank must appear exactly once. Whether the bytes are the planned ones is
    the finalize step's question (it knows the plan), not a format error."""
    phase = check.string(ckpt, path, "phase")
    if phase not in PHASES:
        check.fail(f"{path}.phase", f"expected write or read, got {phase!r}")
    index = check.integer(ckpt, path, "index")
    per_rank = check.array(ckpt, path, "ranks")
    seen: set[int] = set()
    total, slowest, slowest_rank = 0, -1.0, -1
    for j, entry in enumerate(per_rank):
        where = f"{path}.ranks[{j}]"
        rank = check.integer(entry, where, "rank")
        if rank >= len(table):
            check.fail(f"{where}.rank", f"rank {rank} does not exist (num_processes is {len(table)})")
        if rank in seen:
            check.fail(f"{where}.rank", f"rank {rank} is listed twice")
        seen.add(rank)
        check.string(entry, where, "host")
        nbytes = check.integer(entry, where, "bytes")
        start, end = check.number(entry, where, "start"), check.number(entry, where, "end")
        if end < start:
            check.fail(f"{where}.end", f"ends ({end}) before it starts ({start})")
        duration = check.number(entry, where, "duration")
        total += nbytes
        if duration > slowest:
            slowest, slowest_rank = duration, rank
    missing = sorted(set(range(len(table))) - seen)
    if missing:
        check.fail(f"{path}.ranks", f"no entry for rank(s) {', '.join(map(str, missing[:8]))}"
                                    f"{' ...' if len(missing) > 8 else ''}")
    if slowest <= 0:
        check.fail(f"{path}.ranks", "every rank reports a zero duration; no throughput can be computed")
    return {"phase": phase, "index": index, "bytes": total, "duration_s": slowest,
            "throughput_GBps": total / slowest / 1e9, "throughput_GiBps": total / slowest / 2**30,
            "slowest_rank": slowest_rank}


def _check_sequence(check: _Checker, checkpoints: list[dict[str, Any]], phase: str, expected: int) -> None:
    """Each phase must hold checkpoints 0..n-1 in order, n being the count the engine says it ran."""
    indices = [c["index"] for c in checkpoints if c["phase"] == phase]
    if indices != list(range(expected)):
        check.fail("checkpoints", f"{phase} checkpoints have indices {indices}, expected 0..{expected - 1} "
                                  f"(num_checkpoints_{phase} is {expected})")


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def _phase_summary(checkpoints: list[dict[str, Any]]) -> dict[str, Any]:
    if not checkpoints:
        return {"count": 0, "bytes_per_checkpoint": None, "bytes_total": 0, "duration_s": None,
                "throughput_GBps": None}
    sizes = [c["bytes"] for c in checkpoints]
    return {
        "count": len(checkpoints),
        "bytes_per_checkpoint": sizes[0] if len(set(sizes)) == 1 else sizes,
        "bytes_total": sum(sizes),
        "duration_s": _stats([c["duration_s"] for c in checkpoints]),
        # The mean of per-checkpoint throughputs (each checkpoint weighs the same), not total bytes / total time.
        "throughput_GBps": _stats([c["throughput_GBps"] for c in checkpoints]),
    }


def normalize(raw: Any, source: str) -> dict[str, Any]:
    """Validate the engine JSON strictly and turn it into per-checkpoint and per-phase metrics."""
    check = _Checker(source)
    if not isinstance(raw, dict):
        check.fail("", f"expected a JSON object, got {type(raw).__name__}")
    schema = check.string(raw, "", "schema")
    if schema != ENGINE_SCHEMA:
        check.fail("schema", f"is {schema!r}, expected {ENGINE_SCHEMA!r}")
    nprocs = check.integer(raw, "", "num_processes", minimum=1)
    scale = check.number(raw, "", "scale")
    if not 0 < scale <= 1:
        check.fail("scale", f"must be in (0, 1], got {scale}")
    writes = check.integer(raw, "", "num_checkpoints_write")
    reads = check.integer(raw, "", "num_checkpoints_read")
    header = {key: check.string(raw, "", key) for key in ("engine", "engine_version", "model", "checkpoint_dir")}
    header["seconds_between_checkpoints"] = check.number(raw, "", "seconds_between_checkpoints")
    header["chunk_bytes"] = check.integer(raw, "", "chunk_bytes", minimum=1)
    started, ended = check.timestamp(raw, "", "started"), check.timestamp(raw, "", "ended")
    fsync = check.boolean(raw, "", "fsync")
    table = _rank_table(check, raw, nprocs)
    checkpoints = [_checkpoint(check, c, f"checkpoints[{i}]", table)
                   for i, c in enumerate(check.array(raw, "", "checkpoints"))]
    _check_sequence(check, checkpoints, "write", writes)
    _check_sequence(check, checkpoints, "read", reads)
    return {
        "benchmark": "checkpointing",
        **header,
        "num_processes": nprocs,
        "scale": scale,
        "fsync": fsync,
        "checkpoints": checkpoints,
        "write": _phase_summary([c for c in checkpoints if c["phase"] == "write"]),
        "read": _phase_summary([c for c in checkpoints if c["phase"] == "read"]),
        "cache_drop_ok": all(r["cache_drop_ok"] for r in table),
        "hosts": sorted({r["host"] for r in table}),
        "started": started,
        "ended": ended,
    }


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and normalize the engine output at `path`; every failure is an EngineOutputError naming the file."""
    source = str(path)
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EngineOutputError(f"{source}: the engine wrote no output file") from exc
    except json.JSONDecodeError as exc:
        raise EngineOutputError(f"{source}: not valid JSON (truncated?): {exc.msg} at line {exc.lineno} "
                                f"column {exc.colno}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise EngineOutputError(f"{source}: unreadable: {exc}") from exc
    return normalize(raw, source)
