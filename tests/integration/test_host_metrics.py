"""Host metrics on the real local cluster: a checkpointing chain on 2 nodes with a 1 s sampling interval; every
node of the benchmark job leaves its start snapshot, its series and its end snapshot, and results.json summarizes
each node. The preflight and the finalize are not sampled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlps_slurm.hostlist import expand

pytestmark = pytest.mark.slurm


def test_every_node_of_the_benchmark_job_is_sampled_and_summarized(tmp_path):
    results = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "mlps_slurm", "submit", "checkpointing", "--model", "llama3-8b", "--scale", "0.002",
         "--seconds-between-checkpoints", "0", "-N", "2", "--results-dir", str(results), "--wait", "--timeout", "600",
         "-o", "monitoring.interval_s=1", "-o", f"storage.checkpoint_dir={tmp_path / 'ckpt'}"],
        capture_output=True, text=True, timeout=700)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = [p for p in results.iterdir() if not p.name.startswith(".")]
    manifest = json.loads((run / "manifest.json").read_text())
    out = subprocess.run(["scontrol", "show", "job", manifest["jobs"]["checkpointing"]["job_id"]],
                         capture_output=True, text=True, check=True).stdout
    nodes = expand(dict(t.split("=", 1) for t in out.split() if "=" in t)["NodeList"])
    assert len(nodes) == 2

    assert sorted(p.name for p in (run / "hostmetrics").iterdir()) == ["checkpointing"]  # not preflight/finalize
    folder = run / "hostmetrics" / "checkpointing"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{n}.{kind}" for n in nodes for kind in ("start.json", "series.jsonl", "end.json"))
    for node in nodes:
        start = json.loads((folder / f"{node}.start.json").read_text())
        end = json.loads((folder / f"{node}.end.json").read_text())
        series = [json.loads(x) for x in (folder / f"{node}.series.jsonl").read_text().splitlines()]
        assert start["node"] == end["node"] == node and start["errors"] == end["errors"] == []
        assert start["interval_s"] == 1.0 and "diskstats" in start["raw"]
        # stopped by the job script's trap (SIGUSR1 through srun), not killed with the job
        assert end["stopped_by"] == "signal" and end["samples"] == len(series) >= 2
        assert all(0.5 < s["seconds"] < 3 for s in series)
        assert all({"cpu", "disk_total", "memory", "net_total", "load"} <= set(s) for s in series)
    log = next((run / "logs").glob("mlps-checkpointing-*.out")).read_text()
    assert "can't honor" not in log and "forcing job termination" not in log

    host = json.loads((run / "results" / "results.json").read_text())["host_metrics"]
    assert host["interval_s"] == 1.0 and host["problems"] == []
    job = host["jobs"]["checkpointing"]
    assert job["missing"] == [] and job["problems"] == [] and sorted(job["nodes"]) == sorted(nodes)
    for node, summary in job["nodes"].items():
        assert summary["start"] and summary["end"] and summary["samples"] >= 2 and "problems" not in summary
        assert summary["cpu_iowait_pct"]["peak"] >= summary["cpu_iowait_pct"]["mean"] >= 0
        assert summary["memory_used_GB"]["peak"] > 0
