"""verify_run / verify_runs: discovery, never skipping silently, exit codes, and the written reports."""

from __future__ import annotations

import json

from mlps_slurm.rules.core import Verdict
from mlps_slurm.verify import EXIT_OK, EXIT_UNUSABLE, verify_command, verify_run, verify_runs, write_run_verdict
from tests.unit import rules_corpus as corpus
from tests.unit.rules_corpus import T0


def test_directory_of_runs_of_every_benchmark(tmp_path):
    corpus.checkpoint_run(tmp_path)
    corpus.training_run(tmp_path)
    corpus.kvcache_run(tmp_path)
    corpus.vectordb_run(tmp_path)
    report = verify_runs([tmp_path])
    assert sorted(r.benchmark for r in report.runs) == ["checkpointing", "kvcache", "training", "vectordb"]
    assert report.verdict is Verdict.CLOSED and report.exit_code == EXIT_OK and not report.unused
    assert not report.submission and not report.groups  # a plain directory: run-level rules only


def test_unusable_and_unfinished_runs_are_listed_and_fail_the_exit_code(tmp_path):
    good = corpus.checkpoint_run(tmp_path, run_id="good")
    failed = corpus.checkpoint_run(tmp_path, run_id="failed", status="failed")
    unfinished = corpus.checkpoint_run(tmp_path, run_id="unfinished")
    (unfinished / "results" / "results.json").unlink()
    truncated = corpus.checkpoint_run(tmp_path, run_id="truncated")
    results = truncated / "results" / "results.json"
    results.write_text(results.read_text()[:200])
    report = verify_runs([tmp_path])
    assert report.exit_code == EXIT_UNUSABLE
    by_id = {r.run_id: r for r in report.runs}
    assert by_id["good"].usable and not by_id["failed"].usable
    unused = {u.path: u.reason for u in report.unused}
    assert "the checkpointing job FAILED" in unused[str(failed)]
    assert "has not finalized" in unused[str(unfinished)]
    assert "not valid JSON" in unused[str(truncated)] and str(results) in unused[str(truncated)]
    assert str(good) not in unused
    text = report.to_text()
    assert "not used:" in text and "[no usable result]" in text


def test_broken_manifest_is_invalid_not_a_crash(tmp_path):
    run = corpus.checkpoint_run(tmp_path)
    (run / "manifest.json").write_text("{")
    v = verify_run(run)
    assert v.verdict is Verdict.INVALID and not v.usable
    assert v.findings[0].rule_id == "run.manifest" and str(run / "manifest.json") in v.findings[0].message
    bad_request = corpus.checkpoint_run(tmp_path / "b")
    m = json.loads((bad_request / "manifest.json").read_text())
    m["request"]["num_processes"] = "eight"
    (bad_request / "manifest.json").write_text(json.dumps(m))
    v = verify_run(bad_request)
    assert v.verdict is Verdict.INVALID and any(f.rule_id == "run.manifest" for f in v.findings)


def test_paths_without_runs_and_debris_are_reported(tmp_path):
    corpus.checkpoint_run(tmp_path / "runs")
    (tmp_path / "runs" / ".checkpointing-x.abc.staging").mkdir()
    orphan = tmp_path / "runs" / "orphan"
    (orphan / "raw").mkdir(parents=True)
    (orphan / "scripts").mkdir()
    (tmp_path / "empty").mkdir()
    report = verify_runs([tmp_path / "runs", tmp_path / "empty", tmp_path / "nowhere"])
    reasons = {u.path: (u.reason, u.planned) for u in report.unused}
    assert reasons[str(orphan)][0].startswith("looks like a run directory but has no manifest.json")
    assert "staging" in reasons[str(tmp_path / "runs" / ".checkpointing-x.abc.staging")][0]
    assert not reasons[str(tmp_path / "runs" / ".checkpointing-x.abc.staging")][1]  # debris does not fail
    assert "no run directory" in reasons[str(tmp_path / "empty")][0]
    assert reasons[str(tmp_path / "nowhere")][0] == "does not exist"
    assert report.exit_code == EXIT_UNUSABLE
    only_debris = verify_runs([tmp_path / "runs" / "checkpointing-llama3-8b-1800000000"])
    assert only_debris.exit_code == EXIT_OK


def test_nothing_found_is_invalid_and_non_zero(tmp_path):
    report = verify_runs([tmp_path])
    assert report.verdict is Verdict.INVALID and report.exit_code == EXIT_UNUSABLE


