"""`mlps-slurm report`: the click command (imports only click; the work is in mlps_slurm.report.commands)."""

from __future__ import annotations

import sys

import click

from mlps_slurm.cli.options import default_profile


@click.command()
@click.argument("target", metavar="RUN|SCHEDULE")
@click.option("--output", "-o", "-O", "output", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="report.html (the page, with its PNGs in report_files/ beside it) or report.png (every figure "
                   "in one image).")
@click.option("--force", is_flag=True, help="Replace an existing report of that name.")
@click.option("--db", type=click.Path(), default=None, metavar="PATH",
              help="For a schedule: the history database (default: the schedule's, else the profile's).")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="Where the schedules live (default: $MLPS_STATE_DIR, else ~/.local/state/mlps-slurm).")
@click.option("--profile", "profile_ref", default=default_profile, metavar="NAME|PATH",
              show_default="$MLPS_SLURM_PROFILE, else a profile named 'default', else localhost",
              help="Site profile by name or path (its storage.results_dir finds a run given by id).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one profile value (repeatable; -o is the output here).")
def report(target: str, output: str, force: bool, db: str | None, state_dir: str | None, profile_ref: str,
           overrides: tuple[str, ...]) -> None:
    """Draw a finalized run, or a schedule's runs over time, as an HTML page with PNG figures.

    RUN (a run directory or run id): throughput per checkpoint, AU per run and epoch, kv-cache metrics per trial,
    vectordb QPS, latency and recall per run, per-node disk and iowait from the host metrics, and the headline
    numbers. SCHEDULE (a schedule name): each metric over time across the schedule's finalized runs, with the
    regressions against the runs before each marked. Needs matplotlib: pip install 'mlps-slurm[plots]'.
    Exit status 0, or 2 for bad input.
    """
    from mlps_slurm.report.commands import report_command

    sys.exit(report_command(target, output, force, profile_ref, overrides, db, state_dir, click.echo,
                            lambda text: click.echo(text, err=True)))
