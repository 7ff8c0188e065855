"""The finalize of an unfinished checkpointing run: incomplete ckpt_* directories removed, the ones the journal
proves complete kept for resume, --keep-files honoured, and a hostile manifest's directory never touched."""

from __future__ import annotations

import json
from pathlib import Path

from mlps_slurm.benchmarks.checkpointing.cleanup import cleanup_lines, complete_writes, remove_partial

RUN = "checkpointing-20261205-101500"


def journal(path: Path, writes: list[int], cut: bool = False) -> Path:
    lines = [json.dumps({"schema": "mlps-slurm/checkpoint-journal/1"})]
    lines += [json.dumps({"phase": "write", "index": i}) for i in writes]
    text = "\n".join(lines) + "\n" + ('{"phase": "wri' if cut else "")
    path.write_text(text)
    return path


def checkpoints(root: Path, count: int, size: int = 1000) -> Path:
    directory = root / RUN
    for i in range(count):
        (directory / f"ckpt_{i}").mkdir(parents=True)
        (directory / f"ckpt_{i}" / "rank0.pt").write_bytes(b"x" * size)
    return directory


def test_complete_writes_counts_from_zero_and_ignores_a_cut_line(tmp_path):
    assert complete_writes(journal(tmp_path / "j", [0, 1, 2], cut=True)) == 3
    assert complete_writes(journal(tmp_path / "j", [0, 2])) == 1  # 1 is missing: only ckpt_0 counts
    assert complete_writes(tmp_path / "missing") == 0
    (tmp_path / "bad").write_bytes(b"\xff\xfe")
    assert complete_writes(tmp_path / "bad") == 0


def test_incomplete_checkpoints_are_removed_and_complete_ones_kept(tmp_path):
    directory = checkpoints(tmp_path, 4)
    (directory / "notes.txt").write_text("not ours")
    entry = remove_partial(str(directory), RUN, journal(tmp_path / "j", [0, 1]), keep_files=False)
    assert entry["kept"] == ["ckpt_0", "ckpt_1"] and entry["removed"] == ["ckpt_2", "ckpt_3"]
    assert (entry["bytes_kept"], entry["bytes_removed"]) == (2000, 2000)
    assert sorted(p.name for p in directory.iterdir()) == ["ckpt_0", "ckpt_1", "notes.txt"]
    text = "\n".join(cleanup_lines(entry))
    assert "removed 2 incomplete checkpoint(s)" in text and "kept 2 complete checkpoint(s)" in text


def test_keep_files_keeps_everything(tmp_path):
    directory = checkpoints(tmp_path, 2)
    entry = remove_partial(str(directory), RUN, tmp_path / "no-journal", keep_files=True)
    assert entry["removed"] == [] and "--keep-files" in entry["skipped"]
    assert len(list(directory.iterdir())) == 2


def test_a_hostile_manifest_directory_is_never_touched(tmp_path):
    elsewhere = tmp_path / "precious"
    (elsewhere / "ckpt_0").mkdir(parents=True)
    for hostile in (str(elsewhere), f"{tmp_path}/{RUN}/../precious", f"relative/{RUN}", "/"):
        entry = remove_partial(hostile, RUN, tmp_path / "no-journal", keep_files=False)
        assert entry["removed"] == [] and "skipped" in entry, hostile
    # a ckpt_* symlink inside the run's directory is not followed
    directory = checkpoints(tmp_path, 0)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ckpt_7").symlink_to(elsewhere)
    entry = remove_partial(str(directory), RUN, tmp_path / "no-journal", keep_files=False)
    assert entry["removed"] == [] and (elsewhere / "ckpt_0").is_dir()


def test_cancel_tidies_once_every_job_has_ended(tmp_path):
    """`cancel`'s tidy (FakeSlurmBackend): it waits for the jobs to end, then removes the partial checkpoint."""
    from mlps_slurm.benchmarks.checkpointing.journal import journal_path
    from mlps_slurm.chain import submit_chain, tidy_cancelled
    from mlps_slurm.rundir import run_record
    from mlps_slurm.slurm import JobState
    from tests.unit.fake_slurm import FakeSlurmBackend
    from tests.unit.test_chain_fake_slurm import make_run

    run = make_run(tmp_path)
    backend = FakeSlurmBackend()
    ids = submit_chain(run, backend)
    request = run_record(run.read_manifest())
    directory = Path(request["checkpoint_dir"])
    for i in range(3):
        (directory / f"ckpt_{i}").mkdir(parents=True)
    journal_file = journal_path(Path(request["engine_output"]))
    journal_file.parent.mkdir(parents=True, exist_ok=True)
    journal(journal_file, [0])
    naps = []

    def nap(seconds):  # the jobs end while cancel waits
        naps.append(seconds)
        backend.given.update({jid: [JobState(jid, key, "CANCELLED", "None")] for key, jid in ids.items()})

    lines = tidy_cancelled(run, backend, sleep=nap)
    assert naps == [1.0]
    assert sorted(p.name for p in directory.iterdir()) == ["ckpt_0"]
    assert any("removed 2 incomplete" in line for line in lines) and any("kept 1 complete" in line for line in lines)
    # a chain that never ends within the timeout is left alone
    backend.given.clear()
    (directory / "ckpt_1").mkdir()
    lines = tidy_cancelled(run, backend, timeout=0, sleep=lambda s: None)
    assert "had not ended" in lines[0] and (directory / "ckpt_1").is_dir()
