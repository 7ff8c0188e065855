"""`mlps-slurm schedule add|list|remove|fire`: repeat runs from scrontab or crontab (mlps_slurm/schedule.py does the
work; this module parses, calls and prints)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

EXIT_USAGE, EXIT_SLURM, EXIT_REGRESSION = 2, 3, 6


def _error(message: str) -> None:
    click.echo(f"mlps-slurm: error: {message}", err=True)


def _state(state_dir: str | None) -> Path:
    from mlps_slurm.schedule import state_dir as default_state

    return Path(state_dir) if state_dir else default_state()


def _profile_of(argv: list[str]) -> tuple[str, list[str]]:
    """The profile and overrides the scheduled submission names (the firing job runs where that profile says)."""
    from mlps_slurm.profile import default_profile_ref

    profile, overrides = default_profile_ref(), []
    for i, arg in enumerate(argv[:-1]):
        if arg == "--profile":
            profile = argv[i + 1]
        elif arg in ("-o", "--set"):
            overrides.append(argv[i + 1])
    for arg in argv:
        if arg.startswith("--profile="):
            profile = arg.split("=", 1)[1]
    return profile, overrides


def firing_job_options(argv: list[str]) -> tuple[list[str], str]:
    """#SCRON options of the firing job (the partition, account and QoS the profile gives small jobs) and the
    profile's history database (empty: beside the runs)."""
    from mlps_slurm.profile import load_profile

    profile = load_profile(*_profile_of(argv))
    partition = profile.get("slurm.partitions.finalize") or profile.get("slurm.partition")
    options = []
    for flag, value in (("--partition", partition), ("--account", profile.get("slurm.account")),
                        ("--qos", profile.get("slurm.qos"))):
        if value:
            options.append(f"{flag}={value}")
    return options, str(profile.get("history.db") or "")


@click.group()
def schedule() -> None:
    """Repeat a submission on a schedule (scrontab where the cluster has it, else crontab)."""


STATE_OPTION = click.option("--state-dir", type=click.Path(file_okay=False), default=None,
                            help="Where schedules live (default: $MLPS_STATE_DIR, else ~/.local/state/mlps-slurm).")


@schedule.command("add")
@click.argument("name")
@click.option("--cron", required=True, metavar='"M H DOM MON DOW"', help='When, in cron syntax: "0 2 * * 0" is '
              "Sundays at 02:00.")
@click.option("--keep", type=click.IntRange(min=1), default=None,
              help="Keep only this schedule's N newest runs (older ones are removed once their chain ended).")
@click.option("--baseline", type=click.IntRange(min=1), default=5, show_default=True,
              help="Each firing judges the previous run against this many runs before it (exit 6 on a "
                   "regression).")
@click.option("--backend", type=click.Choice(["scrontab", "crontab"]), default=None,
              help="Default: scrontab where the cluster enables it, else crontab on this host.")
@STATE_OPTION
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def schedule_add(name: str, cron: str, keep: int | None, baseline: int, backend: str | None, state_dir: str | None,
                 command: tuple[str, ...]) -> None:
    """Add schedule NAME: submit COMMAND (given after `--`) at each --cron time.

    \b
      mlps-slurm schedule add weekly --cron "0 2 * * 0" --keep 8 -- submit all --profile mysite

    Each firing skips, and records why, while the schedule's previous run is still queued or running."""
    from mlps_slurm.profile import ProfileError
    from mlps_slurm.schedule import ScheduleError, add, check_argv

    argv = [a for a in command if a != "--"]
    try:
        check_argv(argv)
        options, history_db = firing_job_options(argv)
        spec = add(_state(state_dir), name, cron, argv, keep, backend, options, baseline=baseline,
                   history_db=history_db)
    except (ScheduleError, ProfileError) as exc:
        _error(str(exc))
        sys.exit(EXIT_USAGE)
    except OSError as exc:
        _error(f"{exc.filename or ''}: {exc.strerror or exc}")
        sys.exit(EXIT_USAGE)
    click.echo(f"schedule {spec.name}: `mlps-slurm {' '.join(spec.argv)}` at \"{spec.cron}\" ({spec.backend}"
               f"{f', keeping {spec.keep} runs' if spec.keep else ''})")


@schedule.command("list")
@STATE_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
def schedule_list(state_dir: str | None, as_json: bool) -> None:
    """The schedules, each with its last firing."""
    from mlps_slurm.schedule import ScheduleError, listing

    try:
        rows = listing(_state(state_dir))
    except ScheduleError as exc:
        _error(str(exc))
        sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(json.dumps({"schedules": rows}, indent=1))
        return
    if not rows:
        click.echo("no schedules")
        return
    for row in rows:
        if "problem" in row:
            click.echo(f"{row['name']}: {row['problem']}")
            continue
        last: dict[str, Any] = row["last"]
        what = f"last {last.get('action')} {last.get('at')} {last.get('run_id') or last.get('reason') or ''}" \
            if last else "not fired yet"
        click.echo(f"{row['name']:<16} {row['cron']:<15} {row['backend']:<8} runs {row['runs']:<4} {what}".rstrip())
        click.echo(f"{'':<16} mlps-slurm {row['command']}")


@schedule.command("remove")
@click.argument("name")
@STATE_OPTION
def schedule_remove(name: str, state_dir: str | None) -> None:
    """Remove schedule NAME's entry and its spec; its runs stay."""
    from mlps_slurm.schedule import ScheduleError, remove

    try:
        remove(_state(state_dir), name)
    except ScheduleError as exc:
        _error(str(exc))
        sys.exit(EXIT_USAGE)
    click.echo(f"removed schedule {name}")


@schedule.command("fire")
@click.argument("name")
@STATE_OPTION
def schedule_fire(name: str, state_dir: str | None) -> None:
    """What the scrontab/crontab entry runs: submit unless the previous run is still active (then record a skip)."""
    from mlps_slurm.schedule import ScheduleError, fire
    from mlps_slurm.slurm import SlurmError

    try:
        entry = fire(_state(state_dir), name)
    except ScheduleError as exc:
        _error(str(exc))
        sys.exit(EXIT_USAGE)
    except SlurmError as exc:
        _error(str(exc))
        sys.exit(EXIT_SLURM)
    click.echo(json.dumps(entry))
    previous = entry.get("previous") or {}
    if previous.get("regressed"):
        click.echo(f"mlps-slurm: regression: {previous['run_id']} is slower than the runs before it: "
                   + ", ".join(f"{m['metric']} {m['change'] * 100:+.1f} %" for m in previous.get("metrics", [])
                               if m["verdict"] == "regression" and m.get("change") is not None), err=True)
        sys.exit(EXIT_REGRESSION)
    sys.exit(1 if entry["action"] == "failed" else 0)
