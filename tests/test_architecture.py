"""Imports flow one way: every `interp` import (module level and inside functions) is read with `ast`.

Fails on an import from a higher floor, on any cycle between packages or between modules, and on a
function-level import of `interp` that is not marked `# lazy: start-up` (see docs/architecture.md).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "interp"

# The floor order, written once: a unit may import its own floor and the floors below it.
# A unit is a subpackage or a top-level module of `interp`; "interp" is the facade `interp/__init__.py`.
FLOORS: list[set[str]] = [
    {"axes", "errors", "resources", "masks", "progress", "bootstrap", "version", "memory"},
    {"models", "kernels", "parallel"},
    {"capture"},
    {"analyze", "intervene", "tasks", "organisms"},
    {"scan", "report"},
    {"interp"},
    {"cli", "coverage"},
]
FLOOR = {unit: i for i, units in enumerate(FLOORS) for unit in units}
LAZY_MARK = "# lazy:"  # `# lazy: start-up` or `# lazy: optional dependency (...)`


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "interp"


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool, bool]]:
    """(imported module, line, inside a function, marked lazy) for each `interp` import of one module."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        # a `# lazy:` mark covers a run of consecutive import statements: on any of their lines or just above
        block_start, previous = getattr(node, "lineno", 1), None
        for child in ast.iter_child_nodes(node):
            is_import = isinstance(child, ast.Import | ast.ImportFrom)
            if is_import and not isinstance(previous, ast.Import | ast.ImportFrom):
                block_start = previous.end_lineno + 1 if isinstance(previous, ast.stmt) else block_start
            previous = child if isinstance(child, ast.stmt) else previous
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                # `from pkg import submodule` imports the submodule; any other name comes from `pkg` itself
                targets = sorted({f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module
                                  for a in child.names})
            if targets:
                lazy = any(LAZY_MARK in line for line in lines[block_start - 1: child.end_lineno])
                for target in targets:
                    if target == "interp" or target.startswith("interp."):
                        found.append((target, child.lineno, in_function, lazy))
            visit(child, nested)

    visit(tree, False)
    return found


def _graph() -> tuple[dict[str, Path], dict[str, list[tuple[str, int, bool, bool]]]]:
    modules = _modules()
    return modules, {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node, or a node importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                connect(w)
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
            if len(component) > 1 or v in edges.get(v, ()):
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return components


@pytest.mark.fast
def test_every_unit_has_a_floor():
    modules, _ = _graph()
    missing = sorted({_unit(m) for m in modules} - set(FLOOR))
    assert not missing, f"give these a floor in FLOORS (and in docs/architecture.md): {missing}"


@pytest.mark.fast
def test_no_import_from_a_higher_floor():
    modules, graph = _graph()
    bad = [
        f"{modules[name].relative_to(ROOT.parent)}:{line} imports {target} "
        f"(floor {FLOOR[_unit(target)]} > {FLOOR[_unit(name)]})"
        for name, imports in graph.items()
        for target, line, _, _ in imports
        if FLOOR.get(_unit(target), -1) > FLOOR.get(_unit(name), len(FLOORS))
    ]
    assert not bad, "imports from a higher floor:\n" + "\n".join(bad)


@pytest.mark.fast
def test_no_cycle_between_units():
    _, graph = _graph()
    edges: dict[str, set[str]] = {}
    for name, imports in graph.items():
        for target, *_ in imports:
            if _unit(target) != _unit(name):
                edges.setdefault(_unit(name), set()).add(_unit(target))
    assert not _cycles(edges), f"cycles between packages: {_cycles(edges)}"


@pytest.mark.fast
def test_no_cycle_between_modules():
    modules, graph = _graph()
    edges = {name: {t for t, *_ in imports if t in modules and t != name} for name, imports in graph.items()}
    assert not _cycles(edges), f"cycles between modules: {_cycles(edges)}"


@pytest.mark.fast
def test_function_level_imports_are_marked_lazy():
    modules, graph = _graph()
    bad = sorted({
        f"{modules[name].relative_to(ROOT.parent)}:{line} imports {target}"
        for name, imports in graph.items()
        for target, line, in_function, lazy in imports
        if in_function and not lazy
    })
    assert not bad, f"move these imports to module level, or mark them `{LAZY_MARK}`:\n" + "\n".join(bad)


@pytest.mark.fast
def test_the_checks_can_fail():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _cycles({"a": {"a"}}) == [["a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    imports = _imports("interp.capture.x", ROOT / "capture" / "__init__.py", _modules())
    assert imports and all(t.startswith("interp") for t, *_ in imports)
