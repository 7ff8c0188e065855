"""How to install a missing piece on a given node's OS: pure functions, no I/O.

The preflight node check calls these with the node's os-release identity (`ID`, `ID_LIKE`, `VERSION_ID`), so a
failing check can say, on that node, the exact command to run: the distribution's package manager for executables
(apt, dnf/yum, zypper, pacman) and pip into the job interpreter for Python packages, with the lockfile's pinned
version when one is known. HPC sites often provide the same tools as environment modules, so executable hints also
mention the profile's module list.
"""

from __future__ import annotations

import re
import shlex

APT, DNF, YUM, ZYPPER, PACMAN = "apt", "dnf", "yum", "zypper", "pacman"

# os-release ID (or an ID_LIKE entry) -> package manager. RHEL-like systems before version 8 only have yum.
_FAMILIES: dict[str, str] = {
    "debian": APT, "ubuntu": APT, "linuxmint": APT, "pop": APT, "raspbian": APT,
    "fedora": DNF, "rhel": DNF, "centos": DNF, "rocky": DNF, "almalinux": DNF, "ol": DNF, "amzn": DNF,
    "opensuse": ZYPPER, "opensuse-leap": ZYPPER, "opensuse-tumbleweed": ZYPPER, "sles": ZYPPER, "sled": ZYPPER,
    "suse": ZYPPER,
    "arch": PACMAN, "manjaro": PACMAN, "endeavouros": PACMAN,
}
_YUM_BEFORE = 8  # rhel/centos/ol 7 and Amazon Linux 2 ship yum, not dnf

_INSTALL: dict[str, str] = {
    APT: "apt-get install -y {}",
    DNF: "dnf install -y {}",
    YUM: "yum install -y {}",
    ZYPPER: "zypper install -y {}",
    PACMAN: "pacman -S --noconfirm {}",
}

# "Which package has this file?" per manager, for executables this table does not know.
_PROVIDES: dict[str, str] = {
    APT: "apt-file search --regexp 'bin/{}$'",
    DNF: "dnf provides '*/bin/{}'",
    YUM: "yum provides '*/bin/{}'",
    ZYPPER: "zypper search --provides --match-exact '{}'",
    PACMAN: "pacman -F {}",
}

_OPENMPI = {APT: "openmpi-bin", DNF: "openmpi", YUM: "openmpi", ZYPPER: "openmpi4", PACMAN: "openmpi"}
_SLURM = {APT: "slurm-client", DNF: "slurm", YUM: "slurm", ZYPPER: "slurm", PACMAN: "slurm-llnl"}
_APPTAINER = {DNF: "apptainer", YUM: "apptainer", ZYPPER: "apptainer", PACMAN: "apptainer"}

# executable -> package per manager. A manager missing from an entry has no package in its usual repositories.
EXECUTABLE_PACKAGES: dict[str, dict[str, str]] = {
    "mpirun": _OPENMPI, "mpiexec": _OPENMPI, "orterun": _OPENMPI, "prterun": _OPENMPI,
    "srun": _SLURM, "sbatch": _SLURM, "scontrol": _SLURM, "squeue": _SLURM, "sacct": _SLURM, "scancel": _SLURM,
    "apptainer": _APPTAINER,
    "singularity": {APT: "singularity-container", DNF: "apptainer", YUM: "apptainer", ZYPPER: "apptainer",
                    PACMAN: "apptainer"},
    "python3": {APT: "python3", DNF: "python3", YUM: "python3", ZYPPER: "python3", PACMAN: "python"},
    "numactl": {APT: "numactl", DNF: "numactl", YUM: "numactl", ZYPPER: "numactl", PACMAN: "numactl"},
    "fio": {APT: "fio", DNF: "fio", YUM: "fio", ZYPPER: "fio", PACMAN: "fio"},
    "ssh": {APT: "openssh-client", DNF: "openssh-clients", YUM: "openssh-clients", ZYPPER: "openssh-clients",
            PACMAN: "openssh"},
}

# Where the distribution packages do not carry a tool, say where it does come from.
_NOT_PACKAGED: dict[str, str] = {
    "apptainer": "the Apptainer .deb from its GitHub releases, or `add-apt-repository ppa:apptainer/ppa` on Ubuntu",
    "enroot": "the enroot packages from NVIDIA's GitHub releases",
}

