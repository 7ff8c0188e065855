"""The work behind the click commands, imported lazily by mlps_slurm.cli.main."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mlps_slurm.chain import ChainStatus, chain_status, describe_status, wait_for_chain
from mlps_slurm.plan import PlanError
from mlps_slurm.profile import ProfileError, load_profile
from mlps_slurm.render import TemplateError
from mlps_slurm.rundir import ManifestError, resolve_run
from mlps_slurm.slurm import SlurmError, SlurmUnreachable, get_backend

EXIT_USAGE, EXIT_SLURM, EXIT_FAILED = 2, 3, 1


def _error(message: str) -> None:
    click.echo(f"mlps-slurm: error: {message}", err=True)


def run_launch(action: str, kind: str, planner: Any, profile_ref: str, overrides: list[str],
               results_dir: str | None, wait: bool, timeout: float, as_json: bool = False) -> int:
    """Every benchmark command: mlps_slurm.run.launch, then print what it did (and wait, when asked). With
    `as_json` stdout carries one JSON document and every message goes to stderr."""
    from mlps_slurm.run import launch

    say = (lambda text: click.echo(text, err=True)) if as_json else click.echo
    try:
        result = launch(action, kind, planner, profile_ref, overrides, results_dir)
    except (ProfileError, PlanError, TemplateError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except SlurmUnreachable as exc:
        _error(str(exc))
        return EXIT_SLURM
    except SlurmError as exc:
        _error(f"{exc} (submitted jobs were cancelled and the run directory removed)")
        return EXIT_FAILED
    except OSError as exc:  # a full disk, a path too long, a results directory that is a file or not writable
        where = exc.filename or (results_dir or "the results directory")
        _error(f"{where}: {exc.strerror or exc}; no run directory was left and nothing was submitted "
               "(free space, or choose another --results-dir / storage.results_dir)")
        return EXIT_USAGE
    plan = result.plan
    if action == "test-only":
        width = max(14, *(len(key) for key, _, _ in result.test_only))
        for key, answer, ok in result.test_only:
            say(f"{key:<{width}} {answer if ok else 'REFUSED: ' + answer}")
        refused = not all(ok for _, _, ok in result.test_only)
        say("nothing was queued" + ("; fix the refused job(s) above" if refused else ""))
        if as_json:
            _print_json({"run_id": plan.run_id, "benchmark": plan.benchmark, "queued": False,
                         "test_only": [{"job": k, "answer": a, "ok": ok} for k, a, ok in result.test_only]})
        return EXIT_FAILED if refused else 0
    for note in plan.notes:
        say(f"note: {note}")
    _print_prerun_rules(plan, say)
    run = result.run
    if action == "render":
        say(f"rendered {run.run_id} (nothing submitted): {run.path}")
        for script in sorted(run.scripts.iterdir()):
            say(f"  {script}")
        if as_json:
            _print_json({"run_id": run.run_id, "benchmark": plan.benchmark, "run_dir": str(run.path), "queued": False,
                         "scripts": [str(p) for p in sorted(run.scripts.iterdir())]})
        return 0
    say(f"submitted {run.run_id}: " + ", ".join(f"{k} {v}" for k, v in result.job_ids.items()))
    say(f"run directory: {run.path}")
    doc: dict[str, Any] = {"run_id": run.run_id, "benchmark": plan.benchmark, "run_dir": str(run.path),
                           "queued": True, "jobs": dict(result.job_ids)}
    if not wait:
        say(f"follow it with: mlps-slurm status {run.path}")
        if as_json:
            _print_json(doc)
        return 0
    code = _wait_and_report(run, get_backend(), timeout, say)
    if as_json:
        doc["exit_code"] = code
        doc["results"] = _read_results(run)
        _print_json(doc)
    return code


def _print_json(doc: dict[str, Any]) -> None:
    import json

    click.echo(json.dumps(doc, indent=1, default=str))


def _read_results(run: Any) -> Any:
    """results.json of a finished run, or None when there is none (or it cannot be read)."""
    import json

    try:
        return json.loads(run.results_json.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


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


def _print_prerun_rules(plan: Any, say: Any = click.echo) -> None:
    """The same rules the finalize job applies, on the request before anything runs (each workload of a suite)."""
    from mlps_slurm.rules import check_request
    from mlps_slurm.rules.core import combine

    names = [m["name"] for m in plan.request_record().get("members", [])]
    for (_, p), name in zip(plan.members or (("", plan),), names or [""]):
        findings = check_request(p.benchmark, p.record())
        what = f" ({name.replace('-', ' ', 1)})" if plan.members else ""
        say(f"pre-run rules check{what}: {combine(findings).value}")
        for f in findings:
            if f.verdict.value != "CLOSED":
                say(f"  {f.verdict.value:<7} {f.rule_id}: {f.message}")


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
    from mlps_slurm.run import launch

    def planner(profile: Any, run_id: str, run_dir: str, python: str) -> Any:
        return plan_preflight(profile, nodes=nodes, run_id=run_id, run_dir=run_dir, python=python)

    try:
        result = launch("submit", "preflight", planner, profile_ref, overrides, results_dir)
    except (ProfileError, PlanError, TemplateError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except SlurmUnreachable as exc:
        _error(str(exc))
        return EXIT_SLURM
    except SlurmError as exc:
        _error(str(exc))
        return EXIT_FAILED
    run = result.run
    click.echo(f"submitted preflight {result.job_ids['preflight']}: {run.path}")
    if not wait:
        click.echo(f"follow it with: mlps-slurm status {run.path}")
        return 0
    try:
        status = wait_for_chain(run, get_backend(), timeout)
    except TimeoutError as exc:
        _error(str(exc))
        return EXIT_FAILED
    click.echo(describe_status(status), nl=False)
    if run.preflight_text.is_file():
        click.echo(run.preflight_text.read_text(), nl=False)
    return 0 if status.jobs[0][2] and status.jobs[0][2].state == "COMPLETED" else EXIT_FAILED


def _wait_and_report(run: Any, backend: Any, timeout: float, say: Any = click.echo) -> int:
    def progress(status: ChainStatus) -> None:
        states = ", ".join(f"{k} {s.state if s else '-'}" for k, _, s in status.jobs)
        say(f"  {states}")

    try:
        status = wait_for_chain(run, backend, timeout, on_change=progress)
    except TimeoutError as exc:
        _error(f"{exc}; check later with: mlps-slurm status {run.path}")
        return EXIT_FAILED
    say(describe_status(status).rstrip("\n"))
    return _outcome(status)


def _outcome(status: ChainStatus) -> int:
    results = status.run.results_json
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
    except (ProfileError, OSError) as exc:  # not there, not readable, not a directory ...
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
    except (ManifestError, OSError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    click.echo(describe_status(status), nl=False)
    return 0


def show_profile(name: str | None, overrides: list[str], resolved: bool, origin: bool) -> int:
    from mlps_slurm.profile.loader import default_profile_choice, resolve_reference

    if name is None:
        name, why = default_profile_choice()
        click.echo(f"mlps-slurm: the profile in force without --profile is {name!r}: {why}", err=True)
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
        mark = "skip" if c.skipped else "warn" if c.warning else ("ok" if c.ok else "FAIL")
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
