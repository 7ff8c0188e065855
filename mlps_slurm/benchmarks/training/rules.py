"""Training rules (MLPerf Storage v3.0, reference mlperf-storage.md §2.1 and §3.3). Pure: records in, findings out.

The records are normalized from DLIO's output and mlps-slurm's request (results.py documents the run-directory
layout and builds them):
- TrainingPlan: the request (model, accelerator, accelerators, hosts, client memory, dataset size, overrides);
- TrainingDatagen: what the datagen step left on disk;
- TrainingRunResult: one DLIO run's summary.json (start, end, AU, files, host memory);
- TrainingChain: one chain = plan + datagen + the runs (1 warm-up + 5 scored).

`plan_findings(plan)` is the pre-submission check; `run_findings(chain)` the check of a finished chain.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

from mlps_slurm.rules.common import SeparateFilesystems, separate_filesystem_findings
from mlps_slurm.rules.core import Finding, Rule, closed, declare, invalid, open_, rule, run_rules

from mlps_slurm.benchmarks.training import catalog as catalog
from mlps_slurm.benchmarks.training.catalog import (CLOSED_ACCELERATORS, CLOSED_MODELS, CLOSED_PARAMS, GIB,  # noqa: F401
                                         MOST_MEMORY_MULTIPLIER, ODIRECT_MODELS, OPEN_PARAMS, STEPS_PER_EPOCH)

REQUIRED_RUNS = catalog.RUNS  # 1 warm-up + 5 scored (TrainingSubmissionRulesChecker.REQUIRED_RUNS=5, plus the warm-up)
KNOWN_MODELS = catalog.MODELS
KNOWN_ACCELERATORS = catalog.ACCELERATORS


@dataclass(frozen=True)
class Workload:
    """The facts of one DLIO training workload that the rules need (reference §2.1 table)."""

    batch_size: int
    record_length: float  # bytes per sample
    samples_per_file: int
    au_min: float  # fraction, e.g. 0.90
    closed: bool  # in the v3.0 CLOSED set


# From the training catalog (the one place for the reference table), never from the run's own records, so a run
# cannot lower its own AU threshold or batch size.
WORKLOADS: dict[tuple[str, str], Workload] = {
    key: Workload(w.batch_size, w.record_length, w.samples_per_file, w.au_threshold, w.closed)
    for key, w in catalog.WORKLOADS.items()}
# Keys the tool itself sets (TOOL_INJECTED_PARAMS, #494): never the submitter's change.
TOOL_INJECTED = frozenset({"dataset.skip_listing", "dataset.listing_validation_interval",
                           "dataset.num_files_generated", "dataset.total_disk_bytes", "workflow.generate_data",
                           "workflow.train", "workflow.checkpoint", "output.folder", "hydra.run.dir",
                           "hydra.output_subdir"})

SUMMARY = declare("train.summary", "every planned DLIO run left a readable summary.json with start, end and AU")


@dataclass(frozen=True)
class TrainingPlan:
    """A training request. Workload numbers left None come from WORKLOADS."""

    model: str
    accelerator: str
    num_accelerators: int  # simulated accelerators (ranks) in total
    num_hosts: int
    client_memory_gb: float | None  # GiB of RAM per client host (preflight facts, else the profile)
    num_files_train: int
    num_subfolders_train: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)
    scale: float = 1.0
    batch_size: int | None = None
    record_length: float | None = None
    samples_per_file: int | None = None
    # Before submission, with no memory declared: the datagen job sizes the dataset by this very rule from the
    # memory the preflight measures, so the pre-run check cannot (and need not) judge the size yet.
    sized_in_job: bool = False

    def workload(self) -> Workload | None:
        return WORKLOADS.get((self.model, self.accelerator))


@dataclass(frozen=True)
class TrainingDatagen:
    num_files: int | None
    num_subfolders: int | None
    problem: str | None = None  # why the datagen record is unusable


@dataclass(frozen=True)
class TrainingRunResult:
    """One DLIO run, from its summary.json. `problem` says why the summary is unusable (file named)."""

    name: str
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    au_percent: float | None = None
    au_meet_expectation: str | None = None
    num_accelerators: int | None = None
    num_hosts: int | None = None
    host_memory_gb: tuple[float, ...] = ()
    num_files_train: int | None = None
    throughput_samples_per_s: float | None = None
    io_MB_per_s: float | None = None
    problem: str | None = None

    @property
    def duration_s(self) -> float | None:
        return (self.end - self.start).total_seconds() if self.start and self.end else None


@dataclass(frozen=True)
class TrainingChain:
    run_id: str
    plan: TrainingPlan
    datagen: TrainingDatagen | None
    runs: tuple[TrainingRunResult, ...]
    filesystems: SeparateFilesystems | None = None

    def usable_runs(self) -> list[TrainingRunResult]:
        """Runs with a usable summary, in start order (the first is the warm-up)."""
        ok = [r for r in self.runs if r.problem is None and r.start is not None and r.end is not None]
        return sorted(ok, key=lambda r: (r.start, r.name))


Subject = Union[TrainingPlan, TrainingChain]


def _plan(s: Subject) -> TrainingPlan:
    return s.plan if isinstance(s, TrainingChain) else s


def plan_from_request(request: Mapping[str, Any], params: Mapping[str, Any] | None = None,
                      client_memory_gb: float | None = None) -> TrainingPlan:
    """The plan of a training request (see results.py for the keys). `params` adds the overrides DLIO
    recorded; `client_memory_gb` (GiB per host, from preflight facts) replaces the declared value."""
    declared = request.get("client_memory_gb")
    return TrainingPlan(
        model=str(request["model"]), accelerator=str(request["accelerator"]),
        num_accelerators=int(request["num_accelerators"]), num_hosts=int(request["nodes"]),
        client_memory_gb=client_memory_gb if client_memory_gb else (float(declared) if declared else None),
        num_files_train=int(request["num_files_train"]),
        num_subfolders_train=int(request.get("num_subfolders_train", 0)),
        params={**_recorded_params(request), **dict(params or {})}, scale=float(request.get("scale", 1.0)),
        sized_in_job=not declared and (request.get("datasize") or {}).get("final") is False)


def _recorded_params(request: Mapping[str, Any]) -> dict[str, Any]:
    """{key: value} of the --param overrides: the planned settings' param_values (manifest 2), else the
    request's params mapping (manifest 1)."""
    values = request.get("param_values")
    if values is None:
        values = request.get("params")
    return dict(values) if isinstance(values, Mapping) else {}


