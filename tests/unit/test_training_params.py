"""--param checks (CLOSED / OPEN / INVALID, refused before submission) and the plan's refusals."""

from __future__ import annotations

import pytest

from mlps_slurm.benchmarks.training import engine as eng
from mlps_slurm.benchmarks.training.params import ParamError, classify_param, params_verdict, parse_params
from mlps_slurm.plan import PlanError
from mlps_slurm.benchmarks.training.request import TrainingRequest
from mlps_slurm.benchmarks.training.plan import plan as plan_training
from mlps_slurm.profile import load_profile

RUN_ID = "training-20261128-120000-abcdef"
RUN_DIR = f"/scratch/runs/{RUN_ID}"


def prerun_ok(plan):
    """Whether the rules let this plan's run be submitted (CLOSED or OPEN), judged before it runs."""
    from mlps_slurm.rules import check_request, combine
    return combine(check_request(plan.benchmark, plan.record())).value != "INVALID"


def plan(**kw):
    profile = load_profile("localhost", ["storage.data_dir=/data/mlps", "nodes.memory_gb=64"])
    request = TrainingRequest(**{"model": "unet3d", "accelerator": "b200", "accelerators_per_node": 1,
                                 "nodes": 2, **kw})
    return plan_training(request, profile, run_id=RUN_ID, run_dir=RUN_DIR, python="/opt/venv/bin/python")


@pytest.mark.parametrize("key, model, division", [
    ("dataset.num_files_train", "unet3d", "CLOSED"),
    ("reader.read_threads", "unet3d", "CLOSED"),
    ("checkpoint.checkpoint_folder", "retinanet", "CLOSED"),
    ("storage.storage_options.prefetch_window", "unet3d", "CLOSED"),
    ("reader.odirect", "unet3d", "CLOSED"),
    ("reader.odirect", "retinanet", "OPEN"),  # CLOSED for unet3d only
    ("framework", "unet3d", "OPEN"),
    ("dataset.format", "unet3d", "OPEN"),
    ("dataset.num_samples_per_file", "unet3d", "OPEN"),
    ("reader.data_loader", "unet3d", "OPEN"),
    ("reader.batch_size", "unet3d", "INVALID"),
    ("dataset.record_length", "unet3d", "INVALID"),
    ("train.epochs", "unet3d", "INVALID"),
    ("train.computation_time", "unet3d", "INVALID"),
    ("workflow.train", "unet3d", "MANAGED"),
    ("train.seed", "unet3d", "MANAGED"),
    ("dataset.keep_files", "unet3d", "MANAGED"),
    ("hydra.run.dir", "unet3d", "MANAGED"),
])
def test_classification(key, model, division):
    assert classify_param(key, model) == division


def test_parse_strips_dlio_prefix_and_reads_yaml_values():
    params = parse_params(["++workload.reader.read_threads=8", "reader.odirect=true",
                           "dataset.data_folder=/lustre/ds"], "unet3d")
    assert [(p.key, p.value, p.division) for p in params] == [
        ("reader.read_threads", 8, "CLOSED"), ("reader.odirect", True, "CLOSED"),
        ("dataset.data_folder", "/lustre/ds", "CLOSED")]
    assert params[0].override() == "++workload.reader.read_threads=8"
    assert params_verdict(params) == "CLOSED"
    assert params_verdict(parse_params(["framework=pytorch"], "unet3d")) == "OPEN"


@pytest.mark.parametrize("items, message", [
    (["reader.read_threads"], "expected KEY=VALUE, e.g. --param reader.read_threads=8"),
    (["=8"], "expected KEY=VALUE"),
    (["reader.read_threads=4", "reader.read_threads=8"], "is given twice"),
    (["reader.read_threads=[1, 2]"], "only single values"),
    (["workflow.generate_data=True"], "mlps-slurm sets workflow.generate_data itself"),
    (["train.seed=1"], "remove this --param"),
])
def test_malformed_or_managed_params_say_what_to_do(items, message):
    with pytest.raises(ParamError) as err:
        parse_params(items, "unet3d")
    assert message in str(err.value)


