"""Commands the training benchmark adds to the CLI: `mlps-slurm datasize training`.

Its options come from the training request (model, accelerator, layout), plus what only sizing needs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from mlps_slurm.benchmarks.base import PlanError
from mlps_slurm.benchmarks.training.request import TrainingRequest
from mlps_slurm.cli.derived import request_options
from mlps_slurm.rundir import RunDirectory
from mlps_slurm.cli.options import apply, profile_options

EXIT_USAGE = 2
_LAYOUT = ("model", "accelerator", "accelerators_per_node", "nodes")


def _common(f: Any) -> Any:
    return apply(request_options(TrainingRequest, names=_LAYOUT), f)


def _memory_from_run(path: str) -> tuple[float | None, str]:
    from mlps_slurm.rules.facts import client_memory
    from mlps_slurm.rundir import read_json

    preflight = RunDirectory(path).preflight_report
    try:
        memory = client_memory(read_json(preflight))
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"--from-run {path}: cannot read {preflight} ({exc})") from exc
    if not memory:
        raise click.UsageError(f"--from-run {path}: {preflight} records no memory facts; give --client-memory-gb GIB")
    largest = max(memory.values()) / (1 << 30)
    return largest, f"preflight facts of {path} ({len(memory)} node(s), largest {largest:.2f} GiB)"


def show_training_datasize(profile_ref: str, overrides: list[str], options: dict[str, Any]) -> int:
    from mlps_slurm.benchmarks.training.plan import training_datasize
    from mlps_slurm.profile import ProfileError, load_profile

    try:
        profile = load_profile(profile_ref, overrides)
        memory, source = options["client_memory_gb"], "--client-memory-gb"
        if memory is None and options["from_run"]:
            memory, source = _memory_from_run(options["from_run"])
        if memory is None and profile.get("nodes.memory_gb"):
            memory, source = float(profile.get("nodes.memory_gb")), f"profile {profile.name}: nodes.memory_gb"
        if memory is None:
            raise PlanError("the clients' memory is unknown: give --client-memory-gb GIB, or --from-run RUN (a run "
                            "whose preflight measured the nodes), or set nodes.memory_gb in the profile")
        size, w = training_datasize(TrainingRequest(
            model=options["model"], accelerator=options["accelerator"],
            accelerators_per_node=options["accelerators_per_node"], nodes=options["nodes"], scale=options["scale"],
            params=tuple(options["params"]), client_memory_gb=memory), profile)
    except (ProfileError, PlanError) as exc:
        click.echo(f"mlps-slurm: error: {exc}", err=True)
        return EXIT_USAGE
    per_node = size.accelerators // size.hosts
    click.echo(f"training datasize: {size.model} on {size.accelerator}, {size.accelerators} simulated accelerators "
               f"({per_node} per node x {size.hosts} node(s)), {memory:g} GiB per node ({source})")
    click.echo(f"  accelerator term: {size.explain().split('; ')[0]}")
    click.echo(f"  memory term:      {size.explain().split('; ')[1]}")
    click.echo(f"  decided by:       {size.decided_by}")
    scaled = f" (--scale {size.scale:g} of {size.rule_files:,})" if size.scale != 1 else ""
    click.echo(f"  files:            {size.num_files:,}{scaled} x {size.samples_per_file} sample(s) per file "
               f"(dataset.num_files_train)")
    click.echo(f"  bytes:            {size.total_bytes:,} ({size.total_bytes / 1e12:.3f} TB; {w.format} files of "
               f"{size.sample_bytes or size.record_length:,.0f} B per sample on average)")
    return 0



@click.command("training")
@_common
@click.option("--client-memory-gb", type=click.FloatRange(min=0, min_open=True), default=None, metavar="GIB",
              help="Memory per client node in GiB (2^30 bytes, as MLPerf's --client-host-memory-in-gb counts it; "
                   "default: --from-run's preflight facts, else the profile's nodes.memory_gb).")
@click.option("--from-run", "from_run", type=click.Path(exists=True, file_okay=False), default=None,
              metavar="RUN", help="A run directory whose preflight measured the nodes' memory.")
@click.option("--scale", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0, show_default=True,
              help="Size this fraction of the files the rules require (demos, tests; a scaled run is not "
                   "submittable).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Overrides that change the size (dataset.num_samples_per_file, dataset.num_files_train).")
@profile_options
def datasize_training(profile_ref: str, overrides: tuple[str, ...], **options: Any) -> None:
    """Files and bytes of the dataset: max(500 steps x batch x accelerators, 5 x the clients' memory), and which
    term decided it."""
    sys.exit(show_training_datasize(profile_ref, list(overrides), options))


COMMANDS = {"datasize": [datasize_training]}
