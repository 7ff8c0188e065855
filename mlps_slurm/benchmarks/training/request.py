"""What a user asks of the training benchmark: every option, its default and its range, in one place.

The command-line options of `submit|render training`, the `submit all` settings (and the profile's
suite.training.params) and the manifest's request are all derived from this dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlps_slurm.benchmarks.base import Request, option
from mlps_slurm.benchmarks.training import catalog as cat


@dataclass(frozen=True)
class TrainingRequest(Request):
    benchmark = "training"

    model: str = option(None, "--model", required=True, choices=cat.MODELS, help="Training workload.")
    accelerator: str = option(None, "--accelerator", required=True, choices=cat.ACCELERATORS,
                              help="Simulated accelerator (v3.0 CLOSED: unet3d and retinanet on b200 or mi355).")
    accelerators_per_node: int | None = option(None, "--accelerators-per-node", "-a", min=1,
                                               help="Simulated accelerators (DLIO ranks) per node (default: the "
                                                    "profile's nodes.accelerators_per_node).")
    nodes: int | None = option(None, "--nodes", "-N", min=1, help="Client nodes (default: the profile's nodes.count).")
    scale: float = option(1.0, "--scale", min=0, max=1, min_open=True, suite="cli",
                          help="Generate and read this fraction of the files the rules require (demos, tests); a "
                               "scaled run is not submittable.")
    params: tuple[str, ...] = option((), "--param", multiple=True, metavar="KEY=VALUE", suite="profile",
                                     pattern=r"^[A-Za-z_][A-Za-z0-9_.]*=.*$",
                                     help="DLIO workload override, e.g. --param reader.read_threads=8 (repeatable). "
                                          "Checked against the CLOSED and OPEN lists; anything else is INVALID and "
                                          "refused.")
    allow_invalid: bool = option(False, "--allow-invalid", suite="cli",
                                 help="Run INVALID --param overrides anyway (the run is recorded as not "
                                      "submittable).")
    reuse_data: bool = option(False, "--reuse-data",
                              help="Keep an existing dataset when its file count and sizes match; otherwise "
                                   "generate it.")
    verify_lockfile: str | None = option(None, "--verify-lockfile", existing_file=True,
                                         help="Lockfile (mlps-slurm lockfile generate) that every node's packages "
                                              "must match.")
    skip_preflight: bool = option(False, "--skip-preflight",
                                  help="Run without validating the nodes first (needs the clients' memory in "
                                       "nodes.memory_gb); the run is recorded as unvalidated (not submittable).")
    # GiB per client node; None: the profile's nodes.memory_gb, else the preflight's measurement (datagen job).
    client_memory_gb: float | None = option(None, min=0, min_open=True)


REQUEST = TrainingRequest
