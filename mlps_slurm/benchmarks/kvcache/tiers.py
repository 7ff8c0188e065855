"""The builtin engine's tiers: CPU memory and storage, with the reference's waterfall LRU (kvcache.md §3.1-§3.4).

There is no GPU tier (the CLOSED options all give --gpu-mem-gb 0, which the reference skips too). New data tries
the CPU tier first, then storage. `_ensure_space` is the reference's _ensure_space_in_tier: a non-terminal tier
fills to 80 % of its limit, refuses an entry above 95 % of it, refuses on the first pass when it holds under 20 %
of its limit and the entry is above half the target, and takes anything while under 5 % usage; it evicts from one
LRU snapshot (sorted by last access, then access count; re-taken once), demoting CPU entries to storage (after
making room there, recursively) and, on storage, the terminal tier, deleting the LRU files (target 100 % of the
limit). When every tier refuses, the entry goes to storage anyway. No promotion: a read never moves data up.
Counters are the reference's (stats.Metrics): bytes counted before the I/O, demotion I/O in no latency or byte
counter. `max_concurrent_allocs` bounds concurrent allocations only (data generation, space, write), not reads.

One deliberate difference: the reference, when a tier has nothing left to evict, resets its usage to the committed
entries and so forgets the reservations of writes still in progress, which lets concurrent allocations over-commit
the CPU tier's memory (with that rule this engine peaked at 6.9 GiB RSS in option 2, whose CPU tier is 4 GiB);
here a reservation stays counted until its entry is committed or it is given back.

CPU entries are numpy byte arrays (the entry's data); a CPU write copies the generated data into its array and a
CPU read copies it out through the worker's buffer, and each is timed as that copy (the reference times np.copy of
the whole entry; streaming keeps memory at one buffer per worker).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from mlps_slurm.benchmarks.kvcache import catalog as cat
from mlps_slurm.benchmarks.kvcache.npy_io import EntryData, Generated, InMemory, NoiseBuffer, NpyStore, Timing, \
    npy_header
from mlps_slurm.benchmarks.kvcache.stats import Metrics

CPU, STORAGE = "cpu", "storage"
TIER_ORDER = (CPU, STORAGE)


@dataclass
class Entry:
    location: str
    size: int  # data bytes (the reference's entry size; the file adds its header)
    shape: tuple[int, ...]
    last_access: float
    access_count: int = 1


class TieredCache:
    def __init__(self, model: cat.KvModel, cpu_bytes: float, storage_bytes: float, store: NpyStore,
                 noise: NoiseBuffer, metrics: Metrics, max_concurrent_allocs: int = 0,
                 eviction: cat.EvictionParams = cat.EVICTION) -> None:
        self.model = model
        self.limits = {CPU: float(cpu_bytes), STORAGE: float(storage_bytes)}
        self.used = {CPU: 0, STORAGE: 0}  # accounted bytes: entries + reservations not yet committed
        self.pending = {CPU: 0, STORAGE: 0}  # the reservations (writes and demotions in progress)
        self.store = store
        self.noise = noise
        self.metrics = metrics
        self.eviction = eviction
        self.entries: dict[str, Entry] = {}
        self.cpu_data: dict[str, np.ndarray] = {}
        self._entry_locks: dict[str, threading.Lock] = {}
        self.metadata_lock = threading.Lock()
        self.memory_lock = threading.Lock()
        self._allocs = threading.Semaphore(max_concurrent_allocs) if max_concurrent_allocs > 0 else None

    # --- bookkeeping
    def _entry_lock(self, key: str) -> threading.Lock:
        with self.metadata_lock:
            return self._entry_locks.setdefault(key, threading.Lock())

    def _add_usage(self, tier: str, delta: int) -> None:
        self.used[tier] = max(0, self.used[tier] + delta)

    def _reserve(self, tier: str, size: int) -> None:
        """Account `size` bytes for an entry about to be written (or demoted) there; memory_lock held."""
        self._add_usage(tier, size)
        self.pending[tier] += size

    def _settle(self, tier: str, size: int, kept: bool) -> None:
        """The reservation's entry was committed (kept) or not (the bytes are given back)."""
        with self.memory_lock:
            self.pending[tier] -= size
            if not kept:
                self._add_usage(tier, -size)

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(entries per tier, accounted bytes per tier) now."""
        with self.metadata_lock:
            entries = {t: sum(1 for e in self.entries.values() if e.location == t) for t in TIER_ORDER}
        with self.memory_lock:
            return entries, dict(self.used)

    def _lru(self, tier: str) -> list[tuple[str, int]]:
        with self.metadata_lock:
            found = [(e.last_access, e.access_count, k, e.size) for k, e in self.entries.items() if e.location == tier]
        found.sort(key=lambda x: (x[0], x[1]))
        return [(k, size) for _, _, k, size in found]

    # --- space
    def _ensure_space(self, tier: str, size: int, depth: int = 0) -> bool:
        ev = self.eviction
        limit = self.limits[tier]
        if tier == STORAGE and math.isinf(limit):
            with self.memory_lock:
                self._reserve(tier, size)
            return True
        if depth > ev.max_recursion_depth:
            return False
        nxt = TIER_ORDER[TIER_ORDER.index(tier) + 1] if tier != TIER_ORDER[-1] else None
        terminal = nxt is None
        target = limit * ev.target_usage_ratio
        if not terminal and size > limit * ev.large_entry_limit_ratio:
            return False
        effective = limit if terminal else target
        lru = self._lru(tier)
        index, evictions = 0, 0
        budget = min(ev.max_evictions_cap, max(ev.max_evictions_min, len(lru) + 100))
        while evictions < budget:
            with self.memory_lock:
                usage = self.used[tier]
                if usage + size <= effective or usage < limit * ev.near_empty_ratio:
                    self._reserve(tier, size)
                    return True
            if index >= len(lru):
                lru, index = self._lru(tier), 0
                if not lru:
                    with self.metadata_lock:
                        actual = sum(e.size for e in self.entries.values() if e.location == tier)
                    with self.memory_lock:
                        # nothing left to evict: correct any drift; unlike the reference, the reservations of
                        # writes still in progress stay counted, so memory cannot be over-committed
                        self.used[tier] = actual + self.pending[tier]
                        if self.used[tier] + size <= effective or terminal:
                            self._reserve(tier, size)
                            return True
                    return False
            if index == 0 and not terminal:
                if sum(s for _, s in lru) < limit * ev.sparse_tier_ratio and size > target * ev.sparse_entry_ratio:
                    return False
            key, lru_size = lru[index]
            index += 1
            if terminal:
                self._delete_lru(key, tier)
            else:
                if not self._ensure_space(nxt, lru_size, depth + 1):
                    return False
                moved = self._demote(key, tier, nxt)  # an entry gone meanwhile is skipped
                self._settle(nxt, lru_size, moved)
            evictions += 1
        if terminal:
            with self.memory_lock:
                self._reserve(tier, size)
            return True
        return False

    def _delete_lru(self, key: str, tier: str) -> None:
        with self._entry_lock(key):
            with self.metadata_lock:
                entry = self.entries.get(key)
                if entry is None or entry.location != tier:
                    return  # another thread evicted it
                del self.entries[key]
                self._entry_locks.pop(key, None)
            try:
                self.store.delete(key)
                self.metrics.file_deleted()
            except OSError as exc:
                self.metrics.io_error(f"deleting {key}", exc)
            with self.memory_lock:
                self._add_usage(tier, -entry.size)
        self.metrics.evicted(None, entry.size)

    def _demote(self, key: str, src: str, dst: str) -> bool:
        """CPU -> storage: write the in-memory entry to its file, free the memory; not counted as a storage write.
        Returns whether the entry moved (False when it was gone or moved meanwhile, or the write failed)."""
        with self._entry_lock(key):
            with self.metadata_lock:
                entry = self.entries.get(key)
                if entry is None or entry.location != src:
                    return False
            data = self.cpu_data[key]
            try:
                self.store.write(key, npy_header(entry.shape, self.model.numpy_dtype), InMemory(data), data,
                                 self.metrics.progress("write", demotion=True))
            except OSError as exc:
                self.metrics.io_error(f"demoting {key} to storage", exc)
                self.store.delete(key)
                return False
            self.metrics.file_io("write", self._file_bytes(entry), demotion=True)
            with self.metadata_lock:
                entry.location = dst
                del self.cpu_data[key]
            with self.memory_lock:
                self._add_usage(src, -entry.size)
        self.metrics.evicted(dst, entry.size)
        return True

    def _file_bytes(self, entry: Entry) -> int:
        return len(npy_header(entry.shape, self.model.numpy_dtype)) + entry.size

    # --- the two operations the workers call
    def allocate(self, key: str, tokens: int, prefill: bool, buffer: np.ndarray) -> tuple[bool, str, float]:
        """Write a new entry of `tokens` tokens to the fastest tier with room; (ok, tier, seconds)."""
        with self.metadata_lock:
            if key in self.entries:
                return True, self.entries[key].location, 0.0
        if self._allocs:
            self._allocs.acquire()
        try:
            return self._allocate(key, tokens, prefill, buffer)
        finally:
            if self._allocs:
                self._allocs.release()

    def _allocate(self, key: str, tokens: int, prefill: bool, buffer: np.ndarray) -> tuple[bool, str, float]:
        shape = self.model.entry_shape(tokens)
        data = EntryData(self.noise, key, self.model.entry_elements(tokens))
        size = data.nbytes
        self.metrics.write_attempt(size, prefill)
        tier = next((t for t in TIER_ORDER if self._ensure_space(t, size)), None)
        if tier is None:  # every tier refused: the reference forces the write to storage
            tier = STORAGE
            with self.memory_lock:
                self._reserve(STORAGE, size)
        try:
            if tier == CPU:
                array, timing = self._cpu_write(data, buffer)
            else:
                header = npy_header(shape, self.model.numpy_dtype)
                timing = self.store.write(key, header, Generated(data), buffer, self.metrics.progress("write"))
                self.metrics.file_io("write", len(header) + size)
        except (OSError, MemoryError) as exc:
            self._settle(tier, size, kept=False)
            self.metrics.io_error(f"writing {key} to {tier}", exc)
            if tier == STORAGE:
                self.store.delete(key)
            return False, "none", 0.0
        with self.metadata_lock:
            self.entries[key] = Entry(tier, size, shape, time.time())
            if tier == CPU:
                self.cpu_data[key] = array
        self._settle(tier, size, kept=True)
        self.metrics.write_done(tier, size, tokens, timing)
        return True, tier, timing.total

    @staticmethod
    def _cpu_write(data: EntryData, buffer: np.ndarray) -> tuple[np.ndarray, Timing]:
        array = np.empty(data.nbytes, dtype=np.uint8)
        spent, offset = 0.0, 0
        while offset < data.nbytes:
            n = data.fill(buffer, offset)
            t = time.perf_counter()
            array[offset:offset + n] = buffer[:n]
            spent += time.perf_counter() - t
            offset += n
        return array, Timing(spent, spent, spent)

    def access(self, key: str, decode: bool, cache_type: str, buffer: np.ndarray) -> tuple[str | None, float]:
        """Read a whole entry; (tier or None on a miss, seconds)."""
        with self.metadata_lock:
            if key not in self.entries:
                self.metrics.miss()
                return None, 0.0
        with self._entry_lock(key):
            with self.metadata_lock:
                entry = self.entries.get(key)
                if entry is None:
                    self.metrics.miss()
                    return None, 0.0
                entry.last_access = time.time()
                entry.access_count += 1
                location, size = entry.location, entry.size
                array = self.cpu_data.get(key) if location == CPU else None
            self.metrics.hit(location, size, decode, cache_type)
            try:
                if location == CPU:
                    assert array is not None
                    timing = _cpu_read(array, buffer)
                else:
                    file_bytes, timing = self.store.read(key, size, buffer, self.metrics.progress("read"))
                    self.metrics.file_io("read", file_bytes)
            except (OSError, KeyError, ValueError) as exc:
                self.metrics.io_error(f"reading {key} from {location}", exc)
                return location, 0.0  # the reference returns no latency; the bytes stay counted
            self.metrics.read_done(location, size, timing)
            return location, timing.total


def _cpu_read(array: np.ndarray, buffer: np.ndarray) -> Timing:
    start = time.perf_counter()
    step = len(buffer)
    for offset in range(0, len(array), step):
        piece = array[offset:offset + step]
        buffer[:len(piece)] = piece
    spent = time.perf_counter() - start
    return Timing(spent, spent, spent)
