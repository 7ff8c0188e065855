"""Where the packaged templates and site profiles are, in a source checkout and in an installed copy."""

from __future__ import annotations

import sysconfig
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _locate(kind: str) -> Path:
    # A source checkout (and an editable install) has them beside the package; a regular install puts them under
    # <prefix>/share/mlps-slurm/ through setup.cfg's data_files.
    candidates = [_SOURCE_ROOT / kind, Path(sysconfig.get_path("data")) / "share" / "mlps-slurm" / kind]
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(
        f"mlps-slurm cannot find its {kind}/ directory; looked in: {', '.join(map(str, candidates))}. "
        "Reinstall the package (pip install .)."
    )


def templates_dir() -> Path:
    return _locate("templates")


def site_profiles_dir() -> Path:
    return _locate("site_profiles")