def test_finalize_writes_verify_json_and_txt_into_the_run(tmp_path):
    run = corpus.checkpoint_run(tmp_path, nodes=4, seconds_between=0.0)
    verdict = verify_run(run)
    json_path, text_path = write_run_verdict(verdict)
    assert json_path == run / "verify.json" and text_path == run / "verify.txt"
    data = json.loads(json_path.read_text())
    assert data["schema"] == "mlps-slurm/verify/1" and data["verdict"] == "OPEN"
    findings = data["runs"][0]["findings"]
    assert findings[0]["verdict"] == "OPEN"  # worst first
    assert {f["rule_id"] for f in findings if f["verdict"] == "OPEN"} == {"ckpt.ranks_per_host", "ckpt.params"}
    text = text_path.read_text()
    assert "OPEN    ckpt.ranks_per_host" in text and f"run {verdict.run_id}: OPEN" in text


def test_verify_command_prints_writes_and_returns_the_exit_code(tmp_path):
    corpus.checkpoint_run(tmp_path, run_id="a")
    corpus.checkpoint_run(tmp_path, run_id="b", start=T0 + 7200)
    out: list[str] = []
    assert verify_command([str(tmp_path)], echo=out.append) == EXIT_OK
    assert not (tmp_path / "verify.json").exists()  # the directories checked are only read
    assert verify_command([str(tmp_path)], str(tmp_path / "report"), echo=out.append) == EXIT_OK
    assert (tmp_path / "report" / "verify.json").is_file() and (tmp_path / "report" / "verify.txt").is_file()
    assert "verify: 2 run(s)" in out[0]
    # As a submission, two full runs of one model cannot both be submitted.
    report = verify_runs([tmp_path], submission=True)
    assert report.verdict is Verdict.INVALID and report.groups[0].findings[0].rule_id == "ckpt.submission_runs"


def test_a_submission_tree_is_recognised_and_left_untouched(tmp_path):
    from mlps_slurm.bundle import make_bundle

    corpus.checkpoint_run(tmp_path / "runs")
    tree = make_bundle([tmp_path / "runs"], "acme", "sys1", tmp_path / "sub").tree
    before = {p.name: p.read_bytes() for p in tree.iterdir() if p.is_file()}
    out: list[str] = []
    assert verify_command([str(tree)], echo=out.append) == EXIT_OK
    assert "as a submission" in out[0] and "ckpt.submission_runs" in out[0]
    # Nothing written into the tree: its verify.json is the one SHA256SUMS covers.
    assert {p.name: p.read_bytes() for p in tree.iterdir() if p.is_file()} == before


def test_a_manifest_of_another_release_is_named_not_misread(tmp_path):
    """Manifests 1 (earlier release) and 2 are read; anything else is an INVALID finding naming the schema and the
    file, and `status` refuses it with the same words (exit 2), never a traceback."""
    import subprocess
    import sys

    run = corpus.checkpoint_run(tmp_path)
    m = json.loads((run / "manifest.json").read_text())
    m["schema"] = "mlps-slurm/manifest/9"
    (run / "manifest.json").write_text(json.dumps(m))
    v = verify_run(run)
    assert v.verdict.value == "INVALID" and v.findings[0].rule_id == "run.manifest"
    assert "mlps-slurm/manifest/9" in v.findings[0].message and str(run / "manifest.json") in v.findings[0].message
    proc = subprocess.run([sys.executable, "-m", "mlps_slurm", "status", str(run)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "mlps-slurm/manifest/9" in proc.stderr and "Traceback" not in proc.stderr
    (run / "manifest.json").write_bytes(b"\xff\xfe{")  # not UTF-8
    proc = subprocess.run([sys.executable, "-m", "mlps_slurm", "status", str(run)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "not UTF-8" in proc.stderr and "Traceback" not in proc.stderr


def test_exit_codes_closed_open_invalid_and_the_flag_that_relaxes_invalid(tmp_path):
    from mlps_slurm.verify import EXIT_INVALID

    closed = corpus.checkpoint_run(tmp_path / "c")
    open_ = corpus.checkpoint_run(tmp_path / "o", params={"checkpoint.fsync": "False"})
    invalid = corpus.checkpoint_run(tmp_path / "i", scale=0.5)
    unusable = corpus.checkpoint_run(tmp_path / "u", status="failed")

    def snapshot():
        return {(str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")}

    before = snapshot()
    out: list[str] = []
    assert verify_runs([closed]).verdict is Verdict.CLOSED and verify_command([str(closed)], echo=out.append) == 0
    assert verify_runs([open_]).verdict is Verdict.OPEN and verify_command([str(open_)], echo=out.append) == 0
    assert verify_runs([invalid]).verdict is Verdict.INVALID
    assert verify_command([str(invalid)], echo=out.append) == EXIT_INVALID == 4
    assert verify_command([str(invalid)], echo=out.append, allow_invalid=True) == EXIT_OK
    assert verify_command([str(unusable)], echo=out.append, allow_invalid=True) == EXIT_UNUSABLE
    assert snapshot() == before  # the directories checked are only read
