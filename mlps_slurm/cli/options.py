"""Click options shared by the benchmark commands (imports only click: `--help` stays instant)."""

from __future__ import annotations

from typing import Any, Callable

import click


def apply(options: list[Callable[[Any], Any]], f: Any) -> Any:
    """Apply decorators so they appear in --help in the order listed."""
    for option in reversed(options):
        f = option(f)
    return f


def default_profile() -> str:
    """Resolved when a command runs, not at import: --help stays instant."""
    from mlps_slurm.profile import default_profile_ref

    return default_profile_ref()


def profile_options(f: Any) -> Any:
    return apply([
        click.option("--profile", "profile_ref", default=default_profile, metavar="NAME|PATH",
                     show_default="$MLPS_SLURM_PROFILE, else a profile named 'default', else localhost",
                     help="Site profile by name (see `mlps-slurm profiles list`) or path to a YAML file."),
        click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override one profile value, e.g. -o nodes.count=2 (repeatable)."),
    ], f)


def results_dir_option(f: Any) -> Any:
    return click.option("--results-dir", type=click.Path(file_okay=False), default=None,
                        help="Where to create the run directory (default: the profile's storage.results_dir).")(f)


def submit_options(default_timeout: float) -> Callable[[Any], Any]:
    """--wait, --timeout and --test-only of every `submit BENCHMARK`."""
    def decorate(f: Any) -> Any:
        return apply([
            click.option("--wait", is_flag=True, help="Stay until the chain ends, then print the results."),
            click.option("--timeout", type=click.FloatRange(min=1), default=default_timeout, show_default=True,
                         help="With --wait: give up waiting after this many seconds (the chain keeps running)."),
            click.option("--test-only", is_flag=True, help="Ask Slurm (sbatch --test-only) when and where each job "
                                                           "would start; queue nothing and keep no run directory."),
        ], f)
    return decorate


def json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON document on stdout for scripts (run id, run directory, job ids; with "
                             "--wait also the exit code and results); the messages go to stderr.")(f)
