"""Cluster facts from a run's preflight report, read tolerantly. Pure: takes the parsed preflight.json.

The preflight job records facts per node under preflight.json["reports"][<node>]["facts"]. Facts are optional (a
run without them is still verified; the rules that need them say they could not decide). The shape read here:

    facts = {
      "cpu":    {"model": str, "sockets": int, "cores": int, "threads": int},    # cores = physical cores per node
      "memory": {"total_bytes": int},             # also accepted: total_kib, total_gib, or a top-level memory_bytes
      "os":     {"name": str, "version": str, "kernel": str},
      "product": str,                              # DMI product name, optional
      "nics":   [{"name": str, "type": str, "speed_mbps": int, "state": str}],
      "storage": {"<storage id>": {"path": str, "device": str|int, "fstype": str, "mount_point": str}},
    }

Storage ids are the preflight's ("checkpoint_dir", "data_dir", "results_dir", "kvcache_dir"). The filesystem
identity may also come from the preflight check of that directory (check id "storage.<id>.*" carrying
device/fstype/mount_point keys), so either producer satisfies the separate-filesystems rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

GIB = 1 << 30


def node_reports(preflight: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    if not isinstance(preflight, Mapping):
        return {}
    reports = preflight.get("reports")
    return {str(k): v for k, v in reports.items() if isinstance(v, Mapping)} if isinstance(reports, Mapping) else {}


def node_facts(preflight: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """Facts per node, only for nodes that reported some."""
    out = {}
    for node, report in node_reports(preflight).items():
        facts = report.get("facts")
        if isinstance(facts, Mapping) and facts:
            out[node] = facts
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value > 0 else None


def memory_bytes(facts: Mapping[str, Any]) -> int | None:
    """A node's total memory in bytes, whichever unit the producer used."""
    mem = facts.get("memory")
    for container in (mem if isinstance(mem, Mapping) else {}, facts):
        for key, factor in (("total_bytes", 1), ("memory_bytes", 1), ("mem_total_bytes", 1),
                            ("total_kib", 1024), ("MemTotal_kB", 1024), ("total_gib", GIB),
                            ("memory_gib", GIB)):
            n = _number(container.get(key))
            if n is not None:
                return int(n * factor)
    return None


def client_memory(preflight: Mapping[str, Any] | None) -> dict[str, int]:
    """Memory in bytes of every node whose facts say it."""
    out = {}
    for node, facts in node_facts(preflight).items():
        n = memory_bytes(facts)
        if n is not None:
            out[node] = n
    return out


@dataclass(frozen=True)
class FilesystemIdentity:
    """Where a directory lives. Two directories are on one filesystem when device (or mount point) match."""

    path: str | None
    device: str | None
    fstype: str | None
    mount_point: str | None

    def same_filesystem(self, other: FilesystemIdentity) -> bool | None:
        """True/False when the facts decide it, None when they do not."""
        if self.device is not None and other.device is not None:
            return self.device == other.device
        if self.mount_point is not None and other.mount_point is not None:
            return self.mount_point == other.mount_point
        return None


def _identity(entry: Mapping[str, Any]) -> FilesystemIdentity | None:
    device = entry.get("device", entry.get("st_dev", entry.get("fsid")))
    mount = entry.get("mount_point", entry.get("mountpoint", entry.get("mount")))
    if device is None and mount is None:
        return None
    return FilesystemIdentity(entry.get("path"), None if device is None else str(device), entry.get("fstype"),
                              None if mount is None else str(mount))


def filesystem(preflight: Mapping[str, Any] | None, storage_id: str) -> dict[str, FilesystemIdentity]:
    """The filesystem identity of one storage directory, per node that recorded it."""
    out: dict[str, FilesystemIdentity] = {}
    for node, report in node_reports(preflight).items():
        facts = report.get("facts")
        storage = facts.get("storage") if isinstance(facts, Mapping) else None
        entry = storage.get(storage_id) if isinstance(storage, Mapping) else None
        ident = _identity(entry) if isinstance(entry, Mapping) else None
        if ident is None:
            for check in report.get("checks") or []:
                if isinstance(check, Mapping) and str(check.get("id", "")).startswith(f"storage.{storage_id}."):
                    ident = _identity(check)
                    if ident is not None:
                        break
        if ident is not None:
            out[node] = ident
    return out


def describe_node(facts: Mapping[str, Any]) -> dict[str, Any]:
    """The client description a system YAML wants (MLPerf Storage COLL-01..04), from one node's facts."""
    cpu = facts.get("cpu") if isinstance(facts.get("cpu"), Mapping) else {}
    os_ = facts.get("os") if isinstance(facts.get("os"), Mapping) else {}
    mem = memory_bytes(facts)
    kernel = facts.get("kernel")
    # The preflight's node_facts names some keys differently (physical_cores, version_id, kind, operstate, and a
    # kernel section); both spellings are read.
    nics = []
    for nic in facts.get("nics") or []:
        if isinstance(nic, Mapping):
            entry = {"name": nic.get("name"), "type": nic.get("type", nic.get("kind")),
                     "speed_mbps": nic.get("speed_mbps"), "state": nic.get("state", nic.get("operstate"))}
            nics.append({k: v for k, v in entry.items() if v is not None})
    return {
        "cpu_model": cpu.get("model"),
        "cpu_sockets": cpu.get("sockets"),
        "cpu_cores": cpu.get("cores", cpu.get("physical_cores")),
        "cpu_threads": cpu.get("threads", cpu.get("logical")),
        "memory_gib": round(mem / GIB, 1) if mem else None,
        "os_name": os_.get("name"),
        "os_version": os_.get("version", os_.get("version_id")),
        "kernel": os_.get("kernel") or (kernel.get("release") if isinstance(kernel, Mapping) else kernel),
        "product": facts.get("product"),
        "nics": nics,
    }
