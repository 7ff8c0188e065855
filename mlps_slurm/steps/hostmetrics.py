"""Host metrics of one compute node while a benchmark job runs (inside jobs; Linux; standard library only).

`python -m mlps_slurm.steps.hostmetrics sample --out DIR [--task N] --interval 10` runs as one task per node of a
benchmark job, beside its steps (`srun --overlap`, see plan.host_metrics_command), and writes into DIR (DIR.NN for
array task N):

  <node>.start.json    snapshot at start: the raw text of every /proc file read, and its parsed counters
  <node>.series.jsonl  one line every interval: rates over it (disk read/write B/s and IOPS per device, CPU %,
                       memory, network B/s per interface, load average, paging)
  <node>.end.json      snapshot at the end, with the averages over the whole sampling window

It stops on SIGTERM, SIGINT or SIGUSR1 (srun forwards the job script's `kill`; Slurm sends SIGTERM when the job
ends) or when its parent goes away, writes the end snapshot and exits 0. It never fails the benchmark: an error is
recorded in the files (`errors`) and the exit status stays 0. It reads only /proc files and starts no process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

SCHEMA = "mlps-slurm/hostmetrics/1"
PROC_FILES = ("stat", "meminfo", "diskstats", "net/dev", "vmstat", "loadavg")
SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's block size
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # also what the summary accepts as a file's node
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
# Paging and reclaim counters worth a rate: major faults and swap say the node ran short of memory.
VMSTAT_RATES = ("pgpgin", "pgpgout", "pswpin", "pswpout", "pgmajfault")
MEMINFO_KEYS = ("MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "Dirty", "Writeback", "Shmem",
                "SwapTotal", "SwapFree")

# --- parsers: text of one /proc file -> counters (pure, so tests feed them fixture text)


def parse_stat(text: str) -> dict[str, Any]:
    """/proc/stat: the aggregate cpu line in jiffies, context switches, running and blocked processes."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    out: dict[str, Any] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "cpu":
            out["cpu"] = {n: int(v) for n, v in zip(names, parts[1:])}
        elif parts[0] in ("ctxt", "procs_running", "procs_blocked") and len(parts) > 1:
            out[parts[0]] = int(parts[1])
    if "cpu" not in out:
        raise ValueError("no aggregate cpu line")
    return out


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo in bytes (the file says kB)."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if key in MEMINFO_KEYS and fields and fields[0].isdigit():
            out[key] = int(fields[0]) * (1024 if fields[1:2] == ["kB"] else 1)
    if "MemTotal" not in out:
        raise ValueError("no MemTotal")
    return out


