"""The training catalog (mlperf-storage.md §2.1) and the dataset-size rule, against hand-computed values."""

from __future__ import annotations

import pytest

from mlps_slurm.benchmarks.training import catalog as cat
from mlps_slurm.benchmarks.training.request import TrainingRequest
from mlps_slurm.benchmarks.base import options_of
from mlps_slurm.benchmarks.training import rules as rules

GIB = 1 << 30


def test_reference_numbers():
    u = cat.workload("unet3d", "b200")
    assert (u.format, u.framework, u.data_loader) == ("npz", "pytorch", "pytorch")
    assert (u.record_length, u.record_length_stdev, u.samples_per_file) == (146_600_628, 68_341_808, 1)
    assert (u.batch_size, u.read_threads, u.epochs, u.computation_time, u.au_threshold) == (7, 4, 5, 0.162, 0.90)
    assert u.closed and u.checkpoint is None  # the b200 workload file has checkpointing off
    assert cat.workload("unet3d", "a100").computation_time == 0.636
    assert cat.workload("unet3d", "h100").checkpoint == cat.CheckpointSpec(5, 2, 499_153_191)
    r = cat.workload("resnet50", "h100")
    assert (r.format, r.samples_per_file, r.batch_size, r.computation_threads, r.record_length_resize) == \
        ("tfrecord", 1251, 400, 8, 150_528)
    assert r.needs_tensorflow and not r.closed
    c = cat.workload("cosmoflow", "h100")
    assert (c.record_length, c.batch_size, c.computation_time, c.au_threshold) == (2_828_486, 1, 0.0035, 0.70)
    assert cat.workload("retinanet", "mi355").batch_size == 32 and cat.workload("retinanet", "b200").epochs == 8
    assert cat.workload("dlrm", "b200").engine_problem and "3.0" in cat.workload("flux", "b200").engine_problem


def test_closed_set_is_unet3d_and_retinanet_on_b200_and_mi355():
    closed = sorted(k for k, w in cat.WORKLOADS.items() if w.closed)
    assert closed == [("retinanet", "b200"), ("retinanet", "mi355"), ("unet3d", "b200")]
    assert cat.is_closed("retinanet", "mi355") and not cat.is_closed("unet3d", "h100")


@pytest.mark.parametrize("model, accel", [("unet3d", "mi355"), ("resnet50", "a100"), ("cosmoflow", "b200"),
                                          ("dlrm", "h100"), ("flux", "mi355"), ("retinanet", "a100")])
def test_pairs_without_numbers_are_unsupported_with_the_reason(model, accel):
    with pytest.raises(cat.CatalogError) as err:
        cat.workload(model, accel)
    assert "mlperf-storage.md §2.1" in str(err.value) and "supported pairs: unet3d/a100" in str(err.value)


def test_every_pair_is_either_defined_or_explained():
    for m in cat.MODELS:
        for a in cat.ACCELERATORS:
            assert ((m, a) in cat.WORKLOADS) != ((m, a) in cat.UNSUPPORTED), (m, a)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(cat.CatalogError, match="valid models: unet3d, resnet50"):
        cat.workload("bert", "h100")
    with pytest.raises(cat.CatalogError, match="valid accelerators: a100, h100, b200, mi355"):
        cat.workload("unet3d", "v100")


def test_cli_choices_and_rules_tables_match_the_catalog():
    spec = {f.name: s for f, s in options_of(TrainingRequest)}
    assert spec["model"].choices == cat.MODELS and spec["accelerator"].choices == cat.ACCELERATORS
    assert rules.CLOSED_PARAMS == cat.CLOSED_PARAMS and rules.OPEN_PARAMS == cat.OPEN_PARAMS
    for key, w in cat.WORKLOADS.items():
        r = rules.WORKLOADS[key]
        assert (r.batch_size, r.record_length, r.samples_per_file, r.au_min, r.closed) == \
            (w.batch_size, w.record_length, w.samples_per_file, w.au_threshold, w.closed), key


