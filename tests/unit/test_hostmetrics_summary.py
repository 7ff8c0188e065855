"""Host metrics in results.json (mlps_slurm/steps/hostmetrics_summary.py), and where the plan starts the samplers:
every benchmark job, never the preflight or the finalize."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mlps_slurm.steps.hostmetrics_summary import results_entry, summarize

MANIFEST = {"profile": {"values": {"monitoring.interval_s": 10.0}},
            "plan": {"jobs": [{"key": "preflight", "outputs": ["preflight"]},
                              {"key": "run", "outputs": ["raw/x/run/{task}", "hostmetrics/run.{task}"]},
                              {"key": "datagen", "outputs": ["raw/x/datagen", "hostmetrics/datagen"]},
                              {"key": "finalize", "outputs": ["results"]}]}}


def sample(i: int, write_mbps: float, iowait: float) -> dict:
    return {"t": 1.7e9 + 10 * i, "elapsed_s": 10.0 * i, "seconds": 10.0,
            "cpu": {"user": 10.0, "system": 5.0, "iowait": iowait, "idle": 85.0 - iowait},
            "disk_total": {"read_Bps": 0.0, "write_Bps": write_mbps * 1e6, "read_iops": 0, "write_iops": 5},
            "net_total": {"rx_Bps": 2e6, "tx_Bps": 1e6}, "load": 1.0 + i,
            "memory": {"used": int(2e9) * i, "cached": int(1e9), "dirty": 0}}


def write_node(folder: Path, node: str, samples: list[dict], end: bool = True, extra_lines: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{node}.start.json").write_text(json.dumps({"node": node, "when": "start"}))
    (folder / f"{node}.series.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples) + extra_lines)
    if end:
        (folder / f"{node}.end.json").write_text(json.dumps({
            "node": node, "when": "end", "elapsed_s": 10.0 * len(samples), "errors": [],
            "since_start": {"disk_total": {"read_Bps": 0, "write_Bps": 150e6}}}))


def states(**nodes: str) -> dict:
    return {"datagen": {"job_id": "5", "state": "COMPLETED", "nodes": nodes.get("datagen", "n[1-2]")},
            "run": {"job_id": "6", "state": "COMPLETED",
                    "tasks": [{"task": 0, "state": "COMPLETED", "nodes": nodes.get("run", "n[1-2]")},
                              {"task": 1, "state": "COMPLETED", "nodes": nodes.get("run", "n[1-2]")}]}}


def test_per_node_means_and_peaks(tmp_path):
    for node in ("n1", "n2"):
        write_node(tmp_path / "hostmetrics" / "datagen", node, [sample(1, 100, 4), sample(2, 200, 8)])
        for task in ("00", "01"):
            write_node(tmp_path / "hostmetrics" / f"run.{task}", node, [sample(1, 50, 1)])
    summary = summarize(tmp_path, MANIFEST, states())
    assert summary["interval_s"] == 10.0 and summary["problems"] == []
    assert sorted(summary["jobs"]) == ["datagen", "run.00", "run.01"]
    job = summary["jobs"]["datagen"]
    assert job["missing"] == [] and job["problems"] == [] and sorted(job["nodes"]) == ["n1", "n2"]
    n1 = job["nodes"]["n1"]
    assert n1["samples"] == 2 and n1["start"] and n1["end"] and n1["seconds"] == 20.0
    assert n1["disk_write_MBps"] == {"mean": 150.0, "peak": 200.0}
    assert n1["cpu_iowait_pct"] == {"mean": 6.0, "peak": 8.0}
    assert n1["memory_used_GB"]["peak"] == 4.0 and n1["net_rx_MBps"]["mean"] == 2.0 and n1["load1"]["peak"] == 3.0
    assert n1["whole_window"]["disk_write_MBps"] == 150.0
    assert "problems" not in n1


def test_missing_node_missing_end_and_damaged_line_are_reported(tmp_path):
    folder = tmp_path / "hostmetrics" / "datagen"
    write_node(folder, "n1", [sample(1, 100, 4)], extra_lines='{"t": 17000\n[1, 2]\n')
    write_node(folder, "n2", [sample(1, 100, 4)], end=False)
    summary = summarize(tmp_path, MANIFEST, states(datagen="n[1-3]"))
    job = summary["jobs"]["datagen"]
    assert job["missing"] == ["n3"] and "no host metrics from node n3" in job["problems"]
    n1, n2 = job["nodes"]["n1"], job["nodes"]["n2"]
    assert n1["samples"] == 1 and n1["damaged_lines"] == 2
    assert any("2 damaged line(s), first line 2" in p for p in n1["problems"])
    assert n2["end"] is False and "no end.json" in n2["problems"]
    # the array tasks ran on n1 and n2 but no sampler wrote anything: said so, per task
    assert summary["jobs"]["run.00"]["missing"] == ["n1", "n2"]
    assert "never started" in summary["jobs"]["run.01"]["problems"][0]


def test_hostile_names_never_become_paths(tmp_path):
    root = tmp_path / "hostmetrics"
    folder = root / "datagen"
    write_node(folder, "n1", [sample(1, 100, 4)])
    (folder / "..evil.series.jsonl").write_text("{}\n")  # a name starting with dots is not a node
    (folder / "n 1; rm -rf.start.json").write_text("{}")
    (folder / ("x" * 200 + ".start.json")).write_text("{}")
    (folder / "n2.start.json").symlink_to("/etc/passwd")
    (folder / "n1.notes.txt").write_text("?")
    (root / "unplanned").mkdir()
    (root / "datagen.07.extra").mkdir()
    os.symlink("/etc", root / "run.00")
    summary = summarize(tmp_path, MANIFEST, states())
    job = summary["jobs"]["datagen"]
    assert sorted(job["nodes"]) == ["n1"]  # the symlinked n2 is not read
    assert job["missing"] == ["n2"]
    odd = [p for p in job["problems"] if p.startswith("unexpected file")]
    assert len(odd) == 5 and all(len(p) < 120 for p in odd)
    assert sum("unexpected entry" in p for p in summary["problems"]) == 3  # unplanned, datagen.07.extra, run.00
    assert "nodes" in summary["jobs"]["run.00"] and summary["jobs"]["run.00"]["nodes"] == {}


def test_sampler_error_file_is_reported(tmp_path):
    folder = tmp_path / "hostmetrics" / "datagen"
    folder.mkdir(parents=True)
    (folder / "n1.error.json").write_text(json.dumps({"error": "PermissionError: denied"}))
    job = summarize(tmp_path, MANIFEST, states(datagen="n1"))["jobs"]["datagen"]
    assert job["nodes"]["n1"]["samples"] == 0
    assert "sampler failed: PermissionError: denied" in job["nodes"]["n1"]["problems"]


def test_no_host_metrics_planned_and_a_summary_that_cannot_run(tmp_path):
    off = {"plan": {"jobs": [{"key": "checkpointing", "outputs": ["raw/checkpointing/llama3-8b"]}]}}
    assert "monitoring.host_metrics is off" in summarize(tmp_path, off, {})["note"]
    broken = results_entry(tmp_path, {"plan": {"jobs": "not a list"}}, {})
    assert broken["jobs"] == {} and "could not be summarized" in broken["problems"][0]


# --- where the plan starts the samplers


def plans(overrides=()):
    from mlps_slurm.benchmarks.checkpointing.plan import plan as plan_checkpointing
    from mlps_slurm.benchmarks.checkpointing.request import CheckpointingRequest
    from mlps_slurm.benchmarks.kvcache.plan import plan as plan_kvcache
    from mlps_slurm.benchmarks.kvcache.request import KvCacheRequest
    from mlps_slurm.benchmarks.training.plan import plan as plan_training
    from mlps_slurm.benchmarks.training.request import TrainingRequest
    from mlps_slurm.benchmarks.vectordb.plan import plan as plan_vectordb
    from mlps_slurm.benchmarks.vectordb.request import VectorDbRequest
    from mlps_slurm.profile import load_profile

    profile = load_profile("localhost", list(overrides))
    for name, plan_it, request in (
            ("checkpointing", plan_checkpointing, CheckpointingRequest(model="llama3-8b")),
            ("training", plan_training, TrainingRequest("unet3d", "b200", scale=0.01)),
            ("kvcache", plan_kvcache, KvCacheRequest(ranks_per_node=2)),
            ("vectordb", plan_vectordb, VectorDbRequest(scale=0.01, query_processes=2))):
        run_dir = f"/runs/{name}-1"
        yield run_dir, plan_it(request, profile, run_id=f"{name}-1", run_dir=run_dir, python="/py")


def test_every_benchmark_job_starts_the_sampler_and_preflight_and_finalize_do_not():
    from mlps_slurm.render import render_plan

    seen = 0
    for run_dir, plan in plans(["monitoring.interval_s=2.5"]):
        scripts = render_plan(plan)
        for (name, text), job in zip(scripts.items(), plan.jobs):
            starts = "-m mlps_slurm.steps.hostmetrics sample" in text
            if job.key in ("preflight", "finalize"):
                assert not starts and "host_metrics" not in job.context, name
                continue
            seen += 1
            argv = job.context["host_metrics"]
            nodes = next(o for o in job.sbatch if o.startswith("--nodes="))
            assert argv[:7] == ["srun", nodes, "--ntasks-per-node=1", nodes.replace("nodes", "ntasks"),
                                "--overlap", "--mpi=none", "--job-name=hostmetrics"], name
            array = any(o.startswith("--array=") for o in job.sbatch)
            out = f"{run_dir}/hostmetrics/{job.key}"
            assert argv[argv.index("--out") + 1] == out and argv[argv.index("--interval") + 1] == "2.5"
            assert ("--task" in argv) == array
            assert f"hostmetrics/{job.key}" + (".{task}" if array else "") in job.outputs
            assert starts and ("trap mlps_stop_host_metrics EXIT" in text or "mlps_stop_host_metrics' EXIT" in text)
            # started in the background before the job's work, stopped by SIGUSR1 (srun forwards it)
            assert text.index("hostmetrics sample") < text.index("mkdir -p")
            assert 'kill -USR1 "$MLPS_HOST_METRICS"' in text
    assert seen == 8  # checkpointing; datagen, run; option1-3; load, run


def test_the_profile_turns_host_metrics_off():
    from mlps_slurm.render import render_plan

    for _, plan in plans(["monitoring.host_metrics=false"]):
        for job in plan.jobs:
            assert job.context.get("host_metrics") is None
            assert not any(o.startswith("hostmetrics/") for o in job.outputs)
        assert not any("hostmetrics sample" in t for t in render_plan(plan).values())


@pytest.mark.parametrize("value", ["0", "-1"])
def test_interval_must_be_positive(value):
    from mlps_slurm.profile import load_profile

    with pytest.raises(Exception, match="monitoring.interval_s"):
        load_profile("localhost", [f"monitoring.interval_s={value}"])
