"""Click commands derived from the benchmark registry and each benchmark's typed request.

Nothing here names a benchmark: `render|submit <name>` exist for every runnable benchmark in the registry, and
their options are the request dataclass's fields (flags, help, choices and ranges from its `Option` metadata), so
a default or a range is declared once, in the benchmark's request.py. The benchmark packages are imported only when
one of these groups is asked for its commands, never for `mlps-slurm --help`.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable

import click

from mlps_slurm.cli.options import apply, json_option, profile_options, results_dir_option, submit_options

SUITE = "all"


def _click_type(f: dataclasses.Field[Any], spec: Any) -> Any:
    annotation = str(f.type)
    if spec.choices is not None:
        return click.Choice(spec.choices)
    if spec.existing_file:
        return click.Path(exists=True, dir_okay=False)
    if "int" in annotation:
        return click.IntRange(min=None if spec.min is None else int(spec.min), max=spec.max, min_open=spec.min_open)
    if "float" in annotation:
        return click.FloatRange(min=spec.min, max=spec.max, min_open=spec.min_open)
    return str


def request_options(request_type: type, only_suite: bool = False,
                    names: tuple[str, ...] | None = None, skip: set[str] | None = None,
                    shared_help: dict[str, str] | None = None) -> list[Callable[[Any], Any]]:
    """One click option per request field that has flags (with only_suite: the `submit all` ones; with `names`:
    only those fields). Fields in `skip` are left out and the ones made are added to it, so several requests can
    share one command without declaring an option twice."""
    from mlps_slurm.benchmarks.base import options_of

    out = []
    for f, spec in options_of(request_type):
        if not spec.flags or (only_suite and spec.suite != "cli") or (names is not None and f.name not in names):
            continue
        if skip is not None:
            if f.name in skip:
                continue
            skip.add(f.name)
        # `submit all` lists every benchmark's options together: say whose each one is.
        kwargs: dict[str, Any] = {"help": (shared_help or {}).get(f.name) or (
            f"{request_type.benchmark}: {spec.help}" if only_suite else spec.help)}
        if isinstance(f.default, bool):
            kwargs["is_flag"] = True
        else:
            kwargs["type"] = _click_type(f, spec)
            if spec.metavar:
                kwargs["metavar"] = spec.metavar
            if spec.multiple:
                kwargs["multiple"] = True
            elif spec.required and not only_suite:
                kwargs["required"] = True
            elif f.default is not None and f.default is not dataclasses.MISSING and not only_suite:
                kwargs.update(default=f.default, show_default=True)
            else:
                kwargs["default"] = None
        out.append(click.option(*spec.flags, f.name, **kwargs))
    return out


def build_request(request_type: type, values: dict[str, Any]) -> Any:
    from mlps_slurm.benchmarks.base import RequestError, options_of

    kwargs = {}
    for f, spec in options_of(request_type):
        if f.name not in values:
            continue
        value = values[f.name]
        if spec.multiple:
            if not value:
                continue  # not given: the request's own default
            value = tuple(value)
        if spec.existing_file and value:
            value = str(Path(value).resolve())
        kwargs[f.name] = value
    try:
        return request_type(**kwargs)
    except RequestError as exc:
        raise click.UsageError(str(exc)) from exc


def _benchmark_command(action: str, name: str) -> click.Command:
    from mlps_slurm import benchmarks

    bench = benchmarks.get(name)
    request_type = bench.request_type

    def callback(profile_ref: str, overrides: tuple[str, ...], results_dir: str | None, wait: bool = False,
                 timeout: float = 0, test_only: bool = False, as_json: bool = False, **values: Any) -> None:
        from mlps_slurm.cli.commands import run_launch
        from mlps_slurm.run import benchmark_planner

        request = build_request(request_type, values)
        mode = "test-only" if test_only else action
        sys.exit(run_launch(mode, name, benchmark_planner(name, request), profile_ref, list(overrides),
                            results_dir, wait, timeout, as_json))

    decorators = [*request_options(request_type), profile_options, results_dir_option, json_option]
    if action == "submit":
        decorators.append(submit_options(default_timeout=bench.wait_timeout_s))
    verb = "Render (write the scripts, submit nothing)" if action == "render" else "Submit"
    doc = f"{verb} the {name} chain: {bench.summary}"
    return click.command(name, help=doc)(apply(decorators, callback))


def _suite_options() -> list[Callable[[Any], Any]]:
    """`submit all`: the shared options, then every runnable benchmark's suite="cli" options (each once)."""
    from mlps_slurm import benchmarks

    from mlps_slurm.benchmarks.base import options_of

    # An option several benchmarks take (e.g. --duration) is declared once and goes to each of them: its help
    # says whose it is and what it means for each.
    helps: dict[str, list[str]] = {}
    for bench in benchmarks.runnable():
        for f, spec in options_of(bench.request_type):
            if spec.flags and spec.suite == "cli":
                helps.setdefault(f.name, []).append(f"{bench.name}: {spec.help}")
    shared = {name: " ".join(texts) for name, texts in helps.items() if len(texts) > 1}
    seen = {"scale"}
    extra = [o for bench in benchmarks.runnable()
             for o in request_options(bench.request_type, only_suite=True, skip=seen, shared_help=shared)]
    return [
        click.option("--benchmarks", default=None, metavar="B[,B...]",
                     help="Chain only these benchmarks, in this order (default: the profile's suite.benchmarks; "
                          "the workloads come from suite.<benchmark>.models)."),
        click.option("--nodes", "-N", type=click.IntRange(min=1), default=None,
                     help="Nodes of every workload (default: the profile's nodes.count)."),
        click.option("--scale", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0, show_default=True,
                     help="Shrink every workload for demos and tests; scaled runs are not submittable."),
        *extra,
    ]


