"""Bad input on the command line: a message naming the valid choices, exit code 2, nothing left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.mark.parametrize("args, expected", [
    (["submit", "trainingz", "--model", "x"],
     "unknown benchmark 'trainingz'; valid benchmarks: all, checkpointing, kvcache, training, vectordb"),
    (["render", "bogus"], "valid benchmarks: all, checkpointing, kvcache, training, vectordb"),
    (["submit", "checkpointing", "--model", "llama3-13b"], "'llama3-8b', 'llama3-70b', 'llama3-405b', 'llama3-1t'"),
    (["submit", "checkpointing", "--model", "llama3-8b", "--frobnicate"], "No such option '--frobnicate'"),
    (["submit", "checkpointing", "--model", "llama3-8b", "--profile", "nosuchsite"],
     "unknown profile 'nosuchsite'; available profiles: apptainer-site, generic-cpu, gpu-pyxis, localhost"),
    (["submit", "checkpointing", "--model", "llama3-8b", "-o", "nodes.cout=2"], "did you mean 'nodes.count'"),
    (["submit", "checkpointing", "--model", "llama3-8b", "--scale", "2"], "--scale"),
    (["submit", "checkpointing", "--model", "llama3-405b", "-n", "12"], "must be a multiple of 256"),
    (["submit", "checkpointing", "--model", "llama3-8b", "--engine", "dlio"], "no llama3 checkpoint workloads"),
    (["submit", "training", "--model", "dlrm", "--accelerator", "b200"], "parquet"),
    (["submit", "all", "--benchmarks", "training,nosuch"], "--benchmarks nosuch"),
    (["submit", "all", "-o", "suite.benchmarks=[]"], "suite.benchmarks is empty"),
    (["submit", "all", "-o", "suite.benchmarks=[nosuch]"],
     "suite.benchmarks: item 0: must be one of training, checkpointing, kvcache, vectordb"),
    (["submit", "all", "-o", "suite.training.models=[dlrm]"],
     "training dlrm (profile localhost: suite.training.models)"),
    (["submit", "all", "-o", "suite.training.params=[reader.batch_size=3]"],
     "the --param values come from the profile's suite.training.params"),
    (["submit", "all", "--nodes", "9"], "--nodes 9: the profile allows 4"),
])
def test_bad_input_exits_2_and_writes_nothing(cli, tmp_path, args, expected):
    results = tmp_path / "runs"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    known = args[0] in ("submit", "render") and args[1] in ("checkpointing", "training", "all")
    proc = cli(*args, "--results-dir", str(results), env=env) if known else cli(*args, env=env)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert not results.exists() or not any(results.iterdir())


@pytest.mark.parametrize("conf_text", [None, "ClusterName=x\nSlurmctldHost=localhost\nSlurmctldPort=1\n"])
def test_slurm_unreachable_says_how_to_start_it(cli, tmp_path, conf_text):
    conf = tmp_path / "slurm.conf"  # missing, or naming a controller that is not running
    if conf_text:
        conf.write_text(conf_text)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    results = tmp_path / "runs"
    proc = cli("submit", "checkpointing", "--model", "llama3-8b", "--scale", "0.001", "--results-dir",
               str(results), env=env)
    assert proc.returncode == 3, proc.stderr
    assert "bin/mlps-local-cluster up" in proc.stderr
    assert not results.exists() or not any(results.iterdir())


def test_render_writes_run_dir_and_submits_nothing(cli, tmp_path):
    results = tmp_path / "runs"
    proc = cli("render", "checkpointing", "--model", "llama3-8b", "--scale", "0.01", "--results-dir", str(results))
    assert proc.returncode == 0, proc.stderr
    (run,) = [p for p in results.iterdir()]
    assert sorted(p.name for p in (run / "scripts").iterdir()) == [
        "00-preflight.sbatch", "01-checkpointing.sbatch", "02-finalize.sbatch"]
    import json

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["state"] == "rendered" and manifest["jobs"] == {}
    assert (run / "profile.resolved.yaml").is_file()
    assert not [p for p in results.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_help_does_not_import_the_work():
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from mlps_slurm.cli.main import main; "
            "r = CliRunner().invoke(main, ['submit', 'checkpointing', '--help']); assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('jinja2', 'yaml', 'mlps_slurm.plan', 'mlps_slurm.chain') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_render_json_is_one_document_on_stdout(cli, tmp_path):
    import json

    proc = cli("render", "checkpointing", "--model", "llama3-8b", "--json", "--results-dir", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    run = tmp_path / "runs" / doc["run_id"]
    assert doc["run_dir"] == str(run) and doc["queued"] is False and doc["benchmark"] == "checkpointing"
    assert [Path(s).name for s in doc["scripts"]] == sorted(p.name for p in (run / "scripts").iterdir())
    assert "rendered" in proc.stderr and "pre-run rules check" in proc.stderr
