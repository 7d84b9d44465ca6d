"""Dependencies run one way: ``disenttalk ← workflows ← {tune, serve}``.

The core library imports none of the other packages; ``workflows`` imports neither ``tune`` nor
``serve`` except in the CLI and the quickstart, the two modules that orchestrate everything
(and they name those modules by path, importing them when a command runs); ``tune`` and
``serve`` do not import each other. Checked twice: statically, every import statement in every
module (those inside functions too), and dynamically, importing each package's modules in a
clean interpreter and looking at what got loaded. No two modules import each other at module
level, directly or through others.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("disenttalk", "workflows", "tune", "serve")
# what each package may not import, and the modules exempt from that rule
FORBIDDEN = {
    "disenttalk": {"workflows", "tune", "serve", "ray", "mlflow"},
    "workflows": {"tune", "serve"},
    "tune": {"serve"},
    "serve": {"tune"},
}
ORCHESTRATORS = {"workflows.cli", "workflows.quickstart"}


def module_names(package: str) -> list[str]:
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def module_path(name: str) -> Path:
    base = ROOT.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def imports(name: str, top_level_only: bool = False) -> set[str]:
    """Absolute module names ``name`` imports (relative imports resolved)."""
    tree = ast.parse(module_path(name).read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = name if module_path(name).name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_imports_against_the_direction(package):
    wrong = {}
    for name in module_names(package):
        if name in ORCHESTRATORS:
            continue
        bad = sorted(i for i in imports(name) if i.split(".")[0] in FORBIDDEN[package])
        if bad:
            wrong[name] = bad
    assert not wrong, f"imports against the direction disenttalk ← workflows ← {{tune, serve}}: {wrong}"


def test_orchestrators_reach_tune_and_serve_only_inside_functions():
    for name in ORCHESTRATORS:
        top = sorted(i for i in imports(name, top_level_only=True) if i.split(".")[0] in {"tune", "serve"})
        assert not top, f"{name} imports {top} at module level"


PROBE = """
import importlib, json, sys
names = json.loads(sys.argv[1])
for name in names:
    importlib.import_module(name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


@pytest.mark.parametrize("package", PACKAGES)
def test_importing_a_package_loads_nothing_it_may_not_depend_on(package):
    names = [n for n in module_names(package) if n not in ORCHESTRATORS and not n.endswith("__main__")]
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(names)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert not loaded & FORBIDDEN[package], f"importing {package} loaded {sorted(loaded & FORBIDDEN[package])}"


def test_no_import_cycles_between_modules():
    """Module-level imports form no cycle (Tarjan's strongly connected components)."""
    names = {n for p in PACKAGES for n in module_names(p)}

    def targets(name: str) -> set[str]:
        out = set()
        for i in imports(name, top_level_only=True):
            while i and i not in names:  # `from a.b import c` where c is a function: module a.b
                i = i.rpartition(".")[0]
            if i and i != name and not name.startswith(i + "."):  # a package's own __init__
                out.add(i)
        return out

    graph = {n: targets(n) for n in names}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"modules importing each other at module level: {cycles}"
