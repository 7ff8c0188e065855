"""What a compute node is: OS, kernel, CPUs, memory, NICs and the mounts under the storage directories.

Read inside the preflight node check from /proc, /sys and os-release (no subprocesses: the check is on the critical
path of every run). The same facts go into preflight.json under `reports.<node>.facts`, where the rules and the
submission's system description read them, so keys here are a stable interface: add keys, never rename them.
Every reader takes its root directory as a parameter so tests can point it at a fake tree.
"""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 1 << 30

# /sys/class/net/<nic>/type values (include/uapi/linux/if_arp.h) worth naming in a system description.
_ARP_TYPES = {1: "ethernet", 32: "infiniband", 772: "loopback", 776: "sit", 65534: "none"}


@dataclass(frozen=True)
class Mount:
    device: str
    mount_point: str
    fstype: str
    options: str

    def as_dict(self) -> dict[str, str]:
        return {"device": self.device, "mount_point": self.mount_point, "fstype": self.fstype,
                "options": self.options}


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------------------------------------- OS

def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines of os-release(5), with shell quoting removed."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key.strip()] = value
    return out


def os_facts(etc: Path = Path("/etc")) -> dict[str, str]:
    """id, id_like, version_id, name. Uses the `distro` package when importable and reading the real /etc,
    otherwise os-release itself (/etc/os-release, then /usr/lib/os-release)."""
    if etc == Path("/etc"):
        try:
            import distro
        except ImportError:
            pass
        else:
            return {"id": distro.id(), "id_like": distro.like(), "version_id": distro.version(),
                    "name": distro.name(pretty=True), "source": "distro"}
    for path in (etc / "os-release", etc.parent / "usr" / "lib" / "os-release"):
        text = _read(path)
        if text is not None:
            info = parse_os_release(text)
            return {"id": info.get("ID", "linux").lower(), "id_like": info.get("ID_LIKE", ""),
                    "version_id": info.get("VERSION_ID", ""),
                    "name": info.get("PRETTY_NAME") or info.get("NAME", "Linux"), "source": str(path)}
    return {"id": "", "id_like": "", "version_id": "", "name": "", "source": "none"}


def kernel_facts() -> dict[str, str]:
    uname = platform.uname()
    return {"release": uname.release, "version": uname.version, "machine": uname.machine}


# ---------------------------------------------------------------------------------------------- CPU, memory

def cpu_facts(proc: Path = Path("/proc")) -> dict[str, Any]:
    """Model, logical CPUs, CPUs usable by this task (affinity), sockets and physical cores."""
    model, sockets, cores = "", set(), set()
    physical = ""
    for line in (_read(proc / "cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Processor", "cpu model") and not model:  # x86, older ARM, some others
            model = value
        elif key == "physical id":
            physical = value
            sockets.add(value)
        elif key == "core id":
            cores.add((physical, value))
    logical = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    return {"model": model or platform.processor() or platform.machine(), "logical": logical, "usable": usable,
            "sockets": len(sockets) or None, "physical_cores": len(cores) or None}


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def cgroup_memory_limit(proc: Path = Path("/proc"), sys_fs: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory limit of this task's cgroup (v2 memory.max or v1 memory.limit_in_bytes); None when unlimited.
    Slurm's task/cgroup confines a job's page cache to it too, so it bounds what the benchmark can cache."""
    for line in (_read(proc / "self" / "cgroup") or "").splitlines():
        hier, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        path = path.lstrip("/")
        if hier == "0" and controllers == "":
            candidate = sys_fs / path / "memory.max"
        elif "memory" in controllers.split(","):
            candidate = sys_fs / "memory" / path / "memory.limit_in_bytes"
        else:
            continue
        value = (_read(candidate) or "").strip()
        # v1 reports "no limit" as a huge page-aligned number
        if value.isdigit() and int(value) < (1 << 60):
            return int(value)
    return None


def memory_facts(proc: Path = Path("/proc"), sys_fs: Path = Path("/sys/fs/cgroup")) -> dict[str, Any]:
    info = parse_meminfo(_read(proc / "meminfo") or "")
    total = info.get("MemTotal", 0)
    return {"total_bytes": total, "total_gib": round(total / GIB, 2), "available_bytes": info.get("MemAvailable"),
            "cgroup_limit_bytes": cgroup_memory_limit(proc, sys_fs)}


# ---------------------------------------------------------------------------------------------- network

def nic_facts(sys_net: Path = Path("/sys/class/net")) -> list[dict[str, Any]]:
    """Network interfaces except loopback: name, kind, operstate, speed in Mb/s (None when the driver has none,
    e.g. a down or virtual link), MTU."""
    nics = []
    try:
        names = sorted(entry.name for entry in os.scandir(sys_net))
    except OSError:
        return []
    for name in names:
        base = sys_net / name
        arp = (_read(base / "type") or "").strip()
        kind = _ARP_TYPES.get(int(arp), f"arp{arp}") if arp.isdigit() else "unknown"
        if kind == "loopback":
            continue
        speed = (_read(base / "speed") or "").strip()
        mtu = (_read(base / "mtu") or "").strip()
        nics.append({"name": name, "kind": kind, "operstate": (_read(base / "operstate") or "").strip(),
                     "speed_mbps": int(speed) if speed.lstrip("-").isdigit() and int(speed) > 0 else None,
                     "mtu": int(mtu) if mtu.isdigit() else None})
    return nics


# ---------------------------------------------------------------------------------------------- mounts

def _unescape(field: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as \040 \011 \012 \134
    if "\\" not in field:
        return field
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def parse_mounts(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            mounts.append(Mount(_unescape(parts[0]), _unescape(parts[1]), parts[2], parts[3]))
    return mounts


def read_mounts(proc: Path = Path("/proc")) -> list[Mount]:
    # /proc/self/mounts: the view of this task's mount namespace, which can differ from node to node
    return parse_mounts(_read(proc / "self" / "mounts") or "")


def mount_for(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount holding `path`: longest mount-point prefix of its resolved path; the last one of equal
    mount points wins, because a later mount hides an earlier one on the same directory."""
    target = os.path.realpath(path)
    best: Mount | None = None
    for m in mounts:
        mp = m.mount_point
        if target == mp or target.startswith(mp.rstrip("/") + "/") or mp == "/":
            if best is None or len(mp) >= len(best.mount_point):
                best = m
    return best


def collect(storage_paths: list[str], mounts: list[Mount] | None = None) -> dict[str, Any]:
    """All facts of this node; `mounts` lists only those holding a storage directory."""
    mounts = read_mounts() if mounts is None else mounts
    relevant: dict[str, dict[str, str]] = {}
    for path in storage_paths:
        m = mount_for(path, mounts)
        if m is not None:
            relevant.setdefault(m.mount_point, m.as_dict())
    return {"hostname": socket.gethostname(), "os": os_facts(), "kernel": kernel_facts(), "cpu": cpu_facts(),
            "memory": memory_facts(), "nics": nic_facts(), "mounts": list(relevant.values())}
