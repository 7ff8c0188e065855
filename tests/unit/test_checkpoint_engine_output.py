"""normalize() and load_results() on synthetic engine output: metrics computed from the inputs, and errors that
name the file and the key."""

from __future__ import annotations

import copy
import json
import math
import statistics
from typing import Any, Callable

import pytest

from mlps_slurm.benchmarks.checkpointing.engine import ENGINE_SCHEMA, EngineOutputError, engine_argv, load_results, normalize

SOURCE = "/runs/20261128-abc/raw/checkpoint-engine.json"


def duration(phase: str, index: int, rank: int) -> float:
    """A made-up but irregular timing, so the slowest rank differs between checkpoints."""
    return 0.25 + 0.1 * ((rank * 7 + index * 3 + (phase == "read")) % 5)


def engine_output(num_processes: int = 3, writes: int = 3, reads: int = 2, model_bytes: int = 1000,
                  optimizer_bytes: int = 6000, hosts: tuple[str, ...] = ("n2", "n1")) -> dict[str, Any]:
    """What the engine writes, built the way it builds it."""
    host = [hosts[r % len(hosts)] for r in range(num_processes)]
    ranks = [{"rank": r, "host": host[r], "model_bytes": model_bytes + r, "optimizer_bytes": optimizer_bytes,
              "cache_drop": {"method": "posix_fadvise(POSIX_FADV_DONTNEED)", "ok": True, "error": None}}
             for r in range(num_processes)]
    checkpoints = []
    clock = 1_800_000_000.0
    for phase, count in (("write", writes), ("read", reads)):
        for k in range(count):
            per_rank = []
            for r in range(num_processes):
                d = duration(phase, k, r)
                per_rank.append({"rank": r, "host": host[r], "bytes": model_bytes + r + optimizer_bytes,
                                 "start": clock, "end": clock + d, "duration": d})
            checkpoints.append({"phase": phase, "index": k, "ranks": per_rank})
            clock += 10
    return {"schema": ENGINE_SCHEMA, "engine": "mlps-builtin-checkpoint", "engine_version": "0.1.0",
            "model": "llama3-8b", "num_processes": num_processes, "scale": 0.001, "fsync": True,
            "num_checkpoints_write": writes, "num_checkpoints_read": reads, "seconds_between_checkpoints": 5.0,
            "checkpoint_dir": "/scratch/ckpt", "chunk_bytes": 16 << 20, "started": "2026-11-28T15:00:00+00:00",
            "ended": "2026-11-28T15:01:00+00:00", "ranks": ranks, "checkpoints": checkpoints}


def expected_checkpoint(raw_ckpt: dict[str, Any]) -> dict[str, Any]:
    ranks = raw_ckpt["ranks"]
    total = sum(r["bytes"] for r in ranks)
    slowest = max(ranks, key=lambda r: r["duration"])
    return {"phase": raw_ckpt["phase"], "index": raw_ckpt["index"], "bytes": total,
            "duration_s": slowest["duration"], "throughput_GBps": total / slowest["duration"] / 1e9,
            "throughput_GiBps": total / slowest["duration"] / 2**30, "slowest_rank": slowest["rank"]}


def test_per_checkpoint_metrics_follow_the_slowest_rank():
    raw = engine_output()
    result = normalize(raw, SOURCE)
    assert result["checkpoints"] == [expected_checkpoint(c) for c in raw["checkpoints"]]
    assert {c["slowest_rank"] for c in result["checkpoints"]} != {0}  # the helper really varies the slowest rank


@pytest.mark.parametrize("phase", ["write", "read"])
def test_phase_summary_averages_the_per_checkpoint_throughputs(phase):
    raw = engine_output()
    expected = [expected_checkpoint(c) for c in raw["checkpoints"] if c["phase"] == phase]
    summary = normalize(raw, SOURCE)[phase]
    throughputs = [c["throughput_GBps"] for c in expected]
    durations = [c["duration_s"] for c in expected]
    assert summary["count"] == raw[f"num_checkpoints_{phase}"] == len(expected)
    assert summary["bytes_per_checkpoint"] == expected[0]["bytes"]
    assert summary["bytes_total"] == sum(c["bytes"] for c in expected)
    assert summary["duration_s"] == {"mean": pytest.approx(statistics.fmean(durations)), "min": min(durations),
                                     "max": max(durations)}
    assert summary["throughput_GBps"] == {"mean": pytest.approx(statistics.fmean(throughputs)),
                                          "min": min(throughputs), "max": max(throughputs)}
    # The mean of the ratios, not the ratio of the sums: each checkpoint weighs the same.
    assert summary["throughput_GBps"]["mean"] != pytest.approx(summary["bytes_total"] / sum(durations) / 1e9)


