"""The real checkpoint engine under mpirun (2 ranks on this machine): output, files on disk, and failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlps_slurm.benchmarks.checkpointing.catalog import LLAMA3_MODELS, rank_shards
from mlps_slurm.benchmarks.checkpointing.engine import load_results

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
SCALE = 2e-5  # llama3-8b: 2.2 MB per checkpoint, about 1.1 MB per rank
NP = 2
TIMEOUT = 120  # seconds; a hang (a rank stuck in a barrier) fails the test instead of blocking the suite
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe"]


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def run_mpi(*commands: list[str], env: dict[str, str] | None = None) -> Outcome:
    """mpirun with one or more `-np N cmd...` blocks (MPMD), in its own session so a hang can be killed whole."""
    argv = list(MPIRUN)
    for i, command in enumerate(commands):
        argv += ([":"] if i else []) + command
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                **(env or {})}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # mpirun and the ranks it started: our own process group only
        out, err = proc.communicate()
        pytest.fail(f"the engine hung for {TIMEOUT} s\nstdout:\n{out}\nstderr:\n{err}")
    return Outcome(proc.returncode, out, err)


def engine(checkpoint_dir: Path, output: Path, *extra: str, writes: int = 3, reads: int = 3,
           model: str = "llama3-8b") -> list[str]:
    return [PYTHON, "-m", "mlps_slurm.benchmarks.checkpointing.job", "--model", model, "--checkpoint-dir",
            str(checkpoint_dir), "--output", str(output), "--writes", str(writes), "--reads", str(reads),
            "--scale", repr(SCALE), "--seconds-between-checkpoints", "0", *extra]


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    checkpoint_dir = tmp_path / "ckpt"
    checkpoint_dir.mkdir()
    return checkpoint_dir, tmp_path / "raw" / "engine.json"


def expected_bytes_per_checkpoint() -> int:
    return sum(s.total_bytes for s in rank_shards(LLAMA3_MODELS["llama3-8b"], NP, SCALE))


def test_writes_reads_back_and_removes_its_files(dirs):
    checkpoint_dir, output = dirs
    output.parent.mkdir()
    result = run_mpi(["-np", str(NP), *engine(checkpoint_dir, output)])
    assert result.returncode == 0, result.stderr
    metrics = load_results(output)  # the strict schema check of the adapter
    assert metrics["num_processes"] == NP and metrics["fsync"] is True and metrics["cache_drop_ok"] is True
    assert [(c["phase"], c["index"]) for c in metrics["checkpoints"]] == [
        ("write", 0), ("write", 1), ("write", 2), ("read", 0), ("read", 1), ("read", 2)]
    for c in metrics["checkpoints"]:
        assert c["bytes"] == expected_bytes_per_checkpoint()
        assert c["duration_s"] > 0 and c["throughput_GBps"] > 0
    assert metrics["write"]["count"] == 3 and metrics["read"]["count"] == 3
    assert metrics["write"]["bytes_per_checkpoint"] == expected_bytes_per_checkpoint()
    raw = json.loads(output.read_text())
    assert [r["cache_drop"]["method"] for r in raw["ranks"]] == ["posix_fadvise(POSIX_FADV_DONTNEED)"] * NP
    assert list(checkpoint_dir.iterdir()) == [], "the ckpt_* directories are removed after the run"
    assert [p.name for p in output.parent.iterdir()] == ["engine.json"], "no temporary file is left behind"
    # One progress line per checkpoint, from rank 0 only.
    assert result.stdout.count("write checkpoint") == 3 and result.stdout.count("read  checkpoint") == 3


def test_keep_files_leaves_each_shard_at_its_size_and_reads_wrap_around(dirs):
    checkpoint_dir, output = dirs
    output.parent.mkdir()
    writes, reads = 2, 5  # reads > writes: read k reads checkpoint k % writes
    result = run_mpi(["-np", str(NP), *engine(checkpoint_dir, output, "--keep-files", writes=writes, reads=reads)])
    assert result.returncode == 0, result.stderr
    metrics = load_results(output)
    assert [c["index"] for c in metrics["checkpoints"] if c["phase"] == "read"] == list(range(reads))
    assert all(c["bytes"] == expected_bytes_per_checkpoint() for c in metrics["checkpoints"])
    expected = {}
    for k in range(writes):
        for shard in rank_shards(LLAMA3_MODELS["llama3-8b"], NP, SCALE):
            expected[f"ckpt_{k}/rank_{shard.rank}.model.bin"] = shard.model_bytes
            expected[f"ckpt_{k}/rank_{shard.rank}.optim.bin"] = shard.optimizer_bytes
    on_disk = {str(p.relative_to(checkpoint_dir)): p.stat().st_size for p in checkpoint_dir.rglob("*") if p.is_file()}
    assert on_disk == expected


@pytest.mark.parametrize("kind, problem", [("missing", "does not exist"), ("file", "is not a directory")])
def test_an_unusable_checkpoint_dir_fails_fast_with_one_clear_message(tmp_path, kind, problem):
    # Running as root, permission bits cannot make a directory unwritable; these are the failures root meets.
    checkpoint_dir = tmp_path / kind
    if kind == "file":
        checkpoint_dir.write_text("a regular file where the checkpoint directory should be\n")
    output = tmp_path / "engine.json"
    result = run_mpi(["-np", str(NP), *engine(checkpoint_dir, output)])
    assert result.returncode == 2, result.stderr
    assert result.stderr.count(f"error: checkpoint dir {checkpoint_dir} {problem}") == 1  # rank 0 reports it
    assert not output.exists()


def test_invalid_arguments_are_reported_once_with_the_valid_models(dirs):
    checkpoint_dir, output = dirs
    result = run_mpi(["-np", str(NP), *engine(checkpoint_dir, output, model="llama3-7b")])
    assert result.returncode == 2
    assert result.stderr.count("unknown model 'llama3-7b'; valid models: llama3-8b, llama3-70b, llama3-405b, "
                               "llama3-1t") == 1
    assert list(checkpoint_dir.iterdir()) == []


def test_a_rank_failing_mid_run_aborts_every_rank_instead_of_hanging(dirs):
    checkpoint_dir, output = dirs
    output.parent.mkdir()
    command = engine(checkpoint_dir, output, "--scale", "2e-4")  # 11 MB per rank, past the limit below
    # Rank 1 runs under a 1 MB file-size limit (ulimit -f counts 512-byte blocks), so its first write fails with
    # EFBIG while rank 0 writes on and then waits in the closing barrier: only MPI_Abort can end that.
    limited = ["/bin/sh", "-c", 'ulimit -f 2000 && exec "$0" "$@"', *command]
    # The same limit stops Open MPI's shared-memory transport from sizing its segment (ftruncate fails with
    # EFBIG, and it prints a warning); TCP over loopback keeps the output about the engine's own failure.
    result = run_mpi(["-np", "1", *command], ["-np", "1", *limited], env={"OMPI_MCA_btl": "self,tcp"})
    assert result.returncode != 0
    assert "error: rank 1 on " in result.stderr and "failed during write checkpoint 0" in result.stderr
    assert "File too large" in result.stderr and "rank_1.model.bin" in result.stderr
    assert not output.exists()


def test_a_resumed_attempt_keeps_the_checkpoints_the_killed_one_completed(tmp_path):
    """Attempt 1 is killed in its write phase; `resume` would move its raw directory to attempts/1/ and run the
    job with MLPS_RESUME_ATTEMPT=2: the engine keeps the writes its journal proves complete, removes the partial
    one, writes the rest and reads all back. A journal from another configuration keeps nothing."""
    import shutil
    import time

    run_dir = tmp_path / "run"
    checkpoint_dir, output = tmp_path / "ckpt", run_dir / "raw" / "engine.json"
    checkpoint_dir.mkdir()
    output.parent.mkdir(parents=True)
    journal = output.with_name("engine.journal.jsonl")
    argv = engine(checkpoint_dir, output, writes=6, reads=2)
    argv[argv.index("--seconds-between-checkpoints") + 1] = "0.5"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*MPIRUN, "-np", str(NP), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, start_new_session=True)
    deadline = time.monotonic() + TIMEOUT
    while not (journal.is_file() and journal.read_text().count('"write"') >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    # Open MPI puts the ranks in their own process groups: kill them by their command line, then mpirun.
    subprocess.run(["pkill", "-KILL", "-f", str(checkpoint_dir)], check=False)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    while subprocess.run(["pgrep", "-f", str(checkpoint_dir)], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the killed attempt's ranks are still running"
        time.sleep(0.05)
    first = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    done = len(first)
    assert 3 <= done < 6 and [c["index"] for c in first] == list(range(done))
    (checkpoint_dir / f"ckpt_{done}").mkdir(exist_ok=True)  # the write under way when it was killed
    (checkpoint_dir / f"ckpt_{done}" / "rank_0.optim.bin").write_bytes(b"partial")
    aside = run_dir / "attempts" / "1" / "raw"
    aside.parent.mkdir(parents=True)
    shutil.move(str(output.parent), str(aside))
    output.parent.mkdir()

    resumed = run_mpi(["-np", str(NP), *engine(checkpoint_dir, output, writes=6, reads=2)],
                      env={"MLPS_RESUME_ATTEMPT": "2", "MLPS_RUN_DIR": str(run_dir)})
    assert resumed.returncode == 0, resumed.stderr
    assert f"keeps {done} write and 0 read checkpoint(s)" in resumed.stdout
    raw = json.loads(output.read_text())
    assert [(c["phase"], c["index"]) for c in raw["checkpoints"]] == \
        [("write", i) for i in range(6)] + [("read", 0), ("read", 1)]
    assert raw["checkpoints"][:done] == first  # the kept checkpoints' own timings, not redone
    assert raw["resumed"] == {"attempt": 2, "kept_writes": done, "kept_reads": 0,
                              "journal": str(aside / "engine.journal.jsonl")}
    assert load_results(output)["write"]["count"] == 6  # the strict schema check accepts it
    assert not any(checkpoint_dir.iterdir())  # every checkpoint removed at the end, the kept ones included

    # another configuration (other reads): its checkpoints are not this run's, nothing is kept
    shutil.rmtree(run_dir / "attempts")
    (run_dir / "attempts" / "1").mkdir(parents=True)
    shutil.move(str(output.parent), str(aside))
    output.parent.mkdir()
    again = run_mpi(["-np", str(NP), *engine(checkpoint_dir, output, writes=6, reads=3)],
                    env={"MLPS_RESUME_ATTEMPT": "2", "MLPS_RUN_DIR": str(run_dir)})
    assert again.returncode == 0, again.stderr
    assert "keeps 0 write and 0 read checkpoint(s)" in again.stdout and "resumed" not in json.loads(
        output.read_text())