def parse_diskstats(text: str) -> dict[str, dict[str, int]]:
    """/proc/diskstats per device (not the never-used ones): completed I/Os, bytes and milliseconds busy."""
    out = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) < 14 or not all(x.isdigit() for x in f[3:14]):
            continue
        c = [int(x) for x in f[3:14]]
        if not any(c):
            continue
        out[f[2]] = {"reads": c[0], "read_bytes": c[2] * SECTOR_BYTES, "writes": c[4],
                     "write_bytes": c[6] * SECTOR_BYTES, "in_flight": c[8], "busy_ms": c[9]}
    return out


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/dev per interface: received and transmitted bytes and packets."""
    out = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        f = rest.split()
        if not sep or len(f) < 16 or not all(x.isdigit() for x in f):
            continue
        out[name.strip()] = {"rx_bytes": int(f[0]), "rx_packets": int(f[1]), "tx_bytes": int(f[8]),
                             "tx_packets": int(f[9])}
    return out


def parse_vmstat(text: str) -> dict[str, int]:
    """/proc/vmstat: the paging counters (VMSTAT_RATES) and the dirty and writeback page counts."""
    wanted = {*VMSTAT_RATES, "nr_dirty", "nr_writeback"}
    out = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) == 2 and f[0] in wanted and f[1].isdigit():
            out[f[0]] = int(f[1])
    return out


def parse_loadavg(text: str) -> dict[str, Any]:
    """/proc/loadavg: 1, 5 and 15 minute load, running and total scheduling entities."""
    f = text.split()
    running, _, total = f[3].partition("/")
    return {"load1": float(f[0]), "load5": float(f[1]), "load15": float(f[2]), "running": int(running),
            "entities": int(total)}


PARSERS: dict[str, Callable[[str], Any]] = {
    "stat": parse_stat, "meminfo": parse_meminfo, "diskstats": parse_diskstats, "net/dev": parse_net_dev,
    "vmstat": parse_vmstat, "loadavg": parse_loadavg}


def read_counters(proc_root: str = "/proc") -> tuple[dict[str, str], dict[str, Any], list[str]]:
    """(raw text per file, parsed counters per file, errors): a file that cannot be read or parsed is an error,
    never an exception."""
    raw: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    errors: list[str] = []
    for name in PROC_FILES:
        try:
            with open(f"{proc_root}/{name}") as fh:
                raw[name] = fh.read()
            parsed[name] = PARSERS[name](raw[name])
        except (OSError, ValueError, IndexError) as exc:
            errors.append(f"{proc_root}/{name}: {exc}")
    return raw, parsed, errors


# --- rates between two readings


def is_partition(device: str, devices: Any) -> bool:
    """sda1 of sda, nvme0n1p1 of nvme0n1: counted inside their disk already."""
    return any(device != d and device.startswith(d) and re.fullmatch(r"p?\d+", device[len(d):])
                           for d in devices)


def disk_totals(disks: dict[str, dict[str, float]]) -> dict[str, float]:
    """Sum over the devices that carry I/O once: not partitions, device-mapper, md RAID, loop or ram devices (they
    stack on a disk that counts the same I/O)."""
    keys = ("read_Bps", "write_Bps", "read_iops", "write_iops")
    whole = [v for d, v in disks.items() if not is_partition(d, disks)
             and not d.startswith(("dm-", "md", "loop", "ram", "zram"))]
    return {k: round(sum(v[k] for v in whole), 3) for k in keys}


def rates(prev: dict[str, Any], cur: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What happened between two parsed readings, per second (CPU in % of all jiffies)."""
    out: dict[str, Any] = {}
    dt = seconds if seconds > 0 else 1.0
    if "stat" in prev and "stat" in cur:
        delta = {k: cur["stat"]["cpu"].get(k, 0) - v for k, v in prev["stat"]["cpu"].items()}
        total = sum(delta.values()) or 1
        pct = {"user": delta.get("user", 0) + delta.get("nice", 0), "system": delta.get("system", 0),
               "iowait": delta.get("iowait", 0), "idle": delta.get("idle", 0)}
        out["cpu"] = {k: round(100 * v / total, 2) for k, v in pct.items()}
        out["procs_blocked"] = cur["stat"].get("procs_blocked")
    if "diskstats" in prev and "diskstats" in cur:
        disks = {}
        for dev, c in cur["diskstats"].items():
            p = prev["diskstats"].get(dev, {})
            d = {k: c[k] - p.get(k, 0) for k in ("reads", "read_bytes", "writes", "write_bytes", "busy_ms")}
            if any(d.values()):
                disks[dev] = {"read_Bps": round(d["read_bytes"] / dt, 1), "write_Bps": round(d["write_bytes"] / dt, 1),
                              "read_iops": round(d["reads"] / dt, 2), "write_iops": round(d["writes"] / dt, 2),
                              "util_pct": round(min(100.0, d["busy_ms"] / (10 * dt)), 1)}
        out["disk"] = disks
        out["disk_total"] = disk_totals(disks)
    if "net/dev" in prev and "net/dev" in cur:
        net = {}
        for iface, c in cur["net/dev"].items():
            p = prev["net/dev"].get(iface, {})
            rx, tx = c["rx_bytes"] - p.get("rx_bytes", 0), c["tx_bytes"] - p.get("tx_bytes", 0)
            if rx or tx:
                net[iface] = {"rx_Bps": round(rx / dt, 1), "tx_Bps": round(tx / dt, 1)}
        out["net"] = net
        out["net_total"] = {k: round(sum(v[k] for i, v in net.items() if i != "lo"), 1) for k in ("rx_Bps", "tx_Bps")}
    if "vmstat" in prev and "vmstat" in cur:
        out["vm_per_s"] = {k: round((cur["vmstat"][k] - prev["vmstat"][k]) / dt, 2) for k in VMSTAT_RATES
                           if k in cur["vmstat"] and k in prev["vmstat"]}
    return out


def memory(parsed: dict[str, Any]) -> dict[str, int]:
    """Used (neither free nor page cache nor buffers), page cache, dirty and under writeback, in bytes."""
    m = parsed.get("meminfo")
    if not m:
        return {}
    cached = m.get("Cached", 0) + m.get("Buffers", 0)
    return {"total": m["MemTotal"], "used": m["MemTotal"] - m.get("MemFree", 0) - cached, "cached": cached,
            "available": m.get("MemAvailable", 0), "dirty": m.get("Dirty", 0), "writeback": m.get("Writeback", 0)}


