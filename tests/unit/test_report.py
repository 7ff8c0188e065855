"""`mlps-slurm report`: an HTML page and PNGs of a finalized run of each benchmark and of a schedule's runs over time,
that open: every PNG the page links exists and decodes, and a real headless browser (Debian's chromium) renders the
page to a screenshot that is not blank. Also: the figures as numbers, the bad inputs (one error line, exit 2), the
atomic write and --force, and that nothing imports matplotlib until a report is drawn.

Without chromium the browser test is skipped with how to get it: `apt-get install chromium` (`make test` installs
it, see the Makefile's `browser` target)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlps_slurm import benchmarks
from mlps_slurm.benchmarks.training.finalize import finalize as training_finalize
from mlps_slurm.benchmarks.vectordb import finalize as vdb_finalize
from mlps_slurm.cli.main import main
from tests.unit import test_training_finalize as tr
from tests.unit import test_vectordb_plan_finalize as vdb
from tests.unit.test_history import ckpt

matplotlib = pytest.importorskip("matplotlib", reason="the report's extra: pip install 'mlps-slurm[plots]'")
pytest.importorskip("matplotlib.image")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def kvcache_run(tmp_path: Path) -> Path:
    from mlps_slurm.benchmarks.kvcache.finalize import finalize
    from mlps_slurm.run import create_run
    from tests.unit import test_kvcache_chain as kv

    plan, profile = kv.make(tmp_path, trials=3, options=("1", "2"))
    run = create_run(plan, profile, tmp_path / "runs")
    (run.preflight / "preflight.json").write_text(json.dumps({"ok": True, "reports": {}}))
    for option in ("1", "2"):
        for trial in range(3):
            for rank in range(4):
                kv.rank_file(run.raw_dir("kv_cache", "") / f"option_{option}" / f"trial_{trial}" / f"rank_{rank}",
                             1.0 + 0.1 * trial, 0.5, 100.0, 5.0, 9.0)
    finalize(run)
    return run.path


def host_metrics(run: Path, nodes=("n001", "n002"), samples: int = 30) -> None:
    folder = run / "hostmetrics" / "checkpointing"
    folder.mkdir(parents=True)
    for n, node in enumerate(nodes):
        lines = [json.dumps({"t": 1.8e9 + 2 * i, "disk_total": {"read_Bps": 0, "write_Bps": (1 + n) * 1e9 + i * 1e7},
                             "cpu": {"iowait": 10.0 + i % 7}}) for i in range(samples)]
        (folder / f"{node}.series.jsonl").write_text("\n".join(lines + ["{damaged"]) + "\n")
    (folder / "..evil.series.jsonl").write_text("{}")  # a name no node has: ignored


def report(*args: str, results: Path):
    return CliRunner().invoke(main, ["report", *args, "--set", f"storage.results_dir={results}"])


def runs_of_every_benchmark(tmp_path: Path) -> dict[str, Path]:
    ckpt_run = ckpt(tmp_path / "runs", 1, write_only=False)
    host_metrics(ckpt_run)
    training = tr.make_run(tmp_path / "tr")
    tr.six_runs(training, per_task={2: {"au": 94.0}})
    training_finalize(training)
    vector = vdb.make_run(tmp_path / "vdb")
    vdb.write_datagen(vector)
    vdb.write_runs(vector)
    vdb_finalize.finalize(vector)
    return {"checkpointing": ckpt_run, "training": training.path, "kvcache": kvcache_run(tmp_path / "kv"),
            "vectordb": vector.path}


def check_page(page: Path) -> list[Path]:
    """The PNGs the page links: each exists beside it, is a PNG of a sensible size and decodes."""
    html = page.read_text()
    links = re.findall(r'<img src="([^"]+)"', html)
    assert links, html[:2000]
    folder = page.with_name(f"{page.stem}_files")
    assert sorted(folder.iterdir()) == sorted(page.parent / link for link in links)  # every PNG linked, no stray
    pngs = []
    for link in links:
        assert not link.startswith(("/", "..")) and re.fullmatch(r"[a-z0-9_-]+/\d\d-[a-z0-9-]+\.png", link), link
        png = page.parent / link
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
        image = matplotlib.image.imread(png)
        assert image.shape[0] >= 300 and image.shape[1] >= 600
        assert len({tuple(p) for p in image[::7, ::7].reshape(-1, image.shape[2]).tolist()}) > 5
        pngs.append(png)
    return pngs


def screenshot(page: Path, out: Path) -> int:
    """Load the page in headless chromium; the number of distinct colors of its screenshot."""
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--screenshot={out}", "--window-size=1200,2400", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert out.is_file() and out.read_bytes()[:8] == PNG_MAGIC, proc.stderr[-2000:]
    image = matplotlib.image.imread(out)
    return len({tuple(p) for p in image[::3, ::3].reshape(-1, image.shape[2]).tolist()})


def test_each_benchmarks_report_writes_a_page_whose_pngs_open(tmp_path):
    for name, run in runs_of_every_benchmark(tmp_path).items():
        page = tmp_path / "out" / f"{name}.html"
        page.parent.mkdir(exist_ok=True)
        result = report(str(run), "-o", str(page), results=tmp_path / "runs")
        assert result.exit_code == 0, result.output + result.stderr
        pngs = check_page(page)
        html = page.read_text()
        assert run.name in html and name in html and "Headline numbers" in html
        names = " ".join(p.name for p in pngs)
        expected = {"checkpointing": ["checkpoint-throughput", "host-disk-checkpointing",
                                      "host-iowait-checkpointing"],
                    "training": ["au-per-run", "throughput-per-run"], "kvcache": ["bandwidth-per-trial"],
                    "vectordb": ["qps-per-run", "latency-per-run", "recall-per-run"]}[name]
        assert all(e in names for e in expected), names
        assert not list((tmp_path / "out").glob(".*.tmp"))  # the temporary directory is gone


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: `apt-get install chromium` (make test installs it)")
def test_the_page_renders_in_a_headless_browser(tmp_path):
    run = runs_of_every_benchmark(tmp_path)["checkpointing"]
    page = tmp_path / "report.html"
    assert report(run.name, "-o", str(page), results=tmp_path / "runs").exit_code == 0
    colors = screenshot(page, tmp_path / "screenshot.png")
    assert colors > 50, f"the screenshot is (nearly) blank: {colors} colors"


def test_a_schedules_report_draws_each_metric_over_time_with_the_regression_marked(tmp_path, monkeypatch):
    root, state = tmp_path / "runs", tmp_path / "state"
    folder = state / "schedules" / "nightly"
    folder.mkdir(parents=True)
    (folder / "schedule.json").write_text(json.dumps({
        "schema": "mlps-slurm/schedule/1", "name": "nightly", "cron": "0 2 * * *", "backend": "crontab",
        "argv": ["submit", "checkpointing", "--model", "llama3-8b"], "baseline": 3}))
    log = [{"action": "skipped", "reason": "busy"}]
    for day, factor in ((1, 1.0), (2, 1.01), (3, 0.99), (4, 0.70), (5, 1.0)):
        run = ckpt(root, day, factor=factor)
        log.append({"action": "submitted", "run_id": run.name, "run_dir": str(run)})
    log.append({"action": "submitted", "run_id": "gone", "run_dir": str(root / "gone")})  # pruned since
    (folder / "firings.jsonl").write_text("\n".join(json.dumps(e) for e in log) + "\n")
    page = tmp_path / "nightly.html"
    result = CliRunner().invoke(main, ["report", "nightly", "-o", str(page), "--state-dir", str(state),
                                       "--set", f"storage.results_dir={root}"])
    assert result.exit_code == 0, result.output + result.stderr
    pngs = check_page(page)
    assert [p.name.split("-", 1)[1] for p in pngs] == ["nightly-checkpointing-llama3-8b-write-throughput.png",
                                                        "nightly-checkpointing-llama3-8b-read-throughput.png"]
    html = page.read_text()
    assert "checkpointing-20270104-000000-abcdef" in html and "write_throughput regression" in html
    if CHROMIUM:
        assert screenshot(page, tmp_path / "shot.png") > 50


def test_figures_are_numbers_from_each_benchmarks_results(tmp_path):
    runs = runs_of_every_benchmark(tmp_path)

    def figures(name):
        results = json.loads((runs[name] / "results" / "results.json").read_text())
        return {f.name: f for f in benchmarks.get(name).figures(results)}

    ck = figures("checkpointing")["checkpoint-throughput"]
    assert [s.label for s in ck.series] == ["write", "read"] and len(ck.series[0].y) == 10
    au = figures("training")["au-per-run"]
    assert au.threshold == 90.0 and au.categories[0] == "00"
    assert {s.label: s.y for s in au.series}["scored"] == (96.0, 94.0, 96.0, 96.0, 96.0)
    kv = figures("kvcache")["bandwidth-per-trial"]
    assert kv.series[0].x[0] == "opt 1 · trial 1" and len(kv.series[0].y) == 6
    assert figures("vectordb")["qps-per-run"].series[0].y == (410.0, 402.5, 398.0, 415.5, 405.0)
    # a damaged results.json gives fewer points, never an exception
    assert benchmarks.get("vectordb").figures({"runs": [{"throughput_qps": "x"}, 7, {"latency_ms": []}]}) == []
    assert benchmarks.get("training").figures({"runs": "no", "summary": []}) == []


@pytest.mark.parametrize("make, expected", [
    (lambda tmp: ["nosuch", "-o", str(tmp / "r.html")], "no such run directory|no run directory"),
    (lambda tmp: ["nosuch", "-o", str(tmp / "r.txt")], "NAME.html"),
    (lambda tmp: ["nosuch", "-o", str(tmp / "missing" / "r.html")], "no such directory"),
])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, make, expected):
    result = report(*make(tmp_path), results=tmp_path / "runs")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert re.search(expected, result.stderr) and result.stderr.startswith("mlps-slurm: error: ")


def test_an_unfinished_run_and_an_existing_report_are_refused_force_replaces(tmp_path):
    run = ckpt(tmp_path / "runs", 1)
    page = tmp_path / "r.html"
    assert report(run.name, "-o", str(page), results=tmp_path / "runs").exit_code == 0
    before = sorted(p.name for p in (tmp_path / "r_files").iterdir())
    again = report(run.name, "-o", str(page), results=tmp_path / "runs")
    assert again.exit_code == 2 and "already exists; give --force" in again.stderr
    forced = report(run.name, "-o", str(page), "--force", results=tmp_path / "runs")
    assert forced.exit_code == 0 and sorted(p.name for p in (tmp_path / "r_files").iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    (run / "results" / "results.json").unlink()
    pending = report(run.name, "-o", str(tmp_path / "p.html"), results=tmp_path / "runs")
    assert pending.exit_code == 2 and "has not finalized" in pending.stderr
    assert not (tmp_path / "p.html").exists() and not (tmp_path / "p_files").exists()


def test_one_png_of_every_figure(tmp_path):
    run = ckpt(tmp_path / "runs", 1)
    out = tmp_path / "r.png"
    assert report(run.name, "-o", str(out), results=tmp_path / "runs").exit_code == 0
    assert out.read_bytes()[:8] == PNG_MAGIC and matplotlib.image.imread(out).shape[1] >= 1200


def test_without_matplotlib_report_exits_2_naming_the_extra_and_nothing_else_imports_it(tmp_path):
    run = ckpt(tmp_path / "runs", 1)
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'matplotlib':\n"
        "            raise ImportError('no matplotlib here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from mlps_slurm import benchmarks\n"
        "import mlps_slurm.report.commands, mlps_slurm.report.collect, mlps_slurm.report.page\n"
        "for b in benchmarks.all_benchmarks():\n"
        "    b.has_part('plots') and b.part('plots')\n"
        "from mlps_slurm.cli.main import main\n"
        f"sys.argv = ['mlps-slurm', 'report', {run.name!r}, '-o', {str(tmp_path / 'r.html')!r}, "
        f"'--set', 'storage.results_dir={tmp_path / 'runs'}']\n"
        "main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("mlps-slurm: error: ") and "pip install 'mlps-slurm[plots]'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r.html").exists()
