"""The package's import graph: no cycles, and no module importing a layer above its own.

Layers, bottom to top (docs/architecture.md): io/geometry/types -> models -> engine (and the networks
and predictors it runs) -> pipeline -> batch / sam / cli -> napari_plugin. Imports inside functions
count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (importer prefix, forbidden import prefixes)
FORBIDDEN: list[tuple[str, tuple[str, ...]]] = [
    ("medseg", ("napari_plugin",)),
    ("medseg.io", ("medseg.engine", "medseg.models", "medseg.pipeline", "medseg.batch", "medseg.sam",
                   "medseg.cli", "medseg.predictor", "medseg.nnunet", "medseg.liver", "medseg.infer")),
    ("medseg.geometry", ("medseg.engine", "medseg.models", "medseg.pipeline", "medseg.batch", "medseg.sam",
                         "medseg.cli")),
    ("medseg.types", ("medseg.engine", "medseg.models", "medseg.pipeline", "medseg.batch", "medseg.sam",
                      "medseg.cli")),
    ("medseg.models", ("medseg.engine", "medseg.pipeline", "medseg.batch", "medseg.sam", "medseg.cli")),
    ("medseg.engine", ("medseg.pipeline", "medseg.batch", "medseg.sam", "medseg.cli")),
    ("medseg.infer", ("medseg.pipeline", "medseg.batch", "medseg.sam", "medseg.cli")),
    ("medseg.nnunet", ("medseg.pipeline", "medseg.batch", "medseg.sam", "medseg.cli")),
    ("medseg.liver", ("medseg.pipeline", "medseg.batch", "medseg.sam", "medseg.cli")),
    ("medseg.pipeline", ("medseg.batch", "medseg.sam", "medseg.cli")),
    ("medseg.sam", ("medseg.batch", "medseg.cli")),
    ("medseg.batch", ("medseg.cli", "medseg.sam")),
]


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted([*ROOT.glob("medseg/**/*.py"), *ROOT.glob("napari_plugin/**/*.py")]):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> modules of this repository it imports (anywhere in the file)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src for a in node.names]
            else:
                continue
            graph[mod].update(t for t in targets if t in mods and t != mod)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _within(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_no_upward_imports():
    bad = [f"{mod} imports {dep}" for mod, deps in sorted(import_graph().items()) for dep in sorted(deps)
           for importer, forbidden in FORBIDDEN
           if _within(mod, importer) and any(_within(dep, f) for f in forbidden)]
    assert bad == []


def test_the_graph_sees_real_edges():
    """The checker itself finds imports (a parser that saw nothing would pass the two tests above)."""
    graph = import_graph()
    assert "medseg.types" in graph["medseg.geometry"] or "medseg.types" in graph["medseg.io.nifti"]
    assert any(_within(dep, "medseg") for dep in graph["napari_plugin._reader"])
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
