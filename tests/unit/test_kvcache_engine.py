"""The builtin KV-cache engine (mlps_slurm/benchmarks/kvcache/): the model catalog against the reference table, the
entry bytes against the reference's algorithm, the .npy files, the waterfall LRU, the percentiles, the deterministic
request sequence, a short real run of job.py, its error record, and the official engine's command line (the
reference kv-cache.py cannot be installed here: a fake one records the argv it gets)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlps_slurm.benchmarks.kvcache import catalog as cat
from mlps_slurm.benchmarks.kvcache import job, results as kv_results, rules as kv_rules
from mlps_slurm.benchmarks.kvcache.npy_io import EntryData, Generated, NoiseBuffer, NpyStore, npy_header
from mlps_slurm.benchmarks.kvcache.stats import Metrics, latency_summary
from mlps_slurm.benchmarks.kvcache.summary import cache_stats
from mlps_slurm.benchmarks.kvcache.tiers import CPU, STORAGE, TieredCache
from mlps_slurm.benchmarks.kvcache.workload import make_users, request_sequence

ROOT = Path(__file__).resolve().parents[2]

# kvcache.md §1: bytes per token of every model of the reference's table.
REFERENCE_BYTES_PER_TOKEN = {
    "tiny-1b": 24_576, "mistral-7b": 131_072, "llama2-7b": 524_288, "llama3.1-8b": 131_072,
    "llama3.1-70b-instruct": 327_680, "deepseek-v3": 70_272, "qwen3-32b": 262_144, "gpt-oss-120b": 73_728,
    "gpt-oss-20b": 49_152}


def test_bytes_per_token_of_every_model_match_the_reference_table():
    assert {k: m.bytes_per_token for k, m in cat.MODELS.items()} == REFERENCE_BYTES_PER_TOKEN
    assert cat.MODELS["llama3.1-8b"].entry_shape(10) == (32, 2, 10, 8, 128)
    assert cat.MODELS["deepseek-v3"].entry_shape(10) == (61, 10, 576)
    for m in cat.MODELS.values():
        assert m.entry_elements(7) * m.bytes_per_element == 7 * m.bytes_per_token


def test_closed_options_and_locks_agree_with_the_rules():
    assert {n: o.as_dict() for n, o in cat.OPTIONS.items()} == \
        {n: {k: getattr(o, k) for k in cat.OPTIONS[n].as_dict()} for n, o in kv_rules.CLOSED_OPTIONS.items()}
    assert (cat.CLOSED_SEED, cat.CLOSED_TRIALS, cat.INTER_OPTION_DELAY_S) == \
        (kv_rules.CLOSED_SEED, kv_rules.CLOSED_TRIALS, kv_rules.CLOSED_INTER_OPTION_DELAY_S)


# --- entry data --------------------------------------------------------------------------------------------------


def reference_entry(buffer: np.ndarray, global_seed: int, key: str, n: int) -> np.ndarray:
    """kvcache.md §1 "How entry data is generated", literally (whole entry in memory)."""
    seed = (int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") ^ global_seed) & (2**64 - 1)
    b = len(buffer)
    if n <= b:
        start = seed % (b - n) if b - n > 0 else 0
        data = buffer[start:start + n].copy()
    else:
        data, rng, pos = np.empty(n, dtype=buffer.dtype), np.random.default_rng(seed), 0
        while pos < n:
            size, off = min(b, n - pos), int(rng.integers(0, b))
            first = min(size, b - off)
            data[pos:pos + first] = buffer[off:off + first]
            data[pos + first:pos + size] = buffer[:size - first]
            pos += size
    stamp = np.random.default_rng(seed).integers(0, 0xFF, size=4096, dtype=np.uint8, endpoint=True)
    raw = data.view(np.uint8)
    full = len(raw) // 4096 * 4096
    if full:
        blocks = raw[:full].reshape(-1, 4096)
        blocks ^= stamp
        blocks[:, :8] ^= np.arange(blocks.shape[0], dtype=np.uint64).view(np.uint8).reshape(-1, 8)
    raw[full:] ^= stamp[:len(raw) - full]
    return raw


@pytest.fixture(scope="module")
def noise() -> NoiseBuffer:
    return NoiseBuffer(7, elements=1 << 16, slice_elements=5000)  # slices: the same values as one draw


def test_entry_bytes_are_the_reference_generators(noise: NoiseBuffer):
    whole = np.random.default_rng(7).uniform(-1.0, 1.0, size=1 << 16).astype(np.float16)
    assert np.array_equal(noise.values, whole)
    buffer = np.empty(8192, dtype=np.uint8)
    for key, n in (("small", 1000), ("exact", 1 << 16), ("large_wraps", 3 * (1 << 16) + 1234), ("odd", 2049)):
        assert np.array_equal(EntryData(noise, key, n).array(buffer), reference_entry(whole, 7, key, n)), key


def test_npy_files_load_with_numpy_in_the_reference_shape(tmp_path: Path, noise: NoiseBuffer):
    model = cat.MODELS["tiny-1b"]
    store, buffer = NpyStore(tmp_path), np.empty(8192, dtype=np.uint8)
    shape = model.entry_shape(3)
    data = EntryData(noise, "conv_user_0000_000000_turn_1", model.entry_elements(3))
    timing = store.write("conv_user_0000_000000_turn_1", npy_header(shape, "float16"), Generated(data), buffer)
    assert timing.total == pytest.approx(timing.host + timing.device) and timing.device >= 0
    loaded = np.load(tmp_path / "conv_user_0000_000000_turn_1.npy", allow_pickle=False)
    assert loaded.shape == shape and loaded.dtype == np.float16 and loaded.flags.c_contiguous
    assert loaded.tobytes() == data.array(buffer).tobytes()
    file_bytes, _ = store.read("conv_user_0000_000000_turn_1", data.nbytes, buffer)
    assert file_bytes == (tmp_path / "conv_user_0000_000000_turn_1.npy").stat().st_size
    with pytest.raises(ValueError, match="does not describe"):
        store.read("conv_user_0000_000000_turn_1", data.nbytes + 2, buffer)
    with pytest.raises(KeyError):
        store.read("missing", 10, buffer)


# --- tiers ---------------------------------------------------------------------------------------------------------

SMALL = cat.KvModel("test", 1, 8, 1, 1, kv_dim_per_head=8)  # 32 bytes per token


def files_on_disk(directory: Path) -> dict[str, int]:
    """key -> data bytes of every .npy (file size less its header)."""
    out = {}
    for p in directory.glob("*.npy"):
        with open(p, "rb") as fh:
            np.lib.format.read_magic(fh)
            np.lib.format.read_array_header_1_0(fh)
            out[p.stem] = p.stat().st_size - fh.tell()
    return out


def test_waterfall_lru_demotes_cpu_to_storage_and_deletes_storage_lru_files(tmp_path: Path, noise: NoiseBuffer):
    metrics = Metrics(SMALL.bytes_per_token)
    entry = 1024 * SMALL.bytes_per_token  # 32 KiB
    cache = TieredCache(SMALL, cpu_bytes=4 * entry, storage_bytes=5 * entry, store=NpyStore(tmp_path), noise=noise,
                        metrics=metrics)
    buffer = np.empty(8192, dtype=np.uint8)
    placed = [cache.allocate(f"k{i:02d}", 1024, True, buffer)[1] for i in range(12)]
    assert placed[:3] == [CPU] * 3  # the CPU tier fills to 80 % (3.2 entries) ...
    assert set(placed[3:]) == {CPU}  # ... then demotes its LRU entry to storage for each new one
    entries, used = cache.counts()
    assert entries == {CPU: 3, STORAGE: 5} and used == {CPU: 3 * entry, STORAGE: 5 * entry}
    assert cache.pending == {CPU: 0, STORAGE: 0}  # every reservation settled
    on_disk = files_on_disk(tmp_path)  # storage (terminal, 100 %) deleted its LRU files: k00..k03
    assert sorted(on_disk) == [f"k{i:02d}" for i in range(4, 9)]
    assert sum(on_disk.values()) == used[STORAGE]
    assert {k for k, e in cache.entries.items() if e.location == STORAGE} == set(on_disk)
    assert sum(a.nbytes for a in cache.cpu_data.values()) == used[CPU]
    c = metrics.c
    assert c["tier_cpu_kv_bytes_written"] == 12 * entry and c["tier_storage_kv_bytes_written"] == 0  # demotions
    assert c["offloads_storage"] == 9 and metrics.io["demotion_files_written"] == 9  # not counted as writes
    assert metrics.io["files_deleted"] == 4 and metrics.lat["storage_write_latencies"] == []
    assert cache.access("k00", True, "user", buffer) == (None, 0.0)  # deleted: a miss
    where, _ = cache.access("k05", True, "user", buffer)  # demoted: read from its file, no promotion
    assert where == STORAGE and cache.entries["k05"].location == STORAGE
    assert c["tier_storage_kv_bytes_read"] == entry and metrics.io["files_read"] == 1
    assert cache.access("k11", True, "multi_turn", buffer)[0] == CPU and c["multi_turn_hits"] == 1


def test_no_cpu_tier_writes_straight_to_storage_and_counts_it(tmp_path: Path, noise: NoiseBuffer):
    metrics = Metrics(SMALL.bytes_per_token)
    cache = TieredCache(SMALL, 0, 1 << 30, NpyStore(tmp_path), noise, metrics, max_concurrent_allocs=2)
    buffer = np.empty(8192, dtype=np.uint8)
    assert cache.allocate("a", 100, True, buffer)[:2] == (True, STORAGE)
    assert cache.allocate("a", 100, True, buffer) == (True, STORAGE, 0.0)  # exists: no second write
    assert metrics.c["write_operations"] == 1 and metrics.c["tier_storage_kv_bytes_written"] == 3200
    assert metrics.c["storage_tokens_processed"] == 100 and len(metrics.lat["storage_write_device_latencies"]) == 1


def test_a_failed_write_gives_its_space_back_and_is_recorded(tmp_path: Path, noise: NoiseBuffer):
    metrics = Metrics(SMALL.bytes_per_token)
    cache = TieredCache(SMALL, 0, 1 << 30, NpyStore(tmp_path / "gone"), noise, metrics)
    assert cache.allocate("a", 100, True, np.empty(8192, dtype=np.uint8)) == (False, "none", 0.0)
    assert cache.used == {CPU: 0, STORAGE: 0} and cache.pending == {CPU: 0, STORAGE: 0} and not cache.entries
    assert metrics.io["io_errors"] == 1 and "writing a to storage" in metrics.first_io_error
    assert metrics.c["write_operations"] == 1  # counted before the I/O, as the reference counts it


def test_a_thread_that_raises_ends_the_run_and_fails_it(tmp_path: Path, noise: NoiseBuffer):
    from mlps_slurm.benchmarks.kvcache.engine import BuiltinRun, RunSettings

    metrics = Metrics(SMALL.bytes_per_token)
    cache = TieredCache(SMALL, 0, 1 << 30, NpyStore(tmp_path), noise, metrics)

    def broken(*args: object) -> None:
        raise ZeroDivisionError("a bug")

    cache.allocate = broken  # type: ignore[method-assign]
    run = BuiltinRun(RunSettings("tiny-1b", 2, 60.0, 0, 0, "none", 1), cache, metrics)
    with pytest.raises(RuntimeError, match=r"(?s)kv-worker-\d failed.*ZeroDivisionError: a bug"):
        run.run()  # ends at the first request, not after 60 s


# --- metrics -------------------------------------------------------------------------------------------------------

def test_percentiles_are_numpys_on_a_fixed_sample():
    sample = [0.004, 0.25, 0.011, 0.9, 0.05, 0.0125, 0.3, 0.02, 0.7, 0.033] * 7 + [1.5]
    got = latency_summary(sample)
    for name, q in (("p50", 50), ("p95", 95), ("p99", 99), ("p999", 99.9), ("p9999", 99.99)):
        assert got[name] == pytest.approx(np.percentile(sample, q) * 1000)
    assert got["mean"] == pytest.approx(np.mean(sample) * 1000)
    assert latency_summary([float(i) for i in range(1, 101)])["p50"] == pytest.approx(50_500.0)
    m = Metrics(1)
    m.lat["storage_read_device_latencies"] = sample
    m.lat["storage_read_latencies"] = sample
    stats = cache_stats(m, 10.0, {}, {})
    assert stats["storage_read_device_p95_ms"] == pytest.approx(np.percentile(sample, 95) * 1000)
    assert "storage_write_device_p95_ms" not in stats  # keys exist only where there are samples
    assert stats["storage_health"]["criteria"][0]["name"] == "Storage Tier Read Device P95 < 200ms"


# --- workload ------------------------------------------------------------------------------------------------------

def test_the_same_seed_gives_the_same_request_sequence():
    def sequence(seed: int) -> list[tuple[str, int, int]]:
        return [(r.key, r.context_tokens, r.generate_tokens) for r in request_sequence(20, seed, 40)]

    first = sequence(42)
    assert first == sequence(42) and first != sequence(43)
    assert len(first) == 800 and len({k for k, _, _ in first}) == 800
    assert first[0][0] == "conv_user_0000_000000_turn_1"  # a per-user counter, no clock
    assert make_users(200, 42) == make_users(200, 42)
    kinds = {u.kind for u in make_users(200, 42)}
    assert kinds == {"chatbot", "coding", "document"}


# --- job.py --------------------------------------------------------------------------------------------------------

def chatbot_seed(users: int) -> int:
    """A seed whose users are all chatbots (small entries: a fast test run)."""
    return next(s for s in range(1000) if all(u.kind == "chatbot" for u in make_users(users, s)))


def run_job(tmp_path: Path, *extra: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "mlps_slurm.benchmarks.kvcache.job", "--output-base", str(tmp_path / "out"),
            "--model", "tiny-1b", "--num-users", "3", "--duration", "2", "--gpu-mem-gb", "0", "--cpu-mem-gb", "0",
            "--max-concurrent-allocs", "16", "--generation-mode", "none", *extra]
    run_env = {k: v for k, v in os.environ.items() if k not in job.RANK_VARIABLES}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**run_env, **(env or {})})


def test_a_short_real_run_writes_what_the_rules_read_and_counts_every_file(tmp_path: Path):
    seed = chatbot_seed(3)
    proc = run_job(tmp_path, "--cache-base", str(tmp_path / "cache"), "--seed-base", str(seed), "--keep-cache",
                   "--join-timeout", "60",
                   env={"SLURM_PROCID": "1"})
    assert proc.returncode == 0, proc.stderr
    [path] = (tmp_path / "out" / "rank_1").glob("kvcache_results_*.json")
    data = json.loads(path.read_text())
    rank = kv_results._rank(path, 1, 0, 1)  # the loader the rules use, unchanged
    assert rank.problem is None and rank.seed == seed + 1 and rank.storage_entries > 0
    assert rank.read_bandwidth_gbps is not None and rank.write_bandwidth_gbps is not None
    for key in ("requests_completed", "total_tokens_generated", "total_storage_io_latency", "end_to_end_latencies",
                "storage_latencies", "prefill_latencies", "decode_latencies", "multi_turn_cache_hits", "seed"):
        assert key in data
    summary, mine = data["summary"], data["mlps_slurm"]
    cs = summary["cache_stats"]
    for key in ("tier_storage_read_bandwidth_gbps", "storage_read_device_p95_ms", "storage_write_device_p95_ms",
                "storage_entries", "read_iops", "storage_health"):
        assert key in cs
    assert summary["storage_throughput_tokens_per_sec"] == pytest.approx(
        data["total_tokens_generated"] / data["total_storage_io_latency"])
    assert mine["engine"] == "builtin" and mine["rank"] == 1 and mine["seed"] == seed + 1
    assert set(mine["measured"]) >= {"storage_read_bytes_in_window", "storage_write_bytes_in_window",
                                     "read_bandwidth_gibps", "write_bandwidth_gibps", "proc_io", "cpu_seconds",
                                     "peak_rss_bytes"}
    assert mine["choices"] and mine["busy_workers_at_snapshot"] == 0 and mine["io_errors"] == 0
    files, header = mine["files"], 128  # every tiny-1b entry's .npy header is 128 bytes
    on_disk = files_on_disk(tmp_path / "cache" / "rank_1")
    assert len(on_disk) == cs["storage_entries"] == cs["write_iops"] == files["files_written"]
    assert sum(on_disk.values()) == cs["total_write_bytes"] == files["file_bytes_written"] - header * len(on_disk)
    assert sum(p.stat().st_size for p in (tmp_path / "cache" / "rank_1").glob("*.npy")) == files["file_bytes_written"]
    assert cs["read_iops"] == files["files_read"] > 0  # no CPU tier: every hit read a file
    assert cs["total_read_bytes"] == files["file_bytes_read"] - header * files["files_read"]
    assert mine["measured"]["storage_write_bytes_in_window"] <= files["file_bytes_written"]


def test_the_rank_records_its_error_when_the_cache_dir_cannot_be_made(tmp_path: Path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache base should be")
    proc = run_job(tmp_path, "--cache-base", str(blocker), env={"PMI_RANK": "2"})
    assert proc.returncode == 1
    record = json.loads((tmp_path / "out" / "rank_2" / job.ERROR_FILE).read_text())
    assert set(record) == {"rank", "host", "during", "error", "traceback"}
    assert record["rank"] == 2 and "cache directory" in record["during"] and "rank_2" in record["during"]
    assert record["error"] in proc.stderr and not list((tmp_path / "out" / "rank_2").glob("kvcache_results_*"))


def test_builtin_refuses_a_gpu_tier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in job.RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    code = job.main(["--output-base", str(tmp_path), "--cache-base", str(tmp_path / "c"), "--model", "tiny-1b",
                     "--num-users", "1", "--duration", "1", "--gpu-mem-gb", "16", "--cpu-mem-gb", "0",
                     "--max-concurrent-allocs", "0", "--generation-mode", "none"])
    assert code == 1
    assert "no GPU tier" in json.loads((tmp_path / "rank_0" / job.ERROR_FILE).read_text())["error"]


def test_rank_and_default_storage_limit(tmp_path: Path):
    assert job.rank_from_env({"SLURM_PROCID": "3", "OMPI_COMM_WORLD_RANK": "5"}) == 3
    assert job.rank_from_env({"OMPI_COMM_WORLD_RANK": "5", "PMI_RANK": "6"}) == 5
    assert job.rank_from_env({"PMI_RANK": "6"}) == 6 and job.rank_from_env({}) == 0
    args = job.parser().parse_args(["--output-base", "o", "--cache-base", "c", "--model", "tiny-1b", "--num-users",
                                    "1", "--duration", "1", "--gpu-mem-gb", "0", "--cpu-mem-gb", "0",
                                    "--max-concurrent-allocs", "0", "--generation-mode", "none",
                                    "--ranks-sharing-cache-fs", "4"])
    st = os.statvfs(tmp_path)
    limit, source = job.storage_capacity(args, tmp_path)
    assert limit == pytest.approx(st.f_bavail * st.f_frsize * 0.95 / 4, rel=0.01) and "4 rank(s)" in source
    args.storage_capacity_gb = 2.5
    assert job.storage_capacity(args, tmp_path)[0] == 2.5 * 2**30


FAKE_KV_CACHE = """import json, sys
argv = sys.argv[1:]
open(sys.argv[0] + ".argv.json", "w").write(json.dumps(argv))
out = argv[len(argv) - 1 - argv[::-1].index("--output") + 1]
if "--fail" not in open(argv[argv.index("--config") + 1]).read():
    open(out, "w").write(json.dumps({"seed": int(argv[argv.index("--seed") + 1]), "summary": {}}))
    sys.exit(0)
