"""The site-profile schema: every key, its type, its default and what it means, in one table.

Code reads profile values through `SiteProfile.get("dotted.key")` and never hard-codes a default elsewhere;
`mlps-slurm profiles show NAME --resolved` prints this table resolved.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

# Slurm time formats accepted by --time: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, and UNLIMITED/INFINITE.
_SLURM_TIME = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}|UNLIMITED|INFINITE)$")
# Values that become #SBATCH directive arguments: sbatch parses those itself, not bash, so they cannot be
# shell-quoted; instead they are restricted to characters that cannot end or confuse the directive.
SBATCH_TOKEN = re.compile(r"^[A-Za-z0-9_.,:@%+=/\-\[\]&|!*]+$")
ABS_OR_HOME = re.compile(r"^(/|~|\$)")


def slurm_minutes(text: str) -> float:
    """Minutes of a Slurm time (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S); infinite for UNLIMITED/INFINITE."""
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INFINITE", "N/A", ""):
        return math.inf
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
        parts = [int(p) for p in text.split(":")] + [0, 0]
        hours, minutes, seconds = parts[0], parts[1], parts[2]
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, parts[0], parts[1]
        else:
            hours, minutes, seconds = parts
    return days * 1440 + hours * 60 + minutes + seconds / 60


@dataclass(frozen=True)
class Field:
    kind: str  # "str", "int", "float", "bool", "list[str]", "dict[str,str]"
    default: Any
    doc: str
    nullable: bool = False
    choices: Sequence[str] = ()
    minimum: float | None = None
    pattern: re.Pattern[str] | None = None
    pattern_help: str = ""
    required: bool = False
    path: bool = False  # a filesystem path: ~ and $VARS are expanded when the profile is loaded
    # A directory the benchmarks read or write (the storage under test): its id in the preflight's report. Such
    # directories are mounted into containers, checked by `validate --live` and by the admins' preflight.
    storage: str = ""


class Registered(Sequence[str]):
    """Choices read from a registry each time they are checked, so a launcher or container runtime registered
    after this module was imported is accepted; the registry is imported on first use (not by `--help`)."""

    def __init__(self, names: Callable[[], tuple[str, ...]]) -> None:
        self._names = names

    def __getitem__(self, index: Any) -> Any:
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __repr__(self) -> str:
        return f"Registered({self._names()!r})"


# The schema is the lower layer: launchers and container runtimes read profile values (and the storage keys below),
# and the schema finds their registries by module name when a value is checked (as the benchmark registry finds
# benchmark packages), so neither imports the other at load time.
def _plugins(module: str) -> Any:
    import importlib

    return importlib.import_module(module)


def _launcher_kinds() -> tuple[str, ...]:
    return _plugins("mlps_slurm.launchers").names()  # type: ignore[no-any-return]


def _mpi_plugins() -> tuple[str, ...]:
    return _plugins("mlps_slurm.launchers").mpi_plugins()  # type: ignore[no-any-return]


def _container_runtimes() -> tuple[str, ...]:
    return _plugins("mlps_slurm.containers").names()  # type: ignore[no-any-return]


_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_NAME_HELP = "letters, digits, '.', '_' or '-'"
JOB_KINDS = ("preflight", "datagen", "run", "finalize")
_TIME_HELP = "a Slurm time such as 00:10:00, 30 or 1-00:00:00"


def _runnable_benchmarks() -> tuple[str, ...]:
    from mlps_slurm import benchmarks
    return tuple(b.name for b in benchmarks.runnable())


def _default_suite() -> tuple[str, ...]:
    from mlps_slurm import benchmarks
    return tuple(b.name for b in benchmarks.runnable() if b.in_default_suite)


def _suite_accelerators() -> tuple[str, ...]:
    """Every accelerator a runnable benchmark's request accepts (its `accelerator` field's choices)."""
    from mlps_slurm import benchmarks
    from mlps_slurm.benchmarks.base import options_of

    names: dict[str, None] = {}
    for bench in benchmarks.runnable():
        for f, spec in options_of(bench.request_type):
            if f.name == "accelerator" and spec.choices:
                names.update(dict.fromkeys(spec.choices))
    return tuple(names)


def engine_fields() -> dict[str, Field]:
    """engines.<b>.engine and engines.<b>.path of every benchmark in the registry."""
    from mlps_slurm import benchmarks

    fields: dict[str, Field] = {}
    for bench in benchmarks.all_benchmarks():
        fields[f"engines.{bench.name}.engine"] = Field("str", bench.engines[0], f"{bench.name} engine.",
                                                       choices=bench.engines)
        fields[f"engines.{bench.name}.path"] = Field("str", None, f"Where the {bench.name} engine is installed (a "
                                                     "venv or checkout), when not in the jobs' Python.", nullable=True)
    return fields


def benchmark_fields() -> dict[str, Field]:
    """The profile sections benchmarks own (`<benchmark>.*`, declared in their package's profile.py)."""
    from mlps_slurm import benchmarks

    fields: dict[str, Field] = {}
    for bench in benchmarks.all_benchmarks():
        fields.update(bench.profile_fields())
    return fields


def suite_fields() -> dict[str, Field]:
    """suite.<b>.models of every runnable benchmark, and suite.<b>.<field> for every request field that `submit all`
    takes from the profile (Option suite="profile")."""
    from mlps_slurm import benchmarks
    from mlps_slurm.benchmarks.base import options_of

    fields: dict[str, Field] = {}
    for bench in benchmarks.runnable():
        fields[f"suite.{bench.name}.models"] = Field("list[str]", list(bench.suite_models), f"{bench.name} "
                                                     "workloads of `submit all` (one chain each).",
                                                     choices=bench.models)
        for f, spec in options_of(bench.request_type):
            if spec.suite == "profile":
                fields[f"suite.{bench.name}.{f.name}"] = Field(
                    "list[str]", list(f.default), f"{spec.help} For every {bench.name} workload of `submit all`.",
                    pattern=re.compile(spec.pattern) if spec.pattern else None,
                    pattern_help=spec.metavar or "")
    return fields


# Storage paths are bound into containers (a comma would add a mount: "/a,/etc:/hostetc"), end up in
# `#SBATCH --output` (where sbatch expands %) and in scripts: no comma, %, whitespace or control character.
STORAGE_PATH = re.compile(r"^(/|~|\$)[^,%\s\x00-\x1f\x7f]*$")


# Options the chain sets itself: from a profile they would silently replace its own (sbatch keeps the last), e.g.
# --dependency=singleton dropping the preflight gate, or --output moving the logs the finalize reads.
_OURS = ("dependency", "job-name", "output", "error", "array", "hold", "comment", "kill-on-invalid-dep", "parsable",
         "test-only", "wait", "requeue", "no-requeue", "export")
_NOT_OURS = r"^(?!--(" + "|".join(_OURS) + r")(=|$))(?!-[dJoeaH])"
_OURS_HELP = ", ".join(f"--{o}" for o in _OURS)


def _path_field(default: str, doc: str, storage: str = "") -> Field:
    return Field("str", default, doc, pattern=STORAGE_PATH, path=True, storage=storage,
                 pattern_help="an absolute path (~ and $VAR allowed) without commas, '%', spaces or control "
                              "characters (it becomes a container bind and a #SBATCH --output path)")


def _sbatch_name(doc: str, what: str) -> Field:
    return Field("str", None, doc, nullable=True, pattern=SBATCH_TOKEN, pattern_help=what)


SCHEMA: dict[str, Field] = {
    "name": Field("str", None, "Profile name (how users pick it with --profile).", required=True,
                  pattern=_NAME, pattern_help=_NAME_HELP),
    "description": Field("str", "", "One line saying which cluster this profile targets."),
    "extends": Field("str", None, "Name or path of a profile this one starts from.", nullable=True),
    # --- Slurm: where and how jobs are queued
    "slurm.partition": _sbatch_name("Partition for every job; null uses the cluster's default partition.",
                                    "a Slurm partition name"),
    **{f"slurm.partitions.{kind}": _sbatch_name(f"Partition of the {kind} job(s); null uses slurm.partition.",
                                                "a Slurm partition name") for kind in JOB_KINDS},
    "slurm.account": _sbatch_name("Account charged (--account); null for none.", "a Slurm account name"),
    "slurm.qos": _sbatch_name("Quality of service (--qos); null for none.", "a Slurm QoS name"),
    "slurm.reservation": _sbatch_name("Reservation (--reservation); null for none.", "a Slurm reservation name"),
    "slurm.constraint": _sbatch_name("Node features required (--constraint), e.g. 'nvme&ib'; null for none.",
                                     "a Slurm constraint expression without spaces"),
    "slurm.gres": _sbatch_name("Generic resources per node (--gres), e.g. gpu:4; null for none.",
                               "a Slurm gres specification such as gpu:4"),
    "slurm.exclusive": Field("bool", False, "Request whole nodes (--exclusive) for benchmark jobs; storage "
                             "benchmarks should not share client nodes."),
    **{f"slurm.time_limit.{kind}": Field("str", default, f"Time limit of the {kind} job(s).", pattern=_SLURM_TIME,
                                         pattern_help=_TIME_HELP)
       for kind, default in (("preflight", "00:10:00"), ("datagen", "04:00:00"), ("run", "04:00:00"),
                             ("finalize", "00:15:00"))},
    "slurm.extra_directives": Field("list[str]", [], "Extra #SBATCH options for every job, one per item, e.g. "
                                    "'--mail-type=FAIL'.",
                                    pattern=re.compile(_NOT_OURS + r"--?[A-Za-z][A-Za-z0-9-]*(=\S+)?$"),
                                    pattern_help="one option such as --mail-type=FAIL (no spaces or quotes), not one "
                                                 "mlps-slurm sets itself (" + _OURS_HELP + ")"),
    "slurm.extra_sbatch_args": Field("list[str]", [], "Extra sbatch command-line arguments, one per item (passed "
                                     "as arguments, never through a shell).", pattern=re.compile(_NOT_OURS + ".*$"),
                                     pattern_help="an argument that is not one mlps-slurm sets itself ("
                                                  + _OURS_HELP + ")"),
    # --- the nodes a run may use
    "nodes.count": Field("int", 1, "Compute nodes a benchmark job may use (also the preflight's node count).",
                         minimum=1),
    "nodes.cpus": Field("int", None, "CPUs per node; null when unknown.", nullable=True, minimum=1),
    # GiB despite the "gb" in the name: the name follows MLPerf's --client-host-memory-in-gb and DLIO's
    # host_memory_GB, which are 2^30-byte units (the rules' dataset size is hosts x memory x 5 x 2^30 / record).
    "nodes.memory_gb": Field("float", None, "Client memory per node in GiB (2^30 bytes, as MLPerf's "
                             "--client-host-memory-in-gb and the training dataset-size rule count it; Slurm's "
                             "RealMemory in MB / 1024); null when unknown.", nullable=True, minimum=0),
    "nodes.accelerators_per_node": Field("int", 8, "Simulated accelerators (benchmark ranks) per node.",
                                         minimum=1),
    # --- how parallel tasks are launched inside an allocation
    "launcher.kind": Field("str", "srun", "Parallel launcher inside the allocation.",
                           choices=Registered(_launcher_kinds)),
    "launcher.mpi": Field("str", "pmix", "srun --mpi plugin matching the site's MPI.",
                          choices=Registered(_mpi_plugins)),
    "launcher.extra_args": Field("list[str]", [], "Extra arguments for the launcher, one per item."),
    # --- the software environment of every job
    "environment.python": Field("str", None,
                                "Python interpreter used inside jobs (inside the container when there is one); "
                                "null means the interpreter running mlps-slurm, so login node and compute nodes "
                                "use the same one.", nullable=True),
    "environment.module_init": Field("str", None, "Script sourced before `module load` when jobs do not start "
                                     "with modules set up, e.g. /usr/share/lmod/lmod/init/bash.", nullable=True),
    "environment.modules": Field("list[str]", [], "Environment modules loaded (module load) before anything runs.",
                                 pattern=re.compile(r"^[A-Za-z0-9_.+/@-]+$"),
                                 pattern_help="a module name such as openmpi/4.1.5"),
    "environment.env": Field("dict[str,str]", {}, "Environment variables exported in every job."),
    "environment.setup": Field("list[str]", [],
                               "Shell lines run verbatim before the job's work (admin-owned; not quoted)."),
    # --- containers: the engines and steps run inside the image
    "container.runtime": Field("str", "none", "Container runtime for the job steps.",
                               choices=Registered(_container_runtimes)),
    "container.image": Field("str", None, "Image: an enroot/pyxis image URI or squashfs path, or an Apptainer "
                             ".sif path; required when container.runtime is not none.", nullable=True),
    "container.mounts": Field("list[str]", [], "Host paths made visible in the container, as SRC[:DST[:OPTS]]. "
                              "The storage directories are added automatically.",
                              pattern=re.compile(r"^/[^,:\s]*(:/[^,:\s]*)?(:[a-z,]+)?$"),
                              pattern_help="an absolute SRC[:DST[:OPTS]] without spaces or commas"),
    "container.extra_args": Field("list[str]", [], "Extra arguments for `apptainer exec` or srun's pyxis options."),
    "container.apptainer": Field("str", "apptainer", "The apptainer (or singularity) executable."),
    # --- storage locations (~ and $VARS are expanded when the profile is loaded)
    "storage.results_dir": _path_field("~/mlps-slurm/runs", "Where run directories are created (shared by all "
                                       "nodes)."),
    "storage.checkpoint_dir": _path_field("~/mlps-slurm/checkpoints", "Where the checkpointing benchmark writes.",
                                          storage="checkpoint_dir"),
    "storage.data_dir": _path_field("~/mlps-slurm/data", "Where training datasets are generated.", storage="data_dir"),
    "storage.kvcache_dir": _path_field("~/mlps-slurm/kvcache", "Where the kv-cache benchmark puts its cache tier.",
                                       storage="kvcache_dir"),
    "storage.filesystem_type": Field("str", None, "Expected filesystem type of the benchmark directories (as "
                                     "/proc/mounts names it: lustre, gpfs, nfs4, xfs ...); null to accept any.",
                                     nullable=True, pattern=_NAME, pattern_help=_NAME_HELP),
    "storage.shared": Field("bool", True, "Whether the benchmark directories are one shared filesystem seen by "
                            "every node (false: node-local storage)."),
    # --- engines: which implementation runs each benchmark, and where it is installed
    **engine_fields(),
    # --- what each benchmark's own section configures (e.g. vectordb.milvus.*)
    **benchmark_fields(),
    # --- `mlps-slurm submit all`: which benchmarks and workloads one submission chains
    "suite.benchmarks": Field("list[str]", list(_default_suite()), "Benchmarks `mlps-slurm submit all` "
                              "chains after one preflight, one after another in this order, then one finalize.",
                              choices=Registered(_runnable_benchmarks)),
    "suite.accelerator": Field("str", "b200", "Simulated accelerator of every workload of `submit all`.",
                               choices=Registered(_suite_accelerators)),
    **suite_fields(),
    # --- monitoring of the compute nodes while benchmark jobs run
    "monitoring.host_metrics": Field("bool", True, "Sample every node of each benchmark job from /proc (disks, "
                                     "CPU, memory, network, load) into the run's hostmetrics/ directory; the "
                                     "results summarize it."),
    "monitoring.interval_s": Field("float", 10.0, "Seconds between two host-metrics samples.", minimum=0.1),
    # --- site templates
    "templates.dir": Field("str", None, "Directory of site templates that override packaged ones by file name "
                           "(searched before /etc/mlps-slurm/templates/).", nullable=True),
    # --- `mlps-slurm history`: the database of finalized runs
    "history.db": Field("str", None, "SQLite file of the run history (`mlps-slurm history`); null means "
                        "<storage.results_dir>/history.sqlite.", nullable=True, pattern=ABS_OR_HOME,
                        pattern_help="an absolute path (~ and $VAR allowed)", path=True),
    # --- who submits
    "submission.organization": Field("str", "unknown-org", "Submitting organization (MLPerf Storage submission "
                                     "tree).", pattern=_NAME, pattern_help=_NAME_HELP),
    "submission.system": Field("str", "unknown-system", "System name used in the submission tree.",
                               pattern=_NAME, pattern_help=_NAME_HELP),
    "submission.division": Field("str", "closed", "Division aimed for.", choices=("closed", "open")),
}

def storage_keys() -> tuple[str, ...]:
    """Profile keys of the directories the benchmarks read or write (storage.*_dir and benchmarks' own)."""
    return tuple(k for k, f in SCHEMA.items() if f.storage)


# Keys whose value is a mapping (not a further level of the schema).
MAPPING_KEYS = frozenset(k for k, f in SCHEMA.items() if f.kind.startswith("dict"))
SECTIONS = frozenset(".".join(k.split(".")[:i]) for k in SCHEMA for i in range(1, k.count(".") + 1))


def defaults() -> dict[str, Any]:
    return {k: (list(f.default) if isinstance(f.default, list) else dict(f.default) if isinstance(f.default, dict)
                else f.default) for k, f in SCHEMA.items()}


def check_value(key: str, value: Any) -> tuple[Any, str | None]:
    """Return (normalized value, problem); problem is None when the value fits the schema."""
    f = SCHEMA[key]
    if value is None:
        if f.nullable:
            return None, None
        return value, f"must be set ({_expected(f)}), got null"
    if f.kind == "str":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return value, f"expected {_expected(f)}, got {_type_name(value)}"
        value = str(value)
        if "\n" in value or "\x00" in value:
            return value, "must be a single line"
    elif f.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return value, f"expected an integer, got {_type_name(value)} {value!r}"
    elif f.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"expected a number, got {_type_name(value)} {value!r}"
        value = float(value)
    elif f.kind == "bool":
        if not isinstance(value, bool):
            return value, f"expected true or false, got {_type_name(value)} {value!r}"
    elif f.kind == "list[str]":
        if not isinstance(value, list):
            return value, f"expected a list of strings, got {_type_name(value)}"
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                return value, f"item {i}: expected a string, got {_type_name(item)}"
            if "\n" in str(item) or "\x00" in str(item):
                return value, f"item {i}: must be a single line"
            if f.pattern is not None and not f.pattern.match(str(item)):
                return value, f"item {i}: expected {f.pattern_help}, got {item!r}"
            if f.choices and item not in f.choices:
                return value, f"item {i}: must be one of {', '.join(f.choices)}, got {item!r}"
        value = [str(v) for v in value]
    elif f.kind == "dict[str,str]":
        if not isinstance(value, dict):
            return value, f"expected a mapping of NAME: value, got {_type_name(value)}"
        for k, v in value.items():
            if not isinstance(k, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
                return value, f"{k!r} is not a valid environment variable name"
            if isinstance(v, (dict, list)) or v is None:
                return value, f"{k}: expected a string value, got {_type_name(v)}"
            if "\x00" in str(v):
                return value, f"{k}: a NUL character cannot be exported"
        value = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
    if f.choices and f.kind != "list[str]" and value not in f.choices:
        return value, f"must be one of {', '.join(f.choices)}, got {value!r}"
    if f.minimum is not None and value < f.minimum:
        return value, f"must be at least {f.minimum:g}, got {value!r}"
    if f.pattern is not None and f.kind == "str" and not f.pattern.match(value):
        return value, f"expected {f.pattern_help}, got {value!r}"
    return value, None


def _expected(f: Field) -> str:
    return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
            "list[str]": "a list of strings", "dict[str,str]": "a mapping"}[f.kind]


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)


