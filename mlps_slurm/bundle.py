"""The submission bundle: a verified MLPerf Storage submission tree, its SHA256SUMS, and a tarball of both.

    <out>/                                      (the bundle directory; <name> = its name)
      closed|open/<org>/systems/<system>.yaml   generated from the preflight facts and the profile
      closed|open/<org>/results/<system>/checkpointing/<model>/{results.json, <YYYYmmdd_HHMMSS>/<the run>}
      closed|open/<org>/results/<system>/training/<model>/{datasize/<ts>/<the run>, datagen/<ts>/, run/{results.json,
                                                            <ts> x 6}}
      closed|open/<org>/results/<system>/kv_cache/<model>/{results.json, run/<ts>/<the run>}
      closed|open/<org>/results/<system>/vector_database/<INDEX>/{results.json, datasize/<ts>/, datagen/<ts>/,
                                                                   run/<ts> x 5}
      results.json, results.csv                 one row per bundled run, with its headline metrics
      verify.json, verify.txt                   the verification the bundle was built from
      SHA256SUMS                                sha256sum -c compatible, over every file above
      <name>.tar.gz                             everything above under <name>/

A run goes under the best division its verdict allows (CLOSED -> closed/, OPEN -> open/). INVALID runs and runs
without a usable result are refused with the reason; with allow_invalid an INVALID run goes under invalid/, which
no one can mistake for a submission. Each source file is read once: the bytes are hashed, copied into the tree
and fed to the tar stream in the same pass, and the gzip stream is compressed on all cores in independent blocks
(pigz's method: one gzip member, each block primed with the previous 32 KiB, so the output is ordinary gzip).
The bundle is built in a hidden staging directory beside <out> and renamed into place after everything is synced:
an interrupted build leaves no partial bundle at <out>.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import ctypes
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import struct
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Callable, Iterable, Sequence

import yaml

from mlps_slurm import __version__
from mlps_slurm.rules.core import Verdict
from mlps_slurm.rules.facts import describe_node, node_facts
from mlps_slurm.rules.loaders import FileProblem, leaves, read_json_object
from mlps_slurm.verify import RunVerdict, Unused, VerifyReport, verify_runs

GZIP_LEVEL = 6  # gzip's (and so `tar czf`'s) default level
BLOCK_BYTES = 1 << 20  # uncompressed bytes per parallel deflate block
COPY_BUFFER = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
TREE_NAMES = {"checkpointing": "checkpointing", "training": "training", "kvcache": "kv_cache",
              "vectordb": "vector_database"}
SUMS = "SHA256SUMS"
RUN_SKIP = ("submission",)  # a bundle the finalize job made inside the run directory is not part of the run
EXIT_OK, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2


class BundleError(RuntimeError):
    """The bundle cannot be built as asked; the message says why and what to change."""


# --- parallel gzip -------------------------------------------------------------------------------------------------

def _deflate_block(data: bytes, zdict: bytes, level: int, last: bool) -> bytes:
    # A raw deflate stream (wbits -15) primed with the previous 32 KiB keeps back-references across blocks; a
    # sync flush ends each block on a byte boundary so the blocks concatenate into one valid deflate stream.
    comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, *((zdict,) if zdict else ()))
    return comp.compress(data) + comp.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class ParallelGzipWriter(io.RawIOBase):
    """A write-only gzip stream compressed by a thread pool (zlib releases the GIL while deflating)."""

    def __init__(self, out: BinaryIO, level: int = GZIP_LEVEL, workers: int | None = None,
                 block: int = BLOCK_BYTES) -> None:
        super().__init__()
        self._out, self._level, self._block = out, level, block
        self._workers = max(1, workers or os.cpu_count() or 1)
        self._pool = concurrent.futures.ThreadPoolExecutor(self._workers, thread_name_prefix="gzip")
        self._pending: collections.deque[concurrent.futures.Future[bytes]] = collections.deque()
        self._buf = bytearray()
        self._prev = b""
        self._crc = 0
        self._size = 0
        # Header: no file name, mtime 0 (like gzip -n), so equal input gives an equal tarball.
        out.write(b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x00\x03")

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._crc = zlib.crc32(view, self._crc)
        self._size += len(view)
        self._buf += view
        while len(self._buf) >= self._block:
            chunk = bytes(self._buf[:self._block])
            del self._buf[:self._block]
            self._submit(chunk, last=False)
        return len(view)

    def _submit(self, chunk: bytes, last: bool) -> None:
        self._pending.append(self._pool.submit(_deflate_block, chunk, self._prev, self._level, last))
        self._prev = chunk[-32768:]
        while len(self._pending) > 2 * self._workers:  # bounded memory: a few blocks in flight per worker
            self._out.write(self._pending.popleft().result())

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._submit(bytes(self._buf), last=True)
            while self._pending:
                self._out.write(self._pending.popleft().result())
            self._out.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            super().close()

    def abort(self) -> None:
        """Stop without writing a trailer (the build failed; the file is thrown away)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        super().close()


