"""`mlps-slurm profiles list|show|validate|init` without a cluster."""

from __future__ import annotations

import yaml

from mlps_slurm.profile import load_profile
from mlps_slurm.profile.schema import SCHEMA


def test_list_names_every_example(cli):
    proc = cli("profiles", "list")
    assert proc.returncode == 0
    for name in ("localhost", "generic-cpu", "gpu-pyxis", "apptainer-site"):
        assert name in proc.stdout


def test_show_resolved_with_origin_prints_every_key(cli):
    proc = cli("profiles", "show", "generic-cpu", "--resolved", "--origin", "-o", "nodes.count=3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(SCHEMA)
    assert any(line.startswith("nodes.count") and "# -o nodes.count=3" in line for line in lines)
    assert any(line.startswith("slurm.partition ") and "generic-cpu.yaml:" in line for line in lines)
    assert any(line.startswith("slurm.gres") and "# default" in line for line in lines)


def test_show_without_resolved_prints_the_file(cli):
    proc = cli("profiles", "show", "gpu-pyxis")
    assert proc.returncode == 0
    assert proc.stdout.startswith("# A GPU cluster whose jobs run in enroot containers")


def test_validate_bad_profile_exits_2_with_location(cli, profile_file):
    path = profile_file("name: x\nnodes:\n  count: many\n")
    proc = cli("profiles", "validate", str(path))
    assert proc.returncode == 2
    assert f"{path}:3: nodes.count: expected an integer" in proc.stderr


def test_init_template_lists_every_key_and_loads(cli, tmp_path):
    out = tmp_path / "mysite.yaml"
    proc = cli("profiles", "init", "--name", "mysite", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    for key in SCHEMA:
        assert f"{key.split('.')[-1]}:" in text
    assert load_profile(str(out)).name == "mysite"
    assert yaml.safe_load(text)["slurm"]["time_limit"]["preflight"] == "00:10:00"  # quoted: not base-60
    again = cli("profiles", "init", "--output", str(out))
    assert again.returncode == 2 and "exists" in again.stderr
