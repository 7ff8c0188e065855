"""The readable table of a training run's results (the finalize job prints it; `status` shows it)."""

from __future__ import annotations

from typing import Any

from mlps_slurm.benchmarks.training.catalog import SCORED_RUNS
from mlps_slurm.steps.outcome import verdict_lines


def _fmt(value: Any, spec: str, width: int) -> str:
    return f"{value:{width}{spec}}" if isinstance(value, (int, float)) else f"{'-':>{width}}"


def _drop_text(drops: list[dict[str, Any]]) -> str:
    """e.g. "posix_fadvise: 100% -> 0% cached" (the largest cached share of any node, before and after)."""
    if not drops:
        return "-"
    methods = ",".join(sorted({str(d.get("method")) for d in drops}))

    def share(key: str) -> str:
        values = [d[key] for d in drops if isinstance(d.get(key), (int, float))]
        return f"{max(values):.0%}" if values else "?"

    return f"{methods}: {share('resident_before')} -> {share('resident_after')} cached"


def table(results: dict[str, Any]) -> str:
    lines = [f"run {results.get('run_id')}: training {results.get('model')} on {results.get('accelerator')}, "
             f"{results.get('num_accelerators')} simulated accelerators on {results.get('nodes')} node(s)",
             *verdict_lines(results)]
    d = results.get("dataset")
    if d:
        how = "reused" if d.get("reused") else f"generated in {d.get('seconds', 0):.1f} s"
        lines += ["", f"dataset: {d.get('num_files')} files, {d.get('bytes', 0) / 1e6:.1f} MB, {how}: "
                      f"{d.get('dataset_dir')}"]
    runs = [r for r in results.get("runs") or [] if r.get("start")]
    if runs:
        lines += ["", f"{'run':<4}{'role':<9}{'start':<21}{'seconds':>8}{'AU %':>8}{'AU':>6}{'samples/s':>11}"
                      f"{'DLIO MB/s':>11}{'meas. MB/s':>11}{'read/exp':>9}{'storage':>8}  cache drop"]
        for r in runs:
            if not r.get("start"):
                continue  # a run that left no summary has nothing to show; the reasons above say why
            drop = _drop_text(r.get("cache_drop") or [])
            lines.append(f"{r['name']:<4}{r['role']:<9}{str(r.get('start') or '-')[:19]:<21}"
                         f"{_fmt(r.get('train_seconds'), '.1f', 8)}{_fmt(r.get('au_percent'), '.2f', 8)}"
                         f"{('pass' if r.get('au_pass') else 'FAIL') if r.get('usable') else '-':>6}"
                         f"{_fmt(r.get('throughput_samples_per_s'), '.1f', 11)}"
                         f"{_fmt(r.get('dlio_MB_per_s'), '.1f', 11)}{_fmt(r.get('measured_MB_per_s'), '.1f', 11)}"
                         f"{_fmt(r.get('read_vs_expected'), '.3f', 9)}{_fmt(r.get('storage_fraction'), '.0%', 8)}"
                         f"  {drop}")
    if runs:
        lines.append("  DLIO MB/s = samples/s x configured record length (nominal); meas. MB/s = bytes the ranks "
                     "read / training time; read/exp = bytes read / bytes of the samples DLIO was to read; storage "
                     "= share of them fetched from storage (the rest came from the page cache)")
    s = results.get("summary") or {}
    if s.get("scored_runs"):
        verdict = "PASS" if s["au_pass_all"] else f"FAIL ({', '.join(s['au_failing_runs']) or 'too few runs'})"
        lines += ["", f"scored runs ({s['scored_runs']} of {SCORED_RUNS}): mean AU {s['au_mean_percent']:.2f}% "
                      f"(threshold {s['au_threshold_percent']:g}%: {verdict}), "
                      f"{s['throughput_samples_per_s_mean']:.1f} samples/s, DLIO {s['dlio_MB_per_s_mean']:.1f} MB/s "
                      f"(nominal), measured {_fmt(s.get('measured_MB_per_s_mean'), '.1f', 0)} MB/s"]
    c = results.get("consecutive") or {}
    if c.get("gaps"):
        worst = max(c["gaps"], key=lambda g: g["gap_s"] / max(g["shorter_run_s"], 1e-9))
        lines.append(f"consecutive: {'yes' if c['ok'] else 'NO'} (largest gap {worst['gap_s']:.1f} s between runs "
                     f"{worst['between'][0]} and {worst['between'][1]}; shorter run {worst['shorter_run_s']:.1f} s)")
    k = results.get("caching") or {}
    if k.get("fits_in_client_memory"):
        lines.append(f"page cache: the dataset ({k['dataset_bytes'] / 1e6:.1f} MB) fits in a client's memory: reads "
                     "after the cache drop may still be page-cache hits within a run" +
                     (f"; {k['shared_page_cache']}" if k.get("shared_page_cache") else ""))
    return "\n".join(lines) + "\n"
