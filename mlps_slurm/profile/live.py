"""`profiles validate --live`: check a resolved profile against the running cluster, before anything is queued.

Everything sbatch or the jobs would refuse: partitions exist and are up, account and QoS exist where accounting is
on, the reservation exists and admits this user, the constraint's features and the gres are on the partition's
nodes, enough nodes, time limits within the partition's MaxTime, MaxArraySize, srun's MPI plugin, the jobs'
interpreter, the environment modules, the site templates, the storage paths (and the benchmark data apart from the
results, as MLPerf Storage wants), and last `sbatch --test-only` on each job kind's options for whatever else
sbatch refuses. Each result names the profile key to change; one failure is reported once.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from mlps_slurm.profile.live_login import (LiveCheck, module_checks, path_check, python_checks,
                                           separate_filesystem_checks, template_checks)
from mlps_slurm.profile.loader import SiteProfile
from mlps_slurm.profile.schema import JOB_KINDS, slurm_minutes, storage_keys

# The largest array the chain submits today is the 6-task training run array; leave room for kv-cache trials.
MIN_ARRAY_SIZE = 16
# Job kinds that get the profile's gres and whole nodes (plan.sbatch_directives' benchmark_job).
BENCHMARK_KINDS = ("datagen", "run")


def live_checks(profile: SiteProfile, backend: object) -> list[LiveCheck]:
    checks: list[LiveCheck] = []
    parts = {p["name"]: p for p in backend.partitions()}  # type: ignore[attr-defined]
    routes = _routes(profile, parts)
    checks += _partition_checks(profile, parts, routes)
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
    checks += reservation_checks(profile, backend)
    checks += constraint_checks(profile, parts, routes)
    checks += gres_checks(profile, parts, routes)
    checks += mpi_checks(profile, backend)
    checks += python_checks(profile)
    checks += module_checks(profile)
    checks += template_checks(profile)
    for key in ("storage.results_dir", *storage_keys()):
        checks.append(path_check(key, profile.get(key)))
    checks += separate_filesystem_checks(profile)
    failed = {k for c in checks if not c.ok for k in c.key.split(" / ")}
    checks += sbatch_checks(profile, backend, failed)
    return list(dict.fromkeys(checks))  # one line per distinct result


# --- partitions: each job kind's, grouped so that one partition shared by several kinds is reported once
@dataclass(frozen=True)
class Route:
    key: str  # the profile key naming the partition (slurm.partitions.<kind> or slurm.partition)
    partition: str | None  # None: no partition set and the cluster has no default one
    kinds: tuple[str, ...]

    @property
    def jobs(self) -> str:
        return _jobs(self.kinds)


def _routes(profile: SiteProfile, parts: dict[str, dict[str, Any]]) -> list[Route]:
    default = next((p["name"] for p in parts.values() if p["default"]), None)
    groups: dict[tuple[str, str | None], list[str]] = {}
    for kind in JOB_KINDS:
        key = f"slurm.partitions.{kind}" if profile.get(f"slurm.partitions.{kind}") else "slurm.partition"
        groups.setdefault((key, profile.get(key) or default), []).append(kind)
    return [Route(key, name, tuple(kinds)) for (key, name), kinds in groups.items()]


def _partitions_of(routes: Iterable[Route], parts: dict[str, dict[str, Any]],
                   kinds: tuple[str, ...] = JOB_KINDS) -> dict[str, tuple[str, ...]]:
    """Existing partition -> the job kinds (among `kinds`) that go there."""
    out: dict[str, tuple[str, ...]] = {}
    for r in routes:
        if r.partition in parts:
            out[r.partition] = out.get(r.partition, ()) + tuple(k for k in r.kinds if k in kinds)  # type: ignore[index]
    return {p: ks for p, ks in out.items() if ks}


def _jobs(kinds: tuple[str, ...]) -> str:
    return f"{', '.join(kinds)} job{'s' if len(kinds) > 1 else ''}"


def _partition_checks(profile: SiteProfile, parts: dict[str, dict[str, Any]], routes: list[Route]) -> list[LiveCheck]:
    checks = []
    for r in routes:
        if r.partition is None:
            checks.append(LiveCheck(r.key, False, f"no partition set for the {r.jobs} and the cluster has no "
                                                  f"default partition; set {r.key}"))
            continue
        part = parts.get(r.partition)
        if part is None:
            checks.append(LiveCheck(r.key, False, f"partition {r.partition!r} ({r.jobs}) does not exist on this "
                                                  f"cluster; existing partitions: {', '.join(sorted(parts))}; set "
                                                  f"{r.key} to one of them"))
            continue
        if part["state"] != "up":
            checks.append(LiveCheck(r.key, False, f"partition {r.partition!r} ({r.jobs}) is {part['state']}, not "
                                                  f"up; ask the admins or set {r.key} to a partition that is up"))
        else:
            checks.append(LiveCheck(r.key, True, f"{r.jobs} go to partition {r.partition!r} (up)"))
        for kind in r.kinds:
            limit = profile.get(f"slurm.time_limit.{kind}")
            if slurm_minutes(limit) > slurm_minutes(part["max_time"]):
                checks.append(LiveCheck(f"slurm.time_limit.{kind}", False,
                                        f"{limit} exceeds partition {r.partition!r} MaxTime {part['max_time']}; "
                                        f"lower slurm.time_limit.{kind}"))
    for name, kinds in _partitions_of(routes, parts, BENCHMARK_KINDS).items():
        nodes = int(parts[name]["nodes"]) if str(parts[name]["nodes"]).isdigit() else 0
        need = profile.get("nodes.count")
        checks.append(LiveCheck("nodes.count", need <= nodes, f"partition {name!r} ({_jobs(kinds)}) has {nodes} "
                                f"nodes, the profile asks for {need}" + ("" if need <= nodes else
                                                                           f"; lower nodes.count to {nodes}")))
    return checks


# --- reservation, features, gres
def reservation_checks(profile: SiteProfile, backend: object) -> list[LiveCheck]:
    name = profile.get("slurm.reservation")
    if not name:
        return []
    key = "slurm.reservation"
    known = backend.reservations()  # type: ignore[attr-defined]
    res = known.get(name)
    if res is None:
        return [LiveCheck(key, False, f"reservation {name!r} does not exist on this cluster (existing: "
                                      f"{', '.join(sorted(known)) or 'none'}); set {key} to one of them, or null")]
    problems = reservation_problems(res, getpass.getuser(), profile.get("slurm.account"), profile.get("nodes.count"))
    if problems:
        return [LiveCheck(key, False, f"reservation {name!r} cannot run these jobs: {'; '.join(problems)}")]
    state = res.get("State", "")
    if state != "ACTIVE":
        return [LiveCheck(key, True, f"reservation {name!r} admits you but is {state or 'not active'}: jobs wait "
                                     f"for its start at {res.get('StartTime', '?')}", warning=True)]
    return [LiveCheck(key, True, f"reservation {name!r} is active and admits you "
                                 f"({res.get('NodeCnt', '?')} nodes until {res.get('EndTime', '?')})")]


def _admits(listed: str, who: str | None) -> bool | None:
    """Whether a reservation's Users=/Accounts= list admits `who`; None when it does not restrict or cannot say."""
    if listed in ("", "(null)"):
        return None
    names = [n for n in listed.split(",") if n]
    denied = {n[1:] for n in names if n.startswith("-")}
    if denied:  # "-bob": everyone but bob
        return who not in denied if who else None
    return who in names if who else None


