"""Lockfiles: requirements.txt-style pins of the Python environment the jobs run, and their verification.

`generate(output)` pins the environment as it is installed (a freeze read through importlib.metadata, so it needs
neither pip nor uv): what the nodes must match is what was validated, not what a resolver would pick today.
`generate(output, requirements_in)` resolves an input file instead: `uv pip compile` when uv is on PATH, otherwise
pip's own resolver (`pip install --dry-run --ignore-installed --report`, pip >= 22.2), both of which need the package
index. `parse(path)` reads pins back; `verify(pins)` compares them with the installed versions
(importlib.metadata). mpi4py is reported, never compared: it must be built against each site's MPI, so its version
legitimately differs. VCS and URL requirements are reported too: a version number does not identify a commit.

Runs inside jobs as well (the preflight node check): standard library only; `packaging` is used when importable.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from mlps_slurm.rundir import atomic_write_text

# Compared by name only: built against the site's MPI, so the version differs from site to site by design.
NOT_COMPARED = frozenset({"mpi4py"})
# Installer tooling, left out of a freeze as `pip freeze` does: it does not change what a benchmark runs.
TOOLING = frozenset({"pip", "setuptools", "wheel", "distribute"})
HEADER = "# mlps-slurm lockfile"

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REQUIREMENT = re.compile(rf"^(?P<name>{_NAME})\s*(?:\[[^\]]*\])?\s*(?P<rest>.*)$")


class LockfileError(Exception):
    """A lockfile that cannot be read or generated; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Pin:
    """One requirement line. `kind`: pinned (==), vcs (git+ and the like), url (name @ url), spec (>=, ~= ...)."""

    name: str  # as written
    kind: str
    spec: str = ""  # "==1.2.3", ">=1,<2"; empty for vcs/url
    url: str = ""
    marker: str = ""
    line: int = 0

    @property
    def key(self) -> str:
        return normalize(self.name)

    @property
    def version(self) -> str | None:
        """The exact version for == pins, else None."""
        return self.spec[2:].strip() if self.kind == "pinned" else None

    def requirement(self) -> str:
        return f"{self.name} @ {self.url}" if self.url else f"{self.name}{self.spec}"


@dataclass(frozen=True)
class LockProblem:
    """A difference between a pin and the environment. `kind`: missing, mismatch, not_compared."""

    name: str
    kind: str
    expected: str
    installed: str | None
    message: str


@dataclass(frozen=True)
class LockCheck:
    checked: int
    problems: list[LockProblem] = field(default_factory=list)  # missing or wrong version: an error
    not_compared: list[LockProblem] = field(default_factory=list)  # mpi4py, VCS and URL pins: reported only

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class GenerateResult:
    path: Path
    method: str  # "freeze", "uv pip compile", "pip install --dry-run --report"
    pins: int


