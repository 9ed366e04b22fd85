"""Draw the step tree with the ``graphviz`` package.

The drawing walks the very tree the engine compiles (``Pipe.steps`` and the routes'
``branches``), so the picture can never disagree with what runs. Node names follow the
compiler's step paths (``P1[3]/2[1]``: pipe 1, step 3, its branch 2, step 1), which is
also how a :class:`~rxbot.engine.context.RunReport` is keyed, so counts from a finished
run land on the right node.

Rendering never runs or consumes a pipe: a ``Loop`` over a generator is drawn from its
type, not iterated.
"""
from __future__ import annotations

import logging
import os
import shutil
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import graphviz

from .flow import BlockedJoin, Route
from .node import Loop, Node, Timer
from .step import Const, RxOp, Step

log = logging.getLogger("rxbot")

#: formats ``render`` writes; ``dot`` is the DOT source only (no ``dot`` binary needed)
FORMATS = ("png", "svg", "pdf", "dot")
#: what to tell a user whose machine has no ``dot`` binary
INSTALL_HINT = (
    "the graphviz 'dot' program was not found on PATH; install graphviz to render pictures "
    "(Debian/Ubuntu: 'apt-get install graphviz', macOS: 'brew install graphviz', "
    "Windows: 'choco install graphviz')"
)

# an outgoing edge end: (node name, edge label or None)
Out = Tuple[str, Optional[str]]

# Layout: nodes of one chain share a graphviz ``group`` and bypass edges are heavy and
# long enough to pass their route's cluster, so dot draws the main flow as a straight
# line and hangs branches to the side.
_SOURCE_STYLE = dict(shape="box", style="rounded,filled", fillcolor="#dbeafe")
_NODE_STYLE = dict(shape="box", style="rounded,filled", fillcolor="#fef3c7")
_FUNC_STYLE = dict(shape="box", style="rounded")
_CONST_STYLE = dict(shape="note")
_RX_STYLE = dict(shape="hexagon", style="filled", fillcolor="#ede9fe")
_FILTER_STYLE = dict(shape="invhouse")
_SPLIT_STYLE = dict(shape="diamond")
_JOIN_STYLE = dict(shape="invtriangle")
_ZIP_STYLE = dict(shape="invtrapezium", style="filled", fillcolor="#e5e7eb")
_BYPASS_STYLE = dict(style="dashed", weight="4")


def _text(*lines: str) -> str:
    """A DOT label showing ``lines`` literally: backslashes doubled, never read as an
    HTML label (``<lambda>`` looks like one), lines joined by DOT's ``\\n``."""
    return graphviz.nohtml("\\n".join(line.replace("\\", "\\\\") for line in lines))


def _counted(step: Any) -> bool:
    """Does the engine always count ``inp``/``out`` for this step? It does at async
    boundaries, sources and BlockedJoin; inline sync steps only when metrics are on, and
    route dispatch never (it counts failures only)."""
    from .engine.classify import runs_inline

    if isinstance(step, RxOp):
        return False
    if isinstance(step, Route):
        return isinstance(step, BlockedJoin)
    return not runs_inline(step)


def _tooltip(step: Any) -> str:
    """Step options a user may want to check without cluttering the label."""
    if not isinstance(step, Step):
        return ""
    parts = ["async" if step.is_async else "sync"]
    for key in ("concurrency", "on_error", "retries", "timeout", "boost"):
        value = step.option(key)
        if value is not None:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


