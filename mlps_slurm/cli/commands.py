"""The work behind the click commands, imported lazily by mlps_slurm.cli.main."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mlps_slurm.chain import (ChainStatus, chain_status, create_run, describe_status, jobs_python, submit_chain,
                              wait_for_chain)
from mlps_slurm.benchmarks.checkpointing.dlio import DlioUnsupported, require_dlio_checkpointing
from mlps_slurm.plan import CheckpointingRequest, PlanError, plan_checkpointing
from mlps_slurm.profile import ProfileError, load_profile
from mlps_slurm.render import TemplateError
from mlps_slurm.rundir import new_run_id, resolve_run
from mlps_slurm.slurm import SlurmError, SlurmUnreachable, get_backend

EXIT_USAGE, EXIT_SLURM, EXIT_FAILED = 2, 3, 1


def _error(message: str) -> None:
    click.echo(f"mlps-slurm: error: {message}", err=True)


def run_checkpointing(action: str, profile_ref: str, overrides: list[str], results_dir: str | None, wait: bool,
                      timeout: float, options: dict[str, Any]) -> int:
    def plan_it(profile: Any, run_id: str, run_dir: str, python: str) -> Any:
        request = CheckpointingRequest(
            model=options["model"], num_processes=options["num_processes"], scale=options["scale"],
            num_checkpoints_write=options["writes"], num_checkpoints_read=options["reads"],
            seconds_between_checkpoints=options["seconds_between_checkpoints"], nodes=options["nodes"],
            engine=options["engine"] or profile.get("engines.checkpointing.engine"),
            keep_files=options["keep_files"], skip_preflight=options["skip_preflight"],
            accelerator=options["accelerator"],
            verify_lockfile=str(Path(options["verify_lockfile"]).resolve()) if options["verify_lockfile"] else None)
        if request.verify_lockfile:
            from mlps_slurm.lockfile import LockfileError, parse

            try:
                parse(request.verify_lockfile)  # a broken lockfile is refused here, not on every node
            except LockfileError as exc:
                raise PlanError(f"--verify-lockfile: {exc}") from exc
        plan = plan_checkpointing(request, profile, run_id=run_id, run_dir=run_dir, python=python)
        if request.engine == "dlio":
            require_dlio_checkpointing(python)
        return plan

    return launch(action, "checkpointing", plan_it, profile_ref, overrides, results_dir, wait, timeout)


def run_training(action: str, profile_ref: str, overrides: list[str], results_dir: str | None, wait: bool,
                 timeout: float, options: dict[str, Any]) -> int:
    from mlps_slurm.benchmarks.training.engine import probe_engine
    from mlps_slurm.benchmarks.training.plan import TrainingRequest, plan_training

    def plan_it(profile: Any, run_id: str, run_dir: str, python: str) -> Any:
        request = TrainingRequest(model=options["model"], accelerator=options["accelerator"],
                                  accelerators_per_node=options["accelerators_per_node"], nodes=options["nodes"],
                                  scale=options["scale"], params=tuple(options["params"]),
                                  allow_invalid=options["allow_invalid"], reuse_data=options["reuse_data"])
        plan = plan_training(request, profile, run_id=run_id, run_dir=run_dir, python=python)
        problems = probe_engine(python, plan.request["needs_tensorflow"])
        if problems:
            raise PlanError("; ".join(problems))
        return plan

    return launch(action, "training", plan_it, profile_ref, overrides, results_dir, wait, timeout)


def run_suite(action: str, profile_ref: str, overrides: list[str], results_dir: str | None, wait: bool,
              timeout: float, options: dict[str, Any]) -> int:
    from mlps_slurm.plan_suite import SuiteRequest, plan_suite

    benchmarks = None
    if options["benchmarks"] is not None:
        benchmarks = tuple(b.strip() for b in options["benchmarks"].split(",") if b.strip())

    def check_engines(plan: Any, python: str) -> None:
        if plan.benchmark == "training":
            from mlps_slurm.benchmarks.training.engine import probe_engine

            problems = probe_engine(python, plan.request["needs_tensorflow"])
            if problems:
                raise PlanError("; ".join(problems))
        elif plan.request.get("engine") == "dlio":
            require_dlio_checkpointing(python)

    def plan_it(profile: Any, run_id: str, run_dir: str, python: str) -> Any:
        request = SuiteRequest(scale=options["scale"], nodes=options["nodes"], benchmarks=benchmarks,
                               seconds_between_checkpoints=options["seconds_between_checkpoints"],
                               allow_invalid=options["allow_invalid"])
        return plan_suite(request, profile, run_id=run_id, run_dir=run_dir, python=python,
                          check_engines=check_engines)

    return launch(action, "all", plan_it, profile_ref, overrides, results_dir, wait, timeout)


def launch(action: str, benchmark: str, plan_it: Any, profile_ref: str, overrides: list[str],
           results_dir: str | None, wait: bool, timeout: float) -> int:
    """The one path of every benchmark command: profile -> plan -> (test-only | run directory -> submit -> wait).

    `action` is render, test-only or submit. `plan_it(profile, run_id, run_dir, python)` builds the plan and
    raises PlanError (or DlioUnsupported) for a request that cannot run: nothing has been written then.
    """
    if results_dir:
        overrides = [*overrides, f"storage.results_dir={Path(results_dir).resolve()}"]
    try:
        profile = load_profile(profile_ref, overrides)
        python = jobs_python(profile)
        results_root = Path(profile.get("storage.results_dir"))
        run_id = new_run_id(benchmark)
        plan = plan_it(profile, run_id, str(results_root / run_id), python)
        backend = get_backend()
        if action != "render":
            backend.ping()  # before anything is written: an unreachable Slurm leaves no run behind
        if action == "test-only":
            return _test_only(plan, profile, backend)
        run = create_run(plan, profile, results_root)
    except (ProfileError, PlanError, TemplateError, DlioUnsupported) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except SlurmUnreachable as exc:
        _error(str(exc))
        return EXIT_SLURM
    for note in plan.notes:
        click.echo(f"note: {note}")
    _print_prerun_rules(plan)
    if action == "render":
        click.echo(f"rendered {run.run_id} (nothing submitted): {run.path}")
        for script in sorted(run.scripts.iterdir()):
            click.echo(f"  {script}")
        return 0
    try:
        ids = submit_chain(run, backend)
    except SlurmUnreachable as exc:
        _error(str(exc))
        return EXIT_SLURM
    except SlurmError as exc:
        _error(f"{exc} (submitted jobs were cancelled and the run directory removed)")
        return EXIT_FAILED
    click.echo(f"submitted {run.run_id}: " + ", ".join(f"{k} {v}" for k, v in ids.items()))
    click.echo(f"run directory: {run.path}")
    if not wait:
        click.echo(f"follow it with: mlps-slurm status {run.path}")
        return 0
    return _wait_and_report(run, backend, timeout)


def _memory_from_run(path: str) -> tuple[float | None, str]:
    from mlps_slurm.rules.facts import client_memory
    from mlps_slurm.rundir import read_json

    preflight = Path(path) / "preflight" / "preflight.json"
    try:
        memory = client_memory(read_json(preflight))
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"--from-run {path}: cannot read {preflight} ({exc})") from exc
    if not memory:
        raise click.UsageError(f"--from-run {path}: {preflight} records no memory facts; give --client-memory-gb")
    largest = max(memory.values()) / (1 << 30)
    return largest, f"preflight facts of {path} ({len(memory)} node(s), largest {largest:.2f} GiB)"


def show_training_datasize(profile_ref: str, overrides: list[str], options: dict[str, Any]) -> int:
    from mlps_slurm.benchmarks.training.plan import TrainingRequest, training_datasize

    try:
        profile = load_profile(profile_ref, overrides)
        memory, source = options["client_memory_gb"], "--client-memory-gb"
        if memory is None and options["from_run"]:
            memory, source = _memory_from_run(options["from_run"])
        if memory is None and profile.get("nodes.memory_gb"):
            memory, source = float(profile.get("nodes.memory_gb")), f"profile {profile.name}: nodes.memory_gb"
        if memory is None:
            raise PlanError("the clients' memory is unknown: give --client-memory-gb G, or --from-run RUN (a run "
                            "whose preflight measured the nodes), or set nodes.memory_gb in the profile")
        size, w = training_datasize(TrainingRequest(
            model=options["model"], accelerator=options["accelerator"],
            accelerators_per_node=options["accelerators_per_node"], nodes=options["nodes"], scale=options["scale"],
            params=tuple(options["params"]), client_memory_gb=memory), profile)
    except (ProfileError, PlanError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    per_node = size.accelerators // size.hosts
    click.echo(f"training datasize: {size.model} on {size.accelerator}, {size.accelerators} simulated accelerators "
               f"({per_node} per node x {size.hosts} node(s)), {memory:g} GiB per node ({source})")
    click.echo(f"  accelerator term: {size.explain().split('; ')[0]}")
    click.echo(f"  memory term:      {size.explain().split('; ')[1]}")
    click.echo(f"  decided by:       {size.decided_by}")
    scaled = f" (--scale {size.scale:g} of {size.rule_files:,})" if size.scale != 1 else ""
    click.echo(f"  files:            {size.num_files:,}{scaled} x {size.samples_per_file} sample(s) per file "
               f"(dataset.num_files_train)")
    click.echo(f"  bytes:            {size.total_bytes:,} ({size.total_bytes / 1e12:.3f} TB; {w.format} files of "
               f"{size.sample_bytes or size.record_length:,.0f} B per sample on average)")
    return 0


def generate_lockfile(output: str, requirements_in: str | None) -> int:
    from mlps_slurm.lockfile import LockfileError, generate

    try:
        result = generate(output, requirements_in)
    except LockfileError as exc:
        _error(str(exc))
        return EXIT_USAGE
    click.echo(f"wrote {result.path}: {result.pins} pins ({result.method})")
    return 0


def verify_lockfile(path: str) -> int:
    from mlps_slurm.lockfile import LockfileError, check, parse

    try:
        result = check(parse(path))
    except LockfileError as exc:
        _error(str(exc))
        return EXIT_USAGE
    for p in result.not_compared:
        click.echo(f"  note: {p.message}")
    for p in result.problems:
        click.echo(f"  ERROR {p.message}")
    click.echo(f"{path}: {result.checked} pins checked, " + ("environment matches" if result.ok
                                                             else f"{len(result.problems)} problem(s)"))
    return 0 if result.ok else EXIT_FAILED


def _print_prerun_rules(plan: Any) -> None:
    """The same rules the finalize job applies, on the request before anything runs (each workload of a suite)."""
    from mlps_slurm.rules import check_request
    from mlps_slurm.rules.core import combine

    for _, p in plan.members or (("", plan),):
        findings = check_request(p.benchmark, p.request)
        what = f" ({p.benchmark} {p.request['model']})" if plan.members else ""
        click.echo(f"pre-run rules check{what}: {combine(findings).value}")
        for f in findings:
            if f.verdict.value != "CLOSED":
                click.echo(f"  {f.verdict.value:<7} {f.rule_id}: {f.message}")


def bundle_runs(runs: list[str], org: str | None, system: str | None, output: str | None, allow_invalid: bool,
                check: str | None, profile_ref: str, overrides: list[str]) -> int:
    from mlps_slurm.bundle import bundle_command, check_command

    if check:
        return check_command(check, echo=click.echo)
    if not runs:
        _error("give the run directories to bundle, or --check TARBALL")
        return EXIT_USAGE
    if org is None or system is None:
        try:
            profile = load_profile(profile_ref, overrides)
        except ProfileError as exc:
            _error(str(exc))
            return EXIT_USAGE
        org = org or profile.get("submission.organization")
        system = system or profile.get("submission.system")
    import datetime as dt

    out = output or f"mlps-submission-{dt.datetime.now():%Y%m%d-%H%M%S}"
    return bundle_command(runs, org, system, out, allow_invalid, echo=click.echo)


def run_preflight_only(profile_ref: str, overrides: list[str], nodes: int | None, results_dir: str | None,
                       wait: bool, timeout: float) -> int:
    from mlps_slurm.plan import plan_preflight

    if results_dir:
        overrides = [*overrides, f"storage.results_dir={Path(results_dir).resolve()}"]
    try:
        profile = load_profile(profile_ref, overrides)
        results_root = Path(profile.get("storage.results_dir"))
        run_id = new_run_id("preflight")
        plan = plan_preflight(profile, nodes=nodes, run_id=run_id, run_dir=str(results_root / run_id),
                              python=jobs_python(profile))
        backend = get_backend()
        backend.ping()
        run = create_run(plan, profile, results_root)
        ids = submit_chain(run, backend)
    except (ProfileError, PlanError, TemplateError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except SlurmUnreachable as exc:
        _error(str(exc))
        return EXIT_SLURM
    except SlurmError as exc:
        _error(str(exc))
        return EXIT_FAILED
    click.echo(f"submitted preflight {ids['preflight']}: {run.path}")
    if not wait:
        click.echo(f"follow it with: mlps-slurm status {run.path}")
        return 0
    try:
        status = wait_for_chain(run, backend, timeout)
    except TimeoutError as exc:
        _error(str(exc))
        return EXIT_FAILED
    click.echo(describe_status(status), nl=False)
    report = run.preflight / "preflight.txt"
    if report.is_file():
        click.echo(report.read_text(), nl=False)
    return 0 if status.jobs[0][2] and status.jobs[0][2].state == "COMPLETED" else EXIT_FAILED


def _test_only(plan: Any, profile: Any, backend: Any) -> int:
    """sbatch --test-only on each rendered script from a scratch directory that is removed afterwards."""
    import tempfile

    from mlps_slurm.chain import site_template_dirs
    from mlps_slurm.render import render_plan

    scripts = render_plan(plan, site_template_dirs(profile))
    code = 0
    width = max(14, *(len(job.key) for job in plan.jobs))
    with tempfile.TemporaryDirectory(prefix="mlps-test-only-") as tmp:
        for (name, text), job in zip(scripts.items(), plan.jobs):
            path = Path(tmp) / name
            path.write_text(text)
            try:
                answer = backend.submit(path, [], list(job.sbatch_args), test_only=True)
            except SlurmError as exc:
                answer, code = f"REFUSED: {exc}", EXIT_FAILED
            click.echo(f"{job.key:<{width}} {answer}")
    click.echo("nothing was queued" + ("" if code == 0 else "; fix the refused job(s) above"))
    return code


def _wait_and_report(run: Any, backend: Any, timeout: float) -> int:
    def progress(status: ChainStatus) -> None:
        states = ", ".join(f"{k} {s.state if s else '-'}" for k, _, s in status.jobs)
        click.echo(f"  {states}")

    try:
        status = wait_for_chain(run, backend, timeout, on_change=progress)
    except TimeoutError as exc:
        _error(f"{exc}; check later with: mlps-slurm status {run.path}")
        return EXIT_FAILED
    click.echo(describe_status(status), nl=False)
    return _outcome(status)


def _outcome(status: ChainStatus) -> int:
    results = status.run.results / "results.json"
    if not results.is_file():
        return EXIT_FAILED
    import json

    return 0 if json.loads(results.read_text()).get("status") == "success" else EXIT_FAILED


def show_status(ref: str, profile_ref: str, overrides: list[str], wait: bool, timeout: float) -> int:
    try:
        root = None
        if not Path(ref).exists():
            root = Path(load_profile(profile_ref, overrides).get("storage.results_dir"))
        run = resolve_run(ref, root)
    except (ProfileError, FileNotFoundError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    backend = get_backend()
    try:
        if wait:
            return _wait_and_report(run, backend, timeout)
        status = chain_status(run, backend)
    except SlurmUnreachable as exc:
        _error(str(exc))
        return EXIT_SLURM
    click.echo(describe_status(status), nl=False)
    return 0


def show_profile(name: str, overrides: list[str], resolved: bool, origin: bool) -> int:
    from mlps_slurm.profile.loader import resolve_reference

    try:
        if not resolved:
            click.echo(resolve_reference(name).read_text(), nl=False)
            return 0
        profile = load_profile(name, overrides)
    except ProfileError as exc:
        _error(str(exc))
        return EXIT_USAGE
    width = max(len(k) for k in profile.values)
    for key, value in profile.values.items():
        line = f"{key:<{width}}  {json.dumps(value)}"
        if origin:
            line += f"   # {profile.origins[key]}"
        click.echo(line)
    return 0


def validate_profile(ref: str, overrides: list[str], live: bool) -> int:
    try:
        profile = load_profile(ref, overrides)
    except ProfileError as exc:
        _error(str(exc))
        return EXIT_USAGE
    click.echo(f"{ref}: valid profile {profile.name!r}")
    if not live:
        return 0
    from mlps_slurm.profile.live import live_checks

    try:
        checks = live_checks(profile, get_backend())
    except SlurmUnreachable as exc:
        _error(str(exc))
        return EXIT_SLURM
    failed = 0
    for c in checks:
        mark = "skip" if c.skipped else ("ok" if c.ok else "FAIL")
        click.echo(f"  {mark:<4} {c.key}: {c.message}")
        failed += not c.ok
    if failed:
        _error(f"{failed} live check(s) failed against the cluster; fix the keys marked FAIL")
        return EXIT_USAGE
    return 0


def init_profile(from_cluster: bool, name: str, output: str | None) -> int:
    from mlps_slurm.profile.schema import commented_template

    if from_cluster:
        from mlps_slurm.profile.live import profile_from_cluster

        try:
            text = profile_from_cluster(get_backend(), name)
        except SlurmUnreachable as exc:
            _error(str(exc))
            return EXIT_SLURM
    else:
        text = commented_template(name)
    if output is None:
        click.echo(text, nl=False)
        return 0
    path = Path(output)
    if path.exists():
        _error(f"{path} exists; choose another --output or remove it")
        return EXIT_USAGE
    path.write_text(text)
    click.echo(f"wrote {path}; check it with: mlps-slurm profiles validate {path} --live")
    return 0
