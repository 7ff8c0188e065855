"""The site-profile schema: every key, its type, its default and what it means, in one table.

Code reads profile values through `SiteProfile.get("dotted.key")` and never hard-codes a default elsewhere;
`mlps-slurm profiles show NAME --resolved` prints this table resolved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Slurm time formats accepted by --time: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, and UNLIMITED/INFINITE.
_SLURM_TIME = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}|UNLIMITED|INFINITE)$")
# Values that become #SBATCH directive arguments: sbatch parses those itself, not bash, so they cannot be
# shell-quoted; instead they are restricted to characters that cannot end or confuse the directive.
SBATCH_TOKEN = re.compile(r"^[A-Za-z0-9_.,:@%+=/\-\[\]]+$")


@dataclass(frozen=True)
class Field:
    kind: str  # "str", "int", "float", "bool", "list[str]", "dict[str,str]"
    default: Any
    doc: str
    nullable: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    pattern: re.Pattern[str] | None = None
    pattern_help: str = ""
    required: bool = False


SCHEMA: dict[str, Field] = {
    "name": Field("str", None, "Profile name (how users pick it with --profile).", required=True,
                  pattern=re.compile(r"^[A-Za-z0-9_.-]+$"), pattern_help="letters, digits, '.', '_' or '-'"),
    "description": Field("str", "", "One line saying which cluster this profile targets."),
    "extends": Field("str", None, "Name or path of a profile this one starts from.", nullable=True),
    # --- Slurm: where and how jobs are queued
    "slurm.partition": Field("str", None, "Partition for every job; null uses the cluster's default partition.",
                             nullable=True, pattern=SBATCH_TOKEN, pattern_help="a Slurm partition name"),
    "slurm.account": Field("str", None, "Account charged (--account); null for none.", nullable=True,
                           pattern=SBATCH_TOKEN, pattern_help="a Slurm account name"),
    "slurm.qos": Field("str", None, "Quality of service (--qos); null for none.", nullable=True,
                       pattern=SBATCH_TOKEN, pattern_help="a Slurm QoS name"),
    "slurm.time_limit.preflight": Field("str", "00:10:00", "Time limit of the preflight job.",
                                        pattern=_SLURM_TIME, pattern_help="a Slurm time such as 00:10:00 or 1-00:00:00"),
    "slurm.time_limit.run": Field("str", "04:00:00", "Time limit of each benchmark job.",
                                  pattern=_SLURM_TIME, pattern_help="a Slurm time such as 04:00:00"),
    "slurm.time_limit.finalize": Field("str", "00:15:00", "Time limit of the finalize job.",
                                       pattern=_SLURM_TIME, pattern_help="a Slurm time such as 00:15:00"),
    # --- the nodes a run may use
    "nodes.count": Field("int", 1, "Compute nodes a benchmark job may use (also the preflight's node count).",
                         minimum=1),
    "nodes.cpus": Field("int", None, "CPUs per node; null when unknown.", nullable=True, minimum=1),
    "nodes.memory_gb": Field("float", None, "Memory per node in GB; null when unknown.", nullable=True, minimum=0),
    # --- how parallel tasks are launched inside an allocation
    "launcher.kind": Field("str", "srun", "Parallel launcher.", choices=("srun", "mpirun")),
    "launcher.mpi": Field("str", "pmix", "srun --mpi plugin matching the site's MPI.", choices=("pmix", "pmi2", "none")),
    "launcher.extra_args": Field("list[str]", [], "Extra arguments for the launcher, one per item."),
    # --- the software environment of every job
    "environment.python": Field("str", None,
                                "Python interpreter used inside jobs; null means the interpreter running mlps-slurm "
                                "(so login node and compute nodes use the same one).", nullable=True),
    "environment.modules": Field("list[str]", [], "Environment modules loaded (module load) before anything runs."),
    "environment.env": Field("dict[str,str]", {}, "Environment variables exported in every job."),
    "environment.setup": Field("list[str]", [],
                               "Shell lines run verbatim before the job's work (admin-owned; not quoted)."),
    # --- storage locations (~ and $VARS are expanded when the profile is loaded)
    "storage.results_dir": Field("str", "~/mlps-slurm/runs", "Where run directories are created (shared by all nodes)."),
    "storage.checkpoint_dir": Field("str", "~/mlps-slurm/checkpoints", "Where the checkpointing benchmark writes."),
    "storage.data_dir": Field("str", "~/mlps-slurm/data", "Where training datasets are generated."),
    # --- who submits
    "submission.organization": Field("str", "unknown-org", "Submitting organization (MLPerf Storage submission tree).",
                                     pattern=re.compile(r"^[A-Za-z0-9_.-]+$"), pattern_help="letters, digits, '.', '_' or '-'"),
    "submission.system": Field("str", "unknown-system", "System name used in the submission tree.",
                               pattern=re.compile(r"^[A-Za-z0-9_.-]+$"), pattern_help="letters, digits, '.', '_' or '-'"),
    "submission.division": Field("str", "closed", "Division aimed for.", choices=("closed", "open")),
}

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
            if "\n" in str(item):
                return value, f"item {i}: must be a single line"
        value = [str(v) for v in value]
    elif f.kind == "dict[str,str]":
        if not isinstance(value, dict):
            return value, f"expected a mapping of NAME: value, got {_type_name(value)}"
        for k, v in value.items():
            if not isinstance(k, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
                return value, f"{k!r} is not a valid environment variable name"
            if isinstance(v, (dict, list)) or v is None:
                return value, f"{k}: expected a string value, got {_type_name(v)}"
        value = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
    if f.choices and value not in f.choices:
        return value, f"must be one of {', '.join(f.choices)}, got {value!r}"
    if f.minimum is not None and value < f.minimum:
        return value, f"must be at least {f.minimum:g}, got {value!r}"
    if f.pattern is not None and not f.pattern.match(value):
        return value, f"expected {f.pattern_help}, got {value!r}"
    return value, None


def _expected(f: Field) -> str:
    return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
            "list[str]": "a list of strings", "dict[str,str]": "a mapping"}[f.kind]


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)