def test_top_level_fields():
    raw = engine_output(hosts=("n3", "n1", "n3"))
    result = normalize(raw, SOURCE)
    assert result["benchmark"] == "checkpointing"
    assert (result["model"], result["num_processes"], result["scale"], result["fsync"]) == ("llama3-8b", 3, 0.001,
                                                                                            True)
    assert result["hosts"] == ["n1", "n3"]
    assert result["cache_drop_ok"] is True
    assert (result["started"], result["ended"]) == (raw["started"], raw["ended"])


def test_bytes_per_checkpoint_lists_differing_sizes_in_order():
    raw = engine_output(writes=2, reads=0)
    raw["checkpoints"][1]["ranks"][0]["bytes"] -= 100  # the finalize step compares with the plan and says so
    summary = normalize(raw, SOURCE)["write"]
    sizes = [sum(r["bytes"] for r in c["ranks"]) for c in raw["checkpoints"]]
    assert summary["bytes_per_checkpoint"] == sizes and summary["bytes_total"] == sum(sizes)


def test_one_failed_cache_drop_makes_cache_drop_not_ok():
    raw = engine_output()
    raw["ranks"][2]["cache_drop"] = {"method": "posix_fadvise(POSIX_FADV_DONTNEED)", "ok": False,
                                     "error": "/scratch/ckpt/ckpt_0/rank_2.optim.bin: Invalid argument"}
    assert normalize(raw, SOURCE)["cache_drop_ok"] is False


def test_a_write_only_run_has_an_empty_read_summary():
    result = normalize(engine_output(reads=0), SOURCE)
    assert result["write"]["count"] == 3
    assert result["read"] == {"count": 0, "bytes_per_checkpoint": None, "bytes_total": 0, "duration_s": None,
                              "throughput_GBps": None}


def test_zero_bytes_is_a_valid_checkpoint_of_zero_throughput():
    result = normalize(engine_output(model_bytes=0, optimizer_bytes=0, num_processes=1), SOURCE)
    assert all(c["bytes"] == 0 and c["throughput_GBps"] == 0 for c in result["checkpoints"])


