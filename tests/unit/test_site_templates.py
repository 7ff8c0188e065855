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


def test_undefined_variable_names_the_site_template_file_and_line(tmp_path):
    site = tmp_path / "site-templates"
    site.mkdir()
    (site / "finalize.sbatch.j2").write_text('{% include "_header.sbatch.j2" %}\necho site\necho {{ partition_name }}\n'
                                             "{{ finalize | argv }}\n")
    proc = run_cli("render", "checkpointing", "--model", "llama3-8b", "--results-dir", str(tmp_path / "runs"),
                   "-o", f"templates.dir={site}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"template {site / 'finalize.sbatch.j2'}:3: 'partition_name' is undefined" in proc.stderr, proc.stderr
    assert "fix: use only the variables the plan provides: " in proc.stderr and "run_id" in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_syntax_error_names_the_site_template_file_and_line(tmp_path):
    site = tmp_path / "site-templates"
    site.mkdir()
    (site / "preflight.sbatch.j2").write_text("#!/bin/bash\necho ok\necho {{ run_id }\necho more\n")
    proc = run_cli("render", "checkpointing", "--model", "llama3-8b", "--results-dir", str(tmp_path / "runs"),
                   "-o", f"templates.dir={site}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"template {site / 'preflight.sbatch.j2'}:3: " in proc.stderr and "fix: correct the Jinja2 syntax" in \
        proc.stderr, proc.stderr


def _failing_submit(tmp_path, site):
    from mlps_slurm.benchmarks.checkpointing.plan import plan as plan_checkpointing
    from mlps_slurm.benchmarks.checkpointing.request import CheckpointingRequest
    from mlps_slurm.render import TemplateError
    from mlps_slurm.run import launch
    from tests.unit.fake_slurm import FakeSlurmBackend

    def planner(profile, run_id, run_dir, python):  # no engine probe: only the rendering is under test
        return plan_checkpointing(CheckpointingRequest(model="llama3-8b"), profile, run_id=run_id, run_dir=run_dir,
                                  python=python)

    backend = FakeSlurmBackend()
    runs = tmp_path / "runs"
    try:
        launch("submit", "checkpointing", planner, "localhost", [f"templates.dir={site}"], str(runs),
               backend=backend)
    except TemplateError as exc:
        assert backend.submitted == [] and (not runs.exists() or not any(runs.iterdir()))  # nothing submitted or left
        return str(exc)
    raise AssertionError("a broken site template was submitted")


def test_submit_with_an_undefined_variable_in_an_included_site_partial_names_the_partial_and_submits_nothing(
        tmp_path):
    site = tmp_path / "site-templates"
    site.mkdir()
    (site / "site_extra.j2").write_text("# site additions\nmodule purge\necho {{ cluster_name }}\n")
    (site / "checkpointing.sbatch.j2").write_text('#!/bin/bash\n{% include "site_extra.j2" %}\necho run\n')
    message = _failing_submit(tmp_path, site)
    assert message.startswith(f"template {site / 'site_extra.j2'}:3: 'cluster_name' is undefined"), message


def test_submit_with_a_syntax_error_in_a_site_template_names_the_line_and_submits_nothing(tmp_path):
    site = tmp_path / "site-templates"
    site.mkdir()
    (site / "finalize.sbatch.j2").write_text("#!/bin/bash\n{% for x in setup %}\necho {{ x }}\n{% endif %}\n")
    message = _failing_submit(tmp_path, site)
    assert message.startswith(f"template {site / 'finalize.sbatch.j2'}:4: "), message
