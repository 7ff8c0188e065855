"""The node checks of the storage directories: writable (with a probe file), filesystem type, free space, page
cache dropping, and the dataset and results on different filesystems."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from mlps_slurm.steps.preflight import node_facts
from mlps_slurm.steps.preflight.common import FAIL, PASS, WARN, Check, gib, make_check

PROBE_BYTES = 64 << 10


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _page_cached(fd: int, buf: bytearray) -> bool | None:
    """Whether the first page of fd is in the page cache: a RWF_NOWAIT read fails with EAGAIN when it is not.
    None when the filesystem cannot tell (no RWF_NOWAIT support)."""
    flag = getattr(os, "RWF_NOWAIT", None)
    if flag is None:
        return None
    try:
        os.preadv(fd, [buf], 0, flag)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None


def probe_storage(path: str, node: str, test_cache: bool) -> tuple[str | None, bool, dict[str, Any] | None]:
    """Create the directory if missing, then create, fsync, (cache-test) and remove a probe file.

    Returns (error, created, cache result). The cache test is: written and fsynced pages are cached; after
    posix_fadvise(DONTNEED) a RWF_NOWAIT read must find them gone.
    """
    directory = Path(path)
    created = not directory.exists()
    probe = directory / f".mlps-preflight-probe-{node}-{os.getpid()}"
    cache: dict[str, Any] | None = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"\xa5" * (PROBE_BYTES if test_cache else 64))
            os.fsync(fd)
            if test_cache:
                buf = bytearray(4096)
                before = _page_cached(fd, buf)
                if before is False:  # evicted already (memory pressure): read it in, so the drop can be seen
                    os.pread(fd, len(buf), 0)
                    before = _page_cached(fd, buf)
                # The kernel may keep a page a moment longer (still under writeback, or locked by a reader):
                # one busy moment must not fail a node, so the advice gets three tries.
                for attempt in range(3):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    after = _page_cached(fd, buf)
                    if not after:
                        break
                    time.sleep(0.05 * (attempt + 1))
                cache = {"cached_after_write": before, "cached_after_fadvise": after}
        finally:
            os.close(fd)
            probe.unlink()
    except OSError as exc:
        return f"{exc.strerror or exc}", created, None
    return None, created, cache


def check_writable(sid: str, path: str, node: str, error: str | None, created: bool) -> Check:
    if error:
        return make_check(f"storage.{sid}.writable", FAIL, f"{path} is not writable from {node}: {error}; make it "
                          f"a writable directory on {node} (mount, permissions) or change storage.{sid}", path=path)
    note = " (created)" if created else ""
    return make_check(f"storage.{sid}.writable", PASS, f"{path} is writable{note}", path=path, created=created)


def check_cache_drop(sid: str, path: str, node: str, cache: dict[str, Any] | None, fstype: str,
                     required: bool) -> Check:
    drop_caches = os.access("/proc/sys/vm/drop_caches", os.W_OK)
    facts = {"method": "posix_fadvise(POSIX_FADV_DONTNEED)", "drop_caches_writable": drop_caches,
             **(cache or {})}
    cid = f"storage.{sid}.cache_drop"
    if cache is None:
        return make_check(cid, WARN, f"not tested on {node}: {path} is not writable", **facts)
    if cache["cached_after_write"] and cache["cached_after_fadvise"] is False:
        return make_check(cid, PASS, "posix_fadvise(DONTNEED) evicts this client's page cache (verified)", **facts)
    if cache["cached_after_fadvise"]:
        status = FAIL if required else WARN
        return make_check(cid, status, f"posix_fadvise(DONTNEED) left a probe file in {node}'s page cache ({fstype} "
                          f"at {path}): reads may be served from client memory; "
                          + ("run the job as root so /proc/sys/vm/drop_caches can be used, or use O_DIRECT"
                             if not drop_caches else "drop caches with /proc/sys/vm/drop_caches (writable here)"),
                          **facts)
    status = WARN if required else PASS
    return make_check(cid, status, f"cannot verify cache dropping on {fstype} (no RWF_NOWAIT residency test); "
                      "posix_fadvise(DONTNEED) is used", **facts)


def check_filesystem(sid: str, path: str, mount: node_facts.Mount | None, expected: str | None, node: str) -> Check:
    if mount is None:
        return make_check(f"storage.{sid}.filesystem", FAIL, f"no mount holds {path} on {node} (/proc/self/mounts "
                          "unreadable?)", path=path)
    facts = {"path": path, "fstype": mount.fstype, "mount_point": mount.mount_point, "device": mount.device}
    if expected and mount.fstype != expected:
        return make_check(f"storage.{sid}.filesystem", FAIL, f"{path} is on {mount.fstype} ({mount.device} at "
                          f"{mount.mount_point}) on {node}, the profile expects {expected} (storage.filesystem_type): "
                          f"the storage under test is not mounted on {node}; mount it, or set "
                          f"storage.filesystem_type to {mount.fstype}", expected=expected, **facts)
    return make_check(f"storage.{sid}.filesystem", PASS, f"{mount.fstype} {mount.device} at {mount.mount_point}",
                      expected=expected, **facts)


def check_free_space(sid: str, path: str, required: int, node: str) -> Check:
    where = _existing_ancestor(Path(path))
    try:
        st = os.statvfs(where)
    except OSError as exc:
        return make_check(f"storage.{sid}.free_space", FAIL, f"cannot statvfs {where} on {node}: "
                          f"{exc.strerror or exc}", path=path)
    free = st.f_bavail * st.f_frsize
    facts = {"path": path, "free_bytes": free, "required_bytes": required, "total_bytes": st.f_blocks * st.f_frsize}
    if free < required:
        return make_check(f"storage.{sid}.free_space", FAIL, f"{path} has {gib(free)} free on {node}, the run "
                          f"needs {gib(required)}: free space or use a smaller --scale", **facts)
    return make_check(f"storage.{sid}.free_space", PASS, f"{gib(free)} free, {gib(required)} needed", **facts)


def check_separate(a: dict[str, Any], b: dict[str, Any], mounts: list[node_facts.Mount], node: str) -> Check:
    """MLPerf Storage: the dataset and the results live on different filesystems."""
    cid = f"storage.separate.{a['id']}.{b['id']}"
    try:
        dev_a, dev_b = os.stat(a["path"]).st_dev, os.stat(b["path"]).st_dev
    except OSError as exc:
        return make_check(cid, FAIL, f"cannot stat {exc.filename} on {node}: {exc.strerror}")
    ma, mb = node_facts.mount_for(a["path"], mounts), node_facts.mount_for(b["path"], mounts)
    same_device = ma is not None and mb is not None and ma.device == mb.device and ma.device.startswith("/")
    if dev_a == dev_b or same_device:
        where = f"{ma.fstype} {ma.device}" if ma else "one filesystem"
        return make_check(cid, FAIL, f"{a['id']} ({a['path']}) and {b['id']} ({b['path']}) are on the same filesystem "
                          f"({where}) on {node}; MLPerf Storage requires them on different filesystems: move "
                          f"storage.{b['id']} to another filesystem", st_dev=[dev_a, dev_b])
    return make_check(cid, PASS, f"{a['id']} and {b['id']} are on different filesystems", st_dev=[dev_a, dev_b])
