"""The `mlps-slurm` command line."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click

from mlps_slurm.cli.derived import BenchmarkGroup, ContributedGroup
from mlps_slurm.cli.history import history
from mlps_slurm.cli.options import profile_options
from mlps_slurm.cli.report import report
from mlps_slurm.cli.schedule import schedule

EXIT_USAGE, EXIT_SLURM = 2, 3


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"mlps-slurm: error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="mlps-slurm", prog_name="mlps-slurm")
def main() -> None:
    """Run the MLPerf Storage v3.0 benchmarks as Slurm job chains.

    `submit` renders batch scripts from a site profile and submits a chain: a preflight job that checks every
    node, the benchmark job(s), and a finalize job that turns the engine output into results. You can log out;
    Slurm drives the chain. `status RUN` shows where it is.
    """


@main.group(cls=BenchmarkGroup, action="render")
def render() -> None:
    """Write a run directory with the scripts and manifest; submit nothing."""


@main.group(cls=BenchmarkGroup, action="submit")
def submit() -> None:
    """Render a run and submit its chain: preflight -> benchmark -> finalize."""


@main.group(cls=ContributedGroup)
def datasize() -> None:
    """Dataset sizes the MLPerf Storage rules require."""


main.add_command(history)
main.add_command(schedule)
main.add_command(report)


@main.command()
@profile_options
@click.option("--nodes", "-N", type=click.IntRange(min=1), default=None,
              help="Nodes to check (default: the profile's nodes.count).")
@click.option("--results-dir", type=click.Path(file_okay=False), default=None,
              help="Where to create the run directory (default: the profile's storage.results_dir).")
@click.option("--wait", is_flag=True, help="Wait for the report and print it.")
@click.option("--timeout", type=click.FloatRange(min=1), default=1800, show_default=True,
              help="With --wait: give up waiting after this many seconds (the job keeps running).")
def preflight(profile_ref: str, overrides: tuple[str, ...], nodes: int | None, results_dir: str | None,
              wait: bool, timeout: float) -> None:
    """Submit only the preflight: check every node of an allocation (for admins)."""
    from mlps_slurm.cli.commands import run_preflight_only

    sys.exit(run_preflight_only(profile_ref, list(overrides), nodes, results_dir, wait, timeout))


@main.command()
@click.argument("run", required=False)
@profile_options
@click.option("--wait", is_flag=True, help="Wait until the chain ends, then print its results.")
@click.option("--timeout", type=click.FloatRange(min=1), default=3600, show_default=True,
              help="With --wait: give up waiting after this many seconds (the chain keeps running).")
@click.option("--watch", is_flag=True, help="Refresh every 5 s (in place on a terminal) until the chain ends.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: every job and array task, the results.")
def status(run: str | None, profile_ref: str, overrides: tuple[str, ...], wait: bool, timeout: float, watch: bool,
           as_json: bool) -> None:
    """Show each job of RUN's chain (state, reason, nodes, start, elapsed) and the results once finalized; without
    RUN, the recent runs under the profile's storage.results_dir.

    RUN is a run directory or a run id. Exit status: 0 the chain succeeded, 1 it failed, 5 it is still pending or
    running (2 bad input, 3 Slurm unreachable). Slurm calls per refresh: one squeue for the chain's jobs and at
    most one accounting query, whatever the number of jobs.
    """
    if wait and run is not None and not (watch or as_json):
        from mlps_slurm.cli.commands import show_status

        sys.exit(show_status(run, profile_ref, list(overrides), wait, timeout))
    from mlps_slurm.cli.status import show

    sys.exit(show(run, profile_ref, list(overrides), as_json, watch or wait))


@main.command()
@click.argument("run")
@profile_options
@click.option("--json", "as_json", is_flag=True, help="Print what was cancelled as one JSON document.")
def cancel(run: str, profile_ref: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Cancel RUN's chain: every job that has not ended, the finalize included; the run directory records it."""
    from mlps_slurm.cli.status import cancel_run

    sys.exit(cancel_run(run, profile_ref, list(overrides), as_json))


