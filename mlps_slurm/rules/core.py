"""Findings, verdicts and the way checks are run.

A check is a pure function of one normalized record (a planned request, a run, or a group of runs) that returns
one Finding, several, or none. It is registered with `@rule("bench.name", "what it checks")`, which gives it a
stable rule id; the id is what users, tests and the submission reviewers grep for, so it never changes once
published. As in MLPerf Storage's own checker (rules.py::BenchmarkRunVerifier), an exception inside a check is not
a crash: it becomes an INVALID finding that names the check, because a result nobody could check is not valid.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar, Union


class Verdict(str, enum.Enum):
    """MLPerf Storage's three outcomes, from best to worst."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    INVALID = "INVALID"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def __str__(self) -> str:
        return self.value


_RANK = {Verdict.CLOSED: 0, Verdict.OPEN: 1, Verdict.INVALID: 2}


def _jsonable(value: Any) -> Any:
    """Expected/actual values as JSON types: tuples become lists, sets sorted lists, paths and enums strings."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


@dataclass(frozen=True)
class Finding:
    """One rule's outcome for one subject. `expected` and `actual` are JSON values (converted on creation)."""

    rule_id: str
    verdict: Verdict
    message: str
    expected: Any = None
    actual: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", Verdict(self.verdict))
        object.__setattr__(self, "expected", _jsonable(self.expected))
        object.__setattr__(self, "actual", _jsonable(self.actual))

    def to_dict(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "verdict": self.verdict.value, "message": self.message,
                "expected": self.expected, "actual": self.actual}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(data["rule_id"], Verdict(data["verdict"]), data["message"], data.get("expected"),
                   data.get("actual"))


def closed(rule_id: str, message: str, expected: Any = None, actual: Any = None) -> Finding:
    return Finding(rule_id, Verdict.CLOSED, message, expected, actual)


def open_(rule_id: str, message: str, expected: Any = None, actual: Any = None) -> Finding:
    return Finding(rule_id, Verdict.OPEN, message, expected, actual)


def full_size(rule_id: str, scale: float, full: str, scaled: str) -> Finding:
    """The `<benchmark>.scaled` rule every benchmark has: --scale 1 is CLOSED (`full` says what is full-size), a
    scaled run INVALID for submission (`scaled` says what --scale shrank)."""
    if scale == 1:
        return closed(rule_id, full, 1.0, scale)
    return invalid(rule_id, f"scaled run (--scale {scale:g}): {scaled}fine for testing, INVALID for submission", 1.0,
                   scale)


def invalid(rule_id: str, message: str, expected: Any = None, actual: Any = None) -> Finding:
    return Finding(rule_id, Verdict.INVALID, message, expected, actual)


def combine(findings: Iterable[Finding | Verdict]) -> Verdict:
    """Any INVALID makes the whole INVALID, else any OPEN makes it OPEN, else CLOSED (also for no findings)."""
    worst = Verdict.CLOSED
    for f in findings:
        v = f.verdict if isinstance(f, Finding) else Verdict(f)
        if v.rank > worst.rank:
            worst = v
    return worst


CheckResult = Union[Finding, Iterable[Finding], None]
S = TypeVar("S")


@dataclass(frozen=True)
class Rule:
    """A registered check: its stable id, one line saying what it checks, and the function."""

    rule_id: str
    summary: str
    check: Callable[[Any], CheckResult]


# Every rule of every benchmark, by id: the documentation `mlps-slurm verify` and the report print from.
RULES: dict[str, Rule] = {}


def rule(rule_id: str, summary: str) -> Callable[[Callable[[S], CheckResult]], Rule]:
    """Register `check` under `rule_id`. Registering two checks under one id is a programming error."""

    def register(check: Callable[[S], CheckResult]) -> Rule:
        if rule_id in RULES:
            raise ValueError(f"rule id {rule_id!r} is registered twice ({RULES[rule_id].check.__qualname__} and "
                             f"{check.__qualname__})")
        registered = Rule(rule_id, summary, check)
        RULES[rule_id] = registered
        return registered

    return register


def run_rule(r: Rule, subject: Any) -> list[Finding]:
    """Run one check; its exception becomes an INVALID finding naming the rule and the check function."""
    try:
        result = r.check(subject)
        if result is None:
            return []
        if isinstance(result, Finding):
            return [result]
        findings = list(result)
        bad = [f for f in findings if not isinstance(f, Finding)]
        if bad:
            raise TypeError(f"returned {type(bad[0]).__name__}, expected Finding")
        return findings
    except Exception as exc:  # a check that cannot decide makes the subject INVALID, never a crash
        return [invalid(r.rule_id, f"check {r.check.__module__}.{r.check.__qualname__} failed: "
                                   f"{type(exc).__name__}: {exc}")]


def run_rules(rules: Sequence[Rule], subject: Any) -> list[Finding]:
    out: list[Finding] = []
    for r in rules:
        out.extend(run_rule(r, subject))
    return out


def findings_to_json(findings: Iterable[Finding]) -> list[dict[str, Any]]:
    return [f.to_dict() for f in findings]


def declare(rule_id: str, summary: str) -> str:
    """Register a rule decided while loading (a missing or malformed file), not by a check function.

    Loaders emit these findings themselves; declaring them keeps every rule id in RULES, documented in one table.
    """
    rule(rule_id, summary)(lambda subject: None)
    return rule_id


def parse_time(value: Any) -> dt.datetime | None:
    """An ISO time as a naive datetime: aware times are converted to UTC, naive ones (DLIO writes local times
    without a zone) are kept, since the rules only compare times of one run with each other."""
    if not isinstance(value, str):
        return None
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is None else t.astimezone(dt.timezone.utc).replace(tzinfo=None)
