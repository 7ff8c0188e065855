"""The files the preflight writes: a node report (an index line, then the full report), and gather's
preflight.json (built piece by piece from the node reports' bytes) and preflight.txt."""

from __future__ import annotations

import json
from typing import Any, Iterator

from mlps_slurm.rundir import RunDirectory, atomic_write_chunks, atomic_write_text
from mlps_slurm.steps.preflight.common import ALL_NODES, PASS, Check, compact_nodes

INDEX_FORMAT = "mlps-slurm/preflight-node/1"  # first line of a node report file
MAX_TEXT_LINES = 50  # per check and status in preflight.txt; preflight.json has every node


# Compact, and one encoder for all calls: the C encoder is used only without indent, and gather encodes once per
# node of the allocation.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def dumps(data: Any) -> bytes:
    return _ENCODER.encode(data).encode()


def report_index(report: dict[str, Any]) -> dict[str, Any]:
    """The part of a node report gather needs, shaped to decode fast (gather reads one per node): the ids of the
    passing checks and the shared-token targets as single space-separated strings, the non-passing checks in
    full, the clock and what the node saw of the shared tokens."""
    checks = report["checks"]
    index = {"format": INDEX_FORMAT, "node": report["node"], "slurm_job_id": report.get("slurm_job_id"),
             "clock_end": (report.get("clock") or {}).get("end"),
             "passed": " ".join(c["id"] for c in checks if c["status"] == PASS),
             "findings": [make_finding(report["node"], c) for c in checks if c["status"] != PASS]}
    shared = report.get("shared")
    if shared:
        index["shared"] = {**shared, "targets": " ".join(shared.get("targets", [])),
                           "k": len(shared.get("targets", []))}
    return index


def encode_report(report: dict[str, Any]) -> bytes:
    """A node report file: line 1 the index (all gather parses), line 2 the full report with "checks" last, so
    that gather can append its own checks to the bytes without decoding and re-encoding the report."""
    full = {k: v for k, v in report.items() if k != "checks"}
    full["checks"] = report["checks"]
    return dumps(report_index(report)) + b"\n" + dumps(full) + b"\n"


def make_finding(node: str, c: Check) -> dict[str, str]:
    finding = {"node": node, "check": c["id"], "status": c["status"], "message": c["message"]}
    if c.get("hint"):
        finding["hint"] = c["hint"]
    return finding


def split_report(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(index, full report bytes) of a node report file. Any other JSON report (an older format, pretty-printed,
    or written by hand) is decoded whole and re-encoded with "checks" last."""
    newline = data.find(b"\n")
    if newline > 0 and data.startswith(b'{"format":"' + INDEX_FORMAT.encode() + b'"'):
        end = len(data) - 1 if data.endswith(b"\n") else len(data)
        return json.loads(data[:newline]), data[newline + 1:end]
    report = json.loads(data)
    return report_index(report), encode_report(report).split(b"\n", 1)[1].strip()


def _append_checks(full: bytes, extra: bytes) -> bytes:
    """Append encoded checks ("{...},{...}") to a report's JSON, whose last key is "checks" (see encode_report)."""
    if not extra:
        return full
    if not full.endswith(b"]}"):
        raise ValueError("node report does not end with its checks list")
    body = full[:-2]
    return body + (b"" if body.endswith(b"[") else b",") + extra + b"]}"


class Gathered:
    """The preflight summary as gather builds it.

    `summary`: preflight.json without "reports" (ok, nodes, failures, warnings, cluster_checks, mpi, ...).
    `reports`: node -> (its full report as the node wrote it, gather's checks encoded): joined only while writing,
    so no report is decoded, re-encoded or held twice.
    `passed`: check id -> nodes on which it passed (for preflight.txt).
    """

    def __init__(self, summary: dict[str, Any], reports: dict[str, tuple[bytes, bytes]],
                 passed: dict[str, list[str]]) -> None:
        self.summary = summary
        self.reports = reports
        self.passed = passed

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]

    def report(self, node: str) -> dict[str, Any]:
        return json.loads(_append_checks(*self.reports[node]))

    def chunks(self) -> Iterator[bytes]:
        """preflight.json, piece by piece: the summary, then every report under "reports"."""
        head = dumps(self.summary)
        yield head[:-1] + b',"reports":{'
        for i, node in enumerate(self.summary["nodes"]):
            yield (b"," if i else b"") + dumps(node) + b":" + _append_checks(*self.reports[node])
        yield b"}}\n"

    def as_dict(self) -> dict[str, Any]:
        """Everything decoded (as preflight.json reads back); for tests and small allocations."""
        return {**self.summary, "reports": {n: self.report(n) for n in self.summary["nodes"]}}


