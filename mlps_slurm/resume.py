"""`mlps-slurm resume RUN`: run again only what did not complete, into the same run directory.

A chain that ended with failed, cancelled or timed-out jobs (or array tasks) gets a new attempt of exactly those:
a new preflight (the nodes may have changed since), each job that did not complete with its planned dependencies
(a dependency on a job that completed is already met and is dropped), an array with only its missing tasks
(`--array=3-5%1`), and a new finalize that reads the whole run, the completed part included. Nothing that completed
runs again. What the failed attempt left in the run directory (each job's declared `outputs`, its progress record,
the old results and preflight report) is moved under `attempts/<n>/`, so the new attempt starts clean and the
finalize never mixes the two. The manifest keeps every attempt (attempts.py) and a `resumes` entry per resume.

Like submission, it is all or nothing: if Slurm refuses a job, what was submitted is cancelled, the files moved
aside go back and the manifest is restored.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlps_slurm import benchmarks
from mlps_slurm.chain import (MEMBER_DIR, ChainStatus, chain_status, dependencies_on, progress_location,
                              record_member_jobs)
from mlps_slurm.rundir import RunDirectory, attempt_dir, atomic_write_text, read_json
from mlps_slurm.slurm import Dependency, SlurmBackend
from mlps_slurm.steps.progress import progress_file

SHARED = ("preflight", "finalize")
_ARRAY = re.compile(r"--array=(.+)")
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
_OUTPUT = re.compile(r"[A-Za-z0-9_.{}-]+(?:/[A-Za-z0-9_.{}-]+)*")
MAX_TASKS = 100_000


class ResumeError(RuntimeError):
    """The run cannot be resumed as it is; the message says why and what to do."""


@dataclass
class ResumePlan:
    attempt: int
    rerun: dict[str, list[int] | None]  # job key -> the array tasks to run again (None: the whole job)
    kept: dict[str, list[int] | None]  # what completed and stays (an array: its completed tasks)
    set_aside: list[tuple[Path, Path]] = field(default_factory=list)  # (what the failed attempt left, where to)
    # A suite's workload runs: their copy of the old preflight report goes aside and the link to the suite's
    # preflight comes back (the finalize copies the new report into them).
    relink: list[Path] = field(default_factory=list)
    job_ids: dict[str, str] = field(default_factory=dict)  # after submission

    def describe(self) -> str:
        def what(key: str, tasks: list[int] | None) -> str:
            return f"{key} (tasks {compress(tasks)})" if tasks is not None else key
        lines = [f"attempt {self.attempt}: runs again " + ", ".join(what(k, t) for k, t in self.rerun.items())]
        if self.kept:
            lines.append("keeps " + ", ".join(what(k, t) for k, t in self.kept.items()))
        if self.set_aside:
            lines.append(f"moves {len(self.set_aside)} output(s) of the earlier attempt to attempts/{self.attempt - 1}/")
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "rerun": self.rerun, "kept": self.kept, "job_ids": self.job_ids,
                "set_aside": [str(dst) for _, dst in self.set_aside]}


def array_tasks(sbatch: list[str]) -> tuple[list[int], str] | None:
    """The tasks of a planned `--array=0-5%1` directive and its throttle ("%1"); None for a job that is not an
    array."""
    spec = next((m.group(1) for opt in sbatch if (m := _ARRAY.fullmatch(str(opt)))), None)
    if spec is None:
        return None
    ranges, _, limit = spec.partition("%")
    tasks: list[int] = []
    for part in ranges.split(","):
        m = _RANGE.fullmatch(part.strip())
        if not m:
            raise ResumeError(f"--array={spec}: cannot read the planned array (expected ranges like 0-5%1)")
        low, high = int(m.group(1)), int(m.group(2) or m.group(1))
        if high - low > MAX_TASKS:
            raise ResumeError(f"--array={spec}: more than {MAX_TASKS} tasks")
        tasks += range(low, high + 1)
    return sorted(set(tasks)), (f"%{limit}" if limit.isdigit() else "")


def compress(tasks: list[int]) -> str:
    """[2, 3, 4, 7] -> "2-4,7" (Slurm's --array syntax)."""
    parts: list[str] = []
    for t in sorted(tasks):
        if parts and _last(parts[-1]) == t - 1:
            first = parts[-1].split("-")[0]
            parts[-1] = f"{first}-{t}"
        else:
            parts.append(str(t))
    return ",".join(parts)


def _last(part: str) -> int:
    return int(part.split("-")[-1])


def _benchmark_of(manifest: dict[str, Any], key: str) -> tuple[str, str, str] | None:
    """(benchmark name, member prefix, the key inside the benchmark's own plan) of a job key."""
    for member in manifest.get("request", {}).get("members", []) or []:
        prefix = f"{member.get('name')}."
        if isinstance(member, dict) and key.startswith(prefix):
            return str(member.get("benchmark")), prefix, key[len(prefix):]
    return str(manifest.get("benchmark")), "", key


def plan_resume(run: RunDirectory, manifest: dict[str, Any], status: ChainStatus) -> ResumePlan:
    if not status.finished:
        active = [f"{key} ({s.state})" for key, _, s in status.jobs if s is not None and not s.terminal
                  and s.state != "UNKNOWN"]
        if any(s is None for _, _, s in status.jobs) and not active:
            raise ResumeError(f"{run.run_id} was never submitted (state {manifest.get('state')}); submit a new run")
        raise ResumeError(f"{run.run_id} still has jobs queued or running: {', '.join(active)}; wait for them, "
                          f"or stop them with `mlps-slurm cancel {run.run_id}`, then resume")
    planned = manifest["plan"]["jobs"]
    rows = {key: s for key, _, s in status.jobs}
    rerun: dict[str, list[int] | None] = {}
    kept: dict[str, list[int] | None] = {}
    for job in planned:
        key = job["key"]
        if key in SHARED:
            continue
        array = array_tasks(job.get("sbatch", []))
        if array is not None:
            done = sorted({int(t.array_task) for t in status.tasks.get(key, [])
                           if t.array_task.isdigit() and t.state == "COMPLETED"})
            missing = [t for t in array[0] if t not in done]
            if missing:
                rerun[key] = missing
            if done:
                kept[key] = done
        elif rows.get(key) is None or rows[key].state != "COMPLETED":  # type: ignore[union-attr]
            rerun[key] = None
        else:
            kept[key] = None
    # What a benchmark needs redone with a job (a vectordb run needs the collection its load job built).
    for key in list(rerun):
        found = _benchmark_of(manifest, key)
        if found is None or found[0] not in benchmarks.names():
            continue
        name, prefix, own = found
        for needs in benchmarks.get(name).resume_requires.get(own, ()):
            full = prefix + needs
            if full not in rerun and any(j["key"] == full for j in planned):
                rerun[full] = None
                kept.pop(full, None)
    keys = [j["key"] for j in planned]
    if rerun and "preflight" in keys:
        rerun["preflight"] = None
    results = _results_status(run)
    if not rerun and results == "success":
        raise ResumeError(f"nothing to resume: every job of {run.run_id} completed and its finalize reported "
                          "success")
    if "finalize" in keys:
        rerun["finalize"] = None
    ordered = {k: rerun[k] for k in keys if k in rerun}
    attempt = len(manifest.get("resumes", []) or []) + 2  # the submission was attempt 1
    plan = ResumePlan(attempt=attempt, rerun=ordered, kept={k: kept[k] for k in keys if k in kept})
    plan.set_aside = _set_aside(run, manifest, plan)
    if "preflight" in plan.rerun:
        for member in manifest.get("request", {}).get("members", []) or []:
            rel = str(member.get("dir", "")) if isinstance(member, dict) else ""
            link = _inside(run, run.path, f"{rel}/preflight") if MEMBER_DIR.fullmatch(rel) else None
            if link is None:
                raise ResumeError(f"{run.manifest_path}: workload directory {rel!r} is not inside the run")
            if link.is_dir() and not link.is_symlink():
                plan.set_aside.append((link, attempt_dir(run.path, plan.attempt - 1) / link.relative_to(run.path)))
                plan.relink.append(link)
    return plan


def _results_status(run: RunDirectory) -> str | None:
    try:
        data = read_json(run.results_json)
    except (OSError, ValueError):
        return None
    return str(data.get("status")) if isinstance(data, dict) else None


def _inside(run: RunDirectory, base: Path, rel: str) -> Path | None:
    """base/rel when rel is a plain relative path that stays in the run directory through no symlink (a manifest
    may be hostile: its names never become paths unchecked)."""
    if not _OUTPUT.fullmatch(rel) or any(part in ("..", ".") for part in rel.split("/")):
        return None
    path = base / rel
    probe = path
    while probe != run.path and run.path in probe.parents:
        if probe.is_symlink():
            return None
        probe = probe.parent
    return path if run.path in path.parents else None


def _set_aside(run: RunDirectory, manifest: dict[str, Any], plan: ResumePlan) -> list[tuple[Path, Path]]:
    target = attempt_dir(run.path, plan.attempt - 1)  # what attempt n-1 left
    moves: list[tuple[Path, Path]] = []
    jobs = {j["key"]: j for j in manifest["plan"]["jobs"]}
    for key, tasks in plan.rerun.items():
        where = progress_location(run, manifest, key)
        if where is None:
            raise ResumeError(f"{run.manifest_path}: job {key!r} names a workload directory outside the run")
        base, own = where
        candidates: list[str] = []
        for out in jobs[key].get("outputs", []) or []:
            out = str(out)
            if "{task}" in out:
                candidates += [out.replace("{task}", f"{t:02d}") for t in tasks or []]
            else:
                candidates.append(out)
        for task in tasks or [None]:  # type: ignore[list-item]
            candidates.append(str(progress_file(Path("."), own, task)).lstrip("./"))
        for rel in candidates:
            src = _inside(run, base, rel)
            if src is None:
                raise ResumeError(f"{run.manifest_path}: job {key!r} declares output {rel!r}, which is not a "
                                  "path inside the run directory; the manifest is damaged")
            if os.path.lexists(src):
                moves.append((src, target / src.relative_to(run.path)))
    return moves


def _move(moves: list[tuple[Path, Path]], relink: list[Path]) -> list[tuple[Path, Path]]:
    done = []
    for src, dst in moves:
        dst.parent.mkdir(parents=True, exist_ok=True)
        was_dir = src.is_dir() and not src.is_symlink()
        os.rename(src, dst)
        done.append((src, dst))
        if src in relink:
            src.symlink_to(Path("..", "..", "preflight"))
        elif was_dir:
            src.mkdir()  # the job of the new attempt finds its directory, empty
    return done


def _move_back(done: list[tuple[Path, Path]]) -> None:
    for src, dst in reversed(done):
        try:
            if src.is_symlink():
                src.unlink()
            elif src.is_dir() and not any(src.iterdir()):
                src.rmdir()
            os.rename(dst, src)
        except OSError:
            pass  # best effort: the error that stopped the resume is the one to report


def resume_chain(run: RunDirectory, backend: SlurmBackend, dry_run: bool = False) -> ResumePlan:
    manifest = run.read_manifest()
    plan = plan_resume(run, manifest, chain_status(run, backend))
    if dry_run:
        return plan
    saved = copy.deepcopy(manifest)
    pin_before = run.pin_jobs.read_text() if run.pin_jobs.is_file() else None
    planned = {j["key"]: j for j in manifest["plan"]["jobs"]}
    ids: dict[str, str] = {}
    moved: list[tuple[Path, Path]] = []
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    try:
        moved = _move(plan.set_aside, plan.relink)
        held = None
        for key, tasks in plan.rerun.items():
            job = planned[key]
            deps = dependencies_on(job, ids, backend)  # a job that completed has met its dependency already
            if job.get("pin_to_preflight") and "preflight" in ids and not any(d.job_ids for d in deps):
                # Its planned way to the preflight went through a job that completed (a training run array after
                # its kept datagen): it must still wait for the new preflight, which pins it to the nodes it
                # validated, and never start without it.
                deps.append(Dependency("afterok", (ids["preflight"],)))
            extra = [f"--export=ALL,MLPS_RESUME_ATTEMPT={plan.attempt}"]
            if tasks is not None:
                throttle = (array_tasks(job.get("sbatch", [])) or ([], ""))[1]
                extra.append(f"--array={compress(tasks)}{throttle}")
            extra += list(job.get("sbatch_args", []))
            if key == "preflight":
                extra.append("--hold")
            ids[key] = backend.submit(run.scripts / job["script"], deps, extra,
                                      token=f"{run.run_id}:{key}:{plan.attempt}")
            if key == "preflight":
                held = ids[key]
            record: dict[str, Any] = {"job_id": ids[key], "script": job["script"], "submitted": now,
                                      "attempt": plan.attempt}
            if tasks is not None:
                record["tasks"] = tasks
            previous = manifest["jobs"].get(key)
            if isinstance(previous, dict):
                record["earlier"] = [*previous.pop("earlier", []), previous]
            manifest["jobs"][key] = record
        if held:
            pinned = [ids[k] for k in plan.rerun if planned[k].get("pin_to_preflight")]
            atomic_write_text(run.pin_jobs, "".join(f"{i}\n" for i in pinned))
        plan.job_ids = dict(ids)
        manifest.setdefault("resumes", []).append({"at": now, **plan.record()})
        manifest["state"] = "submitted"
        run.write_manifest(manifest)
        record_member_jobs(run, manifest)
        if held:
            backend.release(held)
    except BaseException:
        backend.cancel(list(ids.values()))
        _move_back(moved)
        run.write_manifest(saved)
        if saved.get("request", {}).get("members"):
            record_member_jobs(run, saved)
        if pin_before is not None:
            atomic_write_text(run.pin_jobs, pin_before)
        raise
    return plan
