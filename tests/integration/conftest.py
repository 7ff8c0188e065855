from __future__ import annotations

import os
import pwd
import subprocess

import pytest


@pytest.fixture(scope="session", autouse=True)
def slurm_cluster():
    """Integration tests run against the real local cluster; they fail (not skip) when it is not up."""
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"the local Slurm cluster is not reachable ({proc.stderr.strip()}); "
                    "start it with `bin/mlps-local-cluster up` (make test does this)")
    return proc.stdout


CI_USER = "mlpsci"  # a real cluster's users are never root: tests submit as this one too


@pytest.fixture
def ci_user() -> str:
    """The unprivileged user (created when missing; needs root, which CI and `make test` have)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create the CI user and submit as it")
    try:
        pwd.getpwnam(CI_USER)
    except KeyError:
        proc = subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", CI_USER], capture_output=True,
                              text=True)
        try:  # a concurrent run may have created it first, then useradd failing is fine
            pwd.getpwnam(CI_USER)
        except KeyError:
            pytest.fail(f"useradd {CI_USER} failed: {proc.stderr}")
    return CI_USER
