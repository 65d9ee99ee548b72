"""The package's import graph is a DAG: every ``import robinherit.X`` anywhere in a module (at the top or inside a
function) is an edge, and no chain of edges leads back to where it started."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "robinherit"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name and not name.startswith(t + "."):
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 20 and graph["robinherit.runs.experiment"]  # the graph was really read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_leaf_modules_import_nothing_of_the_package():
    graph = import_graph()
    for leaf in ("robinherit.records", "robinherit.errors"):
        assert graph[leaf] == set(), (leaf, graph[leaf])
    # the registries and dotted paths name their errors, nothing more; the units fill a registry
    for leaf in ("robinherit.registry", "robinherit.paths"):
        assert graph[leaf] == {"robinherit.errors"}, (leaf, graph[leaf])
    assert graph["robinherit.models.units"] == {"robinherit.registry"}
    assert graph["robinherit.models.encoder"] <= {"robinherit.registry"}


def test_config_knows_data_and_models_only_by_name():
    graph = import_graph()
    for name, edges in graph.items():
        if name == "robinherit.config" or name.startswith("robinherit.config."):
            above = {e for e in edges if e.startswith(("robinherit.data", "robinherit.models"))}
            assert not above, (name, above)


# The package's layers, bottom to top: a module imports only from its own layer or the ones below it.
LAYERS = [
    {"errors", "seeding", "records"},
    {"paths", "registry", "outputs", "plugins"},
    {"config"},
    {"world", "models", "attacks"},
    {"ops"},
    {"evaluation"},
    {"data"},
    {"training"},
    {"runs"},
    {"analysis"},
    {"reproduce"},
    {"api", "auditing", "cli", ""},  # "" is the package's own __init__
]


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add its sub-package to LAYERS")


def test_layers_import_only_downward():
    graph = import_graph()
    upward = [
        f"{name} -> {target}" for name, targets in graph.items() for target in targets if _layer(target) > _layer(name)
    ]
    assert not upward, upward
    assert len({_layer(m) for m in graph}) == len(LAYERS)  # every layer holds a module
