"""Checkpointing rules (MLPerf Storage v3.0 Rules.md §4, reference mlperf-storage.md §2.2 and §3.4).

Three subjects, each a frozen record built from data (no I/O here):
- CheckpointPlan: the parameters of a request, before anything runs (`plan_findings`), and as recorded for a run;
- CheckpointRun: a plan plus what the engine observed (`run_findings`);
- a tuple of CheckpointRun for one model in a submission (`submission_findings`): one invocation of 10 writes and
  10 reads, or two invocations (10 writes, then 10 reads started within 30 s).

results.py builds these from a run directory; `run_findings` judges either record a finished run leaves (the plan
alone when the engine output is unusable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence, Union

from mlps_slurm.benchmarks.checkpointing.catalog import (
    ACCELERATOR_MEMORY_GB,
    DEFAULT_NUM_CHECKPOINTS_READ,
    DEFAULT_NUM_CHECKPOINTS_WRITE,
    DEFAULT_SECONDS_BETWEEN_CHECKPOINTS,
    LLAMA3_MODELS,
    MAX_WRITE_READ_GAP_SECONDS,
    rank_shards,
)
from mlps_slurm.rules.core import Finding, Rule, closed, declare, full_size, invalid, open_, rule, run_rules

CLOSED_ACCELERATORS = ("b200", "mi355")
WHATIF_ACCELERATORS = ("h100", "a100")  # Rules.md Table 3: simulated in whatif only, never submitted
DEFAULT_ACCELERATOR = "b200"
CLOSED_TUNABLE_PARAMS = frozenset({"checkpoint.checkpoint_folder"})
MIN_RANKS_PER_HOST_CLOSED = 4
# Rules.md §4.3.1: below this ratio of data written per client to client RAM, the client page cache could still
# hold the checkpoints when they are read back, so it must be cleared between the phases.
CACHE_DROP_RAM_FACTOR = 3

ENGINE_OUTPUT = declare("ckpt.engine_output", "the checkpoint engine's output is present and well-formed "
                                              "(raw/checkpointing/<model>/engine.json)")


@dataclass(frozen=True)
class CheckpointPlan:
    """A checkpointing request's parameters. `ranks_per_host` maps host (or node index) to its rank count when
    known; `params` holds DLIO-style parameter overrides (key -> value) beyond the named parameters."""

    model: str
    num_processes: int
    accelerator: str = DEFAULT_ACCELERATOR
    scale: float = 1.0
    num_checkpoints_write: int = DEFAULT_NUM_CHECKPOINTS_WRITE
    num_checkpoints_read: int = DEFAULT_NUM_CHECKPOINTS_READ
    seconds_between_checkpoints: float = DEFAULT_SECONDS_BETWEEN_CHECKPOINTS
    ranks_per_host: Mapping[str, int] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


def ranks_per_node(num_processes: int, nodes: int) -> dict[str, int]:
    """How srun's block distribution places num_processes ranks on `nodes` nodes (the plan's view)."""
    base, extra = divmod(num_processes, nodes)
    return {f"node{i}": base + (1 if i < extra else 0) for i in range(nodes)}


@dataclass(frozen=True)
class CheckpointObservation:
    """What one engine invocation recorded. Times are seconds since the epoch; bytes are summed over ranks."""

    fsync: bool
    writes: int
    reads: int
    checkpoint_bytes: tuple[tuple[str, int, int], ...]  # (phase, index, bytes of all ranks)
    write_end: float | None  # end of the last write checkpoint (its slowest rank)
    read_start: float | None  # start of the first read checkpoint (its first rank)
    cache_drop_ok: bool
    cache_drop_errors: tuple[str, ...]
    written_per_host: Mapping[str, int]  # bytes each client wrote over the whole write phase
    ranks_per_host: Mapping[str, int]
    client_memory: Mapping[str, int]  # bytes of RAM per client, where known
    memory_source: str  # where client_memory came from, for the message
    started: float | None
    ended: float | None


@dataclass(frozen=True)
class CheckpointRun:
    run_id: str
    plan: CheckpointPlan
    observed: CheckpointObservation


Subject = Union[CheckpointPlan, CheckpointRun]


def _plan(subject: Subject) -> CheckpointPlan:
    return subject.plan if isinstance(subject, CheckpointRun) else subject


def _counts(subject: Subject) -> tuple[int, int, str]:
    if isinstance(subject, CheckpointRun):
        return subject.observed.writes, subject.observed.reads, "recorded"
    return subject.num_checkpoints_write, subject.num_checkpoints_read, "planned"


# --- checks on the parameters (a request before it runs, and every run) ----------------------------------------

@rule("ckpt.model", "the model is one of the llama3 checkpoint workloads")
def check_model(subject: Subject) -> Finding:
    plan = _plan(subject)
    if plan.model in LLAMA3_MODELS:
        return closed("ckpt.model", f"model {plan.model}", list(LLAMA3_MODELS), plan.model)
    return invalid("ckpt.model", f"unknown checkpointing model {plan.model!r}", list(LLAMA3_MODELS), plan.model)


@rule("ckpt.process_count", "process count: the model's CLOSED count (8/64/512/1024) is CLOSED, another positive "
                            "multiple of TP x PP is OPEN, anything else INVALID")
def check_process_count(subject: Subject) -> Finding:
    plan = _plan(subject)
    model = LLAMA3_MODELS[plan.model]
    np_, mp = plan.num_processes, model.model_parallel
    if np_ == model.closed_processes:
        return closed("ckpt.process_count", f"{np_} processes is the CLOSED count of {model.name}",
                      model.closed_processes, np_)
    if np_ > 0 and np_ % mp == 0:
        return open_("ckpt.process_count", f"{np_} processes: a multiple of TP x PP = {mp} is OPEN; CLOSED needs "
                                           f"exactly {model.closed_processes}", model.closed_processes, np_)
    return invalid("ckpt.process_count", f"{np_} processes is not a positive multiple of TP x PP = {mp} for "
                                         f"{model.name}; use {model.closed_processes} (CLOSED) or a multiple of {mp}",
                   f"{model.closed_processes} or a multiple of {mp}", np_)


@rule("ckpt.ranks_per_host", f"CLOSED needs the same number of ranks on every client host and at least "
                             f"{MIN_RANKS_PER_HOST_CLOSED} per host; otherwise OPEN")
def check_ranks_per_host(subject: Subject) -> Finding | None:
    layout = subject.observed.ranks_per_host if isinstance(subject, CheckpointRun) else subject.ranks_per_host
    if not layout:
        return None  # a request without a node count: the plan decides the layout later and checks it then
    counts = sorted(set(layout.values()))
    actual = dict(sorted(layout.items()))
    if len(counts) > 1:
        return open_("ckpt.ranks_per_host", f"uneven ranks per host ({', '.join(map(str, counts))}); CLOSED needs "
                                            "the same count on every host", "equal counts", actual)
    if counts[0] < MIN_RANKS_PER_HOST_CLOSED:
        return open_("ckpt.ranks_per_host", f"{counts[0]} rank(s) per host on {len(layout)} host(s); CLOSED needs "
                                            f"at least {MIN_RANKS_PER_HOST_CLOSED} per host (use fewer nodes)",
                     f">= {MIN_RANKS_PER_HOST_CLOSED}", actual)
    return closed("ckpt.ranks_per_host", f"{counts[0]} ranks on each of {len(layout)} host(s)",
                  f">= {MIN_RANKS_PER_HOST_CLOSED}", actual)


@rule("ckpt.write_read_count", "exactly 10 checkpoint writes and 10 reads: in one invocation, or as one half "
                               "(10 writes or 10 reads) of a split pair that the submission check completes")
def check_write_read_count(subject: Subject) -> Finding:
    w, r, how = _counts(subject)
    expected = [DEFAULT_NUM_CHECKPOINTS_WRITE, DEFAULT_NUM_CHECKPOINTS_READ]
    if (w, r) == (DEFAULT_NUM_CHECKPOINTS_WRITE, DEFAULT_NUM_CHECKPOINTS_READ):
        return closed("ckpt.write_read_count", f"{w} writes and {r} reads {how}", expected, [w, r])
    if (w, r) in ((DEFAULT_NUM_CHECKPOINTS_WRITE, 0), (0, DEFAULT_NUM_CHECKPOINTS_READ)):
        return closed("ckpt.write_read_count", f"{w} writes and {r} reads {how}: one half of a split write/read "
                                               "submission; the submission check needs its other half",
                      expected, [w, r])
    return invalid("ckpt.write_read_count", f"{w} writes and {r} reads {how}; the rules require exactly "
                                            f"{expected[0]} writes and {expected[1]} reads", expected, [w, r])


@rule("ckpt.accelerator", "the simulated accelerator is a CLOSED/OPEN one (b200, mi355); h100/a100 are whatif only")
def check_accelerator(subject: Subject) -> Finding:
    acc = _plan(subject).accelerator
    if acc in CLOSED_ACCELERATORS:
        return closed("ckpt.accelerator", f"accelerator {acc}", list(CLOSED_ACCELERATORS), acc)
    if acc in WHATIF_ACCELERATORS:
        return invalid("ckpt.accelerator", f"accelerator {acc} is simulated in whatif mode only, never submitted; "
                                           f"use {' or '.join(CLOSED_ACCELERATORS)}", list(CLOSED_ACCELERATORS), acc)
    return invalid("ckpt.accelerator", f"unknown accelerator {acc!r}; valid: {', '.join(ACCELERATOR_MEMORY_GB)}",
                   list(CLOSED_ACCELERATORS), acc)


@rule("ckpt.accelerator_memory", "aggregate simulated accelerator memory (processes x memory per accelerator) is "
                                 "at least the checkpoint size (Rules.md 4.3.4)")
def check_accelerator_memory(subject: Subject) -> Finding:
    plan = _plan(subject)
    model = LLAMA3_MODELS[plan.model]
    per = ACCELERATOR_MEMORY_GB.get(plan.accelerator)
    if per is None:
        return invalid("ckpt.accelerator_memory", f"no memory size for accelerator {plan.accelerator!r}",
                       list(ACCELERATOR_MEMORY_GB), plan.accelerator)
    # GB as in Rules.md Table 3 (10^9 bytes); the checkpoint is the full model's, whatever --scale shrank.
    aggregate = plan.num_processes * per * 10**9
    need = model.checkpoint_bytes()
    text = (f"{plan.num_processes} x {per} GB ({plan.accelerator}) = {aggregate / 1e9:,.0f} GB vs a "
            f"{need / 1e9:,.0f} GB checkpoint")
    if aggregate >= need:
        return closed("ckpt.accelerator_memory", text, f">= {need}", aggregate)
    return invalid("ckpt.accelerator_memory", text + "; more processes are needed to hold the checkpoint",
                   f">= {need}", aggregate)


@rule("ckpt.scaled", "the checkpoint has the model's full size: a scaled run (--scale < 1) is never CLOSED and is "
                     "INVALID for submission")
def check_scaled(subject: Subject) -> Finding:
    scale = _plan(subject).scale
    return full_size("ckpt.scaled", scale, "full-size checkpoints", f"checkpoints are {scale:g} x the model's size; ")


def _param_key(key: str) -> str:
    key = key.lstrip("+")
    return key[len("workload."):] if key.startswith("workload.") else key


@rule("ckpt.params", "in CLOSED only checkpoint.checkpoint_folder may be changed (time_between_checkpoints stays "
                     "5 s); any other change is OPEN")
def check_params(subject: Subject) -> Finding:
    plan = _plan(subject)
    changed = sorted(k for k in (_param_key(k) for k in plan.params) if k not in CLOSED_TUNABLE_PARAMS)
    if plan.seconds_between_checkpoints != DEFAULT_SECONDS_BETWEEN_CHECKPOINTS:
        changed.append(f"checkpoint.time_between_checkpoints={plan.seconds_between_checkpoints:g}")
    if changed:
        return open_("ckpt.params", f"parameters changed beyond checkpoint_folder: {', '.join(changed)}; CLOSED "
                                    f"allows only {', '.join(sorted(CLOSED_TUNABLE_PARAMS))} (and "
                                    f"{DEFAULT_SECONDS_BETWEEN_CHECKPOINTS:g} s between checkpoints)",
                     sorted(CLOSED_TUNABLE_PARAMS), changed)
    return closed("ckpt.params", "no parameter beyond checkpoint_folder changed", sorted(CLOSED_TUNABLE_PARAMS), [])


PLAN_RULES: tuple[Rule, ...] = (check_model, check_process_count, check_ranks_per_host, check_write_read_count,
                                check_accelerator, check_accelerator_memory, check_scaled, check_params)
# Checks that need the model to exist; skipped (not run) when ckpt.model already said INVALID.
_NEEDS_MODEL = {"ckpt.process_count", "ckpt.accelerator_memory", "ckpt.checkpoint_size"}


# --- checks on what a run recorded ------------------------------------------------------------------------------

@rule("ckpt.fsync", "every checkpoint write was fsynced")
def check_fsync(run: CheckpointRun) -> Finding:
    if run.observed.fsync:
        return closed("ckpt.fsync", "every write was fsynced", True, True)
    return invalid("ckpt.fsync", "the engine did not fsync its writes; the rules require fsync on every write",
                   True, False)


@rule("ckpt.read_gap", f"the read phase starts within {MAX_WRITE_READ_GAP_SECONDS:g} s of the write phase's end "
                       "(Rules.md 4.7.1)")
def check_read_gap(run: CheckpointRun) -> Finding:
    o = run.observed
    if o.write_end is None or o.read_start is None:
        return closed("ckpt.read_gap", "only one phase in this invocation; the submission check measures the gap "
                                       "between the two invocations")
    gap = o.read_start - o.write_end
    if gap <= MAX_WRITE_READ_GAP_SECONDS:
        return closed("ckpt.read_gap", f"the read phase started {gap:.1f} s after the last write ended",
                      f"<= {MAX_WRITE_READ_GAP_SECONDS:g}", round(gap, 3))
    return invalid("ckpt.read_gap", f"the read phase started {gap:.1f} s after the last write ended, more than "
                                    f"{MAX_WRITE_READ_GAP_SECONDS:g} s", f"<= {MAX_WRITE_READ_GAP_SECONDS:g}",
                   round(gap, 3))


@rule("ckpt.cache_drop", f"the client page cache was cleared between the phases where data written per client is "
                         f"under {CACHE_DROP_RAM_FACTOR} x client RAM (Rules.md 4.3.1)")
def check_cache_drop(run: CheckpointRun) -> Finding:
    o = run.observed
    if o.reads == 0 or o.writes == 0:
        return closed("ckpt.cache_drop", "one phase only in this invocation; nothing to drop between phases")
    if o.cache_drop_ok:
        return closed("ckpt.cache_drop", "every rank dropped its checkpoint files from the page cache before "
                                         "reading", "dropped", "dropped")
    needing, unknown = [], []
    for host, written in sorted(o.written_per_host.items()):
        ram = o.client_memory.get(host)
        if ram is None:
            unknown.append(host)
        elif written < CACHE_DROP_RAM_FACTOR * ram:
            needing.append(f"{host} wrote {written / 1e9:.1f} GB < {CACHE_DROP_RAM_FACTOR} x {ram / 1e9:.1f} GB RAM")
    errors = "; ".join(o.cache_drop_errors[:3])
    if needing:
        return invalid("ckpt.cache_drop", f"the page cache was not cleared ({errors}) although "
                                          f"{'; '.join(needing[:4])}", "dropped", "not dropped")
    if unknown:
        return invalid("ckpt.cache_drop", f"the page cache was not cleared ({errors}) and the RAM of "
                                          f"{', '.join(unknown[:8])} is unknown, so the reads may have come from "
                                          "cache; run with preflight facts or fix the cache drop",
                       "dropped", "not dropped")
    return closed("ckpt.cache_drop", f"no cache drop needed: every client wrote at least {CACHE_DROP_RAM_FACTOR} x "
                                     f"its RAM ({o.memory_source})", "dropped or not needed", "not needed")


@rule("ckpt.checkpoint_size", "every checkpoint moved exactly the bytes of the model sharded over the processes "
                              "(at the run's scale)")
def check_checkpoint_size(run: CheckpointRun) -> Finding:
    plan = run.plan
    expected = sum(s.total_bytes for s in rank_shards(LLAMA3_MODELS[plan.model], plan.num_processes, plan.scale))
    wrong = [f"{phase} {index}: {nbytes}" for phase, index, nbytes in run.observed.checkpoint_bytes
             if nbytes != expected]
    if wrong:
        return invalid("ckpt.checkpoint_size", f"{len(wrong)} checkpoint(s) did not move the expected {expected} "
                                               f"bytes: {', '.join(wrong[:4])}", expected, wrong[:8])
    return closed("ckpt.checkpoint_size", f"all {len(run.observed.checkpoint_bytes)} checkpoints moved {expected} "
                                          "bytes", expected, expected)


RUN_ONLY_RULES: tuple[Rule, ...] = (check_fsync, check_read_gap, check_cache_drop, check_checkpoint_size)


def _applicable(rules: Sequence[Rule], model_known: bool) -> list[Rule]:
    return [r for r in rules if model_known or r.rule_id not in _NEEDS_MODEL]


def plan_findings(plan: CheckpointPlan) -> list[Finding]:
    """Pre-submission check of a request: the same rules a finished run gets, on the planned parameters."""
    return run_rules(_applicable(PLAN_RULES, plan.model in LLAMA3_MODELS), plan)


def plan_from_request(request: Mapping[str, Any]) -> CheckpointPlan:
    """The plan recorded in a manifest's request (mlps_slurm.plan: plan_checkpointing's `req`)."""
    nodes = request.get("nodes")
    np_ = int(request["num_processes"])
    return CheckpointPlan(
        model=str(request["model"]),
        num_processes=np_,
        accelerator=str(request.get("accelerator") or DEFAULT_ACCELERATOR),
        scale=float(request.get("scale", 1.0)),
        num_checkpoints_write=int(request.get("num_checkpoints_write", DEFAULT_NUM_CHECKPOINTS_WRITE)),
        num_checkpoints_read=int(request.get("num_checkpoints_read", DEFAULT_NUM_CHECKPOINTS_READ)),
        seconds_between_checkpoints=float(request.get("seconds_between_checkpoints",
                                                      DEFAULT_SECONDS_BETWEEN_CHECKPOINTS)),
        ranks_per_host=ranks_per_node(np_, int(nodes)) if isinstance(nodes, int) and nodes > 0 else None,
        params=dict(request.get("params") or {}),
    )


def run_findings(run: Subject) -> list[Finding]:
    """A finished run's findings; a run whose engine output is unusable is judged on its plan."""
    if isinstance(run, CheckpointPlan):
        return plan_findings(run)
    model_known = run.plan.model in LLAMA3_MODELS
    return run_rules(_applicable(PLAN_RULES, model_known) + _applicable(RUN_ONLY_RULES, model_known), run)


