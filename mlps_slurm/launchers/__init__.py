"""Parallel launchers: how N tasks start inside an allocation (ReFrame's launchers; the scheduler is another axis).
Registered by name; the profile's launcher.kind accepts exactly the registered names, launcher.mpi the MPI plugins
they declare.

Adding a launcher is one class: subclass `Launcher`, decorate it with `@register_launcher("name")` and import its
module before the profile is loaded. This module imports nothing of mlps_slurm at run time (the profile schema asks
it for the names), so it can never be part of an import cycle.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar

from mlps_slurm.registry import ClassRegistry

if TYPE_CHECKING:
    from mlps_slurm.containers import ContainerRuntime, Problem, Settings


class Launcher(abc.ABC):
    name: ClassVar[str] = ""
    # Values of launcher.mpi this launcher understands (srun's --mpi plugins); empty: launcher.mpi is not used.
    mpi_plugins: ClassVar[tuple[str, ...]] = ()
    # The launch line is an srun step, so srun plugins' options (pyxis) can start its tasks in a container.
    carries_srun_options: ClassVar[bool] = False

    @abc.abstractmethod
    def launch_prefix(self, profile: Settings, num_tasks: int, container: ContainerRuntime,
                      run_dir: str) -> list[str]:
        """The words before the program that start it on `num_tasks` tasks, inside the container if any."""

    def executables(self, profile: Settings) -> list[str]:
        """What the preflight must find on every node for this launcher."""
        return []

    def per_node_prefix(self, profile: Settings, nodes: int, container: ContainerRuntime,
                        run_dir: str) -> list[str] | None:
        """The words that start one task on each of `nodes` nodes the way the benchmark starts its ranks, so the
        preflight's node checks and its MPI check can share one step (MPI starts once); None when the launcher
        places tasks itself (mpirun): then the node checks are an srun step of their own before the MPI check."""
        return None

    def problems(self, values: Settings) -> list[Problem]:
        """Profile values that cannot work with this launcher: (key, problem, fix, the keys involved)."""
        return []


REGISTRY: ClassRegistry[Launcher] = ClassRegistry("launcher")
register_launcher = REGISTRY.register
names = REGISTRY.names
get = REGISTRY.get


def mpi_plugins() -> tuple[str, ...]:
    """Every value launcher.mpi may take: the MPI plugins of the registered launchers, in registration order."""
    return tuple(dict.fromkeys(p for cls in REGISTRY.classes.values() for p in cls.mpi_plugins))


@register_launcher("srun")
class Srun(Launcher):
    mpi_plugins = ("pmix", "pmi2", "none")
    carries_srun_options = True

    def launch_prefix(self, profile: Settings, num_tasks: int, container: ContainerRuntime,
                      run_dir: str) -> list[str]:
        return self._step(profile, container, run_dir, f"--ntasks={num_tasks}")

    @staticmethod
    def _step(profile: Settings, container: ContainerRuntime, run_dir: str, *layout: str) -> list[str]:
        """srun with the profile's MPI plugin, the task layout, the site's extra arguments and the container."""
        return ["srun", f"--mpi={profile.get('launcher.mpi')}", *layout, *profile.get("launcher.extra_args"),
                *container.srun_options(profile, run_dir), *container.exec_prefix(profile, run_dir)]

    def executables(self, profile: Settings) -> list[str]:
        return ["srun"]

    def per_node_prefix(self, profile: Settings, nodes: int, container: ContainerRuntime,
                        run_dir: str) -> list[str] | None:
        # --kill-on-bad-exit: a task that dies before MPI_Init would leave the others waiting in its fence.
        return self._step(profile, container, run_dir, f"--nodes={nodes}", f"--ntasks={nodes}",
                          "--ntasks-per-node=1", "--kill-on-bad-exit=1")


@register_launcher("mpirun")
class Mpirun(Launcher):
    """The site MPI's mpirun inside the allocation (it learns the nodes from Slurm's environment)."""

    def launch_prefix(self, profile: Settings, num_tasks: int, container: ContainerRuntime,
                      run_dir: str) -> list[str]:
        return ["mpirun", "-np", str(num_tasks), *profile.get("launcher.extra_args"),
                *container.exec_prefix(profile, run_dir)]

    def executables(self, profile: Settings) -> list[str]:
        return ["mpirun"]
