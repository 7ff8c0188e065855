"""The run directory: the contract between the login node and the jobs.

Layout (see ARCHITECTURE.md): manifest.json, profile.resolved.yaml, scripts/, logs/, preflight/, raw/, results/.
Every file another process may read is written atomically (temp file, fsync, rename). A run directory is created
complete under a hidden temporary name and renamed into place, so a crash never leaves a half-written run.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import secrets
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

MANIFEST = "manifest.json"
SUBDIRS = ("scripts", "logs", "preflight/nodes", "raw", "results")
# Version 2 splits the request (what was asked, every default settled) from the settings planning derived.
# Version 1 (one "request" mapping holding both) is still read: runs written by earlier releases stay readable.
MANIFEST_SCHEMA = "mlps-slurm/manifest/2"
READABLE_MANIFESTS = ("mlps-slurm/manifest/1", MANIFEST_SCHEMA)


class ManifestError(ValueError):
    """A manifest this release cannot read; the message names the file and what is wrong."""


def raw_path(run_dir: str, tree_name: str, model: str) -> str:
    """Where a benchmark's engine output lives in a run directory: raw/<benchmark>/<model> (strings: plans are
    pure and the directory does not exist yet)."""
    return f"{run_dir.rstrip('/')}/{raw_relpath(tree_name, model)}"


def attempt_dir(run_dir: Path, attempt: int) -> Path:
    """Where `mlps-slurm resume` sets aside what attempt `attempt` of a run left (attempts/<n>/, same layout)."""
    return run_dir / "attempts" / str(attempt)


def raw_relpath(tree_name: str, model: str) -> str:
    """raw/<benchmark>/<model>, relative to the run directory (a job's declared outputs are relative)."""
    return f"raw/{tree_name}/{model}".rstrip("/")


def run_record(manifest: dict[str, Any]) -> dict[str, Any]:
    """The request and the planned settings of a run as one mapping (what the finalize and the rules read);
    later jobs' settled values (e.g. datasize.json) are read by the benchmark itself, beside this."""
    return {**manifest.get("request", {}), **manifest.get("settings", {})}


def check_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: not a JSON object; this is not an mlps-slurm manifest")
    schema = manifest.get("schema")
    if schema not in READABLE_MANIFESTS:
        raise ManifestError(f"{path}: manifest schema {schema!r} is not one this release reads "
                            f"({', '.join(READABLE_MANIFESTS)}); read it with the mlps-slurm release that wrote it "
                            f"(tool_version {manifest.get('tool_version', '?')})")
    for key, kind in (("run_id", str), ("benchmark", str), ("request", dict)):
        if not isinstance(manifest.get(key), kind):
            raise ManifestError(f"{path}: key {key!r} is missing or not a {kind.__name__}; the manifest is damaged")
    return manifest


def new_run_id(benchmark: str, now: _dt.datetime | None = None) -> str:
    """Sortable and unique even for two cron runs started in the same second."""
    now = now or _dt.datetime.now()
    return f"{benchmark}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(6)}"  # 48 bits: no birthday clash


def atomic_write_chunks(path: Path, chunks: Iterable[bytes], mode: int = 0o644) -> None:
    """Write next to the target, fsync, rename, fsync the directory: readers see the whole file or none of it.
    Streams, so a large report (10,000 preflight nodes) never has to be one bytes object."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the rename itself survives a crash of the node
    finally:
        os.close(dfd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    atomic_write_chunks(path, [data], mode)


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode(), mode)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def make_results_root(root: Path) -> None:
    """Create the results directory. Directories created inside a shared sticky directory (/dev/shm, /tmp) on the
    way to a per-user one (/shared/mlps-slurm/$USER/runs) are made like it, 1777, so the next user can create
    theirs there too; the user's own directories keep the umask's mode."""
    missing = []
    probe = root
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    shared = False
    try:
        info = probe.stat()
        mode = info.st_mode
        shared = bool(mode & stat.S_ISVTX) and bool(mode & stat.S_IWOTH)
    except OSError:
        info = None
    if missing and info is not None and stat.S_ISDIR(info.st_mode) and not os.access(probe, os.W_OK | os.X_OK):
        # Say whose directory it is: the usual cause is a shared parent another user created with a private mode.
        try:
            import pwd

            owner = pwd.getpwuid(info.st_uid).pw_name
        except (KeyError, ImportError):
            owner = str(info.st_uid)
        raise PermissionError(errno.EACCES, f"cannot create {missing[-1].name!r} here: the directory belongs to "
                                            f"{owner} with mode {stat.S_IMODE(info.st_mode):04o}; ask them to "
                                            "`chmod 1777` it, or use a results directory of your own", str(probe))
    user = os.environ.get("USER") or ""
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            pass
        if shared and directory.name != user:
            try:
                directory.chmod(0o1777)
            except PermissionError:  # another user made it first: theirs to set
                pass
        else:
            shared = False  # below the user's own directory nothing is shared


class RunDirectory:
    """One run's directory. Construct with an existing path, or create one with `RunDirectory.staged`."""

    def __init__(self, path: str | Path, final_path: str | Path | None = None) -> None:
        self.path = Path(path).resolve()
        # Where the directory will live once staged creation finishes; scripts refer to this path.
        self.final_path = Path(final_path).resolve() if final_path else self.path

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    # --- locations
    @property
    def run_id(self) -> str:
        return self.final_path.name

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def scripts(self) -> Path:
        return self.path / "scripts"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def preflight(self) -> Path:
        return self.path / "preflight"

    @property
    def raw(self) -> Path:
        return self.path / "raw"

    @property
    def results(self) -> Path:
        return self.path / "results"

    # The files shared layers read and write; each benchmark's engine output lives under raw_dir().
    @property
    def preflight_report(self) -> Path:
        return self.preflight / "preflight.json"

    @property
    def preflight_text(self) -> Path:
        return self.preflight / "preflight.txt"

    @property
    def results_json(self) -> Path:
        return self.results / "results.json"

    @property
    def results_text(self) -> Path:
        return self.results / "results.txt"

    @property
    def pin_jobs(self) -> Path:
        return self.path / "pin-jobs.txt"

    @property
    def lockfile(self) -> Path:
        return self.path / "lockfile.txt"

    @property
    def profile_file(self) -> Path:
        return self.path / "profile.resolved.yaml"

    def raw_dir(self, tree_name: str, model: str) -> Path:
        return Path(raw_path(str(self.path), tree_name, model))

    def settled(self, name: str) -> Path:
        """A file a job writes with what it settled after planning (e.g. datasize.json); never the manifest."""
        return self.path / name

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    # --- manifest
    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.is_file():
            raise FileNotFoundError(f"{self.path} is not an mlps-slurm run directory (no {MANIFEST})")
        try:
            data = read_json(self.manifest_path)
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{self.manifest_path}: not UTF-8 text ({exc.reason}); the manifest is damaged") \
                from exc
        except ValueError as exc:
            raise ManifestError(f"{self.manifest_path}: not valid JSON ({exc}); the manifest is damaged") from exc
        return check_manifest(data, self.manifest_path)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path, manifest)

    def update_manifest(self, **changes: Any) -> dict[str, Any]:
        manifest = self.read_manifest()
        manifest.update(changes)
        self.write_manifest(manifest)
        return manifest

    # --- creation
    @classmethod
    @contextmanager
    def staged(cls, results_root: Path, run_id: str) -> Iterator["RunDirectory"]:
        """Yield a run directory under a temporary name; rename it to its run id only if the block succeeds."""
        make_results_root(results_root)
        final = results_root / run_id
        if final.exists():
            raise FileExistsError(f"run directory {final} already exists; run directories are never reused")
        staging = Path(tempfile.mkdtemp(prefix=f".{run_id}.", suffix=".staging", dir=results_root))
        try:
            for sub in SUBDIRS:
                (staging / sub).mkdir(parents=True, exist_ok=True)
            yield cls(staging, final)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def resolve_run(ref: str, results_root: Path | None = None) -> RunDirectory:
    """A run given as a path, or as a run id under results_root."""
    candidates = [Path(ref)]
    if results_root is not None and results_root / ref != Path(ref):
        candidates.append(results_root / ref)
    for c in candidates:
        rd = RunDirectory(c)
        try:
            found = rd.exists()
        except PermissionError as exc:
            raise PermissionError(f"{rd.manifest_path}: permission denied ({exc.strerror}); the run belongs to "
                                  "another user: ask them, or read it as a user who may") from None
        if found:
            return rd
        if rd.manifest_path.exists() or rd.manifest_path.is_symlink():  # there, but not a regular file
            raise OSError(f"{rd.manifest_path}: not a regular file (a directory or a dangling link where the run's "
                          "manifest belongs); the run directory is damaged")
    where = " or ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no run directory at {where}")
