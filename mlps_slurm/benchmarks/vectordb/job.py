"""Entry point of the vectordb jobs' steps: `python -m mlps_slurm.benchmarks.vectordb.job STEP ...`.

    serve    the embedded Milvus server of this job (background; see server.py)
    load     insert, index and ground truth (load job, batch host)
    prepare  / query / collect: one timed run (run job array task; query runs on every query process)

Every step reads the request and settings from the run's manifest. A failure exits 1 and leaves
engine_error*.json in its output directory with the step, the host and the error (never a token).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

from mlps_slurm.benchmarks.vectordb import connect


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlps_slurm.benchmarks.vectordb.job")
    sub = p.add_subparsers(dest="step", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--data-dir", required=True)
    s.add_argument("--run-id", required=True)
    s.add_argument("--state-root", required=True)
    s.add_argument("--port-base", type=int, default=19530)
    s.add_argument("--start-timeout", type=float, default=300.0)
    for name in ("load", "prepare", "query", "collect"):
        s = sub.add_parser(name)
        connect.add_arguments(s)
        s.add_argument("--collection", required=True)
        s.add_argument("--run-dir", required=True)
        if name == "load":
            s.add_argument("--output-dir", required=True)
            s.add_argument("--index-timeout", type=float, default=7200.0)
        else:
            s.add_argument("--output-root", required=True)
            s.add_argument("--task", type=int, required=True)
        if name == "prepare":
            s.add_argument("--load-timeout", type=float, default=7200.0)
    return p


def _record(run_dir: str) -> dict[str, Any]:
    """The run's request and settings; a damaged manifest is a ValueError naming it."""
    from mlps_slurm.rundir import ManifestError, RunDirectory, run_record

    try:
        return run_record(RunDirectory(Path(run_dir)).read_manifest())
    except ManifestError as exc:
        raise ValueError(str(exc)) from None


def _fail(out: Path, name: str, step: str, error: str, **extra: Any) -> int:
    print(f"mlps-slurm vectordb {step}: {error}", file=sys.stderr, flush=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps({"during": step, "host": socket.gethostname(), "error": error,
                                            **extra}, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        print(f"mlps-slurm vectordb {step}: cannot record the error in {out}: {exc}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.step == "serve":
        from mlps_slurm.benchmarks.vectordb.server import serve

        return serve(args.data_dir, args.run_id, args.state_root, args.port_base, args.start_timeout)

    from mlps_slurm.benchmarks.vectordb import load, runs

    if args.step == "load":
        out, error_file, extra = Path(args.output_dir), "engine_error.json", {}
    else:
        out = runs.leaf(args.output_root, args.task)
        rank = runs.rank_and_size(0)[0]
        error_file = f"engine_error_rank_{rank}.json" if args.step == "query" else "engine_error.json"
        extra = {"rank": rank} if args.step == "query" else {}
    try:
        record = settings = _record(args.run_dir)
        size = size_of_run(record)
        out.mkdir(parents=True, exist_ok=True)
        ep = connect.endpoint(args)
        client = connect.client(ep)
        if args.step == "load":
            summary = load.run(client, ep, record, settings, out, args.index_timeout)
            load.write_json(out / "summary.json", summary)
            print(f"loaded {summary['num_vectors']} vectors in {summary['insert_s']:.1f} s, "
                  f"{summary['index_type']} index built in {summary['index_build_s']:.1f} s", flush=True)
        elif args.step == "prepare":
            done = runs.prepare(client, settings, out, args.load_timeout, ep.server_times)
            print(f"run {args.task}: collection loaded in {done['load_s']:.1f} s", flush=True)
        elif args.step == "query":
            runs.query(client, settings, record, out, rank, size, out.parent.parent / "datagen" / "queries.npy")
        else:
            s = runs.collect(client, settings, record, out, out.parent.parent / "datagen", size)
            print(f"run {args.task}: {s['throughput_qps']:.1f} queries/s from {s['query_processes']} process(es), "
                  f"p95 {s['latency_ms']['p95']:.2f} ms, recall@{s['recall_k']} {s['recall']:.4f}", flush=True)
    except (connect.MilvusUnavailable, load.LoadError, OSError, ValueError, KeyError) as exc:
        text = str(exc) if str(exc) else type(exc).__name__
        return _fail(out, error_file, args.step, locals().get("ep").redact(text) if "ep" in locals() else text,
                     **extra)
    except Exception as exc:  # a search or insert error from the server
        ep = locals().get("ep")
        text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return _fail(out, error_file, args.step, ep.redact(text) if ep else text, **extra)
    return 0


def size_of_run(record: dict[str, Any]) -> int:
    size = record.get("num_query_processes")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"settings.num_query_processes {size!r} in the manifest is not a whole number >= 1")
    return size


if __name__ == "__main__":
    sys.exit(main())