def _passed_from_reports(reports: dict[str, Any]) -> dict[str, list[str]]:
    passed: dict[str, list[str]] = {}
    for node, report in reports.items():
        for c in report["checks"]:
            if c["status"] == PASS:
                passed.setdefault(c["id"], []).append(node)
    return passed


def format_text(summary: dict[str, Any] | Gathered, passed: dict[str, list[str]] | None = None) -> str:
    """preflight.txt: the verdict, then errors, warnings and passes grouped by check with their nodes.
    Takes a Gathered, or a decoded preflight.json."""
    if isinstance(summary, Gathered):
        summary, passed = summary.summary, summary.passed
    if passed is None:
        passed = _passed_from_reports(summary.get("reports", {}))
        for c in summary.get("cluster_checks", []):
            if c["status"] == PASS:
                passed.setdefault(c["id"], []).append(ALL_NODES)
    nodes = summary["nodes"]
    lines = [f"preflight: {'PASSED' if summary['ok'] else 'FAILED'} on {len(nodes)} node(s): "
             f"{compact_nodes(nodes)}  ({len(summary['failures'])} error(s), {len(summary['warnings'])} warning(s)"
             f"; batch host {summary.get('batch_host', '?')}, job {summary.get('slurm_job_id') or '-'})"]
    for title, findings in (("errors", summary["failures"]), ("warnings", summary["warnings"])):
        if not findings:
            continue
        lines.append(title)
        by_check: dict[str, list[dict[str, str]]] = {}
        for f in findings:
            by_check.setdefault(f["check"], []).append(f)
        for check_id in sorted(by_check):
            group = by_check[check_id]
            lines.append(f"  {check_id}: {compact_nodes(f['node'] for f in group)}")
            templates = _message_groups(group)
            for template, members in list(templates.items())[:MAX_TEXT_LINES]:
                who = members[0]["node"] if len(members) == 1 else compact_nodes(f["node"] for f in members)
                lines.append(f"    {who}: {members[0]['message'] if len(members) == 1 else template}")
            if len(templates) > MAX_TEXT_LINES:
                lines.append(f"    ... {len(templates) - MAX_TEXT_LINES} more in preflight.json")
    if passed:
        lines.append("passed")
        everywhere = compact_nodes(nodes)  # most checks pass on every node: compact that list once
        lines += [f"  {cid}: {everywhere if len(passed[cid]) == len(nodes) else compact_nodes(passed[cid])}"
                  for cid in sorted(passed)]
    return "\n".join(lines) + "\n"


def _replace_word(text: str, word: str, replacement: str) -> str:
    """Replace `word` where it stands alone (n1, not the n1 inside n10 or /data/n1x)."""
    out, i = [], 0
    while True:
        j = text.find(word, i)
        if j == -1:
            out.append(text[i:])
            return "".join(out)
        before = text[j - 1] if j else " "
        after = text[j + len(word)] if j + len(word) < len(text) else " "
        alone = not (before.isalnum() or before in "_-./") and not (after.isalnum() or after in "_-/")
        out.append(text[i:j] + (replacement if alone else word))
        i = j + len(word)


def _message_groups(findings: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """Findings with the same message once the node's own name is replaced by <node>, so that a problem shared
    by 1,000 nodes is one line."""
    groups: dict[str, list[dict[str, str]]] = {}
    for f in findings:
        groups.setdefault(_replace_word(f["message"], f["node"], "<node>"), []).append(f)
    return groups


def write_outputs(run: RunDirectory, gathered: Gathered) -> str:
    """preflight.json and preflight.txt; returns the text."""
    atomic_write_chunks(run.preflight_report, gathered.chunks())
    text = format_text(gathered)
    atomic_write_text(run.preflight / "preflight.txt", text)
    return text