DELETE = object()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation that sets (or, with value DELETE, removes) the key at a dotted/indexed path."""
    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = path.replace("[", ".").replace("]", "").split(".")
        obj: Any = raw
        for part in parents:
            obj = obj[int(part)] if isinstance(obj, list) else obj[part]
        if value is DELETE:
            del obj[int(last) if isinstance(obj, list) else last]
        else:
            obj[int(last) if isinstance(obj, list) else last] = value
    return mutate


def _all_durations_zero(raw: dict[str, Any]) -> None:
    for r in raw["checkpoints"][1]["ranks"]:
        r["duration"] = 0.0


def _duplicate_rank(raw: dict[str, Any]) -> None:
    ranks = raw["checkpoints"][0]["ranks"]
    ranks[1] = copy.deepcopy(ranks[0])


BROKEN = [
    # (mutation, the key path the message must name, a fragment of what is wrong)
    (_set("schema", DELETE), "schema", "missing"),
    (_set("schema", "dlio/1"), "schema", "expected 'mlps-slurm/checkpoint-engine/1'"),
    (_set("num_processes", "3"), "num_processes", "expected an integer"),
    (_set("num_processes", True), "num_processes", "expected an integer"),
    (_set("scale", 0), "scale", "(0, 1]"),
    (_set("fsync", "yes"), "fsync", "expected true or false"),
    (_set("model", None), "model", "expected a string"),
    (_set("started", "yesterday"), "started", "ISO 8601"),
    (_set("num_checkpoints_write", 4), "checkpoints", "write checkpoints have indices [0, 1, 2]"),
    (_set("num_checkpoints_read", -1), "num_checkpoints_read", "must be >= 0"),
    (_set("ranks", DELETE), "ranks", "missing"),
    (_set("ranks.2", DELETE), "ranks", "lists 2 ranks, num_processes is 3"),
    (_set("ranks.1.host", DELETE), "ranks[1].host", "missing"),
    (_set("ranks.1.rank", 7), "ranks[1].rank", "expected 1"),
    (_set("ranks.0.cache_drop.ok", DELETE), "ranks[0].cache_drop.ok", "missing"),
    (_set("ranks.0.cache_drop", "dropped"), "ranks[0].cache_drop", "expected an object"),
    (_set("checkpoints", {}), "checkpoints", "expected a list"),
    (_set("checkpoints.1.phase", "flush"), "checkpoints[1].phase", "expected write or read"),
    (_set("checkpoints.3.index", 5), "checkpoints", "read checkpoints have indices [5, 1]"),
    (_set("checkpoints.1.ranks.1", DELETE), "checkpoints[1].ranks", "no entry for rank(s) 1"),
    (_duplicate_rank, "checkpoints[0].ranks[1].rank", "listed twice"),
    (_set("checkpoints.0.ranks.2.rank", 3), "checkpoints[0].ranks[2].rank", "does not exist"),
    (_set("checkpoints.2.ranks.0.duration", -0.5), "checkpoints[2].ranks[0].duration", "must be >= 0"),
    (_set("checkpoints.2.ranks.0.duration", math.nan), "checkpoints[2].ranks[0].duration", "finite number"),
    (_set("checkpoints.2.ranks.0.duration", "1.5"), "checkpoints[2].ranks[0].duration", "finite number"),
    (_set("checkpoints.4.ranks.1.bytes", -1), "checkpoints[4].ranks[1].bytes", "must be >= 0"),
    (_set("checkpoints.4.ranks.1.bytes", 1.5), "checkpoints[4].ranks[1].bytes", "expected an integer"),
    (_set("checkpoints.0.ranks.0.end", 0.0), "checkpoints[0].ranks[0].end", "before it starts"),
    (_set("checkpoints.0.ranks.0.start", DELETE), "checkpoints[0].ranks[0].start", "missing"),
    (_all_durations_zero, "checkpoints[1].ranks", "zero duration"),
]


@pytest.mark.parametrize("mutate, key, problem", BROKEN, ids=[f"{k}: {p}" for _, k, p in BROKEN])
def test_malformed_output_names_the_file_and_the_key(mutate, key, problem):
    raw = engine_output()
    mutate(raw)
    with pytest.raises(EngineOutputError) as info:
        normalize(raw, SOURCE)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: {key}: "), message
    assert problem in message


def test_not_an_object_at_the_top_level():
    with pytest.raises(EngineOutputError, match=f"^{SOURCE}: <top level>: expected a JSON object, got list"):
        normalize([engine_output()], SOURCE)


def test_load_results_reads_and_normalizes(tmp_path):
    path = tmp_path / "engine.json"
    raw = engine_output()
    path.write_text(json.dumps(raw))
    assert load_results(path) == normalize(raw, str(path))


def test_load_results_missing_file(tmp_path):
    path = tmp_path / "never-written.json"
    with pytest.raises(EngineOutputError, match=f"^{path}: the engine wrote no output file"):
        load_results(path)


def test_load_results_truncated_file(tmp_path):
    path = tmp_path / "engine.json"
    path.write_text(json.dumps(engine_output(), indent=1)[:500])
    with pytest.raises(EngineOutputError) as info:
        load_results(path)
    assert str(info.value).startswith(f"{path}: not valid JSON (truncated?)")


def test_load_results_names_the_file_for_format_errors(tmp_path):
    path = tmp_path / "engine.json"
    raw = engine_output()
    del raw["checkpoints"][0]["ranks"][0]["duration"]
    path.write_text(json.dumps(raw))
    with pytest.raises(EngineOutputError, match=rf"^{path}: checkpoints\[0\]\.ranks\[0\]\.duration: missing"):
        load_results(path)


def test_engine_argv_round_trips_the_settings():
    argv = engine_argv("/opt/venv/bin/python", "llama3-70b", "/scratch/ckpt/run1", "/runs/run1/raw/engine.json",
                       10, 10, 2e-5, 5, keep_files=True)
    assert argv[:3] == ["/opt/venv/bin/python", "-m", "mlps_slurm.benchmarks.checkpointing.job"]
    options = dict(zip(argv[3:-1:2], argv[4:-1:2]))
    assert options == {"--model": "llama3-70b", "--checkpoint-dir": "/scratch/ckpt/run1",
                       "--output": "/runs/run1/raw/engine.json", "--writes": "10", "--reads": "10",
                       "--scale": "2e-05", "--seconds-between-checkpoints": "5.0"}
    assert float(options["--scale"]) == 2e-5  # exact, so the engine sizes the same shards as the plan
    assert argv[-1] == "--keep-files"
    assert "--keep-files" not in engine_argv("python", "llama3-8b", "/c", "/o.json", 1, 1, 1.0, 0.0)
