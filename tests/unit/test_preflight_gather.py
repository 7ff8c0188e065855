"""Gather's decisions from node reports written by hand: shared tokens, missing and stale reports, MPI, clocks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mlps_slurm.rundir import RunDirectory, atomic_write_json
from mlps_slurm.steps.preflight import gather as pf_gather
from mlps_slurm.steps.preflight.common import ALL_NODES, FAIL, PASS, WARN, compact_nodes, make_check
from mlps_slurm.steps.preflight.report import _replace_word, encode_report, format_text, write_outputs
from mlps_slurm.steps.preflight.tokens import token_targets

NOW = 1_800_000_000.0
DIR = "/shared/ckpt"


# What every manifest carries (mlps_slurm.rundir checks it when reading).
MANIFEST_HEAD = {"schema": "mlps-slurm/manifest/2", "run_id": "run", "benchmark": "preflight", "request": {}}

def make_run(tmp_path: Path, **spec) -> RunDirectory:
    run = RunDirectory(tmp_path / "run")
    (run.preflight / "nodes").mkdir(parents=True)
    atomic_write_json(run.manifest_path, {**MANIFEST_HEAD, "preflight": {"storage": [], **spec}})
    return run


def report(node: str, *, checks=None, targets=None, missing=None, token=True, job="9", end=NOW - 1.0) -> dict:
    checks = checks if checks is not None else [make_check("os.kernel", PASS, "Linux")]
    shared = None
    if targets is not None:
        shared = {"targets": targets, "timeout_s": 5.0, "waited_s": 0.1,
                  "dirs": {"checkpoint_dir": {"path": DIR, "token": token, "error": None if token else "Read-only "
                                                                                                     "file system",
                                              "missing": missing or []}}}
    return {"node": node, "hostname": "h", "time": "t", "clock": {"start": end - 0.2, "end": end}, "seconds": 0.2,
            "slurm_job_id": job, "shared": shared, "facts": {"cpu": {"model": "X"}}, "checks": checks}


def write(run: RunDirectory, rep: dict) -> None:
    (run.preflight / "nodes" / f"{rep['node']}.json").write_bytes(encode_report(rep))


def write_mpi(run: RunDirectory, nodes: list[str], offsets: dict | None = None, reference: str = "n1",
              job: str = "9", ok: bool = True) -> None:
    offsets = offsets if offsets is not None else {n: {"offset_s": 0.0, "rtt_s": 1e-4} for n in nodes}
    atomic_write_json(run.preflight / "mpi.json", {
        "ok": ok, "size": len(nodes), "allreduce_sum": len(nodes), "nodes": nodes, "library": "Open MPI",
        "slurm_job_id": job, "clock": {"reference_node": reference, "time": NOW, "offsets": offsets}})


def gather(run: RunDirectory, nodes: list[str]) -> dict:
    return pf_gather.gather(run, nodes, now=NOW, batch_host="n1", job_id="9").as_dict()


def check(summary: dict, node: str, cid: str) -> dict:
    return next(c for c in summary["reports"][node]["checks"] if c["id"] == cid)


def ring(nodes: list[str]) -> dict[str, list[str]]:
    return {n: token_targets(nodes, i) for i, n in enumerate(nodes)}


NODES4 = ["n1", "n2", "n3", "n4"]


def test_all_good(tmp_path):
    run = make_run(tmp_path)
    for n, t in ring(NODES4).items():
        write(run, report(n, targets=t))
    write_mpi(run, NODES4)
    summary = gather(run, NODES4)
    assert summary["ok"] and summary["failures"] == [] and summary["warnings"] == []
    assert summary["nodes"] == NODES4
    assert all(check(summary, n, "storage.checkpoint_dir.shared")["status"] == "pass" for n in NODES4)
    assert check(summary, "n2", "clock.skew")["method"] == "mpi ping-pong"
    assert summary["reports"]["n2"]["facts"] == {"cpu": {"model": "X"}}
    assert summary["cluster_checks"][0]["status"] == "pass"


def test_node_local_dir_on_one_node_blames_only_that_node(tmp_path):
    run = make_run(tmp_path)
    for n, t in ring(NODES4).items():
        write(run, report(n, targets=t, missing=[x for x in t] if n == "n3" else ["n3"]))
    write_mpi(run, NODES4)
    summary = gather(run, NODES4)
    assert [(f["node"], f["check"]) for f in summary["failures"]] == [("n3", "storage.checkpoint_dir.shared")]
    msg = summary["failures"][0]["message"]
    assert f"{DIR} on n3 is not the directory the other nodes see" in msg
    assert "saw 0 of 3 other nodes' tokens and 3 of 3 nodes did not see n3's token" in msg
    assert "findmnt -T /shared/ckpt" in msg
    assert check(summary, "n1", "storage.checkpoint_dir.shared")["status"] == "pass"


def test_a_node_missing_one_token_that_everyone_else_sees(tmp_path):
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    run = make_run(tmp_path)
    for n, t in ring(nodes).items():
        write(run, report(n, targets=t, missing=["n2"] if n == "n1" else []))
    write_mpi(run, nodes)
    summary = gather(run, nodes)
    assert [(f["node"], f["check"]) for f in summary["failures"]] == [("n1", "storage.checkpoint_dir.shared")]
    assert "n1 does not see the tokens of n2" in summary["failures"][0]["message"]
    assert check(summary, "n2", "storage.checkpoint_dir.shared")["status"] == "pass"


def test_two_nodes_that_disagree_are_both_reported(tmp_path):
    run = make_run(tmp_path)
    write(run, report("n1", targets=["n2"], missing=["n2"]))
    write(run, report("n2", targets=["n1"], missing=["n1"]))
    write_mpi(run, ["n1", "n2"])
    summary = gather(run, ["n1", "n2"])
    assert {f["node"] for f in summary["failures"]} == {"n1", "n2"}
    assert "cannot tell which one is wrong" in summary["failures"][0]["message"]


def test_a_node_that_could_not_write_its_token_is_not_blamed_twice(tmp_path):
    run = make_run(tmp_path)
    bad = [make_check("storage.checkpoint_dir.writable", FAIL, "not writable from n3: Read-only file system")]
    for n, t in ring(NODES4).items():
        write(run, report(n, targets=t, token=n != "n3", missing=["n3"] if n != "n3" else [],
                          checks=bad if n == "n3" else None))
    write_mpi(run, NODES4)
    summary = gather(run, NODES4)
    assert [(f["node"], f["check"]) for f in summary["failures"]] == [("n3", "storage.checkpoint_dir.writable")]
    shared = check(summary, "n3", "storage.checkpoint_dir.shared")
    assert shared["status"] == "warning" and "not tested on n3" in shared["message"]
    assert check(summary, "n1", "storage.checkpoint_dir.shared")["status"] == "pass"


def test_missing_unreadable_and_stale_reports(tmp_path):
    run = make_run(tmp_path)
    write(run, report("n1"))
    (run.preflight / "nodes" / "n2.json").write_text("{not json")
    write(run, report("n3", job="8"))
    (run.preflight / "nodes" / ".n1.json.tmp123").write_text("partial")  # an atomic write in progress: ignored
    write_mpi(run, NODES4)
    summary = gather(run, NODES4)
    by_node = {f["node"]: f for f in summary["failures"] if f["check"] == "node.report"}
    assert set(by_node) == {"n2", "n3", "n4"}
    assert "unreadable node report" in by_node["n2"]["message"]
    assert "is from job 8, not this preflight (job 9)" in by_node["n3"]["message"]
    assert "did not report from n4" in by_node["n4"]["message"]
    assert summary["nodes"] == NODES4 and not summary["ok"]


def test_one_line_report_is_accepted(tmp_path):
    run = make_run(tmp_path)
    legacy = report("n1", checks=[make_check("python.version", FAIL, "too old")])
    legacy = {"checks": legacy.pop("checks"), **legacy}  # checks first: gather must still append after them
    (run.preflight / "nodes" / "n1.json").write_text(json.dumps(legacy, indent=2))
    write_mpi(run, ["n1"])
    summary = gather(run, ["n1"])
    assert [(f["node"], f["check"]) for f in summary["failures"]] == [("n1", "python.version")]
    assert [c["id"] for c in summary["reports"]["n1"]["checks"]] == ["python.version", "clock.skew"]


def test_mpi_json_missing_failed_or_short(tmp_path):
    run = make_run(tmp_path)
    for n in NODES4:
        write(run, report(n))
    summary = gather(run, NODES4)
    (failure,) = summary["failures"]
    assert (failure["node"], failure["check"]) == (ALL_NODES, "mpi.collective")
    assert "wrote no" in failure["message"] and "mpi.json" in failure["message"]
    write_mpi(run, ["n1", "n2", "n4"])
    (failure,) = gather(run, NODES4)["failures"]
    assert "nodes n3 took no part" in failure["message"]
    write_mpi(run, NODES4, ok=False)
    assert "allreduce gave 4 for 4 ranks" in gather(run, NODES4)["failures"][0]["message"]
    write_mpi(run, NODES4, job="3")
    assert "is from job 3, not 9" in gather(run, NODES4)["failures"][0]["message"]


def test_clock_skew_from_mpi_offsets(tmp_path):
    run = make_run(tmp_path)
    for n in NODES4:
        write(run, report(n))
    write_mpi(run, NODES4, offsets={"n1": {"offset_s": 0.0, "rtt_s": 0.0}, "n2": {"offset_s": 2.0, "rtt_s": 1e-4},
                                    "n3": {"offset_s": -12.0, "rtt_s": 1e-4}, "n4": {"offset_s": 0.9, "rtt_s": 0.4}})
    summary = gather(run, NODES4)
    assert check(summary, "n2", "clock.skew")["status"] == "warning"
    skew3 = check(summary, "n3", "clock.skew")
    assert skew3["status"] == "error" and "-12.000 s" in skew3["message"] and "NTP" in skew3["message"]
    assert "off the batch host" in skew3["message"]
    # 0.9 s +/- 0.2 s: below the warning threshold however the uncertainty falls
    assert check(summary, "n4", "clock.skew")["status"] == "pass"
    assert [(f["node"], f["check"]) for f in summary["failures"]] == [("n3", "clock.skew")]


def test_clock_thresholds_come_from_the_manifest_and_reference_is_named(tmp_path):
    run = make_run(tmp_path, clock_skew_warn_s=0.1, clock_skew_error_s=0.5)
    write(run, report("n1"))
    write(run, report("n2"))
    write_mpi(run, ["n1", "n2"], offsets={"n1": {"offset_s": 0, "rtt_s": 0}, "n2": {"offset_s": 0.3, "rtt_s": 0}},
              reference="n2")
    summary = gather(run, ["n1", "n2"])
    skew = check(summary, "n1", "clock.skew")
    assert skew["status"] == "pass" and "n2 (MPI rank 0)" in skew["message"]
    assert check(summary, "n2", "clock.skew")["status"] == "warning"


def test_clock_fallback_without_mpi_detects_a_clock_ahead(tmp_path):
    run = make_run(tmp_path)
    write(run, report("n1", end=NOW - 0.5))
    write(run, report("n2", end=NOW + 30))
    summary = gather(run, ["n1", "n2"])
    ahead = check(summary, "n2", "clock.skew")
    assert ahead["status"] == "error" and "at least 30.000 s ahead of the batch host n1" in ahead["message"]
    fine = check(summary, "n1", "clock.skew")
    assert fine["status"] == "pass" and "a clock behind cannot be detected" in fine["message"]


def test_written_outputs_keep_the_keys_other_code_reads(tmp_path, monkeypatch):
    run = make_run(tmp_path, storage=[{"id": "checkpoint_dir", "path": str(tmp_path / "ckpt")}])
    for n, t in ring(NODES4).items():
        write(run, report(n, targets=t, checks=[make_check("os.kernel", PASS, "Linux"),
                                                make_check("memory.size", WARN, f"{n} has 8.0 GiB of memory")]))
    write(run, report("n3", targets=ring(NODES4)["n3"], checks=[make_check(
        "executable.mpirun", FAIL, "mpirun is not on PATH on n3; as root: `apt-get install -y openmpi-bin`",
        hint="as root: `apt-get install -y openmpi-bin`")]))
    write_mpi(run, NODES4)
    tokens = tmp_path / "ckpt" / ".mlps-preflight-9" / "00000"
    tokens.mkdir(parents=True)
    (tokens / "n1").write_text("n1\n")
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    monkeypatch.setenv("SLURMD_NODENAME", "n1")
    assert pf_gather.gather_main(run, NODES4) == 1
    summary = json.loads((run.preflight / "preflight.json").read_text())
    for key in ("ok", "nodes", "failures", "warnings", "reports"):
        assert key in summary
    assert summary["failures"] == [{"node": "n3", "check": "executable.mpirun", "status": "error",
                                    "message": "mpirun is not on PATH on n3; as root: `apt-get install -y "
                                               "openmpi-bin`", "hint": "as root: `apt-get install -y openmpi-bin`"}]
    text = (run.preflight / "preflight.txt").read_text()
    assert text.startswith("preflight: FAILED on 4 node(s): n[1-4]  (1 error(s), 3 warning(s); batch host n1")
    assert text.index("errors") < text.index("warnings") < text.index("passed")
    assert "  executable.mpirun: n3\n    n3: mpirun is not on PATH on n3" in text
    # one line for the warning the three nodes share
    assert "  memory.size: n[1-2,4]\n    n[1-2,4]: <node> has 8.0 GiB of memory\n" in text
    assert "  os.kernel: n[1-2,4]\n" in text and "  mpi.collective: all\n" in text
    assert not (tmp_path / "ckpt" / ".mlps-preflight-9").exists()  # tokens cleaned up


def test_format_text_of_a_decoded_preflight_json_matches(tmp_path):
    run = make_run(tmp_path)
    for n in NODES4:
        write(run, report(n))
    write_mpi(run, NODES4)
    gathered = pf_gather.gather(run, NODES4, now=NOW, batch_host="n1", job_id="9")
    assert format_text(gathered) == format_text(gathered.as_dict())
    decoded = json.loads(b"".join(gathered.chunks()))
    assert decoded == json.loads(json.dumps(gathered.as_dict()))


@pytest.mark.parametrize("names, expected", [
    (["n1", "n2", "n3", "n7"], "n[1-3,7]"),
    (["n10", "n9", "n2", "n1"], "n[1-2,9-10]"),
    (["gpu001", "gpu002", "gpu010"], "gpu[001-002,010]"),
    (["login", "n1"], "login,n1"),
    (["a1b2"], "a1b2"),
    ([], ""),
])
def test_compact_nodes(names, expected):
    assert compact_nodes(names) == expected


def test_compact_nodes_round_trips_through_hostlist_expand():
    from mlps_slurm import hostlist

    names = [f"c{i:04d}" for i in range(1, 5000, 3)] + ["login1", "x"]
    assert sorted(hostlist.expand(compact_nodes(names))) == sorted(names)


def test_replace_word_only_replaces_the_whole_node_name():
    assert _replace_word("n1 and n10 and /data/n1 and n1.", "n1", "<node>") == \
        "<node> and n10 and /data/n1 and <node>."


def test_gather_of_many_nodes(tmp_path):
    """2,000 reports gathered into one verdict. How fast is measured by perf/preflight_gather.py (printed figures,
    not a timed assertion: these machines are noisy)."""
    nodes = [f"c{i:05d}" for i in range(1, 2001)]
    run = make_run(tmp_path)
    checks = [make_check(f"check.{i}", PASS, "fine " * 10, value=i) for i in range(15)]
    targets = ring(nodes)
    for n in nodes:
        write(run, report(n, targets=targets[n], checks=checks))
    write_mpi(run, nodes)
    gathered = pf_gather.gather(run, nodes, now=NOW, batch_host="c00001", job_id="9")
    write_outputs(run, gathered)
    assert gathered["ok"] and len(gathered["nodes"]) == 2000