# --- submission: the runs of one model ---------------------------------------------------------------------------

@rule("ckpt.submission_runs", "per model, a submission holds one invocation of 10 writes + 10 reads, or two "
                              "invocations (10 writes, then 10 reads starting within 30 s)")
def check_submission_runs(runs: tuple[CheckpointRun, ...]) -> Finding:
    rid = "ckpt.submission_runs"
    model = runs[0].plan.model
    counts = [(r.observed.writes, r.observed.reads) for r in runs]
    ids = [r.run_id for r in runs]
    full, w_only, r_only = (10, 10), (10, 0), (0, 10)
    if len(runs) == 1:
        if counts[0] == full:
            return closed(rid, f"{model}: one invocation with 10 writes and 10 reads", "1 run", ids)
        return invalid(rid, f"{model}: the only run {ids[0]} has {counts[0][0]} writes and {counts[0][1]} reads; "
                            "a submission needs 10 + 10 (or a second invocation with the other half)",
                       [full], counts)
    if len(runs) == 2:
        ordered = sorted(runs, key=lambda r: r.observed.started or 0.0)
        first, second = ordered
        if ((first.observed.writes, first.observed.reads), (second.observed.writes, second.observed.reads)) == \
                (w_only, r_only):
            if first.observed.write_end is None or second.observed.read_start is None:
                return invalid(rid, f"{model}: cannot time the gap between {first.run_id} and {second.run_id}",
                               f"<= {MAX_WRITE_READ_GAP_SECONDS:g} s", None)
            gap = second.observed.read_start - first.observed.write_end
            if gap <= MAX_WRITE_READ_GAP_SECONDS:
                return closed(rid, f"{model}: split invocations, reads started {gap:.1f} s after the writes ended",
                              f"<= {MAX_WRITE_READ_GAP_SECONDS:g} s", round(gap, 3))
            return invalid(rid, f"{model}: the read invocation {second.run_id} started {gap:.1f} s after the "
                                f"write invocation {first.run_id} ended (limit {MAX_WRITE_READ_GAP_SECONDS:g} s)",
                           f"<= {MAX_WRITE_READ_GAP_SECONDS:g} s", round(gap, 3))
    return invalid(rid, f"{model}: {len(runs)} runs ({', '.join(ids)}); a submission holds one run with 10 writes "
                        "and 10 reads, or a write run and a read run; pick the run(s) to submit",
                   "1 run, or a 10-write run + a 10-read run", ids)


def submission_findings(runs: Iterable[Any]) -> list[Finding] | None:
    """Submission-level findings, one group per model (None when a record is not a CheckpointRun: the shared
    one-run-per-model rule applies then)."""
    records = tuple(runs)
    if not all(isinstance(r, CheckpointRun) for r in records):
        return None
    by_model: dict[str, list[CheckpointRun]] = {}
    for r in records:
        by_model.setdefault(r.plan.model, []).append(r)
    out = []
    for model in sorted(by_model):
        out += run_rules([check_submission_runs], tuple(by_model[model]))
    return out

