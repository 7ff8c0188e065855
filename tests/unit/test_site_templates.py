"""Admins override packaged templates by file name without forking; a broken site template is named with its line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "mlps_slurm", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_site_template_directory_overrides_by_name(tmp_path):
    site = tmp_path / "site-templates"
    site.mkdir()
    (site / "finalize.sbatch.j2").write_text(
        '{% include "_header.sbatch.j2" %}\necho "site finalize for {{ run_id }}"\n{{ finalize | argv }}\n')
    proc = run_cli("render", "checkpointing", "--model", "llama3-8b", "--results-dir", str(tmp_path / "runs"),
                   "-o", f"templates.dir={site}")
    assert proc.returncode == 0, proc.stderr
    (run,) = list((tmp_path / "runs").iterdir())
    final = (run / "scripts" / "02-finalize.sbatch").read_text()
    assert final.startswith("#!/bin/bash\n#SBATCH --job-name=mlps-finalize")  # the packaged header still applies
    assert f"echo 'site finalize for {run.name}'" not in final  # run_id is quoted as one word...
    assert f"site finalize for {run.name}" in final
    assert "mlps-slurm" in (run / "scripts" / "00-preflight.sbatch").read_text()  # not overridden: packaged


def test_broken_site_template_names_template_and_line_and_writes_nothing(tmp_path):
    site = tmp_path / "site-templates"
    site.mkdir()
    (site / "preflight.sbatch.j2").write_text('#!/bin/bash\necho ok\n{% if run_id %}\necho "unclosed"\n')
    proc = run_cli("render", "checkpointing", "--model", "llama3-8b", "--results-dir", str(tmp_path / "runs"),
                   "-o", f"templates.dir={site}")
    assert proc.returncode == 2
    assert "preflight.sbatch.j2:4" in proc.stderr or "preflight.sbatch.j2:5" in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_site_template_using_an_unknown_variable_is_refused(tmp_path):
    site = tmp_path / "site-templates"
    site.mkdir()
    (site / "finalize.sbatch.j2").write_text("#!/bin/bash\necho {{ partition_name }}\n")
    proc = run_cli("render", "checkpointing", "--model", "llama3-8b", "--results-dir", str(tmp_path / "runs"),
                   "-o", f"templates.dir={site}")
    assert proc.returncode == 2
    assert "finalize.sbatch.j2" in proc.stderr and "'partition_name' is undefined" in proc.stderr
