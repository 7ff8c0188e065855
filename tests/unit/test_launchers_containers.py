"""The launcher and container-runtime registries: lookup, each backend's argv, their profile checks, and a launcher
registered from outside the package being accepted by the profile schema."""

from __future__ import annotations

import pytest

from mlps_slurm import containers, launchers
from mlps_slurm.plan import launcher_argv, preflight_requirements
from mlps_slurm.profile import ProfileError, load_profile
from mlps_slurm.profile.schema import SCHEMA, cross_field_problems, defaults

RUN_DIR = "/scratch/runs/r1"
PY = "/opt/venv/bin/python"


def settings(**values: object) -> dict[str, object]:
    """Profile values as the backends read them (a dict has the same `get` as a SiteProfile)."""
    base = defaults()
    base.update({"storage.checkpoint_dir": "/scratch/ckpt", "storage.data_dir": "/scratch/data",
                 "storage.kvcache_dir": "/scratch/kv", "vectordb.milvus.data_dir": "/scratch/vdb",
                 "container.image": "img.sif"})
    base.update({k.replace("__", "."): v for k, v in values.items()})
    return base


MOUNTS = ("/scratch/runs:/scratch/runs,/scratch/ckpt:/scratch/ckpt,/scratch/data:/scratch/data,/scratch/kv:/scratch/kv,"
          "/scratch/vdb:/scratch/vdb")
BINDS = containers.BINDS  # the job's shell variable the header sets to the plan's binds


def test_builtin_names_in_registration_order():
    assert launchers.names() == ("srun", "mpirun")
    assert containers.names() == ("none", "pyxis", "apptainer")
    assert launchers.mpi_plugins() == ("pmix", "pmi2", "none")


@pytest.mark.parametrize("lookup, message", [
    (lambda: launchers.get("aprun"), "unknown launcher 'aprun'; registered launchers: srun, mpirun"),
    (lambda: launchers.get(["srun"]), "registered launchers: srun, mpirun"),
    (lambda: containers.get("docker"), "unknown container runtime 'docker'; registered container runtimes: none, pyxis, "
                                       "apptainer"),
])
def test_unknown_name_lists_the_registered_ones(lookup, message):
    with pytest.raises(KeyError) as err:
        lookup()
    assert message in str(err.value)


def test_registering_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="launcher 'srun' is already registered"):
        launchers.register_launcher("srun")(type("Other", (launchers.Launcher,), {}))
    with pytest.raises(ValueError, match="container runtime 'pyxis' is already registered"):
        containers.register_container("pyxis")(type("Other", (containers.ContainerRuntime,), {}))


def test_schema_choices_are_the_registries():
    assert tuple(SCHEMA["launcher.kind"].choices) == launchers.names()
    assert tuple(SCHEMA["launcher.mpi"].choices) == launchers.Srun.mpi_plugins
    assert tuple(SCHEMA["container.runtime"].choices) == containers.names()


def test_binds_are_the_mounts_the_results_and_the_given_storage_each_once():
    values = settings(container__mounts=["/etc/slurm:/etc/slurm:ro", "/scratch/ckpt:/ckpt"])
    assert containers.bind_list(values, RUN_DIR, ["/scratch/ckpt", "/scratch/data"]) == [
        "/etc/slurm:/etc/slurm:ro", "/scratch/ckpt:/ckpt", "/scratch/runs:/scratch/runs",
        "/scratch/data:/scratch/data"]


@pytest.mark.parametrize("kind, runtime, expected", [
    ("srun", "none", ["srun", "--mpi=pmi2", "--ntasks=6", "--cpu-bind=none"]),
    ("srun", "pyxis", ["srun", "--mpi=pmi2", "--ntasks=6", "--cpu-bind=none", "--container-image=img.sif",
                       "--container-mounts", BINDS, "--x"]),
    ("srun", "apptainer", ["srun", "--mpi=pmi2", "--ntasks=6", "--cpu-bind=none", "apptainer", "exec", "--bind",
                           BINDS, "--x", "img.sif"]),
    ("mpirun", "none", ["mpirun", "-np", "6", "--cpu-bind=none"]),
    ("mpirun", "apptainer", ["mpirun", "-np", "6", "--cpu-bind=none", "apptainer", "exec", "--bind", BINDS, "--x",
                             "img.sif"]),
])
def test_launch_prefix(kind, runtime, expected):
    values = settings(launcher__kind=kind, launcher__mpi="pmi2", launcher__extra_args=["--cpu-bind=none"],
                      container__runtime=runtime, container__extra_args=["--x"])
    assert launchers.get(kind).launch_prefix(values, 6, containers.get(runtime), RUN_DIR) == expected


