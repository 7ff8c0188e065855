"""Evicting files from this node's page cache, inside jobs, without root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable


def evict(paths: Iterable[str | Path]) -> list[str]:
    """posix_fadvise(DONTNEED) on each (clean: fsynced) file, so the next read comes from storage; unlike
    /proc/sys/vm/drop_caches it needs no root. Returns one "path: error" per file that could not be advised."""
    errors = []
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror or exc}")
    return errors
