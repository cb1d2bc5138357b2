"""The package's import graph has no cycle, and no module is over 400 lines (issue #21's layout rules).

Every `import` statement counts: module level, inside functions and classes, and under `if TYPE_CHECKING:`;
relative imports are resolved. `from a.b import c` is an edge to module `a.b.c` where that module exists,
else to `a.b` (the package's `__init__.py` or `a/b.py`). Only edges between modules of `deformable_detr` count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "deformable_detr"
MAX_LINES = 400


def module_files(src: Path = SRC, package: str = PACKAGE) -> dict[str, Path]:
    """{dotted module name: file} of every .py under src/<package>; a package is named by its __init__.py."""
    modules = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(module imported, line) for every import statement in `module`'s file, at any depth, resolved to the
    modules in `modules` (others, outside the package, are left out)."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                named = f"{target}.{alias.name}"  # a submodule, or a name defined in `target`
                found.append((named if named in modules else target, node.lineno))
    return [(name, line) for name, line in found if name in modules]


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """{module: {module it imports: line of the first such import}} between the given modules."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for name, line in sorted(_imports(module, path, modules), key=lambda item: item[1]):
            if name != module:
                edges.setdefault(name, line)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int] | list[str] | set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a] (each node imports the next), or None when it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished (no cycle through it)
    for root in sorted(graph):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(graph.get(root, ())))]
        state[root] = 1
        while stack:
            following = next(stack[-1], None)
            if following is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(following) == 1:
                return path[path.index(following) :] + [following]
            elif not state.get(following):
                state[following] = 1
                path.append(following)
                stack.append(iter(sorted(graph.get(following, ()))))
    return None


def test_find_cycle_on_toy_graphs():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert find_cycle({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}) is None  # a diamond is no cycle
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": ["a"], "a": ["b"], "b": ["a"]}) == ["a", "b", "a"]  # reached from x, x not in it
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": ["missing"]}) is None  # an edge to a node without its own entry


def test_import_graph_resolves_relative_function_level_and_type_checking_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("X = 1\n")
    (package / "sub" / "__init__.py").write_text("from .leaf import Y\n")
    (package / "sub" / "leaf.py").write_text("Y = 2\n")
    (package / "sub" / "mid.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from .. import low\n"  # pkg.low, not pkg
        "from . import leaf\n"  # pkg.sub.leaf, not pkg.sub
        "if TYPE_CHECKING:\n    from pkg.top import T\n"
        "def f():\n    import pkg.sub\n    from ..low import X\n"  # pkg.sub (its __init__); pkg.low again
    )
    (package / "top.py").write_text("from pkg.sub.mid import f\nT = 3\n")
    modules = module_files(tmp_path, "pkg")
    graph = import_graph(modules)
    assert graph["pkg.sub.mid"] == {"pkg.low": 2, "pkg.sub.leaf": 3, "pkg.top": 5, "pkg.sub": 7}
    assert graph["pkg.sub"] == {"pkg.sub.leaf": 1} and graph["pkg.top"] == {"pkg.sub.mid": 1}
    assert find_cycle(graph) == ["pkg.sub.mid", "pkg.top", "pkg.sub.mid"]


def test_no_import_cycle_in_src():
    graph = import_graph(module_files())
    cycle = find_cycle(graph)
    if cycle is not None:
        hops = [f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
        pytest.fail(
            "import cycle (each module, at the line where it imports the next): " + " -> ".join(hops + [cycle[-1]])
        )


def test_no_module_over_400_lines():
    lengths = {module: len(path.read_text().splitlines()) for module, path in module_files().items()}
    too_long = sorted((n, m) for m, n in lengths.items() if n > MAX_LINES)
    assert not too_long, f"modules over {MAX_LINES} lines (split by concept): " + ", ".join(
        f"{module} ({lines})" for lines, module in reversed(too_long)
    )
