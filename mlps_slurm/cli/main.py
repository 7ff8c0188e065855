"""The `mlps-slurm` command line."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from mlps_slurm.cli.options import apply, profile_options, results_dir_option, submit_options
from mlps_slurm.cli.training import datasize, render_training, submit_training

# Kept here (not imported from the catalog) so `--help` does not import the work; a unit test checks that they
# match mlps_slurm.benchmarks.checkpointing.catalog.LLAMA3_MODELS.
CHECKPOINT_MODELS = ("llama3-8b", "llama3-70b", "llama3-405b", "llama3-1t")
ACCELERATORS = ("b200", "mi355", "h100", "a100")
EXIT_USAGE, EXIT_SLURM = 2, 3


class BenchmarkGroup(click.Group):
    """A group whose unknown-subcommand error lists the valid benchmarks."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and name not in self.commands and not name.startswith("-"):
            ctx.fail(f"unknown benchmark {name!r}; valid benchmarks: {', '.join(sorted(self.commands))}")
        return super().resolve_command(ctx, args)


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"mlps-slurm: error: {message}", err=True)
    sys.exit(code)


def checkpointing_options(f: Any) -> Any:
    options = [
        click.option("--model", required=True, type=click.Choice(CHECKPOINT_MODELS),
                     help="Llama 3 checkpoint workload."),
        click.option("--accelerator", type=click.Choice(ACCELERATORS), default="b200", show_default=True,
                     help="Simulated accelerator (its memory bounds the checkpoint size per rank; h100/a100 are "
                          "what-if only)."),
        click.option("--num-processes", "-n", type=click.IntRange(min=1), default=None,
                     help="MPI ranks (default: the CLOSED count of the model: 8/64/512/1024)."),
        click.option("--nodes", "-N", type=click.IntRange(min=1), default=None,
                     help="Nodes (default: the profile's nodes.count, at most one per rank)."),
        click.option("--scale", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0, show_default=True,
                     help="Shrink every shard by this factor for demos and tests; a scaled run is not submittable."),
        click.option("--writes", type=click.IntRange(min=1), default=10, show_default=True,
                     help="Checkpoints written."),
        click.option("--reads", type=click.IntRange(min=0), default=10, show_default=True,
                     help="Checkpoints read back."),
        click.option("--seconds-between-checkpoints", type=click.FloatRange(min=0), default=5.0, show_default=True,
                     help="Pause between two checkpoints (the rules' time_between_checkpoints)."),
        click.option("--engine", type=click.Choice(("builtin", "dlio")), default=None,
                     help="builtin: mlps-slurm's MPI checkpoint engine; dlio: a DLIO build with llama3 "
                          "checkpoint workloads (default: the profile's engines.checkpointing.engine)."),
        click.option("--keep-files", is_flag=True, help="Keep the checkpoint files after the run."),
        click.option("--verify-lockfile", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Lockfile (mlps-slurm lockfile generate) that every node's packages must match."),
        click.option("--skip-preflight", is_flag=True, help="Run without validating the nodes first; the run is "
                                                            "recorded as unvalidated (not submittable)."),
    ]
    return results_dir_option(apply(options, f))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="mlps-slurm", prog_name="mlps-slurm")
def main() -> None:
    """Run the MLPerf Storage v3.0 benchmarks as Slurm job chains.

    `submit` renders batch scripts from a site profile and submits a chain: a preflight job that checks every
    node, the benchmark job(s), and a finalize job that turns the engine output into results. You can log out;
    Slurm drives the chain. `status RUN` shows where it is.
    """


@main.group(cls=BenchmarkGroup)
def render() -> None:
    """Write a run directory with the scripts and manifest; submit nothing."""


@main.group(cls=BenchmarkGroup)
def submit() -> None:
    """Render a run and submit its chain: preflight -> benchmark -> finalize."""


def _checkpointing(action: str, profile_ref: str, overrides: tuple[str, ...], results_dir: str | None,
                   wait: bool = False, timeout: float = 0, **request: Any) -> None:
    from mlps_slurm.cli.commands import run_checkpointing

    code = run_checkpointing(action, profile_ref, list(overrides), results_dir, wait, timeout, request)
    sys.exit(code)


