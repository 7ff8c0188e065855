"""MLPerf Storage v3.0 training workloads (DLIO emulation) and the dataset-size rule. Pure data and functions.

Numbers come from the reference table of mlperf-storage.md §2.1 (the upstream `configs/dlio/workload/*.yaml`):
record size and spread, samples per file, format, batch size, read threads, computation time per batch, epochs and
the accelerator-utilization (AU) threshold. A few reader details the table does not carry (shuffling, the unet3d
resize) are taken from the workload files PyPI dlio-benchmark 2.0.0 ships, and say so. Where the reference has no
number for a model x accelerator pair, the pair is listed in UNSUPPORTED with the reason; nothing is invented.

The dataset-size rule (Rules §3.1.2, mlpstorage `datasize`): the dataset must cover 500 steps of every simulated
accelerator and 5 x the aggregate client memory, so that it cannot be served from the clients' page cache:

    min_samples = max(500 x batch x total_accelerators, hosts x mem_GiB x 5 x 2^30 / record_length)
    files       = ceil(min_samples / samples_per_file)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

GIB = 1 << 30
STEPS_PER_EPOCH = 500  # mlpstorage STEPS_PER_EPOCH
MOST_MEMORY_MULTIPLIER = 5  # mlpstorage MOST_MEMORY_MULTIPLIER
RUNS = 6  # 1 warm-up + 5 scored runs, back to back (Rules §2.1.17-2.1.18a)
SCORED_RUNS = 5

MODELS = ("unet3d", "resnet50", "cosmoflow", "retinanet", "dlrm", "flux")
ACCELERATORS = ("a100", "h100", "b200", "mi355")
CLOSED_MODELS = ("unet3d", "retinanet")  # rules edition 3.0 (editions.yaml)
CLOSED_ACCELERATORS = ("b200", "mi355")

# Formats PyPI dlio-benchmark 2.0.0 can generate and read (its FormatType enum minus hdf5_opt, which has neither a
# generator nor a reader), and which of them need tensorflow in the jobs' Python.
DLIO_FORMATS = ("tfrecord", "hdf5", "csv", "npz", "npy", "jpeg", "png", "indexed_binary", "mmap_indexed_binary",
                "synthetic")
TENSORFLOW_FORMATS = ("tfrecord",)
PARQUET_DLIO = ("the MLCommons fork of DLIO at v3.0.x (version 3.0.2, its PR #346), which needs Python >= 3.12 "
                "with pyarrow >= 21, s3dlio and dgen-py")

# Parameter overrides (mlperf-storage.md §3.3, upstream run_checkers/training.py).
CLOSED_PARAMS = frozenset({
    "dataset.num_files_train", "dataset.num_subfolders_train", "dataset.data_folder", "reader.read_threads",
    "reader.computation_threads", "reader.transfer_size", "reader.odirect", "reader.prefetch_size",
    "checkpoint.checkpoint_folder", "storage.storage_type", "storage.storage_root",
    "storage.storage_options.prefetch_window"})
OPEN_PARAMS = CLOSED_PARAMS | {"framework", "dataset.format", "dataset.num_samples_per_file", "reader.data_loader"}
ODIRECT_MODELS = ("unet3d",)  # reader.odirect is CLOSED for unet3d only, OPEN elsewhere
# Keys mlps-slurm sets itself for every job of the chain; a --param on them would break the chain (a run that
# generates data, a datagen that trains), so they are refused even with --allow-invalid.
MANAGED_PARAMS = frozenset({"workflow.generate_data", "workflow.train", "workflow.checkpoint", "output.folder",
                            "output.log_file", "train.seed", "model", "dataset.keep_files"})


@dataclass(frozen=True)
class CheckpointSpec:
    """DLIO checkpointing inside a training run (unet3d a100/h100 only)."""

    after_epoch: int
    epochs_between: int
    model_size_bytes: int


@dataclass(frozen=True)
class TrainingWorkload:
    """One MLPerf Storage training workload: a model on a simulated accelerator."""

    model: str
    accelerator: str
    framework: str
    format: str
    data_loader: str
    record_length: float  # mean bytes per sample
    record_length_stdev: float  # 0: every sample has the same size
    samples_per_file: int
    default_num_files_train: int  # the upstream workload file's value (the datasize rule decides the real one)
    batch_size: int
    read_threads: int
    epochs: int
    computation_time: float  # seconds of emulated accelerator compute per batch
    au_threshold: float  # fraction, e.g. 0.90
    closed: bool  # in the v3.0 CLOSED set
    record_length_resize: int = 0  # bytes of the sample handed to the framework (DLIO's resize), 0: none
    computation_threads: int | None = None
    checkpoint: CheckpointSpec | None = None
    reader_extra: dict[str, Any] = field(default_factory=dict)
    sources: tuple[str, ...] = ("mlperf-storage.md §2.1",)

    @property
    def key(self) -> str:
        return f"{self.model}_{self.accelerator}"

    @property
    def needs_tensorflow(self) -> bool:
        return self.format in TENSORFLOW_FORMATS or "tensorflow" in (self.framework, self.data_loader)

    @property
    def engine_problem(self) -> str | None:
        """Why PyPI dlio-benchmark 2.0.0 cannot run this workload at all (None: it can)."""
        if self.format == "parquet":
            return (f"{self.model} reads parquet files, which PyPI dlio-benchmark 2.0.0 cannot generate or read; "
                    f"parquet exists only in {PARQUET_DLIO}")
        return None


_UNET3D_A100 = TrainingWorkload(
    model="unet3d", accelerator="a100", framework="pytorch", format="npz", data_loader="pytorch",
    record_length=146_600_628, record_length_stdev=68_341_808, samples_per_file=1, default_num_files_train=168,
    batch_size=7, read_threads=4, epochs=5, computation_time=0.636, au_threshold=0.90, closed=False,
    record_length_resize=2_097_152, checkpoint=CheckpointSpec(after_epoch=5, epochs_between=2,
                                                              model_size_bytes=499_153_191),
    reader_extra={"file_shuffle": "seed", "sample_shuffle": "seed"},
    sources=("mlperf-storage.md §2.1", "record_length_resize, file/sample shuffle: dlio-benchmark 2.0.0 "
             "configs/workload/unet3d_*.yaml"))
_RETINANET_B200 = TrainingWorkload(
    model="retinanet", accelerator="b200", framework="pytorch", format="jpeg", data_loader="pytorch",
    record_length=322_957, record_length_stdev=0, samples_per_file=1, default_num_files_train=1_170_301,
    batch_size=24, read_threads=8, epochs=8, computation_time=0.04755, au_threshold=0.85, closed=True)

WORKLOADS: dict[tuple[str, str], TrainingWorkload] = {
    (w.model, w.accelerator): w for w in (
        _UNET3D_A100,
        replace(_UNET3D_A100, accelerator="h100", computation_time=0.323),
        # The b200 workload file has checkpointing off (mlperf-storage.md §2.1).
        replace(_UNET3D_A100, accelerator="b200", default_num_files_train=7200, computation_time=0.162,
                closed=True, checkpoint=None),
        TrainingWorkload(model="resnet50", accelerator="h100", framework="tensorflow", format="tfrecord",
                         data_loader="tensorflow", record_length=114_660.07, record_length_stdev=0,
                         record_length_resize=150_528, samples_per_file=1251, default_num_files_train=1024,
                         batch_size=400, read_threads=8, computation_threads=8, epochs=5, computation_time=0.224,
                         au_threshold=0.90, closed=False),
        TrainingWorkload(model="cosmoflow", accelerator="h100", framework="tensorflow", format="tfrecord",
                         data_loader="tensorflow", record_length=2_828_486, record_length_stdev=0,
                         samples_per_file=1, default_num_files_train=524_288, batch_size=1, read_threads=4,
                         epochs=5, computation_time=0.00350, au_threshold=0.70, closed=False,
                         reader_extra={"file_shuffle": "seed", "sample_shuffle": "seed", "shuffle_size": 2},
                         sources=("mlperf-storage.md §2.1", "shuffle keys: dlio-benchmark 2.0.0 "
                                  "configs/workload/cosmoflow_h100.yaml")),
        _RETINANET_B200,
        replace(_RETINANET_B200, accelerator="mi355", batch_size=32, computation_time=0.0634),
        TrainingWorkload(model="dlrm", accelerator="b200", framework="pytorch", format="parquet",
                         data_loader="pytorch", record_length=761, record_length_stdev=0, samples_per_file=4_718_592,
                         default_num_files_train=1024, batch_size=16384, read_threads=4, epochs=1,
                         computation_time=0.000375, au_threshold=0.70, closed=False),
        TrainingWorkload(model="flux", accelerator="b200", framework="pytorch", format="parquet",
                         data_loader="pytorch", record_length=2_164_832, record_length_stdev=0, samples_per_file=288,
                         default_num_files_train=4296, batch_size=48, read_threads=8, epochs=1,
                         computation_time=1.35, au_threshold=0.90, closed=False),
    )
}

_NO_NUMBERS = "the reference table (mlperf-storage.md §2.1) gives no {what} for {model} on {accel}"
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("unet3d", "mi355"): _NO_NUMBERS.format(what="computation time or batch size", model="unet3d", accel="mi355")
    + " (although 3.0 CLOSED lists unet3d x mi355; the upstream unet3d_mi355.yaml holds them)",
    **{(m, a): _NO_NUMBERS.format(what="workload numbers", model=m, accel=a)
       for m in MODELS for a in ACCELERATORS
       if (m, a) not in (("unet3d", "a100"), ("unet3d", "h100"), ("unet3d", "b200"), ("unet3d", "mi355"),
                         ("resnet50", "h100"), ("cosmoflow", "h100"), ("retinanet", "b200"),
                         ("retinanet", "mi355"), ("dlrm", "b200"), ("flux", "b200"))},
}


class CatalogError(ValueError):
    """A model x accelerator pair that does not exist or has no numbers; the message lists what does."""


def supported_pairs() -> list[str]:
    return [f"{m}/{a}" for (m, a) in WORKLOADS]


def workload(model: str, accelerator: str) -> TrainingWorkload:
    if model not in MODELS:
        raise CatalogError(f"unknown training model {model!r}; valid models: {', '.join(MODELS)}")
    if accelerator not in ACCELERATORS:
        raise CatalogError(f"unknown accelerator {accelerator!r}; valid accelerators: {', '.join(ACCELERATORS)}")
    found = WORKLOADS.get((model, accelerator))
    if found is None:
        raise CatalogError(f"{model} on {accelerator} is not supported: {UNSUPPORTED[(model, accelerator)]}; "
                           f"supported pairs: {', '.join(supported_pairs())}")
    return found


def is_closed(model: str, accelerator: str) -> bool:
    return model in CLOSED_MODELS and accelerator in CLOSED_ACCELERATORS and (model, accelerator) in WORKLOADS


# --- dataset size --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Datasize:
    """The rules' dataset size for one request, and which term of the max decided it."""

    model: str
    accelerator: str
    accelerators: int  # simulated accelerators in total
    hosts: int
    memory_gib_per_host: float | None  # None: memory unknown, only the accelerator term was computed
    accelerator_samples: int  # 500 x batch x accelerators
    memory_samples: int | None  # ceil(hosts x mem x 5 x 2^30 / record_length)
    samples_per_file: int
    record_length: float  # the workload's: the rule's memory term divides by it
    rule_files: int  # ceil(max(...) / samples_per_file)
    num_files: int  # what the run uses: rule_files (or an explicit count) x scale
    scale: float = 1.0
    explicit_files: int | None = None  # dataset.num_files_train given by the user
    sample_bytes: float | None = None  # bytes per sample on disk when an override changed the record length

    @property
    def decided_by(self) -> str:
        if self.explicit_files is not None:
            return "dataset.num_files_train"
        if self.memory_samples is None:
            return "accelerators (memory unknown)"
        return "memory" if self.memory_samples > self.accelerator_samples else "accelerators"

    @property
    def total_bytes(self) -> int:
        """Mean dataset size on disk: files x samples per file x mean bytes per sample."""
        return int(round(self.num_files * self.samples_per_file * (self.sample_bytes or self.record_length)))

    @property
    def final(self) -> bool:
        """Whether the size is settled (both terms known, or the user gave the count)."""
        return self.memory_samples is not None or self.explicit_files is not None

    def explain(self) -> str:
        acc = (f"{STEPS_PER_EPOCH} steps x batch {self.accelerator_samples // (STEPS_PER_EPOCH * self.accelerators)} x "
               f"{self.accelerators} accelerators = {self.accelerator_samples:,} samples")
        if self.memory_samples is None:
            mem = "memory term unknown (no client memory given)"
        else:
            mem = (f"{self.hosts} hosts x {self.memory_gib_per_host:.2f} GiB x {MOST_MEMORY_MULTIPLIER} x 2^30 / "
                   f"{self.record_length:,.0f} B = {self.memory_samples:,} samples")
        return f"{acc}; {mem}"

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "accelerator": self.accelerator, "accelerators": self.accelerators,
                "hosts": self.hosts, "memory_gib_per_host": self.memory_gib_per_host,
                "accelerator_samples": self.accelerator_samples, "memory_samples": self.memory_samples,
                "samples_per_file": self.samples_per_file, "record_length": self.record_length,
                "rule_files": self.rule_files, "num_files": self.num_files, "scale": self.scale,
                "explicit_files": self.explicit_files, "sample_bytes": self.sample_bytes,
                "decided_by": self.decided_by,
                "total_bytes": self.total_bytes, "final": self.final}


