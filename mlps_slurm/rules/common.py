"""Rules shared by every benchmark: the run's own record (manifest, results, preflight) and storage placement."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from mlps_slurm.rules.core import Finding, closed, declare, invalid, open_, rule, run_rules
from mlps_slurm.rules.facts import FilesystemIdentity, filesystem

RUN_MANIFEST = declare("run.manifest", "manifest.json is present, valid JSON, and names the benchmark and request")
RUN_READABLE = declare("run.readable", "the run directory could be read at all (an unexpected error while reading "
                                       "it is INVALID and names the error)")
RUN_RESULTS = declare("run.results", "results/results.json is present, valid JSON, and the finalize job reported "
                                     "success (a run without a usable result is INVALID)")


@dataclass(frozen=True)
class PreflightRecord:
    """What the preflight said about a run. `ok` is None when preflight.json is missing or unreadable."""

    planned: bool  # the chain had a preflight job
    ok: bool | None
    failures: tuple[str, ...] = ()
    problem: str | None = None  # why preflight.json could not be used


@rule("run.preflight", "every node passed the preflight (a planned preflight must have reported; a run without "
                       "one is unvalidated and at best OPEN)")
def check_preflight(p: PreflightRecord) -> Finding:
    if p.ok is True:
        return closed("run.preflight", "preflight passed on every node", True, True)
    if p.ok is False:
        return invalid("run.preflight", "preflight failed: " + "; ".join(p.failures[:5]), True, False)
    if p.planned:
        return invalid("run.preflight", f"the chain planned a preflight job but its report is unusable: {p.problem}",
                       "preflight/preflight.json", None)
    return open_("run.preflight", "the run was not validated by a preflight job (--skip-preflight); nodes, "
                                  "mounts and client memory are unverified", "a preflight report", None)


@dataclass(frozen=True)
class SeparateFilesystems:
    """Two directories the rules want on different filesystems (training: data vs results; kv-cache: cache vs
    results), with each one's filesystem identity per node from the preflight facts."""

    first_id: str
    first_path: str | None
    second_id: str
    second_path: str | None
    first: Mapping[str, FilesystemIdentity] = field(default_factory=dict)
    second: Mapping[str, FilesystemIdentity] = field(default_factory=dict)


def separate_filesystems(preflight: Mapping[str, Any] | None, first_id: str, first_path: str | None,
                         second_id: str, second_path: str | None) -> SeparateFilesystems:
    """The two directories with the filesystem identity the preflight facts record for each, per node."""
    return SeparateFilesystems(first_id, first_path, second_id, second_path,
                               filesystem(preflight, first_id), filesystem(preflight, second_id))


def _under(a: str, b: str) -> bool:
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


@rule("storage.separate_filesystems", "the benchmark data directory and the results directory are set, differ, and "
                                      "are on different filesystems on every node (MLPerf Storage §3.4.1-3.4.2, "
                                      "kv-cache §6.4.1)")
def check_separate_filesystems(s: SeparateFilesystems) -> Finding:
    rid = "storage.separate_filesystems"
    names = f"{s.first_id} and {s.second_id}"
    if not s.first_path or not s.second_path:
        return invalid(rid, f"{names} must both be set", "two directories", [s.first_path, s.second_path])
    if s.first_path.rstrip("/") == s.second_path.rstrip("/"):
        return invalid(rid, f"{names} are the same directory {s.first_path}", "different filesystems",
                       s.first_path)
    same_on = []
    decided = 0
    for node in sorted(set(s.first) & set(s.second)):
        verdict = s.first[node].same_filesystem(s.second[node])
        if verdict is None:
            continue
        decided += 1
        if verdict:
            same_on.append(node)
    if same_on:
        ident = s.first[same_on[0]]
        return invalid(rid, f"{names} ({s.first_path}, {s.second_path}) are on one filesystem "
                            f"({ident.fstype or '?'} {ident.device or ident.mount_point}) on "
                            f"{', '.join(same_on[:8])}{' ...' if len(same_on) > 8 else ''}",
                       "different filesystems", "same filesystem")
    if decided:
        return closed(rid, f"{names} are on different filesystems on all {decided} node(s) checked",
                      "different filesystems", "different filesystems")
    if _under(s.first_path, s.second_path):
        return invalid(rid, f"{s.first_path} and {s.second_path} are nested, so they share a filesystem unless a "
                            "mount separates them, and no preflight fact says one does", "different filesystems",
                       "nested directories")
    # No evidence either way. A CLOSED claim needs evidence, so the run stays OPEN until a preflight with
    # filesystem facts shows the directories apart.
    return open_(rid, f"cannot tell whether {names} ({s.first_path}, {s.second_path}) are on different "
                      "filesystems: the preflight recorded no filesystem facts for them",
                 "different filesystems", "unknown")


def separate_filesystem_findings(filesystems: SeparateFilesystems | None, what: str) -> list[Finding]:
    """The separate-filesystems rule of a run; `what` names its two directories for a run that records none."""
    if filesystems is None:
        return [invalid(check_separate_filesystems.rule_id, f"the run records no {what} directories",
                        "two directories", None)]
    return run_rules([check_separate_filesystems], filesystems)
