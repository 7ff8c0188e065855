"""A regular (non-editable) `pip install .` carries the templates and site profiles."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_non_editable_install_renders_from_its_own_copy(tmp_path):
    # Install from a copy of the source, so nothing can be found through the checkout afterwards.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build", "__pycache__",
                                                           ".pytest_cache", ".hypothesis"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(src)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    shutil.rmtree(src)
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = subprocess.run([str(venv / "bin" / "mlps-slurm"), "render", "checkpointing", "--model", "llama3-70b", "--nodes", "4",
                           "--results-dir", str(tmp_path / "runs")], capture_output=True, text=True, cwd=work,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    (run,) = list((tmp_path / "runs").iterdir())
    scripts = sorted(p.name for p in (run / "scripts").iterdir())
    assert scripts == ["00-preflight.sbatch", "01-checkpointing.sbatch", "02-finalize.sbatch"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["profile"]["name"] == "localhost"
    assert manifest["request"]["num_processes"] == 64
    text = (run / "scripts" / "01-checkpointing.sbatch").read_text()
    assert str(venv / "bin" / "python") in text  # jobs use the interpreter that ran mlps-slurm
    listing = subprocess.run([str(venv / "bin" / "mlps-slurm"), "profiles", "list"], capture_output=True, text=True,
                             cwd=work, check=True).stdout
    assert "localhost" in listing and str(venv) in listing
