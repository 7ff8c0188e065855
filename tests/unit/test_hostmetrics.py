"""Host metrics sampler (mlps_slurm/steps/hostmetrics.py): the /proc parsers on fixture text, rates between two
readings, the sampling loop with an injected clock, and the real process stopped by a signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlps_slurm.steps import hostmetrics as hm

STAT = """cpu  1000 100 500 8000 400 0 20 0 0 0
cpu0 500 50 250 4000 200 0 10 0 0 0
intr 123456 0 0
ctxt 987654
btime 1700000000
processes 4242
procs_running 3
procs_blocked 1
"""
MEMINFO = """MemTotal:       16384000 kB
MemFree:         4096000 kB
MemAvailable:   12000000 kB
Buffers:          100000 kB
Cached:          6000000 kB
SwapCached:            0 kB
Dirty:             20480 kB
Writeback:          1024 kB
Shmem:             10000 kB
HugePages_Total:       0
"""
DISKSTATS = """   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
   8       0 sda 1000 10 204800 500 2000 20 409600 900 0 1200 1400 0 0 0 0 0 0
   8       1 sda1 900 10 184320 450 1800 20 368640 800 0 1100 1250 0 0 0 0 0 0
 259       0 nvme0n1 10 0 80 1 20 0 160 2 1 3 3
 259       1 nvme0n1p1 10 0 80 1 20 0 160 2 0 3 3
 253       0 dm-0 5 0 40 1 5 0 40 1 0 1 1
 garbage line
"""
NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  5000      50    0    0    0     0          0         0   5000      50    0    0    0     0       0          0
  eth0: 1000000  1000    0    0    0     0          0         0 2000000    1500    0    0    0     0       0          0
   ib0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
"""
VMSTAT = """nr_free_pages 1000
nr_dirty 5
nr_writeback 1
pgpgin 100
pgpgout 200
pswpin 0
pswpout 0
pgfault 999
pgmajfault 7
"""
LOADAVG = "1.50 0.75 0.25 3/812 12345\n"
FIXTURES = {"stat": STAT, "meminfo": MEMINFO, "diskstats": DISKSTATS, "net/dev": NET_DEV, "vmstat": VMSTAT,
            "loadavg": LOADAVG}


def write_proc(root: Path, files: dict[str, str] = FIXTURES) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_parse_stat():
    s = hm.parse_stat(STAT)
    assert s["cpu"] == {"user": 1000, "nice": 100, "system": 500, "idle": 8000, "iowait": 400, "irq": 0,
                        "softirq": 20, "steal": 0}
    assert (s["ctxt"], s["procs_running"], s["procs_blocked"]) == (987654, 3, 1)
    with pytest.raises(ValueError):
        hm.parse_stat("intr 1\n")


def test_parse_meminfo_in_bytes():
    m = hm.parse_meminfo(MEMINFO)
    assert m["MemTotal"] == 16384000 * 1024 and m["Dirty"] == 20480 * 1024 and m["Writeback"] == 1024 * 1024
    assert "HugePages_Total" not in m and "SwapCached" not in m
    mem = hm.memory({"meminfo": m})
    assert mem["cached"] == (6000000 + 100000) * 1024
    assert mem["used"] == (16384000 - 4096000 - 6100000) * 1024


def test_parse_diskstats_skips_idle_devices_and_garbage():
    d = hm.parse_diskstats(DISKSTATS)
    assert set(d) == {"sda", "sda1", "nvme0n1", "nvme0n1p1", "dm-0"}  # loop0 never used; the garbage line ignored
    assert d["sda"] == {"reads": 1000, "read_bytes": 204800 * 512, "writes": 2000, "write_bytes": 409600 * 512,
                        "in_flight": 0, "busy_ms": 1200}
    assert d["nvme0n1"]["in_flight"] == 1  # an old kernel's 14-field line parses too


