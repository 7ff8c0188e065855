"""`mlps-slurm submit all`: every benchmark the profile's suite section enables, as one chain. Pure: no I/O.

One preflight checks the nodes for all of them (the union of what each benchmark needs), the benchmarks run one
after another (never two at once on the same clients: they would measure each other), and one finalize finalizes
each benchmark run, verifies them together as one submission and bundles it.

Layout of a suite run directory:

    <results_dir>/all-<stamp>/            manifest.json (benchmark "suite"), scripts/ (every job), preflight/,
                                          logs/ (preflight, finalize), results/, verify.json, submission/
    <results_dir>/all-<stamp>/runs/<id>/  one complete run directory per workload (manifest.json, raw/, logs/,
                                          results/, verify.json): `verify`, `bundle` and `status` take it alone

Each workload is planned by its own benchmark's planner with its own run directory, so a suite run is the same
run a single `submit training` would make; only its preflight and finalize jobs are the suite's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mlps_slurm import benchmarks
from mlps_slurm.plan import (JobSpec, Plan, PlanError, base_context, client_nodes, finalize_job, merge_container_setups,
                             preflight_job, preflight_requirements, with_site_args)
from mlps_slurm.profile import SiteProfile

SUITE = "suite"
SHARED_JOBS = ("preflight", "finalize")  # a workload's jobs that the suite runs once for all of them


@dataclass(frozen=True)
class SuiteRequest:
    scale: float = 1.0
    nodes: int | None = None  # None: the profile's nodes.count; every workload uses the same nodes
    benchmarks: tuple[str, ...] | None = None  # None: the profile's suite.benchmarks
    # The benchmarks' own `submit all` options (request fields marked suite="cli"), by field name; a value of
    # None keeps each benchmark's default.
    options: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": SUITE, "scale": self.scale, "nodes": self.nodes,
                "benchmarks": list(self.benchmarks) if self.benchmarks is not None else None,
                "options": dict(self.options)}


def member_key(member: str, key: str) -> str:
    """The suite's key of a workload's job: "training-unet3d.run"; its shared jobs keep the suite's key."""
    return key if key in SHARED_JOBS else f"{member}.{key}"


def _workloads(request: SuiteRequest, profile: SiteProfile) -> list[tuple[str, str]]:
    chosen = request.benchmarks if request.benchmarks is not None else tuple(profile.get("suite.benchmarks"))
    allowed = [b.name for b in benchmarks.runnable()]
    unknown = [b for b in chosen if b not in allowed]
    if unknown:
        raise PlanError(f"--benchmarks {','.join(unknown)}: `submit all` chains {', '.join(allowed)}")
    out = []
    for benchmark in chosen:
        models = list(profile.get(f"suite.{benchmark}.models"))
        if not models:
            raise PlanError(f"profile {profile.name}: suite.{benchmark}.models is empty while suite.benchmarks "
                            f"lists {benchmark}; list a model there or remove {benchmark} from suite.benchmarks")
        out += [(benchmark, m) for m in dict.fromkeys(models)]
    if not out:
        raise PlanError(f"profile {profile.name}: suite.benchmarks is empty: nothing to submit; list the benchmarks "
                        "`submit all` should chain (e.g. suite.benchmarks: [training, checkpointing])")
    return out


def _member_plan(benchmark: str, model: str, request: SuiteRequest, profile: SiteProfile, nodes: int, run_id: str,
                 run_dir: str, python: str, probe: bool) -> Plan:
    bench = benchmarks.get(benchmark)
    settings = {"nodes": nodes, "scale": request.scale, **dict(request.options)}
    try:
        member_request = bench.suite_request(model, profile, settings)
        plan = bench.plan(member_request, profile, run_id=run_id, run_dir=run_dir, python=python)
        if probe:
            from mlps_slurm import probes

            bench.probe(plan, python)
            plan = probes.settle(plan, profile, python)
    except PlanError as exc:
        raise PlanError(f"{exc}{_profile_origin(bench, str(exc))}") from exc
    return plan


def _profile_origin(bench: Any, message: str) -> str:
    """When an option named in the message came from the profile's suite section, say so."""
    from mlps_slurm.benchmarks.base import options_of

    for f, spec in options_of(bench.request_type):
        if spec.suite == "profile" and spec.flags and spec.flags[0] in message:
            return (f" (the {spec.flags[0]} values come from the profile's suite.{bench.name}.{f.name}; "
                    "--allow-invalid applies to `submit all` too)")
    return ""


