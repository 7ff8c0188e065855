"""A run directory the user may not read is named, with the cause, never a traceback (real users are not root,
and this machine's tests are: the permission error is raised the way the OS raises it for them)."""

from __future__ import annotations

import pytest

from mlps_slurm import rundir
from mlps_slurm.cli import commands


def test_unreadable_run_is_a_message_naming_the_manifest(tmp_path, monkeypatch, capsys):
    run = tmp_path / "kvcache-x"
    run.mkdir()

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self.manifest_path))

    monkeypatch.setattr(rundir.RunDirectory, "exists", denied)
    with pytest.raises(PermissionError, match="kvcache-x/manifest.json: permission denied"):
        rundir.resolve_run(str(run))
    assert commands.show_status(str(run), "localhost", [], False, 10) == 2
    err = capsys.readouterr().err
    assert "manifest.json: permission denied" in err and "another user" in err
