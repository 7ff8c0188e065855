"""`mlps-slurm submit|render training` and `mlps-slurm datasize training`.

The click functions only parse and call one function; the work (`run_training`, `show_datasize`) imports the plan,
the chain and the engine probe lazily, so `--help` stays instant. mlps_slurm.cli.main registers them in its groups.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from mlps_slurm.cli.options import apply, profile_options, results_dir_option, submit_options

# Repeated from mlps_slurm.catalog.training so --help does not import it; a unit test checks that they match.
MODELS = ("unet3d", "resnet50", "cosmoflow", "retinanet", "dlrm", "flux")
ACCELERATORS = ("a100", "h100", "b200", "mi355")
EXIT_FAILED, EXIT_USAGE, EXIT_SLURM = 1, 2, 3


def _error(message: str) -> None:
    click.echo(f"mlps-slurm: error: {message}", err=True)


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
@click.option("--profile", "profile_ref", default="localhost", show_default=True, metavar="NAME|PATH")
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE")
def datasize_training(profile_ref: str, overrides: tuple[str, ...], **options: Any) -> None:
    """Files and bytes of the dataset: max(500 steps x batch x accelerators, 5 x the clients' memory), and which
    term decided it."""
    sys.exit(show_datasize(profile_ref, list(overrides), options))


# --- the work ----------------------------------------------------------------------------------------------------

def run_training(action: str, profile_ref: str, overrides: list[str], results_dir: str | None, wait: bool,
                 timeout: float, options: dict[str, Any]) -> int:
    from mlps_slurm.cli.commands import run_training as work

    return work(action, profile_ref, overrides, results_dir, wait, timeout, options)


def _request(options: dict[str, Any], client_memory_gb: float | None = None) -> Any:
    from mlps_slurm.plan_training import TrainingRequest

    return TrainingRequest(model=options["model"], accelerator=options["accelerator"],
                           accelerators_per_node=options["accelerators_per_node"], nodes=options["nodes"],
                           scale=options.get("scale", 1.0), params=tuple(options.get("params", ())),
                           client_memory_gb=client_memory_gb)


def _memory_from_run(path: str) -> tuple[float | None, str]:
    from mlps_slurm.rules.facts import client_memory
    from mlps_slurm.rundir import read_json

    preflight = Path(path) / "preflight" / "preflight.json"
    try:
        memory = client_memory(read_json(preflight))
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"--from-run {path}: cannot read {preflight} ({exc})") from exc
    if not memory:
        raise click.UsageError(f"--from-run {path}: {preflight} records no memory facts; give --client-memory-gb")
    largest = max(memory.values()) / (1 << 30)
    return largest, f"preflight facts of {path} ({len(memory)} node(s), largest {largest:.2f} GiB)"


def show_datasize(profile_ref: str, overrides: list[str], options: dict[str, Any]) -> int:
    from mlps_slurm.plan import PlanError
    from mlps_slurm.plan_training import training_datasize
    from mlps_slurm.profile import ProfileError, load_profile

    try:
        profile = load_profile(profile_ref, overrides)
        memory, source = options["client_memory_gb"], "--client-memory-gb"
        if memory is None and options["from_run"]:
            memory, source = _memory_from_run(options["from_run"])
        if memory is None and profile.get("nodes.memory_gb"):
            memory, source = float(profile.get("nodes.memory_gb")), f"profile {profile.name}: nodes.memory_gb"
        if memory is None:
            raise PlanError("the clients' memory is unknown: give --client-memory-gb G, or --from-run RUN (a run "
                            "whose preflight measured the nodes), or set nodes.memory_gb in the profile")
        size, w = training_datasize(_request(options, memory), profile)
    except (ProfileError, PlanError) as exc:
        _error(str(exc))
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
