"""What a report draws, as plain data: a Figure holds Series of numbers, a title and a caption. No matplotlib here.

Each benchmark's optional plots.py turns its results.json into Figures (`figures(results) -> list[Figure]`); the
shared report (draw.py) renders them with matplotlib, so a benchmark never imports it and its figures are tested as
numbers. Values that are not finite numbers are dropped where a Series is made, so a damaged results.json gives a
shorter figure, never an exception inside matplotlib.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

KINDS = ("bar", "line")
MARKS = ("regression", "improvement")
_SLUG = re.compile(r"[^a-z0-9]+")

X = Any  # a category (str), a number, or a datetime (a metric over time)


def number(value: Any) -> float | None:
    """`value` as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Series:
    """One line or one set of bars: y[i] at x[i]; low/high (optional) the range drawn as an error bar; marks[i]
    (optional) "regression" or "improvement" drawn over the point."""

    label: str
    x: tuple[X, ...]
    y: tuple[float, ...]
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    marks: tuple[str | None, ...] | None = None


def series(label: str, points: Iterable[tuple[X, Any]], ranges: Sequence[tuple[Any, Any]] | None = None,
           marks: Sequence[str | None] | None = None) -> Series | None:
    """A Series from (x, y) pairs, leaving out the points whose y is not a finite number; None when none is left.
    `ranges` and `marks`, when given, go with `points` one for one."""
    pts = list(points)
    keep = [i for i, (x, y) in enumerate(pts) if number(y) is not None and isinstance(x, (str, int, float, dt.datetime))]
    if not keep:
        return None
    low = high = None
    if ranges is not None:
        low = tuple(number(ranges[i][0]) if number(ranges[i][0]) is not None else number(pts[i][1]) for i in keep)
        high = tuple(number(ranges[i][1]) if number(ranges[i][1]) is not None else number(pts[i][1]) for i in keep)
    kept_marks = tuple(marks[i] if marks[i] in MARKS else None for i in keep) if marks is not None else None
    return Series(label, tuple(pts[i][0] for i in keep), tuple(float(pts[i][1]) for i in keep), low, high,
                  kept_marks)


@dataclass(frozen=True)
class Figure:
    """One picture of the report: a PNG beside the page, with its title as heading and its caption below."""

    name: str  # what its PNG file is named after (slugged; never a path)
    title: str
    caption: str
    y_label: str
    series: tuple[Series, ...]
    kind: str = "bar"  # "bar": grouped bars over categories; "line": lines with markers (numbers or times on x)
    x_label: str = ""
    threshold: float | None = None  # a dashed horizontal line, e.g. the AU threshold
    threshold_label: str = ""
    from_zero: bool = True  # the y axis starts at 0 (False: fit the data, e.g. recall 0.95-0.99)
    notes: tuple[str, ...] = field(default_factory=tuple)  # listed under the caption
    categories: tuple[str, ...] = ()  # the order of the categories on x (default: as the series list them)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"figure kind {self.kind!r}: expected one of {', '.join(KINDS)}")


def figure(name: str, title: str, caption: str, y_label: str, found: Iterable[Series | None],
           **options: Any) -> Figure | None:
    """A Figure of the series that have points; None when none has (nothing to draw)."""
    kept = tuple(s for s in found if s is not None)
    return Figure(name, title, caption, y_label, kept, **options) if kept else None


def slug(text: str, limit: int = 60) -> str:
    """A file-name-safe form of `text`: lowercase letters, digits and '-' only, at most `limit` characters."""
    return _SLUG.sub("-", str(text).lower()).strip("-")[:limit].strip("-") or "figure"


def rows(value: Any) -> list[Mapping[str, Any]]:
    """The mappings of a results.json list (anything else: none)."""
    return [r for r in value if isinstance(r, Mapping)] if isinstance(value, list) else []
