"""`mlps-slurm history`: the click commands (imports only click; the work is in mlps_slurm.history.commands)."""

from __future__ import annotations

import sys
from typing import Any

import click

from mlps_slurm.cli.options import apply, profile_options


def _where(f: Any) -> Any:
    return apply([
        click.option("--db", type=click.Path(), default=None, metavar="PATH",
                     help="History database (default: the profile's history.db, else "
                          "<storage.results_dir>/history.sqlite)."),
        profile_options,
    ], f)


def _scan(f: Any) -> Any:
    return click.option("--no-scan", "no_scan", is_flag=True,
                        help="Do not record new finalized runs of the results directory first.")(f)


def _json(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document for scripts.")(f)


def _err(text: str) -> None:
    click.echo(text, err=True)


@click.group()
def history() -> None:
    """Finalized runs recorded in a local SQLite database, and regression verdicts between them.

    `list`, `show` and `compare` first record the finalized runs of the results directory the database does not
    hold yet. `compare` judges each metric by the runs' own spread (per checkpoint, scored run, trial or query
    run): regression, improvement or within noise. Exit status: 0, 6 when compare finds a regression (so a
    scheduled run can alert), 2 for bad input.
    """


@history.command("list")
@_where
@_scan
@click.option("--benchmark", default=None, help="Only runs of this benchmark.")
@click.option("--model", default=None, help="Only runs of this model (index type for vectordb).")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=50, show_default=True,
              help="Show at most this many runs (the newest).")
@_json
def history_list(db: str | None, profile_ref: str, overrides: tuple[str, ...], no_scan: bool, benchmark: str | None,
                 model: str | None, limit: int, as_json: bool) -> None:
    """The recorded runs, newest first: id, benchmark, model, finalized time, status, verdict, headline metric."""
    from mlps_slurm.history.commands import list_runs

    sys.exit(list_runs(profile_ref, overrides, db, not no_scan, benchmark, model, limit, as_json, click.echo, _err))


@history.command("show")
@click.argument("run")
@_where
@_scan
@_json
def history_show(run: str, db: str | None, profile_ref: str, overrides: tuple[str, ...], no_scan: bool,
                 as_json: bool) -> None:
    """One recorded run (a run id or run directory): digests, nodes, versions and every metric with its spread."""
    from mlps_slurm.history.commands import show_run

    sys.exit(show_run(run, profile_ref, overrides, db, not no_scan, as_json, click.echo, _err))


@history.command("compare")
@click.argument("first", metavar="A|RUN")
@click.argument("second", metavar="[B]", required=False)
@click.option("--baseline", default=None, metavar="last-N",
              help="Compare RUN with the N previous successful runs of its benchmark, model and request, pooled.")
@click.option("--any-request", is_flag=True, help="With --baseline: also pool runs asked with another request.")
@click.option("--min-change", type=click.FloatRange(min=0), default=5.0, show_default=True, metavar="PCT",
              help="A change smaller than this (percent) is never flagged, however steady the samples.")
@_where
@_scan
@_json
def history_compare(first: str, second: str | None, baseline: str | None, any_request: bool, min_change: float,
                    db: str | None, profile_ref: str, overrides: tuple[str, ...], no_scan: bool,
                    as_json: bool) -> None:
    """Compare run B with run A (the baseline), or RUN with --baseline last-N: per metric the change and a verdict
    (regression, improvement, within noise). Exit status 6 when any metric regressed, else 0 (2 for bad input).

    A, B and RUN are run ids or run directories."""
    from mlps_slurm.history.commands import compare_runs

    sys.exit(compare_runs(first, second, baseline, any_request, min_change, profile_ref, overrides, db, not no_scan,
                          as_json, click.echo, _err))


@history.command("ingest")
@click.argument("paths", nargs=-1)
@_where
def history_ingest(paths: tuple[str, ...], db: str | None, profile_ref: str, overrides: tuple[str, ...]) -> None:
    """Record finalized runs: PATHS are run directories or directories of runs (default: the results directory).
    Recording a run again replaces its record; a run not finalized is skipped with the reason."""
    from mlps_slurm.history.commands import ingest_runs

    sys.exit(ingest_runs(paths, profile_ref, overrides, db, click.echo, _err))