class _Drawer:
    """One walk over the step tree; nodes go into their (nested) cluster, edges are
    collected and added at the top level last, so an edge never pulls a node that is
    declared later into the wrong cluster."""

    def __init__(self, report: Any = None) -> None:
        self.graph = graphviz.Digraph("rxbot", graph_attr=dict(rankdir="TB", compound="true"),
                                      node_attr=dict(fontname="Helvetica", fontsize="11"),
                                      edge_attr=dict(fontname="Helvetica", fontsize="9"))
        self.edges: List[Tuple[str, str, Dict[str, str]]] = []
        self.skip: Dict[str, int] = {}  # split node -> ranks its bypass edge spans
        self.report = report
        self.stats: Dict[str, Any] = dict(getattr(report, "steps", {}) or {}) if report is not None else {}

    # -- top level --------------------------------------------------------------------
    def draw(self, pipes: Sequence[Any]) -> graphviz.Digraph:
        prefixes = _report_prefixes(pipes, self.stats)
        for index, pipe in enumerate(pipes, 1):
            pid = f"P{index}"
            title = f"Pipe {index}" + (f": {pipe.name}" if getattr(pipe, "name", None) else "")
            with self.graph.subgraph(name=f"cluster_{pid}") as cluster:
                cluster.attr(label=title, style="rounded", color="#6b7280", fontname="Helvetica")
                outs = self.chain(cluster, pipe.steps, pid, prefixes.get(index, pid), [])
                if any(label for _, label in outs):
                    # a labelled edge (e.g. 'unmatched') needs an end to point at
                    cluster.node(f"{pid}.end", "", shape="point", width="0.12", group=pid)
                    self.connect(outs, f"{pid}.end")
        for tail, head, attrs in self.edges:
            self.graph.edge(tail, head, **attrs)
        return self.graph

    # -- walker -----------------------------------------------------------------------
    def chain(self, g: Any, steps: Sequence[Any], nid_prefix: str, path_prefix: str,
              incoming: List[Out]) -> List[Out]:
        """Draw ``steps`` in order, fed by ``incoming``; return where the data leaves."""
        outs = incoming
        for k, step in enumerate(steps, 1):
            label = step.label()
            nid = f"{nid_prefix}[{k}]"
            path = f"{path_prefix}[{k}] {label}"
            if isinstance(step, Route) and step.kind != "filter":
                outs = self.route(g, step, nid, path, outs, group=nid_prefix)
                continue
            g.node(nid, self.label(label, step, path), group=nid_prefix, **self.style(step, path))
            self.connect(outs, nid)
            outs = [(nid, "matched" if isinstance(step, Route) else None)]
        return outs

    def route(self, g: Any, route: Route, nid: str, path: str, incoming: List[Out],
              group: str) -> List[Out]:
        """A cluster: split node where items enter, one chain per branch, and a join
        (or zip, for BlockedJoin) point where results return when ``join=True``."""
        kind = type(route).__name__
        conditional = route.route_type is not object or route.route_func is not None
        blocked = isinstance(route, BlockedJoin)
        with g.subgraph(name=f"cluster_{nid}") as c:
            c.attr(label=f"{kind}  share={route.share} join={route.join}", style="dashed",
                   color="#9ca3af", fontname="Helvetica", fontsize="10")
            split = f"{nid}.split"
            c.node(split, self.label(route.label(), route, path), group=group, **self.style(route, path))
            self.connect(incoming, split)
            ends: List[List[Out]] = []
            for b, steps in enumerate(route.branches, 1):
                entry: List[Out] = [(split, "matched" if conditional else None)]
                ends.append(self.chain(c, steps, f"{nid}/{b}", f"{path}/{b}", entry))
            bypass: Out = (split, "all" if route.share else "unmatched")
            # the bypass skips past the branches, so the next main-flow node sits below
            # this cluster instead of beside a branch (clusters cannot overlap)
            self.skip[split] = max((_depth(b) for b in route.branches), default=0) + 1 + blocked
            if blocked:
                merge = f"{nid}.zip"
                c.node(merge, "zip → tuple", group=group, **_ZIP_STYLE)
                for b, outs in enumerate(ends, 1):
                    self.connect(outs, merge, position=str(b))
                # the engine merges the tuples back whatever ``join`` says
                return [bypass, (merge, None)]
            if not route.join:
                return [bypass]
            merge = f"{nid}.join"
            c.node(merge, "join", group=group, **_JOIN_STYLE)
            self.connect([bypass], merge)
            for outs in ends:
                self.connect(outs, merge)
            return [(merge, None)]

    # -- helpers ----------------------------------------------------------------------
    def connect(self, outs: List[Out], head: str, position: str | None = None) -> None:
        for tail, label in outs:
            attrs: Dict[str, str] = {}
            text = ", ".join(t for t in (label, position) if t)
            if text:
                attrs["label"] = text
            if label in ("all", "unmatched"):
                attrs.update(_BYPASS_STYLE)
                attrs["minlen"] = str(self.skip.get(tail, 1))
            self.edges.append((tail, head, attrs))

    def label(self, text: str, step: Any, path: str):
        """``text`` plus, after a run, the step's counts from the report.

        ``in``/``out`` appear where the engine counted them: always at async steps,
        sources and BlockedJoin, at inline sync steps only when metrics were on for
        them (``config.metrics``, or a policy other than 'raise'); elsewhere only what
        is always counted: failures and drops."""
        stats = self.stats.get(path)
        if stats is None:
            return _text(text)
        filtered = getattr(stats, "filtered", 0)
        if _counted(step) or stats.inp or stats.out or filtered:
            extra = [f"{k}={v}" for k, v in (("filtered", filtered), ("failed", stats.failed),
                                              ("dropped", stats.dropped), ("retried", stats.retried)) if v]
            return _text(text, " ".join([f"in={stats.inp} out={stats.out}"] + extra))
        line = f"failed={stats.failed} dropped={stats.dropped}"
        if stats.retried:
            line += f" retried={stats.retried}"
        return _text(text, line)

    def style(self, step: Any, path: str) -> Dict[str, str]:
        target = step.fn if isinstance(step, Step) and isinstance(step.fn, Node) else step
        if isinstance(step, Route):
            attrs = dict(_FILTER_STYLE if step.kind == "filter" else _SPLIT_STYLE)
        elif isinstance(target, (Loop, Timer)):
            attrs = dict(_SOURCE_STYLE)
        elif isinstance(target, Node):
            attrs = dict(_NODE_STYLE)
        elif isinstance(step, Const):
            attrs = dict(_CONST_STYLE)
        elif isinstance(step, RxOp):
            attrs = dict(_RX_STYLE)
        else:
            attrs = dict(_FUNC_STYLE)
        tip = _tooltip(step)
        if tip:
            attrs["tooltip"] = tip
        stats = self.stats.get(path)
        if stats is not None and stats.failed:
            attrs["color"] = "#dc2626"
            attrs["penwidth"] = "2"
        return attrs