# --- the sampler


def node_name() -> str:
    """SLURMD_NODENAME (emulated nodes share one host), else the host name; made safe for a file name."""
    name = os.environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-")[:128]
    return name if NODE_NAME.match(name) else "unknown-node"


def signal_wait(seconds: float) -> bool:
    """Sleep up to `seconds`; True as soon as a stop signal arrives (blocked by `Sampler.run`, so none is lost
    while a sample is being written)."""
    return signal.sigtimedwait(STOP_SIGNALS, max(seconds, 0.0)) is not None


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


class Sampler:
    """Reads the /proc counters every `interval` seconds. `clock` (monotonic seconds), `now` (wall time) and
    `wait` (sleep, True when asked to stop) are injectable, so tests run the loop without sleeping."""

    def __init__(self, out_dir: Path, node: str, interval: float, proc_root: str = "/proc",
                 clock: Callable[[], float] = time.monotonic, now: Callable[[], float] = time.time,
                 wait: Callable[[float], bool] = signal_wait, parent_alive: Callable[[], bool] | None = None):
        self.out_dir, self.node, self.interval, self.proc_root = out_dir, node, max(interval, 0.05), proc_root
        self.clock, self.now, self.wait = clock, now, wait
        ppid = os.getppid()
        self.parent_alive = parent_alive or (lambda: os.getppid() == ppid)
        self.samples = 0
        self.errors: list[str] = []

    def path(self, suffix: str) -> Path:
        return self.out_dir / f"{self.node}.{suffix}"

    def snapshot(self, when: str, t0: float, **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        raw, parsed, errors = read_counters(self.proc_root)
        doc = {"schema": SCHEMA, "node": self.node, "when": when, "time": self.now(), "monotonic": self.clock(),
               "elapsed_s": round(self.clock() - t0, 3), "interval_s": self.interval, "pid": os.getpid(),
               "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "slurm_step_id": os.environ.get("SLURM_STEP_ID"),
               "errors": errors, "memory": memory(parsed), "parsed": parsed, "raw": raw, **extra}
        return doc, parsed

    def run(self) -> int:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        t0 = self.clock()
        start, first = self.snapshot("start", t0)
        _write_json(self.path("start.json"), start)
        prev, prev_t, due = first, t0, t0 + self.interval
        stopped_by = "parent ended"
        with open(self.path("series.jsonl"), "a") as series:
            while self.parent_alive():
                if self.wait(due - self.clock()):
                    stopped_by = "signal"
                    break
                if self.clock() < due:
                    continue
                _, cur, errors = read_counters(self.proc_root)
                t = self.clock()
                line = {"t": round(self.now(), 3), "elapsed_s": round(t - t0, 3), "seconds": round(t - prev_t, 3),
                        **rates(prev, cur, t - prev_t), "memory": memory(cur),
                        "load": cur.get("loadavg", {}).get("load1")}
                if errors:
                    line["errors"] = errors
                series.write(json.dumps(line, separators=(",", ":")) + "\n")
                series.flush()
                self.samples += 1
                prev, prev_t = cur, t
                due += self.interval
                if due <= t:  # late (a suspended job, a slow filesystem): skip the missed slots
                    due = t + self.interval
        end, last = self.snapshot("end", t0, stopped_by=stopped_by, samples=self.samples)
        end["since_start"] = rates(first, last, end["monotonic"] - start["monotonic"])
        _write_json(self.path("end.json"), end)
        return 0


def output_dir(out: str, task: str | None) -> Path:
    """DIR, or DIR.NN for array task N (as the run directory names tasks: two digits)."""
    return Path(f"{out}.{int(task):02d}" if task not in (None, "") else out)


def sample(args: argparse.Namespace) -> int:
    node = node_name()
    out = Path(args.out)
    try:
        out = output_dir(args.out, args.task)
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        return Sampler(out, node, args.interval).run()
    except Exception as exc:  # never fail the benchmark: say why in the run directory and exit 0
        try:
            out.mkdir(parents=True, exist_ok=True)
            _write_json(out / f"{node}.error.json", {"schema": SCHEMA, "node": node, "time": time.time(),
                                                     "error": f"{type(exc).__name__}: {exc}"})
        except Exception:
            pass
        print(f"mlps-slurm hostmetrics on {node}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlps_slurm.steps.hostmetrics")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sample", help="sample this node's /proc counters until SIGTERM/SIGINT/SIGUSR1")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--task", default=None, help="Slurm array task id (writes into OUT.NN)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    return sample(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