# Hand-computed: min_samples = max(500 x batch x accelerators, hosts x GiB x 5 x 2^30 / record_length),
# files = ceil(min_samples / samples_per_file).
@pytest.mark.parametrize("model, accel, accelerators, hosts, mem, acc_samples, mem_samples, files, decided", [
    # 500*7*8 = 28,000 vs 128*5*2^30 / 146,600,628 = 4,687.6 -> 4,688
    ("unet3d", "b200", 8, 1, 128, 28_000, 4_688, 28_000, "accelerators"),
    # 500*7*1 = 3,500 vs 1024*5*2^30 / 146,600,628 = 37,500.3 -> 37,501
    ("unet3d", "b200", 1, 1, 1024, 3_500, 37_501, 37_501, "memory"),
    # 500*32*16 = 256,000 vs 2*512*5*2^30 / 322,957 = 17,022,569.x -> 17,022,570
    ("retinanet", "mi355", 16, 2, 512, 256_000, 17_022_570, 17_022_570, "memory"),
    # 500*400*4 = 800,000 vs 64*5*2^30 / 114,660.07 = 2,996,661.x -> 2,996,662; / 1,251 per file -> 2,396 files
    ("resnet50", "h100", 4, 1, 64, 800_000, 2_996_662, 2_396, "memory"),
    # 500*1*8 = 4,000 vs 16*5*2^30 / 2,828,486 = 30,369.x -> 30,370
    ("cosmoflow", "h100", 8, 1, 16, 4_000, 30_370, 30_370, "memory"),
    # 500*16,384*8 = 65,536,000 vs 256*5*2^30 / 761 = 1,806,030,926.x -> 1,806,030,927; / 4,718,592 -> 383 files
    ("dlrm", "b200", 8, 1, 256, 65_536_000, 1_806_030_927, 383, "memory"),
])
def test_datasize_against_hand_computed_values(model, accel, accelerators, hosts, mem, acc_samples, mem_samples,
                                               files, decided):
    w = cat.workload(model, accel)
    size = cat.datasize(w, accelerators, hosts, mem)
    assert (size.accelerator_samples, size.memory_samples, size.num_files, size.decided_by) == \
        (acc_samples, mem_samples, files, decided)
    assert size.total_bytes == round(files * w.samples_per_file * w.record_length)
    # The rules checker computes the same number from the same inputs.
    plan = rules.TrainingPlan(model, accel, accelerators, hosts, mem, files)
    assert rules.required_files(plan, hosts * mem) == files


def test_datasize_unknown_memory_scale_and_explicit_count():
    w = cat.workload("unet3d", "b200")
    provisional = cat.datasize(w, 2, 2, None)
    assert provisional.num_files == 7_000 and not provisional.final
    assert provisional.decided_by == "accelerators (memory unknown)"
    scaled = cat.datasize(w, 2, 2, 23.54, scale=0.024)
    assert scaled.rule_files == 7_000 and scaled.num_files == 168  # ceil(7000 * 0.024)
    explicit = cat.datasize(w, 2, 2, 23.54, explicit_files=9_000)
    assert explicit.num_files == 9_000 and explicit.decided_by == "dataset.num_files_train"
    # An INVALID record-length override changes the bytes on disk, not the rule's file count.
    small = cat.datasize(w, 2, 2, 23.54, sample_bytes=262_144)
    assert small.num_files == 7_000 and small.total_bytes == 7_000 * 262_144
    with pytest.raises(ValueError, match="scale"):
        cat.datasize(w, 2, 2, 1.0, scale=0)


def test_one_step_and_expected_reads():
    assert cat.min_files_for_au(7, 2, 1) == 28  # two steps of 7 samples on each of 2 ranks
    assert cat.min_files_for_au(400, 4, 1251) == 3  # 3,200 samples in files of 1,251
    # 168 files / (7 x 2) = 12 whole steps: every sample is read once per epoch
    assert cat.expected_samples_read_per_epoch(168, 1, 7, 2) == 168
    # 40 files / 14 = 2 whole steps: 28 samples, the last 12 files are not read
    assert cat.expected_samples_read_per_epoch(40, 1, 7, 2) == 28
