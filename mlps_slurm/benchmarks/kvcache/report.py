"""The readable table of a kv-cache run's results (the finalize job prints it; `status` shows it)."""

from __future__ import annotations

from typing import Any

from mlps_slurm.steps.outcome import verdict_lines


def _fmt(value: Any, spec: str, width: int) -> str:
    return f"{value:{width}{spec}}" if isinstance(value, (int, float)) else f"{'-':>{width}}"


def table(results: dict[str, Any]) -> str:
    lines = [f"run {results.get('run_id')}: kv-cache, {results.get('num_processes')} client(s) "
             f"({results.get('ranks_per_node')} per node on {results.get('nodes')} node(s)), "
             f"{results.get('trials')} trial(s) per option, engine {results.get('engine')}",
             *verdict_lines(results)]
    options = results.get("options") or {}
    if options:
        lines += ["", f"{'option':<7}{'model':<23}{'users':>6}{'read GiB/s':>11}{'write GiB/s':>12}"
                      f"{'tokens/s':>10}{'stor. tok/s':>12}{'dev rd p95':>11}{'dev wr p95':>11}"
                      f"{'meas. rd':>9}{'meas. wr':>9}"]
    for number, o in options.items():
        p = o.get("params", {})
        if not o.get("complete"):
            lines.append(f"{number:<7}{p.get('model', '?'):<23}{p.get('num_users', '?'):>6}  no aggregate: "
                         f"{o.get('ranks_usable', 0)} usable rank result(s); see the reasons above")
            continue
        flag = "  *" if o.get("drain_flag") else ""
        lines.append(f"{number:<7}{p.get('model', '?'):<23}{p.get('num_users', '?'):>6}"
                     f"{_fmt(o.get('read_bandwidth_gibps'), '.3f', 11)}{_fmt(o.get('write_bandwidth_gibps'), '.3f', 12)}"
                     f"{_fmt(o.get('avg_throughput_tokens_per_sec'), '.0f', 10)}"
                     f"{_fmt(o.get('storage_throughput_tokens_per_sec'), '.0f', 12)}"
                     f"{_fmt(o.get('device_read_p95_ms'), '.1f', 11)}{_fmt(o.get('device_write_p95_ms'), '.1f', 11)}"
                     f"{_fmt(o.get('measured_read_bandwidth_gibps'), '.3f', 9)}"
                     f"{_fmt(o.get('measured_write_bandwidth_gibps'), '.3f', 9)}{flag}")
        if o.get("cpu_tier_ranks"):
            lines.append(f"       served from the CPU tier only (0 GiB/s): {', '.join(o['cpu_tier_ranks'])}")
    if options:
        lines.append("  GiB/s and tokens/s: sum over clients per trial, mean over trials (the reference's "
                     "definitions, I/O that drains after the window included); dev p95 (ms): max of the per-client "
                     "device P95s; meas.: bytes the reads and writes moved inside the window / window")
        if any(o.get("drain_flag") for o in options.values()):
            lines.append("  * the reference-compatible bandwidth exceeds the measured one by more than 10 %: I/O "
                         "that finished after the timed window is counted in it")
    return "\n".join(lines) + "\n"