def reservation_problems(res: dict[str, str], user: str, account: str | None, nodes: int,
                         now: dt.datetime | None = None) -> list[str]:
    """Why a reservation (scontrol's fields) cannot run jobs of `user` charged to `account` on `nodes` nodes.
    Slurm admits a job only when it matches both lists where both Users and Accounts are set."""
    problems = []
    if _admits(res.get("Users", ""), user) is False:
        problems.append(f"it admits users {res['Users']}, not {user} (ask its owner to add you, or set "
                        "slurm.reservation: null)")
    admitted = _admits(res.get("Accounts", ""), account)
    if admitted is False:
        problems.append(f"it admits accounts {res['Accounts']}, not {account} (set slurm.account to one of them)")
    elif admitted is None and res.get("Accounts", "(null)") != "(null)" and not account:
        problems.append(f"it admits only accounts {res['Accounts']} and slurm.account is not set (set it to one "
                        "of them)")
    end = res.get("EndTime", "")
    try:
        if end and (now or dt.datetime.now()) >= dt.datetime.fromisoformat(end):
            problems.append(f"it ended at {end}")
    except ValueError:
        pass
    count = res.get("NodeCnt", "")
    if count.isdigit() and int(count) < nodes:
        problems.append(f"it holds {count} nodes, nodes.count asks for {nodes} (lower nodes.count)")
    return problems