# --- the numbers -------------------------------------------------------------------------------------------------

def _facts(plan: TrainingPlan) -> tuple[int, float, int] | None:
    w = plan.workload()
    batch = plan.batch_size or (w.batch_size if w else None)
    record = plan.record_length or (w.record_length if w else None)
    spf = plan.samples_per_file or (w.samples_per_file if w else None)
    if batch is None or record is None or spf is None:
        return None
    return batch, record, spf


def required_files(plan: TrainingPlan, total_memory_gib: float) -> int:
    """mlpstorage's datasize: enough samples for 500 steps of every accelerator and for 5 x the aggregate client
    memory; rounded up to whole files."""
    facts = _facts(plan)
    if facts is None:
        raise ValueError(f"no batch size / record length / samples per file for {plan.model} on {plan.accelerator}")
    batch, record, spf = facts
    min_samples = max(STEPS_PER_EPOCH * batch * plan.num_accelerators,
                      total_memory_gib * MOST_MEMORY_MULTIPLIER * GIB / record)
    return math.ceil(min_samples / spf)


def _memory(subject: Subject) -> tuple[float | None, str]:
    """Aggregate client memory in GiB and where it came from: DLIO's own host_memory_GB when a run recorded it
    (what mlpstorage re-validates with), else the plan's per-host memory x hosts."""
    plan = _plan(subject)
    if isinstance(subject, TrainingChain):
        recorded = [sum(r.host_memory_gb) for r in subject.usable_runs() if r.host_memory_gb]
        if recorded:
            return max(recorded), "DLIO summary host_memory_GB"
    if plan.client_memory_gb:
        return plan.client_memory_gb * plan.num_hosts, f"{plan.num_hosts} x {plan.client_memory_gb:g} GiB"
    return None, "unknown"


# --- checks on the parameters -------------------------------------------------------------------------------------

@rule("train.workload", "model x accelerator is in the v3.0 CLOSED set (unet3d, retinanet on b200, mi355); other "
                        "known combinations are whatif only")
def check_workload(subject: Subject) -> Finding:
    p = _plan(subject)
    what = f"{p.model} on {p.accelerator}"
    if p.model in CLOSED_MODELS and p.accelerator in CLOSED_ACCELERATORS:
        return closed("train.workload", what, "unet3d|retinanet x b200|mi355", what)
    if p.model in KNOWN_MODELS and p.accelerator in KNOWN_ACCELERATORS:
        return invalid("train.workload", f"{what} is not in the v3.0 submission set (whatif only); use unet3d or "
                                         "retinanet on b200 or mi355", "unet3d|retinanet x b200|mi355", what)
    return invalid("train.workload", f"unknown training workload {what}; models: {', '.join(KNOWN_MODELS)}; "
                                     f"accelerators: {', '.join(KNOWN_ACCELERATORS)}",
                   "unet3d|retinanet x b200|mi355", what)


