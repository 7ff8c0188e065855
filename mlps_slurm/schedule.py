"""Scheduled repeat runs: `mlps-slurm schedule add NAME --cron "0 2 * * 0" -- submit all ...`.

A schedule is a directory `<state dir>/schedules/<NAME>/` holding its spec (schedule.json: the cron expression, the
`mlps-slurm` arguments it submits, the retention) and its log (firings.jsonl: one line per firing: submitted,
skipped or failed, and what retention pruned). One entry in the user's scrontab (where the cluster has scrontab:
the entry is a tiny Slurm job, so the cluster runs it whoever is logged in) or else crontab on the login node runs
`mlps-slurm schedule fire NAME` at each time. A firing:

1. takes the schedule's lock (two firings never overlap; the loser records a skip);
2. skips, and records why, while the previous run of the schedule is still queued or running;
3. records the previous run, once finalized, in the history database and judges it against the runs before it
   (`mlps-slurm history compare RUN --baseline last-N`): a regression is logged and makes the firing exit 6, so the
   scrontab job shows FAILED and a site's Slurm mail or monitoring can alert;
4. submits through the ordinary `mlps-slurm submit` (its own run directory, an ordinary run), recording the run;
5. with `--keep N`, removes the schedule's runs older than its N newest, never one whose chain is still active and
   never a directory its log does not prove is that run (a run directory may be hostile).

The state directory is $MLPS_STATE_DIR, else $XDG_STATE_HOME/mlps-slurm, else ~/.local/state/mlps-slurm: on a
cluster the home directory is shared, so the scrontab job finds the spec on whichever node runs it.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from mlps_slurm.rundir import RunDirectory, atomic_write_json

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_CRON_FIELD = re.compile(r"[0-9A-Za-z*/,-]+")
_CRON_KEYWORDS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
SPEC, LOG, LOCK = "schedule.json", "firings.jsonl", ".lock"
SPEC_SCHEMA = "mlps-slurm/schedule/1"
BACKENDS = ("scrontab", "crontab")
FIRE_TIME_LIMIT = "00:15:00"  # the scrontab job only submits; the chain runs in its own jobs


class ScheduleError(RuntimeError):
    """A schedule cannot be added, fired or removed as asked; the message says why and what to do."""


def state_dir(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("MLPS_STATE_DIR"):
        return Path(env["MLPS_STATE_DIR"])
    base = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else Path.home() / ".local" / "state"
    return base / "mlps-slurm"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ScheduleError(f"schedule name {name!r}: use 1-64 letters, digits, '-' or '_' (it names a directory "
                            "and a Slurm job)")
    return name


def check_cron(expr: str) -> str:
    fields = expr.split()
    if len(fields) == 1 and fields[0] in _CRON_KEYWORDS:
        return fields[0]
    if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
        raise ScheduleError(f"--cron {expr!r}: expected five fields (minute hour day-of-month month day-of-week, e.g. "
                            f"\"0 2 * * 0\" for Sundays at 02:00) or one of {', '.join(_CRON_KEYWORDS)}")
    return " ".join(fields)


def check_argv(argv: list[str]) -> list[str]:
    if len(argv) < 2 or argv[0] != "submit":
        raise ScheduleError("after `--` give what to submit, e.g. `-- submit all --scale 0.1` or `-- submit "
                            "checkpointing --model llama3-8b`")
    for bad in ("--wait", "--json", "--test-only"):
        if bad in argv:
            raise ScheduleError(f"{bad}: a scheduled submission returns at once and records its run itself; "
                                "leave it out")
    return argv


@dataclass
class Schedule:
    name: str
    cron: str
    argv: list[str]  # the mlps-slurm arguments each firing runs: ["submit", "all", ...]
    backend: str  # scrontab or crontab
    keep: int | None = None
    baseline: int = 5  # each firing judges the previous run against this many runs before it (history)
    history_db: str = ""  # where those runs are recorded; empty: history.sqlite beside the runs
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)  # what the firing needs from today's environment
    cwd: str = ""  # where `add` ran: relative paths in argv mean what they meant then
    slurm_options: list[str] = field(default_factory=list)  # #SCRON options of the firing job
    created: str = ""
    schema: str = SPEC_SCHEMA

    def fire_command(self, state: Path) -> list[str]:
        return ["env", *(f"{k}={v}" for k, v in sorted(self.env.items())), self.python, "-m", "mlps_slurm",
                "schedule", "fire", self.name, "--state-dir", str(state)]


def schedule_dir(state: Path, name: str) -> Path:
    return state / "schedules" / check_name(name)


def load(state: Path, name: str) -> Schedule:
    path = schedule_dir(state, name) / SPEC
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        if data.get("schema") != SPEC_SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r}, expected {SPEC_SCHEMA!r}")
        spec = Schedule(**{k: data[k] for k in Schedule.__dataclass_fields__ if k in data})
        check_name(spec.name), check_cron(spec.cron), check_argv(list(spec.argv))
        if spec.backend not in BACKENDS:
            raise ValueError(f"backend {spec.backend!r}")
        return spec
    except FileNotFoundError:
        raise ScheduleError(f"no schedule {name!r} (no {path}); `mlps-slurm schedule list` shows them") from None
    except (OSError, ValueError, TypeError, KeyError, ScheduleError) as exc:
        raise ScheduleError(f"{path}: unreadable schedule ({exc}); remove it with `mlps-slurm schedule remove "
                            f"{name}` and add it again") from None


def read_log(state: Path, name: str) -> list[dict[str, Any]]:
    """The firings, oldest first; a damaged line (a crash mid-write) is skipped."""
    path = schedule_dir(state, name) / LOG
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ScheduleError(f"{path}: cannot read the schedule's log ({exc.strerror or exc})") from None
    out = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def _log(state: Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    entry = {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **entry}
    path = schedule_dir(state, name) / LOG
    with open(path, "a", encoding="utf-8") as fh:  # one short line per firing: appends do not interleave
        fh.write(json.dumps(entry) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return entry


# --- the scrontab / crontab entry ------------------------------------------------------------------------------------

def _markers(name: str) -> tuple[str, str]:
    return (f"# mlps-slurm schedule {name}: added by `mlps-slurm schedule add`; remove with "
            f"`mlps-slurm schedule remove {name}`", f"# end of mlps-slurm schedule {name}")


def entry_block(spec: Schedule, state: Path) -> list[str]:
    begin, end = _markers(spec.name)
    command = " ".join(shlex.quote(a) for a in spec.fire_command(state))
    log = shlex.quote(str(schedule_dir(state, spec.name) / "fire.log"))
    if spec.backend == "scrontab":
        # #SCRON options apply to the one entry that follows them.
        options = [f"--job-name=mlps-schedule-{spec.name}", f"--time={FIRE_TIME_LIMIT}",
                   f"--output={schedule_dir(state, spec.name)}/fire-%j.out", *spec.slurm_options]
        return [begin, *(f"#SCRON {o}" for o in options), f"{spec.cron} {command}", end]
    return [begin, f"{spec.cron} {command} >>{log} 2>&1", end]


def without_block(lines: list[str], name: str) -> list[str]:
    """The table without this schedule's block (a block cut short by hand ends at the next blank line)."""
    begin, end = _markers(name)
    out, inside = [], False
    for line in lines:
        if line == begin:
            inside = True
            continue
        if inside:
            if line == end or not line.strip():
                inside = False
            continue
        out.append(line)
    return out