def normalize(name: str) -> str:
    """PEP 503 name normalization: 'Foo_Bar.baz' -> 'foo-bar-baz'."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------------------------------------- parse

def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """(first line number, line) with backslash continuations joined and comments removed."""
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw
        if not buffer:
            start = number
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        line = buffer + line
        buffer = ""
        # A comment starts at '#' preceded by whitespace or at the line start (a URL may contain '#egg=').
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if line:
            yield start, line
    if buffer.strip():
        yield start, buffer.strip()


def parse_text(text: str, source: str = "<lockfile>") -> list[Pin]:
    pins: list[Pin] = []
    for number, line in _logical_lines(text):
        if line.startswith("-"):
            if line.startswith(("-e ", "--editable")):
                target = line.split(None, 1)[1] if " " in line else ""
                egg = re.search(r"#egg=(" + _NAME + ")", target)
                if egg and "+" in target.split(":", 1)[0]:
                    pins.append(Pin(egg.group(1), "vcs", url=target, line=number))
                    continue
                raise LockfileError(f"{source}:{number}: editable requirement {line!r} has no name (#egg=NAME); "
                                    "pin the package as NAME==VERSION instead")
            continue  # pip options (--hash lines are joined above; -i, --extra-index-url, ...) pin nothing
        line, _, marker = line.partition(";")
        line, marker = line.strip(), marker.strip()
        hashes = line.find(" --hash")
        if hashes != -1:
            line = line[:hashes].strip()
        if re.match(r"^[a-z0-9.+-]+://|^git\+", line, re.I):
            egg = re.search(r"#egg=(" + _NAME + ")", line)
            if not egg:
                raise LockfileError(f"{source}:{number}: URL requirement {line!r} has no name; write it as "
                                    "'NAME @ URL'")
            pins.append(Pin(egg.group(1), "vcs", url=line, marker=marker, line=number))
            continue
        match = _REQUIREMENT.match(line)
        if not match:
            raise LockfileError(f"{source}:{number}: cannot read requirement {line!r}; expected NAME==VERSION, "
                                "NAME @ URL or a VCS URL")
        name, rest = match.group("name"), match.group("rest").strip()
        if rest.startswith("@"):
            url = rest[1:].strip()
            kind = "vcs" if re.match(r"^(git|hg|svn|bzr)\+", url) else "url"
            pins.append(Pin(name, kind, url=url, marker=marker, line=number))
        elif re.fullmatch(r"===?\s*[^,\s]+", rest):
            pins.append(Pin(name, "pinned", spec="==" + rest.lstrip("=").strip(), marker=marker, line=number))
        elif rest:
            pins.append(Pin(name, "spec", spec=rest.replace(" ", ""), marker=marker, line=number))
        else:
            raise LockfileError(f"{source}:{number}: {name} has no version; a lockfile pins every package "
                                f"({name}==VERSION); regenerate it with `mlps-slurm lockfile generate`")
    return pins


def parse(path: str | Path) -> list[Pin]:
    """Pins from a requirements.txt-style lockfile. Raises LockfileError naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise LockfileError(f"{path}:{line}: not UTF-8 text (byte {exc.object[exc.start]:#04x}); the lockfile is "
                            "damaged: generate it again with `mlps-slurm lockfile generate`") from None
    except OSError as exc:
        raise LockfileError(f"cannot read lockfile {path}: {exc.strerror or exc}") from exc
    return parse_text(text, str(path))


# ---------------------------------------------------------------------------------------------- verify

def installed_versions() -> dict[str, str]:
    """Normalized name -> version of every installed distribution, in one pass over sys.path.

    The first distribution found wins, which is the one `import` would load.
    """
    from importlib import metadata  # here: it costs 20-40 ms, and most preflights have no lockfile

    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found.setdefault(normalize(name), dist.version)
    return found


def _marker_applies(marker: str) -> bool:
    if not marker:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:  # without packaging, check the pin rather than skip it silently
        return True
    try:
        return Marker(marker).evaluate()
    except Exception:  # an unparsable marker: same reasoning
        return True


def _satisfies(version: str, spec: str) -> bool:
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return _satisfies_plain(version, spec)
    try:
        return Version(version) in SpecifierSet(spec, prereleases=True)
    except (InvalidVersion, ValueError):
        return _satisfies_plain(version, spec)


def _satisfies_plain(version: str, spec: str) -> bool:
    """== only, without packaging: a pin without a local label (+cpu) matches any local label, as in PEP 440."""
    if not spec.startswith("=="):
        return True  # cannot evaluate ranges without packaging; only exact pins matter in a lockfile
    wanted = spec[2:]
    return version == wanted or ("+" not in wanted and version.split("+", 1)[0] == wanted)


def check(pins: list[Pin], installed: Mapping[str, str] | None = None) -> LockCheck:
    """Compare pins with the environment (`installed`: normalized name -> version; default: this interpreter's)."""
    env = installed_versions() if installed is None else installed
    problems: list[LockProblem] = []
    not_compared: list[LockProblem] = []
    checked = 0
    for pin in pins:
        if not _marker_applies(pin.marker):
            continue
        have = env.get(pin.key)
        if pin.key in NOT_COMPARED or pin.kind in ("vcs", "url"):
            why = ("built against the site's MPI" if pin.key in NOT_COMPARED
                   else f"{pin.kind} requirement, a version does not identify it")
            expected = pin.spec or pin.url
            not_compared.append(LockProblem(pin.name, "not_compared", expected, have,
                                            f"{pin.name}: installed {have or 'nothing'}, lockfile {expected} "
                                            f"(not compared: {why})"))
            continue
        checked += 1
        if have is None:
            problems.append(LockProblem(pin.name, "missing", pin.spec, None,
                                        f"{pin.name}{pin.spec} is not installed"))
        elif not _satisfies(have, pin.spec):
            problems.append(LockProblem(pin.name, "mismatch", pin.spec, have,
                                        f"{pin.name} {have} is installed, the lockfile wants {pin.spec}"))
    return LockCheck(checked, problems, not_compared)


