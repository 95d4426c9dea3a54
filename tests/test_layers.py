"""The package's layers, enforced: every import (at the top of a module or inside a function: a lazy import
is still a dependency) goes to the same layer or a lower one, and no modules import each other in a
circle. Imports under `if TYPE_CHECKING:` are types only and do not count. The source is read with `ast`
(nothing is imported), so the test is quick and sees what the code says, not what a run happened to load.

A new module must be given its layer here: an unplaced module fails the test.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where each installed package's source lives (pyproject.toml's package-dir).
PACKAGE_DIRS = {"coreg_edge": ROOT / "coreg_edge", "coreg_edge.exporters": ROOT / "exporters"}

# Lowest first. A module belongs to the layer of the longest prefix that names it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # torch-free foundations: errors, json io, locks and outputs, file digests, the CPU, the formats table
    ("core", ("coreg_edge", "coreg_edge.errors", "coreg_edge.utils", "coreg_edge.locks", "coreg_edge.outputs",
              "coreg_edge.choices", "coreg_edge.digests", "coreg_edge.cpu", "coreg_edge.formats",
              "coreg_edge.classes", "coreg_edge.logs", "coreg_edge.hub")),  # fmt: skip
    # registries as rows only: names and "module:function" strings, nothing that runs them
    ("registry", ("coreg_edge.annotate.registry", "coreg_edge.training.methods", "coreg_edge.exporters.targets")),
    # options declared once; the method's own config and schedule are plain data the settings hold
    ("settings", ("coreg_edge.settings", "coreg_edge.algorithm.config", "coreg_edge.algorithm.schedule")),
    ("runtime", ("coreg_edge.runtime",)),  # the device side: onnxruntime, numpy, pillow
    ("data", ("coreg_edge.data", "coreg_edge.annotation_file")),
    ("annotate | algorithm", ("coreg_edge.annotate", "coreg_edge.algorithm")),
    ("training", ("coreg_edge.training", "coreg_edge.backbones", "coreg_edge.models")),
    # a finished run read once (config, selection, networks): what labels, report and export ask
    ("runs", ("coreg_edge.runs",)),
    ("export", ("coreg_edge.exporters",)),
    ("pipeline | report | review | labels", ("coreg_edge.pipeline", "coreg_edge.report", "coreg_edge.review",
                                             "coreg_edge.labels", "coreg_edge.recipe", "coreg_edge.recipes")),  # fmt: skip
    ("cli", ("coreg_edge.cli", "coreg_edge.__main__")),
]


def module_files() -> dict[str, Path]:
    """Every module of the installed packages by its import name."""
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def _imported(module: str, node: ast.Import | ast.ImportFrom, is_package: bool, known: set[str]) -> Iterator[str]:
    """The project modules an import statement loads (the deepest one that exists)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".")[: len(module.split(".")) - (0 if is_package else 1)]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in known else prefix for alias in node.names]
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            yield name


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its source (TYPE_CHECKING blocks left out). The
    package __init__ that an import also runs is checked as a module of its own, by its own imports."""
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges: set[str] = set()

        def visit(node: ast.AST, module: str = module, path: Path = path, edges: set[str] = edges) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    for other in child.orelse:
                        visit(other)
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    edges.update(_imported(module, child, path.name == "__init__.py", known))
                visit(child)

        visit(ast.parse(path.read_text(encoding="utf-8")))
        graph[module] = {target for target in edges if target in known and target != module}
    return graph


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a (layer) -> b (higher layer)' for every import that goes up."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = layer_of(module), layer_of(target)
            if low is not None and high is not None and high > low and not module.startswith(target + "."):
                found.append(f"{module} ({LAYERS[low][0]}) -> {target} ({LAYERS[high][0]})")
    return found


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan). A package's own __init__ importing its
    modules while they import the package is how packages work, so package -> own submodule edges are left out."""
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return circles


def test_every_module_has_a_layer():
    assert [m for m in sorted(module_files()) if layer_of(m) is None] == []


def test_no_module_imports_a_higher_layer():
    assert upward_imports(import_graph(module_files())) == []


def test_no_import_circle():
    assert import_circles(import_graph(module_files())) == []


def test_a_planted_upward_import_or_circle_is_caught():
    """The checks can fail: an upward import and a circle planted in the real graph are both reported."""
    graph = import_graph(module_files())
    planted = {**graph, "coreg_edge.errors": graph["coreg_edge.errors"] | {"coreg_edge.training.trainer"}}
    assert upward_imports(planted) == ["coreg_edge.errors (core) -> coreg_edge.training.trainer (training)"]
    circle = {**graph, "coreg_edge.utils": graph["coreg_edge.utils"] | {"coreg_edge.locks"}}
    assert import_circles(circle) == [["coreg_edge.locks", "coreg_edge.utils"]]


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    """An import inside a function counts (laziness is no layer rule); one under TYPE_CHECKING does not."""
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from coreg_edge.cli import main\n"
        "def f():\n    from coreg_edge.training import trainer\n"
    )
    graph = import_graph({"coreg_edge.errors": source, "coreg_edge.cli": source, "coreg_edge.training": source,
                          "coreg_edge.training.trainer": source, "coreg_edge": source})  # fmt: skip
    assert graph["coreg_edge.errors"] == {"coreg_edge.training.trainer"}


def test_every_package_is_installed():
    """pyproject.toml lists packages by hand: a new package missing there imports from a checkout but not
    from an installed wheel or a fresh clone's `pip install -e .` (setuptools' static list)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {m for m, path in module_files().items() if path.name == "__init__.py"}
    assert packages - listed == set()


def test_the_exporter_package_docstring_lists_its_modules():
    """exporters/__init__.py is the exporter's table of contents: one line per module, none missing."""
    import coreg_edge.exporters as exporters

    listed = {line.split()[0] for line in (exporters.__doc__ or "").splitlines() if line.startswith("    ")}
    modules = {path.stem for path in PACKAGE_DIRS["coreg_edge.exporters"].glob("*.py") if path.stem != "__init__"}
    assert modules - listed == set()