class Table:
    """The user's scrontab or crontab, read and replaced whole with the tool's own -l and FILE forms."""

    def __init__(self, backend: str, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
        self.backend, self._run = backend, run

    def read(self) -> list[str]:
        try:
            proc = self._run([self.backend, "-l"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ScheduleError(f"`{self.backend} -l` failed: {exc}") from None
        if proc.returncode != 0:
            if "no crontab" in (proc.stderr + proc.stdout).lower():
                return []
            raise ScheduleError(f"`{self.backend} -l` failed: {(proc.stderr or proc.stdout).strip()}")
        return proc.stdout.splitlines()

    def write(self, lines: list[str]) -> None:
        with tempfile.NamedTemporaryFile("w", prefix="mlps-schedule-", suffix=".tab", delete=False) as fh:
            fh.write("".join(f"{line}\n" for line in lines))
        try:
            proc = self._run([self.backend, fh.name], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ScheduleError(f"`{self.backend} FILE` failed: {exc}") from None
        finally:
            os.unlink(fh.name)
        if proc.returncode != 0:
            raise ScheduleError(f"{self.backend} refused the entry: {(proc.stderr or proc.stdout).strip()}")


def pick_backend(requested: str | None, which: Callable[[str], str | None] = shutil.which,
                 scron_enabled: Callable[[], bool] | None = None) -> str:
    """scrontab where the cluster runs scrontab entries, else crontab on this login node."""
    enabled = scron_enabled or _scron_enabled
    if requested == "scrontab" or requested is None:
        if which("scrontab") and enabled():
            return "scrontab"
        if requested == "scrontab":
            raise ScheduleError("--backend scrontab: this cluster has no scrontab (the command is missing or "
                                "ScronParameters lacks `enable` in slurm.conf); use --backend crontab")
    if which("crontab"):
        return "crontab"
    raise ScheduleError("neither scrontab (with ScronParameters=enable) nor crontab is available here; ask the "
                        "site for one of them")


def _scron_enabled() -> bool:
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(line.split("=", 1)[0].strip() == "ScronParameters" and "enable" in line for line in out.splitlines())


# --- add, list, remove ---------------------------------------------------------------------------------------------

def add(state: Path, name: str, cron: str, argv: list[str], keep: int | None, backend: str | None = None,
        slurm_options: list[str] | None = None, table: Table | None = None, baseline: int = 5,
        history_db: str = "") -> Schedule:
    check_name(name)
    if keep is not None and keep < 1:
        raise ScheduleError(f"--keep {keep}: keep at least 1 run")
    spec = Schedule(name=name, cron=check_cron(cron), argv=check_argv(list(argv)), backend=pick_backend(backend),
                    keep=keep, slurm_options=list(slurm_options or []), baseline=baseline, history_db=history_db,
                    env={k: os.environ[k] for k in ("PATH", "SLURM_CONF", "PYTHONPATH", "MLPS_STATE_DIR")
                         if os.environ.get(k)},
                    created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), cwd=os.getcwd())
    directory = schedule_dir(state, name)
    if (directory / SPEC).exists():
        raise ScheduleError(f"schedule {name!r} exists ({directory}); `mlps-slurm schedule remove {name}` first")
    table = table or Table(spec.backend)
    lines = without_block(table.read(), name)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(directory / SPEC, asdict(spec))
        table.write([*lines, *entry_block(spec, state)])
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return spec


def remove(state: Path, name: str, table: Table | None = None) -> Schedule | None:
    """Remove the entry and the spec; the schedule's runs stay where they are."""
    directory = schedule_dir(state, name)
    try:
        spec: Schedule | None = load(state, name)
    except ScheduleError:
        spec = None
        if not directory.exists():
            raise
    for backend in ([spec.backend] if spec else [b for b in BACKENDS if shutil.which(b)]):
        t = table or Table(backend)
        lines = t.read()
        kept = without_block(lines, name)
        if kept != lines:
            t.write(kept)
    shutil.rmtree(directory, ignore_errors=True)
    return spec


def listing(state: Path) -> list[dict[str, Any]]:
    root = state / "schedules"
    try:
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and NAME.fullmatch(p.name))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ScheduleError(f"{root}: cannot list schedules ({exc.strerror or exc})") from None
    rows = []
    for name in names:
        row: dict[str, Any] = {"name": name}
        try:
            spec = load(state, name)
            log = read_log(state, name)
        except ScheduleError as exc:
            rows.append({**row, "problem": str(exc)})
            continue
        last = log[-1] if log else {}
        rows.append({**row, "cron": spec.cron, "backend": spec.backend, "keep": spec.keep,
                     "command": " ".join(spec.argv), "runs": sum(1 for e in log if e.get("action") == "submitted"),
                     "last": {k: last.get(k) for k in ("at", "action", "run_id", "reason") if k in last}})
    return rows


# --- firing --------------------------------------------------------------------------------------------------------

def _submit_cli(spec: Schedule) -> dict[str, Any]:
    """The ordinary submission, as the user would type it (same launch path, same checks), with --json."""
    proc = subprocess.run([spec.python, "-m", "mlps_slurm", *spec.argv, "--json"], capture_output=True, text=True,
                          timeout=3600, env={**os.environ, **spec.env}, cwd=spec.cwd or None)
    if proc.returncode != 0:
        raise ScheduleError(f"`mlps-slurm {' '.join(spec.argv)}` exited {proc.returncode}: "
                            f"{proc.stderr.strip()[-2000:]}")
    try:
        return dict(json.loads(proc.stdout))
    except (ValueError, TypeError) as exc:
        raise ScheduleError(f"`mlps-slurm {' '.join(spec.argv)}` printed no JSON document ({exc})") from None


def _recorded_run(entry: Mapping[str, Any]) -> RunDirectory | None:
    """The run a log entry names, only when its directory's manifest says it is that run."""
    run_id, run_dir = str(entry.get("run_id", "")), str(entry.get("run_dir", ""))
    if not RUN_ID.fullmatch(run_id) or not run_dir or Path(run_dir).name != run_id:
        return None
    path = Path(run_dir)
    if path.is_symlink() or not path.is_dir():
        return None
    run = RunDirectory(path)
    try:
        return run if run.read_manifest().get("run_id") == run_id else None
    except Exception:  # a damaged or foreign manifest: not provably ours
        return None


def fire(state: Path, name: str, backend: Any = None,
         submit: Callable[[Schedule], dict[str, Any]] = _submit_cli) -> dict[str, Any]:
    """One firing; returns the log entry it wrote (action submitted, skipped or failed)."""
    from mlps_slurm.chain import chain_status
    from mlps_slurm.slurm import get_backend

    spec = load(state, name)
    directory = schedule_dir(state, name)
    with open(directory / LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _log(state, name, {"action": "skipped", "reason": "another firing of this schedule is under way"})
        backend = backend or get_backend()
        submitted = [e for e in read_log(state, name) if e.get("action") == "submitted"]
        judged: dict[str, Any] | None = None
        if submitted:
            previous = _recorded_run(submitted[-1])
            if previous is not None:
                status = chain_status(previous, backend)
                if not status.finished:
                    active = ", ".join(f"{k} {s.state}" for k, _, s in status.jobs if s is not None
                                       and not s.terminal and s.state != "UNKNOWN")
                    return _log(state, name, {"action": "skipped", "previous_run": previous.run_id,
                                              "reason": f"the previous run {previous.run_id} is still "
                                                        f"{status.state.lower()} ({active})"})
                judged = judge_previous(spec, previous)
        try:
            result = submit(spec)
        except ScheduleError as exc:
            return _log(state, name, {"action": "failed", "reason": str(exc),
                                      **({"previous": judged} if submitted and judged else {})})
        entry = _log(state, name, {"action": "submitted", "run_id": result.get("run_id"),
                                   "run_dir": result.get("run_dir"), "job_ids": result.get("jobs", {}),
                                   **({"previous": judged} if submitted and judged else {})})
        if spec.keep:
            pruned = prune(state, name, spec.keep, backend)
            if pruned:
                entry["pruned"] = pruned
        return entry


def judge_previous(spec: Schedule, previous: RunDirectory) -> dict[str, Any] | None:
    """Record the previous run in the history and compare it with the `spec.baseline` runs before it; what the log
    keeps of it (None when it has no results yet). History problems are recorded, never fatal to the firing."""
    from mlps_slurm.history import HistoryError, compare_to_baseline, record

    if not previous.results_json.is_file():
        return {"run_id": previous.run_id, "verdict": "no results", "regressed": False}
    db = Path(spec.history_db) if spec.history_db else previous.path.parent / "history.sqlite"
    try:
        record(previous.path, db)
        verdicts, regressed = compare_to_baseline(db, previous.run_id, spec.baseline)
    except HistoryError as exc:
        return {"run_id": previous.run_id, "verdict": "not judged", "regressed": False, "reason": str(exc)}
    changed = [{"metric": v.name, "verdict": v.verdict, "change": v.change} for v in verdicts
               if v.verdict != "within noise"]
    return {"run_id": previous.run_id, "db": str(db), "regressed": regressed,
            "verdict": "no baseline" if not verdicts else ("regression" if regressed else "no regression"),
            "metrics": changed}


def prune(state: Path, name: str, keep: int, backend: Any) -> list[str]:
    """Remove this schedule's runs older than its `keep` newest; never an active chain, never a directory the log
    does not prove is that run. Returns the run ids removed."""
    from mlps_slurm.chain import chain_status

    log = read_log(state, name)
    already = {e.get("run_id") for e in log if e.get("action") == "pruned"}
    runs = [e for e in log if e.get("action") == "submitted" and e.get("run_id") not in already]
    removed = []
    for entry in runs[:-keep] if keep else []:
        run = _recorded_run(entry)
        if run is None:
            continue
        try:
            if not chain_status(run, backend).finished:
                continue
        except Exception:  # cannot tell: keep it
            continue
        shutil.rmtree(run.path)
        removed.append(run.run_id)
        _log(state, name, {"action": "pruned", "run_id": run.run_id, "run_dir": str(run.path)})
    return removed