# --- what goes where -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One file of the tree: copied from `source`, or generated `data`."""

    arcname: str
    source: Path | None = None
    data: bytes | None = None


def _timestamp(epoch: float | None, fallback: str) -> str:
    if epoch is None:
        return fallback
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y%m%d_%H%M%S")


def _files_under(root: Path, skip_top: tuple[str, ...] = ()) -> list[tuple[Path, str]]:
    """Regular files under root (sorted, relative posix paths), without hidden temp files of atomic writes."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not (rel_dir == Path(".") and d in skip_top))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or not path.is_file() or path.is_symlink():
                continue
            out.append((path, (rel_dir / name).as_posix()))
    return out


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, default=str) + "\n").encode()


def _run_summary(run: RunVerdict, division: Verdict, ts: str, path: str) -> dict[str, Any]:
    return {"run_id": run.run_id, "timestamp": ts, "path": path, "verdict": division.value, "metrics": run.metrics,
            "findings": [f.to_dict() for f in run.findings]}


def _layout(run: RunVerdict, base: str) -> tuple[list[Entry], str, str]:
    """The tree entries of one run under `base` (.../results/<system>/<benchmark>/<model>), the name of its main
    timestamp directory, and the directory that holds the per-model results.json."""
    root = Path(run.path)
    taken: set[str] = set()
    entries: list[Entry] = []
    if run.benchmark in ("checkpointing", "kvcache"):
        ts = _unique(_timestamp(run.started or run.created, run.run_id), taken)
        leaf = f"{base}/{ts}" if run.benchmark == "checkpointing" else f"{base}/run/{ts}"
        entries += [Entry(f"{leaf}/{rel}", src) for src, rel in _files_under(root, skip_top=RUN_SKIP)]
        return entries, ts, base
    # Training and vectordb: each raw run leaf becomes run/<its start time>; the run's own files (manifest,
    # scripts, preflight, logs) go to datasize/<render time>, the dataset record to datagen/<render time>.
    raw = f"raw/training/{run.model}" if run.benchmark == "training" else f"raw/vector_database/{run.model}"
    datagen, run_leaves = leaves(root, raw)
    starts = {r.name: r.start for r in getattr(run.record, "runs", ())}
    for leaf in run_leaves:
        start = starts.get(leaf.name)
        name = _unique(start.strftime("%Y%m%d_%H%M%S") if start else leaf.name, taken)
        entries += [Entry(f"{base}/run/{name}/{rel}", src) for src, rel in _files_under(leaf)]
    ts = _unique(_timestamp(run.created, run.run_id), taken)
    entries += [Entry(f"{base}/datasize/{ts}/{rel}", src)
                for src, rel in _files_under(root, skip_top=("raw", *RUN_SKIP))]
    for leaf in datagen:
        name = ts if len(datagen) == 1 else f"{ts}_{leaf.name}"  # datagen/ has its own namespace
        entries += [Entry(f"{base}/datagen/{name}/{rel}", src) for src, rel in _files_under(leaf)]
    return entries, ts, f"{base}/run" if run.benchmark == "training" else base


def system_description(runs: Sequence[RunVerdict], org: str, system: str, division: str) -> bytes:
    """systems/<system>.yaml: client node types from the preflight facts, plus what the profile declares."""
    nodes: dict[str, dict[str, Any]] = {}
    profile: dict[str, Any] = {}
    fstypes: dict[str, set[str]] = {}
    ckpt_hosts = 0
    for run in runs:
        root = Path(run.path)
        try:
            preflight = read_json_object(root / "preflight" / "preflight.json")
        except FileProblem:
            preflight = {}
        facts = node_facts(preflight)
        for node in preflight.get("nodes", []) or []:
            nodes.setdefault(str(node), describe_node(facts[node]) if node in facts else {})
        for per_node in facts.values():
            storage = per_node.get("storage")
            for sid, entry in (storage.items() if isinstance(storage, dict) else ()):
                if isinstance(entry, dict) and entry.get("fstype"):
                    fstypes.setdefault(sid, set()).add(str(entry["fstype"]))
        try:
            values = read_json_object(root / "manifest.json").get("profile", {}).get("values", {})
        except FileProblem:
            values = {}
        profile = profile or values
        if run.benchmark == "checkpointing":
            ckpt_hosts = max(ckpt_hosts, int(run.metrics.get("hosts") or 0))
    types: dict[str, dict[str, Any]] = {}
    for node, desc in sorted(nodes.items()):
        key = json.dumps(desc, sort_keys=True)
        t = types.setdefault(key, {"count": 0, "nodes": [], **(desc or {"facts": "none recorded by the preflight"})})
        t["count"] += 1
        t["nodes"].append(node)
    doc = {
        "system_name": system,
        "organization": org,
        "division": division,
        "generated_by": f"mlps-slurm {__version__}",
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(),
        "clients": {
            "node_count": len(nodes),
            "node_types": list(types.values()),
            "declared": {k: profile.get(f"nodes.{k}") for k in ("count", "cpus", "memory_gb",
                                                                 "accelerators_per_node")},
        },
        "scheduler": {"kind": "slurm", "partition": profile.get("slurm.partition"),
                      "launcher": profile.get("launcher.kind"), "mpi": profile.get("launcher.mpi"),
                      "container": profile.get("container.runtime")},
        "storage": {
            "product": None,
            "access_type": None,  # one of: Local, Remote Block, NAS, Proprietary, Object, Other
            "filesystem_type": profile.get("storage.filesystem_type"),
            "shared": profile.get("storage.shared"),
            # What the preflight saw under each benchmark directory, per storage id.
            "observed_filesystems": {sid: sorted(types) for sid, types in sorted(fstypes.items())},
        },
    }
    if ckpt_hosts:  # Rules.md §4.7.4; the rules spell the read key with two underscores
        doc["shared_capabilities"] = {"multi_host_support": ckpt_hosts > 1,
                                      "simultaneous_write_support": ckpt_hosts > 1,
                                      "simultaneous_read__support": ckpt_hosts > 1}
    doc["runs"] = [r.run_id for r in runs]
    header = (f"# {system}: system description generated by mlps-slurm {__version__} from the preflight facts of the "
              "bundled runs.\n# Fields set to null are unknown to mlps-slurm (storage product, access type): fill "
              "them in, and add the PDF, before submitting.\n")
    return (header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)).encode()


CSV_FIRST = ["run_id", "benchmark", "model", "division", "organization", "system", "timestamp", "path"]


def results_csv(rows: list[dict[str, Any]]) -> bytes:
    metric_keys = sorted({k for r in rows for k in r if k not in CSV_FIRST})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIRST + metric_keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIRST + metric_keys})
    return buf.getvalue().encode()


# --- writing -------------------------------------------------------------------------------------------------------

class _TeeReader:
    """Feeds the tar stream while hashing the bytes and copying them into the tree: one read per source byte."""

    def __init__(self, src: BinaryIO, dest: BinaryIO, hasher: Any) -> None:
        self.src, self.dest, self.hasher = src, dest, hasher

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.hasher.update(data)
        self.dest.write(data)
        return data


def _tarinfo(name: str, size: int, mtime: float, mode: int, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.size = 0 if directory else size
    info.mtime = int(mtime)
    info.mode = mode
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _sync_tree(root: Path, files: Iterable[Path]) -> None:
    """Make the staged tree durable before the rename publishes it. One syncfs() flushes the whole filesystem the
    tree lives on; where it is unavailable, fsync every file and directory."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for dirpath, _, _ in os.walk(root):
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some network filesystems refuse fsync on directories; the files themselves were synced
    finally:
        os.close(fd)


