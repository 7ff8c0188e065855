"""What the builtin engine records about itself in every results file (`mlps_slurm.choices` and
`mlps_slurm.differences`): where it follows the reference's code over its documents (kvcache.md §7), and where it
deliberately differs from the reference."""

from __future__ import annotations

CHOICES: tuple[str, ...] = (
    "cache files are named <key>.npy (code), not uuid.npy (Spec)",
    "QoS users are 15 % interactive, 35 % responsive, 50 % batch (code), not 60/30/10 (Spec)",
    "generation mode realistic sleeps 30 ms per token (code), not 20 ms (Spec); fast 2 ms, none 0",
    "system prompts and their keys are the code's (sha256 of text[:500] + word count, 16 hex), not the Spec's md5;"
    " the prefix lookup always misses (no code writes kv_system_* entries) and trims 5-9 tokens from the context",
    "qwen3-32b has head_dim 128 and 262,144 bytes per token (code, config.yaml), not 80 (Spec); llama3.1-70b 320 KiB"
    " per token (code), not the Spec's 312 KB",
    "the storage tier's default limit is statvfs f_bavail x f_frsize x 0.95 at start (code), not shutil.disk_usage"
    " (Spec)",
    "multi-turn reload reads every other key registered for the conversation (newer benchmark.py"
    " get_all_previous_turn_keys, later turns already queued included), not only turn n-1 (older benchmark.py)",
    "a decode hit reads the whole entry 1 + max(1, ceil(gen / 32)) times and all of it is in the request's storage"
    " latency and decode_latencies (newer benchmark.py)",
    "PREFILL requests (context >= 10,000 tokens) do no decode reads but their generated tokens count in"
    " total_tokens (code)",
    "CPU-to-storage demotions write files but are in no storage byte, bandwidth or latency counter (code)",
    "offloads_cpu and offloads_storage also count direct allocations to that tier, not only demotions (cache.py)",
    "read_iops and write_iops are operation counts, not rates; every *_gb is GiB and every *_gbps GiB/s (code)",
    "bytes of a hit are counted before the read, and stay counted when the read fails (code)",
    "the statistics are taken after joining each thread for up to 2 s: I/O finished then is counted and divided by"
    " the window (code); mlps_slurm.measured has the bytes finished inside the window",
    "a request taken from the queue after the window is dropped (code)",
    "storage_health uses the latency profile (kv-cache.py's default, which CLOSED runs get)",
    "max-concurrent-allocs is 16 for option 2 (WORKLOAD_PARAMS), not 0 (README, Spec)",
)

DIFFERENCES: tuple[str, ...] = (
    "every user draws its requests from its own random.Random(f'{seed}:{user_id}') and conversation ids carry a"
    " per-user counter instead of the clock, so a seed gives the same requests whatever the thread timing; the"
    " prefix-cache draw is made with the request, not in the worker",
    "entries are streamed through one fixed buffer per worker (writes and reads), never held whole; the bytes on"
    " disk are the reference's; CPU-tier reads copy through that buffer instead of allocating a full copy",
    "the rank's cache files are removed at the end (the reference leaves them for the next run's start-up cleanup)",
    "without --storage-capacity-gb the storage limit is 95 % of the free space at start divided by"
    " --ranks-sharing-cache-fs",
    "no GPU tier: --gpu-mem-gb must be 0 (as in every CLOSED option)",
    "when a tier's usage is recounted (nothing left to evict) the reservations of writes and demotions still in"
    " progress stay counted (the reference resets usage to the committed entries, which lets concurrent"
    " allocations over-commit the CPU tier's memory); a demotion that does not happen gives its reservation back",
    "failed storage I/O is counted (mlps_slurm.io_errors) and fails the rank after the results are written; the"
    " reference logs and goes on",
    "the summary is written even when no request completed (the reference then omits it)",
)