def _suite_command(action: str) -> click.Command:
    def callback(profile_ref: str, overrides: tuple[str, ...], results_dir: str | None, benchmarks: str | None,
                 nodes: int | None, scale: float, wait: bool = False, timeout: float = 0, test_only: bool = False,
                 as_json: bool = False, **options: Any) -> None:
        from mlps_slurm.cli.commands import run_launch
        from mlps_slurm.plan_suite import SuiteRequest
        from mlps_slurm.run import suite_planner

        chosen = None if benchmarks is None else tuple(b.strip() for b in benchmarks.split(",") if b.strip())
        request = SuiteRequest(scale=scale, nodes=nodes, benchmarks=chosen,
                               options=tuple((k, v) for k, v in options.items() if v not in (None, False)))
        mode = "test-only" if test_only else action
        sys.exit(run_launch(mode, SUITE, suite_planner(request), profile_ref, list(overrides), results_dir, wait,
                            timeout, as_json))

    decorators = [*_suite_options(), profile_options, results_dir_option, json_option]
    if action == "submit":
        decorators.append(submit_options(default_timeout=86400))
        doc = ("Submit every benchmark the profile enables (suite.benchmarks) as one chain: one preflight, each "
               "workload after the previous one, one finalize that verifies them as one submission and bundles it.")
    else:
        doc = "Render every benchmark the profile enables as one suite; submit nothing."
    return click.command(SUITE, help=doc)(apply(decorators, callback))


class BenchmarkGroup(click.Group):
    """`render` and `submit`: one command per runnable benchmark of the registry, plus `all`, built on demand."""

    def __init__(self, *args: Any, action: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.action = action

    def list_commands(self, ctx: click.Context) -> list[str]:
        from mlps_slurm import benchmarks

        return sorted([SUITE, *(b.name for b in benchmarks.runnable())])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == SUITE:
            return _suite_command(self.action)
        from mlps_slurm import benchmarks

        if name not in benchmarks.names() or not benchmarks.get(name).runnable:
            return None
        return _benchmark_command(self.action, name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            ctx.fail(f"unknown benchmark {name!r}; valid benchmarks: {', '.join(self.list_commands(ctx))}")
        return super().resolve_command(ctx, args)


class ContributedGroup(click.Group):
    """A group whose subcommands come from the benchmarks (their cli.py COMMANDS[group]), e.g. `datasize`."""

    def _contributed(self) -> dict[str, click.Command]:
        from mlps_slurm import benchmarks

        return {c.name: c for bench in benchmarks.runnable() for c in bench.commands(self.name or "")
                if c.name}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self._contributed())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self._contributed().get(name)
