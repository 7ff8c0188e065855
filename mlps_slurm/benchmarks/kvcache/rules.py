"""KV-cache rules (MLPerf Storage v3.0 Rules.md §6; reference kvcache.md §5-§6). Pure: records in, findings out.

- KvCachePlan: the options run with their parameters, and the sequence locks (seed, trials, inter-option delay,
  --config) and feature switches (autoscaling, RAG, tracing, trace replay, profile, multi-turn, prefix caching);
- KvRankResult: one rank's kvcache_results_*.json of one option and trial;
- KvCacheRun: plan + every rank result + where the cache and the results live.

`plan_findings(plan)` is the pre-submission check; `run_findings(run)` the check of a finished run.
results.py documents the run-directory layout and builds the records.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Union

from mlps_slurm.benchmarks.kvcache import catalog as cat
from mlps_slurm.rules.common import SeparateFilesystems, separate_filesystem_findings
from mlps_slurm.rules.core import Finding, Rule, closed, declare, invalid, open_, rule, run_rules


# One option's parameters, as passed to kv-cache.py (num_users is per client).
KvOption = cat.KvOptionParams
# Table KVCache-1 (Rules.md 6.3.1.1, WORKLOAD_PARAMS): immutable in CLOSED.
CLOSED_OPTIONS: Mapping[int, KvOption] = cat.OPTIONS
# Rules.md 6.3.2.1 kvcacheClosedSequenceLocks. The newer upstream code uses a 20 s delay; Rules.md and the v3.0
# leaf fixture say 90 s, and the rules are what a reviewer checks (kvcache.md §7.1).
CLOSED_SEED = cat.CLOSED_SEED
CLOSED_TRIALS = cat.CLOSED_TRIALS
CLOSED_INTER_OPTION_DELAY_S = float(cat.INTER_OPTION_DELAY_S)
# The engines that may produce a CLOSED result: MLPerf's own kv-cache.py. mlps-slurm's builtin engine follows it
# where it is measured but is not the reference, so its results are OPEN at best.
CLOSED_ENGINES = ("official",)

RESULTS_FILES = declare("kvcache.results_files", "every rank of every option and trial left a readable "
                                                 "kvcache_results_*.json")


@dataclass(frozen=True)
class KvCachePlan:
    options: Mapping[int, KvOption]
    seed: int | None = CLOSED_SEED
    trials: int = CLOSED_TRIALS
    inter_option_delay_s: float = CLOSED_INTER_OPTION_DELAY_S
    config: str | None = None  # a custom --config file (OPEN only)
    num_ranks: int = 1
    autoscaling: bool = False
    rag: bool = False
    latency_tracing: bool = False
    trace_replay: bool = False  # BurstGPT or another trace instead of the synthetic users
    performance_profile: str = "latency"
    multi_turn: bool = True
    prefix_caching: bool = True
    engine: str = "official"  # runs recorded before mlps-slurm had engines were the reference's

    @classmethod
    def closed(cls, num_ranks: int = 1) -> KvCachePlan:
        return cls(options=dict(CLOSED_OPTIONS), num_ranks=num_ranks)


@dataclass(frozen=True)
class KvRankResult:
    option: int
    trial: int
    rank: int
    path: str
    seed: int | None = None
    storage_entries: int | None = None
    read_bandwidth_gbps: float | None = None
    write_bandwidth_gbps: float | None = None
    problem: str | None = None  # why the file is unusable


@dataclass(frozen=True)
class KvCacheRun:
    run_id: str
    plan: KvCachePlan
    results: tuple[KvRankResult, ...]
    filesystems: SeparateFilesystems | None = None


Subject = Union[KvCachePlan, KvCacheRun]


def _plan(s: Subject) -> KvCachePlan:
    return s.plan if isinstance(s, KvCacheRun) else s


@rule("kvcache.options", "options 1, 2 and 3 all run, each with exactly the Table KVCache-1 parameters (changes are "
                         "OPEN; a missing or unknown option is INVALID)")
def check_options(subject: Subject) -> list[Finding]:
    plan = _plan(subject)
    out = []
    missing = sorted(set(CLOSED_OPTIONS) - set(plan.options))
    unknown = sorted(set(plan.options) - set(CLOSED_OPTIONS))
    if missing or unknown:
        out.append(invalid("kvcache.options", f"options run: {sorted(plan.options)}; a run executes options 1, 2 "
                                              f"and 3 (missing {missing or 'none'}, unknown {unknown or 'none'})",
                           sorted(CLOSED_OPTIONS), sorted(plan.options)))
    for number in sorted(set(plan.options) & set(CLOSED_OPTIONS)):
        want, got = CLOSED_OPTIONS[number], plan.options[number]
        diff = {f.name: [getattr(want, f.name), getattr(got, f.name)] for f in fields(KvOption)
                if getattr(want, f.name) != getattr(got, f.name)}
        if diff:
            text = ", ".join(f"{k} {v[1]} (CLOSED: {v[0]})" for k, v in diff.items())
            out.append(open_("kvcache.options", f"option {number} changed: {text}",
                             {k: v[0] for k, v in diff.items()}, {k: v[1] for k, v in diff.items()}))
        else:
            out.append(closed("kvcache.options", f"option {number} has the CLOSED parameters"))
    return out


@rule("kvcache.sequence", f"CLOSED sequence locks: seed {CLOSED_SEED}, {CLOSED_TRIALS} trials per option, "
                          f"{CLOSED_INTER_OPTION_DELAY_S:g} s between options, no --config (changes are OPEN)")
def check_sequence(subject: Subject) -> Finding:
    p = _plan(subject)
    expected = {"seed": CLOSED_SEED, "trials": CLOSED_TRIALS, "inter_option_delay_s": CLOSED_INTER_OPTION_DELAY_S,
                "config": None}
    actual = {"seed": p.seed, "trials": p.trials, "inter_option_delay_s": p.inter_option_delay_s, "config": p.config}
    diff = [f"{k}={actual[k]!r} (CLOSED: {expected[k]!r})" for k in expected if actual[k] != expected[k]]
    if p.trials < 1:
        return invalid("kvcache.sequence", f"trials must be at least 1, got {p.trials}", expected, actual)
    if diff:
        return open_("kvcache.sequence", f"sequence changed: {', '.join(diff)}", expected, actual)
    return closed("kvcache.sequence", "seed, trials, delay and config as locked", expected, actual)


@rule("kvcache.autoscaling", "autoscaling is prohibited in CLOSED (Rules.md 6.3.2.2)")
def check_autoscaling(subject: Subject) -> Finding:
    if _plan(subject).autoscaling:
        return open_("kvcache.autoscaling", "autoscaling enabled: OPEN only", False, True)
    return closed("kvcache.autoscaling", "autoscaling off", False, False)


@rule("kvcache.open_features", "RAG, latency tracing, trace replay, the throughput profile and disabling multi-turn "
                               "or prefix caching are OPEN-only (Rules.md 6.6.2)")
def check_open_features(subject: Subject) -> Finding:
    p = _plan(subject)
    used = [name for name, on in (("RAG", p.rag), ("latency tracing", p.latency_tracing),
                                  ("trace replay", p.trace_replay),
                                  (f"performance profile {p.performance_profile}", p.performance_profile != "latency"),
                                  ("multi-turn disabled", not p.multi_turn),
                                  ("prefix caching disabled", not p.prefix_caching)) if on]
    if used:
        return open_("kvcache.open_features", f"OPEN-only features: {', '.join(used)}", [], used)
    return closed("kvcache.open_features", "no OPEN-only feature", [], [])


@rule("kvcache.engine", "CLOSED results come from MLPerf's kv-cache.py (engine official); mlps-slurm's builtin "
                        "engine is OPEN at best")
def check_engine(subject: Subject) -> Finding:
    engine = _plan(subject).engine
    if engine in CLOSED_ENGINES:
        return closed("kvcache.engine", f"engine {engine}: the reference kv-cache.py", list(CLOSED_ENGINES), engine)
    if engine == "builtin":
        return open_("kvcache.engine", "engine builtin: mlps-slurm's independent engine, not the reference "
                                       "kv-cache.py; its results are OPEN at best", list(CLOSED_ENGINES), engine)
    return invalid("kvcache.engine", f"unknown engine {engine!r}", ["official", "builtin"], engine)


PLAN_RULES: tuple[Rule, ...] = (check_options, check_sequence, check_autoscaling, check_open_features, check_engine)


@rule("kvcache.trials_complete", "every option has trials x ranks usable result files")
def check_trials_complete(run: KvCacheRun) -> list[Finding]:
    p = run.plan
    have = {(r.option, r.trial, r.rank) for r in run.results if r.problem is None}
    out = []
    for option in sorted(p.options):
        need = {(option, t, k) for t in range(p.trials) for k in range(p.num_ranks)}
        lacking = sorted(need - have)
        if lacking:
            shown = ", ".join(f"trial_{t}/rank_{k}" for _, t, k in lacking[:6])
            out.append(invalid("kvcache.trials_complete", f"option {option}: {len(lacking)} of {len(need)} rank "
                                                          f"result(s) missing or unusable ({shown}"
                                                          f"{' ...' if len(lacking) > 6 else ''})",
                               len(need), len(need) - len(lacking)))
        else:
            out.append(closed("kvcache.trials_complete", f"option {option}: {p.trials} trials x {p.num_ranks} "
                                                         "ranks", len(need), len(need)))
    return out


@rule("kvcache.rank_seeds", "each rank ran with seed base + rank (per-client isolation; the seed recorded in its "
                            "results)")
def check_rank_seeds(run: KvCacheRun) -> Finding | None:
    base = run.plan.seed
    if base is None:
        return None  # no seed: kvcache.sequence already made it OPEN
    wrong = [f"option {r.option} trial {r.trial} rank {r.rank}: {r.seed}" for r in run.results
             if r.problem is None and r.seed is not None and r.seed != base + r.rank]
    if wrong:
        return invalid("kvcache.rank_seeds", f"rank seeds differ from seed base {base} + rank: "
                                             f"{'; '.join(wrong[:4])}", "seed + rank", wrong[:8])
    return closed("kvcache.rank_seeds", f"rank seeds are {base} + rank", "seed + rank", "seed + rank")


@rule("kvcache.cpu_tier", "an option whose ranks all served from the CPU tier (no storage entries) measured no "
                          "storage: OPEN only (Rules.md 6.3.4.4)")
def check_cpu_tier(run: KvCacheRun) -> Finding:
    all_cpu = []
    for option in sorted(run.plan.options):
        entries = [r.storage_entries for r in run.results if r.option == option and r.problem is None]
        if entries and all(e == 0 for e in entries):
            all_cpu.append(option)
    if all_cpu:
        return open_("kvcache.cpu_tier", f"option(s) {all_cpu}: every rank served from the CPU tier, no storage "
                                         "I/O was measured", "storage entries > 0", all_cpu)
    return closed("kvcache.cpu_tier", "every option reached storage", "storage entries > 0", [])


RUN_RULES: tuple[Rule, ...] = (check_trials_complete, check_rank_seeds, check_cpu_tier)


def plan_findings(plan: KvCachePlan) -> list[Finding]:
    return run_rules(PLAN_RULES, plan)


def run_findings(run: KvCacheRun) -> list[Finding]:
    findings = run_rules(PLAN_RULES + RUN_RULES, run)
    findings += [invalid(RESULTS_FILES, f"{r.path}: {r.problem}") for r in run.results if r.problem]
    findings += separate_filesystem_findings(run.filesystems, "cache and results")
    return findings


_FIELDS = {f.name for f in fields(KvOption)}


def option_from_mapping(data: Mapping[str, Any]) -> KvOption:
    """An option from a request/metadata mapping; unknown keys are an error naming them."""
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown kv-cache option key(s) {unknown}; valid: {sorted(_FIELDS)}")
    missing = sorted(_FIELDS - set(data))
    if missing:
        raise ValueError(f"kv-cache option lacks {missing}")
    return KvOption(str(data["model"]), int(data["num_users"]), float(data["duration_s"]),
                    float(data["gpu_mem_gb"]), float(data["cpu_mem_gb"]), int(data["max_concurrent_allocs"]),
                    str(data["generation_mode"]))


def plan_from_request(request: Mapping[str, Any]) -> KvCachePlan:
    """The plan of a kv-cache request (keys in results.py); options default to the CLOSED table."""
    options = request.get("options")
    opts = ({int(k): option_from_mapping(v) for k, v in options.items()} if isinstance(options, Mapping)
            else dict(CLOSED_OPTIONS))
    seed = request.get("seed", CLOSED_SEED)
    return KvCachePlan(
        options=opts, seed=None if seed is None else int(seed), trials=int(request.get("trials", CLOSED_TRIALS)),
        inter_option_delay_s=float(request.get("inter_option_delay_s", request.get("inter_option_delay",
                                                                                    CLOSED_INTER_OPTION_DELAY_S))),
        config=request.get("config"), num_ranks=int(request["num_processes"]),
        autoscaling=bool(request.get("autoscaling", False)), rag=bool(request.get("rag", False)),
        latency_tracing=bool(request.get("latency_tracing", False)),
        trace_replay=bool(request.get("trace_replay", False)),
        performance_profile=str(request.get("performance_profile", "latency")),
        multi_turn=bool(request.get("multi_turn", True)), prefix_caching=bool(request.get("prefix_caching", True)),
        engine=str(request.get("engine") or "official"))

