"""Container runtimes: how a job step enters the image. Registered by name; the profile's container.runtime
accepts exactly the registered names.

Adding a runtime is one class: subclass `ContainerRuntime`, decorate it with `@register_container("name")` and
import its module before the profile is loaded. This module imports nothing of mlps_slurm (the profile schema asks
it for the names), so it can never be part of an import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping, Protocol, Sequence

from mlps_slurm.registry import ClassRegistry

# (key, problem, fix, the keys involved), as the profile loader reports it.
Problem = tuple[str, str, str, tuple[str, ...]]


class Settings(Protocol):
    """What a backend reads the profile through: a resolved SiteProfile, or the values of one being loaded."""

    def get(self, key: str) -> Any: ...


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


def mounts(profile: Settings, run_dir: str) -> list[str]:
    """The profile's mounts plus every directory the run reads or writes, mounted at the same path."""
    found = list(profile.get("container.mounts"))
    from mlps_slurm.profile.schema import storage_keys

    for path in (str(Path(run_dir).parent), *(profile.get(k) for k in storage_keys())):
        if not any(m.split(":")[0] == path for m in found):
            found.append(f"{path}:{path}")
    return found


@register_container("none")
class NoContainer(ContainerRuntime):
    needs_image = False

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
        return [f"--container-image={profile.get('container.image')}",
                "--container-mounts=" + ",".join(mounts(profile, run_dir)), *profile.get("container.extra_args")]

    def batch_host_command(self, profile: Settings, run_dir: str, argv: list[str]) -> list[str]:
        # pyxis enters a container only through srun
        return ["srun", "--nodes=1", "--ntasks=1", *self.srun_options(profile, run_dir), *argv]

    def problems(self, values: Settings, launcher: Any) -> list[Problem]:
        found = super().problems(values, launcher)
        if not launcher.carries_srun_options:
            found.append(("launcher.kind", "pyxis containers are started by srun, so launcher.kind must be srun",
                          "set launcher.kind: srun, or use container.runtime: apptainer with mpirun",
                          ("launcher.kind", "container.runtime")))
        return found


@register_container("apptainer")
class Apptainer(ContainerRuntime):
    """Apptainer (or Singularity): `apptainer exec` wraps the command, under any launcher."""

    def exec_prefix(self, profile: Settings, run_dir: str) -> list[str]:
        return [profile.get("container.apptainer"), "exec", "--bind", ",".join(mounts(profile, run_dir)),
                *profile.get("container.extra_args"), profile.get("container.image")]

    def executables(self, profile: Settings) -> list[str]:
        return [profile.get("container.apptainer")]
