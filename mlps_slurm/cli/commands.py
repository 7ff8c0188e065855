"""The work behind the click commands, imported lazily by mlps_slurm.cli.main."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from mlps_slurm.chain import (ChainStatus, chain_status, create_run, describe_status, jobs_python, submit_chain,
                              wait_for_chain)
from mlps_slurm.engines.dlio import DlioUnsupported, require_dlio_checkpointing
from mlps_slurm.plan import CheckpointingRequest, PlanError, plan_checkpointing
from mlps_slurm.profile import ProfileError, load_profile
from mlps_slurm.render import TemplateError
from mlps_slurm.rundir import new_run_id, resolve_run
from mlps_slurm.slurm import SlurmError, SlurmUnreachable, get_backend

EXIT_USAGE, EXIT_SLURM, EXIT_FAILED = 2, 3, 1


def _error(message: str) -> None:
    click.echo(f"mlps-slurm: error: {message}", err=True)


def run_checkpointing(action: str, profile_ref: str, overrides: list[str], results_dir: str | None, wait: bool,
                      timeout: float, options: dict[str, Any]) -> int:
    if results_dir:
        overrides = [*overrides, f"storage.results_dir={Path(results_dir).resolve()}"]
    try:
        profile = load_profile(profile_ref, overrides)
        request = CheckpointingRequest(
            model=options["model"], num_processes=options["num_processes"], scale=options["scale"],
            num_checkpoints_write=options["writes"], num_checkpoints_read=options["reads"],
            seconds_between_checkpoints=options["seconds_between_checkpoints"], nodes=options["nodes"],
            engine=options["engine"] or profile.get("engines.checkpointing.engine"),
            keep_files=options["keep_files"])
        python = jobs_python(profile)
        results_root = Path(profile.get("storage.results_dir"))
        run_id = new_run_id("checkpointing")
        plan = plan_checkpointing(request, profile, run_id=run_id, run_dir=str(results_root / run_id),
                                  python=python)
        if request.engine == "dlio":
            require_dlio_checkpointing(python)
        backend = get_backend()
        if action == "submit":
            backend.ping()  # before anything is written: an unreachable Slurm leaves no run behind
        run = create_run(plan, profile, results_root)
    except (ProfileError, PlanError, TemplateError, DlioUnsupported) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except SlurmUnreachable as exc:
        _error(str(exc))
        return EXIT_SLURM
    for note in plan.notes:
        click.echo(f"note: {note}")
    if action == "render":
        click.echo(f"rendered {run.run_id} (nothing submitted): {run.path}")
        for script in sorted(run.scripts.iterdir()):
            click.echo(f"  {script}")
        return 0
    try:
        ids = submit_chain(run, backend)
    except SlurmUnreachable as exc:
        _error(str(exc))
        return EXIT_SLURM
    except SlurmError as exc:
        _error(f"{exc} (submitted jobs were cancelled and the run directory removed)")
        return EXIT_FAILED
    click.echo(f"submitted {run.run_id}: " + ", ".join(f"{k} {v}" for k, v in ids.items()))
    click.echo(f"run directory: {run.path}")
    if not wait:
        click.echo(f"follow it with: mlps-slurm status {run.path}")
        return 0
    return _wait_and_report(run, backend, timeout)


def _wait_and_report(run: Any, backend: Any, timeout: float) -> int:
    def progress(status: ChainStatus) -> None:
        states = ", ".join(f"{k} {s.state if s else '-'}" for k, _, s in status.jobs)
        click.echo(f"  {states}")

    try:
        status = wait_for_chain(run, backend, timeout, on_change=progress)
    except TimeoutError as exc:
        _error(f"{exc}; check later with: mlps-slurm status {run.path}")
        return EXIT_FAILED
    click.echo(describe_status(status), nl=False)
    return _outcome(status)


def _outcome(status: ChainStatus) -> int:
    results = status.run.results / "results.json"
    if not results.is_file():
        return EXIT_FAILED
    import json

    return 0 if json.loads(results.read_text()).get("status") == "success" else EXIT_FAILED


def show_status(ref: str, profile_ref: str, overrides: list[str], wait: bool, timeout: float) -> int:
    try:
        root = None
        if not Path(ref).exists():
            root = Path(load_profile(profile_ref, overrides).get("storage.results_dir"))
        run = resolve_run(ref, root)
    except (ProfileError, FileNotFoundError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    backend = get_backend()
    try:
        if wait:
            return _wait_and_report(run, backend, timeout)
        status = chain_status(run, backend)
    except SlurmUnreachable as exc:
        _error(str(exc))
        return EXIT_SLURM
    click.echo(describe_status(status), nl=False)
    return 0


def show_profile(name: str, overrides: list[str], origin: bool) -> int:
    try:
        profile = load_profile(name, overrides)
    except ProfileError as exc:
        _error(str(exc))
        return EXIT_USAGE
    width = max(len(k) for k in profile.values)
    for key, value in profile.values.items():
        line = f"{key:<{width}}  {value!r}"
        if origin:
            line += f"   # {profile.origins[key]}"
        click.echo(line)
    return 0
