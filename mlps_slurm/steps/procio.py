"""A process's I/O counters from /proc, for the engines' measured figures (inside jobs; Linux only)."""

from __future__ import annotations


def read_proc_io(pid: int | str = "self") -> dict[str, int]:
    """A process's I/O counters: rchar = bytes read through read()/pread() (page-cache hits too), read_bytes =
    bytes fetched from storage. They include the process's reaped children."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/io") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if value.strip().isdigit():
                    out[key.strip()] = int(value)
    except OSError:
        pass
    return out
