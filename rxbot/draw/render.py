"""Draw the step tree with the ``graphviz`` package.

The drawing walks the very tree the engine compiles (``Pipe.steps`` and the routes'
``branches``), so the picture can never disagree with what runs. Node names follow the
compiler's step paths (``P1[3]/2[1]``: pipe 1, step 3, its branch 2, step 1), which is
also how a :class:`~rxbot.engine.context.RunReport` is keyed, so counts from a finished
run land on the right node.

Rendering never runs or consumes a pipe: a ``Loop`` over a generator is drawn from its
type, not iterated. Layout and pictures come from :mod:`rxbot.draw.layout` (the Graphviz
bundled with pygraphviz), so no system program is needed.

What the shapes and colours mean (a legend in every picture says it too): the fill tells
how a step runs — white inline (sync), green async, orange boosted off the loop (a 3-D
box) — blue boxes are sources, a box with a tab is a Node, a note a constant, a hexagon
a raw Rx operator; diamonds split items into a route, triangles join them back; a red
outline marks a step that had failures.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import graphviz

from ..tree.flow import BlockedJoin, Route
from .layout import INSTALL_HINT, GraphvizUnavailable, draw
from ..tree.node import Loop, Node, Timer
from ..redact import redact
from ..tree.step import Const, RxOp, Step
from ..tree.walk import StepId, root_of, walk

#: what identifies a step across a run and a drawing: (pipe, positions, labels) of its StepId
Parts = Tuple[str, Tuple[int, ...], Tuple[str, ...]]

log = logging.getLogger("rxbot")

#: formats ``render`` writes; ``dot`` is the DOT source only (no Graphviz needed)
FORMATS = ("png", "svg", "pdf", "dot")

# an outgoing edge end: (node name, edge label or None)
Out = Tuple[str, Optional[str]]

# Layout: nodes of one chain share a graphviz ``group`` and bypass edges are heavy and
# long enough to pass their route's cluster, so dot draws the main flow as a straight
# line and hangs branches to the side.
#
# Kinds of drawn node -> (DOT attributes, legend text). The fill says how a step runs,
# the shape what it is, so the difference shows in PNG and PDF too, not only in SVG
# tooltips.
_SYNC_FILL, _ASYNC_FILL, _BOOST_FILL = "#ffffff", "#dcfce7", "#fed7aa"
KINDS: Dict[str, Tuple[Dict[str, str], str]] = {
    "source": (dict(shape="box", style="rounded,filled", fillcolor="#dbeafe"), "source"),
    "sync": (dict(shape="box", style="rounded,filled", fillcolor=_SYNC_FILL), "sync step"),
    "async": (dict(shape="box", style="rounded,filled", fillcolor=_ASYNC_FILL), "async step"),
    "boosted": (dict(shape="box3d", style="filled", fillcolor=_BOOST_FILL), "boosted step"),
    "node": (dict(shape="component", style="filled", fillcolor=_SYNC_FILL), "Node"),
    "async node": (dict(shape="component", style="filled", fillcolor=_ASYNC_FILL), "async Node"),
    "boosted node": (dict(shape="component", style="filled", fillcolor=_BOOST_FILL), "boosted Node"),
    "const": (dict(shape="note", style="filled", fillcolor=_SYNC_FILL), "constant"),
    "rx": (dict(shape="hexagon", style="filled", fillcolor="#ede9fe"), "Rx operator"),
    "filter": (dict(shape="invhouse"), "Filter"),
    "split": (dict(shape="diamond"), "route"),
    "join": (dict(shape="invtriangle"), "join"),
    "zip": (dict(shape="invtrapezium", style="filled", fillcolor="#e5e7eb"), "zip → tuple"),
}
_FAILED = dict(color="#dc2626", penwidth="2")
#: the count lines of a node on the live page, before the first numbers arrive
LIVE_PLACEHOLDER = ("in=0 out=0 failed=0 dropped=0", "0 items/s")
_BYPASS_STYLE = dict(style="dashed", weight="4")
#: what the dashed edge past a route carries, by its label (the legend says it)
BYPASS_MEANING = {"all": "every item goes on\npast the route (share)",
                  "unmatched": "the items it did not\nmatch go on past it"}


def _text(*lines: str) -> str:
    """A DOT label showing ``lines`` literally: backslashes doubled, never read as an
    HTML label (``<lambda>`` looks like one), lines joined by DOT's ``\\n``."""
    return graphviz.nohtml("\\n".join(line.replace("\\", "\\\\") for line in lines))


