"""The in-job DLIO shim's pieces that need no MPI: the tensorflow stub, the dataset listing and clearing, the page
cache drop, the I/O meter that sees DLIO's persistent reader workers, and the tfrecord index stand-in."""

from __future__ import annotations

import json
import multiprocessing
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from mlps_slurm.benchmarks.training import engine as eng
from mlps_slurm.benchmarks.training import dataset, job, measure, shim


def test_dlio_main_imports_without_tensorflow_and_site_packages_stay_untouched():
    code = ("import sys; from mlps_slurm.benchmarks.training.shim import install_tensorflow_stub; "
            "install_tensorflow_stub(); import dlio_benchmark.main; "
            "print('tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"
    import importlib.util

    factory = Path(importlib.util.find_spec("dlio_benchmark").origin).parent / "profiler" / "profiler_factory.py"
    assert "from dlio_benchmark.profiler.tf_profiler import TFProfiler" in factory.read_text()  # not patched


def test_stub_says_what_tensorboard_profiling_needs():
    saved = sys.modules.pop(shim.TF_PROFILER, None)
    try:
        shim.install_tensorflow_stub()
        with pytest.raises(RuntimeError, match="profiler=tensorboard"):
            sys.modules[shim.TF_PROFILER].TFProfiler.get_instance()
    finally:
        sys.modules.pop(shim.TF_PROFILER, None)
        if saved is not None:
            sys.modules[shim.TF_PROFILER] = saved


def test_list_dataset_flat_and_with_subfolders(tmp_path):
    train = tmp_path / "train"
    (train / "0").mkdir(parents=True)
    (train / "1").mkdir()
    for name in ("1/img_3_of_4.npz", "0/img_0_of_4.npz", "0/img_2_of_4.npz", "1/img_1_of_4.npz", "0/note.txt"):
        (train / name).write_bytes(b"x")
    assert dataset.list_dataset(str(tmp_path), "npz") == ["0/img_0_of_4.npz", "0/img_2_of_4.npz",
                                                          "1/img_1_of_4.npz", "1/img_3_of_4.npz"]
    assert dataset.count_subfolders(str(tmp_path)) == 2
    assert dataset.list_dataset(str(tmp_path / "absent"), "npz") == []


def test_clear_dataset_dir_removes_only_what_dlio_made(tmp_path):
    ds = tmp_path / "ds"
    (ds / "train").mkdir(parents=True)
    (ds / "train" / "a.npz").write_bytes(b"x")
    (ds / eng.DATASET_MARKER).write_text("{}")
    dataset.clear_dataset_dir(ds)
    assert list(ds.iterdir()) == []
    (ds / "train").mkdir()
    (ds / "thesis.tex").write_text("precious")
    with pytest.raises(shim.StepError, match="refusing to delete them"):
        dataset.clear_dataset_dir(ds)
    assert (ds / "thesis.tex").exists() and (ds / "train").exists()


def test_drop_dataset_cache_evicts_the_files(tmp_path):
    paths = []
    for i in range(4):
        path = tmp_path / f"f{i}"
        path.write_bytes(os.urandom(256 << 10))
        paths.append(str(path))
    for p in paths:
        Path(p).read_bytes()
    before = measure.mean_resident(paths)
    result = measure.drop_dataset_cache(paths)
    assert result["files"] == 4 and result["failed"] == 0 and result["sampled"] == 4
    from mlps_slurm.steps.preflight.node_facts import mount_for, read_mounts

    mount = mount_for(str(tmp_path), read_mounts())
    if before is None or (mount is not None and mount.fstype == "tmpfs"):
        pytest.skip("tmpfs pages are the data itself: nothing to evict")
    assert result["resident_before"] == pytest.approx(1.0)
    assert result["resident_after"] == 0.0


def _reader(path: str, ready, done) -> None:
    Path(path).read_bytes()
    ready.set()
    done.wait(30)


def test_io_meter_counts_live_reader_workers(tmp_path):
    """DLIO's PyTorch loader keeps its workers alive (persistent_workers): their reads must be counted."""
    path = tmp_path / "data"
    path.write_bytes(os.urandom(3 << 20))
    meter = measure.IoMeter()
    meter.start()
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    worker = ctx.Process(target=_reader, args=(str(path), ready, done))
    worker.start()
    try:
        assert ready.wait(30)
        alive = meter.stop()
    finally:
        done.set()
        worker.join(30)
    assert alive["live_workers"] >= 1 and alive["rchar"] >= 3 << 20
    reaped = meter.stop()  # after join the worker's counters moved into ours
    assert reaped["rchar"] >= 3 << 20


def test_tfrecord_index_stand_in(tmp_path):
    src, dst = tmp_path / "a.tfrecord", tmp_path / "a.idx"
    records = [b"x" * 10, b"y" * 300, b""]
    with open(src, "wb") as fh:
        for data in records:
            fh.write(struct.pack("<Q", len(data)) + b"\0" * 4 + data + b"\0" * 4)
    assert job.main(["tfrecord2idx", str(src), str(dst)]) == 0
    assert dst.read_text() == "0 26\n26 316\n342 16\n"


def test_prepare_settles_the_size_from_preflight_facts(tmp_path):
    from mlps_slurm.run import create_run
    from mlps_slurm.benchmarks.training.request import TrainingRequest
    from mlps_slurm.benchmarks.training.plan import plan as plan_training
    from mlps_slurm.profile import load_profile

    profile = load_profile("localhost", [f"storage.results_dir={tmp_path / 'runs'}",
                                         f"storage.data_dir={tmp_path / 'data'}"])
    plan = plan_training(TrainingRequest("unet3d", "b200", accelerators_per_node=1, nodes=2, scale=0.024,
                                         params=("dataset.record_length=262144",
                                                 "dataset.record_length_stdev=65536"), allow_invalid=True),
                         profile, run_id="training-x", run_dir=str(tmp_path / "runs" / "training-x"), python="/py")
    run = create_run(plan, profile, tmp_path / "runs")
    assert job.main(["prepare", "--run-dir", str(run.path)]) == 1  # no preflight report yet: says what to set
    node = {"memory": {"total_bytes": 512 * (1 << 30)}}
    (run.preflight / "preflight.json").write_text(json.dumps({"ok": True, "reports": {"n1": {"facts": node},
                                                                                      "n2": {"facts": node}}}))
    before = run.manifest_path.read_bytes()
    assert job.main(["prepare", "--run-dir", str(run.path)]) == 0
    assert run.manifest_path.read_bytes() == before  # jobs never rewrite the manifest
    from mlps_slurm.benchmarks.training.record import training_record
    request = training_record(run.path, run.read_manifest())  # the size the datagen job settled
    # memory term: 2 x 512 GiB x 5 x 2^30 / 146,600,628 = 37,500.3 -> 37,501 files > 7,000; x 0.024 = 901
    assert request["num_files_train"] == 901 and request["client_memory_gb"] == 512
    assert request["datasize"]["decided_by"] == "memory" and request["datasize"]["final"]
    assert request["dataset_dir"].startswith(str(tmp_path / "data" / "unet3d" / "901f-"))
    configs = sorted((run.path / "dlio" / "config" / "workload").glob("*.yaml"))
    assert [p.name.rsplit("_", 1)[1] for p in configs] == ["datagen.yaml"] + [f"run{i:02d}.yaml" for i in range(6)]
    import yaml

    run03 = yaml.safe_load(configs[4].read_text())
    assert run03["dataset"]["num_files_train"] == 901 and run03["dataset"]["data_folder"] == request["dataset_dir"]
    assert json.loads((run.path / "datasize.json").read_text())["memory_source"].startswith("preflight facts")


def test_in_job_code_imports_no_cli_click_or_jinja2():
    code = ("import sys; import mlps_slurm.benchmarks.training.job, mlps_slurm.benchmarks.training.finalize, mlps_slurm.verify,"
            " mlps_slurm.steps.finalize, mlps_slurm.steps.finalize_suite, mlps_slurm.bundle, mlps_slurm.slurm; "
            "print([m for m in ('click', 'jinja2', 'mlps_slurm.cli', 'mlps_slurm.render') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
