"""One rank's builtin KV-cache run: user threads, the request queue, the workers and the timed window
(reference: kvcache.md §2.2-§2.5, §2.4 the timing loop).

One thread per user issues requests open loop (it sleeps its think time, enqueues, never waits for completion);
min(users, 500) workers take them from a PriorityQueue ordered by (-QoS priority, arrival). Per request a worker:
1. checks the prefix cache (a system prompt drawn with the request: always a miss, as in the reference, whose code
   never writes kv_system_* entries; it trims the prompt's words from the context);
2. reloads every other turn key registered for the conversation (multi-turn);
3. writes the entry (prefill);
4. decodes (PREFILL_DECODE only): one read, and on a hit 1 + max(1, ceil(gen / 32)) more full reads, on a miss a
   write instead;
5. sleeps gen x GENERATION_TIMING[mode].
The window is wall clock: wait `duration`, stop, join each thread for up to 2 s in turn (I/O still running is not
cancelled), then take the statistics over the measured window: I/O completed during the joins is counted, as in
the reference. Afterwards mlps-slurm stops the workers between I/O operations and waits for them all, so the
rank's cache files can be removed.
"""

from __future__ import annotations

import itertools
import os
import queue
import resource
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlps_slurm.benchmarks.kvcache import catalog as cat
from mlps_slurm.benchmarks.kvcache.stats import Metrics
from mlps_slurm.benchmarks.kvcache.summary import reference_results
from mlps_slurm.benchmarks.kvcache.tiers import STORAGE, TieredCache
from mlps_slurm.benchmarks.kvcache.workload import (DECODE, PREFILL, PREFILL_DECODE, Conversations, Request,
                                                    UserStream, make_users, system_prompt_key)
from mlps_slurm.steps.procio import read_proc_io


@dataclass(frozen=True)
class RunSettings:
    model: str
    num_users: int
    duration_s: float
    cpu_mem_gb: float
    max_concurrent_allocs: int
    generation_mode: str
    seed: int
    join_timeout_s: float = cat.JOIN_TIMEOUT_S  # per thread after the window (tests wait for the whole drain)


