"""The package's import graph has no cycles, counting imports inside functions too
(a lazy import still ties two modules together). Also: every module imports on
its own in a fresh interpreter."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# installed package name -> source folder (pyproject maps export/ and calibration/ in)
SOURCES = {"careg_edge": ROOT / "careg_edge",
           "careg_edge.export": ROOT / "export",
           "careg_edge.calibration": ROOT / "calibration"}
# compiled modules (no .py source): leaves of the graph
EXTENSIONS = {"careg_edge._core"}


def _modules():
    mods = {}
    for pkg, folder in SOURCES.items():
        for f in folder.rglob("*.py"):
            rel = f.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([pkg] + parts)
            mods[name] = (f, f.name == "__init__.py")
    return mods


def _resolve(mods, name):
    """The longest known module prefix of `name` (an attribute import names its module)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph():
    mods = _modules()
    graph = {m: set() for m in mods}
    for mod, (path, is_pkg) in mods.items():
        here = mod if is_pkg else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        if is_pkg:
            # A package's lazy `__getattr__` re-exports (careg_edge.Inspector) run only
            # when a user touches the name, never while modules import each other.
            tree.body = [n for n in tree.body
                         if not (isinstance(n, ast.FunctionDef) and n.name == "__getattr__")]
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import sub` imports pkg.sub when sub is a module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods.keys() | EXTENSIONS
                           else base for a in node.names]
            for t in targets:
                if t in EXTENSIONS:
                    continue
                dep = _resolve(mods, t)
                if dep and dep != mod:
                    graph[mod].add(dep)
    return graph


def find_cycle(graph):
    """One cycle as a list of modules, or None (iterative DFS, three colours)."""
    colour = {}
    for start in sorted(graph):
        if colour.get(start):
            continue
        path, it = [start], [iter(sorted(graph[start]))]
        colour[start] = 1
        while path:
            nxt = next(it[-1], None)
            if nxt is None:
                colour[path.pop()] = 2
                it.pop()
                continue
            if colour.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if not colour.get(nxt):
                colour[nxt] = 1
                path.append(nxt)
                it.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_find_cycle_detects_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_package_has_no_import_cycle():
    graph = import_graph()
    assert "careg_edge.cli" in graph and graph["careg_edge.cli"], "graph walk found nothing"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


LIGHT = ["careg_edge.cli", "careg_edge.cli_context", "careg_edge.config",
         "careg_edge.encoder_meta", "careg_edge.estimators", "careg_edge.runtime"]


@pytest.mark.parametrize("mod", LIGHT)
def test_module_imports_alone(mod):
    subprocess.run([sys.executable, "-c", f"import {mod}"], check=True)