sys.exit(3)
"""


def test_official_engine_command_line(tmp_path: Path):
    bench = tmp_path / "storage" / "kv_cache_benchmark"
    bench.mkdir(parents=True)
    (bench / "kv-cache.py").write_text(FAKE_KV_CACHE)
    (bench / "config.yaml").write_text("# reference config\n")
    (tmp_path / "cache" / "rank_4").mkdir(parents=True)
    (tmp_path / "cache" / "rank_4" / "old.npy").write_bytes(b"x")
    proc = run_job(tmp_path, "--cache-base", str(tmp_path / "cache"), "--engine", "official", "--official-path",
                   str(tmp_path / "storage"), "--storage-capacity-gb", "1.5", env={"OMPI_COMM_WORLD_RANK": "4"})
    assert proc.returncode == 0, proc.stderr
    [output] = (tmp_path / "out" / "rank_4").glob("kvcache_results_*.json")
    argv = json.loads((bench / "kv-cache.py.argv.json").read_text())
    assert argv == ["--config", str(bench / "config.yaml"), "--model", "tiny-1b", "--num-users", "3",
                    "--duration", "2", "--gpu-mem-gb", "0", "--cpu-mem-gb", "0", "--max-concurrent-allocs", "16",
                    "--generation-mode", "none", "--storage-capacity-gb", "1.5", "--seed", "46", "--output",
                    str(output), "--cache-dir", str(tmp_path / "cache" / "rank_4")]
    launch = json.loads((tmp_path / "out" / "rank_4" / job.OFFICIAL_LAUNCH_FILE).read_text())
    assert launch["argv"][0] == sys.executable and launch["returncode"] == 0 and launch["cache_files_removed"] == 1
    (bench / "config.yaml").write_text("--fail\n")
    proc = run_job(tmp_path / "second", "--cache-base", str(tmp_path / "cache"), "--engine", "official",
                   "--official-path", str(bench))
    assert proc.returncode == 1
    record = json.loads((tmp_path / "second" / "out" / "rank_0" / job.ERROR_FILE).read_text())
    assert "status 3" in record["error"] and record["during"] == "running the reference kv-cache.py"