def _depth(steps: Sequence[Any]) -> int:
    """How many ranks a chain occupies when drawn top to bottom."""
    total = 0
    for step in steps:
        if isinstance(step, Route) and step.kind != "filter":
            inner = max((_depth(b) for b in step.branches), default=0)
            total += 1 + inner + (1 if step.join or isinstance(step, BlockedJoin) else 0)
        else:
            total += 1
    return total


def _step_paths(steps: Sequence[Any], prefix: str, out: set) -> set:
    """Every report key a step list can produce, relative to its pipe (``[1] double``)."""
    for k, step in enumerate(steps, 1):
        path = f"{prefix}[{k}] {step.label()}"
        out.add(path)
        if isinstance(step, Route):
            for b, branch in enumerate(step.branches, 1):
                _step_paths(branch, f"{path}/{b}", out)
    return out


def _report_prefixes(pipes: Sequence[Any], stats: Dict[str, Any]) -> Dict[int, str]:
    """Which ``P<n>`` of the report belongs to each drawn pipe.

    A report numbers pipes in run order; the pipes drawn may be a subset or another order
    (``pipe.render(..., report=pipe.report)`` after a run of several pipes). A pipe takes
    its own position when the report's keys under it fit its tree, else the first unused
    report pipe whose keys all fit.
    """
    if not stats:
        return {}
    groups: Dict[str, set] = {}
    for key in stats:
        head, sep, rest = key.partition("[")
        if sep:
            groups.setdefault(head, set()).add("[" + rest)
    chosen: Dict[int, str] = {}
    used: set = set()
    for index, pipe in enumerate(pipes, 1):
        mine = _step_paths(pipe.steps, "", set())
        candidates = [f"P{index}"] + [p for p in groups if p != f"P{index}"]
        for cand in candidates:
            keys = groups.get(cand)
            if cand not in used and keys and keys <= mine:
                chosen[index] = cand
                used.add(cand)
                break
        else:
            chosen[index] = f"?{index}"  # nothing fits: draw without counts
    return chosen


