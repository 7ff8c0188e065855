"""On the real local cluster: the running steps' progress as `status` shows it, and a chain cancelled in the middle
of its run array, then resumed: only what did not complete runs again, and the finalize reports the whole run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parent.parent.parent


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlps_slurm", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def status_json(run: Path) -> tuple[dict, int]:
    proc = cli("status", str(run), "--json")
    assert proc.returncode in (0, 1, 5), proc.stderr
    return json.loads(proc.stdout), proc.returncode


def job(doc: dict, key: str) -> dict:
    return next(j for j in doc["jobs"] if j["key"] == key)


@pytest.fixture
def results_dir():
    path = Path(tempfile.mkdtemp(prefix="mlps-resume-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_progress_advances_and_a_resumed_checkpointing_job_keeps_its_completed_checkpoints(results_dir):
    """A real checkpointing chain: status shows the engine's progress advancing; cancelled after a few writes and
    resumed, the engine keeps the checkpoints its journal proves complete and writes only the rest."""
    proc = cli("submit", "checkpointing", "--model", "llama3-8b", "--scale", "0.002",
               "--seconds-between-checkpoints", "1", "--results-dir", str(results_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    run = Path(json.loads(proc.stdout)["run_dir"])
    seen, bars = [], []
    deadline = time.monotonic() + 300
    while not seen or seen[-1] < 5:
        doc, code = status_json(run)
        ckpt = job(doc, "checkpointing")
        if ckpt["state"] == "RUNNING" and "progress" in ckpt:
            seen.append(ckpt["progress"]["done"])
            text = cli("status", str(run)).stdout
            bars += [line for line in text.splitlines() if "checkpoints" in line and "[" in line]
        assert not doc["finished"] and time.monotonic() < deadline, doc
        time.sleep(0.5)
    # fed by the running engine: it advanced while the job ran
    assert len(set(seen)) >= 3 and seen == sorted(seen), seen
    assert bars and "write" in bars[0] and "/20 checkpoints" in bars[0], bars
    assert cli("cancel", str(run)).returncode == 0
    while not status_json(run)[0]["finished"]:
        time.sleep(1)
    proc = cli("resume", str(run), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rerun"] == {"preflight": None, "checkpointing": None, "finalize": None}
    waited = cli("status", str(run), "--watch", timeout=600)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    doc, code = status_json(run)
    assert code == 0 and doc["state"] == "SUCCESS"
    final = job(doc, "checkpointing")["progress"]
    assert (final["done"], final["total"]) == (20, 20)
    engine = json.loads((run / "raw" / "checkpointing" / "llama3-8b" / "engine.json").read_text())
    kept = engine["resumed"]["kept_writes"]
    assert engine["resumed"]["attempt"] == 2 and kept >= 4, engine["resumed"]
    assert [(c["phase"], c["index"]) for c in engine["checkpoints"]] == \
        [("write", i) for i in range(10)] + [("read", i) for i in range(10)]
    # the kept writes are the first attempt's own records (from its journal, set aside by resume), not redone
    journal = run / "attempts" / "1" / "raw" / "checkpointing" / "llama3-8b" / "engine.journal.jsonl"
    first = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    assert engine["checkpoints"][:kept] == first[:kept]
    results = json.loads((run / "results" / "results.json").read_text())
    assert results["status"] == "success" and results["resumes"][0]["attempt"] == 2


def test_cancel_then_resume_runs_only_what_did_not_complete(results_dir, tmp_path):
    data = tmp_path / "data"  # not on /dev/shm: the rules want data and results on different filesystems
    proc = cli("submit", "training", "--model", "unet3d", "--accelerator", "b200", "--accelerators-per-node", "1",
               "--nodes", "2", "--scale", "0.004", "--param", "dataset.record_length=262144",
               "--param", "dataset.record_length_stdev=65536", "--allow-invalid", "--results-dir", str(results_dir),
               "-o", f"storage.data_dir={data}", "--json")
    assert proc.returncode == 0, proc.stderr
    run = Path(json.loads(proc.stdout)["run_dir"])
    # Cancel once run 0 has completed and a later run is under way.
    deadline = time.monotonic() + 400
    while True:
        doc, _ = status_json(run)
        tasks = {t["task"]: t["state"] for t in job(doc, "run").get("tasks", [])}
        if tasks.get(0) == "COMPLETED" and "RUNNING" in tasks.values():
            break
        assert not doc["finished"], f"the chain ended before it could be cancelled: {doc}"
        assert time.monotonic() < deadline, doc
        time.sleep(0.5)
    assert cli("cancel", str(run)).returncode == 0
    while not status_json(run)[0]["finished"]:
        time.sleep(1)
    doc, code = status_json(run)
    assert code == 1
    completed = sorted(t["task"] for t in job(doc, "run")["tasks"] if t["state"] == "COMPLETED")
    missing = [t for t in range(6) if t not in completed]
    assert completed and missing
    outputs = run / "raw" / "training" / "unet3d" / "run"
    kept = {t: (outputs / f"{t:02d}" / "io.json").stat() for t in completed}

    dry = cli("resume", str(run), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["rerun"] == {"preflight": None, "run": missing, "finalize": None}
    proc = cli("resume", str(run), "--json")
    assert proc.returncode == 0, proc.stderr
    resumed = json.loads(proc.stdout)
    assert resumed["kept"] == {"datagen": None, "run": completed} and resumed["attempt"] == 2
    refused = cli("resume", str(run))  # the resumed chain is queued: a second resume is refused
    assert refused.returncode == 2 and "still has jobs queued or running" in refused.stderr

    waited = cli("status", str(run), "--watch", timeout=600)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    doc, code = status_json(run)
    assert code == 0 and doc["state"] == "SUCCESS"
    run_job = job(doc, "run")
    assert [(t["task"], t["state"]) for t in run_job["tasks"]] == [(t, "COMPLETED") for t in range(6)]
    # the completed runs were not run again: their files are the first attempt's, and the resumed array held
    # only the missing tasks
    for t, before in kept.items():
        after = (outputs / f"{t:02d}" / "io.json").stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["jobs"]["run"]["tasks"] == missing
    assert "earlier" not in manifest["jobs"]["datagen"] and "datagen" not in resumed["job_ids"]
    results = json.loads((run / "results" / "results.json").read_text())
    assert results["status"] == "success" and results["resumes"][0]["rerun"]["run"] == missing
    assert len(results["runs"]) == 6
    # what attempt 1 left (its preflight report; its finalize was cancelled before it ran) is kept aside
    assert (run / "attempts" / "1" / "preflight" / "preflight.json").is_file()
    assert "resumed (attempt 2" in (run / "results" / "results.txt").read_text()