def accelerator_samples(batch_size: int, accelerators: int) -> int:
    return STEPS_PER_EPOCH * batch_size * accelerators


def memory_samples(hosts: int, memory_gib_per_host: float, record_length: float) -> int:
    return math.ceil(hosts * memory_gib_per_host * MOST_MEMORY_MULTIPLIER * GIB / record_length)


def datasize(w: TrainingWorkload, accelerators: int, hosts: int, memory_gib_per_host: float | None,
             scale: float = 1.0, explicit_files: int | None = None, samples_per_file: int | None = None,
             sample_bytes: float | None = None) -> Datasize:
    """The dataset a run needs. The rule uses the workload's batch size and record length, as the rules checker
    does; `samples_per_file` replaces the workload's (an OPEN override), `sample_bytes` only changes the bytes on
    disk (an INVALID record-length override does not change the rule's file count)."""
    if accelerators < 1 or hosts < 1:
        raise ValueError(f"accelerators ({accelerators}) and hosts ({hosts}) must be at least 1")
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    spf = samples_per_file or w.samples_per_file
    by_acc = accelerator_samples(w.batch_size, accelerators)
    by_mem = None if memory_gib_per_host is None else memory_samples(hosts, memory_gib_per_host, w.record_length)
    rule_files = math.ceil(max(by_acc, by_mem or 0) / spf)
    base = explicit_files if explicit_files is not None else rule_files
    files = max(1, math.ceil(base * scale)) if scale != 1 else base
    return Datasize(model=w.model, accelerator=w.accelerator, accelerators=accelerators, hosts=hosts,
                    memory_gib_per_host=memory_gib_per_host, accelerator_samples=by_acc, memory_samples=by_mem,
                    samples_per_file=spf, record_length=w.record_length, rule_files=rule_files, num_files=files,
                    scale=scale, explicit_files=explicit_files,
                    sample_bytes=None if sample_bytes in (None, w.record_length) else sample_bytes)


# DLIO 2.0.0 leaves each epoch's first step out of the accelerator utilization (statscounter: compute[1:]): with
# one step per epoch every AU is 0, so a run needs at least two.
MIN_STEPS_PER_EPOCH = 2


def min_files_for_au(batch_size: int, accelerators: int, samples_per_file: int) -> int:
    """The fewest files that give DLIO an accelerator utilization: MIN_STEPS_PER_EPOCH steps per epoch (DLIO runs
    floor(samples / batch / ranks) steps per epoch)."""
    return math.ceil(MIN_STEPS_PER_EPOCH * batch_size * accelerators / samples_per_file)


def expected_samples_read_per_epoch(num_files: int, samples_per_file: int, batch_size: int,
                                    accelerators: int) -> int:
    """Samples DLIO reads in one epoch: whole steps only (the remainder of the dataset is not read)."""
    steps = (num_files * samples_per_file) // (batch_size * accelerators)
    return steps * batch_size * accelerators