def build_graph(pipes: Sequence[Any], report: Any = None) -> graphviz.Digraph:
    """The ``graphviz.Digraph`` for ``pipes`` (one cluster per pipe), with per-step counts
    from ``report`` (a :class:`~rxbot.engine.context.RunReport`) when given."""
    pipes = list(pipes)
    if not pipes:
        raise ValueError("render: no pipes to draw; build a Pipe first or pass pipes=[...]")
    for p in pipes:
        if not hasattr(p, "steps"):
            raise TypeError(f"render: argument 'pipes' must hold Pipe objects; got {type(p).__name__}")
    return _Drawer(report).draw(pipes)


def _targets(path: str, format: str | None) -> Tuple[str, str, str]:
    """``(format, dot_path, out_path)`` following the graphviz package's convention:
    no known extension -> ``path`` is the DOT source and ``path.<format>`` the picture."""
    path = os.fspath(path)
    root, ext = os.path.splitext(path)
    ext = ext[1:].lower()
    if ext == "gv":
        ext = "dot"
    if format is not None:
        fmt = str(format).lower()
        if fmt == "gv":
            fmt = "dot"
        if fmt not in FORMATS:
            raise ValueError(f"render: argument 'format' must be one of {', '.join(FORMATS)}; got {format!r}")
        if ext in FORMATS and ext != fmt:
            raise ValueError(f"render: argument 'path' ends in '.{ext}' but format={format!r}; make them agree")
    elif ext in FORMATS:
        fmt = ext
    else:
        fmt = "png"
    if ext == fmt:  # 'graph.svg' -> graph.dot + graph.svg; 'graph.dot' -> graph.dot only
        return fmt, (path if fmt == "dot" else root + ".dot"), path
    return fmt, path, (path if fmt == "dot" else f"{path}.{fmt}")


def render(pipes: Sequence[Any], path: str, format: str | None = None, view: bool = False,
           report: Any = None) -> str:
    """Draw ``pipes`` to ``path``; return the path of the picture written.

    ``format`` is ``png``, ``svg``, ``pdf`` or ``dot`` (source only); without it, an
    extension in ``path`` decides, else ``path`` gets the DOT source and ``path.png`` the
    picture. Without the ``dot`` program only the DOT source is written, a
    ``RuntimeWarning`` says how to install graphviz, and the DOT path is returned.
    ``report`` (a finished run's ``RunReport``, e.g. ``pipe.report``) adds per-step
    counts. A viewer opens only when ``view=True``. The pipes are neither run nor consumed.
    """
    fmt, dot_path, out_path = _targets(path, format)
    graph = build_graph(pipes, report)
    folder = os.path.dirname(os.path.abspath(dot_path))
    os.makedirs(folder, exist_ok=True)
    with open(dot_path, "w", encoding="utf-8") as fh:
        fh.write(graph.source)
    if fmt == "dot":
        return dot_path
    if shutil.which("dot") is None:
        return _no_dot(dot_path)
    try:
        data = graph.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        return _no_dot(dot_path)
    with open(out_path, "wb") as fh:
        fh.write(data)
    log.debug("rxbot: rendered %d pipe(s) to %s", len(list(pipes)), out_path)
    if view:
        graphviz.view(out_path)
    return out_path


def _no_dot(dot_path: str) -> str:
    warnings.warn(f"rxbot.render: {INSTALL_HINT}; wrote the DOT source to {dot_path}",
                  RuntimeWarning, stacklevel=3)
    return dot_path


__all__ = ["render", "build_graph", "FORMATS", "INSTALL_HINT"]