@pytest.mark.parametrize("runtime, per_node, batch_host", [
    ("none", ["srun", "--nodes=3", "--ntasks-per-node=1", "prog"], ["prog"]),
    ("pyxis", ["srun", "--nodes=3", "--ntasks-per-node=1", "--container-image=img.sif",
               "--container-mounts", BINDS, "prog"],
     ["srun", "--nodes=1", "--ntasks=1", "--container-image=img.sif", "--container-mounts", BINDS, "prog"]),
    ("apptainer", ["srun", "--nodes=3", "--ntasks-per-node=1", "/opt/bin/singularity", "exec", "--bind", BINDS,
                   "img.sif", "prog"],
     ["/opt/bin/singularity", "exec", "--bind", BINDS, "img.sif", "prog"]),
])
def test_per_node_and_batch_host_commands(runtime, per_node, batch_host):
    values = settings(container__runtime=runtime, container__apptainer="/opt/bin/singularity")
    backend = containers.get(runtime)
    assert backend.per_node_command(values, RUN_DIR, 3, ["prog"]) == per_node
    assert backend.batch_host_command(values, RUN_DIR, ["prog"]) == batch_host


@pytest.mark.parametrize("kind, runtime, executables", [
    ("srun", "none", ["srun"]),
    # inside a container the node check sees the image's PATH, not the host's where these run
    ("srun", "pyxis", []),
    ("srun", "apptainer", []),
    ("mpirun", "none", ["srun", "mpirun"]),
    ("mpirun", "apptainer", []),
])
def test_preflight_executables(kind, runtime, executables):
    profile = load_profile("localhost", [f"launcher.kind={kind}", f"container.runtime={runtime}",
                                         "container.apptainer=/opt/bin/singularity"]
                           + ([] if runtime == "none" else ["container.image=img.sif"]))
    assert preflight_requirements(profile, RUN_DIR, PY, storage=[], engine_modules=[])["executables"] == executables


@pytest.mark.parametrize("values, problem", [
    (dict(container__runtime="pyxis", container__image=None), ("container.image", "is required when "
                                                               "container.runtime is pyxis")),
    (dict(container__runtime="apptainer", container__image=""), ("container.image", "is required when "
                                                                 "container.runtime is apptainer")),
    (dict(container__runtime="pyxis", launcher__kind="mpirun"), ("launcher.kind", "pyxis containers are started "
                                                                 "by srun, so launcher.kind must be srun")),
    (dict(container__runtime="none"), ("container.runtime", "container.image is set but container.runtime is "
                                                            "none")),
])
def test_backends_own_their_cross_checks(values, problem):
    assert [p[:2] for p in cross_field_problems(settings(**values))] == [problem]


def test_consistent_values_have_no_problem():
    assert cross_field_problems(settings(container__runtime="apptainer", launcher__kind="mpirun")) == []
    assert cross_field_problems(settings(container__runtime="none", container__image=None)) == []


@pytest.fixture
def aprun(monkeypatch):
    """A made-up launcher registered the way a site module would, removed again after the test."""
    monkeypatch.setattr(launchers.REGISTRY, "classes", dict(launchers.REGISTRY.classes))

    @launchers.register_launcher("aprun")
    class Aprun(launchers.Launcher):
        mpi_plugins = ("cray_shasta",)

        def launch_prefix(self, profile, num_tasks, container, run_dir):
            return ["aprun", "-n", str(num_tasks), *container.exec_prefix(profile, run_dir)]

        def executables(self, profile):
            return ["aprun"]

    return Aprun


def test_a_registered_launcher_is_accepted_by_the_profile_schema(aprun):
    profile = load_profile("localhost", ["launcher.kind=aprun", "launcher.mpi=cray_shasta"])
    assert profile.get("launcher.kind") == "aprun"
    assert launcher_argv(profile, 4, RUN_DIR) == ["aprun", "-n", "4"]
    assert preflight_requirements(profile, RUN_DIR, PY, storage=[], engine_modules=[])["executables"] == [
        "srun", "aprun"]
    with pytest.raises(ProfileError, match="must be one of srun, mpirun, aprun, got 'qsub'"):
        load_profile("localhost", ["launcher.kind=qsub"])
    # Not an srun step: pyxis cannot start its tasks in a container.
    with pytest.raises(ProfileError, match="launcher.kind must be srun"):
        load_profile("localhost", ["launcher.kind=aprun", "container.runtime=pyxis", "container.image=img"])


def test_a_launcher_is_refused_once_unregistered():
    with pytest.raises(ProfileError, match="launcher.kind: must be one of srun, mpirun, got 'aprun'"):
        load_profile("localhost", ["launcher.kind=aprun"])
