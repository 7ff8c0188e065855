"""Verify runs against the MLPerf Storage rules: one run directory, a directory of runs, or a submission tree.

`verify_run(run_dir)` judges one run (the finalize job calls it, then `write_run_verdict`); `verify_runs(paths)`
finds every run under the paths, judges each, adds the submission-level checks when the paths hold a submission
tree (or `submission=True`), and lists every run it did not use with the reason. Nothing is skipped silently: a
missing, truncated or malformed file is an INVALID finding naming the file, and `VerifyReport.exit_code` is
non-zero when a run the chain planned has no usable result.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from mlps_slurm import __version__, benchmarks
from mlps_slurm.progressbar import progress
from mlps_slurm.rules.core import Finding, Verdict, combine, invalid
from mlps_slurm.rules.loaders import Loaded, load_run
from mlps_slurm.rundir import atomic_write_json, atomic_write_text

SCHEMA = "mlps-slurm/verify/1"
DIVISIONS = ("closed", "open", "invalid")
# Exit codes of `mlps-slurm verify` (2 and 3 are the CLI's usage and Slurm errors): a run the chain planned without
# a usable result is worse news than a result the rules judged INVALID, and scripts can tell them apart.
EXIT_OK, EXIT_UNUSABLE, EXIT_INVALID = 0, 1, 4
SUBMISSION_ONE_PER_WORKLOAD = "submission.one_run_per_workload"


@dataclass
class RunVerdict:
    """One run's verdict. `usable` is False when the run has no usable result (`problems` say why)."""

    path: str
    run_id: str
    benchmark: str
    model: str | None
    verdict: Verdict
    findings: list[Finding]
    usable: bool
    problems: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    started: float | None = None  # epoch seconds the measured work began
    created: float | None = None  # epoch seconds the run was rendered
    record: Any = field(default=None, repr=False, compare=False)  # the rule record, for submission checks

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "run_id": self.run_id, "benchmark": self.benchmark, "model": self.model,
                "verdict": self.verdict.value, "usable": self.usable, "problems": self.problems,
                "metrics": self.metrics, "findings": [f.to_dict() for f in _ordered(self.findings)]}


@dataclass
class GroupVerdict:
    """Submission-level findings for the runs of one benchmark and model (or index)."""

    benchmark: str
    model: str | None
    run_ids: list[str]
    findings: list[Finding]

    @property
    def verdict(self) -> Verdict:
        return combine(self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "model": self.model, "run_ids": self.run_ids,
                "verdict": self.verdict.value, "findings": [f.to_dict() for f in _ordered(self.findings)]}


@dataclass(frozen=True)
class Unused:
    """Something under the given paths that was not verified as a run, and why. `planned` is True when it stands
    for a run the user asked about (a missing path, a run-like directory without manifest); False for debris such
    as the staging directory of an interrupted render, which is reported but does not fail the verification."""

    path: str
    reason: str
    planned: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason, "planned": self.planned}


@dataclass
class VerifyReport:
    runs: list[RunVerdict]
    groups: list[GroupVerdict]
    unused: list[Unused]
    submission: bool
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat())

    @property
    def verdict(self) -> Verdict:
        return combine([r.verdict for r in self.runs] + [g.verdict for g in self.groups]
                       + ([Verdict.INVALID] if not self.runs else []))

    @property
    def exit_code(self) -> int:
        """EXIT_UNUSABLE when a run the chain planned has no usable result, a path held no run, or nothing was
        found; else EXIT_INVALID when the verdict is INVALID; else EXIT_OK (CLOSED or OPEN)."""
        if not self.runs or any(not r.usable for r in self.runs) or any(u.planned for u in self.unused):
            return EXIT_UNUSABLE
        return EXIT_INVALID if self.verdict is Verdict.INVALID else EXIT_OK

    def group_of(self, run: RunVerdict) -> GroupVerdict | None:
        return next((g for g in self.groups if run.run_id in g.run_ids and g.benchmark == run.benchmark), None)

    def division_of(self, run: RunVerdict) -> Verdict:
        """The run's own verdict combined with its submission group's."""
        group = self.group_of(run)
        return combine([run.verdict] + ([group.verdict] if group else []))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "tool_version": __version__, "created": self.created,
                "verdict": self.verdict.value, "exit_code": self.exit_code, "submission": self.submission,
                "runs": [r.to_dict() for r in self.runs], "groups": [g.to_dict() for g in self.groups],
                "unused": [u.to_dict() for u in self.unused]}

    def to_text(self) -> str:
        return format_text(self)


