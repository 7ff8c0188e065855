"""The submission bundle: layout, divisions, checksums, tampering, atomicity, and the parallel gzip stream."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile

import pytest

from mlps_slurm.bundle import (
    BundleError,
    ParallelGzipWriter,
    build_bundle,
    bundle_command,
    check_bundle,
    check_command,
    make_bundle,
)
from mlps_slurm.rules.core import Verdict
from tests.unit import rules_corpus as corpus
from tests.unit.rules_corpus import T0


@pytest.fixture
def runs(tmp_path):
    """A CLOSED checkpointing run, an OPEN one (another model), a CLOSED training chain, a scaled run."""
    d = tmp_path / "runs"
    corpus.checkpoint_run(d, run_id="ckpt-8b")
    corpus.checkpoint_run(d, run_id="ckpt-70b", model="llama3-70b", np_=64, nodes=16, start=T0 + 3600)
    corpus.training_run(d, run_id="train-unet3d")
    corpus.checkpoint_run(d, run_id="ckpt-405b-scaled", model="llama3-405b", scale=0.001, start=T0 + 7200)
    return d


def test_bundle_layout_divisions_and_refusals(runs, tmp_path):
    result = make_bundle([runs], "acme", "sys1", tmp_path / "sub")
    out = tmp_path / "sub"
    assert result.tarball == out / "sub.tar.gz" and result.tarball.is_file()
    ckpt = out / "closed/acme/results/sys1/checkpointing/llama3-8b"
    assert (ckpt / "results.json").is_file()
    [ts] = [p for p in ckpt.iterdir() if p.is_dir()]
    assert ts.name == "20270115_080000"  # the run's first write, UTC
    for rel in ("manifest.json", "scripts/00-preflight.sbatch", "raw/checkpointing/llama3-8b/engine.json",
                "results/results.json", "preflight/preflight.json"):
        assert (ts / rel).is_file(), rel
    # 64 ranks on 16 hosts: 4 per host, the CLOSED minimum.
    assert (out / "closed/acme/results/sys1/checkpointing/llama3-70b").is_dir()
    training = out / "closed/acme/results/sys1/training/unet3d"
    assert len([p for p in (training / "run").iterdir() if p.is_dir()]) == 6
    assert (training / "run/results.json").is_file() and (training / "datagen").is_dir()
    assert not (out / "invalid").exists() and not (out / "open").exists()
    # The scaled run is refused, with the rule that decided it.
    [refused] = result.refused
    assert refused.path.endswith("ckpt-405b-scaled") and "ckpt.scaled" in refused.reason
    assert result.exit_code == 1
    # Top-level files.
    top = json.loads((out / "results.json").read_text())
    assert {r["run_id"] for r in top["runs"]} == {"ckpt-8b", "ckpt-70b", "train-unet3d"}
    assert top["not_included"][0]["reason"].startswith("INVALID: ckpt.scaled")
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert {r["division"] for r in rows} == {"closed"} and len(rows) == 3
    assert float(next(r for r in rows if r["run_id"] == "ckpt-8b")["write_GBps_mean"]) > 0
    system = (out / "closed/acme/systems/sys1.yaml").read_text()
    # The runs share one cluster: n001..n016 (n001 also ran the 8b and training runs).
    assert "AMD EPYC 9454" in system and "node_count: 16" in system and "simultaneous_read__support: true" in system


def test_sha256sums_cover_every_file_and_match(runs, tmp_path):
    result = make_bundle([runs], "acme", "sys1", tmp_path / "sub")
    out = result.tree
    listed = {}
    for line in (out / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert set(listed) == on_disk - {"SHA256SUMS", "sub.tar.gz"}
    for name, digest in listed.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out).returncode == 0
    with tarfile.open(result.tarball) as tar:
        names = {m.name for m in tar.getmembers() if m.isfile()}
    assert names == {f"sub/{n}" for n in on_disk - {"sub.tar.gz"}}


def test_check_bundle_passes_and_rerun_rules_agree(runs, tmp_path):
    tarball = build_bundle([runs], "acme", "sys1", tmp_path / "sub")
    check = check_bundle(tarball)
    assert check.ok, check.problems
    assert check.files_checked > 50
    assert {r.run_id for r in check.report.runs} == {"ckpt-8b", "ckpt-70b", "train-unet3d"}
    assert all(r.verdict is Verdict.CLOSED for r in check.report.runs)
    out: list[str] = []
    assert check_command(str(tarball), echo=out.append) == 0 and "OK" in out[0]


def _rewrite(tarball, change):
    """Rebuild the tarball with `change(name, data) -> data` applied to every file (a tamperer's edit)."""
    with tarfile.open(tarball) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(tarball, "w:gz") as tar:
        for m, data in members:
            if data is None:
                tar.addfile(m)
                continue
            data = change(m.name, data)
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))


def test_tampering_with_a_bundled_file_fails_the_check(runs, tmp_path):
    tarball = build_bundle([runs], "acme", "sys1", tmp_path / "sub")

    def faster(name, data):
        if name.endswith("llama3-8b/results.json"):
            doc = json.loads(data)
            doc["runs"][0]["metrics"]["write_GBps_mean"] *= 2
            return json.dumps(doc).encode()
        return data

    _rewrite(tarball, faster)
    check = check_bundle(tarball)
    assert not check.ok
    assert any("llama3-8b/results.json: SHA-256 mismatch" in p for p in check.problems), check.problems
    assert check_command(str(tarball), echo=lambda s: None) == 1


