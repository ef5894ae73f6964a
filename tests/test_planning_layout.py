"""The layout of ``membptt.planning``: every module imports on its own, the imports form no
circle (module level and function level), and none hides behind a function-local import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import membptt

PKG = Path(membptt.__file__).parent / "planning"
MODULES = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")


def _imports(name: str) -> tuple[set[str], list[str]]:
    """(planning modules ``name`` imports anywhere, the function-local import statements)."""
    tree = ast.parse((PKG / f"{name}.py").read_text())
    found: set[str] = set()
    local: list[str] = []

    def visit(node, depth: int) -> None:
        for child in ast.iter_child_nodes(node):
            inner = depth + isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                targets = []
                if isinstance(child, ast.ImportFrom):
                    mod = child.module or ""
                    if child.level == 1:
                        targets = [mod.split(".")[0]] if mod else [a.name for a in child.names]
                    elif mod.startswith("membptt.planning."):
                        targets = [mod.split(".")[2]]
                    elif mod == "membptt.planning":
                        targets = [a.name for a in child.names]
                else:
                    targets = [a.name.split(".")[2] for a in child.names
                               if a.name.startswith("membptt.planning.")]
                targets = [t for t in targets if t in MODULES]
                found.update(targets)
                if depth and targets:
                    local.append(f"{name}.py:{child.lineno}")
            visit(child, inner)

    visit(tree, 0)
    found.discard(name)
    return found, local


def test_the_import_graph_has_no_circle_and_no_local_imports():
    graph = {}
    local = []
    for name in MODULES:
        graph[name], here = _imports(name)
        local += here
    assert not local, f"function-local imports of planning modules: {local}"
    done: set[str] = set()
    path: list[str] = []

    def walk(n: str) -> None:
        if n in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(n):] + [n]))
        if n in done:
            return
        path.append(n)
        for m in sorted(graph[n]):
            walk(m)
        path.pop()
        done.add(n)

    for name in MODULES:
        walk(name)
    # the layering the package docstring states: the front door imports the planners, and no
    # planner imports the front door or another planner
    planners = {"steps", "blocks", "chains"}
    assert planners <= graph["api"]
    for p in planners:
        assert not graph[p] & (planners | {"api"}), (p, graph[p])
    for low in ("errors", "ops"):
        assert not graph[low], (low, graph[low])


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports_on_its_own(name):
    r = subprocess.run([sys.executable, "-c", f"import membptt.planning.{name}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_planning_needs_no_torch():
    code = ("import sys, membptt; membptt.plan('msm', 100, 20, alpha=3); "
            "assert 'torch' not in sys.modules, 'planning imported torch'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