@render.command("checkpointing")
@checkpointing_options
@profile_options
def render_checkpointing(profile_ref: str, overrides: tuple[str, ...], results_dir: str | None,
                         **request: Any) -> None:
    """Render the checkpointing chain (llama3 checkpoint writes then reads)."""
    _checkpointing("render", profile_ref, overrides, results_dir, **request)


@submit.command("checkpointing")
@checkpointing_options
@profile_options
@submit_options(default_timeout=3600)
def submit_checkpointing(profile_ref: str, overrides: tuple[str, ...], results_dir: str | None, wait: bool,
                         timeout: float, test_only: bool, **request: Any) -> None:
    """Submit the checkpointing chain: preflight, the checkpoint engine under srun, finalize."""
    _checkpointing("test-only" if test_only else "submit", profile_ref, overrides, results_dir, wait, timeout,
                   **request)


render.add_command(render_training)
submit.add_command(submit_training)
main.add_command(datasize)


def suite_options(f: Any) -> Any:
    options = [
        click.option("--benchmarks", default=None, metavar="B[,B...]",
                     help="Chain only these benchmarks, in this order (default: the profile's suite.benchmarks; "
                          "the workloads come from suite.<benchmark>.models)."),
        click.option("--nodes", "-N", type=click.IntRange(min=1), default=None,
                     help="Nodes of every workload (default: the profile's nodes.count)."),
        click.option("--scale", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0, show_default=True,
                     help="Shrink every workload for demos and tests; scaled runs are not submittable."),
        click.option("--seconds-between-checkpoints", type=click.FloatRange(min=0), default=None,
                     help="Checkpointing: pause between two checkpoints (default: the rules' 5 s)."),
        click.option("--allow-invalid", is_flag=True,
                     help="Run INVALID training overrides (the profile's suite.training.params) anyway; such runs "
                          "are not submittable."),
    ]
    return results_dir_option(apply(options, f))


def _suite(action: str, profile_ref: str, overrides: tuple[str, ...], results_dir: str | None, wait: bool,
           timeout: float, **request: Any) -> None:
    from mlps_slurm.cli.commands import run_suite

    sys.exit(run_suite(action, profile_ref, list(overrides), results_dir, wait, timeout, request))


@render.command("all")
@suite_options
@profile_options
def render_all(profile_ref: str, overrides: tuple[str, ...], results_dir: str | None, **request: Any) -> None:
    """Render every benchmark the profile enables as one suite; submit nothing."""
    _suite("render", profile_ref, overrides, results_dir, False, 0, **request)


@submit.command("all")
@suite_options
@profile_options
@submit_options(default_timeout=86400)
def submit_all(profile_ref: str, overrides: tuple[str, ...], results_dir: str | None, wait: bool, timeout: float,
               test_only: bool, **request: Any) -> None:
    """Submit every benchmark the profile enables (suite.benchmarks) as one chain: one preflight, each workload
    after the previous one, one finalize that verifies them as one submission and bundles it."""
    _suite("test-only" if test_only else "submit", profile_ref, overrides, results_dir, wait, timeout, **request)


@main.command()
@profile_options
@click.option("--nodes", "-N", type=click.IntRange(min=1), default=None,
              help="Nodes to check (default: the profile's nodes.count).")
@click.option("--results-dir", type=click.Path(file_okay=False), default=None)
@click.option("--wait", is_flag=True, help="Wait for the report and print it.")
@click.option("--timeout", type=click.FloatRange(min=1), default=1800, show_default=True)
def preflight(profile_ref: str, overrides: tuple[str, ...], nodes: int | None, results_dir: str | None,
              wait: bool, timeout: float) -> None:
    """Submit only the preflight: check every node of an allocation (for admins)."""
    from mlps_slurm.cli.commands import run_preflight_only

    sys.exit(run_preflight_only(profile_ref, list(overrides), nodes, results_dir, wait, timeout))


