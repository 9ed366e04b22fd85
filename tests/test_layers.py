"""The import graph of ``rxbot/`` (static: every ``import`` in every module, including
imports inside functions; only ``if TYPE_CHECKING:`` blocks, never executed, are left
out): no cycles; the step tree imports nothing above it; I/O nodes
do not reach into the engine (DESIGN §3, issue 15)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

from rxbot import BotFrame, Pipe

PACKAGE = Path(__file__).resolve().parent.parent / "rxbot"

#: the plain-data step tree, and the few modules below it that it may use
TREE = {"rxbot.flow", "rxbot.step", "rxbot.node", "rxbot.walk", "rxbot.rx_source"}
BELOW_TREE = {"rxbot.config", "rxbot.errors", "rxbot.registry", "rxbot.redact", "rxbot.display"}
IO_PACKAGES = ("rxbot.db", "rxbot.http")


def modules() -> Dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def executed_imports(tree: ast.AST) -> List[ast.stmt]:
    """Every import statement except those under ``if TYPE_CHECKING:``."""
    found: List[ast.stmt] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return found


def import_graph() -> Dict[str, Set[str]]:
    """module -> the rxbot modules it imports (anywhere in its text)."""
    mods = modules()

    def known(name: str) -> str:
        while name not in mods and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    graph: Dict[str, Set[str]] = {}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        deps: Set[str] = set()
        for node in executed_imports(ast.parse(path.read_text(), str(path))):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                submodules = [f"{origin}.{a.name}" for a in node.names if f"{origin}.{a.name}" in mods]
                # ``from . import registry`` imports the module, not the package's body
                targets = submodules if len(submodules) == len(node.names) else [origin] + submodules
            for target in targets:
                if target.split(".")[0] == "rxbot":
                    dep = known(target)
                    if dep != name:
                        deps.add(dep)
        graph[name] = deps
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_analysis_sees_imports_inside_functions():
    graph = import_graph()
    assert "rxbot.render" in graph["rxbot.botframe"]  # imported inside BotFrame.render
    assert "rxbot.engine" in graph["rxbot.botframe"]  # inside run_async
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    typed = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\ndef f():\n    import y\n")
    assert sorted(n.names[0].name for n in executed_imports(typed)) == ["TYPE_CHECKING", "y"]


def test_the_import_graph_has_no_cycle():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("module", sorted(TREE))
def test_the_step_tree_imports_nothing_above_it(module):
    above = import_graph()[module] - TREE - BELOW_TREE
    assert above == set(), f"{module} imports {sorted(above)}, which sit above the step tree"


def test_io_nodes_do_not_import_engine_internals():
    graph = import_graph()
    for module, deps in graph.items():
        if module.startswith(IO_PACKAGES):
            engine = sorted(d for d in deps if d.startswith("rxbot.engine"))
            assert engine == [], f"{module} imports {engine}"


def test_the_tree_reaches_the_facade_through_the_registry():
    out = []
    pipe = Pipe(lambda x: x + 1, out.append)
    assert BotFrame.pipes() == [pipe]  # Pipe(...) registered itself without importing botframe
    pipe.run()  # the façade's run, offered to the tree through the registry
    assert out == [1] and pipe.finished() and BotFrame.pipes() == []


def test_render_imports_no_engine_module():
    """Render draws the plan (rxbot.plan), never the engine's internals."""
    graph = import_graph()
    engine = sorted(d for d in graph["rxbot.render"] if d.startswith("rxbot.engine"))
    assert engine == [], f"rxbot.render imports {engine}"


def test_the_plan_sits_between_the_tree_and_the_engine():
    """rxbot.plan imports only the tree and the base modules (the engine, render and the
    façade read it)."""
    above = import_graph()["rxbot.plan"] - TREE - BELOW_TREE
    assert above == set(), f"rxbot.plan imports {sorted(above)}"


#: what the engine may import besides itself: the tree, the base modules, the plan
ENGINE_MAY_IMPORT = TREE | BELOW_TREE | {"rxbot.plan", "rxbot.backoff"}


def test_the_engine_imports_only_the_tree_and_base_modules():
    """The engine knows no screen: live listing, progress, the stats hook and the report's
    text/HTML attach from the façade (rxbot.engine.hooks.observe_runs,
    rxbot.display.set_report_view)."""
    graph = import_graph()
    above = {m: sorted(d for d in deps if not d.startswith("rxbot.engine") and d not in ENGINE_MAY_IMPORT)
             for m, deps in graph.items() if m.startswith("rxbot.engine")}
    assert {m: deps for m, deps in above.items() if deps} == {}


def package_graph(graph: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    """The import graph with every module collapsed to its package (``rxbot.engine.x`` ->
    ``rxbot.engine``; a top-level module stays itself)."""
    def part(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages: Dict[str, Set[str]] = {}
    for module, deps in graph.items():
        packages.setdefault(part(module), set()).update(part(d) for d in deps if part(d) != part(module))
    return packages


def test_no_package_level_cycle():
    """Collapsed to packages, the import graph has no cycle either (the old {engine,
    live, report_html, render} one included)."""
    assert cycles(package_graph(import_graph())) == []
