"""The progress line: drawn and erased on a terminal, nothing at all in a batch log, throttled, never failing; and
bundle, bundle --check and verify drawing it on stderr only."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlps_slurm.bundle import bundle_command, check_command
from mlps_slurm.progressbar import DISABLE_ENV, MIN_INTERVAL, Progress, enabled, human_bytes, progress
from mlps_slurm.verify import verify_command
from tests.unit import rules_corpus as corpus
from tests.unit.rules_corpus import T0

ROOT = Path(__file__).resolve().parents[2]
TTY_ENV = {"TERM": "xterm"}


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal and remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def drawn(writes: list[str]) -> list[str]:
    """The lines drawn (writes that are not the final erase)."""
    return [w[1:].rstrip() for w in writes if w.strip()]


def screen(text: str) -> tuple[str, int]:
    """What a terminal line shows after `text` ("\r" returns to column 0, characters overwrite), and the cursor."""
    line: list[str] = []
    col = 0
    for ch in text:
        assert ch != "\n", "the progress line never ends a line"
        if ch == "\r":
            col = 0
            continue
        line[col:col + 1] = [ch]
        col += 1
    return "".join(line), col


def assert_erased(term: FakeTerminal) -> None:
    """Something was drawn, and the terminal line is blank at the end with the cursor at its start."""
    text = term.getvalue()
    shown, col = screen(text)
    assert text.strip() and not shown.strip() and col == 0


# --- the line itself -----------------------------------------------------------------------------------------------

def test_on_a_terminal_the_line_is_drawn_in_place_and_erased_at_the_end():
    term, clock = FakeTerminal(), Clock()
    with progress("bundle: hashing", total=4, unit="files", stream=term, clock=clock, environ=TTY_ENV) as bar:
        for _ in range(4):
            clock.now += 1
            bar.advance()
    lines = drawn(term.writes)
    assert lines[0].startswith("bundle: hashing  [--------------------]    0%  0/4 files")
    assert lines[-1] == "bundle: hashing  [####################]  100%  4/4 files"
    assert all(w.startswith("\r") and "\n" not in w for w in term.writes)  # one line, redrawn in place
    assert_erased(term)


def test_bytes_are_human_readable_with_a_rate_and_the_note_is_cut_on_the_left():
    clock = Clock()
    bar = Progress("bundle: copy, hash, gzip", total=3 << 30, unit="B", stream=FakeTerminal(), clock=clock,
                   environ=TTY_ENV)
    bar.advance(3 << 29)
    clock.now += 2
    note = "closed/acme/results/sys1/checkpointing/llama3-8b/20270115_080000/raw/checkpointing/engine.json"
    bar.note(note)
    head = "bundle: copy, hash, gzip  [##########----------]   50%  1.5 GiB / 3.0 GiB  768.0 MiB/s"
    assert bar.render(width=200) == f"{head}  {note}"
    assert bar.render(width=120) == f"{head}  .../checkpointing/engine.json"  # cut at a "/", 119 columns at most
    assert bar.render(width=40) == head[:39]  # too narrow for the note: the counts come first
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 << 20)] == ["0 B", "1023 B", "1.5 KiB", "5.0 MiB"]
    counting = Progress("verify: reading runs", unit="runs", stream=io.StringIO())  # no total: a count, no bar
    assert counting.render() == "verify: reading runs  0 runs"


def test_a_batch_log_gets_exactly_nothing():
    log = io.StringIO()  # a Slurm job's stderr: a file, not a terminal
    with progress("verify: reading runs", total=3, unit="runs", stream=log, environ=TTY_ENV) as bar:
        for _ in range(3):
            bar.note("run")
            bar.advance()
    assert log.getvalue() == "" and bar.done == 3 and bar.redraws == 0 and not bar.live


@pytest.mark.parametrize("env, draws", [
    ({DISABLE_ENV: "1", "TERM": "xterm"}, False),
    ({DISABLE_ENV: "yes"}, False),
    ({"TERM": "dumb"}, False),
    ({DISABLE_ENV: "0", "TERM": "xterm"}, True),
    ({DISABLE_ENV: "", "TERM": "xterm"}, True),
    ({}, True),
])
def test_the_environment_can_turn_it_off_on_a_terminal(env, draws):
    term = FakeTerminal()
    with progress("bundle: hashing", total=2, stream=term, environ=env) as bar:
        bar.advance(2)
    assert bool(term.getvalue()) is draws and enabled(term, env) is draws


def test_mlps_no_progress_in_the_real_environment(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv(DISABLE_ENV, "1")
    term = FakeTerminal()
    with progress("bundle: hashing", total=2, stream=term) as bar:
        bar.advance(2)
    assert term.getvalue() == ""


def test_many_advances_make_at_most_ten_redraws_a_second():
    term, clock = FakeTerminal(), Clock()
    with progress("bundle: copy, hash, gzip", total=10_000, unit="B", stream=term, clock=clock,
                  environ=TTY_ENV) as bar:
        for _ in range(10_000):  # 10 000 chunks in 2 s of the fake clock
            clock.now += 0.0002
            bar.advance(1)
    seconds = 2.0
    assert 1 + seconds / MIN_INTERVAL - 1 <= bar.redraws <= 1 + seconds / MIN_INTERVAL + 1
    assert len(drawn(term.writes)) == bar.redraws
    assert_erased(term)


def test_a_shorter_line_erases_what_the_longer_one_left():
    term, clock = FakeTerminal(), Clock()
    with progress("x", stream=term, clock=clock, environ=TTY_ENV) as bar:
        clock.now += 1
        bar.note("a-long-file-name.json")
        clock.now += 1
        bar.note("b")
    assert term.writes[-2] == "\r" + "x  0 files  b".ljust(len("x  0 files  a-long-file-name.json"))


class Broken(FakeTerminal):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    def write(self, text: str) -> int:
        raise self.exc


@pytest.mark.parametrize("exc", [BrokenPipeError(32, "Broken pipe"), ValueError("I/O operation on closed file"),
                                 OSError(28, "No space left on device")])
def test_a_failing_stream_never_raises_and_silences_the_bar(exc):
    stream = Broken(exc)
    with progress("bundle: hashing", total=3, stream=stream, environ=TTY_ENV) as bar:
        bar.advance(3)
        assert not bar.live
    closed = FakeTerminal()
    closed.close()  # isatty() of a closed file raises ValueError
    with progress("bundle: hashing", total=3, stream=closed, environ=TTY_ENV) as bar:
        bar.advance(3)
    assert not bar.live and enabled(None, TTY_ENV) is False  # sys.stderr can be None


# --- bundle and verify ---------------------------------------------------------------------------------------------

@pytest.fixture
def runs(tmp_path):
    d = tmp_path / "runs"
    corpus.checkpoint_run(d, run_id="ckpt-8b")
    corpus.checkpoint_run(d, run_id="ckpt-70b", model="llama3-70b", np_=64, nodes=16, start=T0 + 3600)
    return d


@pytest.fixture
def real_env(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv(DISABLE_ENV, raising=False)


def _run(monkeypatch, capsys, stderr, command):
    """Run a command function with `stderr` as sys.stderr; its stdout (echo=print) and what stderr got."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "stderr", stderr)
    try:
        code = command()
    finally:
        monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    return code, capsys.readouterr().out, stderr.getvalue()


