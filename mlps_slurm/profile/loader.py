"""Layered loading of site profiles.

Lowest to highest: schema defaults < the profile a profile `extends` < the profile itself < `-o key=value`
overrides. Profiles are looked up by name in the packaged site_profiles/, then /etc/mlps-slurm/site_profiles/,
then $XDG_CONFIG_HOME/mlps-slurm/site_profiles/ (a later directory wins), or given as a path.
"""

from __future__ import annotations

import difflib
import getpass
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from mlps_slurm.profile.schema import MAPPING_KEYS, SCHEMA, SECTIONS, check_value, cross_field_problems, defaults
from mlps_slurm.resources import site_profiles_dir

# Paths (~ and $VARS expanded at load): the schema marks them, benchmarks' own sections included.
PATH_KEYS = tuple(k for k, f in SCHEMA.items() if f.path)


class ProfileError(Exception):
    """A profile problem a user can fix: says what, where (file, key, line) and how.

    One error may carry several problems (`problems`): a profile is checked whole, so an admin fixes every mistake in
    one round instead of meeting them one run at a time. A single problem keeps the one-problem wording."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None,
                 line: int | None = None, fix: str | None = None) -> None:
        where = source or "<profile>"
        if line is not None:
            where += f":{line}"
        text = f"{where}: " + (f"{key}: " if key else "") + message
        if fix:
            text += f"\n  fix: {fix}"
        super().__init__(text)
        self.message, self.source, self.key, self.line, self.fix = message, source, key, line, fix
        self.problems: list[ProfileError] = [self]

    @classmethod
    def combine(cls, problems: list[ProfileError]) -> ProfileError:
        """One error for all `problems` (each is one ProfileError), or the problem itself when it is alone."""
        if len(problems) == 1:
            return problems[0]
        err = cls.__new__(cls)
        Exception.__init__(err, f"{len(problems)} problems in the profile, each with its file, line, key and fix:\n"
                           + "\n".join(str(p) for p in problems))
        err.message, err.key, err.line, err.fix = str(err), None, None, None
        err.source = problems[0].source
        err.problems = list(problems)
        return err


@dataclass
class SiteProfile:
    """A resolved profile: every schema key with its value and where the value came from."""

    name: str
    values: dict[str, Any]
    origins: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        if key not in SCHEMA:
            raise KeyError(f"unknown profile key {key!r}")
        return self.values[key]

    def nested(self) -> dict[str, Any]:
        """The resolved values as nested YAML-ready mappings."""
        out: dict[str, Any] = {}
        for key, value in self.values.items():
            node = out
            *parents, last = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
        return out


SYSTEM_PROFILES = Path("/etc/mlps-slurm/site_profiles")


def search_dirs() -> list[Path]:
    """Lowest precedence first: packaged, the site's /etc, the user's XDG config."""
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return [site_profiles_dir(), SYSTEM_PROFILES, Path(xdg) / "mlps-slurm" / "site_profiles"]


DEFAULT_HELP = "$MLPS_SLURM_PROFILE, else a profile named 'default' (e.g. " \
               "/etc/mlps-slurm/site_profiles/default.yaml), else localhost"
# Read in this order: the documented name, then the older one still in users' shell profiles.
PROFILE_VARIABLES = ("MLPS_SLURM_PROFILE", "MLPS_PROFILE")


def default_profile_choice(env: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """The profile used without --profile, and why: $MLPS_SLURM_PROFILE, else one named "default" in the search
    directories (a site installs /etc/mlps-slurm/site_profiles/default.yaml, usually `extends: <its profile>`),
    else localhost."""
    for variable in PROFILE_VARIABLES:
        if env.get(variable):
            return env[variable], f"${variable} is set"
    known = list_profiles()
    if "default" in known:
        return "default", f"the site default {known['default']}"
    return "localhost", "no $MLPS_SLURM_PROFILE and no profile named 'default' (e.g. " \
                        "/etc/mlps-slurm/site_profiles/default.yaml)"


def default_profile_ref(env: Mapping[str, str] = os.environ) -> str:
    return default_profile_choice(env)[0]


def list_profiles() -> dict[str, Path]:
    """Profile name -> the file that provides it (later search directories win)."""
    found: dict[str, Path] = {}
    for d in search_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*.yaml")):
                found[p.stem] = p
    return found


def resolve_reference(ref: str, relative_to: Path | None = None) -> Path:
    """The file a profile name or path refers to."""
    if "/" in ref or ref.endswith((".yaml", ".yml")):
        path = Path(os.path.expanduser(ref))
        if not path.is_absolute() and relative_to is not None:
            path = relative_to.parent / path
        if path.is_dir():
            raise ProfileError(f"profile {path} is a directory, not a YAML file",
                               fix="give the profile's .yaml file inside it, or a profile name")
        if not path.is_file():
            raise ProfileError(f"profile file {path} does not exist", fix="give an existing file or a profile name")
        return path
    available = list_profiles()
    if ref not in available:
        names = ", ".join(sorted(available)) or "(none)"
        close = difflib.get_close_matches(ref, list(available), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ";"
        raise ProfileError(f"unknown profile {ref!r}{hint} available profiles: {names}",
                           fix=f"use {close[0]!r}, or give a path to a YAML file" if close else
                           "pick one of the available profiles, or give a path to a YAML file")
    return available[ref]


def _duplicate_keys(node: yaml.Node | None, path: Path, prefix: str = "") -> list[ProfileError]:
    """YAML lets a later key silently replace an earlier one: an admin's edit would be lost. Name both lines."""
    found: list[ProfileError] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key = f"{prefix}{k.value}"
            line = k.start_mark.line + 1
            if key in seen:
                found.append(ProfileError(f"{key} is given twice, on lines {seen[key]} and {line}; the second would "
                                          "silently replace the first", source=str(path), line=line,
                                          fix=f"keep one {key} (delete or merge the other)"))
            seen[key] = line
            found += _duplicate_keys(v, path, key + ".")
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found += _duplicate_keys(item, path, prefix)
    return found


