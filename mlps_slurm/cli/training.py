"""`mlps-slurm submit|render training` and `mlps-slurm datasize training`.

The click functions only parse and call one function of mlps_slurm.cli.commands, which imports the plan,
the chain and the engine probe lazily, so `--help` stays instant. mlps_slurm.cli.main registers them in its groups.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from mlps_slurm.cli.options import apply, profile_options, results_dir_option, submit_options

# Repeated from mlps_slurm.benchmarks.training.catalog so --help does not import it; a unit test checks that they match.
MODELS = ("unet3d", "resnet50", "cosmoflow", "retinanet", "dlrm", "flux")
ACCELERATORS = ("a100", "h100", "b200", "mi355")


def _common(f: Any) -> Any:
    options = [
        click.option("--model", required=True, type=click.Choice(MODELS), help="Training workload."),
        click.option("--accelerator", required=True, type=click.Choice(ACCELERATORS),
                     help="Simulated accelerator (v3.0 CLOSED: unet3d and retinanet on b200 or mi355)."),
        click.option("--accelerators-per-node", "-a", type=click.IntRange(min=1), default=None,
                     help="Simulated accelerators (DLIO ranks) per node (default: the profile's "
                          "nodes.accelerators_per_node)."),
        click.option("--nodes", "-N", type=click.IntRange(min=1), default=None,
                     help="Client nodes (default: the profile's nodes.count)."),
    ]
    return apply(options, f)


def _request_options(f: Any) -> Any:
    options = [
        click.option("--scale", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0, show_default=True,
                     help="Generate and read this fraction of the files the rules require (demos, tests); a "
                          "scaled run is not submittable."),
        click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                     help="DLIO workload override, e.g. --param reader.read_threads=8 (repeatable). Checked "
                          "against the CLOSED and OPEN lists; anything else is INVALID and refused."),
        click.option("--allow-invalid", is_flag=True,
                     help="Run INVALID --param overrides anyway (the run is recorded as not submittable)."),
        click.option("--reuse-data", is_flag=True,
                     help="Keep an existing dataset when its file count and sizes match; otherwise generate it."),
    ]
    return apply(options, f)


@click.command("training")
@_common
@_request_options
@profile_options
@results_dir_option
def render_training(profile_ref: str, overrides: tuple[str, ...], results_dir: str | None, **options: Any) -> None:
    """Render the training chain (preflight, datagen, 6 runs, finalize); submit nothing."""
    from mlps_slurm.cli.commands import run_training

    sys.exit(run_training("render", profile_ref, list(overrides), results_dir, False, 0, options))


@click.command("training")
@_common
@_request_options
@profile_options
@results_dir_option
@submit_options(default_timeout=86400)
def submit_training(profile_ref: str, overrides: tuple[str, ...], results_dir: str | None, wait: bool,
                    timeout: float, test_only: bool, **options: Any) -> None:
    """Submit the training chain: preflight, datagen (DLIO under srun), 1 warm-up + 5 scored runs one after
    another, finalize (AU, throughput, consecutiveness, verdict)."""
    from mlps_slurm.cli.commands import run_training

    sys.exit(run_training("test-only" if test_only else "submit", profile_ref, list(overrides), results_dir, wait,
                          timeout, options))


@click.group("datasize")
def datasize() -> None:
    """Dataset sizes the MLPerf Storage rules require."""


@datasize.command("training")
@_common
@click.option("--client-memory-gb", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Memory per client node in GiB (default: --from-run's preflight facts, else the profile's "
                   "nodes.memory_gb).")
@click.option("--from-run", "from_run", type=click.Path(exists=True, file_okay=False), default=None,
              metavar="RUN", help="A run directory whose preflight measured the nodes' memory.")
@click.option("--scale", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0, show_default=True)
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Overrides that change the size (dataset.num_samples_per_file, dataset.num_files_train).")
@profile_options
def datasize_training(profile_ref: str, overrides: tuple[str, ...], **options: Any) -> None:
    """Files and bytes of the dataset: max(500 steps x batch x accelerators, 5 x the clients' memory), and which
    term decided it."""
    from mlps_slurm.cli.commands import show_training_datasize

    sys.exit(show_training_datasize(profile_ref, list(overrides), options))