def constraint_features(expression: str) -> tuple[list[str], bool]:
    """The feature names of a --constraint expression and whether it is a plain AND (a&b, a,b) that one node must
    satisfy whole. Counts (a*2), brackets and OR keep the names but not the one-node requirement."""
    names = []
    for token in re.split(r"[&|,\[\]()]", expression):
        token = re.sub(r"\*\d+$", "", token.strip()).lstrip("!")
        if token and token not in names:
            names.append(token)
    return names, not re.search(r"[|\[\]()*]", expression)


def constraint_checks(profile: SiteProfile, parts: dict[str, dict[str, Any]], routes: list[Route]) -> list[LiveCheck]:
    expression = profile.get("slurm.constraint")
    if not expression:
        return []
    key = "slurm.constraint"
    names, conjunctive = constraint_features(expression)
    checks = []
    for name, kinds in _partitions_of(routes, parts).items():
        groups = parts[name].get("groups", [])
        have = sorted({f for g in groups for f in g["features"]})
        missing = [f for f in names if f not in have]
        where = f"partition {name!r} ({_jobs(kinds)})"
        if missing:
            checks.append(LiveCheck(key, False, f"feature{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                                    f"on no node of {where}; its nodes have: {', '.join(have) or 'no features'}; "
                                    f"use those or set {key}: null"))
        elif conjunctive and not any(set(names) <= set(g["features"]) for g in groups):
            sets = "; ".join(",".join(g["features"]) or "none" for g in groups)
            checks.append(LiveCheck(key, False, f"no node of {where} has {' and '.join(names)} together (feature "
                                    f"sets of its nodes: {sets}); change {key}"))
        else:
            checks.append(LiveCheck(key, True, f"{where} has nodes with {expression}"))
    return checks


def _gres_items(text: str) -> list[tuple[str, str | None, int]]:
    """gres specifications (gpu:4, gpu:a100:4, nvme, or sinfo's gpu:a100:4(S:0-1)) as (name, type, count)."""
    items = []
    for item in re.split(r",(?![^(]*\))", text):
        fields = re.sub(r"\(.*\)$", "", item.strip()).split(":")
        if not fields[0]:
            continue
        count = int(fields[-1]) if len(fields) > 1 and fields[-1].isdigit() else 1
        kind = fields[1] if len(fields) > 2 or (len(fields) == 2 and not fields[1].isdigit()) else None
        items.append((fields[0], kind, count))
    return items


