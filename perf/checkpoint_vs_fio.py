"""The builtin checkpoint engine beside fio on the same files in the same directory, on one node: llama3-8b's shards
for R ranks (default 8, the CLOSED count) at --scale (default 0.01: 1.1 GB per checkpoint), repeated and
interleaved, medians printed.

Each repetition:
1. runs the engine (`mpirun -n R python -m mlps_slurm.benchmarks.checkpointing.job`, the module the checkpointing
   job runs under srun; 0 s between checkpoints) and takes from its engine.json each checkpoint's GB/s (the bytes of
   every rank over the slowest rank's duration, as the results report it) for the writes and the reads, and the
   per-rank file sizes (a model and an optimizer file each);
2. has fio write as many checkpoints of those files (each size rounded up to the MiB) in the same directory, one
   after the other and all kept, as the engine does: one fio run per checkpoint, one job per rank writing its model
   file then its optimizer file (file_service_type=sequential, openfiles=1), ioengine=psync, bs=1m (fio writes
   whole blocks only; the engine writes 16 MiB calls), end_fsync=1 (each file fsynced as it is finished, as the
   engine fsyncs each file), fallocate=none;
3. has fio read as many of them back, one checkpoint per fio run (rw=read, bs=1m) after invalidate=1
   (posix_fadvise DONTNEED on open: the engine drops the page cache of its files the same way before its reads).
fio's GB/s per checkpoint = the jobs' bytes / the longest job's runtime (its group figure: the slowest rank, like the
engine's); both sides print the mean over their checkpoints.
The engine's writes create new files (O_EXCL); fio overwrites sparse files of the same sizes (it allocates their
blocks as it writes). Target: the engine within 0.8-1.25 x fio for writes and for reads (the same storage work;
the engine adds MPI barriers between checkpoints and writes a pattern it shifts per chunk). Prints only; exits 0
when a target is missed, non-zero only on an error.

    .venv/bin/python perf/checkpoint_vs_fio.py [--ranks 8] [--scale 0.01] [--writes 5] [--reads 5] [--repeats 3]
        [--dir ~/mlps-slurm/checkpoint-perf]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kvcache_vs_fio import storage_under_test  # noqa: E402

MIB = 1 << 20
LOW, HIGH = 0.8, 1.25


def run_engine(args: argparse.Namespace, scratch: Path) -> dict:
    ckpt, out = scratch / "engine", scratch / "engine.json"
    ckpt.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMIX_", "OMPI_", "PMI_"))}
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = ["mpirun", "-n", str(args.ranks), "--oversubscribe", "--bind-to", "none", sys.executable, "-m",
           "mlps_slurm.benchmarks.checkpointing.job", "--model", "llama3-8b", "--checkpoint-dir", str(ckpt),
           "--output", str(out), "--writes", str(args.writes), "--reads", str(args.reads), "--scale",
           str(args.scale), "--seconds-between-checkpoints", "0"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"the engine exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    data = json.loads(out.read_text())
    shutil.rmtree(ckpt, ignore_errors=True)
    out.unlink()
    return data


def per_checkpoint(data: dict, phase: str) -> list[float]:
    """GB/s of each checkpoint of a phase: every rank's bytes over the slowest rank's duration."""
    rates = []
    for c in data["checkpoints"]:
        if c["phase"] == phase:
            rates.append(sum(r["bytes"] for r in c["ranks"]) / max(r["duration"] for r in c["ranks"]) / 1e9)
    return rates


def run_fio(argv: list[str], rw: str) -> tuple[float, int]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        raise RuntimeError(f"fio exited {proc.returncode}: {proc.stderr.strip()}")
    jobs = json.loads(proc.stdout[proc.stdout.index("{"):])["jobs"]
    nbytes = sum(j[rw]["io_bytes"] for j in jobs)
    return nbytes / (max(j["job_runtime"] for j in jobs) / 1000) / 1e9, nbytes


def fio_round(data: dict, scratch: Path, writes: int, reads: int) -> dict:
    """fio writes `writes` checkpoints one after the other (each one fio run into its own directory, all kept, as
    the engine keeps them), then reads `reads` of them back; GB/s per checkpoint, as for the engine."""
    root = scratch / "fio"
    root.mkdir()
    try:
        w, r, nbytes = [], [], 0
        for index in range(max(writes, reads)):
            d = root / f"ckpt_{index}"
            d.mkdir()
            jobs = []
            for rank in data["ranks"]:
                names = []
                for kind, key in (("model", "model_bytes"), ("optim", "optimizer_bytes")):
                    if rank[key] <= 0:
                        continue
                    name = f"rank_{rank['rank']}.{kind}.bin"
                    with open(d / name, "wb") as f:
                        f.truncate(-(-rank[key] // MIB) * MIB)
                    names.append(name)
                jobs += [f"--name=rank{rank['rank']}", "--filename=" + ":".join(names)]
            base = ["fio", "--output-format=json", f"--directory={d}", "--ioengine=psync", "--bs=1m",
                    "--file_service_type=sequential", "--openfiles=1"]
            rate, nbytes = run_fio(base + ["--rw=write", "--end_fsync=1", "--fallocate=none"] + jobs, "write")
            if index < writes:
                w.append(rate)
            (d / "jobs.json").write_text(json.dumps(jobs))
        for index in range(reads):
            d = root / f"ckpt_{index}"
            jobs = json.loads((d / "jobs.json").read_text())
            base = ["fio", "--output-format=json", f"--directory={d}", "--ioengine=psync", "--bs=1m",
                    "--file_service_type=sequential", "--openfiles=1"]
            r.append(run_fio(base + ["--rw=read", "--invalidate=1"] + jobs, "read")[0])
        return {"write": statistics.mean(w) if w else float("nan"), "read": statistics.mean(r) if r else float("nan"),
                "w_all": w, "bytes": nbytes}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--scale", type=float, default=0.01)
    parser.add_argument("--writes", type=int, default=5)
    parser.add_argument("--reads", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path.home() / "mlps-slurm" / "checkpoint-perf")
    args = parser.parse_args()
    for tool, hint in (("fio", "apt-get install -y fio"), ("mpirun", "Open MPI (bin/mlps-local-cluster up)")):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: {hint}, then run this again", file=sys.stderr)
            return 2
    created = not args.dir.exists()  # removed at the end when this run made it and left it empty
    kind = storage_under_test(args.dir)
    if kind is None:
        return 2
    version = subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"llama3-8b, {args.ranks} ranks on this node, scale {args.scale:g}, {args.writes} writes + {args.reads} "
          f"reads, {args.dir} ({kind}); {version}; {os.cpu_count()} CPU(s); {args.repeats} repetition(s)", flush=True)
    recs = []
    scratch = Path(tempfile.mkdtemp(prefix="checkpoint-vs-fio-", dir=args.dir))
    try:
        for rep in range(args.repeats):
            data = run_engine(args, scratch)
            ew, er = per_checkpoint(data, "write"), per_checkpoint(data, "read")
            f = fio_round(data, scratch, args.writes, args.reads)
            rec = {"e_w": statistics.mean(ew), "e_r": statistics.mean(er) if er else float("nan"),
                   "f_w": f["write"], "f_r": f["read"]}
            rec["r_w"], rec["r_r"] = rec["e_w"] / rec["f_w"], rec["e_r"] / rec["f_r"]
            recs.append(rec)
            total = sum(r["model_bytes"] + r["optimizer_bytes"] for r in data["ranks"])
            print(f"rep {rep + 1}: engine {total / 1e9:.3f} GB per checkpoint, write {rec['e_w']:.3f} GB/s (mean of "
                  f"{len(ew)}: {min(ew):.3f}-{max(ew):.3f}), read {rec['e_r']:.3f} GB/s | fio "
                  f"{f['bytes'] / 1e9:.3f} GB per checkpoint: write {rec['f_w']:.3f} GB/s (mean of {len(f['w_all'])}: "
                  f"{min(f['w_all']):.3f}-{max(f['w_all']):.3f}), read {rec['f_r']:.3f} GB/s", flush=True)
    except (RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if created and not any(args.dir.iterdir()):
            args.dir.rmdir()

    def m(key: str) -> str:
        vals = [r[key] for r in recs]
        return f"{statistics.median(vals):.3f} ({min(vals):.3f}-{max(vals):.3f})"

    print(f"\nmedians of {len(recs)} repetition(s) (min-max)")
    print(f"{'':18} {'engine GB/s':<24} {'fio GB/s':<24} {'engine/fio':<24} target")
    for phase, key in (("write", "w"), ("read", "r")):
        ratio = statistics.median(r[f"r_{key}"] for r in recs)
        verdict = "PASS" if LOW <= ratio <= HIGH else "MISS"
        print(f"{phase + ' (per ckpt)':18} {m('e_' + key):<24} {m('f_' + key):<24} {m('r_' + key):<24} "
              f"{LOW:g}-{HIGH:g}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
