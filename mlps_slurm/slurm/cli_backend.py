"""Slurm through its command-line tools. Works with Slurm 22.05 and later; pyslurm is not required.

22.05 quirks handled here: `squeue --json` ignores -j filters, so states come from `squeue -j` with a format; squeue
prints no exit codes and forgets a job after MinJobAge, so finished jobs are looked up in accounting (sacct, which
needs slurmdbd) or in the job-completion record (jobcomp/filetxt) in one batched query.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlps_slurm.hostlist import expand
from mlps_slurm.slurm.base import Dependency, JobState, SlurmError, SlurmUnreachable

# sbatch --parsable prints "<id>" or "<id>;<cluster>".
_JOB_ID = re.compile(r"^(\d+)(?:;[\w.-]+)?$")
# Errors worth retrying: the controller is busy or restarting (cf. ReFrame's Slurm scheduler).
_TRANSIENT = re.compile(
    r"Socket timed out|Slurm temporarily unable|Resource temporarily unavailable|"
    r"Transport endpoint is not connected|Zero Bytes were transmitted or received|"
    r"Batch job submission failed: (Job violates accounting/QOS policy.*MaxSubmit|Slurm controller not responding)",
    re.I,
)
_UNREACHABLE = re.compile(r"Unable to contact slurm controller|Connection refused|Could not establish a configuration"
                          r"|Couldn't find the specified plugin name|cannot find auth plugin|No such file or directory.*slurm.conf"
                          r"|Communication connection failure", re.I)
_START_CLUSTER_HINT = ("start the local cluster with `bin/mlps-local-cluster up` (or `make cluster`), or point "
                       "SLURM_CONF at your site's slurm.conf")


def scrubbed_env() -> dict[str, str]:
    """The environment for sbatch without SBATCH_* variables, which would silently override the script's options."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SBATCH_")}


# A chain's jobs carry "--comment=mlps-slurm:<run id>:<job key>[:<attempt>]": what a lost sbatch answer is found by.
COMMENT_PREFIX = "mlps-slurm:"

# squeue columns: job id, array job id, array task id(s), state, reason, nodes, start time, time used, submit
# time, name, comment (last: free text).
_SQUEUE_FORMAT = "%A|%F|%K|%T|%r|%N|%S|%M|%V|%j|%k"


def _blank(value: str) -> str:
    return "" if value in ("N/A", "Unknown", "None", "(null)", "4294967294") else value


def _squeue_row(line: str, wanted: set[str]) -> tuple[str, JobState] | None:
    parts = line.split("|", 10)
    if len(parts) != 11:
        return None
    jid, array_id, task, state, reason, nodes, start, used, submit, name, comment = parts
    owner = array_id if array_id in wanted else jid
    if owner not in wanted:
        return None
    return owner, JobState(job_id=jid, name=name, state=state.split()[0] if state else "UNKNOWN", reason=reason,
                           nodes=_blank(nodes), array_task=_blank(task),
                           start=_blank(start), elapsed=_blank(used), source="squeue", submit=_blank(submit),
                           comment=_blank(comment))


def _sacct_rows(text: str, wanted: set[str]) -> dict[str, list[JobState]]:
    out: dict[str, list[JobState]] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 8:
            continue
        raw, shown, state, exit_code, nodes, start, elapsed, name = parts[:8]
        submit, comment = (parts[8], "|".join(parts[9:])) if len(parts) >= 10 else ("", "")
        array_id, _, task = shown.partition("_")
        owner = array_id if array_id in wanted else raw
        if owner not in wanted:
            continue
        out.setdefault(owner, []).append(JobState(
            job_id=raw, name=name, state=state.split()[0] if state else "UNKNOWN", reason="", exit_code=exit_code,
            nodes=_blank(nodes), array_task=task if task.isdigit() else "", start=_blank(start), elapsed=elapsed,
            source="sacct", submit=_blank(submit), comment=_blank(comment)))
    return out