def _ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Worst first, then by rule id: the reader sees what decided the verdict at the top."""
    return sorted(findings, key=lambda f: (-f.verdict.rank, f.rule_id))


# --- one run -------------------------------------------------------------------------------------------------------

def _verdict_from(root: Path, manifest: dict[str, Any] | None, loaded: Loaded) -> RunVerdict:
    return RunVerdict(path=str(root), run_id=str((manifest or {}).get("run_id") or root.name),
                      benchmark=loaded.benchmark, model=loaded.model, verdict=combine(loaded.findings),
                      findings=loaded.findings, usable=not loaded.problems, problems=loaded.problems,
                      metrics=loaded.metrics, started=loaded.started, created=loaded.created,
                      record=loaded.record)


def verify_run(run_dir: str | os.PathLike[str]) -> RunVerdict:
    """Judge one run directory with every run-level rule of its benchmark. Never raises for a bad run."""
    root = Path(run_dir).resolve()
    manifest, loaded = load_run(root)
    return _verdict_from(root, manifest, loaded)


def write_run_verdict(verdict: RunVerdict, run_dir: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """Write verify.json and verify.txt into the run directory (the finalize job's report)."""
    report = VerifyReport([verdict], [], [], submission=False)
    return write_report(report, Path(run_dir) if run_dir else Path(verdict.path))


# --- many runs -----------------------------------------------------------------------------------------------------

def _looks_like_run(path: Path) -> bool:
    return (path / "raw").is_dir() and ((path / "scripts").is_dir() or (path / "results").is_dir())


def tree_benchmarks() -> set[str]:
    """The benchmark directories of a submission tree: each registered benchmark's tree_name."""
    return {b.tree_name for b in benchmarks.all_benchmarks()}


def _in_submission_tree(path: Path, tree_names: set[str]) -> bool:
    """Whether path lies in <division>/<org>/results/<system>/<benchmark>/... of a submission tree."""
    parts = path.parts
    return any(p in DIVISIONS and i + 4 < len(parts) and parts[i + 2] == "results"
               and parts[i + 4] in tree_names for i, p in enumerate(parts))


def discover(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[Unused], bool]:
    """Run directories (those holding manifest.json) under the paths; what was not usable; whether any of them is
    inside a submission tree."""
    roots: list[Path] = []
    unused: list[Unused] = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            unused.append(Unused(str(path), "does not exist"))
            continue
        if path.is_file():
            hint = " (a bundle: check it with `mlps-slurm bundle --check`)" if path.name.endswith(".tar.gz") else ""
            unused.append(Unused(str(path), f"is a file, not a run directory{hint}"))
            continue
        found = _walk(path.resolve(), roots, unused)
        if not found:
            unused.append(Unused(str(path), "no run directory (a directory with manifest.json) found under it"))
    unique = list(dict.fromkeys(roots))  # the same run named twice is verified once
    tree_names = tree_benchmarks() if unique else set()
    return unique, unused, any(_in_submission_tree(r, tree_names) for r in unique)


def _is_suite(top: Path) -> bool:
    try:
        return json.loads((top / "manifest.json").read_text()).get("benchmark") == "suite"
    except (OSError, ValueError, AttributeError):
        return False  # an unreadable manifest is the run's problem: verify_run reports it


def _walk(top: Path, roots: list[Path], unused: list[Unused]) -> int:
    """Depth-first, without descending into a run directory (its raw/ tree can hold thousands of files). A suite
    (`submit all`) is not a run: its workload runs are under its runs/."""
    if (top / "manifest.json").is_file():
        if _is_suite(top):
            return _walk(top / "runs", roots, unused) if (top / "runs").is_dir() else 0
        roots.append(top)
        return 1
    found = 0
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError as exc:
        unused.append(Unused(str(top), f"cannot list: {exc.strerror or exc}"))
        return 0
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        child = Path(entry.path)
        if entry.name.startswith("."):
            if ".staging" in entry.name:
                unused.append(Unused(str(child), "staging directory of an interrupted render or bundle; not a "
                                                 "finished run (remove it)", planned=False))
            continue
        if not (child / "manifest.json").is_file() and _looks_like_run(child):
            unused.append(Unused(str(child), "looks like a run directory but has no manifest.json"))
            continue
        found += _walk(child, roots, unused)
    return found


def _group_findings(benchmark: str, model: str | None, members: list[RunVerdict]) -> list[Finding]:
    """The benchmark's own submission rules on the group (one may pair split invocations, say); without any, a
    submission holds exactly one run per model or index."""
    try:
        own = benchmarks.get(benchmark).submission_findings([m.record for m in members])
    except benchmarks.UnknownBenchmark:
        own = None
    if own is not None:
        return own
    if len(members) > 1:
        ids = [m.run_id for m in members]
        return [invalid(SUBMISSION_ONE_PER_WORKLOAD, f"{benchmark} {model}: {len(members)} runs "
                                                     f"({', '.join(ids)}); a submission holds one; choose",
                        "1 run", ids)]
    return []


def _submission_groups(runs: list[RunVerdict]) -> list[GroupVerdict]:
    """One group per (benchmark, model) of the usable runs, judged by _group_findings."""
    groups: dict[tuple[str, str | None], list[RunVerdict]] = {}
    for r in runs:
        if r.usable:
            groups.setdefault((r.benchmark, r.model), []).append(r)
    return [GroupVerdict(benchmark, model, [m.run_id for m in members], _group_findings(benchmark, model, members))
            for (benchmark, model), members in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))]