def write_tree_and_tarball(entries: list[Entry], tree: Path, tarball: Path, top: str,
                           level: int = GZIP_LEVEL, workers: int | None = None,
                           before_each: Callable[[Entry], None] | None = None) -> int:
    """Write every entry into `tree` and into `tarball` (members under `top/`), then SHA256SUMS into both.
    Returns the number of files written. `before_each` is a test hook (e.g. to simulate a crash mid-build)."""
    sums: list[tuple[str, str]] = []
    written_dirs: set[str] = set()
    files: list[Path] = []
    with open(tarball, "wb") as raw_out:
        gz = ParallelGzipWriter(raw_out, level=level, workers=workers)
        try:
            tar = tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT, copybufsize=COPY_BUFFER)

            def add_dirs(arcname: str) -> None:
                parts = PurePosixPath(arcname).parts[:-1]
                for i in range(1, len(parts) + 1):
                    d = "/".join(parts[:i])
                    if d not in written_dirs:
                        written_dirs.add(d)
                        (tree / d).mkdir(exist_ok=True)
                        tar.addfile(_tarinfo(f"{top}/{d}", 0, 0, 0o755, directory=True))

            for entry in [*entries, None]:
                if entry is None:  # last: the checksums of everything before
                    text = "".join(f"{h}  {name}\n" for h, name in sorted(sums, key=lambda s: s[1]))
                    entry = Entry(SUMS, data=text.encode())
                if before_each is not None:
                    before_each(entry)
                add_dirs(entry.arcname)
                dest_path = tree / entry.arcname
                hasher = hashlib.sha256()
                if entry.data is not None:
                    src: BinaryIO = io.BytesIO(entry.data)
                    size, mtime, mode = len(entry.data), dt.datetime.now().timestamp(), 0o644
                else:
                    assert entry.source is not None
                    src = open(entry.source, "rb")
                    st = os.fstat(src.fileno())
                    size, mtime = st.st_size, st.st_mtime
                    mode = 0o755 if st.st_mode & 0o111 else 0o644
                try:
                    with open(dest_path, "wb") as dest:
                        info = _tarinfo(f"{top}/{entry.arcname}", size, mtime, mode)
                        tar.addfile(info, _TeeReader(src, dest, hasher))
                    os.chmod(dest_path, mode)
                finally:
                    src.close()
                files.append(dest_path)
                if entry.arcname != SUMS:
                    sums.append((hasher.hexdigest(), entry.arcname))
            tar.close()
            gz.close()
        except BaseException:
            gz.abort()
            raise
        raw_out.flush()
        os.fsync(raw_out.fileno())
    _sync_tree(tree, files)
    return len(files)