@main.command()
@click.argument("run")
@profile_options
@click.option("--dry-run", is_flag=True, help="Print what would run again and what is kept; submit nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the resume (jobs, tasks, new job ids) as JSON.")
def resume(run: str, profile_ref: str, overrides: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Run again only what did not complete in RUN's ended chain: a new preflight, the failed or cancelled jobs
    and array tasks, and a new finalize, in the same run directory. What completed is kept; what the failed
    attempt left is moved to attempts/<n>/."""
    from mlps_slurm.cli.status import resume_run

    sys.exit(resume_run(run, profile_ref, list(overrides), dry_run, as_json))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--output", "-O", type=click.Path(file_okay=False), default=None,
              help="Write verify.json and verify.txt into this directory (default: write nothing).")
@click.option("--submission/--runs", "submission", default=None,
              help="Also apply the submission-level rules (default: when the paths hold several runs).")
@click.option("--allow-invalid", is_flag=True, help="Exit 0 when the verdict is INVALID (every run has a result).")
def verify(paths: tuple[str, ...], output: str | None, submission: bool | None, allow_invalid: bool) -> None:
    """Check runs against the MLPerf Storage rules: CLOSED, OPEN or INVALID, with the rule that decided.

    PATHS are run directories, directories of runs, or a submission tree; they are only read. Every run not used
    is listed with the reason. Exit status: 0 CLOSED or OPEN; 4 INVALID (0 with --allow-invalid); 1 a run the
    chain planned has no usable result, or no run was found.
    """
    from mlps_slurm.verify import verify_command

    sys.exit(verify_command(list(paths), output, submission, echo=click.echo, allow_invalid=allow_invalid))


@main.command()
@click.argument("runs", nargs=-1, type=click.Path(exists=True))
@click.option("--org", default=None, help="Submitting organization (default: the profile's submission.organization).")
@click.option("--system", default=None, help="System name (default: the profile's submission.system).")
@click.option("--output", "-O", type=click.Path(), default=None,
              help="New directory for the submission tree and tarball (default: ./mlps-submission-<time>).")
@click.option("--allow-invalid", is_flag=True, help="Bundle INVALID runs too, under invalid/ (never closed/open).")
@click.option("--check", "check", type=click.Path(exists=True), default=None, metavar="TARBALL|DIR",
              help="Verify a bundle (its tarball, or its directory tree): every checksum, then the rules on the "
                   "bundled runs.")
@profile_options
def bundle(runs: tuple[str, ...], org: str | None, system: str | None, output: str | None, allow_invalid: bool,
           check: str | None, profile_ref: str, overrides: tuple[str, ...]) -> None:
    """Build the MLPerf Storage submission tree, SHA256SUMS and a tarball from RUNS; or --check a tarball."""
    from mlps_slurm.cli.commands import bundle_runs

    sys.exit(bundle_runs(list(runs), org, system, output, allow_invalid, check, profile_ref, list(overrides)))


@main.group()
def lockfile() -> None:
    """Pin the jobs' Python environment and check an environment against the pins."""


@lockfile.command("generate")
@click.option("--output", "-O", type=click.Path(dir_okay=False), default="mlps-slurm.lock", show_default=True,
              help="The lockfile to write (an existing one only with --force).")
@click.option("--from", "requirements_in", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Resolve this requirements file (uv pip compile, else pip's resolver) instead of pinning the "
                   "installed environment.")
@click.option("--force", is_flag=True, help="Replace an existing lockfile.")
def lockfile_generate(output: str, requirements_in: str | None, force: bool) -> None:
    """Write a requirements.txt-style lockfile of this interpreter's environment (or of --from)."""
    from mlps_slurm.cli.commands import generate_lockfile

    if os.path.lexists(output) and not force:
        click.echo(f"mlps-slurm: error: {output} exists; lockfiles are not overwritten: choose another -O or add "
                   "--force", err=True)
        sys.exit(2)
    sys.exit(generate_lockfile(output, requirements_in))


@lockfile.command("verify")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def lockfile_verify(path: str) -> None:
    """Compare this interpreter's packages with lockfile PATH (mpi4py and VCS pins are reported, not compared)."""
    from mlps_slurm.cli.commands import verify_lockfile

    sys.exit(verify_lockfile(path))


@main.group()
def profiles() -> None:
    """List and show site profiles."""


@profiles.command("list")
def profiles_list() -> None:
    """List the profiles found in the search path (later directories win)."""
    from mlps_slurm.profile import list_profiles

    for name, path in sorted(list_profiles().items()):
        click.echo(f"{name:<20} {path}")


@profiles.command("show")
@click.argument("name", required=False)
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one profile value, e.g. -o nodes.count=2 (repeatable).")
@click.option("--resolved", is_flag=True, help="Print every resolved value (defaults included) instead of the file.")
@click.option("--origin", is_flag=True, help="With --resolved: also say where each value came from.")
def profiles_show(name: str | None, overrides: tuple[str, ...], resolved: bool, origin: bool) -> None:
    """Print profile NAME (a name or a path): the file, or with --resolved every value. Without NAME, the profile
    in force without --profile, and why (on stderr)."""
    from mlps_slurm.cli.commands import show_profile

    sys.exit(show_profile(name, list(overrides), resolved or origin or bool(overrides), origin))


@profiles.command("validate")
@click.argument("path")
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one profile value, e.g. -o nodes.count=2 (repeatable).")
@click.option("--live", is_flag=True, help="Also check it against the running cluster (partitions, limits, "
                                           "accounts, paths).")
def profiles_validate(path: str, overrides: tuple[str, ...], live: bool) -> None:
    """Check profile PATH (or name): exit 0 when valid, 2 with the file, key, line and fix when not."""
    from mlps_slurm.cli.commands import validate_profile

    sys.exit(validate_profile(path, list(overrides), live))


@profiles.command("init")
@click.option("--from-cluster", is_flag=True, help="Fill partition, node count, CPUs and memory from sinfo.")
@click.option("--name", default=None, help="Name of the new profile (default: the --output file's name without "
                                            ".yaml, else mysite); it must match the file's name.")
@click.option("--output", "-O", type=click.Path(dir_okay=False), default=None,
              help="Write to this file (refuses to overwrite) instead of standard output.")
def profiles_init(from_cluster: bool, name: str | None, output: str | None) -> None:
    """Write a starting profile: every key with its default and meaning, or values read from the cluster."""
    from pathlib import Path

    from mlps_slurm.cli.commands import init_profile

    # A profile's name must be its file's name (users pick it by the file name): follow --output by default.
    if name and output and Path(output).stem != name:
        raise click.BadParameter(f"the profile would be named {name!r} in {output}: use --output {name}.yaml, or "
                                 "leave --name out", param_hint="--name")
    sys.exit(init_profile(from_cluster, name or (Path(output).stem if output else "mysite"), output))


if __name__ == "__main__":
    main()
