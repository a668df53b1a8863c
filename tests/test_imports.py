"""The import graph of pneumo/ and training/: no module imports one that imports it back
(directly or round a loop), counting the imports inside functions too; and training/
builds on pneumo/, never the reverse."""

import ast

import pytest

from tests.conftest import ROOT

PACKAGES = ("pneumo", "training")
TOLERATED = set()  # no loop is tolerated


def module_name(path):
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imports_of(path) -> set[str]:
    """The project modules `path` imports anywhere in its body (absolute and relative imports)."""
    package = module_name(path).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import x`: the module x
    return found


@pytest.fixture(scope="module")
def graph():
    paths = [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]
    modules = {module_name(path): path for path in paths}
    return {name: {m for m in imports_of(path) if m in modules and m != name and not m.endswith("__init__")}
            for name, path in modules.items()}


def loops(graph) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return groups


def test_the_graph_sees_lazy_imports(graph):
    """runtime.py imports its runtimes inside a function; the graph must still see that."""
    assert {"pneumo.model.onnx_runtime", "pneumo.model.keras_runtime"} <= graph["pneumo.model.runtime"]
    assert "training.train" not in graph["training.deploy.quantize"]


def test_no_import_loops(graph):
    found = [group for group in loops(graph) if frozenset(group) not in TOLERATED]
    assert not found, f"import loops: {found}"


def test_a_loop_is_found():
    assert loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_pneumo_never_imports_training(graph):
    assert not {name: sorted(m for m in imported if m.startswith("training"))
                for name, imported in graph.items() if name.startswith("pneumo") and
                any(m.startswith("training") for m in imported)}