# --- building ------------------------------------------------------------------------------------------------------

@dataclass
class BundleResult:
    tarball: Path
    tree: Path
    included: list[tuple[RunVerdict, Verdict]]
    refused: list[Unused]
    report: VerifyReport
    files: int = 0

    @property
    def exit_code(self) -> int:
        """Non-zero when something the user named was not bundled (a refused run, a path without runs)."""
        return EXIT_REFUSED if any(u.planned for u in self.refused) else EXIT_OK

    def to_text(self) -> str:
        lines = [f"bundle: {self.tarball}  ({self.files} files; tree {self.tree})"]
        for run, division in self.included:
            lines.append(f"  {division.value.lower():<7} {run.benchmark} {run.model}: {run.run_id}")
        if self.refused:
            lines.append("not bundled:")
            lines += [f"  {u.path}: {u.reason}" for u in self.refused]
        return "\n".join(lines) + "\n"


def _invalid_reason(run: RunVerdict, report: VerifyReport) -> str:
    group = report.group_of(run)
    bad = [f for f in run.findings + (group.findings if group else []) if f.verdict is Verdict.INVALID]
    return "INVALID: " + "; ".join(f"{f.rule_id}: {f.message}" for f in bad[:4]) + \
        " (bundle with --allow-invalid to include it under invalid/)"


