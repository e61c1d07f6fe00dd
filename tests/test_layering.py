"""The package's layers: the library never imports the application, no import cycles, a light ``import encircle``.

A small AST pass over ``src/encircle`` finds every ``import`` of an ``encircle`` module,
at module level or inside a function. ``from encircle.data import memmap`` counts as an
import of ``encircle.data.memmap`` (a submodule) and ``from encircle.data import
load_dataset`` as one of ``encircle.data``; importing a module also runs its parent
packages' ``__init__``, so that is an edge too. Imports under ``if TYPE_CHECKING:`` do
not run and are left out.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import encircle

SRC = Path(encircle.__file__).parent
#: The application layer: what composes the library into commands, protocols and reports.
APPLICATION = ("cli", "__main__", "bench", "bench_rows", "report", "figures", "experiments")


def module_name(path: Path) -> str:
    parts = ["encircle", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def is_application(module: str) -> bool:
    parts = module.split(".")
    return len(parts) > 1 and parts[1] in APPLICATION


def parents(module: str) -> list[str]:
    """``encircle.data.memmap`` -> ``encircle``, ``encircle.data``: the packages it runs first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


class _Imports(ast.NodeVisitor):
    """The ``encircle`` modules a file imports: ``(module, inside a function)`` pairs."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: set[tuple[str, bool]] = set()
        self.depth = 0

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: from the package, minus one level per extra dot
            anchor = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            self._add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)

    def _add(self, target: str) -> None:
        if target.split(".")[0] == "encircle":
            for module in [*parents(target), target]:
                if module in MODULES:
                    self.found.add((module, self.depth > 0))


def imports() -> dict[str, set[tuple[str, bool]]]:
    """module -> the ``(module, function-local)`` imports it makes (their packages included)."""
    graph = {}
    for module, path in MODULES.items():
        visitor = _Imports(module, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        running = {module, *parents(module)}
        graph[module] = {(m, local) for m, local in visitor.found if m not in running}
    return graph


GRAPH = imports()


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_package():
    assert {"encircle", "encircle.engine", "encircle.experiments.protocol", "encircle.results"} <= set(MODULES)
    assert ("encircle.engine", False) in GRAPH["encircle.detector"]
    assert ("encircle.experiments", True) in GRAPH["encircle.cli"]  # a function-local import
    assert ("encircle.data.memmap", False) in GRAPH["encircle.engine"]  # ``from encircle.data import memmap``
    assert ("encircle.data", False) in GRAPH["encircle.engine"]  # its package runs first
    assert ("encircle.models", False) not in GRAPH["encircle.models.lenet"]  # its own package runs already


def test_the_library_never_imports_the_application():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if not is_application(module)
        for target, _ in targets
        if is_application(target)
    )
    assert upward == []


def test_no_import_cycle():
    """No cycle among module-level imports, nor when function-local imports count too."""
    module_level = {m: {t for t, local in targets if not local} for m, targets in GRAPH.items()}
    every = {m: {t for t, _ in targets} for m, targets in GRAPH.items()}
    assert cycles(module_level) == []
    assert cycles(every) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", ["encircle", "encircle.detector", "encircle.results"])
def test_importing_the_library_stays_light(module):
    """No matplotlib and no protocols behind ``import encircle`` or the library's modules."""
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib' or m.startswith('encircle.experiments')"
        " or m in ('encircle.cli', 'encircle.bench', 'encircle.report', 'encircle.figures')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
