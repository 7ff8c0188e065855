"""What the training jobs measure around DLIO: the bytes every rank and its reader processes read (/proc/<pid>/io),
and the dataset's pages in the node's page cache, dropped before each run.

This module runs on compute nodes: it imports no click, jinja2 or cli code.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from mlps_slurm.steps.pagecache import evict
from mlps_slurm.steps.procio import read_proc_io

RESIDENCY_SAMPLE = 16  # files checked for pages left in the page cache after a drop


def descendants(root: int) -> list[int]:
    """Every live process below `root` (from /proc/*/stat parent ids)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


class IoMeter:
    """Bytes a rank and its reader processes read between start() and stop(). DLIO 2.0.0's PyTorch loader keeps
    its workers alive across epochs (persistent_workers), so their counters are read from /proc/<worker>/io while
    they live; workers already reaped are in the rank's own counters."""

    KEYS = ("rchar", "read_bytes", "syscr", "wchar", "write_bytes")

    def start(self) -> None:
        self._own = read_proc_io()
        self._children = {pid: read_proc_io(pid) for pid in descendants(os.getpid())}

    def stop(self) -> dict[str, Any]:
        own = read_proc_io()
        total = {k: own.get(k, 0) - self._own.get(k, 0) for k in self.KEYS}
        workers = 0
        for pid in descendants(os.getpid()):
            now_io, then = read_proc_io(pid), self._children.get(pid, {})
            if now_io:
                workers += 1
                for k in self.KEYS:
                    total[k] += now_io.get(k, 0) - then.get(k, 0)
        return {**total, "live_workers": workers}


PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_fraction(path: str) -> float | None:
    """Share of the file's pages in this node's page cache (mincore on a mapping: touches no page, unlike a
    RWF_NOWAIT read, which starts readahead); None when it cannot tell."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return None
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            pages = (size + PAGE - 1) // PAGE
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(addr, size, vec) != 0:
                return None
            return sum(v & 1 for v in vec) / pages
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def sample(paths: list[str], count: int = RESIDENCY_SAMPLE) -> list[str]:
    return paths[::max(1, len(paths) // count)][:count]


def mean_resident(paths: list[str]) -> float | None:
    values = [v for v in (resident_fraction(p) for p in paths) if v is not None]
    return sum(values) / len(values) if values else None


def drop_dataset_cache(paths: list[str]) -> dict[str, Any]:
    """Evict the dataset from this node's page cache: posix_fadvise(DONTNEED) on every file (no root needed); if
    sampled files are still resident afterwards (some network filesystems ignore the advice) and we may write
    /proc/sys/vm/drop_caches (root), drop the node's whole page cache too."""
    started = time.monotonic()
    probe = sample(paths)
    before = mean_resident(probe)
    os.sync()  # DONTNEED leaves dirty pages; the first run follows datagen's writes
    failed = len(evict(paths))
    after = mean_resident(probe)
    method = "posix_fadvise"
    if after and os.access("/proc/sys/vm/drop_caches", os.W_OK):
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("1\n")  # page cache only; dentries and inodes stay
        method = "posix_fadvise+drop_caches"
        after = mean_resident(probe)
    return {"host": socket.gethostname(), "method": method, "files": len(paths), "failed": failed,
            "sampled": len(probe), "resident_before": before, "resident_after": after,
            "seconds": round(time.monotonic() - started, 3)}