@dataclass
class RunOutcome:
    results: dict[str, Any]  # the reference's keys
    window_s: float
    measured: dict[str, Any]
    io: dict[str, int]
    first_io_error: str | None
    busy_at_snapshot: int
    setup_cpu_seconds: float  # the process's CPU time before the run (start-up, the noise buffer)
    conversations: int = 0


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class BuiltinRun:
    def __init__(self, settings: RunSettings, cache: TieredCache, metrics: Metrics) -> None:
        self.s = settings
        self.cache = cache
        self.metrics = metrics
        self.model = cache.model
        self.sleep_per_token = cat.GENERATION_TIMING[settings.generation_mode]
        self.queue: queue.PriorityQueue[tuple[tuple[int, float, int], Request]] = queue.PriorityQueue()
        self._arrivals = itertools.count()  # ties in (priority, time) keep FIFO order
        self.stop = threading.Event()
        self.abort = threading.Event()  # after the statistics: finish no further I/O
        self.conversations = Conversations()
        self._local = threading.local()
        self._busy = 0
        self._busy_lock = threading.Lock()
        self.failure: tuple[str, str] | None = None  # (thread, traceback) of the first thread that raised

    def _guarded(self, target: Any, *args: Any) -> None:
        """Run a thread's loop; an exception ends the run (the rank fails with it) instead of one thread."""
        try:
            target(*args)
        except BaseException:
            with self._busy_lock:
                if self.failure is None:
                    self.failure = (threading.current_thread().name, traceback.format_exc())
            self.stop.set()
            self.abort.set()

    def buffer(self) -> np.ndarray:
        """This worker's fixed I/O buffer (created on first use)."""
        buf = getattr(self._local, "buffer", None)
        if buf is None:
            buf = self._local.buffer = np.empty(cat.IO_CHUNK_BYTES, dtype=np.uint8)
        return buf

    # --- threads
    def _user(self, stream: UserStream) -> None:
        while not self.stop.is_set():
            request = stream.next()
            if self.stop.wait(request.delay_s):
                break
            request.submit_time = time.perf_counter()
            self.queue.put(((-request.priority, time.time(), next(self._arrivals)), request))

    def _worker(self) -> None:
        while not self.stop.is_set():
            try:
                _, request = self.queue.get(timeout=cat.QUEUE_GET_TIMEOUT_S)
            except queue.Empty:
                continue
            if self.stop.is_set():  # dequeued after the window: dropped, as in the reference
                break
            with self._busy_lock:
                self._busy += 1
            try:
                self._process(request)
            finally:
                with self._busy_lock:
                    self._busy -= 1

    def _process(self, req: Request) -> None:
        c, m, buf = self.cache, self.metrics, self.buffer()
        storage = 0.0
        cache_type = "user"
        phase_is_decode = req.phase == DECODE
        m.prefix_checked(req.prefix.tokens if req.prefix else None)
        if req.prefix is not None:
            cache_type = "system"
            _, lat = c.access(system_prompt_key(req.prefix), phase_is_decode, cache_type, buf)
            storage += lat
        tokens = req.stored_tokens
        for key in self.conversations.other_turn_keys(req.conversation_id, req.key) if req.turn > 1 else ():
            if self.abort.is_set():
                return
            where, lat = c.access(key, True, "multi_turn", buf)
            if where is not None:
                storage += lat
            m.multi_turn(where is not None)
        if req.phase in (PREFILL, PREFILL_DECODE) and not self.abort.is_set():
            _, _, lat = c.allocate(req.key, tokens, True, buf)
            storage += lat
            m.phase_latency("prefill", lat)
        if req.phase in (DECODE, PREFILL_DECODE) and not self.abort.is_set():
            where, lat = c.access(req.key, True, cache_type, buf)
            storage += lat
            decode = lat
            if where is None:
                _, _, lat = c.allocate(req.key, tokens, True, buf)
                storage += lat
            else:
                for _ in range(max(1, -(-req.generate_tokens // cat.DECODE_BATCH_SIZE))):
                    if self.abort.is_set():
                        return
                    _, lat = c.access(req.key, True, cache_type, buf)
                    storage += lat
                    decode += lat
            m.phase_latency("decode", decode)
        generation = req.generate_tokens * self.sleep_per_token
        if generation > 0:
            self.abort.wait(generation)
        if self.abort.is_set():
            return
        m.request_done(req.qos, req.generate_tokens, storage, generation, time.perf_counter() - req.submit_time)

    # --- the run
    def run(self) -> RunOutcome:
        users = make_users(self.s.num_users, self.s.seed)
        streams = [UserStream(u, self.s.seed, self.conversations) for u in users]
        io_before, cpu_before = read_proc_io(), _cpu_seconds()
        workers = [threading.Thread(target=self._guarded, args=(self._worker,), name=f"kv-worker-{i}", daemon=True)
                   for i in range(min(self.s.num_users, cat.MAX_WORKERS))]
        user_threads = [threading.Thread(target=self._guarded, args=(self._user, s), name=f"kv-{s.user.user_id}",
                                         daemon=True) for s in streams]
        try:
            for t in workers + user_threads:
                t.start()
            start = time.time()
            self.stop.wait(timeout=self.s.duration_s)
            window = time.time() - start
            self.metrics.window_end = time.perf_counter()
            self.stop.set()
            for t in workers:  # the reference's join(timeout=2.0), thread by thread
                t.join(timeout=self.s.join_timeout_s)
            with self._busy_lock:
                busy = self._busy
            snap = self.metrics.snapshot()
            entries, used = self.cache.counts()
            results = reference_results(snap, window, self.s.seed, entries, used)
        finally:
            self.stop.set()
            self.abort.set()
            for t in workers + user_threads:
                t.join()
        if self.failure is not None:
            name, trace = self.failure
            raise RuntimeError(f"thread {name} failed, which ended the run:\n{trace}")
        io_after = read_proc_io()
        cpu = _cpu_seconds() - cpu_before
        final = self.metrics.snapshot()
        # Every thread has finished: what the storage tier holds now is exactly what is left on the cache
        # filesystem (one file per entry), which a reader of the results can check against the disk.
        entries_now, used_now = self.cache.counts()
        measured = {
            "storage_entries_at_end": entries_now[STORAGE],
            "storage_bytes_at_end": used_now[STORAGE],
            "storage_read_bytes_in_window": final.io["storage_read_bytes_in_window"],
            "storage_write_bytes_in_window": final.io["storage_write_bytes_in_window"],  # demotions included
            "demotion_write_bytes_in_window": final.io["demotion_write_bytes_in_window"],
            "read_bandwidth_gibps": final.io["storage_read_bytes_in_window"] / cat.GIB / window if window else 0,
            "write_bandwidth_gibps": final.io["storage_write_bytes_in_window"] / cat.GIB / window if window else 0,
            "proc_io": {k: io_after.get(k, 0) - io_before.get(k, 0) for k in ("read_bytes", "write_bytes")},
            "cpu_seconds": round(cpu, 3),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }
        return RunOutcome(results, window, measured, dict(final.io), final.first_io_error, busy,
                          round(cpu_before, 3), len(self.conversations))
