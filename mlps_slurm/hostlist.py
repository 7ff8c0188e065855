"""Slurm hostlist expressions (n[1-4,7],gpu[01-02]) expanded without calling scontrol.

Used inside jobs, where scontrol may be unavailable (e.g. inside a container).
"""

from __future__ import annotations

import re

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _split_top(expr: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, current = [], 0, []
    for ch in expr:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in (x.strip() for x in parts) if p]


def _expand_one(item: str) -> list[str]:
    m = re.search(r"\[([^\]]*)\]", item)
    if not m:
        return [item]
    head, tail = item[: m.start()], item[m.end():]
    names = []
    for rng in m.group(1).split(","):
        r = _RANGE.match(rng.strip())
        if not r:
            raise ValueError(f"bad range {rng!r} in hostlist {item!r}")
        lo, hi = r.group(1), r.group(2) or r.group(1)
        width = len(lo) if lo.startswith("0") else 0
        for i in range(int(lo), int(hi) + 1):
            names += [f"{head}{i:0{width}d}{rest}" for rest in _expand_one(tail)]
    return names


def expand(expr: str) -> list[str]:
    """'n[1-3],gpu[01-02],login' -> ['n1', 'n2', 'n3', 'gpu01', 'gpu02', 'login']"""
    out: list[str] = []
    for item in _split_top(expr):
        out += _expand_one(item)
    return out
