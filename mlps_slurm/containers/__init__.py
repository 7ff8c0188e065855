"""Container runtimes: how a job step enters the image, and how the login node runs a program in that image.
Registered by name; the profile's container.runtime accepts exactly the registered names.

Adding a runtime is one class: subclass `ContainerRuntime`, decorate it with `@register_container("name")` and
import its module before the profile is loaded. This module imports nothing of mlps_slurm but the registry and the
shell-word type (the profile schema asks it for the names), so it can never be part of an import cycle.

Binds: every containerized command names the job's shell variable MLPS_CONTAINER_BINDS instead of a literal list.
The plan decides its value (the profile's container.mounts, the results directory and only the storage directories
the benchmark uses: `bind_list`), and the job script's header sets it after creating those directories, because
apptainer and pyxis refuse to start a container whose bind source does not exist.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, ClassVar, Protocol, Sequence

from mlps_slurm.registry import ClassRegistry
from mlps_slurm.shell import ShellRef

# (key, problem, fix, the keys involved), as the profile loader reports it.
Problem = tuple[str, str, str, tuple[str, ...]]

BINDS_VARIABLE = "MLPS_CONTAINER_BINDS"
BINDS = ShellRef(BINDS_VARIABLE)


class Settings(Protocol):
    """What a backend reads the profile through: a resolved SiteProfile, or the values of one being loaded."""

    def get(self, key: str) -> Any: ...


class NotHere(Exception):
    """The login node cannot run the image (no runtime here, or an image only the compute nodes can reach); the
    message says why. Whatever needed the image is then checked by the preflight job, inside the container."""


class ContainerRuntime:
    """No-op defaults: a runtime overrides what it adds to the srun line and to the command."""

    name: ClassVar[str] = ""
    needs_image: ClassVar[bool] = True

    def srun_options(self, profile: Settings, run_dir: str) -> list[str]:
        """srun options that start the step inside the container (an srun plugin such as pyxis)."""
        return []

    def exec_prefix(self, profile: Settings, run_dir: str) -> list[str]:
        """The words before the command that run it inside the container (a wrapper such as apptainer exec)."""
        return []

    def executables(self, profile: Settings) -> list[str]:
        """What the preflight must find on every node for this runtime."""
        return []

    def per_node_command(self, profile: Settings, run_dir: str, nodes: int, argv: list[str],
                         step_options: Sequence[str] = ()) -> list[str]:
        """One task on each node of the allocation (srun: the scheduler's own tool, whatever the MPI launcher);
        `step_options` are further srun options of this step (e.g. --overlap)."""
        return ["srun", f"--nodes={nodes}", "--ntasks-per-node=1", *step_options, *self.srun_options(profile, run_dir),
                *self.exec_prefix(profile, run_dir), *argv]

    def batch_host_command(self, profile: Settings, run_dir: str, argv: list[str]) -> list[str]:
        """A single command on the batch host."""
        return [*self.exec_prefix(profile, run_dir), *argv]

    def login_command(self, profile: Settings, argv: list[str]) -> list[str]:
        """`argv` as the login node runs it inside the image (an engine probe at submit time). Raises NotHere
        when the image cannot be run here; the caller then leaves the check to the preflight job."""
        return list(argv)

    def runtime_failed(self, returncode: int, stderr: str) -> bool:
        """Whether a login_command failed in the runtime itself (not in the program it ran): the image may still
        run on the compute nodes, so the check is left to the preflight job instead of refusing the run."""
        return False

    def problems(self, values: Settings, launcher: Any) -> list[Problem]:
        """Profile values that cannot work with this runtime; `launcher` is the profile's registered launcher."""
        if self.needs_image and not values.get("container.image"):
            return [("container.image", f"is required when container.runtime is {self.name}",
                     "set container.image to the image to run, or container.runtime to none",
                     ("container.runtime",))]
        return []


REGISTRY: ClassRegistry[ContainerRuntime] = ClassRegistry("container runtime")
register_container = REGISTRY.register
names = REGISTRY.names
get = REGISTRY.get


def bind_list(profile: Settings, run_dir: str, storage_paths: Sequence[str]) -> list[str]:
    """The profile's mounts, the results directory and the given storage directories (those the run uses), each
    mounted at the same path, each source once."""
    found = list(profile.get("container.mounts"))
    for path in (str(Path(run_dir).parent), *storage_paths):
        if not any(m.split(":")[0] == path for m in found):
            found.append(f"{path}:{path}")
    return found


def _local_file(image: str | None) -> bool:
    return bool(image) and Path(str(image)).is_file()


@register_container("none")
class NoContainer(ContainerRuntime):
    needs_image = False

    def login_command(self, profile: Settings, argv: list[str]) -> list[str]:
        # An interpreter installed only where the jobs run (node-local, or a filesystem the login node does not
        # mount) is probed by the preflight job instead.
        if "/" in argv[0] and not os.access(argv[0], os.X_OK):
            raise NotHere(f"{argv[0]} (environment.python) is not an executable on this login node")
        return list(argv)

    def problems(self, values: Settings, launcher: Any) -> list[Problem]:
        if values.get("container.image"):
            return [("container.runtime", "container.image is set but container.runtime is none",
                     "set container.runtime to pyxis or apptainer, or remove container.image",
                     ("container.image",))]
        return []


@register_container("pyxis")
class Pyxis(ContainerRuntime):
    """pyxis/enroot: an srun plugin, so every step in the container is an srun step."""

    def srun_options(self, profile: Settings, run_dir: str) -> list[str]:
        # The value as a separate word: srun parses SPANK plugin options with getopt, like its own.
        return [f"--container-image={profile.get('container.image')}", "--container-mounts", BINDS,
                *profile.get("container.extra_args")]

    def batch_host_command(self, profile: Settings, run_dir: str, argv: list[str]) -> list[str]:
        # pyxis enters a container only through srun
        return ["srun", "--nodes=1", "--ntasks=1", *self.srun_options(profile, run_dir), *argv]

    def login_command(self, profile: Settings, argv: list[str]) -> list[str]:
        # pyxis takes a registry reference or a squashfs file; only the latter can be started here without
        # importing the image, by enroot itself (`enroot start IMAGE.sqsh CMD` runs a squashfs file directly).
        image = profile.get("container.image")
        if not str(image).startswith(("/", "./")) or not _local_file(image):
            raise NotHere(f"container.image {image} is not a squashfs file on this login node")
        if shutil.which("enroot") is None:
            raise NotHere("enroot is not on PATH on this login node")
        return ["enroot", "start", str(image), *argv]

    def runtime_failed(self, returncode: int, stderr: str) -> bool:
        return "[ERROR]" in stderr  # enroot's own errors; a Python traceback never has this form

    def problems(self, values: Settings, launcher: Any) -> list[Problem]:
        found = super().problems(values, launcher)
        if not launcher.carries_srun_options:
            found.append(("launcher.kind", "pyxis containers are started by srun, so launcher.kind must be srun",
                          "set launcher.kind: srun, or use container.runtime: apptainer with mpirun",
                          ("launcher.kind", "container.runtime")))
        return found


# apptainer exec --cleanenv (or --containall, which implies it) passes no host variable but TERM and the proxies,
# so the task would lose what srun's PMIx/PMI plugin and Open MPI's launcher give it to find its peers (PMIX_*,
# PMI_*, OMPI_*), the SLURM_* and SLURMD_* variables the steps read (job id, node list, node name) and the job's
# own MLPS_* and environment.env values. Apptainer passes a variable through --cleanenv when the host spells it
# APPTAINERENV_<NAME>; the launcher sets those per task, after the job script expanded its words, so the
# renaming runs in each task, in front of apptainer. The site keeps --cleanenv's purpose (nothing else of the
# host environment, such as PYTHONPATH or LD_LIBRARY_PATH, reaches the image) and MPI still works; refusing
# --cleanenv instead would make sites that require it unusable. (Measured with the stand-in apptainer on the
# local cluster: without SLURMD_* every node check reported as the batch host.)
CLEANENV_FLAGS = ("--cleanenv", "-e", "--containall", "-C")
KEEP_PATTERNS = ("PMIX_*", "PMI_*", "OMPI_*", "SLURM_*", "SLURMD_*", "MLPS_*")


def keep_env_wrapper(prefix: str, names: Sequence[str]) -> list[str]:
    """bash -c that re-exports the variables the launcher and the steps need as <prefix><NAME>, then execs the rest
    of its arguments (apptainer exec ...)."""
    patterns = "|".join([*KEEP_PATTERNS, *(n for n in names if n.isidentifier())])
    script = (f'for v in $(compgen -e); do case "$v" in {patterns}) export "{prefix}$v=${{!v}}";; esac; done; '
              'exec "$@"')
    return ["bash", "-c", script, "mlps-keep-env"]


@register_container("apptainer")
class Apptainer(ContainerRuntime):
    """Apptainer (or Singularity): `apptainer exec` wraps the command, under any launcher."""

    def exec_prefix(self, profile: Settings, run_dir: str) -> list[str]:
        exe = profile.get("container.apptainer")
        extra = list(profile.get("container.extra_args"))
        wrapper: list[str] = []
        if any(a in CLEANENV_FLAGS for a in extra):
            prefix = "SINGULARITYENV_" if Path(exe).name.startswith("singularity") else "APPTAINERENV_"
            wrapper = keep_env_wrapper(prefix, list(dict(profile.get("environment.env"))))
        return [*wrapper, exe, "exec", "--bind", BINDS, *extra, profile.get("container.image")]

    def executables(self, profile: Settings) -> list[str]:
        return [profile.get("container.apptainer")]

    def login_command(self, profile: Settings, argv: list[str]) -> list[str]:
        exe, image = profile.get("container.apptainer"), profile.get("container.image")
        if not _local_file(image):
            # a library:// or docker:// image would be pulled on the login node: left to the compute nodes
            raise NotHere(f"container.image {image} is not a file on this login node")
        if shutil.which(exe) is None:
            raise NotHere(f"{exe} (container.apptainer) is not on PATH on this login node")
        return [exe, "exec", *profile.get("container.extra_args"), str(image), *argv]

    def runtime_failed(self, returncode: int, stderr: str) -> bool:
        return returncode == 255 and "FATAL" in stderr  # apptainer's own failures: "FATAL: ..." and exit 255
