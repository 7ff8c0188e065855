from __future__ import annotations

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
