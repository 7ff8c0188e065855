"""Checking a bundle tarball: every checksum, no file outside SHA256SUMS, and the rules re-run on the bundled runs."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from mlps_slurm.bundle.tarball import COPY_BUFFER, SUMS
from mlps_slurm.bundle.tree import EXIT_OK, EXIT_REFUSED
from mlps_slurm.progressbar import Progress, progress
from mlps_slurm.verify import VerifyReport, verify_runs


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


class _CountingReader:
    """The compressed tarball as tarfile reads it, its position shown on the progress line."""

    def __init__(self, raw: BinaryIO, bar: Progress) -> None:
        self.raw, self.bar = raw, bar

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.bar.advance(len(data))
        return data


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
            with open(path, "rb") as raw, \
                    progress("bundle --check: reading and hashing", total=os.fstat(raw.fileno()).st_size,
                             unit="B") as bar, \
                    gzip.GzipFile(fileobj=_CountingReader(raw, bar), mode="rb") as gz, \
                    tarfile.open(fileobj=gz, mode="r|") as tar:  # type: ignore[arg-type]
                for member in tar:
                    bar.note(member.name)
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
                # tar stops at its end-of-archive blocks; gzip checks its trailer (CRC and length) only at the
                # end of the stream: read to it, so a tarball cut short in its last bytes is caught.
                while gz.read(COPY_BUFFER):
                    pass
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            check.problems.append(f"{path}: unreadable or truncated tarball: {exc}")
            return check
        if sums_text is None:
            check.problems.append(f"{path}: has no {SUMS}")
            return check
        _compare_sums(check, hashes, sums_text, "the tarball")
        if top is None:
            check.problems.append(f"{path}: empty tarball")
            return check
        _rerun_rules(check, tmp / top)
        return check
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _compare_sums(check: BundleCheck, hashes: dict[str, str], sums_text: str, where: str) -> None:
    check.files_checked = len(hashes)
    sums, problems = _parse_sums(sums_text)
    check.problems += problems
    for name, digest in sorted(sums.items()):
        if name not in hashes:
            check.problems.append(f"{name}: listed in {SUMS} but missing from {where}")
        elif hashes[name] != digest:
            check.problems.append(f"{name}: SHA-256 mismatch (file changed after bundling): {SUMS} says "
                                  f"{digest[:16]}..., the file is {hashes[name][:16]}...")
    for name in sorted(set(hashes) - set(sums)):
        check.problems.append(f"{name}: not covered by {SUMS}")


def _rerun_rules(check: BundleCheck, root: Path) -> None:
    """The rules again on the bundled runs: each must re-verify into the division it was placed under."""
    report = verify_runs([root], submission=True)
    check.report = report
    for run in report.runs:
        rel_parts = Path(run.path).relative_to(root).parts
        placed = rel_parts[0] if rel_parts else "?"
        got = report.division_of(run).value.lower()
        if placed != got and not (placed == "open" and got == "closed"):
            check.problems.append(f"run {run.run_id} is under {placed}/ but re-verifies as {got.upper()}")
        if not run.usable:
            check.problems.append(f"run {run.run_id}: no usable result: {'; '.join(run.problems[:3])}")
    for u in report.unused:
        if u.planned:
            check.problems.append(f"{u.path}: {u.reason}")


def check_tree(tree: str | os.PathLike[str]) -> BundleCheck:
    """The same checks on a bundle directory (what `bundle` wrote beside its tarball, or an unpacked one): every
    file against SHA256SUMS (a changed byte, a file added or removed), no link or special file, then the rules.
    The tarball(s) in the directory are not part of the tree."""
    root = Path(tree)
    check = BundleCheck(str(root))
    try:
        sums_text = (root / SUMS).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        check.problems.append(f"{root / SUMS}: {exc.strerror or exc}")
        return check
    hashes: dict[str, str] = {}
    try:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]):
                path = Path(dirpath) / name
                rel = path.relative_to(root).as_posix()
                if rel == SUMS or (Path(dirpath) == root and name.endswith(".tar.gz")):
                    continue
                if path.is_symlink() or not path.is_file():
                    check.problems.append(f"{rel}: not a regular file")
                    continue
                hasher = hashlib.sha256()
                with open(path, "rb") as fh:
                    for chunk in iter(lambda: fh.read(COPY_BUFFER), b""):
                        hasher.update(chunk)
                hashes[rel] = hasher.hexdigest()
    except OSError as exc:
        check.problems.append(f"{exc.filename or root}: {exc.strerror or exc}")
        return check
    _compare_sums(check, hashes, sums_text, "the directory")
    _rerun_rules(check, root)
    return check


def check_command(tarball: str, echo: Any = print) -> int:
    """`mlps-slurm bundle --check TARBALL|DIR`."""
    result = check_tree(tarball) if Path(tarball).is_dir() else check_bundle(tarball)
    echo(result.to_text().rstrip("\n"))
    return result.exit_code
