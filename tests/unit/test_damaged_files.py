"""Every command that reads a file, fed a corpus of damaged files (non-UTF-8, truncated, empty, the wrong JSON type, a
directory where the file belongs): a message naming the path, a non-zero exit, never a traceback.

In-process through click's runner: an exception that escapes a command is `result.exception` (a traceback for a
user). Slurm is pointed at a missing slurm.conf, so a command that got past the damage to Slurm fails the test by
not naming the damaged path."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlps_slurm.cli.main import main
from mlps_slurm.schedule import Schedule
from tests.unit.rules_corpus import checkpoint_run

DAMAGE = ("non-utf8", "truncated", "empty", "wrong-type", "directory")


def damage(path: Path, kind: str) -> None:
    text = path.read_bytes() if path.is_file() else b"{}"
    path.unlink()
    if kind == "non-utf8":
        path.write_bytes(b"\xff\xfe\x00{" + text[:40])
    elif kind == "truncated":
        path.write_bytes(text[: max(1, len(text) // 2)])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "wrong-type":
        path.write_bytes(b"[1, 2, 3]\n")
    else:
        path.mkdir()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "no-slurm.conf"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("MLPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLPS_NO_PROGRESS", "1")
    return tmp_path


def run_cli(*args: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(main, list(args))
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else ""), escaped


def assert_clean_error(args: tuple[str, ...], damaged: Path) -> None:
    code, output, escaped = run_cli(*args)
    assert escaped is None, f"{args}: traceback {escaped!r}"
    assert code != 0, f"{args}: exit 0 on a damaged {damaged}: {output}"
    assert str(damaged) in output or damaged.name in output, f"{args}: the message does not name {damaged}: {output}"


def finalized_run(root: Path) -> Path:
    return checkpoint_run(root / "runs", run_id="checkpointing-20270115-010000-aaaaaa", scale=0.001)


# The commands that read a run directory's manifest, and their argument lists.
MANIFEST_READERS = {
    "status": lambda run, tmp: ("status", str(run)),
    "status-json": lambda run, tmp: ("status", str(run), "--json"),
    "cancel": lambda run, tmp: ("cancel", str(run)),
    "resume": lambda run, tmp: ("resume", str(run), "--dry-run"),
    "verify": lambda run, tmp: ("verify", str(run)),
    "bundle": lambda run, tmp: ("bundle", str(run), "-O", str(tmp / "bundle"), "--allow-invalid"),
    "report": lambda run, tmp: ("report", str(run), "-o", str(tmp / "report.html")),
    "history-ingest": lambda run, tmp: ("history", "ingest", str(run), "--db", str(tmp / "h.sqlite")),
}


@pytest.mark.parametrize("kind", DAMAGE)
@pytest.mark.parametrize("command", sorted(MANIFEST_READERS))
def test_a_damaged_manifest(env, command, kind):
    run = finalized_run(env)
    damage(run / "manifest.json", kind)
    assert_clean_error(MANIFEST_READERS[command](run, env), run / "manifest.json")


@pytest.mark.parametrize("kind", DAMAGE)
@pytest.mark.parametrize("command", ["verify", "bundle", "report", "history-ingest"])
def test_a_damaged_results_file(env, command, kind):
    run = finalized_run(env)
    damage(run / "results" / "results.json", kind)
    assert_clean_error(MANIFEST_READERS[command](run, env), run / "results" / "results.json")


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_engine_output_under_verify(env, kind):
    run = finalized_run(env)
    engine = next(run.rglob("engine.json"))
    damage(engine, kind)
    assert_clean_error(("verify", str(run)), engine)


@pytest.mark.parametrize("kind", ("non-utf8", "truncated", "directory"))
@pytest.mark.parametrize("command", ["validate", "render", "show"])
def test_a_damaged_profile(env, command, kind):
    profile = env / "mysite.yaml"
    profile.write_text("name: mysite\nextends: localhost\nslurm:\n  partition: debug\n  qos: normal\n")
    damage(profile, kind)
    args = {"validate": ("profiles", "validate", str(profile)),
            "show": ("profiles", "show", str(profile), "--resolved"),
            "render": ("render", "checkpointing", "--model", "llama3-8b", "--profile", str(profile),
                       "--results-dir", str(env / "out"))}[command]
    if kind == "truncated":  # half a YAML file may still parse; cut it inside a flow mapping so it cannot
        profile.write_text("name: mysite\nslurm: {partition: debug, qos: ")
    assert_clean_error(args, profile)
    assert not (env / "out").exists() or not any((env / "out").iterdir())


@pytest.mark.parametrize("kind", ("non-utf8", "directory", "empty"))
def test_a_damaged_lockfile(env, kind):
    lock = env / "lockfile.txt"
    lock.write_text("click==8.1.7\n")
    damage(lock, kind)
    if kind == "empty":
        return  # an empty lockfile pins nothing: a valid (if useless) lockfile, checked elsewhere
    assert_clean_error(("lockfile", "verify", str(lock)), lock)


@pytest.mark.parametrize("kind", ("truncated", "not-gzip", "directory-member-missing", "empty"))
def test_a_damaged_bundle_under_check(env, kind):
    run = finalized_run(env)
    code, output, escaped = run_cli("bundle", str(run), "-O", str(env / "b"), "--allow-invalid", "--org", "o",
                                    "--system", "s")
    assert code == 0 and escaped is None, output
    (tarball,) = (env / "b").glob("*.tar.gz")
    data = tarball.read_bytes()
    if kind == "truncated":
        tarball.write_bytes(data[: len(data) // 2])
        target = tarball
    elif kind == "not-gzip":
        tarball.write_bytes(b"this is not a tarball\n")
        target = tarball
    elif kind == "empty":
        tarball.write_bytes(b"")
        target = tarball
    else:  # the tree: one checksummed file removed
        with tarfile.open(tarball) as tar:
            assert tar.getmembers()
        victim = next(p for p in (env / "b").rglob("engine.json"))
        victim.unlink()
        target = victim
        code, output, escaped = run_cli("bundle", "--check", str(env / "b"))
        assert escaped is None and code != 0 and "engine.json" in output, output
        return
    assert_clean_error(("bundle", "--check", str(target)), target)


def test_the_corpus_is_exercised_on_an_intact_run_first(env):
    """The same commands on the undamaged run pass (so the failures above come from the damage)."""
    run = finalized_run(env)
    code, output, escaped = run_cli("verify", str(run), "--allow-invalid")
    assert code == 0 and escaped is None, output
    code, output, escaped = run_cli("history", "ingest", str(run), "--db", str(env / "h.sqlite"))
    assert code == 0 and escaped is None, output
    shutil.rmtree(run)


@pytest.mark.parametrize("kind", DAMAGE)
@pytest.mark.parametrize("which", ["schedule.json", "firings.jsonl"])
def test_a_damaged_schedule_state(env, which, kind):
    state = env / "state"
    sched = state / "schedules" / "weekly"
    sched.mkdir(parents=True)
    spec = Schedule(name="weekly", cron="0 2 * * 0", argv=["submit", "all"], backend="crontab")
    (sched / "schedule.json").write_text(json.dumps(dataclasses.asdict(spec)))
    (sched / "firings.jsonl").write_text(json.dumps({"action": "skipped", "reason": "x"}) + "\n")
    damage(sched / which, kind)
    code, output, escaped = run_cli("schedule", "list", "--state-dir", str(state))
    assert escaped is None, f"schedule list: traceback {escaped!r}"
    if code != 0:  # refusing is fine when it names the file; a damaged log line is read around
        assert which in output, output
    if which == "schedule.json":  # a firing never submits what a damaged spec might have said
        assert_clean_error(("schedule", "fire", "weekly"), sched / which)


@pytest.mark.parametrize("content", [b"not a database at all\n" * 10, b"\xff" * 4096])
def test_a_damaged_history_database(env, content):
    db = env / "h.sqlite"
    db.write_bytes(content)
    for args in (("history", "list", "--db", str(db)), ("history", "show", "x", "--db", str(db))):
        code, output, escaped = run_cli(*args)
        assert escaped is None, f"{args}: traceback {escaped!r}"
        assert code != 0 and str(db) in output, f"{args}: {output}"
