"""The builtin engine's entry data and .npy storage backend (reference: kvcache.md §1 "How entry data is generated",
§3.3 the NVMe backend; Rules.md 6.4.2 kvcachePosixIoModel).

Entry data: the bytes the reference's KVCacheGenerator produces for a key, byte for byte: a shared noise buffer of
128 Mi elements from default_rng(seed).uniform(-1, 1) (built in slices: the same values without the 1 GiB float64
temporary); a per-entry seed sha256(key)[:8] ^ seed; small entries copy one slice of the buffer, large ones chunks
of the buffer's size from offsets drawn from default_rng(entry_seed), wrapping around; then the anti-dedup XOR
stamp (every full 4 KiB block XOR a 4096-byte stamp from default_rng(entry_seed), its first 8 bytes XOR the block
index; a trailing partial block XOR the stamp's first bytes). `EntryData.fill` makes any 4 KiB-aligned byte range
of it, so an entry is streamed and never held whole.

Storage: one `<key>.npy` file per entry, a numpy format 1.0 header (C order, the reference's shape and dtype) and
the data. A write streams the data through the worker's fixed buffer with os.write, then fsync; host time = the
writes (the reference's np.save into the page cache; data generation is not timed, as in the reference), device
time = the fsync. A read: posix_fadvise(DONTNEED), then the whole file through the fixed buffer (the header
checked); host time = open and advice, device time = the reads (the reference's np.load span; no extra copy).
"""

from __future__ import annotations

import abc
import hashlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from numpy.lib import format as npy_format

from mlps_slurm.benchmarks.kvcache import catalog as cat

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class Timing:
    """Seconds of one tier operation, split as the reference splits them."""

    total: float
    device: float
    host: float


