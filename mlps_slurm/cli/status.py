"""`mlps-slurm status [RUN]`: one chain's jobs and array tasks (state, reason, nodes, start, elapsed), refreshed in
place with --watch, as JSON with --json; without RUN the recent runs, one line each. The exit status is the
chain's state (chain.STATUS_EXIT)."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from mlps_slurm.chain import STATUS_EXIT, cancel_chain, chain_status, describe_status, status_record, tidy_cancelled
from mlps_slurm.profile import ProfileError, load_profile
from mlps_slurm.rundir import ManifestError, RunDirectory, read_json, resolve_run
from mlps_slurm.slurm import SlurmError, SlurmUnreachable, get_backend

EXIT_USAGE, EXIT_SLURM = 2, 3
WATCH_INTERVAL_S = 5.0
RECENT = 20


def _error(message: str) -> None:
    click.echo(f"mlps-slurm: error: {message}", err=True)


def show(ref: str | None, profile_ref: str, overrides: list[str], as_json: bool, watch: bool) -> int:
    try:
        root = Path(load_profile(profile_ref, overrides).get("storage.results_dir")) \
            if ref is None or not Path(ref).exists() else None
        if ref is None:
            return recent_runs(root, as_json)  # type: ignore[arg-type]
        run = resolve_run(ref, root)
    except (ProfileError, OSError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    backend = get_backend()
    tty = sys.stdout.isatty()
    last = None
    while True:
        try:
            status = chain_status(run, backend)
        except SlurmUnreachable as exc:
            _error(str(exc))
            return EXIT_SLURM
        except (ManifestError, OSError, KeyError) as exc:
            _error(f"{run.manifest_path}: {exc}" if isinstance(exc, KeyError) else str(exc))
            return EXIT_USAGE
        text = json.dumps(status_record(status), indent=1) + "\n" if as_json else describe_status(status)
        if not watch:
            click.echo(text, nl=False)
            return STATUS_EXIT[status.state]
        if text != last:
            if tty and not as_json:
                click.echo("\x1b[H\x1b[2J", nl=False)  # refresh in place on a terminal; a log gets each change
            click.echo(text, nl=False)
            last = text
        if status.finished:
            return STATUS_EXIT[status.state]
        time.sleep(WATCH_INTERVAL_S)


def _age(path: Path) -> str:
    seconds = max(0, int(time.time() - path.stat().st_mtime))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def recent_runs(root: Path, as_json: bool) -> int:
    """The newest runs under the results directory, from their own files (no Slurm call): id, benchmark, state
    (the manifest's, or the finalize's status), verdict, age. A directory that is not a readable run is listed as
    such, never a traceback."""
    try:
        entries = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                          and (p / "manifest.json").exists()),  # a run directory has a manifest, readable or not
                         key=lambda p: p.stat().st_mtime, reverse=True)[:RECENT]
    except OSError as exc:
        _error(f"{root}: cannot list runs ({exc.strerror or exc})")
        return EXIT_USAGE
    rows = []
    for path in entries:
        run = RunDirectory(path)
        row: dict[str, Any] = {"run_id": path.name, "run_dir": str(path), "age": _age(path)}
        try:
            manifest = run.read_manifest()
            row["benchmark"] = manifest.get("benchmark")
            row["state"] = manifest.get("state", "?")
            results = read_json(run.results_json) if run.results_json.is_file() else None
            if isinstance(results, dict):
                row["state"] = str(results.get("status", row["state"]))
                row["verdict"] = results.get("verdict")
        except (OSError, ValueError, ManifestError) as exc:
            row.update(benchmark=None, state="unreadable", problem=str(exc))
        rows.append(row)
    if as_json:
        click.echo(json.dumps({"results_dir": str(root), "runs": rows}, indent=1))
        return 0
    if not rows:
        click.echo(f"no runs under {root}")
        return 0
    width = max(len(r["run_id"]) for r in rows)
    click.echo(f"{'run':<{width}}  {'benchmark':<13} {'state':<11} {'verdict':<8} age")
    for r in rows:
        click.echo(f"{r['run_id']:<{width}}  {str(r.get('benchmark') or '-'):<13} {r['state']:<11} "
                   f"{str(r.get('verdict') or '-'):<8} {r['age']}")
    return 0


def cancel_run(ref: str, profile_ref: str, overrides: list[str], as_json: bool) -> int:
    try:
        root = Path(load_profile(profile_ref, overrides).get("storage.results_dir")) if not Path(ref).exists() \
            else None
        run = resolve_run(ref, root)
        backend = get_backend()
        cancelled = cancel_chain(run, backend)
        # the partial data the cancelled jobs leave on the storage under test, once they have ended
        tidied = tidy_cancelled(run, backend) if cancelled else []
    except SlurmUnreachable as exc:
        _error(str(exc))
        return EXIT_SLURM
    except (ProfileError, ManifestError, OSError, KeyError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    if as_json:
        click.echo(json.dumps({"run_id": run.run_id, "run_dir": str(run.path), "cancelled": cancelled,
                               "tidied": tidied}, indent=1))
    elif cancelled:
        click.echo(f"cancelled {', '.join(cancelled)} of {run.run_id}; recorded in {run.manifest_path}")
        for line in tidied:
            click.echo(f"  {line}")
    else:
        click.echo(f"nothing to cancel: every job of {run.run_id} has ended")
    return 0


def resume_run(ref: str, profile_ref: str, overrides: list[str], dry_run: bool, as_json: bool) -> int:
    from mlps_slurm.resume import ResumeError, resume_chain

    run: RunDirectory | None = None
    try:
        root = Path(load_profile(profile_ref, overrides).get("storage.results_dir")) if not Path(ref).exists() \
            else None
        run = resolve_run(ref, root)
        plan = resume_chain(run, get_backend(), dry_run=dry_run)
    except SlurmUnreachable as exc:
        _error(str(exc))
        return EXIT_SLURM
    except SlurmError as exc:
        _error(f"{exc}; nothing was resumed (the run directory is as it was)")
        return EXIT_SLURM
    except (ResumeError, ProfileError, ManifestError, OSError, KeyError) as exc:
        if isinstance(exc, KeyError) and run is not None:
            _error(f"{run.manifest_path}: no {exc} entry; the manifest is damaged and the run cannot be resumed")
        else:
            _error(str(exc))
        return EXIT_USAGE
    assert run is not None
    if as_json:
        click.echo(json.dumps({"run_id": run.run_id, "run_dir": str(run.path), "dry_run": dry_run,
                               **plan.record()}, indent=1))
        return 0
    click.echo(plan.describe())
    if dry_run:
        click.echo("dry run: nothing submitted")
    else:
        click.echo("submitted " + ", ".join(f"{k} {i}" for k, i in plan.job_ids.items())
                   + f"\nfollow it with: mlps-slurm status {run.path}")
    return 0


__all__ = ["show", "recent_runs", "cancel_run", "resume_run", "dt"]
