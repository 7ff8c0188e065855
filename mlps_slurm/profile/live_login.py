"""The login node's part of `profiles validate --live`: what the jobs need that this node can check without Slurm
(the jobs' interpreter, the environment modules, the site templates, the storage directories and the benchmark data
apart from the results). The nodes themselves are checked by the preflight job."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlps_slurm.profile.loader import SiteProfile
from mlps_slurm.profile.schema import SCHEMA

# An interpreter or module command that hangs (a stale NFS mount) must not hang the validation.
PROBE_TIMEOUT_S = 60


@dataclass(frozen=True)
class LiveCheck:
    key: str
    ok: bool
    message: str
    skipped: bool = False
    warning: bool = False  # passes, but says something to act on (e.g. a result that can only be OPEN)


def module_system(profile: SiteProfile) -> str | None:
    """Shell lines that make `module` usable in a non-interactive bash, or None when this login node has no module
    system. The jobs source environment.module_init first when it is set (the header template), so do we."""
    init = profile.get("environment.module_init")
    if init:
        return f"source {shlex.quote(init)} >/dev/null 2>&1 || exit 97"
    if os.environ.get("LMOD_CMD"):
        return 'module() { eval "$("$LMOD_CMD" bash "$@")"; }'
    home = os.environ.get("MODULESHOME")
    if home and os.path.isfile(os.path.join(home, "init", "bash")):
        return f"source {shlex.quote(os.path.join(home, 'init', 'bash'))} >/dev/null 2>&1"
    return None


def _bash(script: str, *args: str) -> subprocess.CompletedProcess[str] | str:
    """Run a bash script; the completed process, or why it could not run."""
    try:
        return subprocess.run(["bash", "-c", script, "bash", *args], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"no answer within {PROBE_TIMEOUT_S} s"
    except OSError as exc:
        return str(exc.strerror or exc)


def module_checks(profile: SiteProfile) -> list[LiveCheck]:
    modules = profile.get("environment.modules")
    init = profile.get("environment.module_init")
    if init and not os.path.isfile(init):
        return [LiveCheck("environment.module_init", False, f"{init} does not exist on this login node; set it to "
                                                            "the module system's bash init script, or null")]
    if not modules:
        return []
    prelude = module_system(profile)
    if prelude is None:
        return [LiveCheck("environment.modules", True, "not checked: this login node has no module system (no "
                                                       "LMOD_CMD or MODULESHOME, no environment.module_init); the "
                                                       "jobs load them with `module load`", skipped=True)]
    checks = []
    for module in modules:
        # is-avail: Lmod 7+ and environment-modules 4+; exit 0 when `module load` would find the module.
        proc = _bash(prelude + '\nmodule is-avail "$1"', module)
        if isinstance(proc, str) or proc.returncode == 97:
            why = proc if isinstance(proc, str) else f"sourcing {init} failed"
            return [LiveCheck("environment.modules", False, f"cannot ask the module system: {why}; fix "
                                                            "environment.module_init")]
        ok = proc.returncode == 0
        checks.append(LiveCheck("environment.modules", ok, f"module {module} is available" if ok else
                                f"module {module} is not available (`module avail {module}`); fix its name or "
                                "version in environment.modules"))
    return checks


def python_checks(profile: SiteProfile) -> list[LiveCheck]:
    from mlps_slurm.run import jobs_python

    python = jobs_python(profile)
    runtime = profile.get("container.runtime")
    if runtime != "none":
        return [LiveCheck("environment.python", True, f"{python} runs inside the container ({runtime} image "
                                                      f"{profile.get('container.image')}): the preflight checks it "
                                                      "there, not this login node", skipped=True)]
    # The jobs load the modules before they run the interpreter: a python from a module needs them too.
    prelude = module_system(profile) if profile.get("environment.modules") else None
    loads = "".join(f"module load {shlex.quote(m)} >/dev/null 2>&1\n" for m in profile.get("environment.modules"))
    proc = _bash((f"{prelude}\n{loads}" if prelude else "") + 'exec "$1" --version', python)
    source = "" if profile.get("environment.python") else \
        "; environment.python is null: the jobs use the interpreter running mlps-slurm"
    if isinstance(proc, str) or proc.returncode != 0:
        why = proc if isinstance(proc, str) else re.sub(r"^bash: (line \d+: )?", "", (
            (proc.stderr or proc.stdout).strip().splitlines() or [f"exit {proc.returncode}"])[-1])
        return [LiveCheck("environment.python", False, f"{python} does not run on this login node ({why}); set "
                                                       "environment.python to the jobs' interpreter (the venv's "
                                                       "bin/python, as the nodes see it)")]
    version = (proc.stdout or proc.stderr).strip()
    return [LiveCheck("environment.python", True, f"{python} runs ({version}){source}")]


def known_templates() -> list[str]:
    """Template names the tool renders or includes: the packaged ones."""
    from mlps_slurm.resources import templates_dir

    return sorted(p.name for p in templates_dir().glob("*.j2"))


def template_checks(profile: SiteProfile) -> list[LiveCheck]:
    directory = profile.get("templates.dir")
    if not directory:
        return []
    key = "templates.dir"
    path = Path(directory).expanduser()
    if not path.is_dir():
        return [LiveCheck(key, False, f"{directory} is not a directory; create it with the templates to override, "
                                      f"or set {key}: null")]
    import jinja2

    from mlps_slurm.render import environment

    known = known_templates()
    env = environment([path])
    checks = []
    found = sorted(path.glob("*.j2"))
    if not found:
        return [LiveCheck(key, True, f"{directory} holds no *.j2 templates, so it overrides nothing; add templates "
                                     f"named like the packaged ones ({', '.join(known)}) or set {key}: null",
                          warning=True)]
    for template in found:
        if template.name not in known:
            checks.append(LiveCheck(key, False, f"{template} overrides no template mlps-slurm knows; rename it to one "
                                                f"of {', '.join(known)}"))
            continue
        try:
            env.parse(template.read_text())
        except OSError as exc:
            checks.append(LiveCheck(key, False, f"{template} is not readable ({exc.strerror}); fix its permissions"))
            continue
        except jinja2.TemplateSyntaxError as exc:
            checks.append(LiveCheck(key, False, f"{template}:{exc.lineno}: {exc.message}; fix the template"))
            continue
        checks.append(LiveCheck(key, True, f"{template} overrides the packaged {template.name}"))
    return checks


# --- storage
def path_check(key: str, path: str) -> LiveCheck:
    if os.path.isdir(path):
        return LiveCheck(key, True, f"{path} exists")
    ancestor = _existing_ancestor(path)
    if os.path.isdir(ancestor) and os.access(ancestor, os.W_OK | os.X_OK):
        return LiveCheck(key, True, f"{path} does not exist yet; the jobs will create it under {ancestor}")
    return LiveCheck(key, False, f"{path} does not exist and cannot be created ({ancestor or '/'} is not a "
                                 "writable directory); create it or fix the path")


def _existing_ancestor(path: str) -> str:
    ancestor = path
    while ancestor and not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    return ancestor or "/"


def separate_filesystem_checks(profile: SiteProfile) -> list[LiveCheck]:
    """The benchmarks' directories that MLPerf Storage wants apart from the results, judged on this login node by
    the preflight's own check (st_dev and mount device of the nearest existing directory); a directory on one
    filesystem with the results makes every such result INVALID for CLOSED."""
    from mlps_slurm import benchmarks
    from mlps_slurm.steps.preflight import node_facts
    from mlps_slurm.steps.preflight.common import FAIL
    from mlps_slurm.steps.preflight.storage import check_separate

    by_id = {f.storage: k for k, f in SCHEMA.items() if f.storage}
    wanted: dict[str, list[str]] = {}
    for bench in benchmarks.runnable():
        for sid in bench.separate_from_results:
            wanted.setdefault(sid, []).append(bench.name)
    results = profile.get("storage.results_dir")
    mounts = node_facts.read_mounts()
    closed = profile.get("submission.division") == "closed"
    checks = []
    for sid, names in wanted.items():
        key = by_id.get(sid)
        if key is None:
            continue
        path = profile.get(key)
        judged = {"id": sid, "path": _existing_ancestor(path)}
        check = check_separate(judged, {"id": "results_dir", "path": _existing_ancestor(results)}, mounts,
                               "this login node")
        note = "" if (judged["path"], _existing_ancestor(results)) == (path, results) else \
            " (judged by the nearest existing directories)"
        users = ", ".join(names)
        if check["status"] == FAIL:
            mount = node_facts.mount_for(judged["path"], mounts)
            where = f"{mount.fstype} {mount.device}" if mount else "one filesystem"
            checks.append(LiveCheck(f"{key} / storage.results_dir", not closed,
                                    f"{path} and {results} are on one filesystem ({where}) on this login node{note}; "
                                    f"MLPerf Storage wants the {users} data apart from the results (the rules "
                                    "judge such a run INVALID for CLOSED): move one of them to another filesystem"
                                    + ("" if closed else "; an OPEN-division run may go ahead"), warning=not closed))
        else:
            checks.append(LiveCheck(key, True, f"{path} and storage.results_dir {results} are on different "
                                               f"filesystems on this login node{note} (the preflight checks every "
                                               "node)"))
    return checks
