"""A running step's progress, for `mlps-slurm status`: checkpoint 7/20, step 120/600 (epoch 3/5), 40 s/300 s.

One process of the step (rank 0) writes `<run>/progress/<job key>[.<array task>].json` atomically, at most once a
second, so the file costs the benchmark nothing measurable and a reader always sees a whole record. The job key
comes from the job name the plan gives every job (`mlps-<key>`) and the run directory from MLPS_RUN_DIR, both set
for every step of the job; outside a chain (no such variables) progress is simply not recorded. Writing progress
never fails a step: an unwritable file is reported once on stderr and then ignored.

Runs on compute nodes: standard library only.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from contextlib import contextmanager

from mlps_slurm.rundir import atomic_write_json

SCHEMA = "mlps-slurm/progress/1"
DIRNAME = "progress"
JOB_NAME_PREFIX = "mlps-"
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}")
MIN_INTERVAL_S = 1.0


def progress_file(run_dir: Path, key: str, task: int | None = None) -> Path:
    """Where the step of job `key` (array task `task`) records its progress; readers use the same function."""
    return run_dir / DIRNAME / (f"{key}.{task}.json" if task is not None else f"{key}.json")


def path_from_env(env: Mapping[str, str] = os.environ) -> Path | None:
    """This step's progress file, or None outside a chain's job (or for a job name the plan did not give)."""
    run_dir, name = env.get("MLPS_RUN_DIR", ""), env.get("SLURM_JOB_NAME", "")
    if not run_dir or not name.startswith(JOB_NAME_PREFIX):
        return None
    key = name[len(JOB_NAME_PREFIX):]
    if not _KEY.fullmatch(key) or ".." in key:
        return None
    task = env.get("SLURM_ARRAY_TASK_ID", "")
    return progress_file(Path(run_dir), key, int(task) if task.isdigit() else None)


class Progress:
    """What one step has done of its work, in `unit` (plural: "checkpoints", "steps"; "s" for seconds) out of
    `total` (None: open-ended), with a detail line."""

    def __init__(self, step: str, total: float | None, unit: str, path: Path | None = None,
                 clock: Callable[[], float] = time.monotonic, min_interval: float = MIN_INTERVAL_S,
                 env: Mapping[str, str] = os.environ) -> None:
        self.step, self.total, self.unit = step, total, unit
        self.path = path if path is not None else path_from_env(env)
        self.clock, self.min_interval = clock, min_interval
        self._last = float("-inf")
        self._warned = False
        self.done: float = 0
        self.detail = ""

    def update(self, done: float, detail: str | None = None, force: bool = False) -> None:
        self.done = done
        if detail is not None:
            self.detail = detail
        now = self.clock()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        self._write()

    def record(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "step": self.step, "done": round(self.done, 3),
                "total": None if self.total is None else round(self.total, 3), "unit": self.unit,
                "detail": self.detail, "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "host": socket.gethostname(), "pid": os.getpid()}

    def _write(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, self.record())
        except OSError as exc:
            if not self._warned:  # the benchmark matters more than its progress line
                self._warned = True
                print(f"mlps-slurm: warning: cannot record progress in {self.path} ({exc.strerror or exc}); "
                      "`status` will show none for this step", file=sys.stderr, flush=True)


@contextmanager
def timed(step: str, seconds: float, detail: str = "", path: Path | None = None,
          interval: float = 2.0) -> Iterator[Progress]:
    """Progress of a step that lasts a known wall-clock time (a timed query window, a kv-cache trial): a daemon
    thread records the elapsed seconds every `interval` until the block ends."""
    progress = Progress(step, seconds, "s", path=path)
    stop = threading.Event()
    start = time.monotonic()

    def tick() -> None:
        while not stop.is_set():
            progress.update(min(seconds, time.monotonic() - start), force=True)
            stop.wait(interval)

    progress.detail = detail
    thread = threading.Thread(target=tick, name="mlps-progress", daemon=True)
    thread.start()
    try:
        yield progress
    finally:
        stop.set()
        thread.join(timeout=5)
        progress.update(min(seconds, time.monotonic() - start), force=True)


# --- reading (login node: `status`) ---------------------------------------------------------------------------------

def read_progress(run_dir: Path, key: str, task: int | None = None) -> dict[str, Any] | None:
    """The last progress record of a job (array task), or None when there is none or it is not a whole, sane
    record. The key comes from a manifest, which may be hostile: it never becomes a path unless it is a plain
    job key."""
    if not _KEY.fullmatch(key) or ".." in key:
        return None
    import json

    try:
        with open(progress_file(run_dir, key, task), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return None
    done, total = data.get("done"), data.get("total")
    numeric = (int, float)
    if isinstance(done, bool) or not isinstance(done, numeric) or \
            (total is not None and (isinstance(total, bool) or not isinstance(total, numeric) or total < 0)):
        return None
    return {k: data.get(k) for k in ("step", "done", "total", "unit", "detail", "updated", "host")
            if isinstance(data.get(k), (str, int, float)) or k == "total"}


def _amount(value: float, unit: str) -> str:
    return f"{value:.0f} s" if unit == "s" else f"{value:g}"


def describe(record: dict[str, Any], width: int = 20, now: dt.datetime | None = None) -> str:
    """One line for `status`: "[#######-------------] 7/20 checkpoints  write 7/10  (updated 3 s ago)"; an
    open-ended step shows its name and detail."""
    done, total, unit = float(record["done"]), record.get("total"), str(record.get("unit") or "")
    detail = str(record.get("detail") or "")
    age = ""
    try:
        updated = dt.datetime.fromisoformat(str(record.get("updated")))
        seconds = max(0, int(((now or dt.datetime.now(dt.timezone.utc)) - updated).total_seconds()))
        age = f"  (updated {seconds} s ago)" if seconds < 120 else f"  (updated {seconds // 60} min ago)"
    except (TypeError, ValueError):
        pass
    step = str(record.get("step") or "")
    if total:
        fraction = min(1.0, max(0.0, done / float(total)))
        filled = int(round(fraction * width))
        amount = f"{_amount(done, unit)}/{_amount(float(total), unit)}" + ("" if unit == "s" else f" {unit}")
        text = f"[{'#' * filled}{'-' * (width - filled)}] {amount}"  # the job line above names the step
    else:
        text = step
    return "  ".join(x for x in (text, detail) if x) + age
