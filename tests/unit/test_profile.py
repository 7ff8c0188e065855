"""Site profile loading: defaults, layering, extends, overrides, and errors that name file, key and line."""

from __future__ import annotations

import getpass
import os

import pytest

from mlps_slurm.profile import ProfileError, load_profile
from mlps_slurm.profile.schema import SCHEMA


def test_localhost_profile_resolves_with_defaults():
    p = load_profile("localhost")
    assert p.get("slurm.partition") == "debug"
    assert p.get("launcher.mpi") == "pmix"
    assert p.get("slurm.account") is None  # schema default
    assert p.origins["slurm.account"] == "default"
    assert p.origins["slurm.partition"].endswith("localhost.yaml:7")
    assert p.get("storage.results_dir") == f"/dev/shm/mlps-slurm-{getpass.getuser()}/runs"
    assert p.get("storage.data_dir") == os.path.expanduser("~/mlps-slurm/data")
    assert set(p.values) == set(SCHEMA)


def test_extends_and_override_order(profile_file, tmp_path):
    base = profile_file("name: base\nnodes:\n  count: 8\nslurm:\n  qos: normal\n", "base.yaml")
    child = profile_file(f"name: child\nextends: {base}\nnodes:\n  count: 2\n", "child.yaml")
    p = load_profile(str(child), ["slurm.qos=high"])
    assert p.get("nodes.count") == 2 and p.origins["nodes.count"] == f"{child}:4"
    assert p.get("slurm.qos") == "high" and p.origins["slurm.qos"] == "-o slurm.qos=high"
    p = load_profile(str(child))
    assert p.get("slurm.qos") == "normal" and p.origins["slurm.qos"] == f"{base}:5"