def test_bundle_check_and_verify_draw_on_a_terminal_stderr_and_leave_stdout_alone(runs, tmp_path, monkeypatch,
                                                                                   capsys, real_env):
    def bundle(name):
        return lambda: bundle_command([str(runs)], "acme", "sys1", str(tmp_path / name), echo=print)

    term = FakeTerminal()
    code_tty, out_tty, err_tty = _run(monkeypatch, capsys, term, bundle("sub1"))
    code_log, out_log, err_log = _run(monkeypatch, capsys, io.StringIO(), bundle("sub2"))
    assert code_tty == code_log == 0
    assert out_tty.replace("sub1", "subN") == out_log.replace("sub2", "subN") and "\r" not in out_tty
    assert "verify: reading runs" in err_tty and "bundle: copy, hash, gzip" in err_tty
    assert "bundle: syncing to disk" in err_tty
    assert_erased(term)
    assert err_log == ""

    tarball = str(tmp_path / "sub1" / "sub1.tar.gz")
    term = FakeTerminal()
    code_tty, out_tty, err_tty = _run(monkeypatch, capsys, term, lambda: check_command(tarball, echo=print))
    code_log, out_log, err_log = _run(monkeypatch, capsys, io.StringIO(), lambda: check_command(tarball, echo=print))
    assert code_tty == code_log == 0 and "OK" in out_tty
    assert "bundle --check: reading and hashing" in err_tty and "verify: reading runs" in err_tty
    assert_erased(term)
    assert err_log == ""

    verify = lambda: verify_command([str(runs)], echo=print)  # noqa: E731
    term = FakeTerminal()
    code_tty, out_tty, err_tty = _run(monkeypatch, capsys, term, verify)
    code_log, out_log, err_log = _run(monkeypatch, capsys, io.StringIO(), verify)
    assert code_tty == code_log and out_tty == out_log and "verify: 2 run(s)" in out_tty
    assert "verify: reading runs  [--------------------]    0%  0/2 runs" in err_tty  # later draws: throttled
    assert_erased(term)
    assert err_log == ""


def test_the_cli_on_a_real_terminal_draws_on_stderr_only(runs):
    """`mlps-slurm verify --json`-style use: stdout piped to a script, stderr on a terminal (a pty)."""
    pty = pytest.importorskip("pty")
    controller, terminal = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "PYTHONPATH": str(ROOT)}
    env.pop(DISABLE_ENV, None)
    try:
        with os.fdopen(terminal, "wb") as stderr:
            proc = subprocess.run([sys.executable, "-m", "mlps_slurm", "verify", str(runs)],
                                  stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=ROOT, timeout=120)
        err = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal side is closed and everything was read
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(controller)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.decode().startswith("verify: 2 run(s)") and b"\r" not in proc.stdout
    assert b"verify: reading runs" in err and err.endswith(b"\r")

    batch = subprocess.run([sys.executable, "-m", "mlps_slurm", "verify", str(runs)], capture_output=True, env=env,
                           cwd=ROOT, timeout=120)
    assert batch.stdout == proc.stdout and batch.stderr == b""
