"""The host metrics of a run summarized per job and node, for results.json (inside the finalize job).

Reads what the samplers wrote (<run>/hostmetrics/<job key>[.NN]/<node>.{start.json,series.jsonl,end.json}, see
mlps_slurm/steps/hostmetrics.py) and says, for every node of every benchmark job, how many samples it has and the
mean and peak of its disk, CPU, memory and network figures. A node that Slurm ran the job on but that left no
files, a damaged file or line, and any unexpected name are reported in the summary, never raised. Names read from
the directory are matched against strict patterns before they are used; symbolic links are not followed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

from mlps_slurm.hostlist import expand
from mlps_slurm.steps.hostmetrics import NODE_NAME

HOST_METRICS_DIR = "hostmetrics"
JOB_DIR = re.compile(r"^(?P<key>[A-Za-z0-9_-]{1,64})(?:\.(?P<task>\d{2,6}))?$")
KINDS = ("start.json", "series.jsonl", "end.json", "error.json")
MAX_PROBLEMS = 20  # per job directory: a flood of damaged files must not bloat results.json
MB = 1e6


def _safe(name: str) -> str:
    """A name from the directory as it may appear in a message: printable, short."""
    return repr(name[:80])


def _scan(folder: Path) -> tuple[dict[str, dict[str, Path]], list[str]]:
    """node -> {kind: path} of the regular files whose names fit `<node>.<kind>`; and the names that did not."""
    nodes: dict[str, dict[str, Path]] = {}
    odd: list[str] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            kind = next((k for k in KINDS if entry.name.endswith("." + k)), None)
            node = entry.name[: -len(kind) - 1] if kind else ""
            if kind is None or not NODE_NAME.match(node) or not entry.is_file(follow_symlinks=False):
                if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):  # a sampler's temporary file
                    odd.append(entry.name)
                continue
            nodes.setdefault(node, {})[kind] = folder / entry.name
    return nodes, sorted(odd)


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        with open(path) as fh:
            doc = json.load(fh)
        return (doc, None) if isinstance(doc, dict) else (None, f"{path.name}: not a JSON object")
    except (OSError, ValueError) as exc:
        return None, f"{path.name}: unreadable ({exc})"


def _read_series(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The samples, and the numbers of the lines that are not one (a line cut by a killed job, say)."""
    samples, damaged = [], []
    try:
        with open(path, errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                try:
                    doc = json.loads(line)
                    if not isinstance(doc, dict):
                        raise ValueError
                    samples.append(doc)
                except ValueError:
                    damaged.append(number)
    except OSError:
        damaged.append(0)
    return samples, damaged


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _figure(samples: list[dict[str, Any]], path: tuple[str, ...], scale: float = 1.0) -> dict[str, float] | None:
    """Mean (weighted by each sample's seconds) and peak of one figure over the samples that have it."""
    values = []
    for s in samples:
        v: Any = s
        for part in path:
            v = v.get(part) if isinstance(v, dict) else None
        x, w = _num(v), _num(s.get("seconds"))
        if x is not None:
            values.append((x / scale, w if w and w > 0 else 1.0))
    if not values:
        return None
    total_w = sum(w for _, w in values)
    return {"mean": round(sum(x * w for x, w in values) / total_w, 3), "peak": round(max(x for x, _ in values), 3)}


FIGURES = {  # name in results.json -> (path in a sample, divisor)
    "disk_read_MBps": (("disk_total", "read_Bps"), MB),
    "disk_write_MBps": (("disk_total", "write_Bps"), MB),
    "disk_read_iops": (("disk_total", "read_iops"), 1.0),
    "disk_write_iops": (("disk_total", "write_iops"), 1.0),
    "cpu_user_pct": (("cpu", "user"), 1.0),
    "cpu_system_pct": (("cpu", "system"), 1.0),
    "cpu_iowait_pct": (("cpu", "iowait"), 1.0),
    "net_rx_MBps": (("net_total", "rx_Bps"), MB),
    "net_tx_MBps": (("net_total", "tx_Bps"), MB),
    "memory_used_GB": (("memory", "used"), 1e9),
    "memory_cached_GB": (("memory", "cached"), 1e9),
    "memory_dirty_GB": (("memory", "dirty"), 1e9),
    "load1": (("load",), 1.0),
}


def node_summary(files: dict[str, Path]) -> dict[str, Any]:
    """One node of one job: its samples' means and peaks, what is missing or damaged, the sampler's errors."""
    problems: list[str] = []
    out: dict[str, Any] = {"start": "start.json" in files, "end": "end.json" in files, "samples": 0}
    if "error.json" in files:
        doc, err = _read_json(files["error.json"])
        problems.append(f"sampler failed: {str((doc or {}).get('error', err))[:300]}")
    for kind in ("start.json", "end.json"):
        if kind not in files:
            problems.append(f"no {kind}")
    end, err = _read_json(files["end.json"]) if "end.json" in files else (None, None)
    if err:
        problems.append(err)
        out["end"] = False
    samples, damaged = _read_series(files["series.jsonl"]) if "series.jsonl" in files else ([], [])
    if "series.jsonl" not in files:
        problems.append("no series.jsonl")
    if damaged:
        out["damaged_lines"] = len(damaged)
        problems.append(f"series.jsonl: {len(damaged)} damaged line(s), first line {damaged[0]}")
    out["samples"] = len(samples)
    out["seconds"] = _num((end or {}).get("elapsed_s")) or (_num(samples[-1].get("elapsed_s")) if samples else None)
    for name, (path, scale) in FIGURES.items():
        fig = _figure(samples, path, scale)
        if fig is not None:
            out[name] = fig
    whole = (end or {}).get("since_start")
    if isinstance(whole, dict):  # exact averages over the whole window, from the start and end counters
        totals = whole.get("disk_total") or {}
        out["whole_window"] = {k: round(v / MB, 3) for k, v in (("disk_read_MBps", _num(totals.get("read_Bps"))),
                                                               ("disk_write_MBps", _num(totals.get("write_Bps"))))
                               if v is not None}
    errors = {str(e)[:200] for s in samples for e in (s.get("errors") or []) if isinstance(s.get("errors"), list)}
    errors |= {str(e)[:200] for e in ((end or {}).get("errors") or []) if isinstance((end or {}).get("errors"), list)}
    if errors:
        problems += sorted(errors)[:5]
    if problems:
        out["problems"] = problems[:MAX_PROBLEMS]
    return out


def _expected_nodes(states: dict[str, Any], key: str, task: int | None) -> list[str] | None:
    """The nodes Slurm ran the job (or array task) on; None when Slurm did not say."""
    job = states.get(key) or {}
    if task is not None:
        job = next((t for t in job.get("tasks", []) if t.get("task") == task), {})
    nodes = job.get("nodes")
    if not isinstance(nodes, str) or not nodes.strip() or nodes.strip() in ("None", "(null)", "None assigned"):
        return None
    try:
        return expand(nodes)
    except ValueError:
        return None


def job_dirs(manifest: dict[str, Any]) -> list[str]:
    """Job keys that the plan gave a host-metrics directory (their outputs name hostmetrics/<key>[.{task}])."""
    keys = []
    for job in manifest.get("plan", {}).get("jobs", []):
        for out in job.get("outputs", []) or []:
            if isinstance(out, str) and out.startswith(f"{HOST_METRICS_DIR}/"):
                keys.append(job.get("key"))
    return [k for k in keys if isinstance(k, str)]


def summarize(run_path: Path, manifest: dict[str, Any], states: dict[str, Any]) -> dict[str, Any]:
    """results.json's `host_metrics`: per job directory ("checkpointing", "run.03"), per node."""
    planned = job_dirs(manifest)
    values = (manifest.get("profile") or {}).get("values") or {}
    summary: dict[str, Any] = {"interval_s": _num(values.get("monitoring.interval_s")), "jobs": {}, "problems": []}
    if not planned:
        summary["note"] = "no host metrics planned (monitoring.host_metrics is off)"
        return summary
    root = Path(run_path) / HOST_METRICS_DIR
    found: dict[str, tuple[str, int | None]] = {}
    if root.is_dir() and not root.is_symlink():
        with os.scandir(root) as entries:
            for entry in entries:
                m = JOB_DIR.match(entry.name)
                if m and m.group("key") in planned and entry.is_dir(follow_symlinks=False):
                    found[entry.name] = (m.group("key"), int(m.group("task")) if m.group("task") else None)
                else:
                    summary["problems"].append(f"unexpected entry {_safe(entry.name)} in {HOST_METRICS_DIR}/")
    # The jobs (array tasks) Slurm ran on some nodes but whose samplers left no directory at all.
    for key in planned:
        tasks = [t.get("task") for t in (states.get(key) or {}).get("tasks", []) if isinstance(t.get("task"), int)]
        for name, task in ([(f"{key}.{t:02d}", t) for t in tasks] if tasks else [(key, None)]):
            expected = _expected_nodes(states, key, task)
            if name not in found and expected:
                summary["jobs"][name] = {"nodes": {}, "missing": sorted(expected),
                                         "problems": ["no host metrics directory: the samplers never started"]}
    for name, (key, task) in sorted(found.items()):
        summary["jobs"][name] = job_summary(root / name, _expected_nodes(states, key, task))
    summary["problems"] = summary["problems"][:MAX_PROBLEMS]
    return summary


def job_summary(folder: Path, expected: Iterable[str] | None) -> dict[str, Any]:
    """One job directory: every node's summary; the expected nodes without files; names that fit no pattern."""
    try:
        nodes, odd = _scan(folder)
    except OSError as exc:
        return {"nodes": {}, "missing": sorted(expected or []), "problems": [f"unreadable: {exc.strerror or exc}"]}
    out: dict[str, Any] = {"nodes": {n: node_summary(files) for n, files in sorted(nodes.items())}}
    out["missing"] = sorted(set(expected or []) - set(nodes))
    problems = [f"no host metrics from node {n}" for n in out["missing"]]
    problems += [f"unexpected file {_safe(n)}" for n in odd]
    if expected is not None:
        problems += [f"node {n} is not among the job's nodes" for n in sorted(set(nodes) - set(expected))]
    out["problems"] = problems[:MAX_PROBLEMS]
    return out


def results_entry(run_path: Path, manifest: dict[str, Any], states: dict[str, Any]) -> dict[str, Any]:
    """`summarize`, but whatever goes wrong is reported in the entry: host metrics never cost a run its results."""
    try:
        return summarize(run_path, manifest, states)
    except Exception as exc:  # noqa: BLE001 - a summary is an extra; the benchmark's results must still be written
        return {"jobs": {}, "problems": [f"host metrics could not be summarized: {type(exc).__name__}: {exc}"]}
