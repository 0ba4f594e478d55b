"""Imports run one way through the layers (docs/architecture.md):

    ir -> semantics -> passes -> backends -> frontends -> sketch, active -> the CLI

``cluster`` is a generic task service (run these calls on these workers) that imports no other
layer; ``sketch`` calls it, so it sits at the bottom with ``ir``.

A module may import its own layer or any layer below it, never one above, and not from inside a
function to dodge the rule. Command-line modules (``cli.py`` in any package, ``*_cli.py``) wire
the layers together and belong to the top layer. The test reads every module's imports (top-level and inside
functions) with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"cluster": 0, "ir": 0, "semantics": 1, "passes": 2, "backends": 3, "frontends": 4,
          "sketch": 5, "active": 5}
TOP = 7  # cli.py, demo.py, __init__.py: the command line and the public API

def _layer_of(parts: tuple[str, ...]) -> int:
    if len(parts) == 1 or parts[-1] == "cli.py" or parts[-1].endswith("_cli.py"):
        return TOP
    return LAYERS.get(parts[0], TOP)


def _imported_layers(path: Path) -> set[tuple[str, int]]:
    """(imported top-level package, its layer) for every circuitsketch import in ``path``."""
    tree = ast.parse(path.read_text())
    own = path.relative_to(ROOT).parts
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = own[:len(own) - node.level]
            target = base + tuple((node.module or "").split(".")) if node.module else base
            if not target or not target[0]:
                continue
            if target[0] in LAYERS:
                found.add((target[0], LAYERS[target[0]]))
            elif node.module is None:  # "from .. import x": x may be a layer package
                for alias in node.names:
                    if not base and alias.name in LAYERS:
                        found.add((alias.name, LAYERS[alias.name]))
            else:
                found.add((target[0], TOP))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("circuitsketch."):
            first = node.module.split(".")[1]
            found.add((first, LAYERS.get(first, TOP)))
    return found


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", "benchmarks", ".venv", "docs", "build") or rel.parts[0].startswith("."):
            continue
        yield rel, path


def test_imports_run_one_way_through_the_layers():
    upward = []
    for rel, path in _modules():
        own = _layer_of(rel.parts)
        for package, layer in _imported_layers(path):
            if layer > own:
                upward.append(f"{rel.as_posix()} imports {package} (layer {layer} > {own})")
    assert not upward, "imports against the layer order:\n" + "\n".join(sorted(upward))



def test_no_project_import_inside_a_function():
    """An import inside a function hides a dependency (or dodges a cycle): every project import
    is at module level. Heavy optional backends load through ``backends.get_backend``."""
    inner = []
    for rel, path in _modules():
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner += [f"{rel.as_posix()}:{node.lineno}" for node in ast.walk(function)
                          if isinstance(node, ast.ImportFrom) and (
                              node.level > 0 or (node.module or "").startswith("circuitsketch"))]
    assert not inner, "project imports inside functions: " + ", ".join(inner)