def test_an_added_file_and_a_changed_engine_output_fail_the_check(runs, tmp_path):
    tarball = build_bundle([runs], "acme", "sys1", tmp_path / "sub")
    with tarfile.open(tarball) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(tarball, "w:gz") as tar:
        for m, data in members:
            if data is not None and m.name.endswith("llama3-8b/engine.json"):
                raw = json.loads(data)
                raw["fsync"] = False  # a changed engine output: checksum and rules both catch it
                data = json.dumps(raw).encode()
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
        extra = tarfile.TarInfo("sub/closed/acme/notes.txt")
        extra.size = 3
        tar.addfile(extra, io.BytesIO(b"hi\n"))
    problems = check_bundle(tarball).problems
    assert any("engine.json: SHA-256 mismatch" in p for p in problems)
    assert any("notes.txt: not covered by SHA256SUMS" in p for p in problems)
    assert any("under closed/ but re-verifies as INVALID" in p for p in problems)


def test_unsafe_or_truncated_tarballs_are_problems(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    assert any("unsafe member path" in p for p in check_bundle(evil).problems)
    assert not (tmp_path.parent / "escape.txt").exists()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 20)
    assert any("unreadable or truncated" in p for p in check_bundle(cut).problems)
    assert "no such file" in check_bundle(tmp_path / "none.tar.gz").problems[0]


def test_invalid_runs_only_with_the_allow_flag_and_never_in_closed(tmp_path):
    d = tmp_path / "runs"
    corpus.checkpoint_run(d, run_id="scaled", scale=0.001, nodes=4, seconds_between=0.0)
    with pytest.raises(BundleError, match="nothing to bundle.*ckpt.scaled"):
        make_bundle([d], "acme", "sys1", tmp_path / "sub")
    assert not (tmp_path / "sub").exists()
    result = make_bundle([d], "acme", "sys1", tmp_path / "sub", allow_invalid=True)
    assert (result.tree / "invalid/acme/results/sys1/checkpointing/llama3-8b").is_dir()
    assert check_bundle(result.tarball).ok


def test_open_runs_go_under_open(tmp_path):
    d = tmp_path / "runs"
    corpus.checkpoint_run(d, run_id="open", np_=16, nodes=2)
    result = make_bundle([d], "acme", "sys1", tmp_path / "sub")
    assert [(r.run_id, div) for r, div in result.included] == [("open", Verdict.OPEN)]
    assert (result.tree / "open/acme/results/sys1/checkpointing/llama3-8b").is_dir()
    assert (result.tree / "open/acme/systems/sys1.yaml").is_file()


def test_two_runs_of_one_model_are_refused_by_the_submission_rule(tmp_path):
    d = tmp_path / "runs"
    corpus.checkpoint_run(d, run_id="a")
    corpus.checkpoint_run(d, run_id="b", start=T0 + 7200)
    with pytest.raises(BundleError, match="ckpt.submission_runs"):
        make_bundle([d], "acme", "sys1", tmp_path / "sub")
    result = make_bundle([d / "a"], "acme", "sys1", tmp_path / "sub")  # choosing one works
    assert result.exit_code == 0


def test_a_failure_mid_build_leaves_no_bundle_and_no_staging(runs, tmp_path):
    calls = {"n": 0}

    def crash(entry):
        calls["n"] += 1
        if calls["n"] == 20:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        make_bundle([runs], "acme", "sys1", tmp_path / "sub", _before_each=crash)
    assert calls["n"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no sub/, no .sub.staging-*


def test_refuses_to_overwrite_and_bad_names(runs, tmp_path):
    (tmp_path / "sub").mkdir()
    with pytest.raises(BundleError, match="already exists"):
        make_bundle([runs], "acme", "sys1", tmp_path / "sub")
    with pytest.raises(BundleError, match="organization 'acme corp'"):
        make_bundle([runs], "acme corp", "sys1", tmp_path / "other")
    out: list[str] = []
    assert bundle_command([str(runs)], "acme", "sys/1", str(tmp_path / "x"), echo=out.append) == 2
    assert "system name" in out[0]


@pytest.mark.parametrize("size,block,workers", [(0, 1 << 16, 2), (1, 1 << 16, 2), (300_000, 1 << 16, 3),
                                                (1 << 20, 1 << 16, 1), (200_003, 32768, 4)])
def test_parallel_gzip_is_ordinary_gzip(tmp_path, size, block, workers):
    # Half repetitive (long back-references across blocks), half incompressible.
    data = bytes((i * 7 + i // 300) % 251 for i in range(size // 2)) + os.urandom(size - size // 2)
    path = tmp_path / "x.gz"
    with open(path, "wb") as fh:
        gz = ParallelGzipWriter(fh, workers=workers, block=block)
        for i in range(0, len(data), 7777):  # odd write sizes cross block boundaries
            gz.write(data[i:i + 7777])
        gz.close()
    assert gzip.decompress(path.read_bytes()) == data
    assert subprocess.run(["gzip", "-t", str(path)]).returncode == 0


def test_check_reports_a_tarball_of_dot_entries_instead_of_crashing(tmp_path):
    import subprocess as sp

    from mlps_slurm.bundle import check_bundle

    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "SHA256SUMS").write_text("")
    tarball = tmp_path / "dots.tar.gz"
    sp.run(["tar", "czf", str(tarball), "-C", str(tmp_path / "tree"), "."], check=True)
    result = check_bundle(tarball)
    assert not result.ok
    assert any("names no file" in p for p in result.problems)