def test_xdg_profile_shadows_packaged_one(tmp_path, monkeypatch):
    d = tmp_path / "xdg" / "mlps-slurm" / "site_profiles"
    d.mkdir(parents=True)
    (d / "localhost.yaml").write_text("name: localhost\nnodes:\n  count: 1\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert load_profile("localhost").get("nodes.count") == 1


def test_layering_packaged_then_etc_then_xdg_then_path_then_overrides(tmp_path, monkeypatch):
    from mlps_slurm.profile import loader

    etc = tmp_path / "etc"
    xdg = tmp_path / "xdg" / "mlps-slurm" / "site_profiles"
    etc.mkdir()
    xdg.mkdir(parents=True)
    monkeypatch.setattr(loader, "SYSTEM_PROFILES", etc)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (etc / "site.yaml").write_text("name: site\nnodes:\n  count: 2\nslurm:\n  qos: etc\n")
    assert load_profile("site").get("slurm.qos") == "etc"
    (etc / "localhost.yaml").write_text("name: localhost\nnodes:\n  count: 3\n")
    assert load_profile("localhost").get("nodes.count") == 3  # /etc shadows the packaged profile
    (xdg / "site.yaml").write_text("name: site\nextends: localhost\nslurm:\n  qos: xdg\n")
    p = load_profile("site")
    assert p.get("slurm.qos") == "xdg" and p.get("nodes.count") == 3  # XDG wins; extends reaches /etc's file
    assert load_profile("site", ["slurm.qos=cli"]).get("slurm.qos") == "cli"
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text("name: explicit\nslurm:\n  qos: path\n")
    assert load_profile(str(explicit)).get("slurm.qos") == "path"


@pytest.mark.parametrize("text, line, fragments", [
    ("name: x\nslurm:\n  partition: [a\n", 4, ["malformed YAML", "column"]),
    ("name: x\nslurm:\n  partitoin: debug\n", 3, ["slurm.partitoin", "did you mean 'slurm.partition'"]),
    ("name: x\nnodes:\n  count: two\n", 3, ["nodes.count", "expected an integer, got a string 'two'"]),
    ("name: x\nnodes:\n  count: 0\n", 3, ["nodes.count", "must be at least 1"]),
    ("name: x\nlauncher:\n  mpi: openmpi\n", 3, ["launcher.mpi", "must be one of pmix, pmi2, none"]),
    ("name: x\nslurm:\n  time_limit:\n    run: 3 hours\n", 4, ["slurm.time_limit.run", "a Slurm time"]),
    ("name: x\nslurm: debug\n", 2, ["slurm", "expected a mapping"]),
    ("description: no name\n", None, ["name", "is required but missing"]),
    ("name: x\nenvironment:\n  env:\n    1BAD: x\n", 3, ["environment.env", "not a valid environment variable"]),
    ("name: x\nslurm:\n  partition: 'debug --wrap=x'\n", 3, ["slurm.partition", "a Slurm partition name"]),
    ("- just\n- a list\n", 1, ["top level must be a mapping"]),
    ("", None, ["the file is empty"]),
    ("name: x\nslurmm:\n  partition: debug\n", 2, ["slurmm", "did you mean 'slurm'"]),
    ("name: x\nnodes:\n  count: -1\n", 3, ["nodes.count", "must be at least 1"]),
    ("name: x\nnodes:\n  count: 1.5\n", 3, ["nodes.count", "expected an integer, got a number 1.5"]),
    ("name: x\nnodes:\n  count: true\n", 3, ["nodes.count", "expected an integer, got a boolean"]),
    ("name: x\nnodes:\n  memory_gb: lots\n", 3, ["nodes.memory_gb", "expected a number, got a string"]),
    ("name: x\nnodes:\n  cpus: 0\n", 3, ["nodes.cpus", "must be at least 1"]),
    ("name: x\nslurm:\n  exclusive: 'yes'\n", 3, ["slurm.exclusive", "expected true or false"]),
    ("name: x\nlauncher:\n  kind: aprun\n", 3, ["launcher.kind", "must be one of srun, mpirun"]),
    ("name: x\nlauncher:\n  extra_args: --cpu-bind=none\n", 3, ["launcher.extra_args", "expected a list"]),
    ("name: x\nlauncher:\n  extra_args: [[a]]\n", 3, ["launcher.extra_args", "item 0: expected a string"]),
    ("name: x\nenvironment:\n  modules: ['bad module']\n", 3, ["environment.modules", "a module name"]),
    ("name: x\nenvironment:\n  env: [A=1]\n", 3, ["environment.env", "expected a mapping"]),
    ("name: x\nenvironment:\n  env:\n    A: {b: 1}\n", 3, ["environment.env", "A: expected a string value"]),
    ("name: x\ncontainer:\n  runtime: docker\n", 3, ["container.runtime", "must be one of none, pyxis"]),
    ("name: x\ncontainer:\n  runtime: pyxis\n", None, ["container.image", "is required when container.runtime"]),
    ("name: x\nlauncher:\n  kind: mpirun\ncontainer:\n  runtime: pyxis\n  image: img\n", 3,
     ["launcher.kind", "must be srun"]),
    ("name: x\ncontainer:\n  image: img.sif\n", None, ["container.runtime", "container.image is set"]),
    ("name: x\ncontainer:\n  mounts: [relative/path]\n", 3, ["container.mounts", "an absolute SRC"]),
    ("name: x\nstorage:\n  results_dir: relative/runs\n", 3, ["storage.results_dir", "an absolute path"]),
    ("name: x\nstorage:\n  results_dir: $MLPS_SURELY_UNSET_VAR/runs\n", 3,
     ["storage.results_dir", "environment variable that is not set"]),
    ("name: x\nslurm:\n  time_limit:\n    run: 1-2-3\n", 4, ["slurm.time_limit.run", "a Slurm time"]),
    ("name: x\nslurm:\n  partitions:\n    gpu: a100\n", 4, ["slurm.partitions.gpu", "unknown key"]),
    ("name: x\nsubmission:\n  division: whatif\n", 3, ["submission.division", "must be one of closed, open"]),
    ("name: x\nsubmission:\n  organization: my org\n", 3, ["submission.organization", "letters, digits"]),
    ("name: has space\n", 1, ["name", "letters, digits"]),
    ("name: x\nextends: nosuchprofile\n", None, ["unknown profile 'nosuchprofile'"]),
    ("name: x\nslurm:\n  extra_directives: ['--mail-type FAIL']\n", 3,
     ["slurm.extra_directives", "item 0: expected one option"]),
    ("name: x\nslurm:\n  account: 'acct;rm -rf'\n", 3, ["slurm.account", "a Slurm account name"]),
    ("name: x\nslurm:\n\tpartition: debug\n", 3, ["malformed YAML", "column"]),
    ("name: x\nstorage: [a, b]\n", 2, ["storage", "expected a mapping"]),
    ("name: x\ndescription: [a]\n", 2, ["description", "expected a string, got a list"]),
])
def test_bad_profiles_name_file_key_and_line(profile_file, text, line, fragments):
    path = profile_file(text, "x.yaml")  # the file's name matches `name: x`: each case has exactly one problem
    with pytest.raises(ProfileError) as err:
        load_profile(str(path))
    message = str(err.value)
    if "unknown profile" not in message:
        assert message.startswith(str(path) + (f":{line}" if line else ""))
    for fragment in fragments:
        assert fragment in message
    assert "fix:" in message or "column" in message


def test_extends_cycle_is_reported(profile_file):
    a = profile_file("name: a\nextends: b.yaml\n", "a.yaml")
    profile_file("name: b\nextends: a.yaml\n", "b.yaml")
    with pytest.raises(ProfileError, match="cycle"):
        load_profile(str(a))