@rule("train.dataset_size", "num_files_train is at least the rules' datasize: max(500 steps x batch x accelerators, "
                            "5 x aggregate client memory) in files, and every run used it")
def check_dataset_size(subject: Subject) -> Finding:
    p = _plan(subject)
    memory, source = _memory(subject)
    if memory is None and p.sized_in_job and isinstance(subject, TrainingPlan):
        return closed("train.dataset_size", f"at least {p.num_files_train} files now; the datagen job settles the "
                                            "size by this rule from the clients' memory the preflight measures",
                      ">= max(steps term, memory term)", p.num_files_train)
    if memory is None:
        return invalid("train.dataset_size", "client memory is unknown (no preflight facts, no nodes.memory_gb in "
                                             "the profile, no host_memory_GB in the DLIO summaries); the datasize "
                                             "rule cannot be checked", "client memory", None)
    need = required_files(p, memory)
    used = {p.num_files_train}
    if isinstance(subject, TrainingChain):
        used |= {r.num_files_train for r in subject.usable_runs() if r.num_files_train is not None}
    if len(used) > 1:
        return invalid("train.dataset_size", f"the runs used different num_files_train ({sorted(used)}); every run "
                                             "must use the planned dataset", p.num_files_train, sorted(used))
    if p.num_files_train < need:
        return invalid("train.dataset_size", f"num_files_train {p.num_files_train} < {need} required for "
                                             f"{p.num_accelerators} accelerators and {memory:g} GiB of client "
                                             f"memory ({source})", f">= {need}", p.num_files_train)
    return closed("train.dataset_size", f"num_files_train {p.num_files_train} >= {need} required ({source})",
                  f">= {need}", p.num_files_train)


@rule("train.hosts_homogeneous", "the same number of simulated accelerators on every host (accelerators % hosts "
                                 "== 0)")
def check_hosts_homogeneous(subject: Subject) -> Finding:
    p = _plan(subject)
    if p.num_hosts > 0 and p.num_accelerators % p.num_hosts == 0:
        return closed("train.hosts_homogeneous", f"{p.num_accelerators // p.num_hosts} accelerators on each of "
                                                 f"{p.num_hosts} host(s)", 0, 0)
    return invalid("train.hosts_homogeneous", f"{p.num_accelerators} accelerators do not split evenly over "
                                              f"{p.num_hosts} hosts (DLIO's host-memory reduce breaks, #157)",
                   0, p.num_accelerators % max(p.num_hosts, 1))


@rule("train.params", "parameter overrides: CLOSED list, OPEN list (framework, format, samples per file, data "
                      "loader), anything else INVALID; tool-injected keys exempt")
def check_params(subject: Subject) -> Finding:
    p = _plan(subject)
    keys = sorted(k.lstrip("+").removeprefix("workload.") for k in p.params)
    keys = [k for k in keys if k not in TOOL_INJECTED]
    bad = [k for k in keys if k not in OPEN_PARAMS]
    open_keys = [k for k in keys if k not in CLOSED_PARAMS
                 or (k == "reader.odirect" and p.model not in ODIRECT_MODELS)]
    if bad:
        return invalid("train.params", f"override(s) {', '.join(bad)} are allowed in neither division",
                       sorted(OPEN_PARAMS), keys)
    if open_keys:
        return open_("train.params", f"override(s) {', '.join(open_keys)} are OPEN-only", sorted(CLOSED_PARAMS),
                     keys)
    return closed("train.params", "only CLOSED overrides" if keys else "no overrides", sorted(CLOSED_PARAMS), keys)


@rule("train.scaled", "the dataset and run have full size: a scaled run (--scale < 1) is INVALID for submission")
def check_scaled(subject: Subject) -> Finding:
    s = _plan(subject).scale
    if s == 1:
        return closed("train.scaled", "full-size run", 1.0, s)
    return invalid("train.scaled", f"scaled run (--scale {s:g}): INVALID for submission", 1.0, s)


PLAN_RULES: tuple[Rule, ...] = (check_workload, check_dataset_size, check_hosts_homogeneous, check_params,
                                check_scaled)


# --- checks on a finished chain ----------------------------------------------------------------------------------

@rule("train.datagen_covers", "the generated dataset holds at least num_files_train files, in the subfolder count "
                              "the runs use")