def gres_checks(profile: SiteProfile, parts: dict[str, dict[str, Any]], routes: list[Route]) -> list[LiveCheck]:
    wanted = profile.get("slurm.gres")
    if not wanted:
        return []
    key = "slurm.gres"
    checks = []
    for name, kinds in _partitions_of(routes, parts, BENCHMARK_KINDS).items():
        groups = parts[name].get("groups", [])
        have = sorted({g for group in groups for g in group["gres"]})
        where = f"partition {name!r} ({_jobs(kinds)})"

        def fits(group: dict[str, Any]) -> bool:
            offered = _gres_items(",".join(group["gres"]))
            return all(any(n == on and (t is None or t == ot) and c <= oc for on, ot, oc in offered)
                       for n, t, c in _gres_items(wanted))

        if any(fits(g) for g in groups):
            checks.append(LiveCheck(key, True, f"{where} has nodes with gres {wanted}"))
        else:
            checks.append(LiveCheck(key, False, f"no node of {where} offers gres {wanted}; its nodes have: "
                                    f"{', '.join(have) or 'no gres'}; use those or set {key}: null"))
    return checks


# --- the launcher
def mpi_checks(profile: SiteProfile, backend: object) -> list[LiveCheck]:
    from mlps_slurm import launchers

    if not launchers.get(profile.get("launcher.kind")).mpi_plugins:
        return []  # this launcher does not use launcher.mpi
    from mlps_slurm.slurm.base import SlurmError

    mpi = profile.get("launcher.mpi")
    try:
        offered = backend.mpi_plugins()  # type: ignore[attr-defined]
    except SlurmError as exc:
        return [LiveCheck("launcher.mpi", False, f"cannot list srun's MPI plugins ({exc}); is srun installed on "
                                                 "this login node?")]
    if mpi in offered:
        return [LiveCheck("launcher.mpi", True, f"srun offers --mpi={mpi}")]
    return [LiveCheck("launcher.mpi", False, f"srun offers --mpi={', '.join(offered) or '(nothing)'}, not {mpi!r} "
                                             "(`srun --mpi=list`); set launcher.mpi to the one the site's MPI "
                                             "is built for (Open MPI 4+: pmix; MPICH, Intel MPI: pmi2)")]


# --- whatever else sbatch refuses
def sbatch_checks(profile: SiteProfile, backend: object, failed: set[str]) -> list[LiveCheck]:
    """`sbatch --test-only` (nothing is queued) on a stand-in script with each job kind's #SBATCH options and the
    profile's extra sbatch arguments. Refusals a check above already reported (same key) are not repeated."""
    from mlps_slurm.plan import sbatch_directives
    from mlps_slurm.profile.refusals import refusal
    from mlps_slurm.slurm.base import SlurmError, SlurmUnreachable

    refused: dict[tuple[tuple[str, ...], str], list[str]] = {}
    accepted = []
    args = list(profile.get("slurm.extra_sbatch_args"))
    with tempfile.TemporaryDirectory(prefix="mlps-validate-") as tmp:
        for kind in JOB_KINDS:
            nodes = 1 if kind == "finalize" else profile.get("nodes.count")
            try:
                sbatch = [*sbatch_directives(profile, tmp, f"validate-{kind}", kind, kind in BENCHMARK_KINDS),
                          f"--nodes={nodes}"]
            except ValueError as exc:  # PlanError: a value sbatch_directives will not put on an #SBATCH line
                refused.setdefault(((), str(exc)), []).append(kind)
                continue
            script = Path(tmp) / f"{kind}.sbatch"
            script.write_text("#!/bin/bash\n" + "".join(f"#SBATCH {o}\n" for o in sbatch) + "true\n")
            try:
                backend.submit(script, [], args, test_only=True)  # type: ignore[attr-defined]
                accepted.append(kind)
            except SlurmUnreachable:
                raise
            except SlurmError as exc:
                keys, message = refusal(exc.stderr or str(exc), sbatch, args, profile)
                refused.setdefault((tuple(keys), message), []).append(kind)
    checks = []
    for (keys, message), kinds in refused.items():
        if keys and set(keys) <= failed:
            continue  # said above, in the words of the specific check
        checks.append(LiveCheck(" / ".join(keys) or "slurm", False, f"{_jobs(tuple(kinds))}: {message}"))
    if accepted:
        checks.append(LiveCheck("slurm", True, f"sbatch --test-only accepts the options of the "
                                               f"{_jobs(tuple(accepted))}"))
    return checks


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
