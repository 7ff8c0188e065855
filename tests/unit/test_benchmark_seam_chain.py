"""The per-benchmark seam: a benchmark that exists only as one package (request, plan, finalize, report, rules)
plus one registry entry and its template gets `render`/`submit` commands with options derived from its request,
a planned chain, a run directory and a finalize, without any edit to a shared module.

The package is written into tmp_path and registered by monkeypatching the registry, as a new benchmark would be
registered by its one line in mlps_slurm/benchmarks/__init__.py.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from click.testing import CliRunner

from mlps_slurm import benchmarks

PACKAGE = {
    "__init__.py": '''
        from mlps_slurm.benchmarks.base import Benchmark
        BENCHMARK = Benchmark(name="seamtest", package=__name__, summary="A benchmark made by a test.",
                              tree_name="seam_test", runnable=True, models=("small", "large"),
                              engines=("builtin",), suite_models=("small",))
    ''',
    "request.py": '''
        from dataclasses import dataclass
        from mlps_slurm.benchmarks.base import Request, option

        @dataclass(frozen=True)
        class SeamRequest(Request):
            benchmark = "seamtest"
            model: str = option(None, "--model", required=True, choices=("small", "large"), help="Workload.")
            files: int = option(4, "--files", min=1, max=64, help="Files to write.")
            scale: float = option(1.0, "--scale", min=0, max=1, min_open=True, suite="cli", help="Shrink.")

        REQUEST = SeamRequest
    ''',
    "plan.py": '''
        from mlps_slurm.plan import JobSpec, Plan, base_context, finalize_job, preflight_job, sbatch_directives
        from mlps_slurm.plan import preflight_requirements, with_site_args
        from mlps_slurm.rundir import raw_path

        def plan(request, profile, *, run_id, run_dir, python):
            base = base_context(profile, python, run_id, run_dir)
            raw = raw_path(run_dir, "seam_test", request.model)
            job = JobSpec(key="write", template="seamtest.sbatch.j2",
                          sbatch=tuple(sbatch_directives(profile, run_dir, "write", "run", benchmark_job=True)),
                          dependencies=(("afterok", ("preflight",)),), pin_to_preflight=True,
                          context={**base, "raw_dir": raw, "files": request.files})
            jobs = (preflight_job(profile, run_dir, python, 1, base), job,
                    finalize_job(profile, run_dir, python, base, ("preflight", "write")))
            return Plan(run_id=run_id, benchmark="seamtest", request=request, settings={"raw_dir": raw},
                        jobs=with_site_args(jobs, profile), notes=(),
                        preflight=preflight_requirements(profile, run_dir, python, storage=[], engine_modules=[]))

        def probe(plan, python):
            pass

        def suite_request(model, profile, settings):
            from .request import SeamRequest
            return SeamRequest(model=model, scale=settings["scale"])
    ''',
    "rules.py": '''
        def plan_from_request(request):
            return dict(request)

        def plan_findings(plan):
            return []
    ''',
    "report.py": '''
        def table(results):
            return f"seamtest {results['model']}: {results['status']}\\n"
    ''',
    "finalize.py": '''
        from mlps_slurm.rundir import run_record
        from mlps_slurm.steps.outcome import job_states, preflight_reasons, write_results
        from .report import table

        def finalize(run):
            manifest = run.read_manifest()
            states = job_states(manifest)
            results = write_results(run, manifest, preflight_reasons(run, states), states, table,
                                    files=run_record(manifest)["files"])
            return results, table(results)
    ''',
}
TEMPLATE = '{% include "_header.sbatch.j2" %}\n\nmkdir -p {{ raw_dir }}\necho {{ files }} files\n'


@pytest.fixture
def seam_benchmark(tmp_path, monkeypatch):
    pkg = tmp_path / "pkgs" / "seamtest_bench"
    pkg.mkdir(parents=True)
    for name, text in PACKAGE.items():
        (pkg / name).write_text(textwrap.dedent(text))
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "seamtest.sbatch.j2").write_text(TEMPLATE)
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    monkeypatch.setitem(benchmarks.REGISTRY, "seamtest", "seamtest_bench")  # the one registry line
    yield templates
    for mod in [m for m in sys.modules if m.startswith("seamtest_bench")]:
        del sys.modules[mod]


def test_a_new_package_and_one_registry_line_give_a_rendered_chain(seam_benchmark, tmp_path):
    from mlps_slurm.cli.main import main

    runs = tmp_path / "runs"
    result = CliRunner().invoke(main, ["render", "seamtest", "--model", "large", "--files", "7",
                                       "--results-dir", str(runs), "-o", f"templates.dir={seam_benchmark}"])
    assert result.exit_code == 0, result.output
    assert "pre-run rules check: CLOSED" in result.output
    (run,) = runs.iterdir()
    scripts = sorted(p.name for p in (run / "scripts").iterdir())
    assert scripts == ["00-preflight.sbatch", "01-write.sbatch", "02-finalize.sbatch"]
    assert "echo 7 files" in (run / "scripts" / "01-write.sbatch").read_text()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["benchmark"] == "seamtest"
    assert manifest["request"] == {"benchmark": "seamtest", "model": "large", "files": 7, "scale": 1.0}
    assert manifest["settings"]["raw_dir"] == f"{run}/raw/seam_test/large"


def test_its_options_and_ranges_come_from_its_request(seam_benchmark, tmp_path):
    from mlps_slurm.cli.main import main

    runner = CliRunner()
    help_text = runner.invoke(main, ["submit", "seamtest", "--help"]).output
    assert "--files" in help_text and "1<=x<=64" in help_text and "[small|large]" in help_text
    assert "seamtest" in runner.invoke(main, ["submit", "--help"]).output
    bad = runner.invoke(main, ["render", "seamtest", "--model", "small", "--files", "0",
                               "--results-dir", str(tmp_path / "runs")])
    assert bad.exit_code == 2 and "--files" in bad.output
    assert not (tmp_path / "runs").exists()


def test_its_finalize_runs_through_the_shared_entry_point(seam_benchmark, tmp_path):
    from mlps_slurm.benchmarks.base import Request  # noqa: F401  (the package imports it)
    from mlps_slurm.profile import load_profile
    from mlps_slurm.run import benchmark_planner, create_run
    from mlps_slurm.steps.finalize import main as finalize_main

    request = benchmarks.get("seamtest").request_type(model="small", files=2)
    profile = load_profile("localhost", [f"storage.results_dir={tmp_path / 'runs'}",
                                         f"templates.dir={seam_benchmark}"])
    plan = benchmark_planner("seamtest", request)(profile, "seamtest-x", str(tmp_path / "runs" / "seamtest-x"),
                                                 sys.executable)
    run = create_run(plan, profile, tmp_path / "runs")
    (run.preflight / "preflight.json").write_text(json.dumps({"ok": True, "reports": {}}))
    assert finalize_main(["--run-dir", str(run.path)]) == 0
    results = json.loads(run.results_json.read_text())
    assert results["benchmark"] == "seamtest" and results["files"] == 2 and results["status"] == "success"
    assert run.results_text.read_text() == "seamtest small: success\n"
