"""`profiles validate --live`: check a resolved profile against the running cluster.

Partitions exist and are up, account and QoS exist where accounting is on, enough nodes, time limits within the
partition's MaxTime, MaxArraySize, storage paths exist. Each result names the profile key to change.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from mlps_slurm.profile.loader import SiteProfile
from mlps_slurm.profile.schema import JOB_KINDS, slurm_minutes, storage_keys

# The largest array the chain submits today is the 6-task training run array; leave room for kv-cache trials.
MIN_ARRAY_SIZE = 16


@dataclass(frozen=True)
class LiveCheck:
    key: str
    ok: bool
    message: str
    skipped: bool = False


def live_checks(profile: SiteProfile, backend: object) -> list[LiveCheck]:
    checks: list[LiveCheck] = []
    parts = {p["name"]: p for p in backend.partitions()}  # type: ignore[attr-defined]
    default = next((p["name"] for p in parts.values() if p["default"]), None)
    for kind in JOB_KINDS:
        key = f"slurm.partitions.{kind}" if profile.get(f"slurm.partitions.{kind}") else "slurm.partition"
        name = profile.get(key) or default
        if name is None:
            checks.append(LiveCheck(key, False, f"no partition set for {kind} jobs and the cluster has no default "
                                                f"partition; set {key}"))
            continue
        part = parts.get(name)
        if part is None:
            checks.append(LiveCheck(key, False, f"partition {name!r} does not exist on this cluster; existing "
                                                f"partitions: {', '.join(sorted(parts))}"))
            continue
        if part["state"] != "up":
            checks.append(LiveCheck(key, False, f"partition {name!r} is {part['state']}, not up"))
        else:
            checks.append(LiveCheck(key, True, f"{kind} jobs go to partition {name!r} (up)"))
        limit = profile.get(f"slurm.time_limit.{kind}")
        if slurm_minutes(limit) > slurm_minutes(part["max_time"]):
            checks.append(LiveCheck(f"slurm.time_limit.{kind}", False,
                                    f"{limit} exceeds partition {name!r} MaxTime {part['max_time']}"))
        if kind == "run":
            nodes = int(part["nodes"]) if part["nodes"].isdigit() else 0
            need = profile.get("nodes.count")
            checks.append(LiveCheck("nodes.count", need <= nodes,
                                    f"partition {name!r} has {nodes} nodes, the profile asks for {need}"))
    conf = backend.config()  # type: ignore[attr-defined]
    max_array = int(conf.get("MaxArraySize", "1001") or 1001)
    checks.append(LiveCheck("slurm", max_array >= MIN_ARRAY_SIZE,
                            f"MaxArraySize is {max_array} (mlps-slurm needs at least {MIN_ARRAY_SIZE})"))
    accounting = conf.get("AccountingStorageType", "accounting_storage/none")
    for key, kind in (("slurm.account", "account"), ("slurm.qos", "qos")):
        value = profile.get(key)
        if not value:
            continue
        if accounting.endswith("/none"):
            checks.append(LiveCheck(key, True, f"{kind} {value!r} not checked: accounting storage is disabled "
                                               f"on this cluster", skipped=True))
            continue
        known = backend.associations(kind)  # type: ignore[attr-defined]
        checks.append(LiveCheck(key, value in known, f"{kind} {value!r} " + (
            "exists" if value in known else f"does not exist; known: {', '.join(sorted(known)) or '(none)'}")))
    for key in ("storage.results_dir", *storage_keys()):
        checks.append(_path_check(key, profile.get(key)))
    return checks


def _path_check(key: str, path: str) -> LiveCheck:
    if os.path.isdir(path):
        return LiveCheck(key, True, f"{path} exists")
    ancestor = os.path.dirname(path)
    while ancestor and not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if os.path.isdir(ancestor) and os.access(ancestor, os.W_OK | os.X_OK):
        return LiveCheck(key, True, f"{path} does not exist yet; the jobs will create it under {ancestor}")
    return LiveCheck(key, False, f"{path} does not exist and cannot be created ({ancestor or '/'} is not a "
                                 "writable directory); create it or fix the path")


def profile_from_cluster(backend: object, name: str) -> str:
    """A starting profile (YAML text) from sinfo: default partition, its node count, CPUs and memory."""
    parts = backend.partitions()  # type: ignore[attr-defined]
    if not parts:
        raise ValueError("sinfo lists no partitions")
    part = next((p for p in parts if p["default"]), parts[0])
    cpus = int(re.sub(r"\D", "", part["cpus"]) or 1)
    mem_gb = round(int(re.sub(r"\D", "", part["memory_mb"]) or 0) / 1024, 1)
    others = ", ".join(p["name"] for p in parts if p is not part) or "none"
    return f"""# Generated by `mlps-slurm profiles init --from-cluster` from sinfo. Review every value; the full list of
# keys with their defaults is printed by `mlps-slurm profiles init` (without --from-cluster).
name: {name}
description: {json.dumps(f"generated from partition {part['name']} (other partitions: {others})")}

slurm:
  partition: {part['name']}
  time_limit:
    run: "{'04:00:00' if slurm_minutes(part['max_time']) >= 240 else part['max_time']}"

nodes:
  count: {part['nodes']}
  cpus: {cpus}
  memory_gb: {mem_gb}

launcher:
  kind: srun
  mpi: pmix

storage:
  results_dir: ~/mlps-slurm/runs
  checkpoint_dir: ~/mlps-slurm/checkpoints
  data_dir: ~/mlps-slurm/data
"""
