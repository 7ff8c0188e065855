"""Profiles that would lose an admin's edit or crash the loader: duplicate keys, non-UTF-8 text, a directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlps_slurm.profile import ProfileError, load_profile


def test_a_key_given_twice_names_both_lines(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("name: site\nslurm:\n  partition: batch\n  qos: high\n  qos: normal\n")
    with pytest.raises(ProfileError) as err:
        load_profile(str(path))
    text = str(err.value)
    assert "slurm.qos is given twice, on lines 4 and 5" in text and f"{path}:5" in text


def test_duplicate_top_level_sections_are_refused_too(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("name: site\nengines:\n  training:\n    engine: dlio\nengines:\n  training:\n    path: /x\n")
    with pytest.raises(ProfileError, match="engines is given twice, on lines 2 and 5"):
        load_profile(str(path))


def test_non_utf8_profiles_name_the_file_and_line(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_bytes(b"name: site\nslurm:\n  partition: b\xe4tch\n")
    with pytest.raises(ProfileError) as err:
        load_profile(str(path))
    assert f"{path}:3" in str(err.value) and "not UTF-8" in str(err.value) and "save the profile as UTF-8" in \
        str(err.value)


def test_a_directory_is_not_a_profile(tmp_path):
    with pytest.raises(ProfileError, match="is a directory, not a YAML file"):
        load_profile(f"{tmp_path}/")


def test_the_default_profile_comes_from_the_environment_or_a_site_default(tmp_path, monkeypatch):
    from mlps_slurm.profile import default_profile_ref

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert default_profile_ref({}) == "localhost"
    site = tmp_path / "cfg" / "mlps-slurm" / "site_profiles"
    site.mkdir(parents=True)
    (site / "default.yaml").write_text("name: default\nextends: generic-cpu\n")
    assert default_profile_ref({}) == "default"
    assert load_profile(default_profile_ref({})).get("slurm.partition") == "compute"
    assert default_profile_ref({"MLPS_PROFILE": "gpu-pyxis"}) == "gpu-pyxis"


def test_shared_parents_of_a_per_user_results_directory_stay_open_to_other_users(tmp_path, monkeypatch):
    import stat as st

    from mlps_slurm.rundir import make_results_root

    shared = tmp_path / "shm"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setenv("USER", "alice")
    make_results_root(shared / "mlps-slurm" / "alice" / "runs")
    assert st.S_IMODE((shared / "mlps-slurm").stat().st_mode) == 0o1777  # bob can create his directory here
    assert st.S_IMODE((shared / "mlps-slurm" / "alice").stat().st_mode) != 0o1777
    private = tmp_path / "home"
    private.mkdir(mode=0o755)
    make_results_root(private / "a" / "b")
    assert st.S_IMODE((private / "a").stat().st_mode) != 0o1777


def test_a_results_parent_another_user_owns_is_named_with_its_owner_and_mode(tmp_path, monkeypatch):
    from mlps_slurm.rundir import make_results_root

    theirs = tmp_path / "mlps-slurm"
    theirs.mkdir(mode=0o755)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == theirs else real_access(p, m))
    with pytest.raises(PermissionError) as caught:
        make_results_root(theirs / "bob" / "runs")
    assert caught.value.filename == str(theirs)
    assert "cannot create 'bob' here" in caught.value.strerror and "mode 0755" in caught.value.strerror
    assert not (theirs / "bob").exists()


def test_the_site_default_is_chosen_and_explained(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mlps_slurm.cli.main import main
    from mlps_slurm.profile.loader import default_profile_choice

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_profile_choice({})[0] == "localhost"
    assert default_profile_choice({"MLPS_SLURM_PROFILE": "gpu-pyxis", "MLPS_PROFILE": "x"}) == \
        ("gpu-pyxis", "$MLPS_SLURM_PROFILE is set")
    assert default_profile_choice({"MLPS_PROFILE": "generic-cpu"})[0] == "generic-cpu"  # the older name
    site = tmp_path / "xdg" / "mlps-slurm" / "site_profiles"
    site.mkdir(parents=True)
    (site / "default.yaml").write_text("extends: gpu-pyxis\n")
    ref, why = default_profile_choice({})
    assert ref == "default" and str(site / "default.yaml") in why
    monkeypatch.delenv("MLPS_SLURM_PROFILE", raising=False)
    monkeypatch.delenv("MLPS_PROFILE", raising=False)
    result = CliRunner().invoke(main, ["profiles", "show"])
    assert result.exit_code == 0 and "extends: gpu-pyxis" in result.stdout
    assert "the profile in force without --profile is 'default'" in result.stderr
