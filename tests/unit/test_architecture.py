"""The architecture's import rules (../ARCHITECTURE.md), read from the source with `ast`:

1. no import cycle among mlps_slurm's modules, counting every import statement that can run wherever it is (inside
   functions, i.e. lazy imports, included); imports under `if TYPE_CHECKING:` never run and only name types for
   the checker, so they are not edges (base.py's contract names Plan, SiteProfile and RunDirectory that way);
2. only mlps_slurm/benchmarks/ names a benchmark: elsewhere, of mlps_slurm.benchmarks only the registry
   (mlps_slurm.benchmarks) and the contract (mlps_slurm.benchmarks.base) may be imported;
3. no module over 500 lines;
4. `import mlps_slurm.cli.main` (what `mlps-slurm --help` pays) imports no benchmark package, Jinja2 or YAML.

An import edge goes to the module named: `import a.b` and `from a.b import c` (c not a module) count as importing
a.b, `from a.b import c` as importing a.b.c when that is a module. The packages above the named module, which
Python initialises first, are not counted as edges: otherwise every package importing its own submodules would be
a cycle.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "mlps_slurm"
MAX_LINES = 500
BENCHMARKS = "mlps_slurm.benchmarks"
SHARED_BENCHMARK_MODULES = {BENCHMARKS, f"{BENCHMARKS}.base"}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    how: str  # "", "lazy" (inside a function) or "TYPE_CHECKING"

    def describe(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line}{', ' + self.how if self.how else ''})"


def module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def _how(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> str:
    how = ""
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            how = "lazy"
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return "TYPE_CHECKING"
    return how


def imports_of(module: str) -> list[Edge]:
    """Every mlps_slurm module (or, for a name that is not one, the dotted name) that `module` imports."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    edges = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base = ".".join(base_parts[:len(base_parts) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                targets.append(candidate if candidate in MODULES else base)
        for target in dict.fromkeys(targets):
            if target == "mlps_slurm" or target.startswith("mlps_slurm."):
                edges.append(Edge(module, target, node.lineno, _how(node, parents)))
    return sorted(edges, key=lambda e: e.line)


GRAPH = {module: imports_of(module) for module in MODULES}


def strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return found


def shortest_cycle(start: str, graph: dict[str, list[str]], allowed: set[str]) -> list[str]:
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in graph[node]:
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child in allowed and child not in previous:
                previous[child] = node
                queue.append(child)
    return []


def import_cycles() -> list[str]:
    graph = {m: sorted({e.target for e in edges if e.target in MODULES and e.how != "TYPE_CHECKING"})
             for m, edges in GRAPH.items()}
    edge_of = {(e.source, e.target): e for edges in GRAPH.values() for e in reversed(edges)}
    reports = []
    for component in strongly_connected(graph):
        members = set(component)
        seen: set[tuple[str, ...]] = set()
        for start in component:  # the shortest cycle through each member, each cycle once
            cycle = shortest_cycle(start, graph, members)
            lowest = cycle.index(min(cycle[:-1]))
            key = tuple(cycle[lowest:-1] + cycle[:lowest])
            if key in seen:
                continue
            seen.add(key)
            steps = "\n      ".join(edge_of[(a, b)].describe() for a, b in zip(cycle, cycle[1:]))
            reports.append(f"cycle {' -> '.join(cycle)}\n      {steps}")
    return reports


def test_no_import_cycles():
    cycles = import_cycles()
    if cycles:
        pytest.fail(f"{len(cycles)} import cycle(s):\n  " + "\n  ".join(cycles), pytrace=False)


def test_only_benchmark_packages_import_benchmark_modules():
    violations = [
        edge.describe() for module, edges in GRAPH.items() for edge in edges
        if not (module == BENCHMARKS or module.startswith(BENCHMARKS + "."))
        and edge.target.startswith(BENCHMARKS + ".") and edge.target not in SHARED_BENCHMARK_MODULES]
    if violations:
        pytest.fail(f"{len(violations)} import(s) of a benchmark's module outside mlps_slurm/benchmarks/ (only "
                    f"{' and '.join(sorted(SHARED_BENCHMARK_MODULES))} are allowed there):\n  "
                    + "\n  ".join(violations), pytrace=False)


def test_no_module_over_500_lines():
    lengths = {path.relative_to(ROOT): len(path.read_text().splitlines()) for path in MODULES.values()}
    over = [f"{path}: {n} lines" for path, n in sorted(lengths.items(), key=lambda kv: -kv[1]) if n > MAX_LINES]
    if over:
        pytest.fail(f"{len(over)} module(s) over {MAX_LINES} lines:\n  " + "\n  ".join(over), pytrace=False)


def test_cli_import_stays_light():
    probe = "import json, sys; import mlps_slurm.cli.main; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    heavy = [m for m in loaded
             if (m.startswith(BENCHMARKS + ".") and m not in SHARED_BENCHMARK_MODULES)
             or m.split(".")[0] in ("jinja2", "yaml", "_yaml")]
    if heavy:
        pytest.fail(f"importing mlps_slurm.cli.main imports {len(heavy)} module(s) `--help` should not need:\n  "
                    + "\n  ".join(heavy), pytrace=False)


def job_side_modules() -> list[str]:
    """Modules that run inside Slurm jobs: the steps package and every benchmark's job entry points."""
    return [m for m in MODULES if m.startswith("mlps_slurm.steps") or m.rsplit(".", 1)[-1] == "job"]


def test_job_side_code_never_reaches_the_cli():
    """Code that runs on compute nodes never imports mlps_slurm.cli, directly or through what it imports."""
    bad = []
    for start in job_side_modules():
        seen, todo = {start}, [start]
        while todo:
            module = todo.pop()
            for edge in GRAPH.get(module, []):
                if edge.how == "TYPE_CHECKING" or edge.target in seen:
                    continue
                if edge.target.startswith("mlps_slurm.cli"):
                    bad.append(f"{start} reaches {edge.target} ({edge.describe()})")
                seen.add(edge.target)
                todo.append(edge.target)
    assert job_side_modules(), "no job-side modules found"
    if bad:
        pytest.fail("job-side code imports the CLI:\n  " + "\n  ".join(sorted(set(bad))), pytrace=False)


def test_benchmarks_do_not_import_each_other():
    """What two benchmarks share lives in a shared layer (steps/, rules/, plan ...), so a benchmark package can be
    added or removed alone."""
    def owner(module: str) -> str | None:
        parts = module.split(".")
        return parts[2] if module.startswith(BENCHMARKS + ".") and len(parts) > 2 and parts[2] != "base" else None

    bad = [edge.describe() for module, edges in GRAPH.items() for edge in edges
           if owner(module) and owner(edge.target) and owner(module) != owner(edge.target)]
    if bad:
        pytest.fail("benchmark packages importing each other:\n  " + "\n  ".join(bad), pytrace=False)


def test_the_login_node_side_of_every_benchmark_imports_no_engine_dependency():
    """A login node may have only the CLI's declared dependencies (tests/integration/test_install.py installs so):
    planning, rules, results, reports and bundling never import numpy, pymilvus or an engine."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('numpy', 'pymilvus', 'milvus', 'torch', 'mpi4py', 'dlio_benchmark'):\n"
        "            raise ImportError('blocked on the login node: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from mlps_slurm import benchmarks\n"
        "for b in benchmarks.all_benchmarks():\n"
        "    for part in ('request', 'plan', 'rules', 'results', 'bundle', 'report', 'profile', 'cli'):\n"
        "        if b.has_part(part):\n"
        "            b.part(part)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
