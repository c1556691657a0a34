"""The house rules of the package, checked on its source: sizes, import graph, private names.

The layer contracts themselves (which subpackage may import which) are import-linter's, in
pyproject.toml (``lint-imports``, run by ``make test``); these tests cover what it does not.
"""
import ast
from pathlib import Path

import grimp
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fsalign"
MAX_LINES = 400


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_is_longer_than_400_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def _cycle(graph, modules):
    """One import cycle among ``modules`` (a list of names), or None (iterative DFS)."""
    state, parent = {}, {}
    for root in modules:
        if root in state:
            continue
        stack = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        state[root] = "open"
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = "done"
                stack.pop()
                continue
            if state.get(child) == "open":  # back edge: the cycle is child -> ... -> node -> child
                path, at = [], node
                while at != child:
                    path.append(at)
                    at = parent[at]
                return [child] + path[::-1] + [child]
            if child not in state:
                state[child], parent[child] = "open", node
                stack.append((child, iter(sorted(graph.find_modules_directly_imported_by(child) & modules))))
    return None


def test_no_import_cycles_between_modules():
    graph = grimp.build_graph("fsalign", include_external_packages=False)
    # the root package re-exports the flat API: it imports everything and nothing imports it
    modules = {m for m in graph.modules if m != "fsalign"}
    importers_of_root = graph.find_modules_that_directly_import("fsalign") & modules
    assert importers_of_root == set(), f"modules import the root package: {sorted(importers_of_root)}"
    assert _cycle(graph, modules) is None


def test_cycle_finder_finds_a_cycle():
    class Graph:
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, m):
            return set(self.edges.get(m, ()))

    cycle = _cycle(Graph(), {"a", "b", "c", "d"})
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    Graph.edges["c"] = set()
    assert _cycle(Graph(), {"a", "b", "c", "d"}) is None


def _private_imports(path: Path):
    """``from fsalign.x import _name`` and ``fsalign.x._name`` uses in one file."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fsalign"):
            found += [f"{node.module}.{a.name}" for a in node.names
                      if a.name.startswith("_") and a.name != "__version__"]
            if any(part.startswith("_") for part in node.module.split(".")) and node.module != "fsalign._compat":
                found.append(node.module)
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_private_name_is_used_across_modules(path):
    assert _private_imports(path) == []


def test_private_import_finder_finds_one(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from fsalign.engine.lattice import _total, check_inputs\nfrom fsalign.util import Seconds\n")
    assert _private_imports(source) == ["fsalign.engine.lattice._total"]


def test_every_module_is_in_a_subpackage_or_a_documented_top_level_module():
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top == {"__init__.py", "_compat.py", "checkpoint.py", "errors.py", "util.py"}
    assert {_module_name(p).split(".")[1] for p in _modules() if p.parent != PACKAGE} == {
        "aligning", "cli", "corpus", "engine", "models", "results", "scores", "synthetic", "training"}