@main.command()
@click.argument("run")
@profile_options
@click.option("--wait", is_flag=True, help="Wait until the chain ends.")
@click.option("--timeout", type=click.FloatRange(min=1), default=3600, show_default=True)
def status(run: str, profile_ref: str, overrides: tuple[str, ...], wait: bool, timeout: float) -> None:
    """Show each job of RUN's chain with its Slurm state and reason, and the results once finalized.

    RUN is a run directory or a run id under the profile's storage.results_dir.
    """
    from mlps_slurm.cli.commands import show_status

    sys.exit(show_status(run, profile_ref, list(overrides), wait, timeout))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Write verify.json and verify.txt here (default: into the run directory or directory named).")
@click.option("--submission/--runs", "submission", default=None,
              help="Also apply the submission-level rules (default: when the paths hold several runs).")
def verify(paths: tuple[str, ...], output: str | None, submission: bool | None) -> None:
    """Check runs against the MLPerf Storage rules: CLOSED, OPEN or INVALID, with the rule that decided.

    PATHS are run directories, directories of runs, or a submission tree. Exits non-zero when a run the chain
    planned has no usable result; every run not used is listed with the reason.
    """
    from mlps_slurm.verify import verify_command

    sys.exit(verify_command(list(paths), output, submission, echo=click.echo))


@main.command()
@click.argument("runs", nargs=-1, type=click.Path(exists=True))
@click.option("--org", default=None, help="Submitting organization (default: the profile's submission.organization).")
@click.option("--system", default=None, help="System name (default: the profile's submission.system).")
@click.option("--output", "-O", type=click.Path(), default=None,
              help="New directory for the submission tree and tarball (default: ./mlps-submission-<time>).")
@click.option("--allow-invalid", is_flag=True, help="Bundle INVALID runs too, under invalid/ (never closed/open).")
@click.option("--check", "check", type=click.Path(exists=True, dir_okay=False), default=None, metavar="TARBALL",
              help="Verify a bundle: every checksum, then the rules on the bundled runs.")
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
@click.option("--output", "-O", type=click.Path(dir_okay=False), default="mlps-slurm.lock", show_default=True)
@click.option("--from", "requirements_in", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Resolve this requirements file (uv pip compile, else pip's resolver) instead of pinning the "
                   "installed environment.")
def lockfile_generate(output: str, requirements_in: str | None) -> None:
    """Write a requirements.txt-style lockfile of this interpreter's environment (or of --from)."""
    from mlps_slurm.cli.commands import generate_lockfile

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
@click.argument("name", default="localhost")
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--resolved", is_flag=True, help="Print every resolved value (defaults included) instead of the file.")
@click.option("--origin", is_flag=True, help="With --resolved: also say where each value came from.")
def profiles_show(name: str, overrides: tuple[str, ...], resolved: bool, origin: bool) -> None:
    """Print profile NAME (a name or a path): the file, or with --resolved every value."""
    from mlps_slurm.cli.commands import show_profile

    sys.exit(show_profile(name, list(overrides), resolved or origin or bool(overrides), origin))


@profiles.command("validate")
@click.argument("path")
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--live", is_flag=True, help="Also check it against the running cluster (partitions, limits, "
                                           "accounts, paths).")
def profiles_validate(path: str, overrides: tuple[str, ...], live: bool) -> None:
    """Check profile PATH (or name): exit 0 when valid, 2 with the file, key, line and fix when not."""
    from mlps_slurm.cli.commands import validate_profile

    sys.exit(validate_profile(path, list(overrides), live))


@profiles.command("init")
@click.option("--from-cluster", is_flag=True, help="Fill partition, node count, CPUs and memory from sinfo.")
@click.option("--name", default="mysite", show_default=True, help="Name of the new profile.")
@click.option("--output", "-O", type=click.Path(dir_okay=False), default=None,
              help="Write to this file (refuses to overwrite) instead of standard output.")
def profiles_init(from_cluster: bool, name: str, output: str | None) -> None:
    """Write a starting profile: every key with its default and meaning, or values read from the cluster."""
    from mlps_slurm.cli.commands import init_profile

    sys.exit(init_profile(from_cluster, name, output))


if __name__ == "__main__":
    main()