def _read_yaml(path: Path, problems: list[ProfileError]) -> tuple[dict[str, Any], dict[str, int], dict[str, str]]:
    """The file's mapping, the line of every key path in it, and the source text of every scalar value. Raises when
    the file cannot be read as a mapping at all; appends problems that leave it readable (duplicate keys)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise ProfileError(f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})",
                           source=str(path), line=line, fix="save the profile as UTF-8") from None
    except OSError as exc:
        raise ProfileError(f"cannot read profile: {exc.strerror}", source=str(path)) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        col = f", column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProfileError(f"malformed YAML{col}: {problem}", source=str(path), line=line,
                           fix="correct the YAML syntax at that position") from exc
    problems += _duplicate_keys(node, path)
    if data is None:
        raise ProfileError("the file is empty", source=str(path), fix="a profile needs at least `name: <name>`")
    if not isinstance(data, dict):
        raise ProfileError(f"the top level must be a mapping of keys, got {type(data).__name__}", source=str(path),
                           line=1, fix="start from site_profiles/localhost.yaml: `name: ...`, `slurm:`, `nodes:` ...")
    lines: dict[str, int] = {}
    texts: dict[str, str] = {}

    def walk(n: yaml.Node, prefix: str) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = f"{prefix}{k.value}"
                lines[key] = k.start_mark.line + 1
                if isinstance(v, yaml.ScalarNode):
                    texts[key] = v.value
                if key not in MAPPING_KEYS:
                    walk(v, key + ".")

    walk(node, "")
    return data, lines, texts


def _flatten(data: dict[str, Any], lines: dict[str, int], source: str,
             problems: list[ProfileError]) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(mapping: dict[Any, Any], prefix: str) -> None:
        for k, v in mapping.items():
            key = f"{prefix}{k}"
            if key in SCHEMA:
                flat[key] = v
            elif key in SECTIONS:
                if not isinstance(v, dict):
                    problems.append(ProfileError(
                        f"expected a mapping (a section of keys), got {type(v).__name__}", source=source, key=key,
                        line=lines.get(key), fix=f"write the keys of {key} indented below it: {_example_key(key)}"))
                    continue
                walk(v, key + ".")
            else:
                problems.append(ProfileError(
                    f"unknown key{_suggest(key)}", source=source, key=key, line=lines.get(key),
                    fix="remove it or correct its spelling; `mlps-slurm profiles show localhost --resolved` lists "
                        "every valid key"))

    walk(data, "")
    return flat


def _example_key(section: str) -> str:
    first = next(k for k in SCHEMA if k.startswith(section + "."))
    return f"`{section}:` then `  {first[len(section) + 1:].split('.')[0]}: ...`"


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, list(SCHEMA) + sorted(SECTIONS), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        # -o is --set everywhere; a user reaching for "output" gets pointed at -O
        raise ProfileError(f"override {text!r} is not KEY=VALUE", source="-o",
                           fix="write e.g. -o nodes.count=2 (-o is --set; an output path is -O/--output)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key not in SCHEMA:
        raise ProfileError(f"unknown key{_suggest(key)}", source="-o", key=key,
                           fix="`mlps-slurm profiles show localhost --resolved` lists every valid key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if SCHEMA[key].kind == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = raw  # keep "00:10" or "007" exactly as typed
    return key, value


Layer = tuple[Path, dict[str, Any], dict[str, int], dict[str, str]]


def _read_chain(ref: str, problems: list[ProfileError]) -> tuple[list[Layer], bool]:
    """The profile `ref` and the profiles it extends, base first, and whether the chain is whole. Only a requested
    profile that cannot be found or read raises; a broken `extends` or an unreadable parent is one more problem, so
    the files that were read are still checked."""
    chain: list[Path] = []
    layers: list[Layer] = []
    path: Path | None = resolve_reference(ref, None)
    while path is not None:
        if path.resolve() in [p.resolve() for p in chain]:
            cycle = " -> ".join(str(p) for p in chain + [path])
            problems.append(ProfileError(f"`extends` forms a cycle: {cycle}", source=str(chain[-1]), key="extends",
                                         line=layers[0][2].get("extends"), fix="remove one of the extends lines"))
            return layers, False
        try:
            data, lines, texts = _read_yaml(path, problems)
        except ProfileError as exc:
            if not chain:
                raise ProfileError.combine([*problems, exc]) from None
            problems.append(exc)
            return layers, False
        chain.append(path)
        layers.insert(0, (path, data, lines, texts))  # base profiles first, so the requested one wins
        name = texts.get("name")
        if name is not None and name != path.stem and check_value("name", name)[1] is None:
            # Users pick a profile by its file name; runs, history and the submission tree record `name`. Two names
            # for one profile make `--profile <name>` fail or runs of two sites look alike.
            problems.append(ProfileError(
                f"name {name!r} differs from the file's name {path.name!r}: `--profile {path.stem}` finds this "
                f"file, but runs would record it as {name!r}", source=str(path), key="name", line=lines.get("name"),
                fix=f"write `name: {path.stem}`, or rename the file to {name}.yaml"))
        parent = data.get("extends")
        if not parent or not isinstance(parent, str):
            return layers, True  # a non-string extends is reported with the other values
        try:
            path = resolve_reference(parent, path)
        except ProfileError as exc:
            problems.append(ProfileError(exc.message, source=str(path), key="extends", line=lines.get("extends"),
                                         fix=exc.fix))
            return layers, False
    return layers, True


def load_profile(ref: str = "localhost", overrides: list[str] | tuple[str, ...] = ()) -> SiteProfile:
    """Resolve a profile by name or path, apply its `extends` chain and the -o overrides, and validate it. Every
    problem found is reported at once, in one ProfileError."""
    values = defaults()
    origins = {k: "default" for k in values}
    problems: list[ProfileError] = []
    layers, whole = _read_chain(ref, problems)
    # Keys whose value was refused keep their default: checks built on them would report follow-on problems.
    bad: set[str] = set()
    for file, data, lines, texts in layers:
        for key, raw in _flatten(data, lines, str(file), problems).items():
            if SCHEMA[key].kind == "str" and isinstance(raw, (int, float)) and not isinstance(raw, bool):
                # YAML 1.1 reads 00:10:00 as the base-60 integer 600; a string field keeps what was written.
                raw = texts.get(key, str(raw))
            value, problem = check_value(key, raw)
            if problem:
                problems.append(ProfileError(problem, source=str(file), key=key, line=lines.get(key),
                                             fix=f"set {key} to {_describe(key)}"))
                bad.add(key)
                continue
            values[key] = value
            origins[key] = f"{file}:{lines.get(key, '?')}"
    for text in overrides:
        try:
            key, raw = _parse_override(text)
        except ProfileError as exc:
            problems.append(exc)
            continue
        value, problem = check_value(key, raw)
        if problem:
            problems.append(ProfileError(problem, source="-o", key=key, fix=f"set {key} to {_describe(key)}"))
            bad.add(key)
            continue
        values[key] = value
        origins[key] = f"-o {text}"
    # A broken extends chain leaves out the parent's values: "missing" keys and cross-key checks would be wrong.
    if whole and layers:
        for key, f in SCHEMA.items():
            if f.required and values[key] in (None, "") and key not in bad:
                problems.append(ProfileError("is required but missing", source=str(layers[-1][0]), key=key,
                                             fix=f"add `{key}: ...` ({f.doc})"))
        for key, problem, fix, involved in cross_field_problems(values):
            if bad & {key, *involved}:
                continue
            # Point at the line that set one of the keys involved (the key itself may only have its default).
            origin = next((origins[k] for k in (key, *involved) if origins[k] != "default"), origins[key])
            source, line = _where(origin)
            problems.append(ProfileError(problem, source=source, key=key, line=line, fix=fix))
    for key in PATH_KEYS:
        if values[key] is None or key in bad:
            continue
        expanded = _expand_path(values[key])
        if "$" in expanded or not os.path.isabs(expanded):
            source, line = _where(origins[key])
            problems.append(ProfileError(
                f"{values[key]!r} uses an environment variable that is not set" if "$" in expanded else
                f"{values[key]!r} expands to the relative path {expanded!r} (an unset variable?)",
                source=source, key=key, line=line,
                fix="set the variable before running mlps-slurm, or write the path out" if "$" in expanded else
                "use an absolute path, or set the variable"))
        else:
            values[key] = os.path.normpath(expanded)
    if problems:
        raise ProfileError.combine(_in_file_order(problems, [str(layer[0]) for layer in reversed(layers)]))
    return SiteProfile(name=values["name"], values=values, origins=origins)


def _where(origin: str) -> tuple[str, int | None]:
    """An origin ("file:line", "-o key=value", "default") as source and line."""
    source, _, line = origin.rpartition(":")
    return (source, int(line)) if line.isdigit() else (origin, None)


def _in_file_order(problems: list[ProfileError], files: list[str]) -> list[ProfileError]:
    """The requested file's problems first, then its parents', each by line; -o overrides last."""
    def rank(p: ProfileError) -> tuple[int, int]:
        source = p.source or ""
        return (files.index(source) if source in files else len(files), p.line or 0)

    return sorted(problems, key=rank)


def _expand_path(path: str) -> str:
    """~ and $VARS; $USER falls back to the login name (cron and some batch environments do not set it)."""
    env = dict(os.environ)
    env.setdefault("USER", getpass.getuser())
    expanded = os.path.expanduser(path)
    return re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: env.get(m.group(1) or m.group(2), m.group(0)), expanded)


def _describe(key: str) -> str:
    f = SCHEMA[key]
    if f.choices:
        return "one of " + ", ".join(f.choices)
    if f.pattern_help:
        return f.pattern_help
    return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
            "list[str]": "a list of strings", "dict[str,str]": "a mapping NAME: value"}[f.kind] + (
        f" (at least {f.minimum:g})" if f.minimum is not None else "")