def test_parse_net_dev_vmstat_loadavg():
    n = hm.parse_net_dev(NET_DEV)
    assert n["eth0"] == {"rx_bytes": 1000000, "rx_packets": 1000, "tx_bytes": 2000000, "tx_packets": 1500}
    assert set(n) == {"lo", "eth0", "ib0"}
    assert hm.parse_vmstat(VMSTAT) == {"nr_dirty": 5, "nr_writeback": 1, "pgpgin": 100, "pgpgout": 200,
                                       "pswpin": 0, "pswpout": 0, "pgmajfault": 7}
    assert hm.parse_loadavg(LOADAVG) == {"load1": 1.5, "load5": 0.75, "load15": 0.25, "running": 3,
                                         "entities": 812}


def later(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


def test_rates_between_two_readings():
    first = {name: hm.PARSERS[name](text) for name, text in FIXTURES.items()}
    after = dict(FIXTURES)
    # 2 s later: sda wrote 4096 more sectors in 8 I/Os and read 2048 in 4; eth0 received 2 MB; 100 jiffies passed.
    after["diskstats"] = later(DISKSTATS, "sda 1000 10 204800 500 2000 20 409600",
                               "sda 1004 10 206848 500 2008 20 413696")
    after["diskstats"] = later(after["diskstats"], "sda1 900 10 184320 450 1800 20 368640",
                               "sda1 904 10 186368 450 1808 20 372736")
    after["net/dev"] = later(NET_DEV, "eth0: 1000000", "eth0: 3000000")
    after["stat"] = later(STAT, "cpu  1000 100 500 8000 400", "cpu  1020 100 530 8040 410")
    after["vmstat"] = later(VMSTAT, "pgmajfault 7", "pgmajfault 11")
    second = {name: hm.PARSERS[name](text) for name, text in after.items()}
    r = hm.rates(first, second, 2.0)
    assert r["disk"]["sda"]["write_Bps"] == 4096 * 512 / 2 and r["disk"]["sda"]["write_iops"] == 4
    assert r["disk"]["sda"]["read_Bps"] == 2048 * 512 / 2 and r["disk"]["sda"]["read_iops"] == 2
    assert set(r["disk"]) == {"sda", "sda1"}  # only devices that moved
    # the partition's I/O is the disk's: counted once
    assert r["disk_total"] == {"read_Bps": 2048 * 512 / 2, "write_Bps": 4096 * 512 / 2, "read_iops": 2,
                               "write_iops": 4}
    assert r["net"] == {"eth0": {"rx_Bps": 1e6, "tx_Bps": 0.0}} and r["net_total"]["rx_Bps"] == 1e6
    assert r["cpu"] == {"user": 20.0, "system": 30.0, "iowait": 10.0, "idle": 40.0}
    assert r["vm_per_s"]["pgmajfault"] == 2.0


def test_partitions_and_stacked_devices_are_not_counted_twice():
    disks = {d: {"read_Bps": 1.0, "write_Bps": 1.0, "read_iops": 1.0, "write_iops": 1.0}
             for d in ("sda", "sda1", "nvme0n1", "nvme0n1p2", "dm-0", "md0", "loop3")}
    assert hm.disk_totals(disks)["write_Bps"] == 2  # sda and nvme0n1
    assert not hm.is_partition("nvme1n1", disks) and hm.is_partition("nvme0n1p2", disks)


def test_unreadable_or_damaged_proc_file_is_an_error_not_an_exception(tmp_path):
    root = write_proc(tmp_path, {**FIXTURES, "meminfo": "nonsense\n"})
    (root / "loadavg").unlink()
    raw, parsed, errors = hm.read_counters(str(root))
    assert "meminfo" not in parsed and "loadavg" not in parsed and "stat" in parsed
    assert len(errors) == 2 and any("meminfo" in e for e in errors) and any("loadavg" in e for e in errors)


class FakeTime:
    """A clock that `wait` advances; asks the sampler to stop after `stop_after` waits."""

    def __init__(self, stop_after: int, late_at: int | None = None):
        self.t, self.waits, self.stop_after, self.late_at = 100.0, 0, stop_after, late_at

    def clock(self) -> float:
        return self.t

    def wait(self, seconds: float) -> bool:
        self.waits += 1
        if self.waits > self.stop_after:
            return True
        self.t += max(seconds, 0) + (25 if self.waits == self.late_at else 0)
        return False


def run_sampler(tmp_path, fake, **kw):
    proc = write_proc(tmp_path / "proc")
    out = tmp_path / "out"
    sampler = hm.Sampler(out, "n7", 10.0, proc_root=str(proc), clock=fake.clock, now=lambda: 1.7e9 + fake.t,
                         wait=fake.wait, **kw)
    assert sampler.run() == 0
    return out


def test_sampler_loop_writes_start_series_and_end(tmp_path):
    fake = FakeTime(stop_after=3)
    out = run_sampler(tmp_path, fake)
    assert sorted(p.name for p in out.iterdir()) == ["n7.end.json", "n7.series.jsonl", "n7.start.json"]
    start = json.loads((out / "n7.start.json").read_text())
    assert start["node"] == "n7" and start["when"] == "start" and start["errors"] == []
    assert start["raw"]["diskstats"] == DISKSTATS and start["parsed"]["loadavg"]["load1"] == 1.5
    lines = [json.loads(x) for x in (out / "n7.series.jsonl").read_text().splitlines()]
    assert [x["elapsed_s"] for x in lines] == [10.0, 20.0, 30.0]
    assert all(x["seconds"] == 10.0 and x["load"] == 1.5 and "disk_total" in x and "cpu" in x for x in lines)
    end = json.loads((out / "n7.end.json").read_text())
    assert end["when"] == "end" and end["stopped_by"] == "signal" and end["samples"] == 3
    assert end["since_start"]["disk_total"]["write_Bps"] == 0  # fixture counters never moved


def test_a_late_sample_skips_the_missed_slots(tmp_path):
    out = run_sampler(tmp_path, FakeTime(stop_after=3, late_at=2))
    lines = [json.loads(x) for x in (out / "n7.series.jsonl").read_text().splitlines()]
    assert [x["elapsed_s"] for x in lines] == [10.0, 45.0, 55.0]
    assert lines[1]["seconds"] == 35.0


def test_sampler_stops_when_its_parent_is_gone(tmp_path):
    alive = iter([True, True, False])
    out = run_sampler(tmp_path, FakeTime(stop_after=99), parent_alive=lambda: next(alive))
    end = json.loads((out / "n7.end.json").read_text())
    assert end["stopped_by"] == "parent ended" and end["samples"] == 2


def test_output_dir_and_node_name(monkeypatch):
    assert hm.output_dir("/r/hostmetrics/run", "3") == Path("/r/hostmetrics/run.03")
    assert hm.output_dir("/r/hostmetrics/checkpointing", None) == Path("/r/hostmetrics/checkpointing")
    monkeypatch.setenv("SLURMD_NODENAME", "n3")
    assert hm.node_name() == "n3"
    monkeypatch.setenv("SLURMD_NODENAME", "../../etc/passwd")
    assert "/" not in hm.node_name() and hm.NODE_NAME.match(hm.node_name())


def start_sampler(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "SLURMD_NODENAME": "n9"}
    return subprocess.Popen([sys.executable, "-m", "mlps_slurm.steps.hostmetrics", "sample", "--out", str(out),
                             "--interval", "0.2", *extra], env=env, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_stop_signal_writes_the_end_snapshot_and_exits_0(tmp_path, signo):
    out = tmp_path / "hostmetrics" / "run"
    proc = start_sampler(out, "--task", "4")
    series = out.with_name("run.04") / "n9.series.jsonl"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (series.exists() and series.read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signo)
    sent = time.monotonic()
    assert proc.wait(timeout=10) == 0, proc.stderr.read()
    assert time.monotonic() - sent < 2  # quickly: Slurm's KillWait is short
    end = json.loads((series.parent / "n9.end.json").read_text())
    assert end["stopped_by"] == "signal" and end["samples"] >= 2 and end["errors"] == []


def test_an_error_is_recorded_and_the_exit_status_stays_0(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = start_sampler(blocker / "sub")
    assert proc.wait(timeout=10) == 0
    assert "hostmetrics on n9" in proc.stderr.read()