def _check_name(value: str, what: str) -> None:
    if not _NAME.match(value or ""):
        raise BundleError(f"{what} {value!r} may contain only letters, digits, '.', '_' and '-' (it becomes a "
                          "directory name in the submission tree)")


def make_bundle(run_dirs: Sequence[str | os.PathLike[str]], org: str, system: str, out_dir: str | os.PathLike[str],
                *, allow_invalid: bool = False, open_division: bool = False, workers: int | None = None,
                _before_each: Callable[[Entry], None] | None = None) -> BundleResult:
    """Verify `run_dirs` as one submission and write the bundle directory `out_dir` (which must not exist)."""
    _check_name(org, "organization")
    _check_name(system, "system name")
    out = Path(out_dir).absolute()
    _check_name(out.name, "bundle directory name")
    if out.exists():
        raise BundleError(f"{out} already exists; bundles are never overwritten: choose another directory or "
                          "remove it")
    if not out.parent.is_dir():
        raise BundleError(f"the parent directory {out.parent} does not exist")
    report = verify_runs(run_dirs, submission=True)
    included: list[tuple[RunVerdict, Verdict]] = []
    refused = list(report.unused)
    for run in report.runs:
        if not run.usable:
            continue  # already in report.unused with its reason
        division = report.division_of(run)
        if division is Verdict.INVALID and not allow_invalid:
            refused.append(Unused(run.path, _invalid_reason(run, report)))
            continue
        if division is Verdict.CLOSED and open_division:
            division = Verdict.OPEN
        included.append((run, division))
    if not included:
        why = "; ".join(f"{u.path}: {u.reason}" for u in refused[:5]) or "no runs given"
        raise BundleError(f"nothing to bundle: {why}")

    entries: list[Entry] = []
    rows: list[dict[str, Any]] = []
    per_model: dict[str, dict[str, Any]] = {}
    by_division: dict[str, list[RunVerdict]] = {}
    for run, division in included:
        div = division.value.lower()
        by_division.setdefault(div, []).append(run)
        base = f"{div}/{org}/results/{system}/{TREE_NAMES[run.benchmark]}/{run.model}"
        run_entries, ts, results_dir = _layout(run, base)
        entries += run_entries
        group = report.group_of(run)
        model_doc = per_model.setdefault(f"{results_dir}/results.json", {
            "schema": "mlps-slurm/submission-results/1", "benchmark": run.benchmark, "model": run.model,
            "division": div, "runs": [],
            "submission_findings": [f.to_dict() for f in group.findings] if group else []})
        model_doc["runs"].append(_run_summary(run, division, ts, base))
        rows.append({"run_id": run.run_id, "benchmark": run.benchmark, "model": run.model, "division": div,
                     "organization": org, "system": system, "timestamp": ts, "path": base, **run.metrics})
    entries += [Entry(name, data=_json_bytes(doc)) for name, doc in sorted(per_model.items())]
    entries += [Entry(f"{div}/{org}/systems/{system}.yaml", data=system_description(runs, org, system, div))
                for div, runs in sorted(by_division.items())]
    entries += [
        Entry("results.json", data=_json_bytes({
            "schema": "mlps-slurm/bundle-results/1", "tool_version": __version__, "organization": org,
            "system": system, "created": dt.datetime.now(dt.timezone.utc).isoformat(), "runs": rows,
            "not_included": [u.to_dict() for u in refused]})),
        Entry("results.csv", data=results_csv(rows)),
        Entry("verify.json", data=_json_bytes(report.to_dict())),
        Entry("verify.txt", data=report.to_text().encode()),
    ]

    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        tarball_name = f"{out.name}.tar.gz"
        files = write_tree_and_tarball(entries, staging, staging / tarball_name, out.name, workers=workers,
                                       before_each=_before_each)
        os.rename(staging, out)
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BundleResult(out / tarball_name, out, included, refused, report, files)