def _counted(step: Any) -> bool:
    """Does the engine always count ``inp``/``out`` for this step? It does at async
    boundaries, sources and BlockedJoin; fused inline sync steps only when metrics are on
    (the unfused graph's ``map`` counts every call), and route dispatch never (it counts
    failures only)."""
    from ..config import config
    from ..plan import runs_inline

    if isinstance(step, RxOp):
        return False
    if isinstance(step, Route):
        return isinstance(step, BlockedJoin)
    return not (runs_inline(step) and config.fusion)


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


def kind_of(step: Any) -> str:
    """Which entry of :data:`KINDS` draws ``step``."""
    if isinstance(step, Route):
        return "filter" if step.kind == "filter" else "split"
    if isinstance(step, Const):
        return "const"
    if isinstance(step, RxOp):
        return "rx"
    target = step.fn if isinstance(step, Step) else step
    if isinstance(target, (Loop, Timer)):
        return "source"
    from ..tree.node import is_async_callable

    if isinstance(step, Step):
        boosted, is_async = step.option("boost"), step.is_async
    else:
        boosted, is_async = getattr(step, "boost_kind", None), is_async_callable(step)
    mode = "boosted" if boosted else "async" if is_async else "sync"
    if isinstance(target, Node):
        return "node" if mode == "sync" else f"{mode} node"
    return mode


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
        #: the report's entries by the parts of their StepId (never by their text)
        self.entries: Dict[Parts, Any] = {_parts(key): stats for key, stats in self.stats.items()
                                          if isinstance(key, StepId)}
        #: the report's sinks (a None they return is consumed, not filtered), by parts
        self.sinks = {_parts(key) for key in getattr(report, "sinks", ()) or () if isinstance(key, StepId)}
        #: (went on, matched) of the report's routes, by parts (see :mod:`rxbot.observe.report_io`)
        self.routes = _route_numbers(report)
        self.seconds: float = float(getattr(report, "seconds", 0.0) or 0.0)
        #: drawn node name -> the report key of its step (what the live view updates)
        self.paths: Dict[str, StepId] = {}
        self.kinds_used: Dict[str, None] = {}
        #: report key -> does the engine always count in/out there (see ``_counted``)
        self.counted: Dict[StepId, bool] = {}
        #: labels of the dashed edges past routes drawn ('all', 'unmatched'), for the legend
        self.bypasses: Dict[str, None] = {}

    # -- top level --------------------------------------------------------------------
    def draw(self, pipes: Sequence[Any], runs: Optional[Sequence[Optional[int]]] = None) -> graphviz.Digraph:
        names = _report_pipes(pipes, self.entries)
        # several runs (a script calling BotFrame.run() more than once): one box per run,
        # run below run in run order, the pipes never run last
        order = list(dict.fromkeys(runs)) if runs is not None else []
        grouped = len(order) > 1
        if grouped:
            order.sort(key=lambda r: (r is None, r or 0))
        groups = [[i for i, r in enumerate(runs or (), 1) if r == run] for run in order] if grouped else \
            [list(range(1, len(pipes) + 1))]
        ends: List[Tuple[List[str], List[str]]] = []  # per run: (top anchors, bottom anchors)
        for g, members in enumerate(groups):
            context = (self.graph.subgraph(name=f"cluster_run{g + 1}") if grouped
                       else contextlib.nullcontext(self.graph))
            with context as holder:
                if grouped:
                    run = order[g]
                    holder.attr(label="not run" if run is None else f"run {run}", style="rounded,bold",
                                color="#374151", fontname="Helvetica", fontsize="13", labeljust="l")
                tops, bottoms = [], []
                for index in members:
                    top, bottom = self.pipe(holder, pipes[index - 1], index, names, anchors=grouped)
                    tops.append(top)
                    bottoms.append(bottom)
                ends.append((tops, bottoms))
        for (_, bottoms), (tops, _) in zip(ends, ends[1:]):  # each run below the one before
            for bottom in bottoms:
                for top in tops:
                    self.edges.append((bottom, top, {"style": "invis", "weight": "0"}))
        for tail, head, attrs in self.edges:
            self.graph.edge(tail, head, **attrs)
        return self.graph

    def pipe(self, holder: Any, pipe: Any, index: int, names: Dict[int, str], anchors: bool = False
             ) -> Tuple[str, str]:
        """One pipe's cluster; with ``anchors``, invisible points above its first step and
        below its last (what stacks runs); returns their names."""
        pid = f"P{index}"
        title = f"Pipe {index}" + (f": {pipe.name}" if getattr(pipe, "name", None) else "")
        if self.stats and self.seconds and not getattr(self.report, "live", False):
            title += f"  (run {self.seconds:.2f} s)"
        top, bottom = f"{pid}.top", f"{pid}.bottom"
        with holder.subgraph(name=f"cluster_{pid}") as cluster:
            cluster.attr(label=title, style="rounded", color="#6b7280", fontname="Helvetica")
            place = StepId.root(names.get(index, pid), index)
            start: List[Out] = []
            if anchors:
                cluster.node(top, "", style="invis", shape="point", width="0", height="0")
                start = [(top, None)]
            outs = self.chain(cluster, pipe.steps, pid, place, start)
            if anchors:
                for edge in self.edges:  # the anchor's edge draws nothing
                    if edge[0] == top:
                        edge[2].update(style="invis")
            if any(label for _, label in outs):
                # a labelled edge (e.g. 'unmatched') needs an end to point at
                cluster.node(f"{pid}.end", "", shape="point", width="0.12", group=pid)
                self.connect(outs, f"{pid}.end")
                outs = [(f"{pid}.end", None)]
            if anchors:
                cluster.node(bottom, "", style="invis", shape="point", width="0", height="0")
                for tail, _ in outs:
                    self.edges.append((tail, bottom, {"style": "invis"}))
        return top, bottom

    def legend(self) -> None:
        """A column of sample shapes, one per kind drawn, beside the pipes."""
        with self.graph.subgraph(name="cluster_legend") as c:
            c.attr(label="legend", style="rounded,dashed", color="#9ca3af", fontname="Helvetica",
                   fontsize="9")
            kinds = list(self.kinds_used)
            if any(getattr(s, "failed", 0) for s in self.stats.values()):
                kinds.append("failed")
            previous = None
            for kind in kinds:
                if kind == "failed":
                    attrs, text = dict(shape="box", style="rounded", **_FAILED), "had failures"
                else:
                    attrs, text = dict(KINDS[kind][0]), KINDS[kind][1]
                name = f"legend.{kind}"
                c.node(name, _text(text), fontsize="9", height="0.3", margin="0.04", **attrs)
                if previous is not None:  # invisible edges stack the samples in a column
                    c.edge(previous, name, style="invis")
                previous = name
            for label in self.bypasses:  # the dashed edge past a route, as drawn
                start, end = f"legend.{label}", f"legend.{label}.end"
                c.node(start, "", shape="point", width="0.06")
                c.node(end, "", shape="point", width="0.06")
                if previous is not None:
                    c.edge(previous, start, style="invis")
                c.edge(start, end, label=f"{label}: {BYPASS_MEANING[label]}", fontsize="9",
                       **_BYPASS_STYLE)
                previous = end

    # -- walker -----------------------------------------------------------------------
    def chain(self, g: Any, steps: Sequence[Any], nid_prefix: str, place: StepId,
              incoming: List[Out]) -> List[Out]:
        """Draw ``steps`` (the steps held at ``place``: a pipe's root or a route's
        branch) in order, fed by ``incoming``; return where the data leaves."""
        outs = incoming
        for k, step in enumerate(steps, 1):
            label = step.label()
            nid = f"{nid_prefix}[{k}]"
            path = place.step(k, label)
            if isinstance(step, Route) and step.kind != "filter":
                outs = self.route(g, step, nid, path, outs, group=nid_prefix)
                continue
            g.node(nid, self.label(label, step, path), group=nid_prefix, id=nid, **self.style(step, path))
            self.paths[nid] = path
            self.connect(outs, nid)
            outs = [(nid, "matched" if isinstance(step, Route) else None)]
        return outs

    def route(self, g: Any, route: Route, nid: str, path: StepId, incoming: List[Out],
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
            c.node(split, self.label(route.label(), route, path), group=group, id=split,
                   **self.style(route, path))
            self.paths[split] = path
            self.connect(incoming, split)
            ends: List[List[Out]] = []
            for b, steps in enumerate(route.branches, 1):
                entry: List[Out] = [(split, "matched" if conditional else None)]
                ends.append(self.chain(c, steps, f"{nid}/{b}", path.branch(b), entry))
            # the main flow past the branches: every item with share, the unmatched ones
            # without; a route matching everything without share has none to draw
            bypass: List[Out] = ([(split, "all" if route.share else "unmatched")]
                                 if route.share or conditional else [])
            # the bypass skips past the branches, so the next main-flow node sits below
            # this cluster instead of beside a branch (clusters cannot overlap)
            self.skip[split] = max((_depth(b) for b in route.branches), default=0) + 1 + blocked
            if blocked:
                merge = f"{nid}.zip"
                c.node(merge, "zip → tuple", group=group, **self.kind("zip"))
                for b, outs in enumerate(ends, 1):
                    self.connect(outs, merge, position=str(b))
                # the engine merges the tuples back whatever ``join`` says
                return [*bypass, (merge, None)]
            if not route.join:
                return bypass
            merge = f"{nid}.join"
            c.node(merge, "join", group=group, **self.kind("join"))
            self.connect(bypass, merge)
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
                self.bypasses[label] = None
            self.edges.append((tail, head, attrs))

    def label(self, text: str, step: Any, path: StepId):
        """``text`` plus, after a run, the step's counts from the report and its
        throughput over the run.

        ``in``/``out`` appear where the engine counted them: always at async steps,
        sources and BlockedJoin, at inline sync steps only when metrics were on for
        them (``config.metrics``, or a policy other than 'raise'); elsewhere only what
        is always counted: failures and drops."""
        stats = self.entries.get(_parts(path))
        counted = _counted(step)
        self.counted[path] = counted
        if stats is None:
            return _text(text)
        if getattr(self.report, "live", False):  # room for the numbers a live page writes
            return _text(text, *LIVE_PLACEHOLDER)
        rate = rate_text(max(stats.inp, stats.out), self.seconds) if self.seconds > 0 else None
        return _text(text, *count_lines(stats, counted, rate, sink=_parts(path) in self.sinks,
                                        route=self.routes.get(_parts(path))))

    def kind(self, kind: str) -> Dict[str, str]:
        self.kinds_used[kind] = None
        return dict(KINDS[kind][0])

    def style(self, step: Any, path: StepId) -> Dict[str, str]:
        attrs = self.kind(kind_of(step))
        tip = _tooltip(step)
        if tip:
            attrs["tooltip"] = tip
        stats = self.entries.get(_parts(path))
        if stats is not None and stats.failed:
            attrs.update(_FAILED)
        return attrs


def _route_numbers(report: Any) -> Dict[Parts, Tuple[Optional[int], int]]:
    """``{parts: (went on, matched)}`` of the routes of ``report``."""
    if report is None or not getattr(report, "routes", None):
        return {}
    from ..observe.report_io import route_numbers, routes

    shapes = routes(report)
    return {_parts(key): numbers for key in shapes if isinstance(key, StepId) and key in report.steps
            for numbers in [route_numbers(report, key, shapes)] if numbers is not None}


def count_lines(stats: Any, counted: bool, rate: Optional[str], sink: bool = False,
                route: Optional[Tuple[Optional[int], int]] = None) -> List[str]:
    """The lines a step's numbers take under its label: ``in=.. out=..`` (plus any
    filtered/consumed/failed/dropped/retried) and the throughput where in/out were
    counted, else only what is always counted (failures and drops). At a ``sink`` (see
    :mod:`rxbot.observe.report_io`) the Nones its step returned are ``consumed``, not filtered.
    A ``route`` gives ``(went on, matched)``: its ``out`` is what went on (``-`` when
    not known), then ``matched``."""
    filtered = getattr(stats, "filtered", 0)
    dropped_by = "consumed" if sink else "filtered"
    if route is not None:
        went_on, matched = route
        extra = [f"{k}={v}" for k, v in (("failed", stats.failed), ("dropped", stats.dropped)) if v]
        lines = [" ".join([f"in={stats.inp} out={'-' if went_on is None else went_on} matched={matched}"] + extra)]
        return lines + [rate] if rate else lines
    if getattr(stats, "counted", True) and (counted or stats.inp or stats.out or filtered):
        extra = [f"{k}={v}" for k, v in ((dropped_by, filtered), ("failed", stats.failed),
                                          ("dropped", stats.dropped), ("retried", stats.retried)) if v]
        lines = [" ".join([f"in={stats.inp} out={stats.out}"] + extra)]
        return lines + [rate] if rate else lines
    # not counted: unknown, never shown as 0
    extra = [f"{k}={v}" for k, v in (("failed", stats.failed), ("dropped", stats.dropped),
                                      ("retried", stats.retried)) if v]
    return [" ".join(["in=- out=-"] + extra)]


def rate_text(items: float, seconds: float) -> str:
    """``items`` over ``seconds`` as a short throughput: ``'12.3k items/s'``."""
    rate = items / seconds if seconds > 0 else 0.0
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if rate >= limit:
            return f"{rate / limit:.1f}{suffix} items/s"
    return f"{rate:.1f} items/s" if rate < 10 else f"{rate:.0f} items/s"


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


def _parts(sid: StepId) -> Parts:
    return sid.pipe, sid.positions, sid.labels


def outline(pipes: Sequence[Any]) -> Tuple[Tuple[str, bool, str, bool, bool], ...]:
    """``(report key, counted, kind, share, join)`` of every step, in drawing order: what
    decides the picture, computed without drawing (the live view keys its cached
    picture and its count lines by it)."""
    rows: List[Tuple[str, bool, str, bool, bool]] = []
    for index, pipe in enumerate(pipes, 1):
        for sid, step in walk(pipe.steps, root_of(pipe, index)):
            route = isinstance(step, Route)
            rows.append((sid, _counted(step), kind_of(step), route and step.share, route and step.join))
    return tuple(rows)


def _report_pipes(pipes: Sequence[Any], entries: Dict[Parts, Any]) -> Dict[int, str]:
    """Which pipe of the report (its ``StepId.pipe``) belongs to each drawn pipe.

    A report numbers pipes in run order; the pipes drawn may be a subset or another order
    (``pipe.render(..., report=pipe.report)`` after a run of several pipes). A pipe takes
    its own position when the report's steps under it fit its tree (same positions and
    labels), else the first unused report pipe whose steps all fit.
    """
    if not entries:
        return {}
    groups: Dict[str, set] = {}
    for pipe_name, positions, labels in entries:
        if positions:
            groups.setdefault(pipe_name, set()).add((positions, labels))
    chosen: Dict[int, str] = {}
    used: set = set()
    for index, pipe in enumerate(pipes, 1):
        mine = {(sid.positions, sid.labels) for sid, _ in walk(pipe.steps)}
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


def _drawer(pipes: Sequence[Any], report: Any = None, legend: bool = True,
            runs: Optional[Sequence[Optional[int]]] = None) -> _Drawer:
    pipes = list(pipes)
    if not pipes:
        raise ValueError("render: no pipes to draw; build a Pipe first or pass pipes=[...]")
    for p in pipes:
        if not hasattr(p, "steps"):
            raise TypeError(f"render: argument 'pipes' must hold Pipe objects; got {type(p).__name__}")
    if runs is not None and len(runs) != len(pipes):
        raise ValueError(f"render: argument 'runs' must give one run number per pipe; got {len(runs)} "
                         f"for {len(pipes)} pipes")
    drawer = _Drawer(report)
    drawer.draw(pipes, runs)
    if legend:
        drawer.legend()
    return drawer


def build_graph(pipes: Sequence[Any], report: Any = None, legend: bool = True,
                runs: Optional[Sequence[Optional[int]]] = None) -> graphviz.Digraph:
    """The ``graphviz.Digraph`` for ``pipes`` (one cluster per pipe), with per-step counts
    and throughput from ``report`` (a :class:`~rxbot.engine.context.RunReport`) when
    given, and a legend of the kinds of node drawn unless ``legend=False``. ``runs``
    (default: ``pipes.runs`` of a dry run's record) gives each pipe's run — the
    ``BotFrame.run()`` call of a script that runs it, None for never: a script with
    several runs is drawn run below run, in run order, each in a box labelled with it."""
    return _drawer(pipes, report, legend, runs if runs is not None else getattr(pipes, "runs", None)).graph


def node_paths(pipes: Sequence[Any]) -> Tuple[Dict[str, StepId], Dict[StepId, bool]]:
    """``(nodes, counted)``: drawn node name (also its SVG element id) -> report key of the
    step it draws, and report key -> whether the engine counts its in/out live."""
    drawer = _drawer(pipes, legend=False)
    return dict(drawer.paths), dict(drawer.counted)


def to_svg(pipes: Sequence[Any], report: Any = None, legend: bool = True) -> str:
    """The picture of ``pipes`` as SVG text (what notebooks and the live view show)."""
    return draw(build_graph(pipes, report, legend).source, "svg").decode("utf-8")


def _targets(path: str, format: str | None) -> Tuple[str, Optional[str], Optional[str]]:
    """``(format, dot_path, picture_path)``; a part not asked for is None.

    ``x.svg``/``x.png``/``x.pdf`` -> that picture only; ``x.dot``/``x.gv`` or
    ``format='dot'`` -> the DOT source only; a path without an extension -> DOT source at
    ``path`` and the picture at ``path.<format>`` (``png`` by default), as the graphviz
    package does. Any other extension is an error unless ``format`` is given, which then
    follows the graphviz convention too (``x.v2`` + ``format='svg'`` -> ``x.v2`` and
    ``x.v2.svg``).
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1][1:].lower()
    ext = "dot" if ext == "gv" else ext
    if format is not None:
        fmt = str(format).lower()
        fmt = "dot" if fmt == "gv" else fmt
        if fmt not in FORMATS:
            raise ValueError(f"render: argument 'format' must be one of {', '.join(FORMATS)}; got {format!r}")
        if ext in FORMATS and ext != fmt:
            raise ValueError(f"render: argument 'path' ends in '.{ext}' but format={format!r}; make them agree")
    elif ext in FORMATS:
        fmt = ext
    elif ext:
        raise ValueError(
            f"render: argument 'path' ends in '.{ext}', which is not a format rxbot draws "
            f"({', '.join(FORMATS)}); use one of those extensions or pass format=...")
    else:
        fmt = "png"
    if fmt == "dot":
        return fmt, path, None
    if ext == fmt:
        return fmt, None, path
    return fmt, path, f"{path}.{fmt}"


Written = Union[str, Tuple[str, str]]


def render(pipes: Sequence[Any], path: str, format: str | None = None, view: bool = False,
           report: Any = None, legend: bool = True, engine: str = "auto") -> Written:
    """Draw ``pipes`` to ``path``; return what was written.

    ``format`` is ``png``, ``svg``, ``pdf`` or ``dot`` (DOT source only); without it, the
    extension of ``path`` decides (``g.svg`` writes ``g.svg`` and nothing else). A path
    without an extension gets the DOT source and ``path.png`` (or ``path.<format>``) the
    picture, like the graphviz package: then the tuple ``(dot_path, picture_path)`` is
    returned, otherwise the one path written. ``report`` (a finished run's
    ``RunReport``, e.g. ``pipe.report``) adds per-step counts and throughput. ``engine``
    picks the Graphviz: ``'auto'`` (pygraphviz's bundled one, else a ``dot`` program),
    ``'pygraphviz'`` or ``'dot'``. A viewer opens only when ``view=True``. The pipes are
    neither run nor consumed.

    With no Graphviz at all only the DOT source is written, a ``RuntimeWarning`` says
    how to get one, and the DOT path is returned.
    """
    fmt, dot_path, out_path = _targets(path, format)
    for target in (dot_path, out_path):
        if target is not None:
            check_writable(target, "render")  # before the drawing, which takes a while
    graph = build_graph(pipes, report, legend)
    source = redact(graph.source)  # the picture leaves the process: one redaction, rxbot.redact
    if out_path is not None:
        try:
            data = draw(source, fmt, engine=engine)
        except GraphvizUnavailable as exc:
            dot_path = dot_path or os.path.splitext(out_path)[0] + ".dot"
            _write(dot_path, source.encode("utf-8"))
            warnings.warn(f"rxbot.draw.render: {exc}; wrote the DOT source to {dot_path}",
                          RuntimeWarning, stacklevel=2)
            return dot_path
        _write(out_path, data)
    if dot_path is not None:
        _write(dot_path, source.encode("utf-8"))
    log.debug("rxbot: drew %d pipe(s) to %s", len(list(pipes)), out_path or dot_path)
    if out_path is None:
        assert dot_path is not None  # _targets returns at least one of them
        return dot_path
    if view:
        graphviz.view(out_path)
    return out_path if dot_path is None else (dot_path, out_path)


def check_writable(path: str, what: str) -> None:
    """Raise an ``OSError`` with one clear line when ``path`` cannot be written: its
    folder is missing (rxbot creates no folders: a typo must not make a tree anywhere,
    as root) or not writable, or the path is a folder or a read-only file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"{what}: cannot write {path!r}: {folder!r} is a file, not a folder")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what}: cannot write {path!r}: the folder {folder!r} does not exist "
                                f"(rxbot creates no folders; make it first)")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what}: cannot write {path!r}: it is a folder")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise PermissionError(f"{what}: cannot write {path!r}: the file is not writable")
    if not os.path.exists(path) and not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{what}: cannot write {path!r}: the folder {folder!r} is not writable")


def _write(path: str, data: bytes) -> None:
    check_writable(path, "render")
    with open(path, "wb") as fh:
        fh.write(data)


__all__ = ["render", "check_writable", "build_graph", "to_svg", "node_paths", "outline", "kind_of", "rate_text", "count_lines", "KINDS",
           "FORMATS", "INSTALL_HINT"]
