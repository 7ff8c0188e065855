"""The builtin engine's metrics and its results file (reference: kvcache.md §4.1-§4.5).

`Metrics` holds the reference's counters and latency lists (one lock), the request results, the QoS and prefix
tallies, and mlps-slurm's own measurement: the bytes of every storage file written or read and when the I/O
completed, so the bytes finished inside the timed window are known apart from those of the drain. `results()`
builds the reference's results dict: its top-level keys, `summary` with `cache_stats` (every "gb" is GiB, every
"gbps" GiB/s over the measured window; read/write "iops" are operation counts), percentiles with numpy.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from mlps_slurm.benchmarks.kvcache import catalog as cat

PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9), ("p9999", 99.99))
TIERS = ("gpu", "cpu", "storage")
LATENCY_LISTS = [f"{t}_{op}_latencies" for t in TIERS for op in ("read", "write")] + \
    [f"storage_{op}_{part}_latencies" for op in ("read", "write") for part in ("device", "host")]
COUNTERS = ["cache_hits", "cache_misses", "evictions", "offloads_cpu", "offloads_storage", "prefill_writes",
            "decode_reads", "system_prompt_hits", "common_phrase_hits", "user_cache_hits", "multi_turn_hits",
            "total_read_bytes", "total_write_bytes", "read_operations", "write_operations", "storage_tokens_processed"]
COUNTERS += [f"tier_{t}_kv_bytes_{d}" for t in TIERS for d in ("written", "read")]
HIT_COUNTER = {"system": "system_prompt_hits", "common": "common_phrase_hits", "multi_turn": "multi_turn_hits"}


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def latency_summary(seconds: Sequence[float], extra: Iterable[tuple[str, float]] = PERCENTILES) -> dict[str, float]:
    """{mean, p50 ... p9999} in ms, as the reference's summary (zeros when there is no sample)."""
    if not len(seconds):
        return {"mean": 0.0, **{name: 0.0 for name, _ in extra}}
    arr = np.asarray(seconds, dtype=float)
    return {"mean": float(arr.mean() * 1000), **{name: float(np.percentile(arr, q) * 1000) for name, q in extra}}