def test_invalid_param_is_refused_before_submission_unless_allowed():
    with pytest.raises(PlanError) as err:
        plan(params=("reader.batch_size=4",))
    text = str(err.value)
    assert "--param reader.batch_size: allowed in neither division" in text and "--allow-invalid" in text
    p = plan(params=("reader.batch_size=4",), allow_invalid=True)
    assert not prerun_ok(p) and p.record()["params_verdict"] == "INVALID"
    from mlps_slurm.rules import check_request
    assert any(f.rule_id == "train.params" and f.verdict.value == "INVALID"
               for f in check_request("training", p.record()))
    assert p.record()["workload_config"]["reader"]["batch_size"] == 4


def test_managed_param_is_refused_even_with_allow_invalid():
    with pytest.raises(PlanError, match="mlps-slurm sets workflow.checkpoint itself"):
        plan(params=("workflow.checkpoint=True",), allow_invalid=True)


def test_closed_and_open_params_are_accepted_and_recorded():
    p = plan(params=("reader.read_threads=2", "reader.odirect=True"))
    assert p.record()["param_values"] == {"reader.read_threads": "2", "reader.odirect": "True"}
    assert p.record()["params_verdict"] == "CLOSED" and prerun_ok(p)
    p = plan(params=("dataset.format=hdf5",))
    from mlps_slurm.rules import check_request, combine
    assert p.record()["params_verdict"] == "OPEN" and combine(check_request("training", p.record())).value == "OPEN"


@pytest.mark.parametrize("kw, message", [
    ({"model": "dlrm"}, "parquet exists only in the MLCommons fork of DLIO at v3.0.x"),
    ({"model": "flux"}, "Python >= 3.12"),
    ({"model": "unet3d", "accelerator": "mi355"}, "no computation time or batch size for unet3d on mi355"),
    ({"params": ("dataset.format=parquet",)}, "dataset.format parquet cannot be generated or read"),
    ({"params": ("dataset.format=tfrecord",)}, "use reader.data_loader=tensorflow"),
    ({"params": ("framework=tensorflow",)}, "do not go together"),
    ({"params": ("dataset.format=zarr",)}, "not a format dlio-benchmark 2.0.0 knows"),
    ({"params": ("dataset.record_length=65536",), "allow_invalid": True},
     "set dataset.record_length_stdev to match"),
    ({"params": ("dataset.num_samples_per_file=0",)}, "expected a whole number >= 1"),
    ({"scale": 0.001}, "every AU would be 0; use --scale 0.004 or more"),
    ({"scale": 1.5}, "--scale must be > 0 and <= 1"),
    ({"nodes": 5}, "the profile allows 4 (nodes.count)"),
    ({"params": ("dataset.num_files_train=100",)}, "below the 7000 files the rules require"),
])
def test_refusals_name_the_option_and_the_fix(kw, message):
    with pytest.raises(PlanError) as err:
        plan(**kw)
    assert message in str(err.value)


def test_tensorflow_workloads_are_flagged_for_the_probe():
    profile = load_profile("localhost", ["nodes.memory_gb=64"])
    p = plan_training(TrainingRequest("resnet50", "h100", accelerators_per_node=1, nodes=1), profile,
                      run_id=RUN_ID, run_dir=RUN_DIR, python="/py")
    assert p.record()["needs_tensorflow"] and "tensorflow" in p.preflight["python_modules"]
    assert not prerun_ok(p)  # resnet50 is what-if only in v3.0
    open_variant = plan_training(
        TrainingRequest("resnet50", "h100", accelerators_per_node=1, nodes=1,
                        params=("framework=pytorch", "reader.data_loader=pytorch", "dataset.format=npz")),
        profile, run_id=RUN_ID, run_dir=RUN_DIR, python="/py")
    assert not open_variant.record()["needs_tensorflow"]


def test_probe_reports_missing_tensorflow_with_the_fix(tmp_path):
    import sys

    problems = eng.probe_engine(sys.executable, need_tensorflow=True)
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        assert len(problems) == 1 and "needs tensorflow" in problems[0] and "tensorflow-cpu" in problems[0]
    else:
        assert problems == []
    assert eng.probe_engine(sys.executable, need_tensorflow=False) == []
    bad = eng.probe_engine(str(tmp_path / "no-python"), need_tensorflow=False)
    assert "environment.python" in bad[0]
