"""Lockfiles: parsing requirements.txt-style pins, verifying them against an environment, generating them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlps_slurm import lockfile

ROOT = Path(__file__).resolve().parents[2]

LOCK = """\
# a comment
click==8.5.1   # trailing comment
Jinja2 == 3.1.6
markupsafe===3.0.4
torch==2.13.0
mpi4py==4.1.2
numpy==2.4.6 \\
    --hash=sha256:abc \\
    --hash=sha256:def
dlio-benchmark @ git+https://github.com/argonne-lcf/dlio_benchmark@abc123
wheel @ https://example.org/wheel-0.1-py3-none-any.whl
pandas>=2,<4
--index-url https://pypi.org/simple
old-thing==1.0 ; python_version < "3.0"
"""


def pins_of(text: str) -> list[lockfile.Pin]:
    return lockfile.parse_text(text, "lock.txt")


def test_parse_kinds_versions_and_line_numbers():
    pins = {p.key: p for p in pins_of(LOCK)}
    assert pins["click"].version == "8.5.1" and pins["click"].line == 2
    assert pins["jinja2"].version == "3.1.6" and pins["jinja2"].name == "Jinja2"
    assert pins["markupsafe"].version == "3.0.4"
    assert pins["numpy"].version == "2.4.6" and pins["numpy"].line == 7
    assert pins["dlio-benchmark"].kind == "vcs" and pins["dlio-benchmark"].url.startswith("git+https://")
    assert pins["wheel"].kind == "url"
    assert pins["pandas"].kind == "spec" and pins["pandas"].spec == ">=2,<4"
    assert pins["old-thing"].marker == 'python_version < "3.0"'
    assert len(pins) == 10


def test_parse_errors_name_file_line_and_fix(tmp_path):
    with pytest.raises(lockfile.LockfileError, match=r"lock.txt:2: click has no version.*lockfile generate"):
        pins_of("numpy==1\nclick\n")
    with pytest.raises(lockfile.LockfileError, match=r"lock.txt:1: cannot read requirement"):
        pins_of("!!!\n")
    with pytest.raises(lockfile.LockfileError, match=r"cannot read lockfile .*missing.txt"):
        lockfile.parse(tmp_path / "missing.txt")


def test_verify_compares_versions_and_reports_mpi4py_and_vcs():
    installed = {"click": "8.5.1", "jinja2": "3.1.5", "markupsafe": "3.0.4", "torch": "2.13.0+cpu",
                 "mpi4py": "3.1.6", "numpy": "2.4.6", "dlio-benchmark": "2.0.0", "wheel": "0.1", "pandas": "3.1.1"}
    result = lockfile.check(pins_of(LOCK), installed)
    assert [(p.name, p.kind, p.installed) for p in result.problems] == [("Jinja2", "mismatch", "3.1.5")]
    assert result.problems[0].message == "Jinja2 3.1.5 is installed, the lockfile wants ==3.1.6"
    assert {p.name for p in result.not_compared} == {"mpi4py", "dlio-benchmark", "wheel"}
    mpi = next(p for p in result.not_compared if p.name == "mpi4py")
    assert "installed 3.1.6" in mpi.message and "site's MPI" in mpi.message
    # torch 2.13.0+cpu satisfies ==2.13.0 (PEP 440 local label); old-thing's marker does not apply here
    assert result.checked == 6 and not result.ok
    assert lockfile.verify(pins_of(LOCK), installed) == result.problems


def test_verify_missing_package():
    (problem,) = lockfile.verify(pins_of("nothere==1.0\n"), {})
    assert problem.kind == "missing" and problem.message == "nothere==1.0 is not installed"


def test_names_are_normalized():
    assert lockfile.verify(pins_of("Typing_Extensions==4.16.0\n"), {"typing-extensions": "4.16.0"}) == []


def test_plain_comparison_without_packaging(monkeypatch):
    monkeypatch.setitem(sys.modules, "packaging.specifiers", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "packaging.version", None)
    assert lockfile.verify(pins_of("torch==2.13.0\n"), {"torch": "2.13.0+cpu"}) == []
    assert lockfile.verify(pins_of("torch==2.13.0+cu121\n"), {"torch": "2.13.0+cpu"}) != []


def test_installed_versions_sees_this_environment():
    from importlib.metadata import version

    installed = lockfile.installed_versions()
    assert installed["click"] == version("click") and installed["pyyaml"] == version("PyYAML")


def test_generate_freezes_this_environment_and_verifies_clean(tmp_path):
    out = tmp_path / "requirements.lock"
    result = lockfile.generate(out)
    assert result.method == "freeze" and result.path == out
    text = out.read_text()
    assert text.startswith("# mlps-slurm lockfile (freeze)")
    pins = lockfile.parse(out)
    assert result.pins == len(pins)
    keys = {p.key for p in pins}
    assert {"click", "jinja2", "pyyaml", "mpi4py"} <= keys
    assert not keys & {"pip", "setuptools"}  # installer tooling is left out, as pip freeze does
    assert lockfile.verify(pins) == []


def test_generate_refuses_to_freeze_another_interpreter(tmp_path):
    with pytest.raises(lockfile.LockfileError, match="run `/other/python -m mlps_slurm lockfile generate`"):
        lockfile.generate(tmp_path / "x", python="/other/python")


def test_generate_from_input_uses_uv_when_on_path(tmp_path, monkeypatch):
    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout="click==8.5.1\npyyaml==6.0.4\n", stderr="")

    req = tmp_path / "requirements.in"
    req.write_text("click\npyyaml\n")
    monkeypatch.setattr(lockfile.shutil, "which", lambda name: "/usr/bin/uv" if name == "uv" else None)
    monkeypatch.setattr(lockfile.subprocess, "run", fake_run)
    result = lockfile.generate(tmp_path / "out.lock", req)
    assert result.method == "uv pip compile" and result.pins == 2
    assert calls[0][:4] == ["uv", "pip", "compile", str(req)]
    assert "pyyaml==6.0.4" in (tmp_path / "out.lock").read_text()


def test_generate_from_input_falls_back_to_pips_resolver(tmp_path, monkeypatch):
    report = ('{"install": [{"metadata": {"name": "PyYAML", "version": "6.0.4"}, "download_info": {}},'
              ' {"metadata": {"name": "click", "version": "8.5.1"}, "download_info": {}}]}')

    def fake_run(argv, **kwargs):
        assert argv[1:6] == ["-m", "pip", "install", "--dry-run", "--ignore-installed"]
        return subprocess.CompletedProcess(argv, 0, stdout=report, stderr="")

    req = tmp_path / "requirements.in"
    req.write_text("click\npyyaml\n")
    monkeypatch.setattr(lockfile.shutil, "which", lambda name: None)
    monkeypatch.setattr(lockfile.subprocess, "run", fake_run)
    result = lockfile.generate(tmp_path / "out.lock", req)
    assert result.method == "pip install --dry-run --report"
    body = [line for line in (tmp_path / "out.lock").read_text().splitlines() if not line.startswith("#")]
    assert body == ["click==8.5.1", "PyYAML==6.0.4"]


def test_generate_reports_resolver_failure(tmp_path, monkeypatch):
    req = tmp_path / "requirements.in"
    req.write_text("nonexistent-package-xyz\n")
    monkeypatch.setattr(lockfile.shutil, "which", lambda name: None)
    monkeypatch.setattr(lockfile.subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(
        argv, 1, stdout="", stderr="ERROR: No matching distribution found for nonexistent-package-xyz"))
    with pytest.raises(lockfile.LockfileError, match="pip could not resolve .*No matching distribution"):
        lockfile.generate(tmp_path / "out.lock", req)
    assert not (tmp_path / "out.lock").exists()


def test_project_requirements_parse_and_match_the_venv():
    """The repository's own pins read as a lockfile; this environment is built from them (make setup)."""
    pins = lockfile.parse(ROOT / "requirements" / "jobs.txt") + lockfile.parse(ROOT / "requirements" / "nodeps.txt")
    assert len(pins) > 20
    assert all(p.kind == "pinned" for p in pins)


def test_a_damaged_lockfile_and_an_existing_output_are_one_error_line(tmp_path):
    from click.testing import CliRunner

    from mlps_slurm.cli.main import main

    bad = tmp_path / "bad.lock"
    bad.write_bytes(b"click==8.1.7\nnumpy==1.0\xff\n")
    with pytest.raises(lockfile.LockfileError, match=r"bad.lock:2: not UTF-8"):
        lockfile.parse(bad)
    result = CliRunner().invoke(main, ["lockfile", "verify", str(bad)])
    assert result.exit_code == 2 and "not UTF-8" in result.output
    existing = tmp_path / "mlps-slurm.lock"
    existing.write_text("keep me\n")
    result = CliRunner().invoke(main, ["lockfile", "generate", "-O", str(existing)])
    assert result.exit_code == 2 and "--force" in result.output and existing.read_text() == "keep me\n"
