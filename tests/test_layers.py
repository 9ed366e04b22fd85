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
TREE = {"rxbot.tree.flow", "rxbot.tree.step", "rxbot.tree.node", "rxbot.tree.walk", "rxbot.tree.rx_source"}
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
    assert "rxbot.draw.render" in graph["rxbot.botframe"]  # imported inside BotFrame.render
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
    engine = sorted(d for d in graph["rxbot.draw.render"] if d.startswith("rxbot.engine"))
    assert engine == [], f"rxbot.draw.render imports {engine}"


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

# --- the old module paths (the package layout of issue 24, item 5) ---
#: public module paths from before the layout by parts (the docs', databot 0.1.8's) -> the
#: module that lives there now; each old path must stay importable as that very module
OLD_PUBLIC_PATHS = {
    'rxbot.flow': 'rxbot.tree.flow',
    'rxbot.step': 'rxbot.tree.step',
    'rxbot.node': 'rxbot.tree.node',
    'rxbot.render': 'rxbot.draw.render',
    'rxbot.report_io': 'rxbot.observe.report_io',
    'rxbot.stats': 'rxbot.observe.stats',
    'rxbot.trace': 'rxbot.observe.trace',
}
#: every module that moved into a package, public or not
MOVED_MODULES = {
    'rxbot.flow': 'rxbot.tree.flow',
    'rxbot.step': 'rxbot.tree.step',
    'rxbot.node': 'rxbot.tree.node',
    'rxbot.walk': 'rxbot.tree.walk',
    'rxbot.rx_source': 'rxbot.tree.rx_source',
    'rxbot.report_io': 'rxbot.observe.report_io',
    'rxbot.stats': 'rxbot.observe.stats',
    'rxbot.progress': 'rxbot.observe.progress',
    'rxbot.live': 'rxbot.observe.live',
    'rxbot.trace': 'rxbot.observe.trace',
    'rxbot.logs': 'rxbot.observe.logs',
    'rxbot.render': 'rxbot.draw.render',
    'rxbot.layout': 'rxbot.draw.layout',
    'rxbot.report_html': 'rxbot.draw.report_html',
    'rxbot.notebook': 'rxbot.draw.notebook',
    'rxbot.watch': 'rxbot.draw.watch',
}


@pytest.mark.parametrize("old", sorted(OLD_PUBLIC_PATHS))
def test_an_old_public_path_is_the_moved_module_itself(old, monkeypatch):
    """``import rxbot.flow`` gives rxbot.tree.flow itself, not a copy: the package's
    attribute, ``from`` imports and a monkeypatch through the old path all reach it."""
    import importlib
    import sys

    import rxbot

    new = importlib.import_module(OLD_PUBLIC_PATHS[old])
    assert importlib.import_module(old) is new and sys.modules[old] is new
    short = old.rsplit(".", 1)[1]
    assert getattr(rxbot, short) is new
    assert getattr(importlib.import_module(old), "__all__", ()) == getattr(new, "__all__", ())
    name = next(iter(getattr(new, "__all__", ()) or [n for n in vars(new) if not n.startswith("_")]))
    marker = object()
    monkeypatch.setattr(f"{old}.{name}", marker)
    assert getattr(new, name) is marker


def test_old_paths_imported_first_in_a_fresh_interpreter_are_the_new_modules():
    """The same in a process that imports the old paths before anything else (a user's
    script), and ``from rxbot.<old> import *`` gives the module's public names."""
    import subprocess
    import sys

    code = ("import importlib, sys\n"
            f"pairs = {sorted(OLD_PUBLIC_PATHS.items())!r}\n"
            "for old, new in pairs:\n"
            "    a = importlib.import_module(old)\n"
            "    ns = {}\n"
            "    exec(f'from {old} import *', ns)\n"
            "    b = importlib.import_module(new)\n"
            "    assert a is b, (old, a, b)\n"
            "    assert all(ns[n] is getattr(b, n) for n in getattr(b, '__all__', ())), old\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_no_module_in_rxbot_imports_through_an_old_path():
    """Code inside rxbot/ names the new modules; the old paths are for users only (and
    import nothing themselves but the module they stand for, at run time)."""
    graph = import_graph()
    through = {m: sorted(set(deps) & set(OLD_PUBLIC_PATHS)) for m, deps in graph.items()}
    assert {m: d for m, d in through.items() if d} == {}
    assert {old: sorted(graph[old]) for old in OLD_PUBLIC_PATHS if graph[old]} == {}


def test_moved_modules_left_the_top_level():
    """Only the public old paths stay (as shims); the others are gone from rxbot/."""
    mods = modules()
    for old, new in MOVED_MODULES.items():
        assert new in mods, f"{new} is missing"
        if old in OLD_PUBLIC_PATHS:
            assert "sys.modules[__name__]" in mods[old].read_text(), f"{old} is not a shim"
        else:
            assert old not in mods, f"{old} is still at its old path"
