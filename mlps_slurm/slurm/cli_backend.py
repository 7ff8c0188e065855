"""Slurm through its command-line tools. Works with Slurm 22.05 and later; pyslurm is not required.

22.05 quirks handled here: `squeue --json` ignores -j filters (we filter client-side), reports `exit_code` as a
raw wait status and `job_state` as a string; `sacct` needs slurmdbd, so final states come from `scontrol show job`
while Slurm still remembers the job (MinJobAge).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

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


class CliSlurm:
    def __init__(self, retries: int = 3, retry_delay: float = 1.0, timeout: float = 60.0) -> None:
        self.retries = retries
        self.retry_delay = retry_delay
        self.timeout = timeout

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
        raise SlurmError(f"`{' '.join(argv)}` failed (exit {last.returncode}): {err}")

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
               test_only: bool = False) -> str:
        argv = ["sbatch", "--parsable"]
        if dependencies:
            argv.append("--dependency=" + ",".join(d.render() for d in dependencies))
            # Without it a job whose afterok dependency failed stays PENDING forever.
            argv.append("--kill-on-invalid-dep=yes")
        if test_only:
            argv.append("--test-only")
        argv += list(extra_args or [])
        argv.append(str(script))
        proc = self._run(argv)
        if test_only:
            return (proc.stderr or proc.stdout).strip()
        out = proc.stdout.strip().splitlines()
        match = _JOB_ID.match(out[-1].strip()) if out else None
        if not match:
            raise SlurmError(f"sbatch printed no job id for {script}: {proc.stdout!r} {proc.stderr!r}")
        return match.group(1)

    def job_exists(self, job_id: str) -> bool:
        try:
            proc = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True,
                                  env=scrubbed_env(), timeout=self.timeout)
        except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
            raise SlurmUnreachable(f"cannot ask Slurm about job {job_id}: {exc}; {_START_CLUSTER_HINT}") from exc
        return proc.returncode == 0 and (f"JobId={job_id} " in proc.stdout or f"ArrayJobId={job_id} " in proc.stdout)

    def states(self, job_ids: list[str]) -> dict[str, list[JobState]]:
        wanted = set(job_ids)
        found: dict[str, list[JobState]] = {j: [] for j in job_ids}
        # One squeue call for all jobs: it lists finished jobs too while Slurm keeps them (MinJobAge).
        proc = self._run(["squeue", "--json", "--states=all"])
        for job in json.loads(proc.stdout).get("jobs", []):
            jid = str(job.get("job_id"))
            array_id = str(job.get("array_job_id") or "")
            owner = array_id if array_id in wanted and array_id != "0" else jid
            if owner not in wanted:
                continue
            state = job.get("job_state")
            if isinstance(state, list):  # Slurm >= 23.02 returns a list of flags
                state = state[0] if state else "UNKNOWN"
            raw_exit = job.get("exit_code")
            exit_code = ""
            if isinstance(raw_exit, int):  # 22.05: raw wait status
                exit_code = f"{raw_exit >> 8}:{raw_exit & 0x7F}"
            elif isinstance(raw_exit, dict):
                rc = raw_exit.get("return_code")
                exit_code = f"{rc.get('number', rc) if isinstance(rc, dict) else rc}:0"
            task = job.get("array_task_id")
            if isinstance(task, dict):
                task = task.get("number") if task.get("set") else None
            found[owner].append(JobState(
                job_id=jid, name=str(job.get("name", "")), state=str(state), reason=str(job.get("state_reason", "")),
                exit_code=exit_code, nodes=str(job.get("nodes", "")),
                array_task="" if task in (None, "", 4294967294) else str(task),
            ))
        for jid, states in found.items():
            if not states:
                found[jid] = [JobState(job_id=jid, name="", state="UNKNOWN",
                                       reason="Slurm no longer remembers this job (older than MinJobAge)")]
        return found

    def release(self, job_id: str) -> None:
        self._run(["scontrol", "release", job_id])

    def cancel(self, job_ids: list[str]) -> None:
        if job_ids:
            subprocess.run(["scancel", *job_ids], capture_output=True, text=True, env=scrubbed_env(),
                           timeout=self.timeout)

    # --- cluster facts for `profiles validate --live` and `profiles init --from-cluster`
    def partitions(self) -> list[dict[str, str]]:
        """One entry per partition: name, state (up/down...), max_time, nodes, cpus, memory_mb, default."""
        proc = self._run(["sinfo", "-h", "-o", "%P|%a|%l|%D|%c|%m"])
        out = []
        for line in proc.stdout.splitlines():
            name, avail, max_time, nodes, cpus, mem = line.split("|")
            out.append({"name": name.rstrip("*"), "default": name.endswith("*"), "state": avail,
                        "max_time": max_time, "nodes": nodes, "cpus": cpus.rstrip("+"), "memory_mb": mem.rstrip("+")})
        return out

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

