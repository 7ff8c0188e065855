"""What a benchmark provides to the shared layers.

A benchmark is a package under mlps_slurm/benchmarks/ with a light __init__.py that defines
`BENCHMARK = Benchmark(...)`: its names and a few facts. Everything heavier lives in modules of the package, named
by this contract and imported only when a shared layer needs them:

    request.py   REQUEST: the typed request (a frozen `Request` dataclass; every default and range in one place)
    plan.py      plan(request, profile, *, run_id, run_dir, python) -> Plan; probe(plan, python) (what the login node
                 can refuse); (optional) engine_probe(plan) -> EngineProbe and judge_probe(probe, info, python) ->
                 [problem] (is the engine there, in the jobs' environment?);
                 suite_request(model, profile, settings) -> Request (a workload of `submit all`)
    finalize.py  finalize(run) -> (results, table)          (inside the finalize job)
    report.py    table(results) -> str                      (the readable results table)
    rules.py     plan_from_request(mapping) and plan_findings(plan): the rules on a request before it runs;
                 run_findings(record): on a finished run; (optional) submission_findings(records)
    results.py   load(root, manifest, preflight) -> Loaded: a run directory as its rule record (for verify)
    bundle.py    layout(run, base) -> (entries, timestamp dir, results.json dir): the run in a submission tree;
                 (optional) system_facts(runs) -> dict: what its runs add to the system description
    cli.py       (optional) COMMANDS: {group: [click commands]} it adds to the CLI (e.g. `datasize training`)
    history.py   (optional) metrics(results) -> [Metric]: what `mlps-slurm history` records and compares, each with
                 the per-checkpoint / per-run / per-trial samples its value is the mean of; versions(results) -> dict
    plots.py     (optional) figures(results) -> [mlps_slurm.report.figures.Figure]: what `mlps-slurm report` draws
                 of a run, as plain data (the shared report renders it; a benchmark never imports matplotlib)

Nothing here imports click, the profile or the plan: the CLI derives its options from the request's fields, the
profile schema its suite keys, and both stay fast to import.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:
    from mlps_slurm.plan import Plan
    from mlps_slurm.profile import SiteProfile
    from mlps_slurm.rundir import RunDirectory


class PlanError(ValueError):
    """The request cannot be planned as given; the message says which option or profile key to change."""


class RequestError(PlanError):
    """A request value out of its range; the message names the option."""


@dataclass(frozen=True)
class Option:
    """How one request field is given on the command line, and the range every source must respect."""

    flags: tuple[str, ...] = ()  # e.g. ("--num-processes", "-n"); empty: not a command-line option
    help: str = ""
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_open: bool = False  # min itself is excluded
    required: bool = False
    multiple: bool = False  # repeatable, e.g. --param K=V --param K=V
    metavar: str | None = None
    existing_file: bool = False  # a path that must exist (it is resolved to an absolute path)
    pattern: str | None = None  # a regular expression every value must match (profile keys check it too)
    # Where `submit all` takes the value from: "cli" (an option of `submit all`, default: the field's default),
    # "profile" (the profile key suite.<benchmark>.<field>), or None (the field's default).
    suite: str | None = None


def option(default: Any = dataclasses.MISSING, *flags: str, **spec: Any) -> Any:
    """A request field with its command-line spelling and range: `scale: float = option(1.0, "--scale", min=0)`."""
    meta = {"option": Option(flags=flags, **spec)}
    if isinstance(default, (list, dict, set)):
        raise TypeError("request fields are immutable: use a tuple default")
    return dataclasses.field(default=default, metadata=meta)


def options_of(request_type: type) -> list[tuple[dataclasses.Field[Any], Option]]:
    return [(f, f.metadata["option"]) for f in dataclasses.fields(request_type) if "option" in f.metadata]


def _flag(f: dataclasses.Field[Any], spec: Option) -> str:
    return spec.flags[0] if spec.flags else f.name


@dataclass(frozen=True)
class Request:
    """Base of every benchmark's request: checks every field against its Option when it is created, so a bad value
    is refused the same way whether it came from the command line, the profile or a manifest."""

    benchmark: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f, spec in options_of(type(self)):
            value = getattr(self, f.name)
            if value is None:
                if spec.required:
                    raise RequestError(f"{_flag(f, spec)} is required")
                continue
            values = value if spec.multiple else (value,)
            for v in values:
                check_value(f, spec, v)

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark,
                **{f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check_value(f: dataclasses.Field[Any], spec: Option, value: Any) -> None:
    flag = _flag(f, spec)
    if spec.choices is not None and value not in spec.choices:
        raise RequestError(f"{flag} {value!r} is not one of {', '.join(spec.choices)}")
    if spec.pattern is not None and not (isinstance(value, str) and re.match(spec.pattern, value)):
        raise RequestError(f"{flag} {value!r}: expected {spec.metavar or spec.pattern}")
    if spec.min is None and spec.max is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{flag} must be a number, got {value!r}")
    low_ok = spec.min is None or (value > spec.min if spec.min_open else value >= spec.min)
    high_ok = spec.max is None or value <= spec.max
    if not (low_ok and high_ok):
        low = "" if spec.min is None else f"{'>' if spec.min_open else '>='} {spec.min:g}"
        high = "" if spec.max is None else f"<= {spec.max:g}"
        raise RequestError(f"{flag} must be {' and '.join(x for x in (low, high) if x)}, got {value:g}")


@dataclass(frozen=True)
class Metric:
    """One figure of a finalized run for `mlps-slurm history`: `value` is the mean of `samples` (the values of each
    checkpoint, run or trial it came from), whose spread tells the comparison what noise is."""

    name: str  # e.g. "write_throughput", "option1.read_bandwidth"
    value: float
    unit: str
    higher_is_better: bool
    samples: tuple[float, ...] = ()


def metric(name: str, unit: str, higher_is_better: bool, samples: Any) -> Metric | None:
    """A Metric from its samples (values that are not finite numbers are left out); None when none is left."""
    values = tuple(float(v) for v in samples or () if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and v == v and abs(v) != float("inf"))
    if not values:
        return None
    return Metric(name, sum(values) / len(values), unit, higher_is_better, values)


@dataclass(frozen=True)
class EngineProbe:
    """A self-contained program the jobs' Python runs as `python -c code *args` and that prints one JSON line; the
    benchmark's judge_probe turns it into problems. Data, so the preflight job can run the very same probe inside
    the container when the login node cannot (it is then recorded in the manifest's preflight section)."""

    benchmark: str
    code: str
    args: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "code": self.code, "args": list(self.args)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "EngineProbe":
        return cls(str(record["benchmark"]), str(record["code"]), tuple(str(a) for a in record.get("args", ())))


@dataclass(frozen=True)
class Benchmark:
    """One MLPerf Storage benchmark as the shared layers see it."""

    name: str  # registry name and CLI word: "checkpointing"
    package: str  # the package holding its modules
    summary: str  # one line for --help
    tree_name: str  # its directory in a submission tree and under raw/: "checkpointing", "kv_cache"
    runnable: bool  # this release runs it as a chain (otherwise it is only verified and bundled)
    models: tuple[str, ...] = ()  # workload names (models, or index types for vectordb)
    engines: tuple[str, ...] = ()  # engines.<name>.engine choices, the first is the default
    suite_models: tuple[str, ...] = ()  # suite.<name>.models default
    wait_timeout_s: float = 86400  # `submit <name> --wait`: how long to wait by default
    in_default_suite: bool = True  # listed in suite.benchmarks' default (`submit all` without a profile choice)
    # `resume`: a job that runs again needs these jobs to run again first (job key -> keys), because what they made
    # does not outlive the chain (vectordb: the finalize removes the collection a run queries).
    resume_requires: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # Storage ids (the schema's Field.storage) the rules want on another filesystem than the results: the
    # preflight checks them on every node, `profiles validate --live` on the login node before anything is queued.
    separate_from_results: tuple[str, ...] = ()

    def part(self, module: str) -> ModuleType:
        """A module of the benchmark's package (request, plan, finalize, rules, results, bundle, ...)."""
        return importlib.import_module(f"{self.package}.{module}")

    def has_part(self, module: str) -> bool:
        return importlib.util.find_spec(f"{self.package}.{module}") is not None

    # --- login node
    @property
    def request_type(self) -> type[Request]:
        return self.part("request").REQUEST  # type: ignore[no-any-return]

    def plan(self, request: Request, profile: "SiteProfile", *, run_id: str, run_dir: str, python: str) -> "Plan":
        return self.part("plan").plan(request, profile, run_id=run_id, run_dir=run_dir, python=python)  # type: ignore[no-any-return]

    def probe(self, plan: "Plan", python: str) -> None:
        """Raise PlanError for what the login node itself can refuse (a broken lockfile); what the jobs'
        environment decides is the engine probe's (engine_probe), run where that environment is."""
        self.part("plan").probe(plan, python)

    def engine_probe(self, plan: "Plan") -> "EngineProbe | None":
        """What the jobs' Python must answer before the chain is worth queueing: plan.py's engine_probe(plan), or
        none. mlps_slurm.probes runs it in the jobs' environment (inside the image on container sites): on the
        login node when it can, otherwise in the preflight job."""
        make = getattr(self.part("plan"), "engine_probe", None)
        return None if make is None else make(plan)  # type: ignore[no-any-return]

    def judge_probe(self, probe: "EngineProbe", info: Mapping[str, Any], python: str) -> list[str]:
        """The problems (each with its fix) in what the probe printed: plan.py's judge_probe(probe, info, python)."""
        return list(self.part("plan").judge_probe(probe, info, python))

    def tidy_unfinished(self, run: "RunDirectory") -> list[str]:
        """After `cancel`: remove the partial data the run's ended jobs left on the storage under test (cleanup.py's
        tidy(run), where the benchmark has one); the lines to print."""
        if not self.has_part("cleanup"):
            return []
        return self.part("cleanup").tidy(run)  # type: ignore[no-any-return]

    def suite_request(self, model: str, profile: "SiteProfile", settings: Mapping[str, Any]) -> Request:
        """The request of one workload of `submit all`: `settings` holds nodes, scale and the suite's options."""
        return self.part("plan").suite_request(model, profile, settings)  # type: ignore[no-any-return]

    def profile_fields(self) -> dict[str, Any]:
        """The site-profile keys this benchmark owns (profile.py's FIELDS: "<name>.*" -> schema Field), e.g. where
        the vectordb benchmark's Milvus comes from. Merged into the one schema, defaults and all."""
        if not self.has_part("profile"):
            return {}
        fields = dict(self.part("profile").FIELDS)
        foreign = [k for k in fields if not k.startswith(f"{self.name}.")]
        if foreign:
            raise ValueError(f"{self.package}.profile: keys outside its section {self.name}.*: {', '.join(foreign)}")
        return fields

    def commands(self, group: str) -> list[Any]:
        """The click commands this benchmark adds to a group of the CLI, e.g. `datasize training`."""
        return list(self.part("cli").COMMANDS.get(group, ())) if self.has_part("cli") else []

    # --- finalize job, reports
    def finalize(self, run: "RunDirectory") -> tuple[dict[str, Any], str]:
        return self.part("finalize").finalize(run)  # type: ignore[no-any-return]

    def table(self, results: Mapping[str, Any]) -> str:
        return self.part("report").table(results)  # type: ignore[no-any-return]

    def history_metrics(self, results: Mapping[str, Any]) -> list[Metric]:
        """The metrics `mlps-slurm history` records for a finalized run: history.py's metrics(results), or none."""
        return list(self.part("history").metrics(results)) if self.has_part("history") else []

    def figures(self, results: Mapping[str, Any]) -> list[Any]:
        """The figures `mlps-slurm report` draws of a finalized run: plots.py's figures(results), or none."""
        return list(self.part("plots").figures(results)) if self.has_part("plots") else []

    def history_versions(self, results: Mapping[str, Any]) -> dict[str, Any]:
        """Engine and server versions a run's results name (history.py's versions(results)), or none."""
        versions = getattr(self.part("history"), "versions", None) if self.has_part("history") else None
        return {} if versions is None else dict(versions(results))

    # --- rules
    def plan_findings(self, request: Mapping[str, Any]) -> list[Any]:
        rules = self.part("rules")
        return rules.plan_findings(rules.plan_from_request(request))  # type: ignore[no-any-return]

    # --- verify and bundle
    def load_run(self, root: Any, manifest: Mapping[str, Any], preflight: Mapping[str, Any] | None) -> Any:
        """The run directory `root` (a Path; or the run's copy in a submission tree) as a
        mlps_slurm.rules.loaders.Loaded: results.py's load(root, manifest, preflight)."""
        return self.part("results").load(root, manifest, preflight)

    def run_findings(self, record: Any) -> list[Any]:
        """The run-level rules (Findings) on the record load_run built: rules.py's run_findings(record)."""
        return self.part("rules").run_findings(record)  # type: ignore[no-any-return]

    def submission_findings(self, records: list[Any]) -> list[Any] | None:
        """The submission-level rules on the records of one model's usable runs: rules.py's
        submission_findings(records). None when it has none (or it does not apply): a submission then holds one
        run per model, which mlps_slurm.verify checks for every benchmark."""
        check = getattr(self.part("rules"), "submission_findings", None)
        return None if check is None else check(list(records))  # type: ignore[no-any-return]

    def bundle_layout(self, run: Any, base: str) -> tuple[list[Any], str, str]:
        """Where a verified run (a mlps_slurm.verify.RunVerdict) goes in a submission tree, under `base`
        (<division>/<org>/results/<system>/<tree_name>/<model>): bundle.py's layout(run, base) -> (its
        mlps_slurm.bundle.layout.Entry list, its timestamp directory's name, the directory of the model's
        results.json)."""
        return self.part("bundle").layout(run, base)  # type: ignore[no-any-return]

    def system_facts(self, runs: list[Any]) -> dict[str, Any]:
        """Top-level keys this benchmark's bundled runs (RunVerdicts) add to the system description:
        bundle.py's system_facts(runs), or none."""
        facts = getattr(self.part("bundle"), "system_facts", None)
        return {} if facts is None else dict(facts(list(runs)))
