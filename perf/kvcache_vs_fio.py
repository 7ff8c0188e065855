"""The builtin KV-cache engine beside fio on the same directory: option 1's storage pattern (llama3.1-8b, 131,072
bytes per token, one .npy file per entry: 512..25,000-token contexts, later turns of a conversation down to a
quarter of that, so 16 MiB .. 3 GiB), repeated and interleaved, medians printed.

Each repetition:
1. runs one rank of the engine (`python -m mlps_slurm.benchmarks.kvcache.job --keep-cache`, option 1's tiers and
   max-concurrent-allocs 16, the given users and window) and takes from its results file the storage write and read
   GiB/s (the reference's figures and the in-window ones), its CPU seconds, requests and peak RSS; then lists the
   sizes of the .npy files it left and removes them;
2. has fio write files of those sizes (each rounded up to the 4 MiB block) in the same directory: ioengine=psync,
   bs=4m, rw=write, end_fsync=1 (fio fsyncs each file as it finishes it), fallocate=none, min(users, 16) jobs (the
   engine's write concurrency), each writing its share of the files one after another (file_service_type=
   sequential, openfiles=1; the shares balanced by bytes);
3. has fio read those files (rw=read, bs=4m) with min(users, 500, files) jobs (the engine's reads are not bounded
   by max-concurrent-allocs: up to one per worker); invalidate=1 makes fio call posix_fadvise(POSIX_FADV_DONTNEED)
   on each file when it opens it, as the engine does before each read (fadvise_hint only gives SEQUENTIAL/RANDOM).
fio's GiB/s = the jobs' bytes / the longest job's runtime (fio's group figure); its CPU seconds = the sum over jobs
of (usr_cpu + sys_cpu) % x runtime. The engine's CPU seconds include generating its entry data; fio fills its
buffers once (scrambled a little per I/O). The engine reads and writes at once; fio does one, then the other. Prints
only; asserts nothing.

    .venv/bin/python perf/kvcache_vs_fio.py [--users 20 | --closed-users] [--duration 20] [--repeats 3]
        [--dir ~/mlps-slurm/kvcache-perf] [--storage-capacity-gb 32] [--seed 42]
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlps_slurm.benchmarks.kvcache.catalog import GIB, IO_CHUNK_BYTES, MAX_WORKERS, OPTIONS  # noqa: E402

OPTION = OPTIONS[1]
BS = IO_CHUNK_BYTES  # the engine streams every file through one 4 MiB buffer per worker
HEADROOM = 8 * GIB  # free space to leave beyond the storage tier's limit
REFERENCE = ("reference engine (issue): 2.4-3.1 CPU-s per GiB of storage I/O; its reported bandwidth 3-6x the bytes "
             "the OS saw")


def fstype(path: Path) -> str:
    """The filesystem type of the mount holding path (/proc/self/mountinfo)."""
    real, best, kind = str(path.resolve()), "", "?"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        mount = left.split()[4].encode().decode("unicode_escape")
        if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
            best, kind = mount, right.split()[0]
    return kind


def storage_under_test(directory: Path) -> str | None:
    """Create `directory` if needed and return its filesystem type; None (after saying why, and removing what this
    made) when it is memory, which would measure RAM instead of storage."""
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    kind = fstype(directory)
    if kind in ("tmpfs", "ramfs"):
        print(f"{directory} is on {kind}: that measures memory, not storage; give --dir on a disk", file=sys.stderr)
        if created:
            directory.rmdir()
        return None
    return kind


def run_engine(args: argparse.Namespace, scratch: Path) -> tuple[dict, list[int], float]:
    """One engine rank; (its results, the sizes of the files it left, process seconds). The files are removed."""
    out, cache = scratch / "out", scratch / "cache"
    cmd = [sys.executable, "-m", "mlps_slurm.benchmarks.kvcache.job", "--output-base", str(out), "--cache-base",
           str(cache), "--seed-base", str(args.seed), "--model", OPTION.model, "--num-users", str(args.users),
           "--duration", str(args.duration), "--gpu-mem-gb", "0", "--cpu-mem-gb", str(OPTION.cpu_mem_gb),
           "--max-concurrent-allocs", str(OPTION.max_concurrent_allocs), "--generation-mode",
           OPTION.generation_mode, "--storage-capacity-gb", str(args.storage_capacity_gb), "--keep-cache"]
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")}
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    files = sorted(cache.glob("rank_0/*.npy"))
    sizes = [p.stat().st_size for p in files]
    for p in files:
        p.unlink()
    results = sorted(out.glob("rank_0/kvcache_results_*.json"))
    if proc.returncode or not results:
        raise RuntimeError(f"the engine exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    data = json.loads(results[0].read_text())
    shutil.rmtree(out, ignore_errors=True)
    return data, sizes, wall


def lanes(sizes: list[int], n: int, rng: random.Random) -> list[list[tuple[str, int]]]:
    """Files (name, size) in n shares balanced by bytes (largest first to the lightest share), each share shuffled."""
    heap = [(0, i) for i in range(n)]
    shares: list[list[tuple[str, int]]] = [[] for _ in range(n)]
    for i, size in sorted(enumerate(sizes), key=lambda x: -x[1]):
        load, lane = heapq.heappop(heap)
        shares[lane].append((f"f{i:04d}.npy", size))
        heapq.heappush(heap, (load + size, lane))
    for share in shares:
        rng.shuffle(share)
    return [s for s in shares if s]


def fio_argv(rw: str, directory: Path, shares: list[list[tuple[str, int]]]) -> list[str]:
    argv = ["fio", "--output-format=json", f"--directory={directory}", "--ioengine=psync", f"--rw={rw}",
            f"--bs={BS // (1 << 20)}m", "--invalidate=1", "--file_service_type=sequential", "--openfiles=1"]
    if rw == "write":
        argv += ["--end_fsync=1", "--fallocate=none"]
    for i, share in enumerate(shares):
        argv += [f"--name={rw}{i}", "--filename=" + ":".join(name for name, _ in share)]
    return argv


def run_fio(argv: list[str], rw: str) -> dict:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"fio exited {proc.returncode}: {proc.stderr.strip()}")
    jobs = json.loads(proc.stdout[proc.stdout.index("{"):])["jobs"]
    nbytes = sum(j[rw]["io_bytes"] for j in jobs)
    runtime = max(j["job_runtime"] for j in jobs) / 1000
    cpu = sum((j["usr_cpu"] + j["sys_cpu"]) / 100 * j["job_runtime"] / 1000 for j in jobs)
    return {"bytes": nbytes, "gibps": nbytes / GIB / runtime, "cpu_per_gib": cpu / (nbytes / GIB), "jobs": len(jobs)}


def shown(argv: list[str]) -> str:
    """A fio command line with its file lists shortened."""
    names = [a for a in argv if a.startswith("--name=")]
    first = argv.index(names[0])
    files = argv[first + 1].removeprefix("--filename=").split(":")
    head = " ".join(argv[:first + 1] + [f"--filename={files[0]}:...({len(files)} files)"])
    return head + (f" ... --name={names[-1][7:]} --filename=... ({len(names)} jobs)" if len(names) > 1 else "")


def repetition(args: argparse.Namespace, scratch: Path, rep: int) -> dict:
    data, sizes, wall = run_engine(args, scratch)
    cs, mine = data["summary"]["cache_stats"], data["mlps_slurm"]
    measured, io = mine["measured"], mine["files"]
    if not sizes:
        raise RuntimeError("the engine left no .npy files: nothing for fio to replay")
    rounded = [-(-s // BS) * BS for s in sizes]
    rng = random.Random(args.seed + rep)
    fio_dir = scratch / "fio"
    fio_dir.mkdir(exist_ok=True)
    try:
        shares = lanes(rounded, min(args.users, OPTION.max_concurrent_allocs), rng)
        for name, size in (f for share in shares for f in share):
            with open(fio_dir / name, "wb") as f:  # sparse, of the entry's size: fio writes each file's size
                f.truncate(size)
        wargv = fio_argv("write", fio_dir, shares)
        w = run_fio(wargv, "write")
        rargv = fio_argv("read", fio_dir, lanes(rounded, min(args.users, MAX_WORKERS, len(sizes)), rng))
        r = run_fio(rargv, "read")
    finally:
        shutil.rmtree(fio_dir, ignore_errors=True)
    io_gib = (io["file_bytes_read"] + io["file_bytes_written"]) / GIB
    wr_share = io["file_bytes_written"] / GIB / io_gib if io_gib else 0.0
    os_r, os_w = measured["proc_io"]["read_bytes"], measured["proc_io"]["write_bytes"]
    rec = {
        "e_w_ref": cs["tier_storage_write_bandwidth_gbps"], "e_w_in": measured["write_bandwidth_gibps"],
        "e_r_ref": cs["tier_storage_read_bandwidth_gbps"], "e_r_in": measured["read_bandwidth_gibps"],
        "e_cpu_gib": measured["cpu_seconds"] / io_gib if io_gib else 0.0,
        "e_cpu_req": measured["cpu_seconds"] / max(1, data["requests_completed"]),
        "e_rss_gib": measured["peak_rss_bytes"] / GIB, "e_requests": data["requests_completed"],
        "e_os_r": io["file_bytes_read"] / os_r if os_r else float("nan"),
        "e_os_w": io["file_bytes_written"] / os_w if os_w else float("nan"),
        "f_w": w["gibps"], "f_r": r["gibps"], "f_cpu_w": w["cpu_per_gib"], "f_cpu_r": r["cpu_per_gib"],
        "f_cpu_mix": wr_share * w["cpu_per_gib"] + (1 - wr_share) * r["cpu_per_gib"],
    }
    rec["r_w_ref"], rec["r_w_in"] = rec["e_w_ref"] / rec["f_w"], rec["e_w_in"] / rec["f_w"]
    rec["r_r_ref"], rec["r_r_in"] = rec["e_r_ref"] / rec["f_r"], rec["e_r_in"] / rec["f_r"]
    rec["r_cpu"] = rec["e_cpu_gib"] / rec["f_cpu_mix"] if rec["f_cpu_mix"] else float("nan")
    wb, rb = measured["storage_write_bytes_in_window"], measured["storage_read_bytes_in_window"]
    rec["e_rw_in"] = (wb + rb) / GIB / mine["window_s"]
    rec["f_rw"] = (wb + rb) / GIB / (wb / GIB / w["gibps"] + rb / GIB / r["gibps"]) if wb + rb else float("nan")
    rec["r_rw_in"] = rec["e_rw_in"] / rec["f_rw"]
    print(f"rep {rep + 1}: engine {data['requests_completed']} requests in {mine['window_s']:.1f} s (process "
          f"{wall:.0f} s), {io['files_written']} files written ({io['file_bytes_written'] / GIB:.1f} GiB, mean "
          f"{io['file_bytes_written'] / max(1, io['files_written']) / 2**20:.0f} MiB), "
          f"{io['files_read']} reads ({io['file_bytes_read'] / GIB:.1f} GiB), {io['files_deleted']} LRU-deleted, "
          f"{len(sizes)} left ({sum(sizes) / GIB:.1f} GiB, {min(sizes) / 2**20:.0f}-{max(sizes) / 2**20:.0f} MiB, "
          f"mean {statistics.mean(sizes) / 2**20:.0f} MiB); write {rec['e_w_ref']:.3f} ref / {rec['e_w_in']:.3f} "
          f"in-window, read {rec['e_r_ref']:.3f} / {rec['e_r_in']:.3f} GiB/s | fio write {w['gibps']:.3f} GiB/s "
          f"({w['jobs']} jobs, {w['bytes'] / GIB:.1f} GiB), read {r['gibps']:.3f} GiB/s ({r['jobs']} jobs)",
          flush=True)
    if rep == 0:
        print(f"  fio write: {shown(wargv)}\n  fio read:  {shown(rargv)}", flush=True)
    return rec


def table(recs: list[dict]) -> None:
    def m(key: str, fmt: str = ".3f") -> str:
        vals = [r[key] for r in recs]
        med = format(statistics.median(vals), fmt)
        return med if len(vals) == 1 else f"{med} ({format(min(vals), fmt)}-{format(max(vals), fmt)})"

    rows = [
        ("storage write GiB/s, reference figure", m("e_w_ref"), m("f_w"), m("r_w_ref", ".2f")),
        ("storage write GiB/s, in-window", m("e_w_in"), m("f_w"), m("r_w_in", ".2f")),
        ("storage read GiB/s, reference figure", m("e_r_ref"), m("f_r"), m("r_r_ref", ".2f")),
        ("storage read GiB/s, in-window", m("e_r_in"), m("f_r"), m("r_r_in", ".2f")),
        ("storage read+write GiB/s, in-window (c)", m("e_rw_in"), m("f_rw"), m("r_rw_in", ".2f")),
        ("CPU s per GiB of storage I/O (a)", m("e_cpu_gib"), m("f_cpu_mix"), m("r_cpu", ".2f")),
        ("  fio writing only", "", m("f_cpu_w"), ""),
        ("  fio reading only", "", m("f_cpu_r"), ""),
        ("CPU s per request", m("e_cpu_req"), "", ""),
        ("peak RSS GiB", m("e_rss_gib", ".2f"), "", ""),
        ("engine-counted / OS-seen bytes: read (b)", m("e_os_r", ".2f"), "", ""),
        ("engine-counted / OS-seen bytes: write", m("e_os_w", ".2f"), "", ""),
    ]
    print(f"\nmedians of {len(recs)} interleaved repetition(s), (min-max) when more than one")
    print(f"{'':40} {'engine':24} {'fio':24} engine/fio")
    for name, eng, fio, ratio in rows:
        print(f"{name:40} {eng:24} {fio:24} {ratio}".rstrip())
    print("(a) the engine's: its process CPU over the bytes of its file reads and writes, data generation included; "
          "fio's: its write and read figures weighted by the engine's written and read bytes\n(b) the bytes of the "
          "engine's file reads and writes (run and drain) over its /proc/<pid>/io read_bytes and write_bytes\n(c) the "
          "engine reads and writes at once: fio's figure is the engine's in-window bytes over the time fio takes to "
          "write and read them at its GiB/s")
    print(REFERENCE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--closed-users", action="store_true", help=f"option 1's {OPTION.num_users} users per rank")
    parser.add_argument("--duration", type=float, default=20.0, help="the engine's window, seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path.home() / "mlps-slurm" / "kvcache-perf")
    parser.add_argument("--storage-capacity-gb", type=float, default=32.0,
                        help="the engine's storage tier limit (GiB); fio then writes at most as much")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.closed_users:
        args.users = OPTION.num_users
    if shutil.which("fio") is None:
        print("fio is not installed: install it with `apt-get install -y fio` (Debian/Ubuntu; `dnf install fio` on "
              "RHEL-likes), then run this again", file=sys.stderr)
        return 2
    created = not args.dir.exists()  # removed at the end when this run made it and left it empty
    kind = storage_under_test(args.dir)
    if kind is None:
        return 2
    version = subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"option 1 ({OPTION.model}), {args.users} users, {args.duration:g} s window, max-concurrent-allocs "
          f"{OPTION.max_concurrent_allocs}, storage limit {args.storage_capacity_gb:g} GiB, {args.dir} ({kind}); "
          f"{version}; {args.repeats} repetition(s): engine, fio write, fio read", flush=True)
    need = args.storage_capacity_gb * GIB + HEADROOM
    recs: list[dict] = []
    scratch = Path(tempfile.mkdtemp(prefix="kvcache-vs-fio-", dir=args.dir))
    try:
        for rep in range(args.repeats):
            st = os.statvfs(args.dir)
            free = st.f_bavail * st.f_frsize
            if free < need:
                print(f"skipped{' the rest' if recs else ''}: {free / GIB:.1f} GiB free in {args.dir}, this needs "
                      f"{need / GIB:.1f} GiB (the storage limit + {HEADROOM // GIB} GiB); lower "
                      "--storage-capacity-gb or free some space", flush=True)
                break
            recs.append(repetition(args, scratch, rep))
    except RuntimeError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if created and not any(args.dir.iterdir()):
            args.dir.rmdir()
    if recs:
        table(recs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
