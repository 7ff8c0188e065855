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
    """A profile problem a user can fix: says what, where (file, key, line) and how."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None,
                 line: int | None = None, fix: str | None = None) -> None:
        where = source or "<profile>"
        if line is not None:
            where += f":{line}"
        text = f"{where}: " + (f"{key}: " if key else "") + message
        if fix:
            text += f"\n  fix: {fix}"
        super().__init__(text)
        self.source, self.key, self.line, self.fix = source, key, line, fix


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


DEFAULT_HELP = "$MLPS_PROFILE, else a profile named 'default' (e.g. /etc/mlps-slurm/site_profiles/default.yaml), " \
               "else localhost"


def default_profile_ref(env: Mapping[str, str] = os.environ) -> str:
    """The profile used without --profile: $MLPS_PROFILE, else one named "default" in the search directories (a
    site installs /etc/mlps-slurm/site_profiles/default.yaml, usually `extends: <its profile>`), else localhost."""
    if env.get("MLPS_PROFILE"):
        return env["MLPS_PROFILE"]
    return "default" if "default" in list_profiles() else "localhost"


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
        raise ProfileError(f"unknown profile {ref!r}; available profiles: {names}",
                           fix="pick one of the available profiles, or give a path to a YAML file")
    return available[ref]


def _refuse_duplicate_keys(node: yaml.Node | None, path: Path, prefix: str = "") -> None:
    """YAML lets a later key silently replace an earlier one: an admin's edit would be lost. Name both lines."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key = f"{prefix}{k.value}"
            line = k.start_mark.line + 1
            if key in seen:
                raise ProfileError(f"{key} is given twice, on lines {seen[key]} and {line}; the second would "
                                   "silently replace the first", source=str(path), line=line,
                                   fix=f"keep one {key} (delete or merge the other)")
            seen[key] = line
            _refuse_duplicate_keys(v, path, key + ".")
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item, path, prefix)


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int], dict[str, str]]:
    """The file's mapping, the line of every key path in it, and the source text of every scalar value."""
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
    _refuse_duplicate_keys(node, path)
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


def _flatten(data: dict[str, Any], lines: dict[str, int], source: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(mapping: dict[Any, Any], prefix: str) -> None:
        for k, v in mapping.items():
            key = f"{prefix}{k}"
            if key in SCHEMA:
                flat[key] = v
            elif key in SECTIONS:
                if not isinstance(v, dict):
                    raise ProfileError(f"expected a mapping (a section of keys), got {type(v).__name__}",
                                       source=source, key=key, line=lines.get(key),
                                       fix=f"write the keys of {key} indented below it: {_example_key(key)}")
                walk(v, key + ".")
            else:
                raise ProfileError(f"unknown key{_suggest(key)}", source=source, key=key, line=lines.get(key),
                                   fix="remove it or correct its spelling; `mlps-slurm profiles show localhost "
                                       "--resolved` lists every valid key")

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
        raise ProfileError(f"override {text!r} is not KEY=VALUE", source="-o", fix="write e.g. -o nodes.count=2")
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


def load_profile(ref: str = "localhost", overrides: list[str] | tuple[str, ...] = ()) -> SiteProfile:
    """Resolve a profile by name or path, apply its `extends` chain and the -o overrides, and validate it."""
    values = defaults()
    origins = {k: "default" for k in values}
    chain: list[Path] = []
    layers: list[tuple[Path, dict[str, Any], dict[str, int], dict[str, str]]] = []
    path: Path | None = resolve_reference(ref, None)
    while path is not None:
        if path.resolve() in [p.resolve() for p in chain]:
            cycle = " -> ".join(str(p) for p in chain + [path])
            raise ProfileError(f"`extends` forms a cycle: {cycle}", source=str(chain[0]), key="extends",
                               fix="remove one of the extends lines")
        chain.append(path)
        data, lines, texts = _read_yaml(path)
        layers.insert(0, (path, data, lines, texts))  # base profiles first, so the requested one wins
        parent = data.get("extends")
        path = resolve_reference(str(parent), path) if parent else None
    for file, data, lines, texts in layers:
        for key, raw in _flatten(data, lines, str(file)).items():
            if SCHEMA[key].kind == "str" and isinstance(raw, (int, float)) and not isinstance(raw, bool):
                # YAML 1.1 reads 00:10:00 as the base-60 integer 600; a string field keeps what was written.
                raw = texts.get(key, str(raw))
            value, problem = check_value(key, raw)
            if problem:
                raise ProfileError(problem, source=str(file), key=key, line=lines.get(key),
                                   fix=f"set {key} to {_describe(key)}")
            values[key] = value
            origins[key] = f"{file}:{lines.get(key, '?')}"
    for text in overrides:
        key, raw = _parse_override(text)
        value, problem = check_value(key, raw)
        if problem:
            raise ProfileError(problem, source="-o", key=key, fix=f"set {key} to {_describe(key)}")
        values[key] = value
        origins[key] = f"-o {text}"
    for key, f in SCHEMA.items():
        if f.required and values[key] in (None, ""):
            raise ProfileError("is required but missing", source=str(layers[-1][0]), key=key,
                               fix=f"add `{key}: ...` ({f.doc})")
    for key, problem, fix, involved in cross_field_problems(values):
        # Point at the line that set one of the keys involved (the key itself may only have its default).
        origin = next((origins[k] for k in (key, *involved) if origins[k] != "default"), origins[key])
        source, _, line = origin.rpartition(":")
        if not line.isdigit():
            source, line = origin, ""
        raise ProfileError(problem, source=source, key=key, line=int(line) if line else None, fix=fix)
    for key in PATH_KEYS:
        if values[key] is None:
            continue
        expanded = _expand_path(values[key])
        if "$" in expanded:
            raise ProfileError(f"{values[key]!r} uses an environment variable that is not set",
                               source=origins[key], key=key,
                               fix="set the variable before running mlps-slurm, or write the path out")
        if not os.path.isabs(expanded):
            raise ProfileError(f"{values[key]!r} expands to the relative path {expanded!r} (an unset variable?)",
                               source=origins[key], key=key, fix="use an absolute path, or set the variable")
        values[key] = os.path.normpath(expanded)
    return SiteProfile(name=values["name"], values=values, origins=origins)



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
