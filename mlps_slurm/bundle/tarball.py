"""Writing the bundle: the tree and its tarball in one pass, SHA256SUMS last, and the parallel gzip stream.

Each source file is read once: the bytes are hashed, copied into the tree and fed to the tar stream in the same
pass, and the gzip stream is compressed on all cores in independent blocks (pigz's method: one gzip member, each
block primed with the previous 32 KiB, so the output is ordinary gzip).
"""

from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import datetime as dt
import hashlib
import io
import os
import struct
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Callable

from mlps_slurm.bundle.layout import Entry
from mlps_slurm.progressbar import Progress, progress

GZIP_LEVEL = 6  # gzip's (and so `tar czf`'s) default level
BLOCK_BYTES = 1 << 20  # uncompressed bytes per parallel deflate block
COPY_BUFFER = 1 << 20
SUMS = "SHA256SUMS"


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


# --- the tree and the tarball --------------------------------------------------------------------------------------

class _TeeReader:
    """Feeds the tar stream while hashing the bytes and copying them into the tree: one read per source byte."""

    def __init__(self, src: BinaryIO, dest: BinaryIO, hasher: Any, bar: Progress | None = None) -> None:
        self.src, self.dest, self.hasher, self.bar = src, dest, hasher, bar

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.hasher.update(data)
        self.dest.write(data)
        if self.bar is not None:
            self.bar.advance(len(data))
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


def _sync_tree(root: Path, files: list[Path], bar: Progress) -> None:
    """Make the staged tree durable before the rename publishes it. One syncfs() flushes the whole filesystem the
    tree lives on; where it is unavailable, fsync every file and directory (counted on `bar`)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if libc.syncfs(fd) == 0:
                bar.update(len(files))
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
        bar.advance()
    for dirpath, _, _ in os.walk(root):
        fsync_dir(Path(dirpath))


def fsync_dir(path: Path) -> None:
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
    total = sum(_entry_size(e) for e in entries)
    with open(tarball, "wb") as raw_out:
        gz = ParallelGzipWriter(raw_out, level=level, workers=workers)
        try:
            with progress("bundle: copy, hash, gzip", total=total, unit="B") as bar:
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
                    bar.note(entry.arcname)
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
                            tar.addfile(info, _TeeReader(src, dest, hasher, bar))
                        os.chmod(dest_path, mode)
                    finally:
                        src.close()
                    files.append(dest_path)
                    if entry.arcname != SUMS:
                        sums.append((hasher.hexdigest(), entry.arcname))
                tar.close()
                gz.close()  # the last blocks are compressed here
        except BaseException:
            gz.abort()
            raise
        with progress("bundle: syncing to disk", total=len(files), unit="files") as bar:
            raw_out.flush()
            os.fsync(raw_out.fileno())
            _sync_tree(tree, files, bar)
    return len(files)


def _entry_size(entry: Entry) -> int:
    """Bytes the entry adds to the tree, for the progress line (0 for a source that cannot be read now: opening it
    reports the problem)."""
    if entry.data is not None:
        return len(entry.data)
    try:
        return os.stat(entry.source).st_size if entry.source is not None else 0
    except OSError:
        return 0