def _elapsed(start: str, end: str) -> str:
    import datetime as dt

    try:
        seconds = int((dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds())
    except ValueError:
        return ""
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _jobcomp_rows(path: Path, wanted: set[str]) -> dict[str, list[JobState]]:
    """jobcomp/filetxt: one `Key=Value ...` line per finished job; a requeued job's last line wins."""
    latest: dict[str, dict[str, str]] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if "JobId=" not in line:
                    continue
                fields = dict(token.split("=", 1) for token in line.split() if "=" in token)
                jid, array_id = fields.get("JobId", ""), fields.get("ArrayJobId", "")
                if jid in wanted or array_id in wanted:
                    latest[jid] = fields
    except OSError:
        return {}
    out: dict[str, list[JobState]] = {}
    for jid, fields in latest.items():
        array_id, task = fields.get("ArrayJobId", ""), _blank(fields.get("ArrayTaskId", ""))
        owner = array_id if array_id in wanted else jid
        out.setdefault(owner, []).append(JobState(
            job_id=jid, name=fields.get("Name", ""), state=fields.get("JobState", "UNKNOWN"), reason="",
            exit_code=fields.get("ExitCode", ""), nodes=_blank(fields.get("NodeList", "")),
            array_task=task if task.isdigit() else "", start=_blank(fields.get("StartTime", "")),
            elapsed=_elapsed(fields.get("StartTime", ""), fields.get("EndTime", "")), source="jobcomp",
            submit=_blank(fields.get("SubmitTime", ""))))
    return out


def _window_row(line: str, source: str) -> JobState | None:
    """sacct/squeue row: raw id|shown id|state|nodes|start|end|name|user|comment."""
    parts = line.split("|")
    if len(parts) < 9:
        return None
    raw, shown, state, nodes, start, end, name, user = parts[:8]
    _, _, task = shown.partition("_")
    return JobState(job_id=raw, name=name, state=state.split()[0] if state else "UNKNOWN", reason="",
                    nodes=_blank(nodes), array_task=task if task.isdigit() else "", start=_blank(start),
                    end=_blank(end), source=source, user=user, comment=_blank("|".join(parts[8:])))


def _jobcomp_window(path: Path, nodes: set[str], start: str, end: str) -> list[JobState]:
    """Ended jobs of jobcomp/filetxt that ran on any of `nodes` and overlapped [start, end]."""
    out: dict[str, JobState] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if "JobId=" not in line or "NodeList=" not in line:
                    continue
                fields = dict(token.split("=", 1) for token in line.split() if "=" in token)
                began, ended = fields.get("StartTime", ""), fields.get("EndTime", "")
                if not began or began in ("Unknown", "None") or began > end or (ended and ended < start):
                    continue  # ISO local times of one clock compare as text
                try:
                    ran_on = set(expand(fields.get("NodeList", "")))
                except ValueError:
                    continue
                if not ran_on & nodes:
                    continue
                task = fields.get("ArrayTaskId", "")
                out[fields["JobId"]] = JobState(
                    job_id=fields["JobId"], name=fields.get("Name", ""), state=fields.get("JobState", "UNKNOWN"),
                    reason="", nodes=fields.get("NodeList", ""), array_task=task if task.isdigit() else "",
                    start=began, end=ended, source="jobcomp", user=fields.get("UserId", "").split("(")[0])
    except OSError:
        return []
    return list(out.values())


class CliSlurm:
    def __init__(self, retries: int = 3, retry_delay: float = 1.0, timeout: float = 60.0) -> None:
        self.retries = retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self._conf: dict[str, str] | None = None

    # --- plumbing
    def _run(self, argv: list[str], *, retry: bool = True) -> subprocess.CompletedProcess[str]:
        attempts = self.retries if retry else 1
        last: subprocess.CompletedProcess[str] | None = None
        for attempt in range(attempts):
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, env=scrubbed_env(), timeout=self.timeout)
            except FileNotFoundError as exc:
                raise SlurmUnreachable(f"`{argv[0]}` is not installed or not on PATH; {_START_CLUSTER_HINT}") from exc
            except subprocess.TimeoutExpired as exc:
                raise SlurmUnreachable(f"`{' '.join(argv[:2])}` did not answer within {self.timeout:.0f} s; "
                                       f"{_START_CLUSTER_HINT}") from exc
            if proc.returncode == 0:
                return proc
            last = proc
            if not _TRANSIENT.search(proc.stderr) or attempt == attempts - 1:
                break
            time.sleep(self.retry_delay * (2 ** attempt))
        assert last is not None
        err = last.stderr.strip() or last.stdout.strip()
        if _UNREACHABLE.search(err):
            raise SlurmUnreachable(f"Slurm is not reachable ({argv[0]}: {err}); {_START_CLUSTER_HINT}")
        raise SlurmError(f"`{' '.join(argv)}` failed (exit {last.returncode}): {err}", stderr=err)

    # --- the seam
    def ping(self) -> None:
        conf = os.environ.get("SLURM_CONF")
        if conf and not os.path.isfile(conf):
            # scontrol would retry reading it for 60 s before giving up
            raise SlurmUnreachable(f"Slurm is not reachable: SLURM_CONF={conf} does not exist; {_START_CLUSTER_HINT}")
        try:
            proc = self._run(["scontrol", "ping"], retry=False)
        except SlurmError as exc:  # whatever the cause (no config, no munge, no controller), nothing can be submitted
            raise SlurmUnreachable(str(exc) if isinstance(exc, SlurmUnreachable) else
                                   f"Slurm is not reachable ({exc}); {_START_CLUSTER_HINT}") from exc
        if " is UP" not in proc.stdout:
            raise SlurmUnreachable(f"Slurm is not reachable: {proc.stdout.strip()}; {_START_CLUSTER_HINT}")

    def submit(self, script: Path, dependencies: list[Dependency], extra_args: list[str] | None = None,
               test_only: bool = False, token: str | None = None) -> str:
        """sbatch the script. With a `token` (unique per job of a chain), a submission whose answer was lost (a
        timeout or a transient error after the controller had queued the job) is found by the token before any
        retry, so a retry never queues the job twice; when it gives up, whatever it queued under the token is
        cancelled, held jobs included."""
        argv = ["sbatch", "--parsable"]
        if dependencies:
            argv.append("--dependency=" + ",".join(d.render() for d in dependencies))
            # Without it a job whose afterok dependency failed stays PENDING forever.
            argv.append("--kill-on-invalid-dep=yes")
        if test_only:
            argv.append("--test-only")
        if token and not test_only:
            argv.append(f"--comment={COMMENT_PREFIX}{token}")
        argv += list(extra_args or [])
        argv.append(str(script))
        if test_only or not token:
            proc = self._run(argv)
        else:
            proc = self._submit_once(argv, token)
            if isinstance(proc, str):
                return proc
        if test_only:
            return (proc.stderr or proc.stdout).strip()
        out = proc.stdout.strip().splitlines()
        match = _JOB_ID.match(out[-1].strip()) if out else None
        if not match:
            raise SlurmError(f"sbatch printed no job id for {script}: {proc.stdout!r} {proc.stderr!r}")
        return match.group(1)

    def _submit_once(self, argv: list[str], token: str) -> subprocess.CompletedProcess[str] | str:
        """sbatch with retries on transient errors and timeouts; before each retry, the job id already queued under
        `token` if there is one (returned as a str)."""
        problem = ""
        for attempt in range(self.retries):
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, env=scrubbed_env(), timeout=self.timeout)
            except FileNotFoundError as exc:
                raise SlurmUnreachable(f"`sbatch` is not installed or not on PATH; {_START_CLUSTER_HINT}") from exc
            except subprocess.TimeoutExpired:
                proc, problem = None, f"sbatch did not answer within {self.timeout:.0f} s"
            if proc is not None:
                if proc.returncode == 0:
                    return proc
                problem = (proc.stderr or proc.stdout).strip()
                if not _TRANSIENT.search(proc.stderr):
                    break
            queued = self.jobs_with_token(token)
            if queued:
                return queued[0]  # the controller had queued it: the answer was lost, not the job
            if attempt < self.retries - 1:
                time.sleep(self.retry_delay * (2 ** attempt))
        queued = self.jobs_with_token(token)
        self.cancel(queued)  # giving up: nothing it may have queued stays behind
        if _UNREACHABLE.search(problem):
            raise SlurmUnreachable(f"Slurm is not reachable (sbatch: {problem}); {_START_CLUSTER_HINT}")
        raise SlurmError(f"`{' '.join(argv)}` failed: {problem}"
                         + (f" (cancelled job(s) {', '.join(queued)} it had queued)" if queued else ""),
                         stderr=problem)

    def jobs_with_token(self, token: str) -> list[str]:
        """The ids of this user's jobs (any state squeue still shows) whose comment is the token; [] when squeue
        cannot say."""
        try:
            proc = subprocess.run(["squeue", "-h", "--me", "--states=all", "-o", "%A|%k"], capture_output=True,
                                  text=True, env=scrubbed_env(), timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired):
            return []
        wanted = f"{COMMENT_PREFIX}{token}"
        return [line.split("|", 1)[0] for line in proc.stdout.splitlines()
                if line.split("|", 1)[-1].strip() == wanted and line.split("|", 1)[0].isdigit()]

    def job_exists(self, job_id: str) -> bool:
        try:
            proc = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True,
                                  env=scrubbed_env(), timeout=self.timeout)
        except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
            raise SlurmUnreachable(f"cannot ask Slurm about job {job_id}: {exc}; {_START_CLUSTER_HINT}") from exc
        return proc.returncode == 0 and (f"JobId={job_id} " in proc.stdout or f"ArrayJobId={job_id} " in proc.stdout)

    def states(self, job_ids: list[str]) -> dict[str, list[JobState]]:
        """The jobs' states (an array job: one entry per task). Slurm calls, whatever the number of jobs: one squeue
        restricted to these ids, and at most one batched accounting query (sacct where slurmdbd exists, else the
        job-completion record) for the jobs squeue no longer knows and the exit codes of finished ones."""
        wanted = set(job_ids)
        found: dict[str, list[JobState]] = {j: [] for j in job_ids}
        if not job_ids:
            return found
        proc = self._run(["squeue", "-h", "--states=all", "-j", ",".join(job_ids), "-o", _SQUEUE_FORMAT])
        for line in proc.stdout.splitlines():
            row = _squeue_row(line, wanted)
            if row is not None:
                found[row[0]].append(row[1])
        need = [j for j, states in found.items() if not states or any(s.terminal for s in states)]
        if need:
            accounted = self._accounting(need)
            for jid in need:
                records = accounted.get(jid, [])
                if not found[jid]:
                    found[jid] = records
                    continue
                exit_codes = {r.job_id: r.exit_code for r in records}
                found[jid] = [replace(s, exit_code=exit_codes.get(s.job_id, s.exit_code)) for s in found[jid]]
        for jid, states in found.items():
            if not states:
                found[jid] = [JobState(job_id=jid, name="", state="UNKNOWN",
                                       reason="Slurm no longer remembers this job (older than MinJobAge) and has "
                                              "no accounting or job-completion record of it")]
        return found

    def _config(self) -> dict[str, str]:
        if self._conf is None:
            self._conf = self.config()
        return self._conf

    def _accounting(self, job_ids: list[str]) -> dict[str, list[JobState]]:
        """Final states from accounting: sacct when slurmdbd stores them, else jobcomp/filetxt's file; {} when the
        cluster keeps neither."""
        conf = self._config()
        wanted = set(job_ids)
        if not conf.get("AccountingStorageType", "accounting_storage/none").endswith("/none"):
            proc = self._run(["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "--format",
                              "JobIDRaw,JobID,State,ExitCode,NodeList,Start,Elapsed,JobName,Submit,Comment"],
                             retry=False)
            return _sacct_rows(proc.stdout, wanted)
        if conf.get("JobCompType") == "jobcomp/filetxt" and conf.get("JobCompLoc"):
            return _jobcomp_rows(Path(conf["JobCompLoc"]), wanted)
        return {}

    def release(self, job_id: str) -> None:
        self._run(["scontrol", "release", job_id])

    def cancel(self, job_ids: list[str]) -> None:
        if job_ids:
            subprocess.run(["scancel", *job_ids], capture_output=True, text=True, env=scrubbed_env(),
                           timeout=self.timeout)

    def jobs_on_nodes(self, nodes: list[str], start: str, end: str) -> list[JobState]:
        """One Slurm call: sacct (jobs running at any time in the window on those nodes) where slurmdbd keeps
        accounting; otherwise squeue for the jobs still running there plus the job-completion file for the ended
        ones (read, not a Slurm call), filtered here by node and time."""
        hostlist = ",".join(nodes)
        if not hostlist:
            return []
        conf = self._config()
        if not conf.get("AccountingStorageType", "accounting_storage/none").endswith("/none"):
            proc = self._run(["sacct", "-n", "-P", "-X", "-a", "-s", "R", "-S", start, "-E", end, "-N", hostlist,
                              "--format", "JobIDRaw,JobID,State,NodeList,Start,End,JobName,User,Comment"],
                             retry=False)
            return [s for s in (_window_row(line, "sacct") for line in proc.stdout.splitlines()) if s]
        proc = self._run(["squeue", "-h", "-a", "-t", "RUNNING,COMPLETING", "-w", hostlist,
                          "-o", "%A|%i|%T|%N|%S|%e|%j|%u|%k"])
        found = [s for s in (_window_row(line, "squeue") for line in proc.stdout.splitlines()) if s]
        found = [replace(s, end="") for s in found]  # squeue's %e of a running job is its time limit, not an end
        if conf.get("JobCompType") == "jobcomp/filetxt" and conf.get("JobCompLoc"):
            wanted = set(expand(",".join(nodes)))
            seen = {s.job_id for s in found}
            found += [s for s in _jobcomp_window(Path(conf["JobCompLoc"]), wanted, start, end)
                      if s.job_id not in seen]
        return found

    # --- cluster facts for `profiles validate --live` and `profiles init --from-cluster`
    def partitions(self) -> list[dict[str, Any]]:
        """One entry per partition (see parse_sinfo): name, state (up/down...), max_time, nodes, cpus, memory_mb,
        default, and its node groups with their features and gres."""
        return parse_sinfo(self._run(["sinfo", "-h", "-o", SINFO_FORMAT]).stdout)

    def reservations(self) -> dict[str, dict[str, str]]:
        """Every reservation's fields (ReservationName=... Users=... State=...) by name; {} when there is none."""
        proc = self._run(["scontrol", "-o", "show", "reservation"])
        return parse_reservations(proc.stdout)

    def mpi_plugins(self) -> list[str]:
        """The --mpi values srun accepts here (`srun --mpi=list`, which asks no controller)."""
        proc = self._run(["srun", "--mpi=list"], retry=False)
        return parse_mpi_list(proc.stdout + proc.stderr)

    def config(self) -> dict[str, str]:
        proc = self._run(["scontrol", "show", "config"])
        conf = {}
        for line in proc.stdout.splitlines():
            if " = " in line:
                key, _, value = line.partition(" = ")
                conf[key.strip()] = value.strip()
        return conf

    def associations(self, kind: str) -> set[str]:
        """Names of accounts or QoS known to accounting (sacctmgr); needs slurmdbd."""
        proc = self._run(["sacctmgr", "-nP", "show", kind, "format=name"])
        return {line.strip() for line in proc.stdout.splitlines() if line.strip()}



