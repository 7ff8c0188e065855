from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def profile_file(tmp_path: Path):
    """Write a profile YAML into tmp_path and return its path."""

    def write(text: str, name: str = "site.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def cli():
    """Run the real console entry point in a subprocess: exit codes and stderr exactly as a user sees them."""
    import subprocess

    def run(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mlps_slurm", *args], capture_output=True, text=True,
                              env=env, timeout=timeout, cwd=ROOT)

    return run