# Import name -> distribution name on PyPI, where they differ.
MODULE_DISTRIBUTIONS: dict[str, str] = {
    "yaml": "PyYAML", "mlps_slurm": "mlps-slurm", "dlio_benchmark": "dlio-benchmark", "dftracer": "pydftracer",
    "PIL": "pillow", "jinja2": "Jinja2", "dateutil": "python-dateutil", "omegaconf": "omegaconf",
    "hydra": "hydra-core", "google.protobuf": "protobuf",
}


def package_manager(os_id: str, id_like: str | list[str] | tuple[str, ...] = (), version_id: str = "") -> str | None:
    """The package manager of a distribution given its os-release ID, ID_LIKE and VERSION_ID; None if unknown.

    >>> package_manager("rocky", "rhel centos fedora", "9.3")
    'dnf'
    """
    likes = id_like.split() if isinstance(id_like, str) else list(id_like)
    for name in (n.lower() for n in [os_id, *likes] if n):
        manager = _FAMILIES.get(name)
        if manager == DNF and _uses_yum(os_id.lower(), name, _major(version_id)):
            return YUM
        if manager:
            return manager
    return None


def _uses_yum(os_id: str, family: str, major: int | None) -> bool:
    """RHEL/CentOS/Oracle Linux 7 (and their rebuilds) and Amazon Linux 2 ship yum; later releases dnf."""
    if major is None:
        return False
    if os_id == "amzn":
        return major == 2  # Amazon Linux 2023 has dnf
    return family in ("rhel", "centos", "ol") and major < _YUM_BEFORE


def _major(version_id: str) -> int | None:
    match = re.match(r"\d+", version_id or "")
    return int(match.group()) if match else None


def install_command(manager: str, packages: list[str]) -> str:
    """`apt-get install -y a b` and the like; run as root."""
    return _INSTALL[manager].format(" ".join(shlex.quote(p) for p in packages))


def executable_hint(executable: str, os_id: str, id_like: str | list[str] | tuple[str, ...] = (),
                    version_id: str = "") -> str:
    """One sentence: how to get `executable` onto a node running this OS (as root), or a module alternative."""
    name = executable.rsplit("/", 1)[-1]
    manager = package_manager(os_id, id_like, version_id)
    module_note = " or load the environment module that provides it (profile environment.modules)"
    if manager is None:
        return (f"install the package that provides {name} with this OS's package manager (os-release ID "
                f"{os_id or 'unknown'!r} is not one mlps-slurm knows),{module_note}")
    package = EXECUTABLE_PACKAGES.get(name, {}).get(manager)
    if package:
        hint = f"as root: `{install_command(manager, [package])}`"
        if name in ("mpirun", "mpiexec") and manager in (DNF, YUM):
            # Fedora/RHEL install Open MPI outside PATH, under /usr/lib64/openmpi/bin.
            hint += ", then `module load mpi/openmpi-x86_64`"
        return f"{hint},{module_note}"
    if name in _NOT_PACKAGED:
        return f"install {_NOT_PACKAGED[name]},{module_note}"
    return (f"find the package that provides {name} with `{_PROVIDES[manager].format(name)}` and install it "
            f"as root (`{install_command(manager, ['<package>'])}`),{module_note}")


def module_distribution(module: str) -> str:
    """The distribution to pip-install for an import name: 'yaml' -> 'PyYAML', 'a_b.c' -> 'a-b'."""
    if module in MODULE_DISTRIBUTIONS:
        return MODULE_DISTRIBUTIONS[module]
    top = module.split(".", 1)[0]
    return MODULE_DISTRIBUTIONS.get(top, top.replace("_", "-"))


def python_package_hint(distribution: str, version: str | None = None, python: str = "python3") -> str:
    """`PY -m pip install 'name==version'` for the job interpreter; mpi4py is built against the site's MPI."""
    requirement = f"{distribution}=={version}" if version else distribution
    if distribution.lower() == "mpi4py":
        # A wheel bundles its own MPI; the benchmark must use the site's (the one srun/PMIx launches).
        return (f"`MPICC=mpicc {shlex.quote(python)} -m pip install --no-binary=mpi4py "
                f"{shlex.quote(requirement)}` (built against the site MPI: load its module first)")
    return f"`{shlex.quote(python)} -m pip install {shlex.quote(requirement)}`"


def python_packages_hint(requirements: list[str], python: str = "python3") -> str:
    """One pip command for several `name==version` requirements."""
    quoted = " ".join(shlex.quote(r) for r in requirements)
    return f"`{shlex.quote(python)} -m pip install {quoted}`"
