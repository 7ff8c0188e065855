"""Jinja2 rendering of batch scripts: the only writer of scripts.

Quoting is by construction: every `{{ value }}` is passed through `shlex.quote` by the environment's `finalize`
hook, unless Python marked it `ShellSafe` (already-quoted command lines, validated #SBATCH arguments, and the
admin's own setup lines). A profile or CLI value such as `x; rm -rf ~` or `$(reboot)` therefore renders inert.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Iterable

import jinja2

from mlps_slurm.plan import JobSpec, Plan, ShellRef, container_header
from mlps_slurm.profile import SiteProfile
from mlps_slurm.resources import templates_dir


class ShellSafe(str):
    """Text that is already valid, intended shell syntax; rendered as is."""


class TemplateError(Exception):
    """A template (packaged or site-provided) failed to load or render; names the template and line."""


def _finalize(value: Any) -> str:
    if isinstance(value, ShellSafe):
        return value
    if value is None:
        raise TemplateError("a template printed a null value; templates must only print values the plan set")
    return shlex.quote(str(value))


def _word(value: Any) -> str:
    if isinstance(value, ShellRef):
        if not value.isidentifier():
            raise TemplateError(f"invalid shell variable reference {value!r}")
        return f'"${{{value}}}"'
    return shlex.quote(str(value))


def _argv(value: Iterable[Any]) -> ShellSafe:
    return ShellSafe(" ".join(_word(v) for v in value))


def _verbatim(value: str) -> ShellSafe:
    return ShellSafe(value)


def environment(site_template_dirs: Iterable[Path] = ()) -> jinja2.Environment:
    """Site template directories come first, so an admin can override any packaged template by its name."""
    loaders = [jinja2.FileSystemLoader(str(d)) for d in site_template_dirs if d.is_dir()]
    loaders.append(jinja2.FileSystemLoader(str(templates_dir())))
    env = jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), undefined=jinja2.StrictUndefined,
                             finalize=_finalize, autoescape=False, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["argv"] = _argv
    env.filters["verbatim"] = _verbatim
    return env


def render_job(env: jinja2.Environment, job: JobSpec, container: dict[str, Any] | None = None) -> str:
    context = {"container": container, **job.context}
    context["sbatch"] = [ShellSafe(opt) for opt in job.sbatch]  # validated in plan.py against SBATCH_TOKEN
    context["setup"] = [ShellSafe(line) for line in job.context.get("setup", [])]
    try:
        template = env.get_template(job.template)
        return template.render(**context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template {exc.filename or exc.name}:{exc.lineno}: {exc.message}\n  fix: correct the "
                            "Jinja2 syntax at that line of the template") from exc
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {_template_line(exc) or job.template}: {exc.message}\n  fix: use only the "
                            f"variables the plan provides: {', '.join(sorted(context))}") from exc
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"template {exc.name} not found in the site or packaged template directories") from exc
    except TemplateError as exc:  # from the finalize hook or a filter: say which template line printed the value
        raise TemplateError(f"template {_template_line(exc) or job.template}: {exc}") from exc


def _template_line(exc: BaseException) -> str | None:
    """FILE:LINE of the template statement that raised. Jinja2 gives runtime errors no line of their own, but it
    rewrites the traceback so that each template frame carries the template's file name and line (those frames'
    globals hold `__jinja_exception__`); the innermost one is where the error is (an include's, when included)."""
    where = None
    tb = exc.__traceback__
    while tb is not None:
        if "__jinja_exception__" in tb.tb_frame.f_globals:
            where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


SYSTEM_TEMPLATES = Path("/etc/mlps-slurm/templates")


def site_template_dirs(profile: SiteProfile) -> list[Path]:
    """Site template directories, searched before the packaged templates: the profile's, then the system one."""
    dirs = [Path(profile.get("templates.dir"))] if profile.get("templates.dir") else []
    return dirs + [SYSTEM_TEMPLATES]


def render_plan(plan: Plan, site_template_dirs: Iterable[Path] = ()) -> dict[str, str]:
    """Script file name (NN-<job>.sbatch) -> script text, in chain order."""
    env = environment(site_template_dirs)
    setup = plan.preflight.get("container")  # the plan's binds, in every job's header
    return {f"{i:02d}-{job.key}.sbatch": render_job(env, job, container_header(setup, job.binds_storage))
            for i, job in enumerate(plan.jobs)}
