"""Render report Figures (figures.py) to PNG with matplotlib: the only module that imports it, and only when drawing.

matplotlib is an optional extra (`pip install 'mlps-slurm[plots]'`); without it `require()` raises PlotsMissing,
which the report command turns into one error line. The Agg backend is forced: login nodes have no display.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any, Sequence

from mlps_slurm.report.figures import Figure, Series

INSTALL = "pip install 'mlps-slurm[plots]'"
WIDTH_IN, HEIGHT_IN, DPI = 8.0, 4.2, 100
# matplotlib's tab10 without its red and green, which mark regressions and improvements
COLORS = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#e377c2", "#7f7f7f", "#bcbd22")
MARKERS = ("o", "s", "D", "v", "P", "h")  # a line hidden under another still shows its markers
MARK_STYLE = {"regression": ("X", "#d62728", "regression"), "improvement": ("^", "#2ca02c", "improvement")}


class PlotsMissing(RuntimeError):
    """matplotlib is not installed; the message says how to install it."""


def require() -> Any:
    """matplotlib.pyplot on the Agg backend, or PlotsMissing."""
    try:
        import matplotlib
    except ImportError:
        raise PlotsMissing(f"the report's figures need matplotlib, which is not installed in this environment: "
                           f"`{INSTALL}` (or `pip install matplotlib`)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _positions(spec: Figure) -> tuple[list[Any], dict[Any, int] | None]:
    """The categories (in first-seen order) when x holds any text, else None: numbers and times are drawn as such."""
    xs = [x for s in spec.series for x in s.x]
    if spec.kind == "bar" or any(isinstance(x, str) for x in xs):
        cats = list(dict.fromkeys([str(c) for c in spec.categories] + [str(x) for x in xs]))
        return cats, {c: i for i, c in enumerate(cats)}
    return [], None


def _error(s: Series, idx: Sequence[int]) -> list[list[float]] | None:
    if s.low is None or s.high is None:
        return None
    return [[max(0.0, s.y[i] - s.low[i]) for i in idx], [max(0.0, s.high[i] - s.y[i]) for i in idx]]


def _bars(ax: Any, spec: Figure, index: dict[Any, int], colors: list[str]) -> None:
    """Grouped bars: at each category, the series that have a value there share its slot."""
    labelled: set[int] = set()
    for cat, pos in index.items():
        present = [(k, s, s.x.index(next(x for x in s.x if str(x) == cat))) for k, s in enumerate(spec.series)
                   if any(str(x) == cat for x in s.x)]
        width = 0.8 / max(1, len(present))
        for j, (k, s, i) in enumerate(present):
            where = pos - 0.4 + width * (j + 0.5)
            err = _error(s, [i])
            ax.bar(where, s.y[i], width * 0.92, color=colors[k % len(colors)], yerr=err, capsize=3 if err else 0,
                   label=s.label if k not in labelled else None, error_kw={"elinewidth": 1, "ecolor": "#333333"})
            labelled.add(k)
            _mark(ax, s, [i], [where])


def _mark(ax: Any, s: Series, idx: Sequence[int], xs: Sequence[Any]) -> None:
    if not s.marks:
        return
    for kind, (marker, color, _) in MARK_STYLE.items():
        pts = [(x, s.y[i]) for x, i in zip(xs, idx) if s.marks[i] == kind]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, s=140, color=color, zorder=5,
                       edgecolors="white", linewidths=0.8)


def _lines(ax: Any, spec: Figure, index: dict[Any, int] | None, colors: list[str]) -> None:
    for k, s in enumerate(spec.series):
        idx = list(range(len(s.x)))
        xs = [index[str(x)] for x in s.x] if index is not None else list(s.x)
        err = _error(s, idx)
        ax.errorbar(xs, s.y, yerr=err, color=colors[k % len(colors)], marker=MARKERS[k % len(MARKERS)],
                    markersize=5, linewidth=1.6, capsize=3 if err else 0, label=s.label, alpha=0.9)
        _mark(ax, s, idx, xs)


def draw_on(ax: Any, spec: Figure) -> None:
    """Draw one Figure on a matplotlib Axes."""
    colors = list(COLORS)
    cats, index = _positions(spec)
    if spec.kind == "bar" and index is not None:
        _bars(ax, spec, index, colors)
    else:
        _lines(ax, spec, index, colors)
    if index is not None:
        ax.set_xticks(range(len(cats)))
        long = sum(len(c) + 2 for c in cats) > 90  # labels that would touch: slanted
        ax.set_xticklabels(cats, rotation=35 if long else 0, ha="right" if long else "center", fontsize=8)
        ax.set_xlim(-0.6, len(cats) - 0.4)
    elif all(isinstance(x, int) for s in spec.series for x in s.x):  # epochs, checkpoints: no 1.25
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    elif any(isinstance(x, dt.datetime) for s in spec.series for x in s.x):
        import matplotlib.dates as mdates

        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    if spec.threshold is not None and math.isfinite(spec.threshold):
        ax.axhline(spec.threshold, color="#555555", linestyle="--", linewidth=1.2,
                   label=spec.threshold_label or None)
    if spec.from_zero:
        top = max([v for s in spec.series for v in (s.high or s.y)] + [spec.threshold or 0.0, 0.0])
        ax.set_ylim(0, top * 1.12 if top > 0 else 1)
    else:
        ax.margins(y=0.25)
    if any(s.marks and any(s.marks) for s in spec.series):
        for kind, (marker, color, label) in MARK_STYLE.items():
            if any(s.marks and kind in s.marks for s in spec.series):
                ax.scatter([], [], marker=marker, s=80, color=color, label=label)
    ax.set_title(spec.title, fontsize=11, loc="left")
    ax.set_ylabel(spec.y_label)
    if spec.x_label:
        ax.set_xlabel(spec.x_label)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles, _ = ax.get_legend_handles_labels()
    if len(handles) > 1 or (handles and spec.threshold_label):
        # above the plot, right of the title: never over the bars or lines
        ax.legend(fontsize=8, frameon=False, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=min(4, len(handles)),
                  borderaxespad=0.2, handlelength=1.6, columnspacing=1.0)


def save(spec: Figure, path: Path) -> None:
    """One Figure as a PNG file."""
    plt = require()
    fig, ax = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    try:
        draw_on(ax, spec)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=DPI)
    finally:
        plt.close(fig)


def save_sheet(specs: Sequence[Figure], path: Path, title: str) -> None:
    """Every Figure as a panel of one PNG (two columns), under `title`."""
    plt = require()
    cols = 2 if len(specs) > 1 else 1
    rows = max(1, math.ceil(len(specs) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH_IN * cols, HEIGHT_IN * rows + 0.6), dpi=DPI, squeeze=False)
    try:
        for ax, spec in zip(axes.flat, specs):
            draw_on(ax, spec)
        for ax in list(axes.flat)[len(specs):]:
            ax.set_axis_off()
        if not specs:
            axes[0][0].text(0.5, 0.5, "nothing to draw", ha="center", va="center")
        fig.suptitle(title, fontsize=13, x=0.01, ha="left")
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=DPI)
    finally:
        plt.close(fig)
