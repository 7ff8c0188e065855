"""`mlps-slurm history`: recording finalized runs, the noise-aware comparison and its exit status, and every bad
input (damaged database, damaged run, hostile manifest) as one error line with exit 2."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlps_slurm.cli.main import main
from mlps_slurm.history import compare_to_baseline, record
from mlps_slurm.history import store
from mlps_slurm.history.compare import IMPROVEMENT, NOISE, REGRESSION, Series, judge
from mlps_slurm.history.store import HistoryError, get, select
from tests.unit.rules_corpus import T0, checkpoint_run

DAY = 86400.0


def ckpt(root: Path, day: int, factor: float = 1.0, write_only: bool = True, **kw) -> Path:
    """A finalized checkpointing run finalized on day `day`, its write throughputs (and reads unless write_only)
    scaled by `factor`: the injected slowdown or speed-up."""
    run = checkpoint_run(root, run_id=f"checkpointing-202701{day:02d}-000000-abcdef", start=T0 + day * DAY, **kw)
    path = run / "results" / "results.json"
    results = json.loads(path.read_text())
    for c in results["metrics"]["checkpoints"]:
        if c["phase"] == "write" or not write_only:
            c["throughput_GBps"] *= factor
    results["finalized"] = f"2027-01-{day:02d}T01:00:00+00:00"
    path.write_text(json.dumps(results))
    return run


def cli(*args: str, results: Path, db: Path | None = None):
    extra = ["--db", str(db)] if db else []
    return CliRunner().invoke(main, ["history", *args, "-o", f"storage.results_dir={results}",
                                                     *extra])


def verdicts_of(result) -> dict[str, str]:
    return {m["name"]: m["verdict"] for m in json.loads(result.stdout)["metrics"]}


# --- the required figures: a 30 % slowdown is a regression, a 2 % change is within noise ---------------------------

def test_a_30_percent_slower_write_is_a_regression_and_exits_non_zero(tmp_path):
    root = tmp_path / "runs"
    base, slow = ckpt(root, 1), ckpt(root, 2, factor=0.70)
    result = cli("compare", base.name, slow.name, "--json", results=root)
    assert result.exit_code == 6, result.output + result.stderr
    doc = json.loads(result.stdout)
    assert doc["regressed"] and doc["verdict"] == REGRESSION
    assert verdicts_of(result) == {"write_throughput": REGRESSION, "read_throughput": NOISE}
    write = doc["metrics"][0]
    assert write["change"] == pytest.approx(-0.30) and write["n_baseline"] == write["n_candidate"] == 10
    text = cli("compare", base.name, slow.name, results=root)
    assert text.exit_code == 6 and "REGRESSION" in text.stdout and "-30.0%" in text.stdout
    assert "verdict: regression (write_throughput)" in text.stdout


def test_a_2_percent_change_is_within_noise_and_exits_0(tmp_path):
    root = tmp_path / "runs"
    base, other = ckpt(root, 1), ckpt(root, 2, factor=0.98, write_only=False)
    result = cli("compare", base.name, other.name, "--json", results=root)
    assert result.exit_code == 0, result.stderr
    assert verdicts_of(result) == {"write_throughput": NOISE, "read_throughput": NOISE}
    assert json.loads(result.stdout)["metrics"][0]["change"] == pytest.approx(-0.02)


def test_a_faster_run_is_an_improvement_not_an_alert(tmp_path):
    root = tmp_path / "runs"
    base, fast = ckpt(root, 1), ckpt(root, 2, factor=1.25)
    result = cli("compare", base.name, fast.name, "--json", results=root)
    assert result.exit_code == 0
    assert verdicts_of(result)["write_throughput"] == IMPROVEMENT
    assert json.loads(result.stdout)["verdict"] == IMPROVEMENT


def test_baseline_last_n_pools_the_previous_runs_of_the_same_request(tmp_path):
    root = tmp_path / "runs"
    for day, factor in ((1, 1.0), (2, 1.01), (3, 0.99)):
        ckpt(root, day, factor=factor)
    ckpt(root, 4, writes=5)  # another request (5 writes): never part of the baseline
    slow = ckpt(root, 5, factor=0.70)
    result = cli("compare", slow.name, "--baseline", "last-3", "--json", results=root)
    assert result.exit_code == 6, result.stderr
    doc = json.loads(result.stdout)
    assert doc["baseline"] == [f"checkpointing-202701{d:02d}-000000-abcdef" for d in (3, 2, 1)]
    assert doc["metrics"][0]["baseline_runs"] == 3 and doc["metrics"][0]["n_baseline"] == 30
    db = root / "history.sqlite"
    verdicts, regressed = compare_to_baseline(db, slow.name, 3)
    assert regressed and verdicts[0].verdict == REGRESSION
    # --any-request also pools the 5-write run; the first run has nothing before it
    assert compare_to_baseline(db, slow.name, 2, same_request=False)[1]
    assert compare_to_baseline(db, "checkpointing-20270101-000000-abcdef", 3) == ([], False)
    first = cli("compare", "checkpointing-20270101-000000-abcdef", "--baseline", "last-3", results=root)
    assert first.exit_code == 0 and "no baseline" in first.stdout


def test_the_verdict_follows_the_samples_spread_and_the_metrics_direction():
    def series(values, higher=True):
        return Series("m", "GB/s", higher, (tuple(values),))

    steady = [10.0, 10.1, 9.9, 10.05, 9.95]
    noisy = [7.0, 13.0, 8.0, 12.0, 10.0]
    # 15 % lower: a regression when the samples are steady, within noise when they scatter by +-30 %
    assert judge(series(steady), series([v * 0.85 for v in steady])).verdict == REGRESSION
    wide = judge(series(noisy), series([v * 0.85 for v in noisy]))
    assert wide.verdict == NOISE and wide.band > 0.15 and wide.basis.startswith("samples")
    # latency: higher is worse
    assert judge(series(steady, False), series([v * 1.3 for v in steady], False)).verdict == REGRESSION
    assert judge(series(steady, False), series([v * 0.7 for v in steady], False)).verdict == IMPROVEMENT
    # one sample each: no spread, a fixed 10 % band
    assert judge(series([10.0]), series([9.5])).verdict == NOISE
    assert judge(series([10.0]), series([8.5])).verdict == REGRESSION
    assert judge(series([10.0]), series([9.5])).basis == "no spread"
    assert judge(None, series(steady)).verdict == "missing"


# --- recording ------------------------------------------------------------------------------------------------------

def test_recording_is_idempotent_and_replaces_the_row(tmp_path):
    root, db = tmp_path / "runs", tmp_path / "h.sqlite"
    run = ckpt(root, 1)
    row = record(run, db)
    assert row.benchmark == "checkpointing" and row.model == "llama3-8b" and row.nodes == ["n001"]
    assert [m.name for m in row.metrics] == ["write_throughput", "read_throughput"]
    assert len(row.metrics[0].samples) == 10 and row.versions["mlps-builtin-checkpoint"] == "0.1.0"
    ckpt_again = ckpt(root.parent / "again", 1, factor=0.5)  # same run id, other figures
    record(ckpt_again, db)
    assert len(select(db)) == 1
    assert get(db, run.name).metrics[0].value == pytest.approx(row.metrics[0].value * 0.5)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM metrics").fetchone()[0] == 2
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_list_records_new_finalized_runs_and_skips_unfinished_ones(tmp_path):
    root = tmp_path / "runs"
    ckpt(root, 1)
    unfinished = ckpt(root, 2)
    (unfinished / "results" / "results.json").unlink()
    result = cli("list", "--json", results=root)
    assert result.exit_code == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert [r["run_id"] for r in runs] == ["checkpointing-20270101-000000-abcdef"]
    assert runs[0]["metrics"][0]["name"] == "write_throughput"
    text = cli("list", results=root)
    assert "write_throughput" in text.stdout and "llama3-8b" in text.stdout
    ingest = cli("ingest", str(unfinished), results=root)
    assert ingest.exit_code == 0 and "skipped" in ingest.stdout and "has not finalized" in ingest.stdout
    shown = cli("show", "checkpointing-20270101-000000-abcdef", results=root)
    assert shown.exit_code == 0 and "write_throughput" in shown.stdout and "n001" in shown.stdout


def test_the_profile_key_names_the_database(tmp_path):
    root = tmp_path / "runs"
    ckpt(root, 1)
    where = tmp_path / "elsewhere" / "h.sqlite"
    result = CliRunner().invoke(main, ["history", "list", "-o", f"storage.results_dir={root}",
                                                       "-o", f"history.db={where}"])
    assert result.exit_code == 0 and where.is_file() and not (root / "history.sqlite").exists()


# --- bad input: one line naming the path, exit 2, never a traceback ----------------------------------------------

def _bad(result, *words: str) -> None:
    assert result.exit_code == 2, result.output + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("mlps-slurm: error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr + result.stdout, result.stderr
    for word in words:
        assert word in result.stderr


def test_a_damaged_database_file_is_named(tmp_path):
    root, db = tmp_path / "runs", tmp_path / "h.sqlite"
    ckpt(root, 1)
    db.write_bytes(b"\x00garbage, not SQLite" * 400)
    _bad(cli("list", results=root, db=db), str(db), "not a readable history database")
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE jobs (id INTEGER)")
    _bad(cli("list", results=root, db=other), str(other), "something else")
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    _bad(cli("list", results=root, db=newer), "newer mlps-slurm")
    _bad(cli("list", results=root, db=tmp_path), "is a directory")


def test_a_locked_database_is_named(tmp_path, monkeypatch):
    root, db = tmp_path / "runs", tmp_path / "h.sqlite"
    record(ckpt(root, 1), db)
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.1)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(HistoryError, match="locked"):
            record(ckpt(root, 2), db)
    finally:
        holder.close()


def test_a_damaged_run_is_named(tmp_path):
    root = tmp_path / "runs"
    run = ckpt(root, 1)
    (run / "results" / "results.json").write_bytes(b'{"status": "success", "model": "\xff\xfe"}')
    _bad(cli("ingest", str(run), results=root), str(run / "results" / "results.json"), "not UTF-8")
    a_file = tmp_path / "not-a-run"
    a_file.write_text("x")
    _bad(cli("ingest", str(a_file), results=root), str(a_file), "is a file")
    _bad(cli("show", str(a_file), results=root), "is a file")
    _bad(cli("show", "no-such-run", results=root), "no run 'no-such-run' recorded")
    _bad(cli("compare", "a", "b", "--baseline", "last-2", results=root), "two runs")
    _bad(cli("compare", "a", "--baseline", "previous", results=root), "expected last-N")
    # the scan of `list` reports the damaged run on one line and lists the rest
    ckpt(root, 2)
    listed = cli("list", results=root)
    assert listed.exit_code == 0 and "warning: not recorded" in listed.stderr and "not UTF-8" in listed.stderr


@pytest.mark.parametrize("run_id", ["../../etc/passwd", "/abs", "a b", ".hidden", "x" * 300, "run\x1b[2J"])
def test_a_hostile_run_id_never_becomes_a_record_or_a_path(tmp_path, run_id):
    root = tmp_path / "runs"
    run = ckpt(root, 1)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["run_id"] = run_id
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = cli("ingest", str(run), results=root)
    _bad(result, "not a plain run id")
    assert select(root / "history.sqlite") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_a_hostile_model_name_is_refused(tmp_path):
    root = tmp_path / "runs"
    run = ckpt(root, 1)
    results = json.loads((run / "results" / "results.json").read_text())
    results["model"] = "../\x1b[31mred"
    (run / "results" / "results.json").write_text(json.dumps(results))
    _bad(cli("ingest", str(run), results=root), "not a plain name")