class NoiseBuffer:
    """The per-process noise buffer every entry is cut from."""

    def __init__(self, seed: int | None, dtype: str = "float16", elements: int = cat.NOISE_BUFFER_ELEMENTS,
                 slice_elements: int = 8 << 20) -> None:
        self.seed = 0 if seed is None else int(seed)
        self.dtype = np.dtype(dtype)
        self.elements = elements
        self.values = np.empty(elements, dtype=self.dtype)
        rng = np.random.default_rng(self.seed)
        for start in range(0, elements, slice_elements):  # consecutive draws: the same stream as one call
            stop = min(elements, start + slice_elements)
            self.values[start:stop] = rng.uniform(-1.0, 1.0, size=stop - start)
        self.bytes = self.values.view(np.uint8)

    def entry_seed(self, key: str) -> int:
        return (int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") ^ self.seed) & _MASK64


class EntryData:
    """The bytes of one entry (n elements of the buffer's dtype), produced range by range."""

    def __init__(self, noise: NoiseBuffer, key: str, elements: int) -> None:
        self.noise = noise
        self.elements = elements
        self.itemsize = noise.dtype.itemsize
        self.nbytes = elements * self.itemsize
        seed = noise.entry_seed(key)
        self._seed = seed
        self.stamp = np.random.default_rng(seed).integers(0, 0xFF, size=cat.STAMP_BYTES, dtype=np.uint8,
                                                          endpoint=True)
        b = noise.elements
        if elements <= b:
            divisor = b - elements
            self._start = seed % divisor if divisor > 0 else 0
            self._offsets: list[int] | None = None
        else:
            self._start = 0
            self._offset_rng = np.random.default_rng(seed)
            self._offsets = []

    def _chunk_offset(self, chunk: int) -> int:
        assert self._offsets is not None
        while len(self._offsets) <= chunk:  # drawn in chunk order, as the reference draws them
            self._offsets.append(int(self._offset_rng.integers(0, self.noise.elements)))
        return self._offsets[chunk]

    def _copy_elements(self, out: np.ndarray, first: int, count: int) -> None:
        """Elements [first, first + count) of the entry, before the stamp, into out (uint8)."""
        src, size, b = self.noise.bytes, self.itemsize, self.noise.elements
        if self._offsets is None:
            a = (self._start + first) * size
            out[:count * size] = src[a:a + count * size]
            return
        done = 0
        while done < count:
            e = first + done
            chunk, within = divmod(e, b)
            chunk_end = min(self.elements, (chunk + 1) * b)  # the chunk's last element + 1, in the entry
            pos = (self._chunk_offset(chunk) + within) % b
            n = min(count - done, chunk_end - e, b - pos)  # up to the chunk's end or the buffer's wrap
            out[done * size:(done + n) * size] = src[pos * size:(pos + n) * size]
            done += n

    def fill(self, out: np.ndarray, offset: int) -> int:
        """Bytes [offset, offset + len(out)) of the entry into out (uint8; offset a multiple of 4096); returns the
        number of bytes filled (less than len(out) at the entry's end)."""
        assert offset % cat.STAMP_BYTES == 0
        length = min(len(out), self.nbytes - offset)
        if length <= 0:
            return 0
        raw = out[:length]
        self._copy_elements(raw, offset // self.itemsize, length // self.itemsize)
        full_end = (self.nbytes // cat.STAMP_BYTES) * cat.STAMP_BYTES
        blocks = (min(offset + length, full_end) - offset) // cat.STAMP_BYTES if offset < full_end else 0
        if blocks:
            view = raw[:blocks * cat.STAMP_BYTES].reshape(blocks, cat.STAMP_BYTES)
            view ^= self.stamp
            first = offset // cat.STAMP_BYTES
            index = view.view(np.uint64)[:, 0]  # the first 8 bytes of each block, little-endian as the reference
            index ^= np.arange(first, first + blocks, dtype=np.uint64)
        tail = offset + length - max(offset, full_end)
        if tail > 0:
            raw[length - tail:] ^= self.stamp[:tail]
        return length

    def array(self, buffer: np.ndarray) -> np.ndarray:
        """The whole entry (uint8) in memory, for tests and small entries."""
        out = np.empty(self.nbytes, dtype=np.uint8)
        for offset in range(0, self.nbytes, len(buffer)):
            n = self.fill(buffer, offset)
            out[offset:offset + n] = buffer[:n]
        return out


def npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    """The .npy format 1.0 header np.save writes for a C-order array of this shape and dtype."""
    out = io.BytesIO()
    npy_format.write_array_header_1_0(out, {"descr": npy_format.dtype_to_descr(np.dtype(dtype)),
                                            "fortran_order": False, "shape": tuple(shape)})
    return out.getvalue()


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _ignore(nbytes: int) -> None:
    pass


class NpyStore:
    """The storage tier's files: `<directory>/<key>.npy`."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.npy"

    def clear(self) -> int:
        """Remove every top-level *.npy (the reference does this at start; mlps-slurm at the end too)."""
        removed = 0
        for p in self.directory.glob("*.npy"):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed += 1
        return removed

    def write(self, key: str, header: bytes, pieces: "PieceSource", buffer: np.ndarray,
              progress: Callable[[int], None] = _ignore) -> Timing:
        """Header and data to <key>.npy, then fsync; returns the timing. `progress(n)` after every piece written."""
        start = time.perf_counter()
        host = 0.0
        fd = os.open(self.path(key), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, memoryview(header))
            host += time.perf_counter() - start
            progress(len(header))
            for view in pieces.pieces(buffer):  # producing a piece is not timed (the reference generates first)
                t = time.perf_counter()
                _write_all(fd, view)
                host += time.perf_counter() - t
                progress(view.nbytes)
            t = time.perf_counter()
            os.fsync(fd)
            device = time.perf_counter() - t
        finally:
            os.close(fd)
        return Timing(host + device, device, host)

    def read(self, key: str, expect_bytes: int, buffer: np.ndarray,
             progress: Callable[[int], None] = _ignore) -> tuple[int, Timing]:
        """The whole file through `buffer` after dropping its cached pages; returns (file bytes, timing). Raises
        KeyError when the file is missing and ValueError when its header does not describe `expect_bytes` bytes."""
        start = time.perf_counter()
        try:
            fd = os.open(self.path(key), os.O_RDONLY)
        except FileNotFoundError:
            raise KeyError(key) from None
        try:
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass  # the reference ignores a failed advice too
            pre = time.perf_counter()
            view = memoryview(buffer)
            total = 0
            header: bytes | None = None
            while True:
                n = os.readv(fd, [view])
                if n == 0:
                    break
                if header is None:
                    header = _check_header(bytes(view[:min(n, 4096)]), expect_bytes, self.path(key))
                total += n
                progress(n)
            done = time.perf_counter()
        finally:
            os.close(fd)
        header_len = len(header) if header else 0
        if total - header_len != expect_bytes:
            raise ValueError(f"{self.path(key)}: {total - header_len} data bytes, expected {expect_bytes}")
        return total, Timing(done - start, done - pre, pre - start)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)


def _check_header(head: bytes, expect_bytes: int, path: Path) -> bytes:
    """The .npy header at the start of a file (returned); raises ValueError when it is not one for this entry."""
    stream = io.BytesIO(head)
    try:
        if npy_format.read_magic(stream) != (1, 0):
            raise ValueError("not format 1.0")
        shape, fortran, dtype = npy_format.read_array_header_1_0(stream)
    except ValueError as exc:
        raise ValueError(f"{path}: not a .npy file this engine wrote ({exc})") from None
    if fortran or int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != expect_bytes:
        raise ValueError(f"{path}: header {shape} {dtype} does not describe the entry's {expect_bytes} bytes")
    return head[:stream.tell()]


class PieceSource(abc.ABC):
    """Where a write's data comes from: generated entry data or an in-memory (CPU tier) entry."""

    @abc.abstractmethod
    def pieces(self, buffer: np.ndarray) -> Iterator[memoryview]:
        """The entry's bytes, piece by piece, each a view into `buffer` (or into the entry itself)."""


class Generated(PieceSource):
    def __init__(self, data: EntryData) -> None:
        self.data = data

    def pieces(self, buffer: np.ndarray):
        offset = 0
        while offset < self.data.nbytes:
            n = self.data.fill(buffer, offset)
            yield memoryview(buffer)[:n]
            offset += n


class InMemory(PieceSource):
    def __init__(self, array: np.ndarray, piece_bytes: int = cat.IO_CHUNK_BYTES) -> None:
        self.array = array
        self.piece_bytes = piece_bytes

    def pieces(self, buffer: np.ndarray):
        view = memoryview(self.array)
        for offset in range(0, len(self.array), self.piece_bytes):
            yield view[offset:offset + self.piece_bytes]
