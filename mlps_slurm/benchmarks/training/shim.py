"""The in-job basics of the training shim: the error that fails a step, the tensorflow stub, DLIO's entry point and
the MPI world it runs in.

DLIO 2.0.0 imports tensorflow unconditionally (profiler_factory -> tf_profiler); a stub module for
`dlio_benchmark.profiler.tf_profiler` is put into sys.modules before DLIO is imported, so site-packages stay
untouched. Every rank that fails records its error (engine_error.<rank>.json) and aborts the whole MPI job, so no
rank is left waiting in a collective. This module runs on compute nodes: it imports no click, jinja2 or cli code.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import traceback
import types
from pathlib import Path
from typing import Any, Callable

from mlps_slurm.rundir import atomic_write_json

TF_PROFILER = "dlio_benchmark.profiler.tf_profiler"


class StepError(RuntimeError):
    """A problem that fails this step; the message says what and how to fix it."""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()

def install_tensorflow_stub() -> None:
    """Stand in for DLIO's tf_profiler module, whose only use is profiler=tensorboard."""
    if TF_PROFILER in sys.modules:
        return
    module = types.ModuleType(TF_PROFILER)

    class TFProfiler:
        @staticmethod
        def get_instance() -> Any:
            raise RuntimeError("workload.profiling.profiler=tensorboard needs DLIO's tensorflow profiler, which "
                               "mlps-slurm stubs out; use profiler iostat or none")

    module.TFProfiler = TFProfiler  # type: ignore[attr-defined]
    sys.modules[TF_PROFILER] = module


def preload(config: dict[str, Any]) -> None:
    """Import DLIO and the framework before measuring, so the run's byte counts hold the dataset's reads, not
    the reading of Python modules."""
    import dlio_benchmark.main  # noqa: F401

    if config.get("framework") == "tensorflow":
        import tensorflow  # noqa: F401
    else:
        import torch  # noqa: F401
        import torch.utils.data  # noqa: F401


def follow_training(progress: Any) -> None:
    """Feed `progress` (a mlps_slurm.steps.progress.Progress, rank 0 only) from DLIO's own training loop: its
    StatsCounter hears of every epoch and every step, so wrapping those two methods gives "step 120/600, epoch 3/5"
    without touching DLIO's files. The counts are DLIO's (steps per epoch from its StatsCounter.steps)."""
    from dlio_benchmark.utils.statscounter import StatsCounter

    start_train, batch_processed = StatsCounter.start_train, StatsCounter.batch_processed

    def on_epoch(self: Any, epoch: int) -> Any:
        epochs = int(self.args.epochs)
        progress.total = max(1, int(self.steps)) * epochs
        progress.update((epoch - 1) * int(self.steps), f"epoch {epoch}/{epochs}", force=True)
        return start_train(self, epoch)

    def on_step(self: Any, epoch: int, step: int, *args: Any, **kwargs: Any) -> Any:
        progress.update((epoch - 1) * int(self.steps) + step)
        return batch_processed(self, epoch, step, *args, **kwargs)

    StatsCounter.start_train = on_epoch  # type: ignore[method-assign]
    StatsCounter.batch_processed = on_step  # type: ignore[method-assign]


def run_dlio(argv: list[str]) -> None:
    """DLIO's hydra entry point with these arguments; raises whatever DLIO raised."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # hydra re-raises the engine's exception instead of exiting with 1
    import dlio_benchmark.main as dlio_main

    saved = sys.argv
    sys.argv = ["dlio_benchmark", *argv]
    try:
        dlio_main.run_benchmark()
    except SystemExit as exc:  # DLIO calls exit() on some errors, argparse on bad arguments
        if exc.code not in (0, None):
            raise RuntimeError(f"DLIO exited with status {exc.code}") from exc
    finally:
        sys.argv = saved


class Mpi:
    """The MPI world as DLIO sees it (its DLIOMPI singleton), started before DLIO runs so the shim can measure
    around DLIO and gather the results; node-local rank 0 acts for its node."""

    def __init__(self) -> None:
        from dlio_benchmark.utils.utility import DLIOMPI

        self._dlio = DLIOMPI.get_instance()
        self._dlio.initialize()
        self.comm = self._dlio.comm()
        self.rank = self._dlio.rank()
        self.size = self._dlio.size()
        self.local_rank = self._dlio.local_rank()

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)

    def finalize(self) -> None:
        self._dlio.finalize()


def guarded(mpi: Mpi, error_dir: Path, what: str, fn: Callable[[], Any]) -> Any:
    """Run fn; on any failure record it for finalize and abort every rank (none may wait in a collective)."""
    try:
        return fn()
    except BaseException as exc:  # whatever DLIO raises (SystemExit too), the job must fail with it recorded
        record = {"rank": mpi.rank, "host": socket.gethostname(), "during": what, "time": now(),
                  "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-6000:]}
        try:
            error_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(error_dir / f"engine_error.{mpi.rank}.json", record)
        except OSError:
            pass
        print(f"mlps-slurm: rank {mpi.rank}: {what} failed: {record['error']}", file=sys.stderr, flush=True)
        mpi.abort(1)
        raise  # not reached: Abort ends the process
