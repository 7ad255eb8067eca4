"""Imports run one way only: each module of the package may import its own layer and the ones below, never
one above, and no modules import each other in a circle. Read from the source (ast), nothing imported.

Layers, bottom first: the package root, ``errors``, ``io``, ``config`` (+ ``config_rules``) and
``metrics`` (the one definition of every metric, plain numpy importing only ``errors``: training's
validation and the calibration read it); ``data``; ``models``; ``train`` and ``predict``; ``evaluate``;
``experiment`` and ``bench``; ``commands``; ``cli`` and ``__main__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "mitotype"
LAYERS = [
    {"mitotype", "mitotype.errors", "mitotype.io", "mitotype.config", "mitotype.config_rules",
     "mitotype.metrics"},
    {"mitotype.data"},
    {"mitotype.models"},
    {"mitotype.train", "mitotype.predict"},
    {"mitotype.evaluate"},
    {"mitotype.experiment", "mitotype.bench"},
    {"mitotype.commands"},
    {"mitotype.cli", "mitotype.__main__"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    """The layer of the longest prefix named in LAYERS (``mitotype.models.onnx`` within ``models``)."""
    best, rank = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, rank = len(name), i
    assert rank is not None, f"{module} is in no layer of tests/test_layers.py: add it"
    return rank


def imports(module: str, top_level_only: bool = False) -> list[tuple[str, int]]:
    """(imported mitotype module, line) of every import statement in ``module`` (function-level ones and
    ``importlib.import_module("...")`` too, unless ``top_level_only``); ``from a.b import c`` counts as
    ``a.b.c`` when that is a module."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}".rstrip(".")
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((full if full in MODULES else base, node.lineno))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.args[0].value, node.lineno))  # importlib.import_module("mitotype....")
    return [(name, line) for name, line in found if name == "mitotype" or name.startswith("mitotype.")]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_runs_upward(module):
    upward = [f"line {line}: {name} (layer {layer(name)})" for name, line in imports(module)
              if layer(name) > layer(module)]
    assert not upward, f"{module} (layer {layer(module)}) imports from above: {upward}"


def test_no_import_cycle():
    """Module-level imports (those that run when a module is imported) form no cycle."""
    graph = {m: sorted({name for name, _ in imports(m, top_level_only=True) if name in MODULES and name != m})
             for m in MODULES}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module)


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    """The two rules catch what they are for (a models module importing predict, two modules in a circle)."""
    package = tmp_path / "mitotype"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models" / "__init__.py").write_text("")
    (package / "models" / "a.py").write_text("from mitotype.predict import run\nfrom mitotype.models import b\n")
    (package / "models" / "b.py").write_text("import mitotype.models.a\n")
    (package / "predict").mkdir()
    (package / "predict" / "__init__.py").write_text("")
    (package / "predict" / "run.py").write_text("")
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "SRC", tmp_path)
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "MODULES",
                        {module_name(p): p for p in sorted(package.rglob("*.py"))})
    with pytest.raises(AssertionError, match="imports from above"):
        test_no_import_runs_upward("mitotype.models.a")
    with pytest.raises(AssertionError, match="mitotype.models.a -> mitotype.models.b -> mitotype.models.a"):
        test_no_import_cycle()
