"""Compare a run's metrics with a baseline: per metric the relative change and a noise-aware verdict.

Pure functions on numbers (no I/O): the store supplies the samples, the CLI prints the result.

The method
----------
Each metric of a run is the mean of samples the run itself measured: one per checkpoint (checkpointing), per
scored run (training), per trial (kvcache) or per timed query run (vectordb). The baseline is one earlier run, or
the N previous runs of the same workload pooled (`--baseline last-N`).

1. change = (mean(candidate) - mean(baseline)) / |mean(baseline)|.
2. The noise of each mean is its standard error, s / sqrt(n), with s the samples' standard deviation. With a
   pooled baseline of several runs, the spread between runs counts too: with v the variance of the baseline runs'
   means, the baseline's squared standard error is at least v / runs, and the candidate's at least v (its mean is
   one run's, which varies from run to run that much). A side with a single sample borrows the other side's
   standard deviation.
3. Welch's test on the two means: se = sqrt(se_candidate^2 + se_baseline^2), degrees of freedom by
   Welch-Satterthwaite from the sample counts, and the two-sided 99 % Student t quantile for them (a small table,
   rounded down to the nearest tabulated degrees of freedom, so few samples widen the band).
   noise band = t * se / |mean(baseline)|.
4. band = max(noise band, MIN_CHANGE): a change smaller than MIN_CHANGE (default 5 %) is never flagged, however
   steady the samples. With no spread on either side (one sample each) the band is NO_SPREAD_BAND (10 %).
5. |change| <= band: "within noise"; else "improvement" or "regression" depending on the metric's direction
   (throughput, bandwidth, AU, recall: higher is better; latency: lower is better).

A comparison regresses when any metric does. A metric only one side has is listed as "missing", never a
regression; a baseline mean of zero gives "not comparable".
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Sequence

MIN_CHANGE = 0.05
NO_SPREAD_BAND = 0.10
CONFIDENCE = 0.99
# Two-sided 99 % quantiles of Student's t (t_0.995) by degrees of freedom; above 120, the normal quantile.
T_995 = {1: 63.657, 2: 9.925, 3: 5.841, 4: 4.604, 5: 4.032, 6: 3.707, 7: 3.499, 8: 3.355, 9: 3.250, 10: 3.169,
         11: 3.106, 12: 3.055, 13: 3.012, 14: 2.977, 15: 2.947, 16: 2.921, 17: 2.898, 18: 2.878, 19: 2.861,
         20: 2.845, 21: 2.831, 22: 2.819, 23: 2.807, 24: 2.797, 25: 2.787, 26: 2.779, 27: 2.771, 28: 2.763,
         29: 2.756, 30: 2.750, 40: 2.704, 60: 2.660, 120: 2.617}
Z_995 = 2.576

REGRESSION, IMPROVEMENT, NOISE, MISSING, NOT_COMPARABLE = (
    "regression", "improvement", "within noise", "missing", "not comparable")


@dataclass(frozen=True)
class Series:
    """One metric's samples on one side of a comparison: `runs` holds one sample list per run (one run for a
    single run; N for a pooled baseline)."""

    name: str
    unit: str
    higher_is_better: bool
    runs: tuple[tuple[float, ...], ...]

    @property
    def samples(self) -> tuple[float, ...]:
        return tuple(v for run in self.runs for v in run)


@dataclass(frozen=True)
class MetricVerdict:
    name: str
    unit: str
    higher_is_better: bool
    verdict: str
    baseline: float | None  # mean
    candidate: float | None
    change: float | None  # relative: -0.30 is 30 % lower
    band: float | None  # relative half-width of "within noise"
    basis: str  # how the band was found: "samples (Welch, 99 %)", "minimum change", "no spread", ""
    n_baseline: int
    n_candidate: int
    baseline_runs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def t_quantile(df: float) -> float:
    """t_0.995 for `df` degrees of freedom, rounded down to the nearest tabulated value (conservative)."""
    if not math.isfinite(df) or df > max(T_995):
        return Z_995
    return T_995[max(k for k in T_995 if k <= max(1.0, df))]


def _sd(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def _baseline_spread(series: Series) -> tuple[float | None, float | None]:
    """(squared standard error of the baseline mean, or None without spread; the variance of its runs' means, or
    None with fewer than two runs)."""
    samples = series.samples
    sd = _sd(samples)
    se2 = None if sd is None else sd * sd / len(samples)
    means = [statistics.fmean(run) for run in series.runs if run]
    if len(means) < 2:
        return se2, None
    between = statistics.variance(means)
    return (between / len(means) if se2 is None else max(se2, between / len(means))), between


def judge(baseline: Series | None, candidate: Series | None, min_change: float = MIN_CHANGE) -> MetricVerdict:
    """The verdict on one metric (see the module docstring for the method)."""
    ref = candidate or baseline
    assert ref is not None
    b = baseline.samples if baseline else ()
    c = candidate.samples if candidate else ()
    common = dict(name=ref.name, unit=ref.unit, higher_is_better=ref.higher_is_better, n_baseline=len(b),
                  n_candidate=len(c), baseline_runs=len(baseline.runs) if baseline else 0)
    mb = statistics.fmean(b) if b else None
    mc = statistics.fmean(c) if c else None
    if mb is None or mc is None:
        return MetricVerdict(verdict=MISSING, baseline=mb, candidate=mc, change=None, band=None, basis="", **common)
    if mb == 0:
        verdict = NOISE if mc == 0 else NOT_COMPARABLE
        return MetricVerdict(verdict=verdict, baseline=mb, candidate=mc, change=None, band=None, basis="", **common)
    change = (mc - mb) / abs(mb)
    se2_b, between = _baseline_spread(baseline)  # type: ignore[arg-type]
    df_b, df_c = len(b) - 1, len(c) - 1
    sd_c = _sd(c)
    se2_c = None if sd_c is None else sd_c * sd_c / len(c)
    if between is not None:  # the candidate's mean is one run's: it varies from run to run as the baseline's do
        se2_c = between if se2_c is None else max(se2_c, between)
    sd_b = _sd(b)
    if se2_c is None and sd_b is not None:  # one candidate sample: as noisy as one baseline sample
        se2_c, df_c = sd_b * sd_b / len(c), df_b
    if se2_b is None and sd_c is not None:  # one baseline sample: as noisy as one candidate sample
        se2_b, df_b = sd_c * sd_c / len(b), df_c
    if se2_b is None or se2_c is None:
        band, basis = max(NO_SPREAD_BAND, min_change), "no spread"
    else:
        se2 = se2_b + se2_c
        denominator = (se2_b ** 2 / df_b if df_b > 0 else 0) + (se2_c ** 2 / df_c if df_c > 0 else 0)
        df = se2 * se2 / denominator if denominator > 0 else math.inf
        noise = t_quantile(df) * math.sqrt(se2) / abs(mb)
        band, basis = (noise, "samples (Welch, 99 %)") if noise > min_change else (min_change, "minimum change")
    if abs(change) <= band:
        verdict = NOISE
    else:
        better = change > 0 if ref.higher_is_better else change < 0
        verdict = IMPROVEMENT if better else REGRESSION
    return MetricVerdict(verdict=verdict, baseline=mb, candidate=mc, change=change, band=band, basis=basis, **common)


def compare(baseline: Sequence[Series], candidate: Sequence[Series],
            min_change: float = MIN_CHANGE) -> list[MetricVerdict]:
    """One verdict per metric either side has, in the candidate's order (then the baseline's)."""
    base = {s.name: s for s in baseline}
    cand = {s.name: s for s in candidate}
    names = list(cand) + [n for n in base if n not in cand]
    return [judge(base.get(n), cand.get(n), min_change) for n in names]


def pool(name: str, runs: Sequence[Series]) -> Series | None:
    """The baseline series of metric `name` pooled over several runs (each run's samples kept apart)."""
    found = [s for s in runs if s.name == name]
    if not found:
        return None
    return Series(name, found[0].unit, found[0].higher_is_better, tuple(r for s in found for r in s.runs))


def regressed(verdicts: Sequence[MetricVerdict]) -> bool:
    return any(v.verdict == REGRESSION for v in verdicts)


def overall(verdicts: Sequence[MetricVerdict]) -> str:
    """regression when any metric regressed, else improvement when any improved, else within noise."""
    kinds = {v.verdict for v in verdicts}
    return REGRESSION if REGRESSION in kinds else IMPROVEMENT if IMPROVEMENT in kinds else NOISE