def verify_runs(paths: Sequence[str | os.PathLike[str]], submission: bool | None = None) -> VerifyReport:
    """Verify every run under `paths`. Submission-level checks run when `submission` is True, or (None) when the
    paths hold a submission tree."""
    roots, unused, in_tree = discover(paths)
    runs: list[RunVerdict] = []
    with progress("verify: reading runs", total=len(roots), unit="runs") as bar:  # a run's raw/ can be large
        for root in roots:
            bar.note(root.name)
            runs.append(verify_run(root))
            bar.advance()
    as_submission = in_tree if submission is None else submission
    for r in runs:
        if not r.usable:
            unused.append(Unused(r.path, "no usable result: " + "; ".join(r.problems[:3])))
    groups = _submission_groups(runs) if as_submission else []
    return VerifyReport(runs, groups, unused, as_submission)


# --- reports -------------------------------------------------------------------------------------------------------

def _finding_lines(findings: list[Finding], indent: str = "    ") -> list[str]:
    width = max((len(f.rule_id) for f in findings), default=0)
    return [f"{indent}{f.verdict.value:<7} {f.rule_id:<{width}}  {f.message}" for f in _ordered(findings)]


def format_text(report: VerifyReport) -> str:
    n = len(report.runs)
    lines = [f"verify: {n} run(s){' as a submission' if report.submission else ''}: overall "
             f"{report.verdict.value} (exit code {report.exit_code})"]
    for r in report.runs:
        what = f"{r.benchmark} {r.model or ''}".strip()
        usable = "" if r.usable else "  [no usable result]"
        lines += ["", f"run {r.run_id}: {r.verdict.value}  {what}{usable}", f"  {r.path}"]
        lines += _finding_lines(r.findings)
    for g in report.groups:
        lines += ["", f"submission {g.benchmark} {g.model or ''}: {g.verdict.value}  runs {', '.join(g.run_ids)}"]
        lines += _finding_lines(g.findings) or ["    (no submission-level rule for this benchmark)"]
    if report.unused:
        lines += ["", "not used:"]
        lines += [f"  {u.path}: {u.reason}" for u in report.unused]
    return "\n".join(lines) + "\n"


def write_report(report: VerifyReport, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write verify.json and verify.txt into `directory` (atomically: readers never see half a report)."""
    out = Path(directory)
    json_path, text_path = out / "verify.json", out / "verify.txt"
    atomic_write_json(json_path, report.to_dict())
    atomic_write_text(text_path, report.to_text())
    return json_path, text_path


def verify_command(paths: Sequence[str], output: str | None = None, submission: bool | None = None,
                   echo: Any = print, allow_invalid: bool = False) -> int:
    """`mlps-slurm verify RUN_OR_DIR...`: verify, print the text report, return the exit code (EXIT_*; INVALID
    counts as success with `allow_invalid`). verify.json and verify.txt are written only to `output`: the
    directories checked are never changed (a run's own verdict is the finalize's; a submission tree's files are
    covered by its SHA256SUMS)."""
    report = verify_runs(paths, submission)
    echo(report.to_text().rstrip("\n"))
    if output:
        try:
            json_path, _ = write_report(report, Path(output))
        except OSError as exc:  # a full disk, a file where the directory belongs, no permission
            echo(f"mlps-slurm: error: cannot write the report to {exc.filename or output}: {exc.strerror or exc}")
            return EXIT_UNUSABLE
        echo(f"report: {json_path} (and verify.txt)")
    code = report.exit_code
    return EXIT_OK if code == EXIT_INVALID and allow_invalid else code
