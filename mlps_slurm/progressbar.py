"""A progress line on stderr for long local work (bundle, bundle --check, verify), silent in batch logs.

    with progress("bundle: copying+hashing", total=nbytes, unit="B") as bar:
        for chunk in chunks:
            bar.advance(len(chunk))

The line is redrawn in place with "\\r", at most ten times a second, and erased when the block ends, and only
when the stream is a terminal: a Slurm job's stderr is a file, so a finalize job's log gets nothing, nor does a
script's pipe. TERM=dumb or MLPS_NO_PROGRESS=1 turn it off on a terminal too. Only stderr is written (stdout may
carry JSON for scripts). Drawing never raises: a stream that fails (closed, broken pipe) silences the bar.

Standard library only, and cheap when silent: advance() then only adds.
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import Callable, Mapping, Protocol

DISABLE_ENV = "MLPS_NO_PROGRESS"
MIN_INTERVAL = 0.1  # seconds between redraws: a terminal fed faster only burns the CPU
BAR_WIDTH = 20
_DEFAULT_COLUMNS = 80
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


class Stream(Protocol):
    def write(self, text: str, /) -> object: ...

    def flush(self) -> None: ...

    def isatty(self) -> bool: ...


def enabled(stream: object, environ: Mapping[str, str] | None = None) -> bool:
    """Whether a progress line may be drawn on `stream`: a terminal, and the environment does not refuse it."""
    env = os.environ if environ is None else environ
    if env.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return False
    if env.get("TERM", "") == "dumb":
        return False
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):  # None (no stderr), a closed file, an object without isatty
        return False


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; bytes below 1 KiB as an integer."""
    if abs(n) < 1024:
        return f"{int(n)} B"
    for unit in _BYTE_UNITS[1:]:
        n /= 1024
        if abs(n) < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def _columns(stream: object, environ: Mapping[str, str]) -> int:
    """The terminal's width; a terminal that does not know it (a new pty says 0) counts as COLUMNS or 80."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return max(0, int(environ.get("COLUMNS", ""))) or _DEFAULT_COLUMNS
    except ValueError:
        return _DEFAULT_COLUMNS


class Progress:
    """One progress line: `label`, a bar and percentage when `total` is known, done/total in `unit` ("B" for
    bytes, shown as KiB/MiB/GiB with a rate; any other unit is a count such as "files" or "runs"), and an
    optional note (the file or run being worked on). A context manager; see the module docstring."""

    def __init__(self, label: str, total: int | None = None, unit: str = "files", *, stream: Stream | None = None,
                 clock: Callable[[], float] = time.monotonic, environ: Mapping[str, str] | None = None) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self.redraws = 0
        self._note = ""
        self._stream = sys.stderr if stream is None else stream
        self._environ = os.environ if environ is None else environ
        self._live = enabled(self._stream, self._environ)
        self._clock = clock
        self._start = clock() if self._live else 0.0
        self._last: float | None = None
        self._shown = 0  # characters of the line now on the terminal

    @property
    def live(self) -> bool:
        """Whether the line is being drawn."""
        return self._live

    def __enter__(self) -> Progress:
        self._draw(force=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._live:
            self._draw()

    def update(self, done: int) -> None:
        """Set how much is done (for work that reports a position rather than steps)."""
        self.done = done
        if self._live:
            self._draw()

    def note(self, text: str) -> None:
        """What is being worked on now, shown after the counts."""
        self._note = text
        if self._live:
            self._draw()

    def close(self) -> None:
        """Erase the line; nothing is drawn afterwards."""
        if self._live and self._shown:
            self._write("\r" + " " * self._shown + "\r")
        self._live = False
        self._shown = 0

    def render(self, width: int = _DEFAULT_COLUMNS) -> str:
        """The line as drawn on a terminal `width` columns wide (one column is left free so it never wraps)."""
        parts = [self.label]
        if self.total:
            frac = min(1.0, max(0.0, self.done / self.total))
            filled = int(frac * BAR_WIDTH)
            parts += [f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}]", f"{frac * 100:3.0f}%"]
        if self.unit == "B":
            parts.append(human_bytes(self.done) + (f" / {human_bytes(self.total)}" if self.total else ""))
            elapsed = self._clock() - self._start if self._live else 0.0
            if elapsed >= 1.0:
                parts.append(f"{human_bytes(self.done / elapsed)}/s")
        else:
            parts.append(f"{self.done}{f'/{self.total}' if self.total is not None else ''} {self.unit}")
        line, room = "  ".join(parts), width - 1
        space = room - len(line) - 2
        if self._note and space >= 8:  # the end of a long path says most: cut it on the left, at a "/" if any
            note = self._note
            if len(note) > space:
                tail = note[-(space - 3):]
                note = "..." + (tail[tail.index("/"):] if "/" in tail[:-1] else tail)
            line += "  " + note
        return line[:max(1, room)]

    def _draw(self, force: bool = False) -> None:
        if not self._live:
            return
        now = self._clock()
        if not force and self._last is not None and now - self._last < MIN_INTERVAL:
            return
        self._last = now
        line = self.render(_columns(self._stream, self._environ))
        pad = " " * max(0, self._shown - len(line))  # erase what a longer previous line left behind
        if self._write("\r" + line + pad):
            self._shown = len(line) + len(pad)
            self.redraws += 1

    def _write(self, text: str) -> bool:
        try:
            self._stream.write(text)
            self._stream.flush()
            return True
        except (OSError, ValueError, AttributeError):  # closed, broken pipe, full disk: stop drawing, never fail
            self._live = False
            self._shown = 0
            return False


def progress(label: str, total: int | None = None, unit: str = "files", *, stream: Stream | None = None,
             clock: Callable[[], float] = time.monotonic, environ: Mapping[str, str] | None = None) -> Progress:
    """A progress line for `with`: see Progress. `stream` defaults to sys.stderr (looked up now, not at import)."""
    return Progress(label, total, unit, stream=stream, clock=clock, environ=environ)