def build_bundle(run_dirs: Sequence[str | os.PathLike[str]], org: str, system: str,
                 out_dir: str | os.PathLike[str], *, allow_invalid: bool = False) -> Path:
    """Build the bundle and return its tarball (`<out_dir>/<out_dir name>.tar.gz`); see make_bundle."""
    return make_bundle(run_dirs, org, system, out_dir, allow_invalid=allow_invalid).tarball


# --- checking ------------------------------------------------------------------------------------------------------

@dataclass
class BundleCheck:
    tarball: str
    problems: list[str] = field(default_factory=list)
    files_checked: int = 0
    report: VerifyReport | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_REFUSED

    def to_dict(self) -> dict[str, Any]:
        return {"tarball": self.tarball, "ok": self.ok, "files_checked": self.files_checked,
                "problems": self.problems, "verify": self.report.to_dict() if self.report else None}

    def to_text(self) -> str:
        head = f"bundle check {self.tarball}: {'OK' if self.ok else 'FAILED'} ({self.files_checked} files checked)"
        lines = [head] + [f"  problem: {p}" for p in self.problems]
        if self.report is not None:
            lines += ["", self.report.to_text().rstrip("\n")]
        return "\n".join(lines) + "\n"


def _safe_member(name: str, top: str | None) -> str | None:
    """Why a member name is unsafe or outside the bundle's top directory, or None."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts:
        return f"unsafe member path {name!r}"
    if not p.parts:
        return f"member {name!r} names no file; a bundle holds one top directory"
    if top is not None and p.parts[0] != top:
        return f"member {name!r} is outside the bundle directory {top}/"
    return None


def _parse_sums(text: str) -> tuple[dict[str, str], list[str]]:
    sums, problems = {}, []
    for n, line in enumerate(text.splitlines(), 1):
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not m:
            problems.append(f"{SUMS} line {n} is malformed: {line[:80]!r}")
            continue
        sums[m.group(2)] = m.group(1)
    return sums, problems


def check_bundle(tarball: str | os.PathLike[str], workdir: str | os.PathLike[str] | None = None) -> BundleCheck:
    """Verify every checksum of a bundle tarball and re-run the rules on the bundled runs.

    The tarball is read once: each member is extracted into a temporary directory while it is hashed. A file
    whose hash differs from SHA256SUMS, a file SHA256SUMS does not cover, a listed file that is missing, a member
    that is not a regular file or directory, and a run whose re-verified division differs from where it was put,
    are all problems. The temporary directory is removed afterwards.
    """
    check = BundleCheck(str(tarball))
    path = Path(tarball)
    if not path.is_file():
        check.problems.append(f"{path}: no such file")
        return check
    tmp = Path(tempfile.mkdtemp(prefix=".mlps-bundle-check-", dir=workdir))
    try:
        hashes: dict[str, str] = {}
        sums_text: str | None = None
        top: str | None = None
        try:
            with tarfile.open(path, mode="r|gz") as tar:
                for member in tar:
                    unsafe = _safe_member(member.name, top)
                    if unsafe:
                        check.problems.append(unsafe)
                        continue
                    top = top or PurePosixPath(member.name).parts[0]
                    rel = "/".join(PurePosixPath(member.name).parts[1:])
                    if member.isdir():
                        (tmp / member.name).mkdir(parents=True, exist_ok=True)
                        continue
                    if not member.isfile():
                        check.problems.append(f"{member.name}: not a regular file (type {member.type!r})")
                        continue
                    if rel in hashes:
                        check.problems.append(f"{member.name}: appears twice in the tarball")
                    src = tar.extractfile(member)
                    assert src is not None
                    dest = tmp / member.name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    hasher = hashlib.sha256()
                    with open(dest, "wb") as fh:
                        for chunk in iter(lambda: src.read(COPY_BUFFER), b""):
                            hasher.update(chunk)
                            fh.write(chunk)
                    if rel == SUMS:
                        sums_text = dest.read_text(encoding="utf-8", errors="replace")
                    else:
                        hashes[rel] = hasher.hexdigest()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            check.problems.append(f"{path}: unreadable or truncated tarball: {exc}")
            return check
        check.files_checked = len(hashes)
        if sums_text is None:
            check.problems.append(f"{path}: has no {SUMS}")
            return check
        sums, problems = _parse_sums(sums_text)
        check.problems += problems
        for name, digest in sorted(sums.items()):
            if name not in hashes:
                check.problems.append(f"{name}: listed in {SUMS} but missing from the tarball")
            elif hashes[name] != digest:
                check.problems.append(f"{name}: SHA-256 mismatch (file changed after bundling): {SUMS} says "
                                      f"{digest[:16]}..., the file is {hashes[name][:16]}...")
        for name in sorted(set(hashes) - set(sums)):
            check.problems.append(f"{name}: not covered by {SUMS}")
        if top is None:
            check.problems.append(f"{path}: empty tarball")
            return check
        report = verify_runs([tmp / top], submission=True)
        check.report = report
        for run in report.runs:
            rel_parts = Path(run.path).relative_to(tmp / top).parts
            placed = rel_parts[0] if rel_parts else "?"
            got = report.division_of(run).value.lower()
            if placed != got and not (placed == "open" and got == "closed"):
                check.problems.append(f"run {run.run_id} is under {placed}/ but re-verifies as {got.upper()}")
            if not run.usable:
                check.problems.append(f"run {run.run_id}: no usable result: {'; '.join(run.problems[:3])}")
        for u in report.unused:
            if u.planned:
                check.problems.append(f"{u.path}: {u.reason}")
        return check
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- command-line entry points ----------------------------------------------------------------------------------

def bundle_command(run_dirs: Sequence[str], org: str, system: str, out_dir: str, allow_invalid: bool = False,
                   echo: Any = print) -> int:
    """`mlps-slurm bundle RUN... --org ORG --system NAME [--output DIR] [--allow-invalid]`."""
    try:
        result = make_bundle(run_dirs, org, system, out_dir, allow_invalid=allow_invalid)
    except BundleError as exc:
        echo(f"mlps-slurm: error: {exc}")
        return EXIT_ERROR
    echo(result.to_text().rstrip("\n"))
    return result.exit_code


def check_command(tarball: str, echo: Any = print) -> int:
    """`mlps-slurm bundle --check TARBALL`."""
    result = check_bundle(tarball)
    echo(result.to_text().rstrip("\n"))
    return result.exit_code


__all__ = ["BundleCheck", "BundleError", "BundleResult", "build_bundle", "bundle_command",
           "check_bundle", "check_command", "make_bundle"]
