"""`resume`: what runs again, what is kept, what is set aside, and the all-or-nothing submission (fake Slurm; the
real chain is resumed in tests/integration/test_status_ops.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlps_slurm.chain import chain_status, submit_chain
from mlps_slurm.resume import ResumeError, array_tasks, compress, resume_chain
from mlps_slurm.slurm import JobState, SlurmError
from tests.unit.fake_slurm import FakeSlurmBackend
from tests.unit.test_chain_fake_slurm import make_run as make_checkpointing_run
from tests.unit.test_vectordb_plan_finalize import make_run as make_vectordb_run, raw


def done(jid: str, name: str, task: str = "") -> JobState:
    return JobState(jid, name, "COMPLETED", "None", exit_code="0:0", array_task=task)


def ended_vectordb_chain(tmp_path: Path):
    """A vectordb chain whose run task 2 failed: 0-1 completed, 3-4 cancelled before they started."""
    run = make_vectordb_run(tmp_path, runs=5)
    backend = FakeSlurmBackend()
    ids = submit_chain(run, backend)
    arr = ids["run"]
    backend.given.update({
        ids["preflight"]: [done(ids["preflight"], "mlps-preflight")],
        ids["load"]: [done(ids["load"], "mlps-load")],
        arr: [done("201", "mlps-run", "0"), done("202", "mlps-run", "1"),
              JobState("203", "mlps-run", "FAILED", "NonZeroExitCode", exit_code="1:0", array_task="2"),
              JobState(arr, "mlps-run", "CANCELLED", "None", array_task="3-4%1")],
        ids["finalize"]: [JobState(ids["finalize"], "mlps-finalize", "FAILED", "None", exit_code="1:0")],
    })
    for task in range(3):
        leaf = raw(run) / "run" / f"{task:02d}"
        leaf.mkdir(parents=True)
        (leaf / ("summary.json" if task < 2 else "engine_error.json")).write_text(json.dumps({"task": task}))
    (run.results / "results.json").write_text(json.dumps({"status": "failed"}))
    return run, backend, ids


def test_only_the_failed_and_cancelled_tasks_run_again(tmp_path):
    run, backend, ids = ended_vectordb_chain(tmp_path)
    before = len(backend.submitted)
    kept_summary = raw(run) / "run" / "00" / "summary.json"
    inode = kept_summary.stat().st_ino
    plan = resume_chain(run, backend)
    assert plan.attempt == 2
    # the load runs again because vectordb declares that a run needs the collection its load built
    assert plan.rerun == {"preflight": None, "load": None, "run": [2, 3, 4], "finalize": None}
    assert plan.kept == {"run": [0, 1]}
    new = plan.job_ids
    submitted = backend.submitted[before:]
    extra = backend.extra_args[before:]
    assert [p.name for p, _ in submitted] == [Path(run.read_manifest()["jobs"][k]["script"]).name
                                                for k in ("preflight", "load", "run", "finalize")]
    deps = [[d.render() for d in d_] for _, d_ in submitted]
    assert deps == [[], [f"afterok:{new['preflight']}"], [f"afterok:{new['load']}"],
                    [f"afterany:{new['preflight']}:{new['load']}:{new['run']}"]]
    assert "--array=2-4%1" in extra[2] and "--hold" in extra[0]
    assert all("--export=ALL,MLPS_RESUME_ATTEMPT=2" in e for e in extra)
    assert backend.released[-1] == new["preflight"]
    assert (run.path / "pin-jobs.txt").read_text() == f"{new['load']}\n{new['run']}\n"
    # completed runs untouched; the failed attempt's files moved aside, its directory recreated empty
    assert kept_summary.stat().st_ino == inode
    assert not any((raw(run) / "run" / "02").iterdir())
    aside = run.path / "attempts" / "1"
    assert (aside / raw(run).relative_to(run.path) / "run" / "02" / "engine_error.json").is_file()
    assert json.loads((aside / "results" / "results.json").read_text())["status"] == "failed"
    manifest = run.read_manifest()
    record = manifest["jobs"]["run"]
    assert record["job_id"] == new["run"] and record["tasks"] == [2, 3, 4]
    assert [e["job_id"] for e in record["earlier"]] == [ids["run"]]
    assert manifest["resumes"][0]["rerun"]["run"] == [2, 3, 4] and manifest["state"] == "submitted"
    # status merges the attempts: tasks 0-1 from the first, 2-4 from the resume
    backend.given[new["run"]] = [JobState("301", "mlps-run", "RUNNING", "None", array_task="2"),
                                 JobState(new["run"], "mlps-run", "PENDING", "JobArrayTaskLimit",
                                          array_task="3-4%1")]
    status = chain_status(run, backend)
    tasks = {t.array_task: t.state for t in status.tasks["run"]}
    assert tasks == {"0": "COMPLETED", "1": "COMPLETED", "2": "RUNNING", "3-4%1": "PENDING"}
    assert dict((k, s.state) for k, _, s in status.jobs)["run"] == "RUNNING"


def test_a_second_resume_keeps_every_attempts_completed_tasks(tmp_path):
    run, backend, ids = ended_vectordb_chain(tmp_path)
    first = resume_chain(run, backend).job_ids
    backend.given.update({
        first["preflight"]: [done(first["preflight"], "mlps-preflight")],
        first["load"]: [done(first["load"], "mlps-load")],
        first["run"]: [done("301", "mlps-run", "2"),
                       JobState("302", "mlps-run", "TIMEOUT", "TimeLimit", array_task="3"),
                       JobState(first["run"], "mlps-run", "CANCELLED", "None", array_task="4")],
        first["finalize"]: [done(first["finalize"], "mlps-finalize")],
    })
    second = resume_chain(run, backend)
    assert second.attempt == 3 and second.rerun["run"] == [3, 4] and second.kept["run"] == [0, 1, 2]
    record = run.read_manifest()["jobs"]["run"]
    assert [e["job_id"] for e in record["earlier"]] == [ids["run"], first["run"]]
    assert "earlier" not in record["earlier"][1]


def test_a_chain_still_running_is_not_resumed(tmp_path):
    run, backend, ids = ended_vectordb_chain(tmp_path)
    backend.given[ids["finalize"]] = [JobState(ids["finalize"], "mlps-finalize", "PENDING", "Dependency")]
    before = len(backend.submitted)
    with pytest.raises(ResumeError, match="still has jobs queued or running: finalize .*mlps-slurm cancel"):
        resume_chain(run, backend)
    assert len(backend.submitted) == before and not (run.path / "attempts").exists()


def test_a_successful_chain_has_nothing_to_resume(tmp_path):
    run = make_checkpointing_run(tmp_path)
    backend = FakeSlurmBackend()
    ids = submit_chain(run, backend)
    for key, jid in ids.items():
        backend.given[jid] = [done(jid, f"mlps-{key}")]
    run.results.mkdir(exist_ok=True)
    (run.results / "results.json").write_text(json.dumps({"status": "success"}))
    with pytest.raises(ResumeError, match="nothing to resume"):
        resume_chain(run, backend)
    # a finalize that failed on its own is all that runs again
    (run.results / "results.json").write_text(json.dumps({"status": "failed"}))
    assert resume_chain(run, backend, dry_run=True).rerun == {"finalize": None}


def test_a_failed_checkpointing_job_runs_again_whole(tmp_path):
    run = make_checkpointing_run(tmp_path)
    backend = FakeSlurmBackend()
    ids = submit_chain(run, backend)
    backend.given[ids["preflight"]] = [done(ids["preflight"], "mlps-preflight")]
    backend.given[ids["checkpointing"]] = [JobState(ids["checkpointing"], "mlps-checkpointing", "CANCELLED", "None")]
    backend.given[ids["finalize"]] = [JobState(ids["finalize"], "mlps-finalize", "CANCELLED", "None")]
    engine_dir = run.raw_dir("checkpointing", "llama3-8b")
    engine_dir.mkdir(parents=True)
    (engine_dir / "engine_error.0.json").write_text("{}")
    (run.path / "progress").mkdir()
    (run.path / "progress" / "checkpointing.json").write_text("{}")
    plan = resume_chain(run, backend)
    assert plan.rerun == {"preflight": None, "checkpointing": None, "finalize": None} and plan.kept == {}
    assert [d.render() for d in backend.submitted[-2][1]] == [f"afterok:{plan.job_ids['preflight']}"]
    assert not (engine_dir / "engine_error.0.json").exists()
    assert (run.path / "attempts" / "1" / "progress" / "checkpointing.json").is_file()
    assert (run.path / "pin-jobs.txt").read_text() == f"{plan.job_ids['checkpointing']}\n"


def test_a_refused_submission_leaves_the_run_as_it_was(tmp_path):
    run, backend, ids = ended_vectordb_chain(tmp_path)
    manifest = run.manifest_path.read_text()
    pins = run.pin_jobs.read_text()
    backend.fail_on_submit = len(backend.submitted) + 2  # the run array is refused
    with pytest.raises(SlurmError, match="Invalid partition"):
        resume_chain(run, backend)
    assert backend.cancelled[-2:] == [str(int(ids["finalize"]) + 1), str(int(ids["finalize"]) + 2)]
    assert run.manifest_path.read_text() == manifest and run.pin_jobs.read_text() == pins
    assert (raw(run) / "run" / "02" / "engine_error.json").is_file()
    assert (run.results / "results.json").is_file()
    assert not any(p.is_file() for p in (run.path / "attempts").rglob("*"))


@pytest.mark.parametrize("output", ["../../../etc", "/etc", "raw/../../x", "raw/./x", "raw\nx"])
def test_outputs_from_a_hostile_manifest_never_become_paths(tmp_path, output):
    run, backend, ids = ended_vectordb_chain(tmp_path)
    manifest = json.loads(run.manifest_path.read_text())
    for job in manifest["plan"]["jobs"]:
        if job["key"] == "load":
            job["outputs"] = [output]
    run.manifest_path.write_text(json.dumps(manifest))
    before = len(backend.submitted)
    with pytest.raises(ResumeError, match="not a path inside the run directory"):
        resume_chain(run, backend)
    assert len(backend.submitted) == before and not (run.path / "attempts").exists()


def test_an_output_behind_a_symlink_is_refused(tmp_path):
    run, backend, ids = ended_vectordb_chain(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "run" / "02").mkdir(parents=True)
    target = raw(run)
    import shutil

    shutil.rmtree(target)
    target.symlink_to(elsewhere)
    with pytest.raises(ResumeError, match="not a path inside the run directory"):
        resume_chain(run, backend)
    assert (elsewhere / "run" / "02").is_dir()


def test_array_syntax():
    assert array_tasks(["--nodes=2", "--array=0-5%1"]) == ([0, 1, 2, 3, 4, 5], "%1")
    assert array_tasks(["--array=1,3-4"]) == ([1, 3, 4], "")
    assert array_tasks(["--nodes=2"]) is None
    with pytest.raises(ResumeError):
        array_tasks(["--array=0-5:2"])
    assert compress([4, 0, 1, 2, 7, 8]) == "0-2,4,7-8"
    assert compress([3]) == "3"


def test_a_run_array_after_a_kept_datagen_still_waits_for_the_new_preflight(tmp_path):
    """Training: the run array's planned dependency is the datagen; when the datagen is kept, the resumed array
    must still wait for (and be pinned by) the new preflight, never start on unchecked nodes."""
    from mlps_slurm.benchmarks.training.plan import plan as plan_training
    from mlps_slurm.benchmarks.training.request import TrainingRequest
    from mlps_slurm.profile import load_profile
    from mlps_slurm.run import create_run

    profile = load_profile("localhost", [f"storage.results_dir={tmp_path}", f"storage.data_dir={tmp_path}/d"])
    run_id = "training-20261205-120000-abcdef"
    p = plan_training(TrainingRequest(model="unet3d", accelerator="b200", accelerators_per_node=1, nodes=2),
                      profile, run_id=run_id, run_dir=str(tmp_path / run_id), python="/usr/bin/python3")
    run = create_run(p, profile, tmp_path)
    backend = FakeSlurmBackend()
    ids = submit_chain(run, backend)
    backend.given.update({
        ids["preflight"]: [done(ids["preflight"], "mlps-preflight")],
        ids["datagen"]: [done(ids["datagen"], "mlps-datagen")],
        ids["run"]: [done("201", "mlps-run", "0"),
                     JobState(ids["run"], "mlps-run", "CANCELLED", "None", array_task="1-5%1")],
        ids["finalize"]: [JobState(ids["finalize"], "mlps-finalize", "CANCELLED", "None")],
    })
    plan = resume_chain(run, backend)
    assert plan.rerun == {"preflight": None, "run": [1, 2, 3, 4, 5], "finalize": None}
    run_deps = [d.render() for d in backend.submitted[-2][1]]
    assert run_deps == [f"afterok:{plan.job_ids['preflight']}"]
    assert "--array=1-5%1" in backend.extra_args[-2]
    assert run.pin_jobs.read_text() == f"{plan.job_ids['run']}\n"


def test_a_suite_resumes_only_its_unfinished_workload(tmp_path):
    """`submit all`: the checkpointing workload completed, training's run array stopped at task 2; only training's
    missing tasks run again, and each workload run gets the link to the suite's new preflight back."""
    import shutil

    from mlps_slurm.rundir import RunDirectory
    from mlps_slurm.run import create_run
    from tests.unit.test_suite import make_plan

    plan, profile = make_plan(tmp_path)
    run = create_run(plan, profile, tmp_path / "runs")
    backend = FakeSlurmBackend()
    ids = submit_chain(run, backend)
    members = {m["name"]: m for m in run.read_manifest()["request"]["members"]}
    training = next(n for n in members if n.startswith("training"))
    for key, jid in ids.items():
        backend.given[jid] = [done(jid, key)]
    backend.given[ids[f"{training}.run"]] = [done("301", "run", "0"), done("302", "run", "1"),
                                            JobState("303", "run", "FAILED", "None", array_task="2"),
                                            JobState(ids[f"{training}.run"], "run", "CANCELLED", "None",
                                                     array_task="3-5%1")]
    # what the first finalize left: each workload's own copy of the preflight report
    (run.preflight / "preflight.json").write_text("{}")
    for m in members.values():
        link = run.path / m["dir"] / "preflight"
        link.unlink()
        shutil.copytree(run.preflight, link)
    failed_leaf = run.path / members[training]["dir"] / "raw" / "training" / members[training]["model"] / "run" / "02"
    failed_leaf.mkdir(parents=True)
    (failed_leaf / "engine_error.0.json").write_text("{}")
    result = resume_chain(run, backend)
    assert result.rerun == {"preflight": None, f"{training}.run": [2, 3, 4, 5], "finalize": None}
    assert not failed_leaf.joinpath("engine_error.0.json").exists()
    aside = run.path / "attempts" / "1" / members[training]["dir"]
    assert (aside / "raw" / "training" / members[training]["model"] / "run" / "02" / "engine_error.0.json").is_file()
    for m in members.values():
        member = RunDirectory(run.path / m["dir"])
        assert member.preflight.is_symlink() and member.preflight.resolve() == run.preflight
        assert (run.path / "attempts" / "1" / m["dir"] / "preflight" / "preflight.json").is_file()
    # the workload's own manifest carries the new attempt, so its finalize reads both
    own = RunDirectory(run.path / members[training]["dir"]).read_manifest()["jobs"]["run"]
    assert own["job_id"] == result.job_ids[f"{training}.run"] and own["tasks"] == [2, 3, 4, 5]
    assert own["earlier"][0]["job_id"] == ids[f"{training}.run"]
