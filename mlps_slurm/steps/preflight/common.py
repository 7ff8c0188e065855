"""What every preflight module shares: check statuses and results, and node names (this node's; sorting and
compacting lists of them)."""

from __future__ import annotations

import functools
import os
import re
import socket
from typing import Any, Iterable

PASS, WARN, FAIL = "pass", "warning", "error"
ALL_NODES = "all"  # the `node` of a failure that belongs to the allocation, not to one node (mpi.collective)

Check = dict[str, Any]


def node_name() -> str:
    # Emulated Slurm nodes share one host, so the Slurm node name is the identity, not the hostname.
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def make_check(check_id: str, status: str, message: str, **facts: Any) -> Check:
    return {**facts, "id": check_id, "status": status, "message": message}


def gib(nbytes: float) -> str:
    return f"{nbytes / (1 << 30):.1f} GiB"


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[Any, ...]:
    """n2 before n10."""
    return tuple(int(p) if p.isdigit() else p for p in _DIGITS.split(name))


@functools.lru_cache(maxsize=1 << 16)
def _split_name(name: str) -> tuple[str, int, int]:
    """'gpu017' -> ('gpu', 3, 17); a name without a trailing number -> (name, -1, 0). Cached: the same names
    are compacted once per check in preflight.txt."""
    prefix = name.rstrip("0123456789")
    digits = name[len(prefix):]
    if not digits:
        return name, -1, 0
    return prefix, len(digits) if digits[0] == "0" and len(digits) > 1 else 0, int(digits)


def compact_nodes(names: Iterable[str]) -> str:
    """['n1','n2','n3','n7','gpu01'] -> 'gpu01,n[1-3,7]' (Slurm hostlist syntax, zero padding kept)."""
    groups: dict[tuple[str, int], list[int]] = {}
    plain: set[str] = set()
    for name in names:
        prefix, width, number = _split_name(name)
        if width < 0:
            plain.add(name)
        else:
            groups.setdefault((prefix, width), []).append(number)
    parts = sorted(plain)
    for (prefix, width), numbers in sorted(groups.items()):
        numbers = sorted(set(numbers))
        ranges, start, prev = [], numbers[0], numbers[0]
        for n in numbers[1:]:
            if n != prev + 1:
                ranges.append(_range(start, prev, width))
                start = n
            prev = n
        ranges.append(_range(start, prev, width))
        parts.append(f"{prefix}{ranges[0]}" if len(numbers) == 1 else f"{prefix}[{','.join(ranges)}]")
    return ",".join(parts)


def _range(start: int, end: int, width: int) -> str:
    return f"{start:0{width}d}" if start == end else f"{start:0{width}d}-{end:0{width}d}"