class Metrics:
    """Every counter of one rank's run; all methods are thread-safe."""

    def __init__(self, bytes_per_token: int) -> None:
        self.lock = threading.Lock()
        self.bytes_per_token = bytes_per_token
        self.c: dict[str, float] = {k: 0 for k in COUNTERS}
        self.lat: dict[str, list[float]] = {k: [] for k in LATENCY_LISTS}
        self.results: dict[str, Any] = {
            "requests_completed": 0, "total_tokens_generated": 0, "total_storage_io_latency": 0.0,
            "total_generation_latency": 0.0, "end_to_end_latencies": [], "storage_latencies": [],
            "generation_latencies": [], "prefill_latencies": [], "decode_latencies": [],
            "multi_turn_cache_hits": 0, "multi_turn_cache_misses": 0}
        self.qos: dict[str, list[float]] = {level: [] for level in cat.QOS_LEVELS}  # end-to-end ms
        self.qos_violations: dict[str, int] = {level: 0 for level in cat.QOS_LEVELS}
        self.prefix = {"prefix_hits": 0, "prefix_misses": 0, "system_prompt_reuse": 0, "common_phrase_reuse": 0,
                       "bytes_saved": 0}
        # mlps-slurm's own: storage files, by when their I/O completed relative to the window's end
        self.window_end = math.inf  # perf_counter at the end of the timed window
        self.io: dict[str, int] = {k: 0 for k in (
            "files_written", "file_bytes_written", "files_read", "file_bytes_read", "demotion_files_written",
            "demotion_file_bytes_written", "files_deleted", "storage_read_bytes_in_window",
            "storage_write_bytes_in_window", "demotion_write_bytes_in_window", "io_errors")}
        self.first_io_error: str | None = None

    # --- the reference's cache counters (cache.py)
    def write_attempt(self, size: int, prefill: bool) -> None:
        with self.lock:
            self.c["prefill_writes"] += prefill
            self.c["write_operations"] += 1
            self.c["total_write_bytes"] += size

    def write_done(self, tier: str, size: int, tokens: int, timing: Any) -> None:
        with self.lock:
            self.c[f"tier_{tier}_kv_bytes_written"] += size
            self.c["offloads_cpu" if tier == "cpu" else "offloads_storage"] += 1
            self.lat[f"{tier}_write_latencies"].append(timing.total)
            if tier == "storage":
                self.lat["storage_write_device_latencies"].append(timing.device)
                self.lat["storage_write_host_latencies"].append(timing.host)
                self.c["storage_tokens_processed"] += tokens

    def miss(self) -> None:
        with self.lock:
            self.c["cache_misses"] += 1

    def hit(self, tier: str, size: int, decode: bool, cache_type: str) -> None:
        """A hit is counted, with its bytes, before the read (as the reference does)."""
        with self.lock:
            self.c["cache_hits"] += 1
            self.c[HIT_COUNTER.get(cache_type, "user_cache_hits")] += 1
            self.c[f"tier_{tier}_kv_bytes_read"] += size
            self.c["decode_reads"] += decode
            self.c["read_operations"] += 1
            self.c["total_read_bytes"] += size

    def read_done(self, tier: str, size: int, timing: Any) -> None:
        with self.lock:
            self.lat[f"{tier}_read_latencies"].append(timing.total)
            if tier == "storage":
                self.lat["storage_read_device_latencies"].append(timing.device)
                self.lat["storage_read_host_latencies"].append(timing.host)
                self.c["storage_tokens_processed"] += size / self.bytes_per_token

    def evicted(self, demoted_to: str | None, size: int) -> None:
        with self.lock:
            self.c["evictions"] += 1
            if demoted_to == "cpu":
                self.c["offloads_cpu"] += 1
            elif demoted_to == "storage":
                self.c["offloads_storage"] += 1
                self.c["storage_tokens_processed"] += size // self.bytes_per_token

    # --- files (mlps-slurm's measurement)
    def file_io(self, kind: str, file_bytes: int, demotion: bool = False) -> None:
        """A storage file written ("write") or read ("read") completely, now."""
        with self.lock:
            if kind == "write":
                self.io["files_written"] += 1
                self.io["file_bytes_written"] += file_bytes
                if demotion:
                    self.io["demotion_files_written"] += 1
                    self.io["demotion_file_bytes_written"] += file_bytes
            else:
                self.io["files_read"] += 1
                self.io["file_bytes_read"] += file_bytes

    def progress(self, kind: str, demotion: bool = False) -> Callable[[int], None]:
        """A callback for one file's reads or writes: the bytes each read()/write() moved, counted when it returns
        inside the timed window (a multi-GiB entry still in flight at the end counts for what it moved; demotions
        too: mlps-slurm measures what the storage did)."""
        def moved(nbytes: int) -> None:
            if time.perf_counter() <= self.window_end:
                with self.lock:
                    self.io[f"storage_{kind}_bytes_in_window"] += nbytes
                    if demotion:
                        self.io["demotion_write_bytes_in_window"] += nbytes
        return moved

    def file_deleted(self) -> None:
        with self.lock:
            self.io["files_deleted"] += 1

    def io_error(self, what: str, exc: BaseException) -> None:
        with self.lock:
            self.io["io_errors"] += 1
            if self.first_io_error is None:
                self.first_io_error = f"{what}: {type(exc).__name__}: {exc}"

    # --- requests (benchmark.py)
    def multi_turn(self, hit: bool) -> None:
        with self.lock:
            self.results["multi_turn_cache_hits" if hit else "multi_turn_cache_misses"] += 1

    def prefix_checked(self, prompt_tokens: int | None) -> None:
        with self.lock:
            if prompt_tokens is None:
                self.prefix["prefix_misses"] += 1
            else:
                self.prefix["prefix_hits"] += 1
                self.prefix["system_prompt_reuse"] += 1
                self.prefix["bytes_saved"] += prompt_tokens * self.bytes_per_token

    def phase_latency(self, which: str, seconds: float) -> None:
        with self.lock:
            self.results[f"{which}_latencies"].append(seconds)

    def request_done(self, qos: str, gen_tokens: int, storage_s: float, generation_s: float, e2e_s: float) -> None:
        with self.lock:
            r = self.results
            r["requests_completed"] += 1
            r["total_tokens_generated"] += gen_tokens
            r["total_storage_io_latency"] += storage_s
            r["total_generation_latency"] += generation_s
            r["end_to_end_latencies"].append(e2e_s)
            r["storage_latencies"].append(storage_s)
            r["generation_latencies"].append(generation_s)
            self.qos[qos].append(e2e_s * 1000)
            self.qos_violations[qos] += e2e_s * 1000 > cat.QOS_LEVELS[qos].target_p95_ms

    # --- the results file
    def snapshot(self) -> "Metrics":
        """A consistent copy (the lists copied), taken when the reference computes its statistics."""
        with self.lock:
            copy = Metrics.__new__(Metrics)
            copy.__dict__.update({k: v for k, v in self.__dict__.items() if k != "lock"})
            copy.lock = threading.Lock()
            copy.c, copy.io, copy.prefix = dict(self.c), dict(self.io), dict(self.prefix)
            copy.lat = {k: list(v) for k, v in self.lat.items()}
            copy.results = {k: list(v) if isinstance(v, list) else v for k, v in self.results.items()}
            copy.qos = {k: list(v) for k, v in self.qos.items()}
            copy.qos_violations = dict(self.qos_violations)
            return copy