def check_datagen(chain: TrainingChain) -> Finding:
    d, p = chain.datagen, chain.plan
    if d is None or d.problem:
        return invalid("train.datagen_covers", f"no usable datagen record: {d.problem if d else 'missing'}",
                       f">= {p.num_files_train} files", None)
    if d.num_files is None or d.num_files < p.num_files_train:
        return invalid("train.datagen_covers", f"datagen produced {d.num_files} files, the runs use "
                                               f"{p.num_files_train}", f">= {p.num_files_train}", d.num_files)
    if d.num_subfolders is not None and d.num_subfolders != p.num_subfolders_train:
        return invalid("train.datagen_covers", f"the dataset has {d.num_subfolders} subfolders but the runs set "
                                               f"num_subfolders_train={p.num_subfolders_train}",
                       d.num_subfolders, p.num_subfolders_train)
    return closed("train.datagen_covers", f"{d.num_files} files generated for {p.num_files_train} used",
                  f">= {p.num_files_train}", d.num_files)


@rule("train.run_count", f"exactly {REQUIRED_RUNS} runs (1 warm-up + 5 scored), each with a usable summary")
def check_run_count(chain: TrainingChain) -> Finding:
    usable = chain.usable_runs()
    if len(usable) == REQUIRED_RUNS and len(chain.runs) == REQUIRED_RUNS:
        return closed("train.run_count", f"{REQUIRED_RUNS} runs", REQUIRED_RUNS, REQUIRED_RUNS)
    unusable = [f"{r.name} ({r.problem})" for r in chain.runs if r not in usable]
    more = f"; unusable: {'; '.join(unusable[:3])}" if unusable else ""
    return invalid("train.run_count", f"{len(usable)} usable run(s) of {len(chain.runs)}; a submission needs "
                                      f"exactly {REQUIRED_RUNS} consecutive runs{more}", REQUIRED_RUNS, len(usable))


@rule("train.runs_consecutive", "the runs follow each other: every gap between neighbours is shorter than a run")
def check_consecutive(chain: TrainingChain) -> Finding:
    runs = chain.usable_runs()
    if len(runs) < 2:
        return invalid("train.runs_consecutive", "fewer than two usable runs; nothing shows they were consecutive",
                       REQUIRED_RUNS, len(runs))
    for a, b in zip(runs, runs[1:]):
        assert a.end is not None and b.start is not None  # usable_runs() keeps only runs with both
        gap = (b.start - a.end).total_seconds()
        shortest = min(a.duration_s or 0.0, b.duration_s or 0.0)
        if gap < 0:
            return invalid("train.runs_consecutive", f"{b.name} started before {a.name} ended: runs overlapped",
                           ">= 0 s", round(gap, 1))
        if gap >= shortest:
            return invalid("train.runs_consecutive", f"{gap:.0f} s between {a.name} and {b.name}, not shorter than "
                                                     f"a run ({shortest:.0f} s): the runs were not consecutive",
                           f"< {shortest:.0f} s", round(gap, 1))
    return closed("train.runs_consecutive", f"{len(runs)} runs back to back", "consecutive", "consecutive")


@rule("train.au_threshold", "every scored run meets the workload's accelerator-utilization threshold (the first "
                            "run is the warm-up)")
def check_au(chain: TrainingChain) -> Finding:
    p = chain.plan
    w = p.workload()
    if w is None:
        return invalid("train.au_threshold", f"no AU threshold known for {p.model} on {p.accelerator}", None, None)
    threshold = w.au_min * 100
    scored = chain.usable_runs()[1:]
    failing = [f"{r.name} {'?' if r.au_percent is None else f'{r.au_percent:.1f}'}% "
               f"({r.au_meet_expectation or 'no verdict'})" for r in scored
               if r.au_percent is None or r.au_percent < threshold
               or (r.au_meet_expectation is not None and r.au_meet_expectation != "success")]
    values = [round(r.au_percent, 2) for r in scored if r.au_percent is not None]
    if not scored:
        return invalid("train.au_threshold", "no scored run to judge", f">= {threshold:g}%", [])
    if failing:
        return invalid("train.au_threshold", f"AU below {threshold:g}%: {', '.join(failing)}", f">= {threshold:g}%",
                       values)
    return closed("train.au_threshold", f"{len(scored)} scored runs at AU >= {threshold:g}%", f">= {threshold:g}%",
                  values)


CHAIN_RULES: tuple[Rule, ...] = (check_datagen, check_run_count, check_consecutive, check_au)


def plan_findings(plan: TrainingPlan) -> list[Finding]:
    return run_rules(PLAN_RULES, plan)


def run_findings(chain: TrainingChain) -> list[Finding]:
    findings = run_rules(PLAN_RULES + CHAIN_RULES, chain)
    findings += [invalid(SUMMARY, f"run {r.name}: {r.problem}") for r in chain.runs if r.problem]
    findings += separate_filesystem_findings(chain.filesystems, "data and results")
    return findings