def verify(pins: list[Pin], installed: Mapping[str, str] | None = None) -> list[LockProblem]:
    """The missing and mismatched packages (empty: the environment matches). See `check` for the full report."""
    return check(pins, installed).problems


# ---------------------------------------------------------------------------------------------- generate

def _header(method: str, python: str) -> str:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    return (f"{HEADER} ({method}), {now}, for {python}\n"
            "# Verify with `mlps-slurm lockfile verify`; each preflight checks it on every node when the run uses it.\n"
            "# mpi4py, VCS and URL entries are reported, not compared.\n")


def freeze_lines() -> list[str]:
    """`name==version` for every distribution visible to this interpreter; direct-URL installs as `name @ url`."""
    from importlib import metadata

    lines: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if not name or normalize(name) in lines or normalize(name) in TOOLING:
            continue
        line = f"{name}=={dist.version}"
        direct = dist.read_text("direct_url.json")
        if direct:
            try:
                info = json.loads(direct)
            except ValueError:
                info = {}
            vcs = info.get("vcs_info")
            if vcs and vcs.get("commit_id"):
                line = f"{name} @ {vcs['vcs']}+{info['url']}@{vcs['commit_id']}"
            elif info.get("url"):
                # A local or editable install: pin the version; the comment says where it came from.
                editable = " (editable)" if info.get("dir_info", {}).get("editable") else ""
                line += f"  # from {info['url']}{editable}"
        lines[normalize(name)] = line
    return [lines[k] for k in sorted(lines)]


def _resolve_with_uv(requirements_in: Path, python: str) -> str:
    proc = subprocess.run(["uv", "pip", "compile", str(requirements_in), "--python", python, "--quiet",
                           "--no-header", "--no-annotate"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise LockfileError(f"`uv pip compile {requirements_in}` failed (exit {proc.returncode}): "
                            f"{proc.stderr.strip()[-1000:]}")
    return proc.stdout


def _resolve_with_pip(requirements_in: Path, python: str) -> str:
    # --ignore-installed: resolve the full set, not only what is missing here. --report - prints JSON on stdout.
    proc = subprocess.run([python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--disable-pip-version-check", "--report", "-", "-r", str(requirements_in)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise LockfileError(f"pip could not resolve {requirements_in} (exit {proc.returncode}; pip >= 22.2 and "
                            f"access to the package index are needed): {proc.stderr.strip()[-1000:]}")
    try:
        report = json.loads(proc.stdout)
    except ValueError as exc:
        raise LockfileError(f"pip's --report output is not JSON ({exc}); upgrade pip to >= 22.2") from exc
    pins = []
    for item in report.get("install", []):
        meta = item.get("metadata", {})
        vcs = item.get("download_info", {}).get("vcs_info")
        if vcs:
            pins.append(f"{meta['name']} @ {vcs['vcs']}+{item['download_info']['url']}@{vcs['commit_id']}")
        else:
            pins.append(f"{meta['name']}=={meta['version']}")
    return "\n".join(sorted(pins, key=lambda p: normalize(p.split()[0].split("==")[0]))) + "\n"


def generate(output: str | Path, requirements_in: str | Path | None = None, *,
             python: str | None = None) -> GenerateResult:
    """Write a lockfile to `output` (atomically) and return what was written.

    Without `requirements_in`: pins the installed environment of this interpreter. With it: resolves that file
    with `uv pip compile` (uv on PATH) or pip's resolver, for `python` (default: this interpreter).
    Raises LockfileError with the tool's message when resolution fails.
    """
    python = python or sys.executable
    output = Path(output)
    if requirements_in is None:
        if python != sys.executable:
            raise LockfileError(f"freezing reads this interpreter's environment ({sys.executable}), not {python}; "
                                f"run `{python} -m mlps_slurm lockfile generate` instead")
        method, body = "freeze", "\n".join(freeze_lines()) + "\n"
    else:
        requirements_in = Path(requirements_in)
        if not requirements_in.is_file():
            raise LockfileError(f"requirements input {requirements_in} does not exist")
        if shutil.which("uv"):
            method, body = "uv pip compile", _resolve_with_uv(requirements_in, python)
        else:
            method, body = "pip install --dry-run --report", _resolve_with_pip(requirements_in, python)
    text = _header(method, python) + body
    pins = parse_text(text, str(output))  # what we write must read back
    atomic_write_text(output, text)
    return GenerateResult(output, method, len(pins))
