"""Install hints: os-release identity -> package manager -> the command a failing check prints."""

from __future__ import annotations

import pytest

from mlps_slurm import install_hints as hints


@pytest.mark.parametrize("os_id, id_like, version, manager", [
    ("debian", "", "12", "apt"),
    ("ubuntu", "debian", "22.04", "apt"),
    ("linuxmint", "ubuntu debian", "21", "apt"),
    ("fedora", "", "40", "dnf"),
    ("rocky", "rhel centos fedora", "9.3", "dnf"),
    ("almalinux", "rhel centos fedora", "8.9", "dnf"),
    ("rhel", "fedora", "8.6", "dnf"),
    ("centos", "rhel fedora", "7", "yum"),
    ("rhel", "fedora", "7.9", "yum"),
    ("scientific", "rhel centos fedora", "7.9", "yum"),  # known only through ID_LIKE
    ("amzn", "centos rhel fedora", "2", "yum"),
    ("amzn", "fedora", "2023", "dnf"),
    ("sles", "suse", "15.5", "zypper"),
    ("opensuse-leap", "suse opensuse", "15.5", "zypper"),
    ("arch", "", "", "pacman"),
    ("manjaro", "arch", "", "pacman"),
    ("alpine", "", "3.19", None),
    ("", "", "", None),
])
def test_package_manager_from_os_release(os_id, id_like, version, manager):
    assert hints.package_manager(os_id, id_like, version) == manager


def test_id_like_may_be_a_list():
    assert hints.package_manager("pop", ["ubuntu", "debian"]) == "apt"
    assert hints.package_manager("weird", ["rhel", "fedora"], "9") == "dnf"


@pytest.mark.parametrize("os_id, id_like, version, command", [
    ("debian", "", "12", "apt-get install -y openmpi-bin"),
    ("rocky", "rhel centos fedora", "9", "dnf install -y openmpi"),
    ("centos", "rhel fedora", "7", "yum install -y openmpi"),
    ("sles", "suse", "15", "zypper install -y openmpi4"),
    ("arch", "", "", "pacman -S --noconfirm openmpi"),
])
def test_mpirun_hint_per_distribution(os_id, id_like, version, command):
    hint = hints.executable_hint("mpirun", os_id, id_like, version)
    assert hint.startswith(f"as root: `{command}`")
    assert "environment.modules" in hint  # HPC sites often provide MPI as a module


def test_rhel_openmpi_hint_says_how_to_get_it_on_path():
    assert "module load mpi/openmpi-x86_64" in hints.executable_hint("mpirun", "rocky", "rhel", "9")
    assert "module load mpi/openmpi-x86_64" not in hints.executable_hint("mpirun", "debian", "", "12")


def test_srun_and_full_paths():
    assert "`apt-get install -y slurm-client`" in hints.executable_hint("srun", "ubuntu", "debian")
    assert "`pacman -S --noconfirm slurm-llnl`" in hints.executable_hint("/usr/bin/srun", "arch")


def test_apptainer_not_in_debian_archives_points_elsewhere():
    hint = hints.executable_hint("apptainer", "debian", "", "12")
    assert "apt-get" not in hint.split(",")[0] and "Apptainer" in hint
    assert "`dnf install -y apptainer`" in hints.executable_hint("apptainer", "rocky", "rhel", "9")


def test_unknown_executable_uses_the_managers_file_search():
    assert "`apt-file search --regexp 'bin/elbencho$'`" in hints.executable_hint("elbencho", "debian")
    assert "`dnf provides '*/bin/elbencho'`" in hints.executable_hint("elbencho", "fedora", "", "40")
    assert "`pacman -F elbencho`" in hints.executable_hint("elbencho", "arch")


def test_unknown_distribution_says_so():
    hint = hints.executable_hint("mpirun", "alpine", "", "3.19")
    assert "'alpine'" in hint and "package manager" in hint


def test_install_command_quotes_packages():
    assert hints.install_command("apt", ["a", "b c"]) == "apt-get install -y a 'b c'"


def test_python_package_hints():
    assert hints.python_package_hint("PyYAML", "6.0.4", "/opt/venv/bin/python") == \
        "`/opt/venv/bin/python -m pip install PyYAML==6.0.4`"
    assert hints.python_package_hint("click") == "`python3 -m pip install click`"
    mpi = hints.python_package_hint("mpi4py", "4.1.2", "/p y/python")
    assert mpi.startswith("`MPICC=mpicc '/p y/python' -m pip install --no-binary=mpi4py mpi4py==4.1.2`")
    assert hints.python_packages_hint(["a==1", "b==2"], "py") == "`py -m pip install a==1 b==2`"


@pytest.mark.parametrize("module, dist", [
    ("yaml", "PyYAML"), ("mlps_slurm.benchmarks.checkpointing.job", "mlps-slurm"), ("dlio_benchmark", "dlio-benchmark"),
    ("mpi4py", "mpi4py"), ("some_pkg.sub", "some-pkg"),
])
def test_module_to_distribution(module, dist):
    assert hints.module_distribution(module) == dist
