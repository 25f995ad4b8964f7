"""The product never imports the lab (careg_edge.lab: evaluation, metrics, report,
training, synthetic categories). Two checks: importing the product's modules in a
fresh interpreter loads no lab module, and no product file imports the lab at module
level (a command may import it inside its function: `eval`, `train`, the demo's AUROC).
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.test_import_cycles import _modules

LAB = "careg_edge.lab"


def _is_lab(name: str) -> bool:
    return name == LAB or name.startswith(LAB + ".")


def _module_level(tree: ast.AST):
    """Import nodes that run when the module is imported: everything outside function
    bodies (class bodies, if/try blocks at module level do run)."""
    todo = list(ast.iter_child_nodes(tree))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def lab_imports(module: str, source: str, is_pkg: bool = False):
    """Module-level imports of the lab in `source` (the file of `module`), as
    'line N: target' strings."""
    here = module if is_pkg else module.rpartition(".")[0]
    found = []
    for node in _module_level(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[:len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        found += [f"line {node.lineno}: {t}" for t in targets if _is_lab(t)]
    return found


def test_lab_imports_finds_module_level_and_skips_lazy():
    src = ("import os\nfrom .lab import metrics\nimport careg_edge.lab.report\n"
           "try:\n    from ..lab.protocol import evaluate\nexcept ImportError:\n    pass\n"
           "class A:\n    from .lab import datasets\n"
           "def f():\n    from .lab.metrics import auroc\n")
    # in careg_edge/demo.py: every module-level form counts, the one in f() does not
    assert sorted(lab_imports("careg_edge.demo", src)) == [
        "line 2: careg_edge.lab", "line 2: careg_edge.lab.metrics", "line 3: careg_edge.lab.report",
        "line 9: careg_edge.lab", "line 9: careg_edge.lab.datasets"]
    # in careg_edge/commands/x.py `.lab` is careg_edge.commands.lab, `..lab` is the lab
    assert sorted(lab_imports("careg_edge.commands.x", src)) == [
        "line 3: careg_edge.lab.report", "line 5: careg_edge.lab.protocol",
        "line 5: careg_edge.lab.protocol.evaluate"]


def _product_modules():
    return {m: v for m, v in _modules().items() if not _is_lab(m)}


def test_no_product_file_imports_the_lab_at_module_level():
    mods = _product_modules()
    assert "careg_edge.pipeline" in mods and "careg_edge.calibration.threshold" in mods
    assert not any(_is_lab(m) for m in mods) and any(_is_lab(m) for m in _modules())
    bad = {m: hits for m, (path, is_pkg) in sorted(mods.items())
           if (hits := lab_imports(m, path.read_text(), is_pkg))}
    assert not bad, f"product modules import careg_edge.lab at module level: {bad}"


# What a user's process loads: the API, the CLI and every command, live, scoring,
# enrollment, calibration and export (the optional-dependency modules among them
# import their heavy dependency lazily, so all import here).
ENTRY = ["careg_edge", "careg_edge.pipeline", "careg_edge.live", "careg_edge.cli",
         "careg_edge.scoring", "careg_edge.enrollment", "careg_edge.demo"]


def _entry_modules():
    mods = _product_modules()
    prefixes = ("careg_edge.commands.", "careg_edge.calibration.", "careg_edge.export.")
    return ENTRY + sorted(m for m in mods if m.startswith(prefixes))


def test_importing_the_product_loads_no_lab_module():
    names = _entry_modules()
    assert "careg_edge.commands.eval" in names and "careg_edge.export.onnx" in names
    code = ("import importlib, json, sys\n"
            f"for m in {names!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('careg_edge'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.splitlines()[-1])
    assert set(names) <= set(loaded)
    assert not [m for m in loaded if _is_lab(m)], "product import pulled in the lab"


def test_the_subprocess_check_can_fail():
    """The same probe sees the lab when something does import it."""
    code = ("import sys, careg_edge.lab.metrics\n"
            "print([m for m in sys.modules if m.startswith('careg_edge.lab')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "careg_edge.lab.metrics" in out.stdout
