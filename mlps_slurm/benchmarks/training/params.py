"""--param for the training benchmark: `key=value` overrides of DLIO's workload keys, each classified into the
CLOSED or OPEN division (or INVALID, or MANAGED: set by mlps-slurm itself), and dotted-key access to a config.

Pure functions (no MPI, no Slurm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import yaml

from mlps_slurm.benchmarks.training.catalog import CLOSED_PARAMS, MANAGED_PARAMS, ODIRECT_MODELS, OPEN_PARAMS


@dataclass(frozen=True)
class Param:
    key: str  # workload key without the "workload." prefix, e.g. reader.read_threads
    text: str  # the value as given
    value: Any  # the value as YAML reads it (what Hydra passes to DLIO for simple scalars)
    division: str  # CLOSED, OPEN, INVALID or MANAGED

    def override(self) -> str:
        return f"++workload.{self.key}={self.text}"


class ParamError(ValueError):
    """A --param that is malformed or names a key mlps-slurm manages; the message says which and how to fix it."""


def classify_param(key: str, model: str) -> str:
    if key in MANAGED_PARAMS or key.startswith("hydra.") or key.startswith("workflow."):
        return "MANAGED"
    if key == "reader.odirect" and model not in ODIRECT_MODELS:
        return "OPEN"
    if key in CLOSED_PARAMS:
        return "CLOSED"
    if key in OPEN_PARAMS:
        return "OPEN"
    return "INVALID"


def parse_params(items: Iterable[str], model: str) -> list[Param]:
    """`key=value` strings -> Params. Keys may carry DLIO's `++workload.` prefix; a key given twice is an error."""
    out: dict[str, Param] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().lstrip("+").removeprefix("workload.")
        if not sep or not key or not text.strip():
            raise ParamError(f"--param {item!r}: expected KEY=VALUE, e.g. --param reader.read_threads=8")
        if key in out:
            raise ParamError(f"--param {key} is given twice ({out[key].text!r} and {text!r}); give it once")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            problem = str(exc).splitlines()[0]
            raise ParamError(f"--param {key}={text!r}: the value is not a YAML scalar ({problem}); quote it "
                             "or give a plain number or word") from exc
        if isinstance(value, (dict, list)):
            raise ParamError(f"--param {key}={text!r}: only single values can be overridden, not lists or maps")
        division = classify_param(key, model)
        if division == "MANAGED":
            raise ParamError(f"--param {key}: mlps-slurm sets {key} itself for every job of the chain (datagen, "
                             "the 6 runs); remove this --param")
        out[key] = Param(key, text.strip(), value, division)
    return list(out.values())


def params_verdict(params: list[Param]) -> str:
    if any(p.division == "INVALID" for p in params):
        return "INVALID"
    if any(p.division == "OPEN" for p in params):
        return "OPEN"
    return "CLOSED"


def set_key(config: dict[str, Any], dotted: str, value: Any) -> None:
    node = config
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def get_key(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node