# sinfo columns: partition (default marked *), availability, MaxTime, node count, CPUs, memory (MB), available
# features, gres. Without --exact sinfo folds nodes differing only in CPUs or memory into one row ("32+", the
# minimum), but prints one row per distinct feature or gres set: a heterogeneous partition takes several rows.
SINFO_FORMAT = "%P|%a|%l|%D|%c|%m|%f|%G"


def _names(field: str) -> list[str]:
    """A comma-separated sinfo list, "(null)" for none; commas inside parentheses (gres sockets "S:0,1") stay."""
    if field in ("", "(null)"):
        return []
    return [item for item in re.split(r",(?![^(]*\))", field) if item]


def _number(text: str) -> int:
    digits = re.sub(r"\D", "", text)
    return int(digits) if digits else 0


def parse_sinfo(text: str) -> list[dict[str, Any]]:
    """sinfo's rows (SINFO_FORMAT) as one entry per partition, in sinfo's order: the node counts of its rows
    summed, CPUs and memory the smallest of its rows (what every node offers), and `groups`, one per row:
    {"nodes": int, "features": [...], "gres": [...]}."""
    out: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) != 8:
            continue
        name, avail, max_time, nodes, cpus, mem, features, gres = fields
        group = {"nodes": _number(nodes), "features": _names(features), "gres": _names(gres)}
        part = out.get(name.rstrip("*"))
        if part is None:
            out[name.rstrip("*")] = {"name": name.rstrip("*"), "default": name.endswith("*"), "state": avail,
                                     "max_time": max_time, "nodes": str(group["nodes"]), "cpus": cpus.rstrip("+"),
                                     "memory_mb": mem.rstrip("+"), "groups": [group]}
            continue
        part["nodes"] = str(int(part["nodes"]) + group["nodes"])
        part["cpus"] = str(min(_number(part["cpus"]), _number(cpus)))
        part["memory_mb"] = str(min(_number(part["memory_mb"]), _number(mem)))
        part["groups"].append(group)
    return list(out.values())


def parse_reservations(text: str) -> dict[str, dict[str, str]]:
    """`scontrol -o show reservation`: one `Key=Value ...` line per reservation."""
    out = {}
    for line in text.splitlines():
        fields = dict(token.split("=", 1) for token in line.split() if "=" in token)
        if fields.get("ReservationName"):
            out[fields["ReservationName"]] = fields
    return out


def parse_mpi_list(text: str) -> list[str]:
    """`srun --mpi=list`: "MPI plugin types are..." then one type a line (indented since 20.11; older releases
    prefix each line with "srun: " on stderr), then "specific pmix plugin versions available: pmix_v4,pmix_v5"
    (those are valid --mpi values too)."""
    names: list[str] = []
    for line in text.splitlines():
        line = line.removeprefix("srun: ").strip()
        if "versions available:" in line:
            names += [v.strip() for v in line.split(":", 1)[1].split(",") if v.strip()]
        elif re.fullmatch(r"[\w.-]+", line):
            names.append(line)
    return names