def merge_preflight(suite: dict[str, Any], members: list[dict[str, Any]]) -> dict[str, Any]:
    """What every node must provide for all the workloads: the union of their needs. Space on one directory adds
    up (two datasets stay side by side); the results directory is the suite's."""
    merged = dict(suite)
    modules = list(suite["python_modules"])
    executables = list(suite["executables"])
    storage: dict[tuple[str, str], dict[str, Any]] = {}
    separate: list[list[str]] = []
    for spec in members:
        modules += spec["python_modules"]
        executables += spec["executables"]
        for d in spec["storage"]:
            if d["id"] == "results_dir":
                continue
            slot = storage.setdefault((d["id"], d["path"]), {**d, "required_free_bytes": 0})
            slot["required_free_bytes"] += d["required_free_bytes"]
        separate += [pair for pair in spec["separate_filesystems"] if pair not in separate]
        if spec.get("memory_gb_expected") is not None:
            merged["memory_gb_expected"] = max(spec["memory_gb_expected"], merged.get("memory_gb_expected") or 0)
        if spec.get("memory_sizes_dataset"):
            merged["memory_sizes_dataset"] = True
        merged["lockfile"] = merged.get("lockfile") or spec.get("lockfile")
    merged["container"] = merge_container_setups([suite.get("container"), *(s.get("container") for s in members)])
    deferred = [p for s in members for p in s.get("engine_probes", [])]
    if deferred:  # two workloads of one benchmark probe the same thing: once is enough
        merged["engine_probes"] = [p for i, p in enumerate(deferred) if p not in deferred[:i]]
    merged["python_modules"] = list(dict.fromkeys(modules))
    merged["executables"] = list(dict.fromkeys(executables))
    merged["storage"] = list(storage.values()) + [d for d in suite["storage"] if d["id"] == "results_dir"]
    merged["separate_filesystems"] = separate
    return merged


def plan_suite(request: SuiteRequest, profile: SiteProfile, *, run_id: str, run_dir: str, python: str,
               probe: bool = False) -> Plan:
    """With `probe`, each workload's engine is looked for in the jobs' interpreter (PlanError when missing)."""
    nodes = client_nodes(request.nodes, profile)
    run_dir = run_dir.rstrip("/")
    stamp = run_id.split("-", 1)[1] if "-" in run_id else run_id

    members: list[tuple[str, Plan]] = []
    models: list[str] = []
    jobs: list[JobSpec] = []
    notes: list[str] = []
    previous_last: str | None = None
    for benchmark, model in _workloads(request, profile):
        name = f"{benchmark}-{model}"
        member_id = f"{name}-{stamp}"
        rel = f"runs/{member_id}"
        try:
            plan = _member_plan(benchmark, model, request, profile, nodes, member_id, f"{run_dir}/{rel}", python,
                                probe)
        except PlanError as exc:
            raise PlanError(f"{benchmark} {model} (profile {profile.name}: suite.{benchmark}.models): {exc}") from exc
        members.append((rel, plan))
        models.append(model)
        notes += [f"{name}: {n}" for n in plan.notes]
        own = [j for j in plan.jobs if j.key not in SHARED_JOBS]
        for i, job in enumerate(own):
            deps = tuple((kind, tuple(member_key(name, k) for k in keys if k != "finalize"))
                         for kind, keys in job.dependencies)
            if i == 0 and previous_last:
                # One workload at a time: the next starts when the previous one ended, however it ended.
                deps += (("afterany", (previous_last,)),)
            jobs.append(replace(job, key=member_key(name, job.key), dependencies=deps))
        previous_last = member_key(name, own[-1].key)

    base = base_context(profile, python, run_id, run_dir)
    preflight = preflight_job(profile, run_dir, python, nodes, base)
    finalize = finalize_job(profile, run_dir, python, base, ("preflight", *(j.key for j in jobs)))
    suite_needs = preflight_requirements(profile, run_dir, python, storage=[], engine_modules=[])
    req = {
        **request.to_dict(), "nodes": nodes,
        "members": [{"name": f"{p.benchmark}-{model}", "benchmark": p.benchmark, "model": model,
                     "run_id": p.run_id, "dir": rel} for (rel, p), model in zip(members, models)],
        "submission": {"organization": profile.get("submission.organization"),
                       "system": profile.get("submission.system")},
    }
    return Plan(run_id=run_id, benchmark=SUITE, request=req, jobs=with_site_args((preflight, *jobs, finalize), profile),
                notes=tuple(notes), preflight=merge_preflight(suite_needs, [p.preflight for _, p in members]),
                members=tuple(members))
