"""A site admin fixes a profile in one round: every problem is reported at once, each with file, line, key and fix;
an unknown `extends` or key suggests the closest name; `name:` must agree with the file's name."""

from __future__ import annotations

import pytest

from mlps_slurm.profile import ProfileError, load_profile
from mlps_slurm.profile import loader


@pytest.fixture
def site_dir(tmp_path, monkeypatch):
    """A private XDG profile directory (and no /etc one), so profiles can be found by name."""
    monkeypatch.setattr(loader, "SYSTEM_PROFILES", tmp_path / "no-etc")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    d = tmp_path / "xdg" / "mlps-slurm" / "site_profiles"
    d.mkdir(parents=True)
    return d


def problems_of(ref: str, overrides: tuple[str, ...] = ()) -> ProfileError:
    with pytest.raises(ProfileError) as err:
        load_profile(ref, list(overrides))
    return err.value


def test_every_mistake_of_a_profile_is_reported_in_one_error(profile_file):
    path = profile_file("name: mysite\n"            # 1
                        "slurm:\n"                  # 2
                        "  partitoin: batch\n"      # 3 unknown key
                        "nodes:\n"                  # 4
                        "  count: two\n"            # 5 wrong type
                        "launcher:\n"               # 6
                        "  mpi: openmpi\n"          # 7 bad value
                        "container:\n"              # 8
                        "  runtime: pyxis\n",       # 9 cross-key: pyxis without an image
                        "mysite.yaml")
    err = problems_of(str(path), ("nodes.cpus=0",))
    assert [(p.key, p.line) for p in err.problems] == [
        ("slurm.partitoin", 3), ("nodes.count", 5), ("launcher.mpi", 7), ("container.image", 9), ("nodes.cpus", None)]
    text = str(err)
    assert text.startswith("5 problems in the profile")
    lines = text.splitlines()
    assert f"{path}:3: slurm.partitoin: unknown key; did you mean 'slurm.partition'?" in lines
    assert f"{path}:5: nodes.count: expected an integer, got a string 'two'" in lines
    assert f"{path}:7: launcher.mpi: must be one of pmix, pmi2, none, got 'openmpi'" in lines
    assert any(line.startswith(f"{path}:9: container.image: ") and "container.runtime" in line for line in lines)
    assert "-o: nodes.cpus: must be at least 1, got 0" in lines
    assert sum(line.startswith("  fix: ") for line in lines) == 5  # every problem says how to fix it


def test_a_single_problem_keeps_its_one_problem_wording(profile_file):
    path = profile_file("name: x\nnodes:\n  count: two\n", "x.yaml")
    err = problems_of(str(path))
    assert str(err).startswith(f"{path}:3: nodes.count: expected an integer") and err.problems == [err]


def test_duplicate_keys_are_reported_with_the_other_problems(profile_file):
    path = profile_file("name: x\nslurm:\n  qos: a\n  qos: b\nnodes:\n  count: 0\n", "x.yaml")
    err = problems_of(str(path))
    assert [(p.line, p.key) for p in err.problems] == [(4, None), (6, "nodes.count")]
    assert "slurm.qos is given twice, on lines 3 and 4" in str(err) and "must be at least 1" in str(err)


def test_a_refused_value_raises_no_follow_on_cross_key_problem(profile_file):
    # runtime "docker" is refused, so the runtime stays "none": "an image is set without a runtime" would only
    # send the admin after a problem that does not exist.
    path = profile_file("name: x\ncontainer:\n  runtime: docker\n  image: img.sif\n", "x.yaml")
    err = problems_of(str(path))
    assert [p.key for p in err.problems] == ["container.runtime"]


def test_unknown_extends_names_file_and_line_and_suggests_the_closest_profile(profile_file):
    path = profile_file("name: mysite\ndescription: GPU nodes\nextends: gpu-pyxiss\n", "mysite.yaml")
    err = problems_of(str(path))
    assert str(err).startswith(f"{path}:3: extends: unknown profile 'gpu-pyxiss'; did you mean 'gpu-pyxis'?")
    assert "available profiles: " in str(err) and "fix: use 'gpu-pyxis'" in str(err)
    assert (err.source, err.line, err.key) == (str(path), 3, "extends")


def test_broken_extends_is_reported_with_the_files_own_problems_and_no_follow_ons(site_dir):
    # The child has no name of its own (it would come from the parent): "name is required" would be a follow-on.
    (site_dir / "child.yaml").write_text("extends: generic-cpux\nnodes:\n  count: 0\n")
    err = problems_of("child")
    assert [(p.key, p.line) for p in err.problems] == [("extends", 1), ("nodes.count", 3)]
    assert "did you mean 'generic-cpu'?" in str(err)


def test_unknown_profile_by_name_suggests_the_closest():
    err = problems_of("localhots")
    assert "unknown profile 'localhots'; did you mean 'localhost'?" in str(err)


def test_unknown_key_without_a_close_match_suggests_nothing(profile_file):
    path = profile_file("name: x\nzzzzqqq: 1\n", "x.yaml")
    assert "did you mean" not in str(problems_of(str(path)))


def test_name_that_disagrees_with_the_file_name_names_both_and_the_fix(profile_file):
    path = profile_file("name: othersite\nnodes:\n  count: 2\n", "mysite.yaml")
    err = problems_of(str(path))
    assert str(err) == (f"{path}:1: name: name 'othersite' differs from the file's name 'mysite.yaml': "
                        "`--profile mysite` finds this file, but runs would record it as 'othersite'\n"
                        "  fix: write `name: mysite`, or rename the file to othersite.yaml")


def test_name_mismatch_in_a_parent_profile_is_reported_too(site_dir):
    (site_dir / "base.yaml").write_text("name: oldbase\nnodes:\n  count: 2\n")
    (site_dir / "site.yaml").write_text("name: site\nextends: base\n")
    err = problems_of("site")
    assert err.source == str(site_dir / "base.yaml") and "name 'oldbase' differs from" in str(err)


def test_a_profile_without_its_own_name_takes_the_parents(site_dir):
    # /etc/mlps-slurm/site_profiles/default.yaml is often only `extends: mysite`: it is an alias, not a mismatch.
    (site_dir / "mysite.yaml").write_text("name: mysite\nnodes:\n  count: 2\n")
    (site_dir / "default.yaml").write_text("extends: mysite\n")
    profile = load_profile("default")
    assert profile.name == "mysite" and profile.get("nodes.count") == 2


def test_validate_prints_every_problem_and_exits_2(cli, profile_file):
    path = profile_file("name: othersite\nslurm:\n  partitoin: b\nnodes:\n  count: two\n", "mysite.yaml")
    proc = cli("profiles", "validate", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("mlps-slurm: error: 3 problems in the profile")
    for fragment in (f"{path}:1: name: name 'othersite' differs", f"{path}:3: slurm.partitoin: unknown key",
                     f"{path}:5: nodes.count: expected an integer"):
        assert fragment in proc.stderr


def test_init_names_the_profile_after_its_file_and_refuses_a_different_name(cli, tmp_path):
    out = tmp_path / "clusterb.yaml"
    proc = cli("profiles", "init", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert load_profile(str(out)).name == "clusterb"
    other = cli("profiles", "init", "--name", "clustera", "--output", str(tmp_path / "clusterc.yaml"))
    assert other.returncode == 2 and "use --output clustera.yaml" in other.stderr
    assert not (tmp_path / "clusterc.yaml").exists()