def cross_field_problems(values: dict[str, Any]) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """Problems that involve several keys: (key, problem, fix, the keys involved). The launcher and the container
    runtime own their checks (e.g. pyxis needs an srun launcher, an image is needed unless the runtime is none)."""
    launcher = _plugins("mlps_slurm.launchers").get(values["launcher.kind"])
    runtime = _plugins("mlps_slurm.containers").get(values["container.runtime"])
    return [*launcher.problems(values), *runtime.problems(values, launcher)]


def commented_template(name: str) -> str:
    """Every key of the schema as YAML with its default, each preceded by its meaning: a profile to start from."""
    import yaml

    lines = ["# Site profile generated by `mlps-slurm profiles init`. Every key is listed with its default;",
             "# delete what you do not change. Validate with `mlps-slurm profiles validate FILE --live`.",
             f"name: {name}"]
    open_sections: list[str] = []
    for key, f in SCHEMA.items():
        if key == "name":
            continue
        *parents, leaf = key.split(".")
        common = 0
        while common < min(len(parents), len(open_sections)) and parents[common] == open_sections[common]:
            common += 1
        open_sections = open_sections[:common]
        for depth in range(common, len(parents)):
            if depth == 0:
                lines.append("")
            lines.append("  " * depth + f"{parents[depth]}:")
            open_sections.append(parents[depth])
        indent = "  " * len(parents)
        lines.append(f"{indent}# {f.doc}" + (f" One of: {', '.join(f.choices)}." if f.choices else ""))
        value = yaml.safe_dump(f.default, default_flow_style=True).strip()
        if value.endswith("\n..."):
            value = value[:-4].strip()
        value = value.removesuffix("...").strip() or "''"
        lines.append(f"{indent}{leaf}: {value}")
    return "\n".join(lines) + "\n"
