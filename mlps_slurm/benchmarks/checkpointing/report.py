"""The readable table of a checkpointing run's results (the finalize job prints it; `status` shows it)."""

from __future__ import annotations

from typing import Any

from mlps_slurm.benchmarks.checkpointing.cleanup import cleanup_lines
from mlps_slurm.steps.outcome import verdict_lines


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return f"{n:.1f} TB"


def table(results: dict[str, Any]) -> str:
    metrics = results.get("metrics")
    head = (f"run {results.get('run_id')}: checkpointing {results.get('model')}, "
            f"{results.get('num_processes')} ranks on {results.get('nodes')} node(s)")
    lines = [head, *verdict_lines(results), *cleanup_lines(results.get("checkpoint_files"))]
    if not metrics:
        return "\n".join(lines) + "\n"
    lines.append("")
    lines.append(f"{'phase':<6} {'ckpt':>4} {'bytes':>11} {'seconds':>9} {'GB/s':>9}  slowest rank")
    for c in metrics["checkpoints"]:
        lines.append(f"{c['phase']:<6} {c['index']:>4} {_size(c['bytes']):>11} {c['duration_s']:>9.3f} "
                     f"{c['throughput_GBps']:>9.3f}  {c['slowest_rank']}")
    lines.append("")
    lines.append(f"{'phase':<6} {'count':>5} {'bytes/ckpt':>11} {'mean s':>9} {'mean GB/s':>10} {'min GB/s':>9} "
                 f"{'max GB/s':>9}")
    for phase in ("write", "read"):
        s = metrics.get(phase)
        if not s or not s.get("count"):
            continue
        per = s["bytes_per_checkpoint"]
        per_text = _size(per) if isinstance(per, (int, float)) else "varies"
        lines.append(f"{phase:<6} {s['count']:>5} {per_text:>11} {s['duration_s']['mean']:>9.3f} "
                     f"{s['throughput_GBps']['mean']:>10.3f} {s['throughput_GBps']['min']:>9.3f} "
                     f"{s['throughput_GBps']['max']:>9.3f}")
    return "\n".join(lines) + "\n"
